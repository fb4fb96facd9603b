//! The PROXY protocol, versions 1 (text) and 2 (binary): the header a load
//! balancer such as HAProxy puts before the client's first byte, naming the
//! client it relays. The specification is HAProxy's `doc/proxy-protocol.txt`
//! (2020/03/05).
//!
//! A header is trusted only from configured sources; deciding that is the
//! server's business. Here: the bytes, nothing else. [`Header::decode`]
//! recognises either version by its signature, refuses anything else at the
//! first byte that differs, and never asks for more than
//! [`V1_MAX_LEN`] (v1) or the caller's cap (v2) bytes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What every v1 header starts with, the space included.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 line, CRLF included (`PROXY UNKNOWN` with two IPv6
/// addresses and two 5-digit ports).
pub const V1_MAX_LEN: usize = 107;
/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version and command, family
/// and protocol, length of what follows.
pub const V2_FIXED_LEN: usize = 16;
/// Default cap on a whole v2 header. The addresses take at most 216 bytes
/// (AF_UNIX); the rest is TLVs, which HAProxy keeps to a few dozen bytes
/// unless told to forward TLS details.
pub const DEFAULT_MAX_V2_LEN: usize = 1024;

/// Length of an AF_UNIX address in a v2 header.
const UNIX_ADDR_LEN: usize = 108;

/// Why bytes are not a valid PROXY header. The receiver must close the
/// connection on any of these (spec section 2.1: "must be discarded and
/// cause the receiver to abort the connection").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Neither `PROXY ` nor the v2 signature: found at the first byte that
    /// differs from both.
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("PROXY v1 line longer than 107 bytes")]
    V1TooLong,
    /// A CR not followed by LF, or an LF without its CR.
    #[error("PROXY v1 line has a bare CR or LF")]
    V1BadLineEnd,
    #[error("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN")]
    V1BadProtocol,
    /// Not five fields separated by single spaces after `PROXY TCP4`/`TCP6`.
    #[error("PROXY v1 line is not `PROXY TCPn SRC DST SPORT DPORT`")]
    V1BadSyntax,
    /// Not an address of the line's family in canonical form.
    #[error("PROXY v1 address is not a valid address of the line's family")]
    V1BadAddress,
    #[error("PROXY v1 port is not a number 0-65535 without leading zeros")]
    V1BadPort,
    /// The high nibble of byte 13 (only 2 exists).
    #[error("PROXY v2 version {0} is not 2")]
    V2BadVersion(u8),
    /// The low nibble of byte 13: 0 (LOCAL) and 1 (PROXY) exist.
    #[error("PROXY v2 command {0} is neither LOCAL (0) nor PROXY (1)")]
    V2BadCommand(u8),
    /// Byte 14: a family above 3 or a protocol above 2.
    #[error("PROXY v2 family/protocol byte {0:#04x} is not valid")]
    V2BadFamily(u8),
    /// The length field leaves less room than the family's addresses need.
    #[error("PROXY v2 address block of {len} bytes is too short for family/protocol {family:#04x}")]
    V2ShortAddresses { family: u8, len: u16 },
    /// The whole header (16 + length field) is over the receiver's cap.
    #[error("PROXY v2 header of {0} bytes is over the limit")]
    V2TooLong(usize),
    /// A TLV after the addresses runs past the end of the header.
    #[error("PROXY v2 TLV runs past the end of the header")]
    V2BadTlv,
}

/// The two endpoints of the connection the sender relayed: the client
/// (source) and the address it connected to (destination), of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoints {
    V4 { source: SocketAddrV4, destination: SocketAddrV4 },
    V6 { source: SocketAddrV6, destination: SocketAddrV6 },
}

impl Endpoints {
    /// The client of the relayed connection.
    pub fn source(&self) -> SocketAddr {
        match *self {
            Endpoints::V4 { source, .. } => source.into(),
            Endpoints::V6 { source, .. } => source.into(),
        }
    }

    /// The address the client connected to (the balancer's, as a rule).
    pub fn destination(&self) -> SocketAddr {
        match *self {
            Endpoints::V4 { destination, .. } => destination.into(),
            Endpoints::V6 { destination, .. } => destination.into(),
        }
    }

    /// The endpoints of `source` -> `destination`, if both are of one family.
    pub fn new(source: SocketAddr, destination: SocketAddr) -> Option<Endpoints> {
        match (source, destination) {
            (SocketAddr::V4(source), SocketAddr::V4(destination)) => Some(Endpoints::V4 { source, destination }),
            (SocketAddr::V6(source), SocketAddr::V6(destination)) => Some(Endpoints::V6 { source, destination }),
            _ => None,
        }
    }
}

