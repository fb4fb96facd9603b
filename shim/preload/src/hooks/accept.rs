//! accept(2) and accept4(2).

use std::ffi::c_int;

use libc::{sockaddr, socklen_t};

use super::{decide, fail};
use socks4_shim::ops::{self, Verdict};
use socks4_shim::{sockaddr as sa, sys::real};

/// # Safety
///
/// The accept(2) contract: `addr` is null or valid for `*len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match decide(|| ops::accept::accept(fd, 0)) {
        // SAFETY: the program's own arguments, unchanged.
        Verdict::Pass => unsafe { real::accept(fd, addr, len) },
        Verdict::Done((new, peer)) => {
            // SAFETY: addr/len as accept's contract says; write handles null.
            unsafe { sa::write(&peer, addr, len) };
            new
        }
        Verdict::Fail(e) => fail(e),
    }
}

/// # Safety
///
/// The accept4(2) contract: `addr` is null or valid for `*len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    match decide(|| ops::accept::accept(fd, flags)) {
        // SAFETY: the program's own arguments, unchanged.
        Verdict::Pass => unsafe { real::accept4(fd, addr, len, flags) },
        Verdict::Done((new, peer)) => {
            // SAFETY: addr/len as accept4's contract says; write handles null.
            unsafe { sa::write(&peer, addr, len) };
            new
        }
        Verdict::Fail(e) => fail(e),
    }
}
