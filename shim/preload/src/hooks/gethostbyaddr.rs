//! gethostbyaddr(3) and gethostbyaddr_r on a remote-DNS placeholder: the name it stands for, so a
//! program that checks the name of the address it was given gets back the name it asked for.

use std::ffi::{c_char, c_int, c_void};
use std::net::Ipv4Addr;

use libc::{hostent, size_t, socklen_t};

use super::decide;
use super::gethostbyname::{Answer, reentrant_answer, static_answer};
use socks4_shim::ops::{self, Verdict};
use socks4_shim::sys::{real, real_ptr};

/// # Safety
///
/// `addr` is valid for `len` bytes.
unsafe fn answer(addr: *const c_void, len: socklen_t, af: c_int) -> Answer {
    if addr.is_null() || af != libc::AF_INET || len != 4 {
        return Answer::Pass;
    }
    let mut octets = [0u8; 4];
    // SAFETY: addr is valid for len == 4 bytes (contract).
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), octets.as_mut_ptr(), 4) };
    let ip = Ipv4Addr::from(octets);
    match decide(|| ops::dns::reverse(ip, false)) {
        Verdict::Done(name) => Answer::Found(ip, name),
        _ => Answer::Pass,
    }
}

/// # Safety
///
/// The gethostbyaddr(3) contract: `addr` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut hostent {
    // SAFETY: addr valid for len bytes (contract).
    if let Some(h) = static_answer(unsafe { answer(addr, len, af) }) {
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
    let found = || unsafe { answer(addr, len, af) };
    // SAFETY: the out-pointers as the contract says (reentrant_answer checks them for null).
    if let Some(rc) = unsafe { reentrant_answer(found, ret, buf, buflen, result, h_errnop) } {
        return rc;
    }
    // SAFETY: the program's own arguments.
    unsafe { real::gethostbyaddr_r(addr, len, af, ret, buf, buflen, result, h_errnop) }
}