/// What a v2 PROXY command says about the relayed connection (byte 14 and
/// the address block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// AF_UNSPEC or protocol UNSPEC (`\x00`, and the other combinations
    /// with a nibble 0): the sender does not say; addresses, if any, are
    /// skipped as the spec asks.
    Unspecified,
    /// TCP over IPv4 (`\x11`) or IPv6 (`\x21`).
    Stream(Endpoints),
    /// UDP over IPv4 (`\x12`) or IPv6 (`\x22`).
    Datagram(Endpoints),
    /// AF_UNIX (`\x31` stream, `\x32` datagram); the 108-byte paths are
    /// skipped (written as zeros).
    Unix { datagram: bool },
}

/// One PROXY protocol header.
///
/// # Format
///
/// Version 1, one US-ASCII line of at most 107 bytes:
///
/// ```text
/// PROXY TCP4 192.0.2.1 198.51.100.7 56324 1080\r\n
/// PROXY TCP6 2001:db8::1 2001:db8::7 56324 1080\r\n
/// PROXY UNKNOWN[ anything]\r\n
/// ```
///
/// Version 2, binary:
///
/// ```text
/// +--------------------------------------+-------+-------+-------+-----------+------+
/// | \r\n\r\n\0\r\nQUIT\n                  |VER|CMD|FAM|PRO| LEN   | addresses | TLVs |
/// +--------------------------------------+-------+-------+-------+-----------+------+
///                  12                        1       1       2    LEN bytes in all
/// ```
///
/// VER is 2; CMD 0 (LOCAL: the sender's own connection, e.g. a health
/// check) or 1 (PROXY). FAM 0-3 (UNSPEC, INET, INET6, UNIX), PRO 0-2
/// (UNSPEC, STREAM, DGRAM). Addresses: source address, destination address,
/// source port, destination port, in network order (12 bytes for IPv4, 36
/// for IPv6, 216 for two AF_UNIX paths); then type-length-value records
/// (1-byte type, 2-byte length), which are checked and skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// `PROXY TCP4 ...`/`PROXY TCP6 ...`, or `None` for `PROXY UNKNOWN`
    /// (whatever follows UNKNOWN on the line is ignored, as the spec says).
    V1(Option<Endpoints>),
    /// A v2 LOCAL command: use the connection's own endpoints. Its family
    /// and addresses are ignored, as the spec says.
    V2Local,
    /// A v2 PROXY command.
    V2Proxy(Transport),
}

impl Header {
    /// 1 or 2.
    pub fn version(&self) -> u8 {
        match self {
            Header::V1(_) => 1,
            Header::V2Local | Header::V2Proxy(_) => 2,
        }
    }

    /// The relayed TCP connection's endpoints, if the header names one:
    /// `PROXY TCP4`/`TCP6`, or a v2 PROXY over TCP. `None` for v1 UNKNOWN,
    /// v2 LOCAL, and v2 PROXY of anything but TCP over IP.
    pub fn tcp(&self) -> Option<Endpoints> {
        match *self {
            Header::V1(endpoints) => endpoints,
            Header::V2Proxy(Transport::Stream(endpoints)) => Some(endpoints),
            Header::V2Local | Header::V2Proxy(_) => None,
        }
    }

