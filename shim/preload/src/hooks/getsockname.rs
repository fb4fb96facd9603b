//! getsockname(2).

use std::ffi::c_int;

use libc::{sockaddr, socklen_t};

use super::answer_name;
use socks4_shim::ops;
use socks4_shim::sys::real;

/// # Safety
///
/// The getsockname(2) contract: `addr` is valid for `*len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the contract; the program's own arguments go to the real call unchanged.
    unsafe { answer_name(addr, len, || ops::names::getsockname(fd), || real::getsockname(fd, addr, len)) }
}
