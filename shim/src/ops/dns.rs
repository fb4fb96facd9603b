//! Remote DNS (SOCKS4A): which name lookups the shim answers itself with a placeholder address from
//! `dns_pool`, what a placeholder stands for when the program connects to it or asks for its name,
//! and the `hostent` those answers are laid out in.
//!
//! A name is looked up locally (the real libc call) when `remote_dns` is off, when it is a numeric
//! address, `localhost` (or under it), this host's own name, or in `direct_names`. Every other name
//! gets a placeholder and never reaches the local resolver: behind a firewall the local resolver
//! either does not know the name or must not learn it.

use std::ffi::{c_char, c_int};
use std::net::{IpAddr, Ipv4Addr};

use socks4_proto::host;
use socks4_proto::v4::Destination;

use super::Verdict;
use crate::config::{self, Config};
use crate::dns_pool::{self, PoolError};
use crate::log::{debug, error};
use crate::sys::Errno;

/// h_errno values (netdb.h), which the libc crate does not export.
pub const HOST_NOT_FOUND: c_int = 1;
pub const NO_RECOVERY: c_int = 3;
pub const NO_DATA: c_int = 4;

/// The placeholder for `name` when the SOCKS server is to resolve it; Pass: resolve it locally.
/// Fails (ENOMEM) when the pool is full or cannot be created, and for names no DNS name can be:
/// failing is better than leaking the lookup.
pub fn lookup(name: &[u8]) -> Verdict<Ipv4Addr> {
    let config = config::get();
    if !config.remote_dns {
        return Verdict::Pass;
    }
    let Ok(name) = std::str::from_utf8(name) else {
        error!("lookup of a name that is not UTF-8: refused rather than sent to the local resolver");
        return Verdict::Fail(libc::EINVAL);
    };
    if is_local_name(config, name, own_host_name().as_deref()) {
        return Verdict::Pass;
    }
    match dns_pool::placeholder_for(name) {
        Ok(ip) => {
            debug!("lookup of {name}: placeholder {ip}, the SOCKS server resolves it (SOCKS4A)");
            Verdict::Done(ip)
        }
        Err(e) => {
            let why = match e {
                PoolError::Full => "all placeholders are in use",
                PoolError::NoMemory => "the placeholder table cannot be created",
                PoolError::NameTooLong => "the name is longer than a DNS name can be",
            };
            error!("lookup of {name} failed: {why}; not asking the local resolver (remote_dns is on)");
            Verdict::Fail(if e == PoolError::NameTooLong { libc::EINVAL } else { libc::ENOMEM })
        }
    }
}

/// Names that stay with the local resolver even with `remote_dns` on.
pub fn is_local_name(config: &Config, name: &str, own_host_name: Option<&str>) -> bool {
    let name = host::strip_root(name);
    if name.is_empty() || is_numeric(name) {
        return true;
    }
    host::is_within(name, "localhost")
        || own_host_name.is_some_and(|own| !own.is_empty() && host::same_name(name, own))
        || config.direct_names.iter().any(|d| host::is_within(name, d))
}

