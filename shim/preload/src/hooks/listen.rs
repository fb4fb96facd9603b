//! listen(2).

use std::ffi::c_int;

use socks4_shim::{ops, sys::real};

/// # Safety
///
/// None beyond listen(2)'s; there are no pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    // SAFETY: no pointers involved.
    super::finish(super::decide(|| ops::bind::listen(fd)), || unsafe { real::listen(fd, backlog) })
}
