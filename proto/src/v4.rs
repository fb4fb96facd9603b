//! SOCKS4 and SOCKS4A: CONNECT and BIND requests and their 8-byte replies.
//!
//! The protocol is `shared/spec/SOCKS4.protocol.txt`; SOCKS4A is the
//! `0.0.0.x` (x != 0) DSTIP convention with a host name after the user id.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::host::{self, HostNameError};

/// Version byte of a request.
pub const REQUEST_VERSION: u8 = 4;
/// Version byte of a reply, as the spec says ("should be 0").
pub const REPLY_VERSION: u8 = 0;
/// Length of every reply on the wire.
pub const REPLY_LEN: usize = 8;
/// Default cap on the user id and on a SOCKS4A host name, without the NUL.
pub const DEFAULT_MAX_FIELD: usize = 255;

/// Why a message could not be decoded. Every variant means the peer sent
/// something that is not SOCKS4: the server answers 91 and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("request version {0} is not SOCKS4 (4)")]
    BadVersion(u8),
    #[error("unknown SOCKS4 command {0} (1 = CONNECT, 2 = BIND)")]
    BadCommand(u8),
    #[error("user id longer than {0} bytes")]
    UserIdTooLong(usize),
    #[error("SOCKS4A host name longer than {0} bytes")]
    HostNameTooLong(usize),
    #[error("SOCKS4A host name is empty")]
    EmptyHostName,
    #[error("SOCKS4A host name is not a valid DNS name")]
    BadHostName,
    #[error("reply version {0} is neither 0 nor 4")]
    BadReplyVersion(u8),
    #[error("unknown reply code {0}")]
    BadReplyCode(u8),
}

/// The CD field of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect = 1,
    Bind = 2,
}

impl Command {
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            1 => Ok(Command::Connect),
            2 => Ok(Command::Bind),
            other => Err(ProtocolError::BadCommand(other)),
        }
    }

    /// The name used in configuration and logs.
    pub fn name(self) -> &'static str {
        match self {
            Command::Connect => "connect",
            Command::Bind => "bind",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a request points: an address (SOCKS4) or a name for the server to
/// resolve (SOCKS4A).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    Ip(Ipv4Addr),
    /// A SOCKS4A host name; on the wire DSTIP is `0.0.0.x`, x != 0.
    Name(String),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Ip(ip) => write!(f, "{ip}"),
            Destination::Name(name) => f.write_str(name),
        }
    }
}

/// Caps on the fields whose length the peer controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_user_id: usize,
    pub max_host_name: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_user_id: DEFAULT_MAX_FIELD, max_host_name: DEFAULT_MAX_FIELD }
    }
}

/// A CONNECT or BIND request.
///
/// # Format
///
/// ```text
/// +----+----+----+----+----+----+----+----+----+----+....+----+ ....... +----+
/// | VN | CD | DSTPORT |      DSTIP        | USERID       |NULL| HOST    |NULL|
/// +----+----+----+----+----+----+----+----+----+----+....+----+ ....... +----+
///    1    1      2              4           variable       1   variable   1
/// ```
///
/// VN is 4, CD is 1 (CONNECT) or 2 (BIND), port and address in network
/// order. HOST and its NUL are present only when DSTIP is `0.0.0.x` with
/// x != 0 (SOCKS4A); `0.0.0.0` is a plain request for address 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub port: u16,
    pub destination: Destination,
    /// Raw USERID bytes, without the NUL. Not necessarily UTF-8.
    pub user_id: Vec<u8>,
}

/// `0.0.0.x` with x != 0 marks a SOCKS4A request.
pub fn is_socks4a_marker(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    a == 0 && b == 0 && c == 0 && d != 0
}

/// The DSTIP this implementation sends for a SOCKS4A request.
pub const SOCKS4A_MARKER: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 1);

impl Request {
    pub fn connect(destination: Destination, port: u16, user_id: impl Into<Vec<u8>>) -> Self {
        Request { command: Command::Connect, port, destination, user_id: user_id.into() }
    }

    pub fn bind(destination: Destination, port: u16, user_id: impl Into<Vec<u8>>) -> Self {
        Request { command: Command::Bind, port, destination, user_id: user_id.into() }
    }

