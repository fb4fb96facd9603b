//! getpeername(2).

use std::ffi::c_int;

use libc::{sockaddr, socklen_t};

use super::{decide, fail};
use crate::ops::{self, Verdict};
use crate::{sockaddr as sa, sys::real};

/// # Safety
///
/// The getpeername(2) contract: `addr` is valid for `*len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // A null buffer is the kernel's to refuse (EFAULT).
    let verdict = if addr.is_null() || len.is_null() { Verdict::Pass } else { decide(|| ops::names::getpeername(fd)) };
    match verdict {
        // SAFETY: the program's own arguments, unchanged.
        Verdict::Pass => unsafe { real::getpeername(fd, addr, len) },
        Verdict::Done(local) => {
            // SAFETY: addr is valid for *len bytes (checked non-null above).
            unsafe { sa::write(&local, addr, len) };
            0
        }
        Verdict::Fail(e) => fail(e),
    }
}
