//! SOCKS5 (RFC 1928) and its username/password sub-negotiation (RFC 1929):
//! the greeting and method selection, the login, CONNECT/BIND/UDP ASSOCIATE
//! requests and their replies, and the header of a relayed UDP datagram.
//!
//! A session on the wire: the client's [`Greeting`], the server's
//! [`MethodSelection`], then for [`Method::UsernamePassword`] a
//! [`PasswordRequest`] and its [`PasswordReply`], then one [`Request`] and
//! one [`Reply`] (two for BIND). Every length the peer controls is one byte
//! on the wire, so no message is longer than the `MAX_*_LEN` below.
//!
//! RSV bytes are written as zero and not checked when read: RFC 1928 gives
//! them no meaning, and refusing a client over them would gain nothing.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::host::{self, HostNameError};

/// VER of the greeting, method selection, requests and replies.
pub const VERSION: u8 = 5;
/// VER of the username/password request and reply (RFC 1929).
pub const PASSWORD_VERSION: u8 = 1;

/// ATYP of an IPv4 address (4 bytes).
pub const ATYP_IPV4: u8 = 1;
/// ATYP of a domain name (a length byte, then the name, no NUL).
pub const ATYP_DOMAIN_NAME: u8 = 3;
/// ATYP of an IPv6 address (16 bytes).
pub const ATYP_IPV6: u8 = 4;

/// Longest greeting: 255 methods.
pub const MAX_GREETING_LEN: usize = 2 + 255;
/// Longest username/password request: both fields 255 bytes.
pub const MAX_PASSWORD_REQUEST_LEN: usize = 3 + 255 + 255;
/// Longest request or reply: a 255-byte domain name.
pub const MAX_REQUEST_LEN: usize = 4 + 1 + 255 + 2;
/// Longest UDP request header: a 255-byte domain name.
pub const MAX_UDP_HEADER_LEN: usize = 4 + 1 + 255 + 2;

/// Why a message could not be decoded (or a password request built).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// VER of a greeting, method selection, request or reply is not 5.
    #[error("version {0} is not SOCKS5 (5)")]
    BadVersion(u8),
    /// VER of a username/password request or reply is not 1.
    #[error("username/password version {0} is not 1")]
    BadPasswordVersion(u8),
    #[error("username is empty")]
    EmptyUsername,
    #[error("password is empty")]
    EmptyPassword,
    #[error("username longer than 255 bytes")]
    UsernameTooLong,
    #[error("password longer than 255 bytes")]
    PasswordTooLong,
    /// CMD of a request (byte 1); the server answers [`ReplyCode::CommandNotSupported`].
    #[error("unknown SOCKS5 command {0} (1 = CONNECT, 2 = BIND, 3 = UDP ASSOCIATE)")]
    BadCommand(u8),
    /// ATYP (byte 3 of a request, reply or UDP header); the server answers
    /// [`ReplyCode::AddressTypeNotSupported`].
    #[error("unknown address type {0} (1 = IPv4, 3 = domain name, 4 = IPv6)")]
    BadAddressType(u8),
    #[error("domain name is empty")]
    EmptyHostName,
    #[error("domain name is not a valid DNS name")]
    BadHostName,
    /// REP of a reply.
    #[error("unknown reply code {0}")]
    BadReplyCode(u8),
    /// A UDP datagram that ends inside its header (see [`UdpHeader::split`]).
    #[error("datagram shorter than its SOCKS5 UDP header")]
    TruncatedDatagram,
}

impl From<HostNameError> for ProtocolError {
    fn from(e: HostNameError) -> Self {
        match e {
            HostNameError::Empty => ProtocolError::EmptyHostName,
            HostNameError::Invalid => ProtocolError::BadHostName,
        }
    }
}

/// Refuses `buf` at once if its first byte is there and is not `version`.
fn check_version(buf: &[u8], version: u8, error: fn(u8) -> ProtocolError) -> Result<(), ProtocolError> {
    match buf.first() {
        Some(&v) if v != version => Err(error(v)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Method negotiation.

/// An authentication method (RFC 1928 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// 0x00: no authentication required.
    NoAuth,
    /// 0x01: GSSAPI (RFC 1961).
    Gssapi,
    /// 0x02: username/password (RFC 1929).
    UsernamePassword,
    /// 0xFF: in a method selection, none of the offered methods is acceptable.
    NoAcceptable,
    /// Any other byte (IANA-assigned 0x03-0x7F, private 0x80-0xFE), kept as
    /// sent. Never one of the bytes named above: [`Method::from_byte`] reads
    /// those as their variant.
    Other(u8),
}

impl Method {
    pub fn from_byte(b: u8) -> Method {
        match b {
            0x00 => Method::NoAuth,
            0x01 => Method::Gssapi,
            0x02 => Method::UsernamePassword,
            0xFF => Method::NoAcceptable,
            other => Method::Other(other),
        }
    }

    pub fn to_byte(self) -> u8 {
        match self {
            Method::NoAuth => 0x00,
            Method::Gssapi => 0x01,
            Method::UsernamePassword => 0x02,
            Method::NoAcceptable => 0xFF,
            Method::Other(b) => b,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::NoAuth => f.write_str("no authentication"),
            Method::Gssapi => f.write_str("GSSAPI"),
            Method::UsernamePassword => f.write_str("username/password"),
            Method::NoAcceptable => f.write_str("no acceptable methods"),
            Method::Other(b) => write!(f, "method {b:#04x}"),
        }
    }
}

/// The client's first message: the authentication methods it supports.
///
/// # Format
///
/// ```text
/// +----+----------+----------+
/// |VER | NMETHODS | METHODS  |
/// +----+----------+----------+
/// | 1  |    1     | NMETHODS |
/// +----+----------+----------+
/// ```
///
/// VER is 5. RFC 1928 says 1 to 255 methods; 0 is decoded too, so that the
/// server can answer it with [`Method::NoAcceptable`] rather than an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub methods: Vec<Method>,
}

impl Greeting {
    pub fn new(methods: impl Into<Vec<Method>>) -> Self {
        Greeting { methods: methods.into() }
    }

    /// Whether the client offers `method`.
    pub fn offers(&self, method: Method) -> bool {
        self.methods.contains(&method)
    }

    /// Decodes one greeting from the start of `buf`; `Ok(None)` means a
    /// valid prefix: read more.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadVersion`], at the first byte.
    pub fn decode(buf: &[u8]) -> Result<Option<(Greeting, usize)>, ProtocolError> {
        check_version(buf, VERSION, ProtocolError::BadVersion)?;
        let Some(&n) = buf.get(1) else {
            return Ok(None);
        };
        let len = 2 + usize::from(n);
        let Some(methods) = buf.get(2..len) else {
            return Ok(None);
        };
        let methods = methods.iter().copied().map(Method::from_byte).collect();
        Ok(Some((Greeting { methods }, len)))
    }

    /// Appends the wire form of this greeting.
    ///
    /// # Panics
    ///
    /// If it has more than 255 methods, which NMETHODS cannot count.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let n = u8::try_from(self.methods.len()).expect("a SOCKS5 greeting has at most 255 methods");
        out.extend_from_slice(&[VERSION, n]);
        out.extend(self.methods.iter().map(|m| m.to_byte()));
    }
}

/// The server's answer to a [`Greeting`]: the method the session goes on
/// with, or [`Method::NoAcceptable`] (then the client closes).
///
/// # Format
///
/// ```text
/// +----+--------+
/// |VER | METHOD |
/// +----+--------+
/// | 1  |   1    |
/// +----+--------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSelection {
    pub method: Method,
}