    /// Decodes one request with the default [`Limits`].
    ///
    /// # Errors
    ///
    /// See [`Request::decode_with`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, ProtocolError> {
        Self::decode_with(buf, &Limits::default())
    }

    /// Decodes one request from the start of `buf`. `Ok(None)` means a valid
    /// prefix: read more. A field over its cap is an error as soon as the cap
    /// is passed, so a caller never buffers more than
    /// `8 + max_user_id + 1 + max_host_name + 1` bytes.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadVersion`], [`ProtocolError::BadCommand`],
    /// [`ProtocolError::UserIdTooLong`], [`ProtocolError::HostNameTooLong`],
    /// [`ProtocolError::EmptyHostName`], [`ProtocolError::BadHostName`].
    pub fn decode_with(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, ProtocolError> {
        // Check the fixed bytes as soon as they arrive, so garbage is refused
        // without waiting for a NUL that may never come.
        if let Some(&vn) = buf.first()
            && vn != REQUEST_VERSION
        {
            return Err(ProtocolError::BadVersion(vn));
        }
        if buf.len() < 2 {
            return Ok(None);
        }
        let command = Command::from_byte(buf[1])?;
        let Some(&[_, _, p0, p1, a, b, c, d]) = buf.first_chunk::<8>() else {
            return Ok(None);
        };
        let port = u16::from_be_bytes([p0, p1]);
        let ip = Ipv4Addr::new(a, b, c, d);

        let rest = &buf[8..];
        let Some(user_len) =
            find_nul(rest, limits.max_user_id).map_err(|()| ProtocolError::UserIdTooLong(limits.max_user_id))?
        else {
            return Ok(None);
        };
        let user_id = rest[..user_len].to_vec();
        let mut consumed = 8 + user_len + 1;

        let destination = if is_socks4a_marker(ip) {
            let rest = &buf[consumed..];
            let Some(name_len) = find_nul(rest, limits.max_host_name)
                .map_err(|()| ProtocolError::HostNameTooLong(limits.max_host_name))?
            else {
                return Ok(None);
            };
            let name = parse_host_name(&rest[..name_len])?;
            consumed += name_len + 1;
            Destination::Name(name)
        } else {
            Destination::Ip(ip)
        };
        Ok(Some((Request { command, port, destination, user_id }, consumed)))
    }

    /// Appends the wire form of this request.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(REQUEST_VERSION);
        out.push(self.command as u8);
        out.extend_from_slice(&self.port.to_be_bytes());
        match &self.destination {
            Destination::Ip(ip) => out.extend_from_slice(&ip.octets()),
            Destination::Name(_) => out.extend_from_slice(&SOCKS4A_MARKER.octets()),
        }
        out.extend_from_slice(&self.user_id);
        out.push(0);
        if let Destination::Name(name) = &self.destination {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
    }

    /// The user id as text, for rules and logs (invalid UTF-8 replaced).
    pub fn user_id_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.user_id)
    }
}

/// Length of the NUL-terminated field at the start of `buf`: `Ok(None)` if
/// no NUL yet and still within `max`, `Err` once more than `max` bytes
/// without a NUL are seen.
fn find_nul(buf: &[u8], max: usize) -> Result<Option<usize>, ()> {
    let window = &buf[..buf.len().min(max + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(n) => Ok(Some(n)),
        None if window.len() > max => Err(()),
        None => Ok(None),
    }
}

/// A SOCKS4A host name, checked by [`host::validate`] (case and a trailing
/// dot kept as sent).
fn parse_host_name(bytes: &[u8]) -> Result<String, ProtocolError> {
    match host::validate(bytes) {
        Ok(name) => Ok(name.to_owned()),
        Err(HostNameError::Empty) => Err(ProtocolError::EmptyHostName),
        Err(HostNameError::Invalid) => Err(ProtocolError::BadHostName),
    }
}

/// The CD field of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 90: request granted.
    Granted = 90,
    /// 91: request rejected or failed.
    Rejected = 91,
    /// 92: rejected because the server cannot connect to identd on the client.
    IdentUnreachable = 92,
    /// 93: rejected because the client program and identd report different user ids.
    IdentMismatch = 93,
}

impl ReplyCode {
    pub fn from_byte(b: u8) -> Result<Self, ProtocolError> {
        match b {
            90 => Ok(ReplyCode::Granted),
            91 => Ok(ReplyCode::Rejected),
            92 => Ok(ReplyCode::IdentUnreachable),
            93 => Ok(ReplyCode::IdentMismatch),
            other => Err(ProtocolError::BadReplyCode(other)),
        }
    }

