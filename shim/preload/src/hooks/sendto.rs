//! sendto(2) with MSG_FASTOPEN (libcurl's TCP Fast Open): a connect in disguise, so it gets the
//! same decision as connect, then the data is sent on the established connection.

use std::ffi::{c_int, c_void};

use libc::{sockaddr, socklen_t, ssize_t};

use socks4_shim::ops::{self, Verdict};
use socks4_shim::{sockaddr as sa, sys::real};

/// # Safety
///
/// The sendto(2) contract: `buf` is valid for `len` bytes and `addr` for `alen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let fast_open = flags & libc::MSG_FASTOPEN != 0;
    // SAFETY: addr is valid for alen bytes (sendto's contract); read checks null and length.
    let dest = if fast_open { unsafe { sa::read(addr, alen) } } else { None };
    let Some(dest) = dest else {
        // SAFETY: the program's own arguments, unchanged.
        return unsafe { real::sendto(fd, buf, len, flags, addr, alen) };
    };
    match super::decide(|| ops::connect::connect(fd, dest)) {
        // SAFETY: the program's own arguments, unchanged.
        Verdict::Pass => unsafe { real::sendto(fd, buf, len, flags, addr, alen) },
        // SAFETY: buf is valid for len bytes; the socket is now connected through the proxy.
        Verdict::Done(_) => unsafe { real::sendto(fd, buf, len, flags & !libc::MSG_FASTOPEN, std::ptr::null(), 0) },
        Verdict::Fail(e) => super::fail(e) as ssize_t,
    }
}
