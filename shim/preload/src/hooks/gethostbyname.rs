//! gethostbyname(3), gethostbyname2, gethostbyname_r and gethostbyname2_r for names the SOCKS
//! server resolves (remote DNS): a hostent with the placeholder as the one IPv4 address.
//!
//! The non-reentrant forms answer from a per-thread buffer (glibc's is per process, so a
//! per-thread one is at least as safe for the caller).

use std::cell::UnsafeCell;
use std::ffi::{CStr, c_char, c_int};
use std::net::Ipv4Addr;

use libc::{hostent, size_t};

use super::decide;
use socks4_shim::ops::{self, Verdict, dns};
use socks4_shim::sys::{self, real, real_ptr};

/// What the lookup says for `name` in family `af`: Pass = the real call.
pub(super) enum Answer {
    Pass,
    Found(Ipv4Addr, String),
    /// An h_errno value.
    NotFound(c_int),
}

/// # Safety
///
/// `name` is null or NUL-terminated.
unsafe fn answer(name: *const c_char, af: c_int) -> Answer {
    // A null name is the real function's to refuse.
    if name.is_null() || (af != libc::AF_INET && af != libc::AF_INET6) {
        return Answer::Pass;
    }
    // SAFETY: non-null (checked) and NUL-terminated (caller).
    let name = unsafe { CStr::from_ptr(name) };
    match decide(|| ops::dns::lookup(name.to_bytes())) {
        Verdict::Pass => Answer::Pass,
        // A remote name has an IPv4 placeholder only.
        Verdict::Done(_) if af == libc::AF_INET6 => Answer::NotFound(dns::NO_DATA),
        Verdict::Done(ip) => Answer::Found(ip, name.to_string_lossy().into_owned()),
        Verdict::Fail(libc::EINVAL) => Answer::NotFound(dns::HOST_NOT_FOUND),
        Verdict::Fail(_) => Answer::NotFound(dns::NO_RECOVERY),
    }
}

const BUF: usize = 1024;

struct Static {
    host: UnsafeCell<hostent>,
    buf: UnsafeCell<[u8; BUF]>,
}

thread_local! {
    static STATIC: Static = const {
        Static {
            host: UnsafeCell::new(hostent {
                h_name: std::ptr::null_mut(),
                h_aliases: std::ptr::null_mut(),
                h_addrtype: 0,
                h_length: 0,
                h_addr_list: std::ptr::null_mut(),
            }),
            buf: UnsafeCell::new([0; BUF]),
        }
    };
}

/// The non-reentrant answer: a pointer to this thread's hostent, or null with h_errno set.
pub(super) fn static_answer(found: Answer) -> Option<*mut hostent> {
    match found {
        Answer::Pass => None,
        Answer::NotFound(h) => {
            sys::set_h_errno(h);
            Some(std::ptr::null_mut())
        }
        Answer::Found(ip, name) => Some(
            STATIC
                .try_with(|s| {
                    // SAFETY: this thread's own buffers; the previous answer handed out from them
                    // is invalidated by this call, as gethostbyname documents for its own.
                    let buf = unsafe { &mut *s.buf.get() };
                    match dns::hostent_in(buf, &name, libc::AF_INET, &ip.octets()) {
                        Some(h) => {
                            // SAFETY: as above.
                            unsafe { *s.host.get() = h };
                            s.host.get()
                        }
                        None => {
                            sys::set_h_errno(dns::NO_RECOVERY);
                            std::ptr::null_mut()
                        }
                    }
                })
                .unwrap_or(std::ptr::null_mut()),
        ),
    }
}

/// The reentrant answer, into the caller's `ret` and `buf`; None = pass. `found` runs only when
/// the out-pointers are usable: a null one is the real function's to refuse, and no placeholder is
/// taken for a call that cannot return it.
///
/// # Safety
///
/// The gethostbyname_r contract for `ret`, `buf`/`buflen`, `result` and `h_errnop`, except that
/// `ret`, `buf` and `result` may be null.
pub(super) unsafe fn reentrant_answer(
    found: impl FnOnce() -> Answer,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Option<c_int> {
    if ret.is_null() || buf.is_null() || result.is_null() {
        return None;
    }
    let (h_errno, rc) = match found() {
        Answer::Pass => return None,
        Answer::NotFound(h) => (h, 0),
        Answer::Found(ip, name) => {
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
    // SAFETY: result and h_errnop are valid for writes (contract).
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
    if let Some(h) = static_answer(unsafe { answer(name, libc::AF_INET) }) {
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
    if let Some(h) = static_answer(unsafe { answer(name, af) }) {
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
    let found = || unsafe { answer(name, libc::AF_INET) };
    // SAFETY: the out-pointers as the contract says (reentrant_answer checks them for null).
    if let Some(rc) = unsafe { reentrant_answer(found, ret, buf, buflen, result, h_errnop) } {
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
    let found = || unsafe { answer(name, af) };
    // SAFETY: the out-pointers as the contract says (reentrant_answer checks them for null).
    if let Some(rc) = unsafe { reentrant_answer(found, ret, buf, buflen, result, h_errnop) } {
        return rc;
    }
    // SAFETY: the program's own arguments.
    unsafe { real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) }
}
