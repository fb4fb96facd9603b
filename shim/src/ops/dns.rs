//! Remote DNS: which name lookups the shim answers itself with a placeholder address from
//! `dns_pool`, what a placeholder stands for when the program connects to it or asks for its name,
//! and the `hostent` those answers are laid out in.
//!
//! A name is looked up locally (the real libc call) when it is a numeric address, `localhost` (or
//! under it), this host's own name, or in `direct_names`, and when no route it can take needs it
//! (`route::wants_placeholder`: none sends names to its server, none routes by that name). Every
//! other name gets a placeholder and never reaches the local resolver here: behind a firewall the
//! local resolver either does not know the name or must not learn it. The connect to the
//! placeholder sends the name (SOCKS4A, SOCKS5 ATYP 3), or, if the route it then takes resolves
//! names locally, resolves it at that moment.

use std::cell::UnsafeCell;
use std::ffi::{CString, c_char, c_int};
use std::net::{IpAddr, Ipv4Addr};

use socks4_proto::host;

use super::Verdict;
use crate::config::{self, Config};
use crate::dns_pool::{self, PoolError};
use crate::log::{debug, error};
use crate::sys::{self, Errno};

/// h_errno values (netdb.h), which the libc crate does not export.
pub const HOST_NOT_FOUND: c_int = 1;
pub const TRY_AGAIN: c_int = 2;
pub const NO_RECOVERY: c_int = 3;
pub const NO_DATA: c_int = 4;

/// The placeholder for `name` when the SOCKS server is to resolve it; Pass: resolve it locally.
/// Fails for names no DNS name can be (EINVAL), when the pool is full or cannot be created
/// (ENOMEM), or is locked by a process that does not let go (EAGAIN): failing is better than
/// leaking the lookup.
pub fn lookup(name: &[u8]) -> Verdict<Ipv4Addr> {
    let config = config::get();
    if !config.uses_placeholders() {
        return Verdict::Pass;
    }
    let Ok(name) = std::str::from_utf8(name) else {
        error!("lookup of a name that is not UTF-8: refused rather than sent to the local resolver");
        return Verdict::Fail(libc::EINVAL);
    };
    if is_local_name(config, name, own_host_name().as_deref()) || !crate::route::wants_placeholder(config, name) {
        return Verdict::Pass;
    }
    match dns_pool::placeholder_for(name) {
        Ok(ip) => {
            debug!("lookup of {name}: placeholder {ip}; the name goes to the connect");
            Verdict::Done(ip)
        }
        Err(e) => {
            error!("lookup of {name} failed: {e}; not asking the local resolver (remote_dns is on)");
            Verdict::Fail(match e {
                PoolError::NameTooLong => libc::EINVAL,
                PoolError::Busy => libc::EAGAIN,
                PoolError::Full | PoolError::NoMemory => libc::ENOMEM,
            })
        }
    }
}

/// What `gethostbyname*` and `gethostbyaddr*` answer, before it is laid out in C memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAnswer {
    /// Not ours: the real call.
    Pass,
    /// One IPv4 address and the name it stands for.
    Found(Ipv4Addr, String),
    /// Failed with this h_errno.
    NotFound(c_int),
}

/// `gethostbyname*` of `name` in family `af`.
pub fn host_by_name(name: &[u8], af: c_int) -> HostAnswer {
    if af != libc::AF_INET && af != libc::AF_INET6 {
        return HostAnswer::Pass;
    }
    match lookup(name) {
        Verdict::Pass => HostAnswer::Pass,
        // A remote name has an IPv4 placeholder only.
        Verdict::Done(_) if af == libc::AF_INET6 => HostAnswer::NotFound(NO_DATA),
        Verdict::Done(ip) => HostAnswer::Found(ip, String::from_utf8_lossy(name).into_owned()),
        Verdict::Fail(libc::EINVAL) => HostAnswer::NotFound(HOST_NOT_FOUND),
        Verdict::Fail(libc::EAGAIN) => HostAnswer::NotFound(TRY_AGAIN),
        Verdict::Fail(_) => HostAnswer::NotFound(NO_RECOVERY),
    }
}

