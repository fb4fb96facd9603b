//! close(2).

use std::ffi::c_int;

use socks4_shim::{ops, sys::real};

/// # Safety
///
/// None beyond close(2)'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    super::note(|| ops::fds::closing(fd));
    // SAFETY: the program's own argument.
    unsafe { real::close(fd) }
}
