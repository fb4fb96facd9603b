//! gethostbyname(3), gethostbyname2, gethostbyname_r and gethostbyname2_r: a remote name is
//! answered by `ops::dns::host_by_name` (a placeholder), laid out in the caller's memory or, for
//! the non-reentrant forms, in this thread's (`ops::dns::static_hostent`).

use std::ffi::{CStr, c_char, c_int};

use libc::{hostent, size_t};

use super::decide_with;
use socks4_shim::ops::dns::{self, HostAnswer};
use socks4_shim::sys::{real, real_ptr};

/// # Safety
///
/// `name` is null or NUL-terminated.
unsafe fn by_name(name: *const c_char, af: c_int) -> HostAnswer {
    // A null name is the real function's to refuse.
    if name.is_null() {
        return HostAnswer::Pass;
    }
    // SAFETY: non-null (checked) and NUL-terminated (caller).
    let name = unsafe { CStr::from_ptr(name) };
    decide_with(HostAnswer::Pass, HostAnswer::NotFound(dns::NO_RECOVERY), || dns::host_by_name(name.to_bytes(), af))
}

/// The reentrant answer, into the caller's `ret` and `buf`; None = pass. `answer` runs only when
/// the out-pointers are usable: a null one is the real function's to refuse, and no placeholder is
/// taken for a call that cannot return it.
///
/// # Safety
///
/// The gethostbyname_r contract for `ret`, `buf`/`buflen`, `result` and `h_errnop`, except that
/// `ret`, `buf` and `result` may be null.
pub(super) unsafe fn reentrant_answer(
    answer: impl FnOnce() -> HostAnswer,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    if ret.is_null() || buf.is_null() || result.is_null() {
        return None;
    }
    let (h_errno, rc) = match answer() {
        HostAnswer::Pass => return None,
        HostAnswer::NotFound(h) => (h, 0),
        HostAnswer::Found(ip, name) => {
            // SAFETY: buf is valid for buflen bytes (contract).
            let bytes = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), buflen) };
            match dns::hostent_in(bytes, &name, libc::AF_INET, &ip.octets()) {
                Some(h) => {
                    // SAFETY: ret and result are valid for writes (contract).
                    unsafe {
                        *ret = h;
                        *result = ret;
                    }
                    return Some(0);
                }
                // The caller retries with a larger buffer.
                None => (dns::NO_RECOVERY, libc::ERANGE),
            }
        }
    };
    // SAFETY: result and h_errnop are valid for writes (contract; h_errnop checked for null).
    unsafe {
        *result = std::ptr::null_mut();
        if !h_errnop.is_null() {
            *h_errnop = h_errno;
        }
    }
    Some(rc)
}

/// # Safety
///
/// The gethostbyname(3) contract: `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    // SAFETY: null or NUL-terminated (contract).
    if let Some(h) = dns::static_hostent(unsafe { by_name(name, libc::AF_INET) }) {
        return h;
    }
    // SAFETY: the program's own argument.
    unsafe { real_ptr::gethostbyname(name) }
}

/// # Safety
///
/// The gethostbyname2(3) contract: `name` is NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    // SAFETY: null or NUL-terminated (contract).
    if let Some(h) = dns::static_hostent(unsafe { by_name(name, af) }) {
        return h;
    }
    // SAFETY: the program's own arguments.
    unsafe { real_ptr::gethostbyname2(name, af) }
}

/// # Safety
///
/// The gethostbyname_r(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: name is null or NUL-terminated (contract).
    let answer = || unsafe { by_name(name, libc::AF_INET) };
    // SAFETY: the out-pointers as the contract says (reentrant_answer checks them for null).
    if let Some(rc) = unsafe { reentrant_answer(answer, ret, buf, buflen, result, h_errnop) } {
        return rc;
    }
    // SAFETY: the program's own arguments.
    unsafe { real::gethostbyname_r(name, ret, buf, buflen, result, h_errnop) }
}

/// # Safety
///
/// The gethostbyname2_r(3) contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: name is null or NUL-terminated (contract).
    let answer = || unsafe { by_name(name, af) };
    // SAFETY: the out-pointers as the contract says (reentrant_answer checks them for null).
    if let Some(rc) = unsafe { reentrant_answer(answer, ret, buf, buflen, result, h_errnop) } {
        return rc;
    }
    // SAFETY: the program's own arguments.
    unsafe { real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) }
}
