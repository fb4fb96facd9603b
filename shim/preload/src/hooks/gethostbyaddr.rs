//! gethostbyaddr(3) and gethostbyaddr_r on a remote-DNS placeholder: the name it stands for, so a
//! program that checks the name of the address it was given gets back the name it asked for.

use std::ffi::{c_char, c_int, c_void};

use libc::{hostent, size_t, socklen_t};

use super::decide_with;
use super::gethostbyname::reentrant_answer;
use socks4_shim::ops::dns::{self, HostAnswer};
use socks4_shim::sys::{real, real_ptr};

/// # Safety
///
/// `addr` is null or valid for `len` bytes.
unsafe fn by_addr(addr: *const c_void, len: socklen_t, af: c_int) -> HostAnswer {
    if addr.is_null() {
        return HostAnswer::Pass;
    }
    // SAFETY: addr is valid for len bytes (contract).
    let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len as usize) };
    decide_with(HostAnswer::Pass, HostAnswer::Pass, || dns::host_by_addr(bytes, af))
}

/// # Safety
///
/// The gethostbyaddr(3) contract: `addr` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut hostent {
    // SAFETY: addr valid for len bytes (contract).
    if let Some(h) = dns::static_hostent(unsafe { by_addr(addr, len, af) }) {
        return h;
    }
    // SAFETY: the program's own arguments.
    unsafe { real_ptr::gethostbyaddr(addr, len, af) }
}

/// # Safety
///
/// The gethostbyaddr_r(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: addr is valid for len bytes (contract).
    let answer = || unsafe { by_addr(addr, len, af) };
    // SAFETY: the out-pointers as the contract says (reentrant_answer checks them for null).
    if let Some(rc) = unsafe { reentrant_answer(answer, ret, buf, buflen, result, h_errnop) } {
        return rc;
    }
    // SAFETY: the program's own arguments.
    unsafe { real::gethostbyaddr_r(addr, len, af, ret, buf, buflen, result, h_errnop) }
}