/// `gethostbyaddr*` of the `addr` bytes in family `af`: a placeholder's name, else the real call.
pub fn host_by_addr(addr: &[u8], af: c_int) -> HostAnswer {
    let Ok(octets) = <[u8; 4]>::try_from(addr) else { return HostAnswer::Pass };
    if af != libc::AF_INET {
        return HostAnswer::Pass;
    }
    let ip = Ipv4Addr::from(octets);
    match reverse(ip, false) {
        Verdict::Done(name) => HostAnswer::Found(ip, name),
        _ => HostAnswer::Pass,
    }
}

/// What the `getaddrinfo` hook does with a lookup.
#[derive(Debug)]
pub enum AddrInfoPlan {
    /// The real call with the program's own arguments.
    Pass,
    /// Fail with this `EAI_*` code.
    Fail(c_int),
    /// The real call for `literal` (the placeholder, numeric) with `hints`; if `canonname`, the
    /// first result's `ai_canonname` is to be the name the program asked for.
    Placeholder { literal: CString, hints: libc::addrinfo, canonname: bool },
}

/// glibc's hints when the program passes none.
fn default_hints() -> libc::addrinfo {
    libc::addrinfo {
        ai_flags: libc::AI_V4MAPPED | libc::AI_ADDRCONFIG,
        ai_family: libc::AF_UNSPEC,
        ai_socktype: 0,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_addr: std::ptr::null_mut(),
        ai_canonname: std::ptr::null_mut(),
        ai_next: std::ptr::null_mut(),
    }
}

/// `getaddrinfo` of `name` with the program's `hints`: a remote name is answered by libc itself
/// for its placeholder as a numeric host, with the program's own hints, so socktype, protocol,
/// service and `AF_INET6` + `AI_V4MAPPED` behave exactly as for any address, `AF_INET6` alone
/// fails with libc's own `EAI_ADDRFAMILY`, and the chain is glibc's, which the real
/// `freeaddrinfo` frees.
pub fn addrinfo_plan(name: &[u8], hints: Option<&libc::addrinfo>) -> AddrInfoPlan {
    let mut ours = hints.copied().unwrap_or_else(default_hints);
    let flags = ours.ai_flags;
    if flags & libc::AI_NUMERICHOST != 0 || ![libc::AF_UNSPEC, libc::AF_INET, libc::AF_INET6].contains(&ours.ai_family)
    {
        return AddrInfoPlan::Pass;
    }
    let placeholder = match lookup(name) {
        Verdict::Pass => return AddrInfoPlan::Pass,
        Verdict::Fail(libc::EINVAL) => return AddrInfoPlan::Fail(libc::EAI_NONAME),
        Verdict::Fail(libc::EAGAIN) => return AddrInfoPlan::Fail(libc::EAI_AGAIN),
        Verdict::Fail(_) => return AddrInfoPlan::Fail(libc::EAI_FAIL),
        Verdict::Done(ip) => ip,
    };
    let Ok(literal) = CString::new(placeholder.to_string()) else { return AddrInfoPlan::Fail(libc::EAI_FAIL) };
    // Numeric: no lookup at all. AI_ADDRCONFIG dropped: the placeholder is reached through the
    // SOCKS server, whatever addresses this host has. AI_CANONNAME is answered by the hook.
    ours.ai_flags = (flags | libc::AI_NUMERICHOST) & !(libc::AI_ADDRCONFIG | libc::AI_CANONNAME);
    ours.ai_canonname = std::ptr::null_mut();
    ours.ai_addr = std::ptr::null_mut();
    ours.ai_next = std::ptr::null_mut();
    AddrInfoPlan::Placeholder { literal, hints: ours, canonname: flags & libc::AI_CANONNAME != 0 }
}

const STATIC_BUF: usize = 1024;

/// The per-thread memory the non-reentrant `gethostby*` answers live in (glibc's is per process,
/// so a per-thread one is at least as safe for the caller).
struct StaticHostent {
    host: UnsafeCell<libc::hostent>,
    buf: UnsafeCell<[u8; STATIC_BUF]>,
}

thread_local! {
    static STATIC: StaticHostent = const {
        StaticHostent {
            host: UnsafeCell::new(libc::hostent {
                h_name: std::ptr::null_mut(),
                h_aliases: std::ptr::null_mut(),
                h_addrtype: 0,
                h_length: 0,
                h_addr_list: std::ptr::null_mut(),
            }),
            buf: UnsafeCell::new([0; STATIC_BUF]),
        }
    };
}