    /// Decodes one header with the default v2 cap ([`DEFAULT_MAX_V2_LEN`]).
    ///
    /// # Errors
    ///
    /// See [`Header::decode_with`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
        Header::decode_with(buf, DEFAULT_MAX_V2_LEN)
    }

    /// Decodes one header from the start of `buf`. `Ok(None)` means a valid
    /// prefix: read more. The bytes after the header (the client's first
    /// bytes) are not consumed. A caller never buffers more than
    /// `max(V1_MAX_LEN, max_v2_len)` bytes: past that, the answer is an
    /// error.
    ///
    /// # Errors
    ///
    /// [`ProxyError::NotProxy`] at the first byte that matches neither
    /// signature; the `V1*` errors once the line's CRLF is in (or 107 bytes
    /// without one); the `V2*` errors as soon as the byte that shows them
    /// is in, [`ProxyError::V2BadTlv`] once the whole header is.
    pub fn decode_with(buf: &[u8], max_v2_len: usize) -> Result<Option<(Header, usize)>, ProxyError> {
        match buf.first() {
            None => Ok(None),
            Some(b'P') => {
                if !is_prefix(buf, V1_PREFIX) {
                    return Err(ProxyError::NotProxy);
                }
                decode_v1(buf)
            }
            Some(b'\r') => {
                if !is_prefix(buf, V2_SIGNATURE) {
                    return Err(ProxyError::NotProxy);
                }
                decode_v2(buf, max_v2_len)
            }
            Some(_) => Err(ProxyError::NotProxy),
        }
    }

    /// Appends the wire form of this header: the canonical v1 line (UNKNOWN
    /// without addresses), or a v2 header without TLVs (LOCAL with family
    /// UNSPEC and no addresses; AF_UNIX paths all zero).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Header::V1(None) => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
            Header::V1(Some(e)) => {
                let family = if matches!(e, Endpoints::V4 { .. }) { "TCP4" } else { "TCP6" };
                let (s, d) = (e.source(), e.destination());
                let line = format!("PROXY {family} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
                out.extend_from_slice(line.as_bytes());
            }
            Header::V2Local => {
                out.extend_from_slice(V2_SIGNATURE);
                out.extend_from_slice(&[0x20, 0x00, 0, 0]);
            }
            Header::V2Proxy(transport) => {
                out.extend_from_slice(V2_SIGNATURE);
                out.push(0x21);
                let (family, endpoints) = match transport {
                    Transport::Unspecified => (0x00, None),
                    Transport::Stream(e) => (family_byte(e, 1), Some(e)),
                    Transport::Datagram(e) => (family_byte(e, 2), Some(e)),
                    Transport::Unix { datagram } => (if *datagram { 0x32 } else { 0x31 }, None),
                };
                out.push(family);
                let len = addresses_len(family);
                out.extend_from_slice(&(len as u16).to_be_bytes());
                match endpoints {
                    Some(Endpoints::V4 { source, destination }) => {
                        out.extend_from_slice(&source.ip().octets());
                        out.extend_from_slice(&destination.ip().octets());
                        out.extend_from_slice(&source.port().to_be_bytes());
                        out.extend_from_slice(&destination.port().to_be_bytes());
                    }
                    Some(Endpoints::V6 { source, destination }) => {
                        out.extend_from_slice(&source.ip().octets());
                        out.extend_from_slice(&destination.ip().octets());
                        out.extend_from_slice(&source.port().to_be_bytes());
                        out.extend_from_slice(&destination.port().to_be_bytes());
                    }
                    None => out.resize(out.len() + len, 0),
                }
            }
        }
    }
}

impl fmt::Display for Header {
    /// For logs: `v2 PROXY 192.0.2.1:5000 -> 198.51.100.7:1080`, `v2 LOCAL`, `v1 UNKNOWN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Header::V1(Some(e)) => write!(f, "v1 {} -> {}", e.source(), e.destination()),
            Header::V1(None) => f.write_str("v1 UNKNOWN"),
            Header::V2Local => f.write_str("v2 LOCAL"),
            Header::V2Proxy(Transport::Stream(e)) => write!(f, "v2 PROXY {} -> {}", e.source(), e.destination()),
            Header::V2Proxy(Transport::Datagram(e)) => {
                write!(f, "v2 PROXY UDP {} -> {}", e.source(), e.destination())
            }
            Header::V2Proxy(Transport::Unix { .. }) => f.write_str("v2 PROXY UNIX"),
            Header::V2Proxy(Transport::Unspecified) => f.write_str("v2 PROXY UNSPEC"),
        }
    }
}

/// Whether `buf` and `signature` agree on their common length (a shorter
/// `buf` is a prefix still in the running).
fn is_prefix(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// Whether `buf` could be, or starts with, a PROXY header: what a server
/// that does not expect one can say about a client whose first bytes are
/// not its protocol.
pub fn looks_like_header(buf: &[u8]) -> bool {
    !buf.is_empty() && (is_prefix(buf, V1_PREFIX) || is_prefix(buf, V2_SIGNATURE))
}

fn decode_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // The line ends at the first CR, which must be followed by LF; an LF
    // before it is a bare LF.
    let end = match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => return Err(ProxyError::V1BadLineEnd),
        Some(i) => match window.get(i + 1) {
            Some(b'\n') => i,
            Some(_) => return Err(ProxyError::V1BadLineEnd),
            None if i + 1 < V1_MAX_LEN => return Ok(None),
            None => return Err(ProxyError::V1TooLong),
        },
        None if window.len() < V1_MAX_LEN => return Ok(None),
        None => return Err(ProxyError::V1TooLong),
    };
    let line = &buf[V1_PREFIX.len()..end];
    let consumed = end + 2;
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(Some((Header::V1(None), consumed)));
    }
    let mut fields = line.split(|&b| b == b' ');
    let protocol = fields.next().unwrap_or_default();
    let v6 = match protocol {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(ProxyError::V1BadProtocol),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(ProxyError::V1BadSyntax);
    };
    let (sport, dport) = (v1_port(sport)?, v1_port(dport)?);
    let endpoints = if v6 {
        Endpoints::V6 {
            source: SocketAddrV6::new(v1_address(src)?, sport, 0, 0),
            destination: SocketAddrV6::new(v1_address(dst)?, dport, 0, 0),
        }
    } else {
        Endpoints::V4 {
            source: SocketAddrV4::new(v1_address(src)?, sport),
            destination: SocketAddrV4::new(v1_address(dst)?, dport),
        }
    };
    Ok(Some((Header::V1(Some(endpoints)), consumed)))
}