impl MethodSelection {
    pub fn new(method: Method) -> Self {
        MethodSelection { method }
    }

    /// Decodes the two bytes of a method selection.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadVersion`], at the first byte.
    pub fn decode(buf: &[u8]) -> Result<Option<(MethodSelection, usize)>, ProtocolError> {
        check_version(buf, VERSION, ProtocolError::BadVersion)?;
        Ok(buf.get(1).map(|&m| (MethodSelection { method: Method::from_byte(m) }, 2)))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    pub fn to_bytes(&self) -> [u8; 2] {
        [VERSION, self.method.to_byte()]
    }
}

// ---------------------------------------------------------------------------
// Username/password (RFC 1929).

/// The client's login, after the server selected [`Method::UsernamePassword`].
///
/// # Format
///
/// ```text
/// +----+------+----------+------+----------+
/// |VER | ULEN |  UNAME   | PLEN |  PASSWD  |
/// +----+------+----------+------+----------+
/// | 1  |  1   | 1 to 255 |  1   | 1 to 255 |
/// +----+------+----------+------+----------+
/// ```
///
/// VER is 1. Both fields are raw bytes, not necessarily UTF-8, and never
/// empty. `Debug` does not show the password, so the request can be logged
/// by mistake without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordRequest {
    username: Vec<u8>,
    password: Vec<u8>,
}

impl PasswordRequest {
    /// A login with fields the wire can carry: 1 to 255 bytes each.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::EmptyUsername`], [`ProtocolError::UsernameTooLong`],
    /// [`ProtocolError::EmptyPassword`], [`ProtocolError::PasswordTooLong`].
    pub fn new(username: impl Into<Vec<u8>>, password: impl Into<Vec<u8>>) -> Result<Self, ProtocolError> {
        let (username, password) = (username.into(), password.into());
        match (username.len(), password.len()) {
            (0, _) => Err(ProtocolError::EmptyUsername),
            (256.., _) => Err(ProtocolError::UsernameTooLong),
            (_, 0) => Err(ProtocolError::EmptyPassword),
            (_, 256..) => Err(ProtocolError::PasswordTooLong),
            _ => Ok(PasswordRequest { username, password }),
        }
    }

    pub fn username(&self) -> &[u8] {
        &self.username
    }

    pub fn password(&self) -> &[u8] {
        &self.password
    }

    /// The username as text, for rules and logs (invalid UTF-8 replaced).
    pub fn username_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.username)
    }

    /// Decodes one request from the start of `buf`; `Ok(None)` means a
    /// valid prefix: read more. A zero length is refused as soon as its
    /// byte arrives.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadPasswordVersion`], [`ProtocolError::EmptyUsername`],
    /// [`ProtocolError::EmptyPassword`].
    pub fn decode(buf: &[u8]) -> Result<Option<(PasswordRequest, usize)>, ProtocolError> {
        check_version(buf, PASSWORD_VERSION, ProtocolError::BadPasswordVersion)?;
        let Some(ulen) = field_len(buf.get(1..).unwrap_or_default(), ProtocolError::EmptyUsername)? else {
            return Ok(None);
        };
        let Some(plen) = field_len(buf.get(2 + ulen..).unwrap_or_default(), ProtocolError::EmptyPassword)? else {
            return Ok(None);
        };
        let username = buf[2..2 + ulen].to_vec();
        let password = buf[3 + ulen..3 + ulen + plen].to_vec();
        Ok(Some((PasswordRequest { username, password }, 3 + ulen + plen)))
    }

    /// Appends the wire form of this request.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(PASSWORD_VERSION);
        // new() and decode() keep both fields within 1..=255 bytes.
        for field in [&self.username, &self.password] {
            out.push(field.len() as u8);
            out.extend_from_slice(field);
        }
    }
}

/// The length of the 1-to-255-byte field that follows the length byte at
/// the start of `buf`; `Ok(None)` if `buf` ends before the field does.
fn field_len(buf: &[u8], empty: ProtocolError) -> Result<Option<usize>, ProtocolError> {
    match buf.first().map(|&n| usize::from(n)) {
        None => Ok(None),
        Some(0) => Err(empty),
        Some(n) => Ok((buf.len() > n).then_some(n)),
    }
}

impl fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordRequest")
            .field("username", &self.username_lossy())
            .field("password", &format_args!("<hidden>"))
            .finish()
    }
}

/// The server's verdict on a [`PasswordRequest`]. On failure the server
/// closes the connection (RFC 1929).
///
/// # Format
///
/// ```text
/// +----+--------+
/// |VER | STATUS |
/// +----+--------+
/// | 1  |   1    |
/// +----+--------+
/// ```
///
/// VER is 1; STATUS 0 is success, any other value failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordReply {
    pub status: u8,
}

impl PasswordReply {
    pub const SUCCESS: PasswordReply = PasswordReply { status: 0 };
    /// The failure this implementation sends.
    pub const FAILURE: PasswordReply = PasswordReply { status: 1 };

    pub fn is_success(self) -> bool {
        self.status == 0
    }

    /// Decodes the two bytes of a reply.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadPasswordVersion`], at the first byte.
    pub fn decode(buf: &[u8]) -> Result<Option<(PasswordReply, usize)>, ProtocolError> {
        check_version(buf, PASSWORD_VERSION, ProtocolError::BadPasswordVersion)?;
        Ok(buf.get(1).map(|&status| (PasswordReply { status }, 2)))
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    pub fn to_bytes(&self) -> [u8; 2] {
        [PASSWORD_VERSION, self.status]
    }
}

// ---------------------------------------------------------------------------
// Addresses.

/// DST.ADDR or BND.ADDR: an address, or a name for the server to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// A domain name (ATYP 3), checked by [`host::validate`]: 1 to 255
    /// bytes, case and a trailing dot kept as sent.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A host and a port: DST.ADDR/DST.PORT, BND.ADDR/BND.PORT.
///
/// # Format
///
/// ```text
/// +------+----------+------+
/// | ATYP |   ADDR   | PORT |
/// +------+----------+------+
/// |  1   | Variable |  2   |
/// +------+----------+------+
/// ```
///
/// ATYP 1: ADDR is 4 bytes of IPv4; ATYP 4: 16 bytes of IPv6; ATYP 3: one
/// length byte (1 to 255), then the name, no NUL. PORT in network order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    pub host: Host,
    pub port: u16,
}

impl Address {
    /// `0.0.0.0:0`, what a reply carries when it has no address to give.
    pub const UNSPECIFIED: Address = Address { host: Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port: 0 };

    pub fn new(host: Host, port: u16) -> Self {
        Address { host, port }
    }

    /// A domain name and a port.
    pub fn name(name: impl Into<String>, port: u16) -> Self {
        Address { host: Host::Name(name.into()), port }
    }