/// The non-reentrant answer: None = the real call; else this thread's hostent, or null with
/// h_errno set. The pointer stays valid until this thread's next answer, as gethostbyname
/// documents for its own.
pub fn static_hostent(answer: HostAnswer) -> Option<*mut libc::hostent> {
    let (ip, name) = match answer {
        HostAnswer::Pass => return None,
        HostAnswer::NotFound(h) => {
            sys::set_h_errno(h);
            return Some(std::ptr::null_mut());
        }
        HostAnswer::Found(ip, name) => (ip, name),
    };
    let laid_out = STATIC.try_with(|s| {
        // SAFETY: this thread's own buffer, and no reference to it is alive: earlier answers
        // handed out raw pointers only, which this call invalidates (the C contract).
        let buf = unsafe { &mut *s.buf.get() };
        let h = hostent_in(buf, &name, libc::AF_INET, &ip.octets())?;
        // SAFETY: as above, for this thread's hostent.
        unsafe { *s.host.get() = h };
        Some(s.host.get())
    });
    match laid_out {
        Ok(Some(h)) => Some(h),
        // Too long for the buffer, or the thread is going away.
        _ => {
            sys::set_h_errno(NO_RECOVERY);
            Some(std::ptr::null_mut())
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

/// The name behind the placeholder `ip`, for a connect or BIND to it.
///
/// # Errors
///
/// EHOSTUNREACH for a placeholder the shim cannot turn back into a name (remote DNS off, or not
/// handed out in this process tree): fail closed, never connect to the placeholder itself.
pub fn name_of_placeholder(config: &Config, ip: Ipv4Addr) -> Result<String, Errno> {
    match dns_pool::name_for(ip) {
        Ok(Some(name)) => Ok(name),
        Ok(None) if !config.uses_placeholders() => {
            error!(
                "{ip} is a remote-DNS placeholder (240.0.0.0/8) but remote_dns is off: refused (EHOSTUNREACH); \
                 set SOCKS4_REMOTE_DNS=1 or use a socks4a:// or socks5h:// server"
            );
            Err(libc::EHOSTUNREACH)
        }
        Ok(None) => {
            error!("{ip} is a remote-DNS placeholder this process never handed out: refused (EHOSTUNREACH)");
            Err(libc::EHOSTUNREACH)
        }
        Err(e) => {
            error!("{ip} is a remote-DNS placeholder, but its name cannot be read: {e} (EAGAIN)");
            Err(libc::EAGAIN)
        }
    }
}

/// Resolves `name` with the local resolver for a route that resolves names here (`socks4://`,
/// `socks5://`, "direct"): the first IPv4 address, else the first address.
///
/// # Errors
///
/// EHOSTUNREACH when it does not resolve (one stderr line).
pub fn resolve_here(name: &str, port: u16) -> Result<std::net::SocketAddr, Errno> {
    use std::net::ToSocketAddrs;
    // Inside the shim this getaddrinfo is the real one: the re-entrancy guard is held.
    match (name, port).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            if let Some(a) = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                return Ok(*a);
            }
            error!("{name} resolves to no address here (its route resolves names locally): EHOSTUNREACH");
        }
        Err(e) => error!("{name} does not resolve here (its route resolves names locally): {e}; EHOSTUNREACH"),
    }
    Err(libc::EHOSTUNREACH)
}

/// The name behind a placeholder, for getnameinfo/gethostbyaddr; Pass for any other address.
/// `first_label`: NI_NOFQDN.
pub fn reverse(ip: Ipv4Addr, first_label: bool) -> Verdict<String> {
    if !dns_pool::is_placeholder(ip) {
        return Verdict::Pass;
    }
    // A placeholder that cannot be read back goes to the real call: a PTR query for a
    // 240.0.0.0/8 address tells the resolver nothing about any name.
    match dns_pool::name_for(ip) {
        Ok(Some(name)) if first_label => Verdict::Done(name.split('.').next().unwrap_or(&name).to_owned()),
        Ok(Some(name)) => Verdict::Done(name),
        Ok(None) | Err(_) => Verdict::Pass,
    }
}

