//! How the load generator reaches a destination: directly, or through a
//! SOCKS4 or SOCKS5 (no authentication) proxy, with blocking sockets.
//!
//! SOCKS5 is here only because microsocks, one of the servers we compare
//! against, speaks nothing else; the bytes are RFC 1928's, CONNECT only.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::time::Duration;

use socks4_proto::v4::{Destination, ProtocolError, Reply, ReplyCode, Request};

/// The user id the load generator sends in SOCKS4 requests.
pub const USER_ID: &[u8] = b"bench";

/// Where connections go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// Straight to the destination: the baseline every ratio is taken against.
    Direct,
    Socks4(SocketAddr),
    Socks5(SocketAddr),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("proxy must be `direct`, `socks4://ADDR:PORT` or `socks5://ADDR:PORT`, not {0:?}")]
pub struct BadProxy(String);

impl FromStr for Proxy {
    type Err = BadProxy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadProxy(s.to_owned());
        if s == "direct" {
            return Ok(Proxy::Direct);
        }
        let (scheme, addr) = s.split_once("://").ok_or_else(bad)?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        match scheme {
            "socks4" => Ok(Proxy::Socks4(addr)),
            "socks5" => Ok(Proxy::Socks5(addr)),
            _ => Err(bad()),
        }
    }
}

/// Why a connection through the proxy did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("SOCKS4 reply is malformed: {0}")]
    Socks4Protocol(#[from] ProtocolError),
    #[error("SOCKS4 server answered {0}")]
    Socks4Refused(ReplyCode),
    #[error("SOCKS5 server answered {0:02x?}")]
    Socks5(Vec<u8>),
}

impl Proxy {
    /// Opens a TCP connection to `dest`, through the proxy if there is one,
    /// and returns once the proxy has granted it (the relay is then ready).
    ///
    /// # Errors
    ///
    /// A socket error, a refusal or a reply that is not SOCKS.
    pub fn connect(&self, dest: SocketAddrV4, timeout: Duration) -> Result<TcpStream, ConnectError> {
        self.connect_from(None, dest, timeout)
    }

    /// [`Proxy::connect`] from a chosen local address (port still picked by
    /// the kernel at connect time).
    ///
    /// # Errors
    ///
    /// As [`Proxy::connect`], and a source address that cannot be bound.
    pub fn connect_from(
        &self,
        source: Option<Ipv4Addr>,
        dest: SocketAddrV4,
        timeout: Duration,
    ) -> Result<TcpStream, ConnectError> {
        let server = match *self {
            Proxy::Direct => SocketAddr::V4(dest),
            Proxy::Socks4(addr) | Proxy::Socks5(addr) => addr,
        };
        let mut stream = match source {
            None => TcpStream::connect_timeout(&server, timeout)?,
            Some(ip) => connect_bound(ip, server, timeout)?,
        };
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        match *self {
            Proxy::Direct => {}
            Proxy::Socks4(_) => socks4_connect(&mut stream, dest)?,
            Proxy::Socks5(_) => socks5_connect(&mut stream, dest)?,
        }
        Ok(stream)
    }
}

/// Connects from `source`. IP_BIND_ADDRESS_NO_PORT defers the port choice
/// to connect(), so ports are shared across destinations as for an unbound
/// socket instead of being reserved at bind().
fn connect_bound(source: Ipv4Addr, server: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor we own, and a pointer to a live c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&server.into(), timeout)?;
    Ok(socket.into())
}

/// The `n`th of `count` loopback source addresses 127.0.0.2, 127.0.0.3, ...
/// (`count` at most 250).
pub fn loopback_source(n: usize, count: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (n % count.clamp(1, 250)) as u8)
}

fn socks4_connect(stream: &mut TcpStream, dest: SocketAddrV4) -> Result<(), ConnectError> {
    let mut request = Vec::with_capacity(16);
    Request::connect(Destination::Ip(*dest.ip()), dest.port(), USER_ID).encode(&mut request);
    stream.write_all(&request)?;
    // Exactly the reply: the destination sends nothing, and a relay byte
    // read here would be lost.
    let mut buf = [0u8; socks4_proto::v4::REPLY_LEN];
    stream.read_exact(&mut buf)?;
    match Reply::decode(&buf)? {
        Some((reply, _)) if reply.code == ReplyCode::Granted => Ok(()),
        Some((reply, _)) => Err(ConnectError::Socks4Refused(reply.code)),
        None => unreachable!("a full reply buffer always decodes or fails"),
    }
}

/// The RFC 1928 method-selection message offering "no authentication" only.
pub const SOCKS5_GREETING: [u8; 3] = [5, 1, 0];

/// An RFC 1928 CONNECT request for an IPv4 destination.
pub fn socks5_request(dest: SocketAddrV4) -> [u8; 10] {
    let [a, b, c, d] = dest.ip().octets();
    let [p0, p1] = dest.port().to_be_bytes();
    [5, 1, 0, 1, a, b, c, d, p0, p1]
}

/// How many more bytes follow the first four of an RFC 1928 reply with this
/// address type (`first` is the length byte for a domain name), or `None` if
/// the type is unknown.
pub fn socks5_reply_rest(atyp: u8, first: u8) -> Option<usize> {
    match atyp {
        1 => Some(4 + 2),
        4 => Some(16 + 2),
        3 => Some(1 + first as usize + 2),
        _ => None,
    }
}

fn socks5_connect(stream: &mut TcpStream, dest: SocketAddrV4) -> Result<(), ConnectError> {
    stream.write_all(&SOCKS5_GREETING)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(ConnectError::Socks5(choice.to_vec()));
    }
    stream.write_all(&socks5_request(dest))?;
    // VER REP RSV ATYP, then the bound address; read the fifth byte first
    // because a domain name carries its length there.
    let mut head = [0u8; 5];
    stream.read_exact(&mut head)?;
    if head[0] != 5 || head[1] != 0 {
        return Err(ConnectError::Socks5(head.to_vec()));
    }
    let rest = socks5_reply_rest(head[3], head[4]).ok_or_else(|| ConnectError::Socks5(head.to_vec()))?;
    let mut tail = vec![0u8; rest - 1];
    stream.read_exact(&mut tail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        assert_eq!("direct".parse(), Ok(Proxy::Direct));
        assert_eq!("socks4://127.0.0.1:1080".parse(), Ok(Proxy::Socks4("127.0.0.1:1080".parse().unwrap())));
        assert_eq!("socks5://127.0.0.1:9".parse(), Ok(Proxy::Socks5("127.0.0.1:9".parse().unwrap())));
        assert!("http://127.0.0.1:1".parse::<Proxy>().is_err());
        assert!("socks4://localhost:1".parse::<Proxy>().is_err());
    }

    #[test]
    fn socks5_request_is_rfc1928_layout() {
        let dest: SocketAddrV4 = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(socks5_request(dest), *b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90");
    }

    #[test]
    fn loopback_sources_rotate_from_127_0_0_2() {
        assert_eq!(loopback_source(0, 3), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(loopback_source(2, 3), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(loopback_source(3, 3), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(loopback_source(300, 1000), Ipv4Addr::new(127, 0, 0, 52));
    }

    #[test]
    fn socks5_reply_lengths() {
        assert_eq!(socks5_reply_rest(1, 0), Some(6));
        assert_eq!(socks5_reply_rest(4, 0), Some(18));
        assert_eq!(socks5_reply_rest(3, 9), Some(12));
        assert_eq!(socks5_reply_rest(2, 0), None);
    }
}
