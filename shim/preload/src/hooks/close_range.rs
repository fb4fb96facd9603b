//! close_range(2) (glibc 2.34+; Python's os.closerange and subprocess use it).

use std::ffi::{c_int, c_uint};

use socks4_shim::{ops, sys::real};

/// # Safety
///
/// None beyond close_range(2)'s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    super::note(|| ops::fds::closing_range(first, last, flags));
    // SAFETY: the program's own arguments.
    unsafe { real::close_range(first, last, flags) }
}
