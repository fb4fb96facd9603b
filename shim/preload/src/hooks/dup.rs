//! dup(2), dup2(2), dup3(2): the duplicate shares the socket's state.

use std::ffi::c_int;

use socks4_shim::{ops, sys::real};

/// # Safety
///
/// None beyond dup(2)'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the program's own argument.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        super::note(|| ops::fds::duplicated(fd, new));
    }
    new
}

/// # Safety
///
/// None beyond dup2(2)'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: the program's own arguments.
    let ret = unsafe { real::dup2(old, new) };
    if ret >= 0 {
        super::note(|| ops::fds::duplicated(old, new));
    }
    ret
}

/// # Safety
///
/// None beyond dup3(2)'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: the program's own arguments.
    let ret = unsafe { real::dup3(old, new, flags) };
    if ret >= 0 {
        super::note(|| ops::fds::duplicated(old, new));
    }
    ret
}