/// An address literal in any form libc accepts (`10.1.2.3`, `::1`, `10.1`, `0x0a000001`, `012.1`):
/// no DNS name ends in an all-numeric label, so a numeric last label means a literal (or garbage
/// the real call rejects on its own, without a query).
fn is_numeric(name: &str) -> bool {
    if name.contains(':') || name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    match hex {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// This host's name: programs look themselves up, and only the local side knows that name.
/// Asked at each lookup (one uname(2)): the name can change, and differs per UTS namespace.
fn own_host_name() -> Option<String> {
    // SAFETY: utsname is plain bytes, valid zeroed; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: on success nodename is NUL-terminated within the array.
    let name = unsafe { std::ffi::CStr::from_ptr(uts.nodename.as_ptr()) };
    name.to_str().ok().map(str::to_owned)
}

/// What a SOCKS request names for the IPv4 destination `ip`: the name behind a placeholder
/// (SOCKS4A), or the address itself.
///
/// # Errors
///
/// EHOSTUNREACH for a placeholder the shim cannot turn back into a name (remote_dns off, or not
/// handed out in this process tree): fail closed, never connect to the placeholder itself.
pub fn destination(config: &Config, ip: Ipv4Addr) -> Result<Destination, Errno> {
    if !dns_pool::is_placeholder(ip) {
        return Ok(Destination::Ip(ip));
    }
    if !config.remote_dns {
        error!(
            "{ip} is a remote-DNS placeholder (240.0.0.0/8) but remote_dns is off: refused (EHOSTUNREACH); \
             set SOCKS4_REMOTE_DNS=1"
        );
        return Err(libc::EHOSTUNREACH);
    }
    match dns_pool::name_for(ip) {
        Some(name) => Ok(Destination::Name(name)),
        None => {
            error!("{ip} is a remote-DNS placeholder this process never handed out: refused (EHOSTUNREACH)");
            Err(libc::EHOSTUNREACH)
        }
    }
}

/// The name behind a placeholder, for getnameinfo/gethostbyaddr; Pass for any other address.
/// `first_label`: NI_NOFQDN.
pub fn reverse(ip: Ipv4Addr, first_label: bool) -> Verdict<String> {
    if !dns_pool::is_placeholder(ip) {
        return Verdict::Pass;
    }
    match dns_pool::name_for(ip) {
        Some(name) if first_label => Verdict::Done(name.split('.').next().unwrap_or(&name).to_owned()),
        Some(name) => Verdict::Done(name),
        None => Verdict::Pass,
    }
}

/// Lays out, inside `buf`, a `hostent` for `name` with the single address `addr` (4 bytes for
/// AF_INET): the alias list (empty), the address list, the address, then the NUL-terminated name.
/// This is what the `_r` functions must do with the caller's buffer; the returned struct points
/// into `buf`. None: `buf` is too small (ERANGE).
pub fn hostent_in(buf: &mut [u8], name: &str, family: c_int, addr: &[u8]) -> Option<libc::hostent> {
    const PTR: usize = size_of::<*mut c_char>();
    let base = buf.as_mut_ptr();
    let pad = base.align_offset(align_of::<*mut c_char>());
    let aliases = pad;
    let list = aliases + PTR;
    let addr_at = list + 2 * PTR;
    let name_at = addr_at + addr.len();
    let end = name_at.checked_add(name.len() + 1)?;
    if pad == usize::MAX || end > buf.len() {
        return None;
    }
    // Pointers are computed with wrapping_add on the buffer's own pointer (all in bounds, checked
    // above) and stored as the bytes of their address, which is what C reads back.
    let at = |off: usize| base.wrapping_add(off);
    let mut put_ptr =
        |off: usize, p: *mut u8| buf[off..off + PTR].copy_from_slice(&p.expose_provenance().to_ne_bytes());
    put_ptr(aliases, std::ptr::null_mut());
    put_ptr(list, at(addr_at));
    put_ptr(list + PTR, std::ptr::null_mut());
    buf[addr_at..name_at].copy_from_slice(addr);
    buf[name_at..end - 1].copy_from_slice(name.as_bytes());
    buf[end - 1] = 0;
    Some(libc::hostent {
        h_name: at(name_at).cast(),
        h_aliases: at(aliases).cast(),
        h_addrtype: family,
        h_length: addr.len() as c_int,
        h_addr_list: at(list).cast(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Partial, merge};

    #[test]
    fn own_host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(own_host_name().as_deref(), Some(kernel.trim()));
    }

    fn config(direct_names: &[&str]) -> Config {
        let mut c = merge(Partial::default(), Partial::default(), || None);
        c.remote_dns = true;
        c.direct_names = direct_names.iter().map(|s| s.parse().unwrap()).collect();
        c
    }

    #[test]
    fn literals_localhost_own_name_and_direct_names_stay_local() {
        let c = config(&["corp.example"]);
        for name in ["10.1.2.3", "::1", "10.1", "0x0a000001", "127.1", "localhost", "LOCALHOST.", "a.localhost"] {
            assert!(is_local_name(&c, name, None), "{name}");
        }
        assert!(is_local_name(&c, "corp.example", None));
        assert!(is_local_name(&c, "ftp.Corp.Example", None));
        assert!(is_local_name(&c, "myhost", Some("myhost")));
        for name in ["files.internal", "notcorp.example", "localhost.evil.example", "cafe", "1.2.3.4.example"] {
            assert!(!is_local_name(&c, name, Some("myhost")), "{name}");
        }
    }

    #[test]
    fn placeholders_become_names_and_other_addresses_stay() {
        let ip = dns_pool::placeholder_for("dest.example").unwrap();
        let c = config(&[]);
        assert_eq!(destination(&c, ip), Ok(Destination::Name("dest.example".into())));
        let plain = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(destination(&c, plain), Ok(Destination::Ip(plain)));
        assert_eq!(reverse(ip, false), Verdict::Done("dest.example".into()));
        assert_eq!(reverse(ip, true), Verdict::Done("dest".into()));
        assert_eq!(reverse(plain, false), Verdict::Pass);
    }

    #[test]
    fn placeholder_fails_closed_when_off_or_unknown() {
        let ip = dns_pool::placeholder_for("off.example").unwrap();
        let mut c = config(&[]);
        c.remote_dns = false;
        assert_eq!(destination(&c, ip), Err(libc::EHOSTUNREACH));
        let never = Ipv4Addr::new(240, 0, 15, 255);
        assert_eq!(destination(&config(&[]), never), Err(libc::EHOSTUNREACH));
    }

    #[test]
    fn hostent_points_into_the_buffer() {
        let mut buf = [0u8; 128];
        let h = hostent_in(&mut buf[1..], "files.internal", libc::AF_INET, &[240, 0, 0, 7]).unwrap();
        // SAFETY: every pointer in h points into buf, which is alive and no longer borrowed mutably.
        unsafe {
            assert_eq!(std::ffi::CStr::from_ptr(h.h_name).to_str(), Ok("files.internal"));
            assert!((*h.h_aliases).is_null());
            let first = *h.h_addr_list;
            assert_eq!(std::slice::from_raw_parts(first.cast::<u8>(), 4), [240, 0, 0, 7]);
            assert!((*h.h_addr_list.add(1)).is_null());
        }
        assert_eq!(h.h_length, 4);
        assert!(hostent_in(&mut buf[..20], "files.internal", libc::AF_INET, &[240, 0, 0, 7]).is_none());
    }
}