/// An address of the line's family. Rust's parsers take exactly the
/// canonical forms the spec asks for: dotted quads without leading zeros,
/// and IPv6 in hexadecimal groups with at most one `::` (an embedded dotted
/// quad, `::ffff:192.0.2.1`, is also taken: it is still 128 bits).
fn v1_address<A: std::str::FromStr>(field: &[u8]) -> Result<A, ProxyError> {
    std::str::from_utf8(field).ok().and_then(|s| s.parse().ok()).ok_or(ProxyError::V1BadAddress)
}

/// A decimal port without leading zeros ("0" itself is fine).
fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    let digits = !field.is_empty() && field.len() <= 5 && field.iter().all(u8::is_ascii_digit);
    if !digits || (field.len() > 1 && field[0] == b'0') {
        return Err(ProxyError::V1BadPort);
    }
    std::str::from_utf8(field).ok().and_then(|s| s.parse().ok()).ok_or(ProxyError::V1BadPort)
}

/// The address block's length for a family/protocol byte (what the encoder
/// writes; the decoder's minimum).
fn addresses_len(family: u8) -> usize {
    match family {
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 2 * UNIX_ADDR_LEN,
        _ => 0,
    }
}

fn family_byte(endpoints: &Endpoints, protocol: u8) -> u8 {
    match endpoints {
        Endpoints::V4 { .. } => 0x10 | protocol,
        Endpoints::V6 { .. } => 0x20 | protocol,
    }
}

fn decode_v2(buf: &[u8], max_len: usize) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(&ver_cmd) = buf.get(12) else { return Ok(None) };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2BadVersion(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        other => return Err(ProxyError::V2BadCommand(other)),
    };
    let Some(&family) = buf.get(13) else { return Ok(None) };
    // LOCAL ignores the family, as the spec says; PROXY must name a valid one.
    if !local && (family >> 4 > 3 || family & 0x0f > 2) {
        return Err(ProxyError::V2BadFamily(family));
    }
    let Some(&[hi, lo]) = buf.get(14..16).and_then(|b| b.first_chunk::<2>()) else { return Ok(None) };
    let len = u16::from_be_bytes([hi, lo]);
    let total = V2_FIXED_LEN + usize::from(len);
    if total > max_len {
        return Err(ProxyError::V2TooLong(total));
    }
    let addresses = if local { 0 } else { addresses_len(family) };
    if usize::from(len) < addresses {
        return Err(ProxyError::V2ShortAddresses { family, len });
    }
    let Some(block) = buf.get(V2_FIXED_LEN..total) else { return Ok(None) };
    if local {
        return Ok(Some((Header::V2Local, total)));
    }
    // After UNSPEC addresses of unknown size, TLVs cannot be found: all skipped.
    if addresses > 0 {
        check_tlvs(&block[addresses..])?;
    }
    let transport = match family {
        0x11 | 0x12 | 0x21 | 0x22 => {
            let endpoints = v2_endpoints(family >> 4 == 2, block);
            if family & 0x0f == 1 { Transport::Stream(endpoints) } else { Transport::Datagram(endpoints) }
        }
        0x31 | 0x32 => Transport::Unix { datagram: family == 0x32 },
        _ => Transport::Unspecified,
    };
    Ok(Some((Header::V2Proxy(transport), total)))
}

/// The endpoints at the start of an address block long enough for them.
fn v2_endpoints(v6: bool, block: &[u8]) -> Endpoints {
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    if v6 {
        let ip = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&block[at..at + 16]).expect("16 bytes"));
        Endpoints::V6 {
            source: SocketAddrV6::new(ip(0), port(32), 0, 0),
            destination: SocketAddrV6::new(ip(16), port(34), 0, 0),
        }
    } else {
        let ip = |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
        Endpoints::V4 { source: SocketAddrV4::new(ip(0), port(8)), destination: SocketAddrV4::new(ip(4), port(10)) }
    }
}

/// Every TLV (1-byte type, 2-byte length, value) must end inside the header.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let Some(&[_, hi, lo]) = tlvs.first_chunk::<3>() else { return Err(ProxyError::V2BadTlv) };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        tlvs = tlvs.get(end..).ok_or(ProxyError::V2BadTlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of the spec's section 2.1, and its longest lines.
    const V1_TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n";
    const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
    const V1_TCP4_LONGEST: &[u8] = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    const V1_UNKNOWN_LONGEST: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    // Section 2.2: TCP over IPv4 (0x11, 12 address bytes) and IPv6 (0x21, 36).
    const V2_TCP4: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\xa8\x00\x01\xc0\xa8\x00\x0b\xdc\x04\x01\xbb";
    const V2_TCP6: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24\