    /// The socket address, unless this is a name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// Decodes one address, ATYP first; `Ok(None)` if `buf` ends inside it.
    /// A bad domain name is refused as soon as a bad byte arrives.
    fn decode(buf: &[u8]) -> Result<Option<(Address, usize)>, ProtocolError> {
        let Some((&atyp, rest)) = buf.split_first() else {
            return Ok(None);
        };
        let (host, addr_len) = match atyp {
            ATYP_IPV4 => match rest.first_chunk::<4>() {
                Some(&b) => (Host::Ip(Ipv4Addr::from(b).into()), 4),
                None => return Ok(None),
            },
            ATYP_IPV6 => match rest.first_chunk::<16>() {
                Some(&b) => (Host::Ip(Ipv6Addr::from(b).into()), 16),
                None => return Ok(None),
            },
            ATYP_DOMAIN_NAME => {
                let Some((&n, name)) = rest.split_first() else {
                    return Ok(None);
                };
                let n = usize::from(n);
                if n == 0 {
                    return Err(ProtocolError::EmptyHostName);
                }
                let received = &name[..name.len().min(n)];
                if received.is_empty() {
                    return Ok(None);
                }
                // What has arrived is checked now: garbage is refused before the rest of it.
                let valid = host::validate(received)?;
                if received.len() < n {
                    return Ok(None);
                }
                (Host::Name(valid.to_owned()), 1 + n)
            }
            other => return Err(ProtocolError::BadAddressType(other)),
        };
        let Some(&port) = rest[addr_len..].first_chunk::<2>() else {
            return Ok(None);
        };
        Ok(Some((Address { host, port: u16::from_be_bytes(port) }, 1 + addr_len + 2)))
    }

    /// Appends ATYP, ADDR and PORT.
    ///
    /// # Panics
    ///
    /// If the host is a name of 0 or more than 255 bytes, which ATYP 3
    /// cannot carry (decoded names never are).
    fn encode(&self, out: &mut Vec<u8>) {
        match &self.host {
            Host::Ip(IpAddr::V4(ip)) => {
                out.push(ATYP_IPV4);
                out.extend_from_slice(&ip.octets());
            }
            Host::Ip(IpAddr::V6(ip)) => {
                out.push(ATYP_IPV6);
                out.extend_from_slice(&ip.octets());
            }
            Host::Name(name) => {
                let n = u8::try_from(name.len()).ok().filter(|&n| n > 0);
                let n = n.expect("a SOCKS5 domain name is 1 to 255 bytes");
                out.extend_from_slice(&[ATYP_DOMAIN_NAME, n]);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&self.port.to_be_bytes());
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address { host: Host::Ip(addr.ip()), port: addr.port() }
    }
}

impl fmt::Display for Address {
    /// `192.0.2.1:80`, `[2001:db8::1]:80`, `example.com:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.socket_addr() {
            Some(addr) => write!(f, "{addr}"),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

// ---------------------------------------------------------------------------
// Requests and replies.

/// The CMD field of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect = 1,
    Bind = 2,
    UdpAssociate = 3,
}

impl Command {
    /// # Errors
    ///
    /// [`ProtocolError::BadCommand`] for any byte but 1, 2 and 3.
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            1 => Ok(Command::Connect),
            2 => Ok(Command::Bind),
            3 => Ok(Command::UdpAssociate),
            other => Err(ProtocolError::BadCommand(other)),
        }
    }

    /// The name used in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Command::Connect => "connect",
            Command::Bind => "bind",
            Command::UdpAssociate => "udp",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CONNECT, BIND or UDP ASSOCIATE request.
///
/// # Format
///
/// ```text
/// +----+-----+-------+------+----------+----------+
/// |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
/// +----+-----+-------+------+----------+----------+
/// | 1  |  1  | X'00' |  1   | Variable |    2     |
/// +----+-----+-------+------+----------+----------+
/// ```
///
/// VER is 5; CMD 1 CONNECT, 2 BIND, 3 UDP ASSOCIATE; the address as in
/// [`Address`]. For UDP ASSOCIATE the address is where the client will send
/// datagrams from (zeros if it does not know yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub destination: Address,
}

impl Request {
    pub fn new(command: Command, destination: Address) -> Self {
        Request { command, destination }
    }

    /// Decodes one request from the start of `buf`; `Ok(None)` means a
    /// valid prefix: read more. Each field is checked as soon as it
    /// arrives, so garbage is refused without waiting for the rest.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadVersion`] (byte 0), [`ProtocolError::BadCommand`]
    /// (byte 1), [`ProtocolError::BadAddressType`] (byte 3),
    /// [`ProtocolError::EmptyHostName`], [`ProtocolError::BadHostName`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, ProtocolError> {
        check_version(buf, VERSION, ProtocolError::BadVersion)?;
        let Some(&cmd) = buf.get(1) else {
            return Ok(None);
        };
        let command = Command::from_byte(cmd)?;
        let Some((destination, len)) = Address::decode(buf.get(3..).unwrap_or_default())? else {
            return Ok(None);
        };
        Ok(Some((Request { command, destination }, 3 + len)))
    }

    /// Appends the wire form of this request.
    ///
    /// # Panics
    ///
    /// As [`Address`]: for a name the wire cannot carry.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.command as u8, 0]);
        self.destination.encode(out);
    }
}

/// The REP field of a reply, with RFC 1928's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    Succeeded = 0,
    GeneralFailure = 1,
    /// Refused by the rules.
    NotAllowed = 2,
    NetworkUnreachable = 3,
    HostUnreachable = 4,
    ConnectionRefused = 5,
    TtlExpired = 6,
    CommandNotSupported = 7,
    AddressTypeNotSupported = 8,
}

impl ReplyCode {
    /// # Errors
    ///
    /// [`ProtocolError::BadReplyCode`] for 9 and above (unassigned).
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        Ok(match b {
            0 => ReplyCode::Succeeded,
            1 => ReplyCode::GeneralFailure,
            2 => ReplyCode::NotAllowed,
            3 => ReplyCode::NetworkUnreachable,
            4 => ReplyCode::HostUnreachable,
            5 => ReplyCode::ConnectionRefused,
            6 => ReplyCode::TtlExpired,
            7 => ReplyCode::CommandNotSupported,
            8 => ReplyCode::AddressTypeNotSupported,
            other => return Err(ProtocolError::BadReplyCode(other)),
        })
    }

    /// What the code means, in RFC 1928's words.
    pub fn describe(self) -> &'static str {
        match self {
            ReplyCode::Succeeded => "succeeded",
            ReplyCode::GeneralFailure => "general SOCKS server failure",
            ReplyCode::NotAllowed => "connection not allowed by ruleset",
            ReplyCode::NetworkUnreachable => "network unreachable",
            ReplyCode::HostUnreachable => "host unreachable",
            ReplyCode::ConnectionRefused => "connection refused",
            ReplyCode::TtlExpired => "TTL expired",
            ReplyCode::CommandNotSupported => "command not supported",
            ReplyCode::AddressTypeNotSupported => "address type not supported",
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", *self as u8, self.describe())
    }
}

/// A reply to CONNECT or UDP ASSOCIATE, or the first or second reply to BIND.
///
/// # Format
///
/// ```text
/// +----+-----+-------+------+----------+----------+
/// |VER | REP |  RSV  | ATYP | BND.ADDR | BND.PORT |
/// +----+-----+-------+------+----------+----------+
/// | 1  |  1  | X'00' |  1   | Variable |    2     |
/// +----+-----+-------+------+----------+----------+
/// ```
///
/// VER is 5. BND is the server's outgoing address (CONNECT), its listening
/// address and then the connected peer (BIND), or the relay's address (UDP
/// ASSOCIATE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub bound: Address,
}

impl Reply {
    pub fn new(code: ReplyCode, bound: Address) -> Self {
        Reply { code, bound }
    }

    /// A reply that carries no address (`0.0.0.0:0`), as failures do.
    pub fn code_only(code: ReplyCode) -> Self {
        Reply { code, bound: Address::UNSPECIFIED }
    }