    /// What the code means, in words fit for an error message.
    pub fn describe(self) -> &'static str {
        match self {
            ReplyCode::Granted => "request granted",
            ReplyCode::Rejected => "request rejected or failed",
            ReplyCode::IdentUnreachable => "rejected: the SOCKS server cannot connect to identd on the client",
            ReplyCode::IdentMismatch => "rejected: the client program and identd report different user ids",
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", *self as u8, self.describe())
    }
}

/// A reply to CONNECT, or the first or second reply to BIND.
///
/// # Format
///
/// ```text
/// +----+----+----+----+----+----+----+----+
/// | VN | CD | DSTPORT |      DSTIP        |
/// +----+----+----+----+----+----+----+----+
///    1    1      2              4
/// ```
///
/// VN is 0. For a granted BIND, DSTIP/DSTPORT are the address the server
/// listens on (first reply; `0.0.0.0` means "the server's own address") and
/// the address of the host that connected (second reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub code: ReplyCode,
    pub port: u16,
    pub ip: Ipv4Addr,
}

impl Reply {
    pub fn new(code: ReplyCode, addr: SocketAddrV4) -> Self {
        Reply { code, port: addr.port(), ip: *addr.ip() }
    }

    /// A reply that carries no address.
    pub fn code_only(code: ReplyCode) -> Self {
        Reply { code, port: 0, ip: Ipv4Addr::UNSPECIFIED }
    }

    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.port)
    }

    /// Decodes exactly one 8-byte reply; bytes after it (a server banner
    /// that arrived in the same read) are not consumed. VN 4 is accepted as
    /// well as 0, because some servers echo the request version.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::BadReplyVersion`], [`ProtocolError::BadReplyCode`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        if let Some(&vn) = buf.first()
            && vn != REPLY_VERSION
            && vn != REQUEST_VERSION
        {
            return Err(ProtocolError::BadReplyVersion(vn));
        }
        if let Some(&cd) = buf.get(1) {
            ReplyCode::from_byte(cd)?;
        }
        let Some(b) = buf.first_chunk::<REPLY_LEN>() else {
            return Ok(None);
        };
        let code = ReplyCode::from_byte(b[1])?;
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Ok(Some((Reply { code, port, ip }, REPLY_LEN)))
    }

    /// Appends the 8 wire bytes of this reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    pub fn to_bytes(&self) -> [u8; REPLY_LEN] {
        let [p0, p1] = self.port.to_be_bytes();
        let [a, b, c, d] = self.ip.octets();
        [REPLY_VERSION, self.code as u8, p0, p1, a, b, c, d]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONNECT: &[u8] = b"\x04\x01\x00\x50\x7f\x00\x00\x01fred\0";
    const BIND: &[u8] = b"\x04\x02\x00\x15\xc0\x00\x02\x07\0";
    const CONNECT_4A: &[u8] = b"\x04\x01\x00\x50\x00\x00\x00\x01fred\0files.internal\0";

    fn decoded(buf: &[u8]) -> (Request, usize) {
        Request::decode(buf).unwrap().unwrap()
    }

    #[test]
    fn decodes_connect_from_spec_layout() {
        let (req, n) = decoded(CONNECT);
        assert_eq!(n, CONNECT.len());
        assert_eq!(req.command, Command::Connect);
        assert_eq!(req.port, 80);
        assert_eq!(req.destination, Destination::Ip(Ipv4Addr::LOCALHOST));
        assert_eq!(req.user_id, b"fred");
    }

    #[test]
    fn decodes_bind_with_empty_user_id() {
        let (req, n) = decoded(BIND);
        assert_eq!(n, 9);
        assert_eq!(req.command, Command::Bind);
        assert_eq!(req.port, 21);
        assert_eq!(req.destination, Destination::Ip(Ipv4Addr::new(192, 0, 2, 7)));
        assert!(req.user_id.is_empty());
    }

    #[test]
    fn decodes_socks4a_name() {
        let (req, n) = decoded(CONNECT_4A);
        assert_eq!(n, CONNECT_4A.len());
        assert_eq!(req.destination, Destination::Name("files.internal".into()));
        assert_eq!(req.user_id, b"fred");
    }

    #[test]
    fn zero_address_is_plain_socks4_not_4a() {
        let (req, n) = decoded(b"\x04\x01\x00\x50\x00\x00\x00\x00\0trailing");
        assert_eq!(n, 9);
        assert_eq!(req.destination, Destination::Ip(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn consumes_exactly_one_request() {
        let mut buf = CONNECT.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.0\r\n");
        let (_, n) = decoded(&buf);
        assert_eq!(n, CONNECT.len());
    }

    #[test]
    fn every_proper_prefix_needs_more() {
        for msg in [CONNECT, BIND, CONNECT_4A] {
            for len in 0..msg.len() {
                assert_eq!(Request::decode(&msg[..len]), Ok(None), "prefix {len} of {msg:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_version_at_first_byte() {
        assert_eq!(Request::decode(b"\x05"), Err(ProtocolError::BadVersion(5)));
        assert_eq!(Request::decode(b"GET / HTTP/1.1\r\n"), Err(ProtocolError::BadVersion(b'G')));
    }

    #[test]
    fn rejects_unknown_command_at_second_byte() {
        assert_eq!(Request::decode(b"\x04\x03"), Err(ProtocolError::BadCommand(3)));
        assert_eq!(Request::decode(b"\x04\x00"), Err(ProtocolError::BadCommand(0)));
    }

    #[test]
    fn caps_user_id_without_waiting_for_nul() {
        let mut buf = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
        buf.extend(std::iter::repeat_n(b'u', 255));
        assert_eq!(Request::decode(&buf), Ok(None));
        buf.push(b'u');
        assert_eq!(Request::decode(&buf), Err(ProtocolError::UserIdTooLong(255)));
    }

    #[test]
    fn accepts_user_id_at_the_cap() {
        let mut buf = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
        buf.extend(std::iter::repeat_n(b'u', 255));
        buf.push(0);
        assert_eq!(decoded(&buf).0.user_id.len(), 255);
    }

    #[test]
    fn caps_host_name() {
        let mut buf = b"\x04\x01\x00\x50\x00\x00\x00\x01\0".to_vec();
        buf.extend(std::iter::repeat_n(b'h', 256));
        assert_eq!(Request::decode(&buf), Err(ProtocolError::HostNameTooLong(255)));
        let limits = Limits { max_user_id: 255, max_host_name: 300 };
        buf.push(0);
        assert!(Request::decode_with(&buf, &limits).unwrap().is_some());
    }

    #[test]
    fn user_id_and_host_name_each_have_their_own_cap() {
        // "fred" is 4 bytes, "files.internal" 14: each cap is tested with the other one loose.
        let tight_user = Limits { max_user_id: 4, max_host_name: 20 };
        assert_eq!(Request::decode_with(CONNECT_4A, &tight_user), Ok(Some((decoded(CONNECT_4A).0, CONNECT_4A.len()))));
        let longer_user = b"\x04\x01\x00\x50\x00\x00\x00\x01fredd\0files.internal\0";
        assert_eq!(Request::decode_with(longer_user, &tight_user), Err(ProtocolError::UserIdTooLong(4)));

        let tight_name = Limits { max_user_id: 20, max_host_name: 14 };
        assert!(Request::decode_with(CONNECT_4A, &tight_name).unwrap().is_some());
        let longer_user = b"\x04\x01\x00\x50\x00\x00\x00\x01fredfredfred\0files.internal\0";
        assert!(Request::decode_with(longer_user, &tight_name).unwrap().is_some());
        let tight_name = Limits { max_user_id: 20, max_host_name: 13 };
        assert_eq!(Request::decode_with(CONNECT_4A, &tight_name), Err(ProtocolError::HostNameTooLong(13)));
    }

    #[test]
    fn rejects_empty_and_malformed_host_names() {
        assert_eq!(Request::decode(b"\x04\x01\x00\x50\x00\x00\x00\x07\0\0"), Err(ProtocolError::EmptyHostName));
        for bad in [&b"a b"[..], b"a/b", b"..", b".x", b"a..b", b"\xff"] {
            let mut buf = b"\x04\x01\x00\x50\x00\x00\x00\x07\0".to_vec();
            buf.extend_from_slice(bad);
            buf.push(0);
            assert_eq!(Request::decode(&buf), Err(ProtocolError::BadHostName), "{bad:?}");
        }
    }

    #[test]
    fn request_round_trips() {
        let reqs = [
            Request::connect(Destination::Ip(Ipv4Addr::new(10, 1, 2, 3)), 21, "alice"),
            Request::bind(Destination::Ip(Ipv4Addr::new(192, 0, 2, 1)), 65535, ""),
            Request::connect(Destination::Name("example.com".into()), 443, b"\xffbin".to_vec()),
            Request::bind(Destination::Name("ftp.internal".into()), 21, "bob"),
        ];
        for req in reqs {
            let mut out = Vec::new();
            req.encode(&mut out);
            assert_eq!(decoded(&out), (req, out.len()));
        }
    }

    #[test]
    fn encodes_spec_bytes() {
        let mut out = Vec::new();
        Request::connect(Destination::Ip(Ipv4Addr::LOCALHOST), 80, "fred").encode(&mut out);
        assert_eq!(out, CONNECT);
        out.clear();
        Request::connect(Destination::Name("files.internal".into()), 80, "fred").encode(&mut out);
        assert_eq!(out, CONNECT_4A);
    }

    #[test]
    fn user_id_as_text() {
        assert_eq!(decoded(CONNECT).0.user_id_lossy(), "fred");
        assert_eq!(
            Request::connect(Destination::Ip(Ipv4Addr::LOCALHOST), 80, b"fr\xffd".to_vec()).user_id_lossy(),
            "fr\u{fffd}d"
        );
    }

    #[test]
    fn commands_and_destinations_have_names() {
        assert_eq!((Command::Connect.name(), Command::Bind.name()), ("connect", "bind"));
        assert_eq!((Command::Connect.to_string(), Command::Bind.to_string()), ("connect".into(), "bind".into()));
        assert_eq!(Destination::Ip(Ipv4Addr::new(192, 0, 2, 1)).to_string(), "192.0.2.1");
        assert_eq!(Destination::Name("Files.Internal".into()).to_string(), "Files.Internal");
    }

    #[test]
    fn reply_codes_describe_themselves() {
        let texts = [
            (ReplyCode::Granted, "90 (request granted)"),
            (ReplyCode::Rejected, "91 (request rejected or failed)"),
            (ReplyCode::IdentUnreachable, "92 (rejected: the SOCKS server cannot connect to identd on the client)"),
            (ReplyCode::IdentMismatch, "93 (rejected: the client program and identd report different user ids)"),
        ];
        for (code, text) in texts {
            assert_eq!(code.to_string(), text);
            assert_eq!(format!("{} ({})", code as u8, code.describe()), text);
        }
    }

    #[test]
    fn decodes_reply_and_leaves_banner() {
        let buf = b"\x00\x5a\x04\x38\x0a\x00\x00\x02220 ready\r\n";
        let (reply, n) = Reply::decode(buf).unwrap().unwrap();
        assert_eq!(n, 8);
        assert_eq!(reply.code, ReplyCode::Granted);
        assert_eq!(reply.addr(), "10.0.0.2:1080".parse().unwrap());
    }

    #[test]
    fn every_reply_prefix_needs_more() {
        let buf = b"\x00\x5b\x00\x00\x00\x00\x00\x00";
        for len in 0..8 {
            assert_eq!(Reply::decode(&buf[..len]), Ok(None));
        }
    }

    #[test]
    fn decodes_all_reply_codes() {
        for (b, code) in [
            (90, ReplyCode::Granted),
            (91, ReplyCode::Rejected),
            (92, ReplyCode::IdentUnreachable),
            (93, ReplyCode::IdentMismatch),
        ] {
            let (reply, _) = Reply::decode(&[0, b, 0, 0, 0, 0, 0, 0]).unwrap().unwrap();
            assert_eq!(reply.code, code);
        }
    }

    #[test]
    fn rejects_bad_reply_version_and_code_early() {
        assert_eq!(Reply::decode(b"\x05"), Err(ProtocolError::BadReplyVersion(5)));
        assert_eq!(Reply::decode(b"\x00\x00"), Err(ProtocolError::BadReplyCode(0)));
        assert_eq!(Reply::decode(b"HTTP/1.1"), Err(ProtocolError::BadReplyVersion(b'H')));
    }

    #[test]
    fn accepts_reply_version_4() {
        assert!(Reply::decode(b"\x04\x5a\0\0\0\0\0\0").unwrap().is_some());
    }

    #[test]
    fn reply_round_trips() {
        let reply = Reply::new(ReplyCode::IdentMismatch, "203.0.113.9:40000".parse().unwrap());
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(out, b"\x00\x5d\x9c\x40\xcb\x00\x71\x09");
        assert_eq!(Reply::decode(&out), Ok(Some((reply, 8))));
    }
}