\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\
\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x11\
\xdc\x04\x01\xbb";
    // A LOCAL command as HAProxy sends on health checks: family UNSPEC, no addresses.
    const V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

    fn tcp4() -> Endpoints {
        Endpoints::V4 { source: "192.168.0.1:56324".parse().unwrap(), destination: "192.168.0.11:443".parse().unwrap() }
    }

    fn tcp6() -> Endpoints {
        Endpoints::V6 {
            source: "[2001:db8::1]:56324".parse().unwrap(),
            destination: "[2001:db8::11]:443".parse().unwrap(),
        }
    }

    fn decoded(buf: &[u8]) -> (Header, usize) {
        Header::decode(buf).unwrap().unwrap()
    }

    #[test]
    fn decodes_v1_tcp4_from_the_spec() {
        assert_eq!(decoded(V1_TCP4), (Header::V1(Some(tcp4())), V1_TCP4.len()));
        let header = decoded(V1_TCP4).0;
        assert_eq!(header.tcp().unwrap().source(), "192.168.0.1:56324".parse().unwrap());
        assert_eq!(header.version(), 1);
    }

    #[test]
    fn decodes_v1_tcp6() {
        assert_eq!(decoded(V1_TCP6), (Header::V1(Some(tcp6())), V1_TCP6.len()));
    }

    #[test]
    fn decodes_v1_unknown_and_ignores_the_rest_of_its_line() {
        assert_eq!(decoded(V1_UNKNOWN), (Header::V1(None), 15));
        assert_eq!(decoded(V1_UNKNOWN_LONGEST), (Header::V1(None), V1_MAX_LEN));
        assert_eq!(decoded(b"PROXY UNKNOWN whatever\r\n").0, Header::V1(None));
        assert_eq!(Header::V1(None).tcp(), None);
    }

    #[test]
    fn decodes_the_longest_v1_lines() {
        assert_eq!(V1_UNKNOWN_LONGEST.len(), V1_MAX_LEN);
        assert_eq!(decoded(V1_TCP4_LONGEST).1, 56);
        let longest6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(decoded(longest6).1, 104);
    }

    #[test]
    fn decodes_v2_tcp4_and_tcp6() {
        assert_eq!(decoded(V2_TCP4), (Header::V2Proxy(Transport::Stream(tcp4())), 28));
        assert_eq!(decoded(V2_TCP6), (Header::V2Proxy(Transport::Stream(tcp6())), 52));
        assert_eq!(decoded(V2_TCP4).0.tcp(), Some(tcp4()));
        assert_eq!(decoded(V2_TCP4).0.version(), 2);
    }

    #[test]
    fn decodes_v2_local_whatever_its_family_says() {
        assert_eq!(decoded(V2_LOCAL), (Header::V2Local, 16));
        // LOCAL with addresses (senders should not, receivers must skip them)
        // and with a family byte that PROXY could not use.
        let mut with = b"\r\n\r\n\0\r\nQUIT\n\x20\x77\x00\x03abc".to_vec();
        assert_eq!(decoded(&with), (Header::V2Local, 19));
        with.truncate(18);
        assert_eq!(Header::decode(&with), Ok(None));
        assert_eq!(Header::V2Local.tcp(), None);
    }

    #[test]
    fn decodes_v2_udp_unix_and_unspec() {
        let mut udp = V2_TCP4.to_vec();
        udp[13] = 0x12;
        assert_eq!(decoded(&udp).0, Header::V2Proxy(Transport::Datagram(tcp4())));
        assert_eq!(decoded(&udp).0.tcp(), None);
        let mut unix = b"\r\n\r\n\0\r\nQUIT\n\x21\x31\x00\xd8".to_vec();
        unix.extend(std::iter::repeat_n(b'/', 216));
        assert_eq!(decoded(&unix), (Header::V2Proxy(Transport::Unix { datagram: false }), 232));
        // UNSPEC family, or a family with protocol UNSPEC: addresses skipped.
        for family in [0x00, 0x01, 0x10, 0x20, 0x30] {
            let mut b = b"\r\n\r\n\0\r\nQUIT\n\x21\x00\x00\x04abcd".to_vec();
            b[13] = family;
            assert_eq!(decoded(&b), (Header::V2Proxy(Transport::Unspecified), 20), "{family:#x}");
        }
    }

    #[test]
    fn v2_tlvs_are_checked_and_skipped() {
        // PP2_TYPE_ALPN (1) of 2 bytes, PP2_TYPE_UNIQUE_ID (5) of 3, then PP2_TYPE_NOOP (4)
        // empty: lengths that tell `3 + len` from any other step through them.
        let mut b = V2_TCP4.to_vec();
        b[15] = 12 + 5 + 6 + 3;
        b.extend_from_slice(b"\x01\x00\x02h2\x05\x00\x03abc\x04\x00\x00");
        assert_eq!(decoded(&b), (Header::V2Proxy(Transport::Stream(tcp4())), 16 + 26));
        // A TLV whose length runs past the header, and a cut-off TLV head.
        let mut b = V2_TCP4.to_vec();
        b[15] = 12 + 4;
        b.extend_from_slice(b"\x05\x00\x03a");
        assert_eq!(Header::decode(&b), Err(ProxyError::V2BadTlv));
        let mut b = V2_TCP4.to_vec();
        b[15] = 12 + 2;
        b.extend_from_slice(b"\x05\x00");
        assert_eq!(Header::decode(&b), Err(ProxyError::V2BadTlv));
    }

    #[test]
    fn leaves_the_clients_bytes_after_the_header() {
        for header in [V1_TCP4, V1_UNKNOWN, V2_TCP4, V2_LOCAL] {
            let mut buf = header.to_vec();
            buf.extend_from_slice(b"\x04\x01\x00\x50\x7f\x00\x00\x01\0");
            assert_eq!(decoded(&buf).1, header.len());
        }
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        let mut unix = b"\r\n\r\n\0\r\nQUIT\n\x21\x32\x00\xd8".to_vec();
        unix.extend(std::iter::repeat_n(0, 216));
        for msg in
            [V1_TCP4, V1_TCP6, V1_UNKNOWN, V1_UNKNOWN_LONGEST, V1_TCP4_LONGEST, V2_TCP4, V2_TCP6, V2_LOCAL, &unix]
        {
            for len in 0..msg.len() {
                assert_eq!(Header::decode(&msg[..len]), Ok(None), "prefix {len} of {msg:?}");
            }
        }
    }

    #[test]
    fn refuses_other_protocols_at_the_first_byte() {
        for other in [&b"\x04\x01"[..], b"\x05", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"\0"] {
            assert_eq!(Header::decode(other), Err(ProxyError::NotProxy), "{other:?}");
        }
        // At the first byte that differs from both signatures.
        assert_eq!(Header::decode(b"PROXZ"), Err(ProxyError::NotProxy));
        assert_eq!(Header::decode(b"PROXY\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(Header::decode(b"proxy "), Err(ProxyError::NotProxy));
        assert_eq!(Header::decode(b"\r\n\r\n\0\r\nQUIT\r"), Err(ProxyError::NotProxy));
        assert_eq!(Header::decode(b"\r\n\r\n\x01"), Err(ProxyError::NotProxy));
        assert_eq!(Header::decode(b"\r\r"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn looks_like_header_at_any_length() {
        for header in [V1_TCP4, V2_TCP4] {
            for len in 1..=header.len() {
                assert!(looks_like_header(&header[..len]), "{len}");
            }
        }
        assert!(!looks_like_header(b""));
        assert!(!looks_like_header(b"\x04\x01"));
        assert!(!looks_like_header(b"PROXZ"));
    }

    #[test]
    fn v1_line_is_capped_at_107_bytes() {
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(Header::decode(&line), Ok(None));
        line.push(b'\r');
        // 107 bytes ending in CR: the LF would be the 108th.
        assert_eq!(Header::decode(&line), Err(ProxyError::V1TooLong));
        line.pop();
        line.push(b'x');
        assert_eq!(Header::decode(&line), Err(ProxyError::V1TooLong));
        line.extend_from_slice(b"\r\n");
        assert_eq!(Header::decode(&line), Err(ProxyError::V1TooLong));
    }

    #[test]
    fn v1_refuses_a_bare_cr_or_lf() {
        assert_eq!(Header::decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), Err(ProxyError::V1BadLineEnd));
        assert_eq!(Header::decode(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"), Err(ProxyError::V1BadLineEnd));
        assert_eq!(Header::decode(b"PROXY UNKNOWN\r\r\n"), Err(ProxyError::V1BadLineEnd));
        assert_eq!(Header::decode(b"PROXY \n"), Err(ProxyError::V1BadLineEnd));
    }

    #[test]
    fn v1_refuses_malformed_lines() {
        let bad = |line: &str| Header::decode(format!("{line}\r\n").as_bytes()).unwrap_err();
        assert_eq!(bad("PROXY TCP5 1.2.3.4 5.6.7.8 1 2"), ProxyError::V1BadProtocol);
        assert_eq!(bad("PROXY tcp4 1.2.3.4 5.6.7.8 1 2"), ProxyError::V1BadProtocol);
        assert_eq!(bad("PROXY UNKNOWNX"), ProxyError::V1BadProtocol);
        assert_eq!(bad("PROXY "), ProxyError::V1BadProtocol);
        assert_eq!(bad("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2"), ProxyError::V1BadProtocol);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 1"), ProxyError::V1BadSyntax);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3"), ProxyError::V1BadSyntax);
        assert_eq!(bad("PROXY TCP4 1.2.3.4  5.6.7.8 1 2"), ProxyError::V1BadSyntax);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "), ProxyError::V1BadSyntax);
        assert_eq!(bad("PROXY TCP4"), ProxyError::V1BadSyntax);
        assert_eq!(bad("PROXY TCP4 1.2.3.04 5.6.7.8 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP4 1.2.3 5.6.7.8 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP4 1.2.3.256 5.6.7.8 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP4 ::1 5.6.7.8 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP6 1.2.3.4 ::1 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP6 ::1 1::2::3 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP6 ::1 \u{e9}::1 1 2"), ProxyError::V1BadAddress);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2"), ProxyError::V1BadPort);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 080"), ProxyError::V1BadPort);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 +80"), ProxyError::V1BadPort);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 -1"), ProxyError::V1BadPort);
        assert_eq!(bad("PROXY TCP4 1.2.3.4 5.6.7.8 100000 1"), ProxyError::V1BadPort);
        assert_eq!(decoded(b"PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n").0.tcp().unwrap().source().port(), 0);
    }

    #[test]
    fn v2_refuses_bad_version_command_and_family_at_their_byte() {
        let at = |byte: usize, value: u8| {
            let mut b = V2_TCP4[..=byte].to_vec();
            b[byte] = value;
            Header::decode(&b)
        };
        assert_eq!(at(12, 0x11), Err(ProxyError::V2BadVersion(1)));
        assert_eq!(at(12, 0x31), Err(ProxyError::V2BadVersion(3)));
        assert_eq!(at(12, 0x22), Err(ProxyError::V2BadCommand(2)));
        assert_eq!(at(12, 0x2f), Err(ProxyError::V2BadCommand(15)));
        assert_eq!(at(13, 0x41), Err(ProxyError::V2BadFamily(0x41)));
        assert_eq!(at(13, 0x13), Err(ProxyError::V2BadFamily(0x13)));
        assert_eq!(at(13, 0xff), Err(ProxyError::V2BadFamily(0xff)));
    }

    #[test]
    fn v2_refuses_an_address_block_too_short_for_its_family() {
        let mut b = V2_TCP4[..16].to_vec();
        b[15] = 11;
        assert_eq!(Header::decode(&b), Err(ProxyError::V2ShortAddresses { family: 0x11, len: 11 }));
        let mut b = V2_TCP6[..16].to_vec();
        b[15] = 12;
        assert_eq!(Header::decode(&b), Err(ProxyError::V2ShortAddresses { family: 0x21, len: 12 }));
        let b = b"\r\n\r\n\0\r\nQUIT\n\x21\x32\x00\xd7";
        assert_eq!(Header::decode(b), Err(ProxyError::V2ShortAddresses { family: 0x32, len: 215 }));
    }

    #[test]
    fn v2_is_capped_before_its_bytes_arrive() {
        let mut b = V2_TCP4[..16].to_vec();
        b[14..16].copy_from_slice(&1009u16.to_be_bytes());
        assert_eq!(Header::decode(&b), Err(ProxyError::V2TooLong(1025)));
        b[14..16].copy_from_slice(&1008u16.to_be_bytes());
        assert_eq!(Header::decode(&b), Ok(None));
        assert_eq!(Header::decode_with(V2_TCP4, 27), Err(ProxyError::V2TooLong(28)));
        assert_eq!(Header::decode_with(V2_TCP4, 28), Ok(Some((decoded(V2_TCP4).0, 28))));
        b[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(Header::decode_with(&b, usize::MAX), Ok(None));
    }

    #[test]
    fn errors_stay_errors_whatever_follows() {
        for bad in [&b"PROXY TCP4 1.2.3.4\n"[..], b"\r\n\r\n\0\r\nQUIT\n\x10", b"X"] {
            let e = Header::decode(bad).unwrap_err();
            let mut more = bad.to_vec();
            more.extend_from_slice(b"PROXY UNKNOWN\r\n");
            assert_eq!(Header::decode(&more), Err(e));
        }
    }

    #[test]
    fn encodes_the_spec_bytes() {
        let mut out = Vec::new();
        Header::V1(Some(tcp4())).encode(&mut out);
        assert_eq!(out, V1_TCP4);
        out.clear();
        Header::V1(Some(tcp6())).encode(&mut out);
        assert_eq!(out, V1_TCP6);
        out.clear();
        Header::V1(None).encode(&mut out);
        assert_eq!(out, V1_UNKNOWN);
        out.clear();
        Header::V2Proxy(Transport::Stream(tcp4())).encode(&mut out);
        assert_eq!(out, V2_TCP4);
        out.clear();
        Header::V2Proxy(Transport::Stream(tcp6())).encode(&mut out);
        assert_eq!(out, V2_TCP6);
        out.clear();
        Header::V2Local.encode(&mut out);
        assert_eq!(out, V2_LOCAL);
    }

    #[test]
    fn round_trips() {
        let headers = [
            Header::V1(Some(tcp4())),
            Header::V1(Some(tcp6())),
            Header::V1(None),
            Header::V2Local,
            Header::V2Proxy(Transport::Stream(tcp4())),
            Header::V2Proxy(Transport::Stream(tcp6())),
            Header::V2Proxy(Transport::Datagram(tcp4())),
            Header::V2Proxy(Transport::Datagram(tcp6())),
            Header::V2Proxy(Transport::Unix { datagram: false }),
            Header::V2Proxy(Transport::Unix { datagram: true }),
            Header::V2Proxy(Transport::Unspecified),
        ];
        for header in headers {
            let mut out = Vec::new();
            header.encode(&mut out);
            assert_eq!(Header::decode(&out), Ok(Some((header, out.len()))), "{header}");
        }
    }

    #[test]
    fn endpoints_of_one_family_only() {
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:2".parse().unwrap();
        assert_eq!(Endpoints::new(v4, v4).map(|e| e.destination()), Some(v4));
        assert_eq!(Endpoints::new(v6, v6).map(|e| e.source()), Some(v6));
        assert_eq!(Endpoints::new(v4, v6), None);
        assert_eq!(Endpoints::new(v6, v4), None);
    }

    #[test]
    fn displays_for_logs() {
        assert_eq!(decoded(V2_TCP4).0.to_string(), "v2 PROXY 192.168.0.1:56324 -> 192.168.0.11:443");
        assert_eq!(decoded(V1_TCP6).0.to_string(), "v1 [2001:db8::1]:56324 -> [2001:db8::11]:443");
        assert_eq!(Header::V2Local.to_string(), "v2 LOCAL");
        assert_eq!(Header::V1(None).to_string(), "v1 UNKNOWN");
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn endpoints() -> impl Strategy<Value = Endpoints> {
            prop_oneof![
                (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(s, sp, d, dp)| {
                    Endpoints::V4 {
                        source: SocketAddrV4::new(s.into(), sp),
                        destination: SocketAddrV4::new(d.into(), dp),
                    }
                }),
                (any::<[u8; 16]>(), any::<u16>(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, sp, d, dp)| {
                    Endpoints::V6 {
                        source: SocketAddrV6::new(s.into(), sp, 0, 0),
                        destination: SocketAddrV6::new(d.into(), dp, 0, 0),
                    }
                }),
            ]
        }

        fn header() -> impl Strategy<Value = Header> {
            prop_oneof![
                proptest::option::of(endpoints()).prop_map(Header::V1),
                Just(Header::V2Local),
                Just(Header::V2Proxy(Transport::Unspecified)),
                endpoints().prop_map(|e| Header::V2Proxy(Transport::Stream(e))),
                endpoints().prop_map(|e| Header::V2Proxy(Transport::Datagram(e))),
                any::<bool>().prop_map(|datagram| Header::V2Proxy(Transport::Unix { datagram })),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

            /// decode(encode(h)) == h with the exact length, whatever the client sends after it,
            /// and every proper prefix needs more.
            #[test]
            fn headers_round_trip(header in header(), tail in any::<Vec<u8>>()) {
                let mut wire = Vec::new();
                header.encode(&mut wire);
                let len = wire.len();
                prop_assert!(len <= V1_MAX_LEN.max(DEFAULT_MAX_V2_LEN));
                for cut in 0..len {
                    prop_assert_eq!(Header::decode(&wire[..cut]), Ok(None));
                }
                wire.extend_from_slice(&tail);
                prop_assert_eq!(Header::decode(&wire), Ok(Some((header, len))));
            }

            /// Any bytes: no panic, consumed <= len, "need more" only while under the caps,
            /// and the answer does not change with more bytes once it is given.
            #[test]
            fn any_bytes(buf in any::<Vec<u8>>(), more in any::<Vec<u8>>(), v2 in any::<bool>()) {
                let mut buf = buf;
                if v2 {
                    let mut with = V2_SIGNATURE.to_vec();
                    with.append(&mut buf);
                    buf = with;
                }
                let result = Header::decode(&buf);
                let mut longer = buf.clone();
                longer.extend_from_slice(&more);
                match result {
                    Ok(Some((_, n))) => {
                        prop_assert!(n <= buf.len());
                        prop_assert_eq!(Header::decode(&longer), result);
                    }
                    Ok(None) => prop_assert!(buf.len() < V1_MAX_LEN.max(DEFAULT_MAX_V2_LEN)),
                    Err(e) => prop_assert_eq!(Header::decode(&longer), Err(e)),
                }
            }
        }
    }
}
