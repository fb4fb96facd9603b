//! connect(2).

use std::ffi::c_int;

use libc::{sockaddr, socklen_t};

use socks4_shim::{ops, sockaddr as sa, sys::real};

/// # Safety
///
/// The connect(2) contract: `addr` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: addr is valid for len bytes (connect's contract); read checks null and length.
    let Some(dest) = (unsafe { sa::read(addr, len) }) else {
        // SAFETY: the program's own arguments, unchanged.
        return unsafe { real::connect(fd, addr, len) };
    };
    // SAFETY: the program's own arguments, unchanged.
    super::finish(super::decide(|| ops::connect::connect(fd, dest)), || unsafe { real::connect(fd, addr, len) })
}
