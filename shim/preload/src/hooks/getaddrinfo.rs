//! getaddrinfo(3) for names the SOCKS server resolves (remote DNS): `ops::dns::addrinfo_plan`
//! decides; a remote name is then answered by the real getaddrinfo for its numeric placeholder,
//! so the chain is glibc's and the real freeaddrinfo frees it (freeaddrinfo is not hooked). Only
//! `ai_canonname` is ours: glibc's freeaddrinfo frees it with free(), so it is allocated with
//! malloc (strdup).

use std::ffi::{CStr, c_char, c_int};

use libc::addrinfo;

use super::decide_with;
use socks4_shim::ops::dns::{self, AddrInfoPlan};
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
    if node.is_null() || res.is_null() {
        // SAFETY: the program's own arguments, unchanged.
        return unsafe { real::getaddrinfo(node, service, hints, res) };
    }
    // SAFETY: node is non-null and NUL-terminated, hints null or valid (contract).
    let (name, given) = unsafe { (CStr::from_ptr(node), hints.as_ref()) };
    let plan = decide_with(AddrInfoPlan::Pass, AddrInfoPlan::Fail(libc::EAI_FAIL), || {
        dns::addrinfo_plan(name.to_bytes(), given)
    });
    let (literal, ours, canonname) = match plan {
        // SAFETY: the program's own arguments, unchanged.
        AddrInfoPlan::Pass => return unsafe { real::getaddrinfo(node, service, hints, res) },
        AddrInfoPlan::Fail(eai) => return eai,
        AddrInfoPlan::Placeholder { literal, hints, canonname } => (literal, hints, canonname),
    };
    // SAFETY: a NUL-terminated literal, the program's service and res, and valid hints.
    let rc = unsafe { real::getaddrinfo(literal.as_ptr(), service, &ours, res) };
    if rc == 0 && canonname {
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
