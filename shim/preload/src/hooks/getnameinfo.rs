//! getnameinfo(3) on a remote-DNS placeholder: the host is the name it stands for; the service
//! part is still libc's.

use std::ffi::{c_char, c_int};

use libc::{sockaddr, socklen_t};

use super::decide;
use socks4_shim::ops::{self, Verdict};
use socks4_shim::sockaddr::{self as sa, ipv4_of};
use socks4_shim::sys::real;

/// # Safety
///
/// The getnameinfo(3) contract: `addr` valid for `addrlen` bytes, `host`/`serv` null or valid for
/// `hostlen`/`servlen` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getnameinfo(
    addr: *const sockaddr,
    addrlen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the program's own arguments, unchanged.
    let pass = || unsafe { real::getnameinfo(addr, addrlen, host, hostlen, serv, servlen, flags) };
    if host.is_null() || hostlen == 0 || flags & libc::NI_NUMERICHOST != 0 {
        return pass();
    }
    // SAFETY: addr is valid for addrlen bytes (contract); read checks null and length.
    let Some(ip) = (unsafe { sa::read(addr, addrlen) }).as_ref().and_then(ipv4_of).map(|a| *a.ip()) else {
        return pass();
    };
    let name = match decide(|| ops::dns::reverse(ip, flags & libc::NI_NOFQDN != 0)) {
        Verdict::Done(name) => name,
        _ => return pass(),
    };
    if name.len() >= hostlen as usize {
        return libc::EAI_OVERFLOW;
    }
    if !serv.is_null() && servlen > 0 {
        // SAFETY: the program's address and service buffer; no host asked for.
        let rc = unsafe { real::getnameinfo(addr, addrlen, std::ptr::null_mut(), 0, serv, servlen, flags) };
        if rc != 0 {
            return rc;
        }
    }
    // SAFETY: host is valid for hostlen > name.len() bytes (checked), so the name and its NUL fit.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), host.cast::<u8>(), name.len());
        *host.add(name.len()) = 0;
    }
    0
}
