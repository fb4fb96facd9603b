//! Conversion between raw `sockaddr` memory and `std::net::SocketAddr`, the only place that reads or writes it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{AF_INET, AF_INET6, sa_family_t, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// A sockaddr built from a `SocketAddr`, to pass to a real libc call.
pub enum RawAddr {
    V4(sockaddr_in),
    V6(sockaddr_in6),
}

impl From<&SocketAddr> for RawAddr {
    fn from(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => RawAddr::V4(sockaddr_in {
                sin_family: AF_INET as sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => RawAddr::V6(sockaddr_in6 {
                sin6_family: AF_INET6 as sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }
}

impl RawAddr {
    pub fn as_ptr(&self) -> *const sockaddr {
        match self {
            RawAddr::V4(a) => (a as *const sockaddr_in).cast(),
            RawAddr::V6(a) => (a as *const sockaddr_in6).cast(),
        }
    }

    /// The size of the sockaddr behind [`RawAddr::as_ptr`], for the call's length argument.
    pub fn size(&self) -> socklen_t {
        (match self {
            RawAddr::V4(_) => size_of::<sockaddr_in>(),
            RawAddr::V6(_) => size_of::<sockaddr_in6>(),
        }) as socklen_t
    }
}

/// A `sockaddr_storage` for a real call to fill in.
pub struct Storage(sockaddr_storage);

impl Default for Storage {
    fn default() -> Self {
        Self::new()
    }
}

impl Storage {
    pub fn new() -> Self {
        // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
        Storage(unsafe { std::mem::zeroed() })
    }

    pub fn capacity(&self) -> socklen_t {
        size_of::<sockaddr_storage>() as socklen_t
    }

    pub fn as_mut_ptr(&mut self) -> *mut sockaddr {
        (&raw mut self.0).cast()
    }

    /// The address the kernel wrote, `len` bytes long; None for families other than IPv4/IPv6.
    pub fn to_socket_addr(&self, len: socklen_t) -> Option<SocketAddr> {
        // SAFETY: the storage is large enough for any family and len is capped to its size.
        unsafe { read((&raw const self.0).cast(), len.min(self.capacity())) }
    }
}

/// Reads an IPv4 or IPv6 address; None for a null pointer, a short length or another family
/// (AF_UNIX, AF_NETLINK, ...), which the shim passes through untouched.
///
/// # Safety
///
/// `addr` is null or valid for reads of `len` bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < size_of::<sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above); read_unaligned because the
    // caller's buffer may be any byte array.
    let family = unsafe { std::ptr::read_unaligned(addr.cast::<sa_family_t>()) };
    match family as i32 {
        AF_INET if len as usize >= size_of::<sockaddr_in>() => {
            // SAFETY: len covers a whole sockaddr_in.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
        }
        AF_INET6 if len as usize >= size_of::<sockaddr_in6>() => {
            // SAFETY: len covers a whole sockaddr_in6.
            let a = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in6>()) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                u32::from_be(a.sin6_flowinfo),
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` the way the kernel does for getsockname/getpeername/accept: at most `*len` bytes
/// (silently truncated) and `*len` set to the full size. A null `out` writes nothing (accept allows it).
///
/// # Safety
///
/// `out` is null, or valid for writes of `*len` bytes with `len` valid for reads and writes.
pub unsafe fn write(addr: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) {
    if out.is_null() || len.is_null() {
        return;
    }
    let raw = RawAddr::from(addr);
    // SAFETY: len is valid per the contract.
    let room = unsafe { *len } as usize;
    let n = room.min(raw.size() as usize);
    // SAFETY: raw is raw.size() bytes long, out has room for `room` bytes, and they cannot overlap
    // (raw is on our stack).
    unsafe { std::ptr::copy_nonoverlapping(raw.as_ptr().cast::<u8>(), out.cast::<u8>(), n) };
    // SAFETY: as above.
    unsafe { *len = raw.size() };
}

/// An IPv4 address as the socket's family wants it: IPv4-mapped IPv6 for an AF_INET6 socket.
pub fn in_family(addr: SocketAddrV4, v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::V6(SocketAddrV6::new(addr.ip().to_ipv6_mapped(), addr.port(), 0, 0))
    } else {
        SocketAddr::V4(addr)
    }
}

/// `addr` as the program's socket of family AF_INET6 (`v6`) or AF_INET can hold it: IPv4 is
/// IPv4-mapped for AF_INET6; None for an IPv6 address and an AF_INET socket.
pub fn to_family(addr: SocketAddr, v6: bool) -> Option<SocketAddr> {
    match canonical(addr) {
        SocketAddr::V4(a) => Some(in_family(a, v6)),
        a @ SocketAddr::V6(_) if v6 => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; others unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match ipv4_of(&addr) {
        Some(a) => SocketAddr::V4(a),
        None => addr,
    }
}

/// The IPv4 address behind an IPv4 or IPv4-mapped IPv6 address.
pub fn ipv4_of(addr: &SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(*a),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_v4_and_v6() {
        for s in ["10.1.2.3:21", "[::ffff:10.1.2.3]:21", "[2001:db8::1]:443"] {
            let addr: SocketAddr = s.parse().unwrap();
            let raw = RawAddr::from(&addr);
            // SAFETY: raw is a valid sockaddr of raw.size() bytes.
            assert_eq!(unsafe { read(raw.as_ptr(), raw.size()) }, Some(addr));
        }
    }

    #[test]
    fn write_truncates_and_reports_full_length() {
        let addr: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let mut buf = [0u8; 8];
        let mut len: socklen_t = 8;
        // SAFETY: buf has len bytes.
        unsafe { write(&addr, buf.as_mut_ptr().cast(), &mut len) };
        assert_eq!(len as usize, size_of::<sockaddr_in6>());
        assert_eq!(u16::from_ne_bytes([buf[0], buf[1]]), AF_INET6 as u16);
    }

    #[test]
    fn short_or_foreign_addresses_are_not_ours() {
        let addr: SocketAddr = "10.1.2.3:21".parse().unwrap();
        let raw = RawAddr::from(&addr);
        // SAFETY: reading fewer bytes than available.
        assert_eq!(unsafe { read(raw.as_ptr(), 4) }, None);
        let unix = libc::sockaddr { sa_family: libc::AF_UNIX as sa_family_t, sa_data: [0; 14] };
        // SAFETY: a whole sockaddr.
        assert_eq!(unsafe { read(&unix, size_of::<libc::sockaddr>() as socklen_t) }, None);
    }
}