/// Lays out, inside `buf`, a `hostent` for `name` with the single address `addr` (4 bytes for
/// AF_INET): the alias list (empty), the address list, the address, then the NUL-terminated name.
/// This is what the `_r` functions must do with the caller's buffer; the returned struct points
/// into `buf`. None: `buf` is too small (ERANGE).
pub fn hostent_in(buf: &mut [u8], name: &str, family: c_int, addr: &[u8]) -> Option<libc::hostent> {
    const PTR: usize = size_of::<*mut c_char>();
    // One raw pointer for every write and every pointer handed out: a write through the slice
    // itself would invalidate the pointers taken before it (Stacked Borrows; checked under Miri).
    let base = buf.as_mut_ptr();
    let pad = base.align_offset(align_of::<*mut c_char>());
    let aliases = pad;
    let list = aliases.checked_add(PTR)?;
    let addr_at = list + 2 * PTR;
    let name_at = addr_at + addr.len();
    let end = name_at.checked_add(name.len() + 1)?;
    if end > buf.len() {
        return None;
    }
    let at = |off: usize| base.wrapping_add(off);
    // SAFETY: every offset written below is < end <= buf.len(), so all writes stay inside `buf`,
    // which we borrow mutably; the pointer slots are aligned (pad) and written unaligned anyway.
    unsafe {
        at(aliases).cast::<*mut u8>().write_unaligned(std::ptr::null_mut());
        at(list).cast::<*mut u8>().write_unaligned(at(addr_at));
        at(list + PTR).cast::<*mut u8>().write_unaligned(std::ptr::null_mut());
        std::ptr::copy_nonoverlapping(addr.as_ptr(), at(addr_at), addr.len());
        std::ptr::copy_nonoverlapping(name.as_ptr(), at(name_at), name.len());
        at(end - 1).write(0);
    }
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
    use crate::config::{Partial, merge, parse_env};

    #[test]
    fn own_host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(own_host_name().as_deref(), Some(kernel.trim()));
    }

    fn config(direct_names: &[&str]) -> Config {
        let (env, _) = parse_env(|k| (k == "SOCKS4_SERVER").then(|| "socks4a://10.0.0.1:1080".to_string()));
        let mut c = merge(Partial::default(), env, || None).unwrap();
        c.direct_names = direct_names.iter().map(|s| s.parse().unwrap()).collect();
        c
    }

    #[test]
    fn literals_localhost_own_name_and_direct_names_stay_local() {
        let c = config(&["corp.example"]);
        let literals = ["10.1.2.3", "::1", "fe80::1%lo", "10.1", "0x0a000001", "127.1"];
        for name in literals.into_iter().chain(["localhost", "LOCALHOST.", "a.localhost"]) {
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
        assert!(c.uses_placeholders());
        assert_eq!(name_of_placeholder(&c, ip), Ok("dest.example".into()));
        let plain = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(reverse(ip, false), Verdict::Done("dest.example".into()));
        assert_eq!(reverse(ip, true), Verdict::Done("dest".into()));
        assert_eq!(reverse(plain, false), Verdict::Pass);
    }

    #[test]
    fn placeholder_never_handed_out_fails_closed() {
        let never = Ipv4Addr::new(240, 0, 15, 255);
        assert_eq!(name_of_placeholder(&config(&[]), never), Err(libc::EHOSTUNREACH));
        let off = merge(Partial::default(), Partial::default(), || None).unwrap();
        assert!(!off.uses_placeholders());
        assert_eq!(name_of_placeholder(&off, never), Err(libc::EHOSTUNREACH));
    }

    #[test]
    fn hostent_points_into_the_buffer() {
        // Not zeroed: every null and the name's NUL must be written.
        let mut buf = [0xaau8; 128];
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
        // A buffer of exactly the size needed (alignment, alias list, two address pointers, the
        // address, the name and its NUL) is enough; one byte less is not.
        let pad = buf.as_ptr().align_offset(align_of::<*mut c_char>());
        let exact = pad + 3 * size_of::<*mut c_char>() + 4 + "files.internal".len() + 1;
        assert!(hostent_in(&mut buf[..exact], "files.internal", libc::AF_INET, &[240, 0, 0, 7]).is_some());
        assert!(hostent_in(&mut buf[..exact - 1], "files.internal", libc::AF_INET, &[240, 0, 0, 7]).is_none());
    }
}
