//! getaddrinfo(3) for names the SOCKS server resolves (remote DNS).
//!
//! The answer for a remote name is built by libc itself: the real getaddrinfo is asked for the
//! placeholder as a numeric host with the program's own hints, so socktype, protocol, service and
//! AF_INET6 + AI_V4MAPPED behave exactly as for any address, AF_INET6 alone fails with libc's own
//! EAI_ADDRFAMILY, and the chain is glibc's, which the real freeaddrinfo frees (freeaddrinfo is
//! therefore not hooked). Only `ai_canonname` is ours: glibc's freeaddrinfo frees it with free(),
//! so it is allocated with malloc (strdup).

use std::ffi::{CStr, CString, c_char, c_int};

use libc::addrinfo;

use super::decide;
use socks4_shim::ops::{self, Verdict};
use socks4_shim::sys::real;

/// # Safety
///
/// The getaddrinfo(3) contract: `node` and `service` are null or NUL-terminated, `hints` is null or
/// valid, `res` is valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    // SAFETY: the program's own arguments, unchanged.
    let pass = || unsafe { real::getaddrinfo(node, service, hints, res) };
    if node.is_null() || res.is_null() {
        return pass();
    }
    // glibc's defaults for null hints.
    // SAFETY: hints is null (checked) or valid, per the contract.
    let mut ours: addrinfo = match unsafe { hints.as_ref() } {
        Some(h) => *h,
        // SAFETY: addrinfo is plain data; all-zero is AF_UNSPEC, any type, no pointers.
        None => addrinfo { ai_flags: libc::AI_V4MAPPED | libc::AI_ADDRCONFIG, ..unsafe { std::mem::zeroed() } },
    };
    let flags = ours.ai_flags;
    if flags & libc::AI_NUMERICHOST != 0 || ![libc::AF_UNSPEC, libc::AF_INET, libc::AF_INET6].contains(&ours.ai_family)
    {
        return pass();
    }
    // SAFETY: node is non-null and NUL-terminated (contract).
    let name = unsafe { CStr::from_ptr(node) };
    let placeholder = match decide(|| ops::dns::lookup(name.to_bytes())) {
        Verdict::Pass => return pass(),
        Verdict::Fail(libc::EINVAL) => return libc::EAI_NONAME,
        Verdict::Fail(_) => return libc::EAI_FAIL,
        Verdict::Done(ip) => ip,
    };
    let Ok(literal) = CString::new(placeholder.to_string()) else { return libc::EAI_FAIL };
    // Numeric: no lookup at all. AI_ADDRCONFIG dropped: the placeholder is reached through the
    // SOCKS server, whatever addresses this host has. AI_CANONNAME is answered below.
    ours.ai_flags = (flags | libc::AI_NUMERICHOST) & !(libc::AI_ADDRCONFIG | libc::AI_CANONNAME);
    ours.ai_canonname = std::ptr::null_mut();
    ours.ai_addr = std::ptr::null_mut();
    ours.ai_next = std::ptr::null_mut();
    // SAFETY: a NUL-terminated literal, the program's service and res, and valid hints.
    let rc = unsafe { real::getaddrinfo(literal.as_ptr(), service, &ours, res) };
    if rc == 0 && flags & libc::AI_CANONNAME != 0 {
        // SAFETY: on success *res is the first node of a chain libc just allocated; its
        // ai_canonname is null (AI_CANONNAME was not passed); strdup mallocs what freeaddrinfo frees.
        unsafe {
            let first = *res;
            let canon = libc::strdup(node);
            if canon.is_null() {
                libc::freeaddrinfo(first);
                *res = std::ptr::null_mut();
                return libc::EAI_MEMORY;
            }
            (*first).ai_canonname = canon;
        }
    }
    rc
}