    /// Decodes one reply from the start of `buf`; bytes after it (data
    /// relayed in the same read) are not consumed.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadVersion`] (byte 0), [`ProtocolError::BadReplyCode`]
    /// (byte 1), [`ProtocolError::BadAddressType`] (byte 3),
    /// [`ProtocolError::EmptyHostName`], [`ProtocolError::BadHostName`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        check_version(buf, VERSION, ProtocolError::BadVersion)?;
        let Some(&rep) = buf.get(1) else {
            return Ok(None);
        };
        let code = ReplyCode::from_byte(rep)?;
        let Some((bound, len)) = Address::decode(buf.get(3..).unwrap_or_default())? else {
            return Ok(None);
        };
        Ok(Some((Reply { code, bound }, 3 + len)))
    }

    /// Appends the wire form of this reply.
    ///
    /// # Panics
    ///
    /// As [`Address`]: for a name the wire cannot carry.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.code as u8, 0]);
        self.bound.encode(out);
    }

    /// The whole length of the reply that `prefix` starts with, known once
    /// its first [`REPLY_PREFIX_LEN`] bytes (up to ATYP and the first byte
    /// of BND.ADDR) are there; `Ok(None)` before. A client that must not
    /// read past the reply (the relayed data follows it on the same
    /// connection) reads that many bytes first, then exactly the rest.
    ///
    /// # Errors
    ///
    /// As [`Reply::decode`] for the bytes of `prefix`.
    pub fn wire_len(prefix: &[u8]) -> Result<Option<usize>, ProtocolError> {
        check_version(prefix, VERSION, ProtocolError::BadVersion)?;
        if let Some(&rep) = prefix.get(1) {
            ReplyCode::from_byte(rep)?;
        }
        let (Some(&atyp), Some(&first)) = (prefix.get(3), prefix.get(4)) else {
            return Ok(None);
        };
        let addr_len = match atyp {
            ATYP_IPV4 => 4,
            ATYP_IPV6 => 16,
            ATYP_DOMAIN_NAME if first == 0 => return Err(ProtocolError::EmptyHostName),
            ATYP_DOMAIN_NAME => 1 + usize::from(first),
            other => return Err(ProtocolError::BadAddressType(other)),
        };
        Ok(Some(4 + addr_len + 2))
    }
}

/// How many bytes of a reply [`Reply::wire_len`] needs to know its length.
pub const REPLY_PREFIX_LEN: usize = 5;

// ---------------------------------------------------------------------------
// UDP.

/// The header in front of every datagram between the client and its UDP
/// relay, both ways: the far end's address, then the payload.
///
/// # Format
///
/// ```text
/// +-----+------+------+----------+----------+----------+
/// | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
/// +-----+------+------+----------+----------+----------+
/// |  2  |  1   |  1   | Variable |    2     | Variable |
/// +-----+------+------+----------+----------+----------+
/// ```
///
/// FRAG 0 is a whole datagram; anything else is a fragment, which a relay
/// that does not reassemble drops (RFC 1928 section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    pub frag: u8,
    pub destination: Address,
}

impl UdpHeader {
    /// The header of a whole datagram to or from `destination`.
    pub fn new(destination: Address) -> Self {
        UdpHeader { frag: 0, destination }
    }

    pub fn is_fragment(&self) -> bool {
        self.frag != 0
    }

    /// Decodes the header at the start of a datagram and returns it with its
    /// length: the payload is `datagram[len..]`.
    ///
    /// A datagram arrives whole, so here `Ok(None)` does not mean "read
    /// more": it means the datagram is truncated (it ends inside its
    /// header) and is to be dropped. [`UdpHeader::split`] says so with an
    /// error instead.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadAddressType`] (byte 3),
    /// [`ProtocolError::EmptyHostName`], [`ProtocolError::BadHostName`].
    pub fn decode(datagram: &[u8]) -> Result<Option<(UdpHeader, usize)>, ProtocolError> {
        let Some(&frag) = datagram.get(2) else {
            return Ok(None);
        };
        let Some((destination, len)) = Address::decode(&datagram[3..])? else {
            return Ok(None);
        };
        Ok(Some((UdpHeader { frag, destination }, 3 + len)))
    }

    /// The header and the payload of a whole datagram.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::TruncatedDatagram`] if it ends inside its header,
    /// and those of [`UdpHeader::decode`].
    pub fn split(datagram: &[u8]) -> Result<(UdpHeader, &[u8]), ProtocolError> {
        match UdpHeader::decode(datagram)? {
            Some((header, len)) => Ok((header, &datagram[len..])),
            None => Err(ProtocolError::TruncatedDatagram),
        }
    }

    /// Appends the header; the caller appends the payload.
    ///
    /// # Panics
    ///
    /// As [`Address`]: for a name the wire cannot carry.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, self.frag]);
        self.destination.encode(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Byte layouts from RFC 1928 / RFC 1929.
    const GREETING_NO_AUTH: &[u8] = b"\x05\x01\x00";
    const GREETING_CURL: &[u8] = b"\x05\x02\x00\x02";
    const LOGIN: &[u8] = b"\x01\x04fred\x06s3cret";
    const CONNECT_V4: &[u8] = b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50";
    const CONNECT_V6: &[u8] = b"\x05\x01\x00\x04\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x01\xbb";
    const CONNECT_NAME: &[u8] = b"\x05\x01\x00\x03\x0bexample.com\x00\x50";
    const BIND_V4: &[u8] = b"\x05\x02\x00\x01\xc0\x00\x02\x07\x00\x15";
    const UDP_ASSOCIATE_ZEROS: &[u8] = b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00";
    const REPLY_V4: &[u8] = b"\x05\x00\x00\x01\x0a\x00\x00\x02\x9c\x40";
    const REPLY_REFUSED: &[u8] = b"\x05\x02\x00\x01\x00\x00\x00\x00\x00\x00";
    const REPLY_NAME: &[u8] = b"\x05\x00\x00\x03\x05proxy\x04\x38";
    const REPLY_V6: &[u8] = b"\x05\x00\x00\x04\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x00\x50";
    const UDP_V4: &[u8] = b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00\x35query";
    const UDP_NAME: &[u8] = b"\x00\x00\x00\x03\x0bexample.com\x00\x35";
    const UDP_V6: &[u8] = b"\x00\x00\x01\x04\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x00\x35x";

    #[test]
    fn reply_length_is_known_from_five_bytes() {
        for reply in [REPLY_V4, REPLY_REFUSED, REPLY_NAME, REPLY_V6] {
            for len in 0..REPLY_PREFIX_LEN {
                assert_eq!(Reply::wire_len(&reply[..len]), Ok(None), "{reply:?} cut at {len}");
            }
            for len in REPLY_PREFIX_LEN..=reply.len() {
                assert_eq!(Reply::wire_len(&reply[..len]), Ok(Some(reply.len())), "{reply:?} cut at {len}");
            }
            let mut with_data = reply.to_vec();
            with_data.extend_from_slice(b"220 ready\r\n");
            assert_eq!(Reply::wire_len(&with_data), Ok(Some(reply.len())));
        }
    }

    #[test]
    fn reply_length_refuses_what_decode_refuses() {
        assert_eq!(Reply::wire_len(b"\x00"), Err(ProtocolError::BadVersion(0)));
        assert_eq!(Reply::wire_len(b"\x05\x09"), Err(ProtocolError::BadReplyCode(9)));
        assert_eq!(Reply::wire_len(b"\x05\x00\x00\x02\x00"), Err(ProtocolError::BadAddressType(2)));
        assert_eq!(Reply::wire_len(b"\x05\x00\x00\x03\x00"), Err(ProtocolError::EmptyHostName));
    }

    fn v6(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    fn v4(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    /// Every proper prefix of `msg` decodes to `Ok(None)`.
    fn assert_prefixes_need_more<T: fmt::Debug>(msg: &[u8], decode: fn(&[u8]) -> Result<Option<T>, ProtocolError>) {
        for len in 0..msg.len() {
            let got = decode(&msg[..len]);
            assert!(matches!(got, Ok(None)), "prefix {len} of {msg:?}: {got:?}");
        }
    }

    fn encoded(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out);
        out
    }

    // --- Greeting and method selection.

    #[test]
    fn decodes_greetings_from_rfc_layout() {
        let (g, n) = Greeting::decode(GREETING_NO_AUTH).unwrap().unwrap();
        assert_eq!((g.methods, n), (vec![Method::NoAuth], 3));
        let (g, n) = Greeting::decode(GREETING_CURL).unwrap().unwrap();
        assert_eq!((g.methods.as_slice(), n), (&[Method::NoAuth, Method::UsernamePassword][..], 4));
        assert!(g.offers(Method::UsernamePassword));
        assert!(!g.offers(Method::Gssapi));
    }

    #[test]
    fn decodes_greeting_without_methods() {
        assert_eq!(Greeting::decode(b"\x05\x00"), Ok(Some((Greeting::new([]), 2))));
    }

    #[test]
    fn decodes_greeting_with_255_methods() {
        let mut buf = vec![5, 255];
        buf.extend(0..=254u8);
        let (g, n) = Greeting::decode(&buf).unwrap().unwrap();
        assert_eq!(n, MAX_GREETING_LEN);
        assert_eq!(g.methods.len(), 255);
        assert_eq!(g.methods[2], Method::UsernamePassword);
        assert_eq!(g.methods[254], Method::Other(254));
        assert_eq!(encoded(|o| g.encode(o)), buf);
    }

    #[test]
    fn greeting_prefixes_need_more() {
        assert_prefixes_need_more(GREETING_CURL, Greeting::decode);
        let mut buf = vec![5, 255];
        buf.extend([0x80; 255]);
        assert_prefixes_need_more(&buf, Greeting::decode);
    }

    #[test]
    fn greeting_consumes_exactly_itself() {
        let (_, n) = Greeting::decode(b"\x05\x01\x02\x01\x04fred").unwrap().unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn rejects_greeting_version_at_first_byte() {
        assert_eq!(Greeting::decode(b"\x04"), Err(ProtocolError::BadVersion(4)));
        assert_eq!(Greeting::decode(b"GET / HTTP/1.1\r\n"), Err(ProtocolError::BadVersion(b'G')));
    }

    #[test]
    fn greeting_round_trips() {
        for methods in [vec![], vec![Method::NoAuth], vec![Method::Gssapi, Method::Other(0x80), Method::NoAcceptable]] {
            let g = Greeting::new(methods);
            let out = encoded(|o| g.encode(o));
            assert_eq!(Greeting::decode(&out), Ok(Some((g, out.len()))));
        }
        assert_eq!(encoded(|o| Greeting::new([Method::NoAuth, Method::UsernamePassword]).encode(o)), GREETING_CURL);
    }

    #[test]
    #[should_panic(expected = "at most 255 methods")]
    fn greeting_with_256_methods_cannot_be_encoded() {
        Greeting::new(vec![Method::NoAuth; 256]).encode(&mut Vec::new());
    }

    #[test]
    fn method_bytes_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(Method::from_byte(b).to_byte(), b);
        }
        assert_eq!(Method::from_byte(0), Method::NoAuth);
        assert_eq!(Method::from_byte(1), Method::Gssapi);
        assert_eq!(Method::from_byte(2), Method::UsernamePassword);
        assert_eq!(Method::from_byte(3), Method::Other(3));
        assert_eq!(Method::from_byte(0xfe), Method::Other(0xfe));
        assert_eq!(Method::from_byte(0xff), Method::NoAcceptable);
    }

    #[test]
    fn method_names() {
        assert_eq!(Method::NoAuth.to_string(), "no authentication");
        assert_eq!(Method::Gssapi.to_string(), "GSSAPI");
        assert_eq!(Method::UsernamePassword.to_string(), "username/password");
        assert_eq!(Method::NoAcceptable.to_string(), "no acceptable methods");
        assert_eq!(Method::Other(0x80).to_string(), "method 0x80");
        assert_eq!(Method::Other(3).to_string(), "method 0x03");
    }

    #[test]
    fn method_selection_from_rfc_layout() {
        assert_eq!(MethodSelection::decode(b"\x05\x02"), Ok(Some((MethodSelection::new(Method::UsernamePassword), 2))));
        assert_eq!(MethodSelection::decode(b"\x05\xff\x00"), Ok(Some((MethodSelection::new(Method::NoAcceptable), 2))));
        assert_prefixes_need_more(b"\x05\x00", MethodSelection::decode);
        assert_eq!(MethodSelection::decode(b"\x00"), Err(ProtocolError::BadVersion(0)));
        for m in [Method::NoAuth, Method::Gssapi, Method::UsernamePassword, Method::NoAcceptable, Method::Other(9)] {
            let sel = MethodSelection::new(m);
            let out = encoded(|o| sel.encode(o));
            assert_eq!(out, [5, m.to_byte()]);
            assert_eq!(MethodSelection::decode(&out), Ok(Some((sel, 2))));
        }
    }

    // --- Username/password.

    #[test]
    fn decodes_login_from_rfc_layout() {
        let (req, n) = PasswordRequest::decode(LOGIN).unwrap().unwrap();
        assert_eq!(n, LOGIN.len());
        assert_eq!(req.username(), b"fred");
        assert_eq!(req.password(), b"s3cret");
        assert_eq!(req.username_lossy(), "fred");
        assert_prefixes_need_more(LOGIN, PasswordRequest::decode);
    }

    #[test]
    fn login_consumes_exactly_itself() {
        let mut buf = LOGIN.to_vec();
        buf.extend_from_slice(CONNECT_V4);
        assert_eq!(PasswordRequest::decode(&buf).unwrap().unwrap().1, LOGIN.len());
    }

    #[test]
    fn login_fields_are_raw_bytes() {
        let (req, _) = PasswordRequest::decode(b"\x01\x02\xff\x00\x03\x00\n\xc3").unwrap().unwrap();
        assert_eq!(req.username(), b"\xff\x00");
        assert_eq!(req.password(), b"\x00\n\xc3");
        assert_eq!(req.username_lossy(), "\u{fffd}\0");
    }

    #[test]
    fn accepts_255_byte_username_and_password() {
        let mut buf = vec![1, 255];
        buf.extend([b'u'; 255]);
        buf.push(255);
        buf.extend([b'p'; 255]);
        let (req, n) = PasswordRequest::decode(&buf).unwrap().unwrap();
        assert_eq!(n, MAX_PASSWORD_REQUEST_LEN);
        assert_eq!((req.username().len(), req.password().len()), (255, 255));
        assert_eq!(encoded(|o| req.encode(o)), buf);
        assert_prefixes_need_more(&buf, PasswordRequest::decode);
    }

    #[test]
    fn rejects_login_version_at_first_byte() {
        assert_eq!(PasswordRequest::decode(b"\x05"), Err(ProtocolError::BadPasswordVersion(5)));
        assert_eq!(PasswordRequest::decode(b"\x00\x04fred"), Err(ProtocolError::BadPasswordVersion(0)));
    }

    #[test]
    fn rejects_empty_username_and_password_at_their_length_byte() {
        assert_eq!(PasswordRequest::decode(b"\x01\x00"), Err(ProtocolError::EmptyUsername));
        assert_eq!(PasswordRequest::decode(b"\x01\x04fred\x00"), Err(ProtocolError::EmptyPassword));
    }

    #[test]
    fn login_round_trips() {
        for (user, pass) in [(&b"a"[..], &b"b"[..]), (b"fred", b"s3cret"), (b"\xff", &[0u8; 255][..])] {
            let req = PasswordRequest::new(user, pass).unwrap();
            let out = encoded(|o| req.encode(o));
            assert_eq!(out.len(), 3 + user.len() + pass.len());
            assert_eq!(PasswordRequest::decode(&out), Ok(Some((req, out.len()))));
        }
        assert_eq!(encoded(|o| PasswordRequest::new("fred", "s3cret").unwrap().encode(o)), LOGIN);
    }

    #[test]
    fn login_new_refuses_what_the_wire_cannot_carry() {
        assert_eq!(PasswordRequest::new("", "p"), Err(ProtocolError::EmptyUsername));
        assert_eq!(PasswordRequest::new("u", ""), Err(ProtocolError::EmptyPassword));
        assert_eq!(PasswordRequest::new(vec![b'u'; 256], "p"), Err(ProtocolError::UsernameTooLong));
        assert_eq!(PasswordRequest::new("u", vec![b'p'; 256]), Err(ProtocolError::PasswordTooLong));
        assert!(PasswordRequest::new(vec![b'u'; 255], vec![b'p'; 255]).is_ok());
    }

    #[test]
    fn login_debug_hides_the_password() {
        let req = PasswordRequest::new("fred", "hunter2").unwrap();
        let shown = format!("{req:?}");
        assert_eq!(shown, r#"PasswordRequest { username: "fred", password: <hidden> }"#);
        assert!(!format!("{req:#?}").contains("hunter2"));
    }

    #[test]
    fn password_reply_from_rfc_layout() {
        assert_eq!(PasswordReply::decode(b"\x01\x00"), Ok(Some((PasswordReply::SUCCESS, 2))));
        let (failed, n) = PasswordReply::decode(b"\x01\x7f\x05").unwrap().unwrap();
        assert_eq!((failed.status, n), (0x7f, 2));
        assert!(!failed.is_success());
        assert!(PasswordReply::SUCCESS.is_success());
        assert!(!PasswordReply::FAILURE.is_success());
        assert_prefixes_need_more(b"\x01\x00", PasswordReply::decode);
        assert_eq!(PasswordReply::decode(b"\x05\x00"), Err(ProtocolError::BadPasswordVersion(5)));
        assert_eq!(encoded(|o| PasswordReply::SUCCESS.encode(o)), b"\x01\x00");
        assert_eq!(encoded(|o| PasswordReply::FAILURE.encode(o)), b"\x01\x01");
    }

    // --- Requests.

    #[test]
    fn decodes_requests_from_rfc_layout() {
        let cases = [
            (CONNECT_V4, Command::Connect, Address::new(v4("127.0.0.1"), 80)),
            (CONNECT_V6, Command::Connect, Address::new(v6("2001:db8::1"), 443)),
            (CONNECT_NAME, Command::Connect, Address::name("example.com", 80)),
            (BIND_V4, Command::Bind, Address::new(v4("192.0.2.7"), 21)),
            (UDP_ASSOCIATE_ZEROS, Command::UdpAssociate, Address::UNSPECIFIED),
        ];
        for (bytes, command, destination) in cases {
            let want = Request::new(command, destination);
            assert_eq!(Request::decode(bytes), Ok(Some((want.clone(), bytes.len()))), "{bytes:?}");
            assert_eq!(encoded(|o| want.encode(o)), bytes);
            assert_prefixes_need_more(bytes, Request::decode);
        }
    }

    #[test]
    fn request_consumes_exactly_itself() {
        for msg in [CONNECT_V4, CONNECT_V6, CONNECT_NAME] {
            let mut buf = msg.to_vec();
            buf.extend_from_slice(b"GET / HTTP/1.0\r\n");
            assert_eq!(Request::decode(&buf).unwrap().unwrap().1, msg.len());
        }
    }

    #[test]
    fn request_ignores_rsv() {
        let (req, _) = Request::decode(b"\x05\x01\xff\x01\x7f\x00\x00\x01\x00\x50").unwrap().unwrap();
        assert_eq!(req.destination, Address::new(v4("127.0.0.1"), 80));
    }

    #[test]
    fn rejects_request_version_at_first_byte() {
        assert_eq!(Request::decode(b"\x04"), Err(ProtocolError::BadVersion(4)));
        assert_eq!(Request::decode(b"\x01\x04fred"), Err(ProtocolError::BadVersion(1)));
    }

    #[test]
    fn rejects_unknown_command_at_second_byte() {
        for cmd in [0, 4, 0xff] {
            assert_eq!(Request::decode(&[5, cmd]), Err(ProtocolError::BadCommand(cmd)));
        }
    }

    #[test]
    fn rejects_unknown_address_type_at_fourth_byte() {
        for atyp in [0, 2, 5, 0xff] {
            assert_eq!(Request::decode(&[5, 1, 0, atyp]), Err(ProtocolError::BadAddressType(atyp)));
        }
    }

    #[test]
    fn rejects_empty_name_at_its_length_byte() {
        assert_eq!(Request::decode(b"\x05\x01\x00\x03\x00"), Err(ProtocolError::EmptyHostName));
    }

    #[test]
    fn rejects_bad_name_before_it_ends() {
        assert_eq!(Request::decode(b"\x05\x01\x00\x03\xff."), Err(ProtocolError::BadHostName));
        assert_eq!(Request::decode(b"\x05\x01\x00\x03\xffa b"), Err(ProtocolError::BadHostName));
        for bad in [&b"a b"[..], b"a/b", b"..", b".x", b"a..b", b"\xff", b"a\0"] {
            let mut buf = vec![5, 1, 0, 3, bad.len() as u8];
            buf.extend_from_slice(bad);
            buf.extend_from_slice(&[0, 80]);
            assert_eq!(Request::decode(&buf), Err(ProtocolError::BadHostName), "{bad:?}");
        }
    }

    #[test]
    fn accepts_255_byte_name_and_trailing_dot() {
        let name = format!("{}.example.", "a".repeat(246));
        assert_eq!(name.len(), 255);
        let req = Request::new(Command::Connect, Address::name(name.clone(), 443));
        let out = encoded(|o| req.encode(o));
        assert_eq!(out.len(), MAX_REQUEST_LEN);
        assert_eq!(out[4], 255);
        assert_eq!(Request::decode(&out), Ok(Some((req, MAX_REQUEST_LEN))));
        assert_prefixes_need_more(&out, Request::decode);
    }

    #[test]
    #[should_panic(expected = "1 to 255 bytes")]
    fn name_over_255_bytes_cannot_be_encoded() {
        Request::new(Command::Connect, Address::name("a".repeat(256), 80)).encode(&mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "1 to 255 bytes")]
    fn empty_name_cannot_be_encoded() {
        Request::new(Command::Connect, Address::name("", 80)).encode(&mut Vec::new());
    }

    #[test]
    fn request_round_trips() {
        let addresses = [
            Address::new(v4("10.1.2.3"), 21),
            Address::new(v6("::1"), 65535),
            Address::new(v6("::ffff:10.0.0.1"), 1),
            Address::name("Files.Internal.", 0),
            Address::UNSPECIFIED,
        ];
        for command in [Command::Connect, Command::Bind, Command::UdpAssociate] {
            for destination in &addresses {
                let req = Request::new(command, destination.clone());
                let out = encoded(|o| req.encode(o));
                assert_eq!(out[1], command as u8);
                assert_eq!(Request::decode(&out), Ok(Some((req, out.len()))));
            }
        }
    }

    #[test]
    fn command_bytes_and_names() {
        for (b, command, name) in
            [(1, Command::Connect, "connect"), (2, Command::Bind, "bind"), (3, Command::UdpAssociate, "udp")]
        {
            assert_eq!(Command::from_byte(b), Ok(command));
            assert_eq!(command as u8, b);
            assert_eq!(command.name(), name);
            assert_eq!(command.to_string(), name);
        }
        assert_eq!(Command::from_byte(0), Err(ProtocolError::BadCommand(0)));
        assert_eq!(Command::from_byte(4), Err(ProtocolError::BadCommand(4)));
    }

    // --- Replies.

    #[test]
    fn decodes_replies_from_rfc_layout() {
        let cases = [
            (REPLY_V4, ReplyCode::Succeeded, Address::new(v4("10.0.0.2"), 40000)),
            (REPLY_REFUSED, ReplyCode::NotAllowed, Address::UNSPECIFIED),
            (REPLY_NAME, ReplyCode::Succeeded, Address::name("proxy", 1080)),
            (REPLY_V6, ReplyCode::Succeeded, Address::new(v6("::1"), 80)),
        ];
        for (bytes, code, bound) in cases {
            let want = Reply::new(code, bound);
            assert_eq!(Reply::decode(bytes), Ok(Some((want.clone(), bytes.len()))), "{bytes:?}");
            assert_eq!(encoded(|o| want.encode(o)), bytes);
            assert_prefixes_need_more(bytes, Reply::decode);
        }
    }

    #[test]
    fn reply_leaves_relayed_data() {
        let mut buf = REPLY_V4.to_vec();
        buf.extend_from_slice(b"220 ready\r\n");
        assert_eq!(Reply::decode(&buf).unwrap().unwrap().1, REPLY_V4.len());
    }

    #[test]
    fn code_only_reply_carries_zeros() {
        assert_eq!(encoded(|o| Reply::code_only(ReplyCode::NotAllowed).encode(o)), REPLY_REFUSED);
    }

    #[test]
    fn rejects_bad_reply_version_code_and_address_type_early() {
        assert_eq!(Reply::decode(b"\x00\x5a"), Err(ProtocolError::BadVersion(0)));
        assert_eq!(Reply::decode(b"\x05\x09"), Err(ProtocolError::BadReplyCode(9)));
        assert_eq!(Reply::decode(b"\x05\xff"), Err(ProtocolError::BadReplyCode(0xff)));
        assert_eq!(Reply::decode(b"\x05\x00\x00\x02"), Err(ProtocolError::BadAddressType(2)));
        assert_eq!(Reply::decode(b"\x05\x00\x00\x03\x00"), Err(ProtocolError::EmptyHostName));
        assert_eq!(Reply::decode(b"\x05\x00\x00\x03\x05a:b"), Err(ProtocolError::BadHostName));
    }

    #[test]
    fn every_reply_code_round_trips() {
        for b in 0..=8u8 {
            let code = ReplyCode::from_byte(b).unwrap();
            assert_eq!(code as u8, b);
            for bound in [Address::new(v4("192.0.2.1"), 1), Address::new(v6("2001:db8::2"), 2), Address::name("h", 3)] {
                let reply = Reply::new(code, bound);
                let out = encoded(|o| reply.encode(o));
                assert_eq!(out[1], b);
                assert_eq!(Reply::decode(&out), Ok(Some((reply, out.len()))));
            }
        }
    }

    #[test]
    fn reply_codes_describe_themselves_in_rfc_words() {
        let texts = [
            (ReplyCode::Succeeded, "succeeded"),
            (ReplyCode::GeneralFailure, "general SOCKS server failure"),
            (ReplyCode::NotAllowed, "connection not allowed by ruleset"),
            (ReplyCode::NetworkUnreachable, "network unreachable"),
            (ReplyCode::HostUnreachable, "host unreachable"),
            (ReplyCode::ConnectionRefused, "connection refused"),
            (ReplyCode::TtlExpired, "TTL expired"),
            (ReplyCode::CommandNotSupported, "command not supported"),
            (ReplyCode::AddressTypeNotSupported, "address type not supported"),
        ];
        for (i, (code, text)) in texts.into_iter().enumerate() {
            assert_eq!(code as usize, i);
            assert_eq!(code.describe(), text);
            assert_eq!(code.to_string(), format!("{i} ({text})"));
        }
    }

    // --- UDP.

    #[test]
    fn decodes_udp_headers_from_rfc_layout() {
        let (h, n) = UdpHeader::decode(UDP_V4).unwrap().unwrap();
        assert_eq!((h.clone(), n), (UdpHeader::new(Address::new(v4("127.0.0.1"), 53)), 10));
        assert!(!h.is_fragment());
        assert_eq!(&UDP_V4[n..], b"query");

        let (h, payload) = UdpHeader::split(UDP_NAME).unwrap();
        assert_eq!(h, UdpHeader::new(Address::name("example.com", 53)));
        assert_eq!(payload, b"");

        let (h, payload) = UdpHeader::split(UDP_V6).unwrap();
        assert_eq!(h.destination, Address::new(v6("::1"), 53));
        assert_eq!(h.frag, 1);
        assert!(h.is_fragment());
        assert_eq!(payload, b"x");
    }

    #[test]
    fn truncated_datagram_is_none_or_an_error() {
        for whole in [UDP_NAME, &UDP_V4[..10], &UDP_V6[..22]] {
            for len in 0..whole.len() {
                assert_eq!(UdpHeader::decode(&whole[..len]), Ok(None), "{len} of {whole:?}");
                assert_eq!(UdpHeader::split(&whole[..len]), Err(ProtocolError::TruncatedDatagram));
            }
        }
    }

    #[test]
    fn rejects_bad_udp_address() {
        assert_eq!(UdpHeader::decode(b"\x00\x00\x00\x05"), Err(ProtocolError::BadAddressType(5)));
        assert_eq!(UdpHeader::split(b"\x00\x00\x00\x03\x00\x00\x35"), Err(ProtocolError::EmptyHostName));
        assert_eq!(UdpHeader::split(b"\x00\x00\x00\x03\x02a\x00\x00\x35"), Err(ProtocolError::BadHostName));
    }

    #[test]
    fn udp_header_ignores_rsv() {
        let (h, n) = UdpHeader::decode(b"\xff\xff\x00\x01\x7f\x00\x00\x01\x00\x35").unwrap().unwrap();
        assert_eq!((h.destination, n), (Address::new(v4("127.0.0.1"), 53), 10));
    }

    #[test]
    fn udp_header_round_trips() {
        let name = "n".repeat(255);
        for destination in [Address::new(v4("192.0.2.1"), 53), Address::new(v6("::1"), 1), Address::name(name, 2)] {
            for frag in [0, 1, 0x80, 0xff] {
                let h = UdpHeader { frag, destination: destination.clone() };
                let mut out = encoded(|o| h.encode(o));
                let len = out.len();
                let longest = matches!(&destination.host, Host::Name(n) if n.len() == 255);
                assert_eq!(len == MAX_UDP_HEADER_LEN, longest, "{len}");
                assert_eq!(out[..3], [0, 0, frag]);
                out.extend_from_slice(b"payload");
                assert_eq!(UdpHeader::split(&out), Ok((h.clone(), &b"payload"[..])));
                assert_eq!(UdpHeader::decode(&out), Ok(Some((h, len))));
            }
        }
        assert_eq!(encoded(|o| UdpHeader::new(Address::new(v4("127.0.0.1"), 53)).encode(o)), &UDP_V4[..10]);
    }

    // --- Addresses and errors.

    #[test]
    fn address_display_and_socket_addr() {
        let cases = [
            (Address::new(v4("192.0.2.1"), 80), "192.0.2.1:80"),
            (Address::new(v6("::1"), 80), "[::1]:80"),
            (Address::name("example.com", 80), "example.com:80"),
        ];
        for (addr, text) in cases {
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(Host::Ip("::1".parse().unwrap()).to_string(), "::1");
        assert_eq!(Host::Name("example.com".into()).to_string(), "example.com");
        let sa: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(Address::from(sa).socket_addr(), Some(sa));
        assert_eq!(Address::from(sa), Address::new(v6("2001:db8::1"), 443));
        assert_eq!(Address::name("example.com", 80).socket_addr(), None);
        assert_eq!(Address::UNSPECIFIED.to_string(), "0.0.0.0:0");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            (ProtocolError::BadVersion(4), "version 4 is not SOCKS5 (5)"),
            (ProtocolError::BadPasswordVersion(5), "username/password version 5 is not 1"),
            (ProtocolError::EmptyUsername, "username is empty"),
            (ProtocolError::EmptyPassword, "password is empty"),
            (ProtocolError::UsernameTooLong, "username longer than 255 bytes"),
            (ProtocolError::PasswordTooLong, "password longer than 255 bytes"),
            (ProtocolError::BadCommand(9), "unknown SOCKS5 command 9 (1 = CONNECT, 2 = BIND, 3 = UDP ASSOCIATE)"),
            (ProtocolError::BadAddressType(2), "unknown address type 2 (1 = IPv4, 3 = domain name, 4 = IPv6)"),
            (ProtocolError::EmptyHostName, "domain name is empty"),
            (ProtocolError::BadHostName, "domain name is not a valid DNS name"),
            (ProtocolError::BadReplyCode(9), "unknown reply code 9"),
            (ProtocolError::TruncatedDatagram, "datagram shorter than its SOCKS5 UDP header"),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    // --- Properties.

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn host() -> impl Strategy<Value = Host> {
            prop_oneof![
                any::<[u8; 4]>().prop_map(|b| Host::Ip(Ipv4Addr::from(b).into())),
                any::<[u8; 16]>().prop_map(|b| Host::Ip(Ipv6Addr::from(b).into())),
                "[A-Za-z0-9_-]{1,63}(\\.[A-Za-z0-9_-]{1,63}){0,5}\\.?"
                    .prop_filter("longer than 255", |n| n.len() <= 255)
                    .prop_map(Host::Name),
            ]
        }

        fn address() -> impl Strategy<Value = Address> {
            (host(), any::<u16>()).prop_map(|(host, port)| Address { host, port })
        }

        type Decoded<T> = Result<Option<(T, usize)>, ProtocolError>;

        fn field() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(any::<u8>(), 1..=255)
        }

        /// Encodes `msg`, appends `tail`, and checks that `decode` gives `msg`
        /// back, consumes exactly the encoded bytes, and needs more on every
        /// proper prefix.
        fn check<T: PartialEq + fmt::Debug>(
            msg: &T,
            encode: impl Fn(&T, &mut Vec<u8>),
            decode: fn(&[u8]) -> Decoded<T>,
            tail: &[u8],
        ) -> Result<(), TestCaseError> {
            let mut out = Vec::new();
            encode(msg, &mut out);
            let len = out.len();
            for cut in 0..len {
                prop_assert_eq!(decode(&out[..cut]), Ok(None));
            }
            out.extend_from_slice(tail);
            let (got, n) = decode(&out).unwrap().unwrap();
            prop_assert_eq!(&got, msg);
            prop_assert_eq!(n, len);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn requests_round_trip(cmd in 1u8..=3, destination in address(), tail in any::<Vec<u8>>()) {
                let req = Request::new(Command::from_byte(cmd).unwrap(), destination);
                check(&req, Request::encode, Request::decode, &tail)?;
            }

            #[test]
            fn replies_round_trip(rep in 0u8..=8, bound in address(), tail in any::<Vec<u8>>()) {
                let reply = Reply::new(ReplyCode::from_byte(rep).unwrap(), bound);
                check(&reply, Reply::encode, Reply::decode, &tail)?;
            }

            #[test]
            fn udp_headers_round_trip(frag in any::<u8>(), destination in address(), payload in any::<Vec<u8>>()) {
                let header = UdpHeader { frag, destination };
                check(&header, UdpHeader::encode, UdpHeader::decode, &payload)?;
            }

            #[test]
            fn greetings_round_trip(methods in prop::collection::vec(any::<u8>(), 0..=255), tail in any::<Vec<u8>>()) {
                let greeting = Greeting::new(methods.into_iter().map(Method::from_byte).collect::<Vec<_>>());
                check(&greeting, Greeting::encode, Greeting::decode, &tail)?;
            }

            #[test]
            fn logins_round_trip(username in field(), password in field(), tail in any::<Vec<u8>>()) {
                let login = PasswordRequest::new(username, password).unwrap();
                check(&login, PasswordRequest::encode, PasswordRequest::decode, &tail)?;
            }

            /// Whatever the bytes, decoding answers (no panic), consumes no
            /// more than it was given, and what it decodes encodes to the
            /// bytes it consumed, RSV aside.
            #[test]
            fn decoding_any_bytes_is_consistent(buf in prop::collection::vec(any::<u8>(), 0..300), first in 0u8..6) {
                let mut buf = buf;
                if let Some(b) = buf.first_mut() {
                    *b = first; // often a valid version, so decoding gets further
                }
                if let Ok(Some((req, n))) = Request::decode(&buf) {
                    let mut out = Vec::new();
                    req.encode(&mut out);
                    prop_assert_eq!(&out[..2], &buf[..2]);
                    prop_assert_eq!(&out[3..], &buf[3..n]);
                }
                if let Ok(Some((reply, n))) = Reply::decode(&buf) {
                    let mut out = Vec::new();
                    reply.encode(&mut out);
                    prop_assert_eq!(&out[..2], &buf[..2]);
                    prop_assert_eq!(&out[3..], &buf[3..n]);
                }
                if let Ok(Some((header, n))) = UdpHeader::decode(&buf) {
                    let mut out = Vec::new();
                    header.encode(&mut out);
                    prop_assert_eq!(&out[2..], &buf[2..n]);
                }
                if let Ok(Some((greeting, n))) = Greeting::decode(&buf) {
                    let mut out = Vec::new();
                    greeting.encode(&mut out);
                    prop_assert_eq!(&out[..], &buf[..n]);
                }
                if let Ok(Some((login, n))) = PasswordRequest::decode(&buf) {
                    let mut out = Vec::new();
                    login.encode(&mut out);
                    prop_assert_eq!(&out[..], &buf[..n]);
                }
            }
        }
    }
}
