//! The SOCKS exchange on the program's own descriptor: reach the first hop, go through each hop of
//! a chain (each hop's CONNECT made through the one before), then send the one request (CONNECT or
//! BIND) and read exactly its reply, all within a deadline per hop and immune to EINTR.
//!
//! Both protocols come from the protocol crate: SOCKS4/4A (`v4`) and SOCKS5 with the
//! username/password login (`v5`). Every reply is read to its last byte and not one byte further:
//! what follows (a banner, the relayed data) belongs to the program.

use std::ffi::c_int;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socks4_proto::v4;
use socks4_proto::v5;

use crate::sys::{self, Errno};
use crate::upstream::{Protocol, Upstream};

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect,
    Bind,
}

/// What a request names: an address, or a name the server resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Addr(SocketAddr),
    Name(&'a str, u16),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

/// A reply that is not a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    V4(v4::ReplyCode),
    V5(v5::ReplyCode),
}

impl Refusal {
    /// The errno a program gets for it (README, "errno table").
    pub fn errno(self) -> Errno {
        use v5::ReplyCode as R;
        match self {
            Refusal::V4(_) => libc::ECONNREFUSED,
            Refusal::V5(R::NetworkUnreachable) => libc::ENETUNREACH,
            Refusal::V5(R::HostUnreachable) => libc::EHOSTUNREACH,
            Refusal::V5(R::TtlExpired) => libc::ETIMEDOUT,
            Refusal::V5(R::CommandNotSupported) => libc::EOPNOTSUPP,
            Refusal::V5(R::AddressTypeNotSupported) => libc::EAFNOSUPPORT,
            Refusal::V5(R::Succeeded | R::GeneralFailure | R::NotAllowed | R::ConnectionRefused) => libc::ECONNREFUSED,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::V4(code) => code.fmt(f),
            Refusal::V5(code) => code.fmt(f),
        }
    }
}

/// Why an exchange failed; each maps to one errno (see README, "errno table").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The SOCKS server could not be reached: the errno of that connect.
    #[error("SOCKS server unreachable: {}", std::io::Error::from_raw_os_error(*.0))]
    Unreachable(Errno),
    /// No connection or no complete reply within the timeout.
    #[error("timed out waiting for the SOCKS server")]
    Timeout,
    /// The server closed the connection before a whole reply.
    #[error("the SOCKS server closed the connection before replying")]
    Closed,
    /// The server sent something that is not a SOCKS4 reply.
    #[error("not a SOCKS4 reply: {0}")]
    Garbage(v4::ProtocolError),
    /// The server sent something that is not a SOCKS5 answer.
    #[error("not a SOCKS5 answer: {0}")]
    Garbage5(v5::ProtocolError),
    /// Another socket error while talking to the server.
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Io(Errno),
    /// The server answered the request with a failure code.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The SOCKS5 server accepts none of the methods offered (it wants a login the configuration
    /// does not give, or GSSAPI).
    #[error("the SOCKS5 server accepts none of our authentication methods (a username/password missing?)")]
    NoAcceptableMethod,
    /// The SOCKS5 server picked a method that was not offered.
    #[error("the SOCKS5 server chose authentication method {0}, which was not offered")]
    UnexpectedMethod(u8),
    /// The SOCKS5 server refused the username/password.
    #[error("the SOCKS5 server refused the username/password")]
    AuthFailed,
    /// SOCKS4 cannot name an IPv6 address, and no SOCKS name is longer than 255 bytes.
    #[error("the request cannot carry this address")]
    CannotCarry,
}

impl ExchangeError {
    pub fn errno(self) -> Errno {
        match self {
            ExchangeError::Unreachable(e) | ExchangeError::Io(e) => e,
            ExchangeError::Timeout => libc::ETIMEDOUT,
            ExchangeError::Closed => libc::ECONNRESET,
            ExchangeError::Garbage(_) | ExchangeError::Garbage5(_) | ExchangeError::UnexpectedMethod(_) => libc::EPROTO,
            ExchangeError::Refused(r) => r.errno(),
            ExchangeError::NoAcceptableMethod | ExchangeError::AuthFailed => libc::EACCES,
            ExchangeError::CannotCarry => libc::ENETUNREACH,
        }
    }
}

/// A failed exchange: why, at which hop, and whether the first hop is down (it could not be
/// reached, or did not answer in time before any request reached it: then another upstream may
/// be tried without the risk of a second connection to the destination).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub error: ExchangeError,
    pub hop: usize,
    pub first_hop_down: bool,
}

/// A granted request: BND.ADDR/BND.PORT (DSTIP/DSTPORT for SOCKS4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// None when a SOCKS5 server named a host instead.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl Granted {
    /// The address, unless the server named a host.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// The bytes of a reply received so far, kept across calls (a non-blocking accept reads BIND's
/// second reply in pieces). Large enough for any SOCKS5 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyProgress {
    pub bytes: [u8; v5::MAX_REQUEST_LEN],
    pub received: usize,
}

impl Default for ReplyProgress {
    fn default() -> Self {
        ReplyProgress { bytes: [0; v5::MAX_REQUEST_LEN], received: 0 }
    }
}

/// Connects `fd` to `first` (the first hop's address in the socket's family), goes through every
/// hop of `hops`, and makes `command` for `target` at the last one. The descriptor is made
/// non-blocking for the exchange and its flags are restored afterwards, whatever happens.
/// `user`: the SOCKS4 USERID for hops whose URL names none.
///
/// # Errors
///
/// The first failure, with the hop it happened at.
pub fn exchange(
    fd: c_int,
    first: &SocketAddr,
    hops: &[&Upstream],
    user: &[u8],
    command: Command,
    target: &Target<'_>,
    timeout: Duration,
) -> Result<Granted, Failure> {
    let flags =
        sys::get_flags(fd).map_err(|e| Failure { error: ExchangeError::Io(e), hop: 0, first_hop_down: false })?;
    if flags & libc::O_NONBLOCK == 0 {
        sys::set_flags(fd, flags | libc::O_NONBLOCK).map_err(|e| Failure {
            error: ExchangeError::Io(e),
            hop: 0,
            first_hop_down: false,
        })?;
    }
    let result = (|| {
        let deadline = Instant::now() + timeout;
        reach(fd, first, deadline).map_err(|error| Failure { error, hop: 0, first_hop_down: true })?;
        let mut granted = Granted { ip: None, port: 0 };
        for (i, hop) in hops.iter().enumerate() {
            // Each hop gets the whole timeout: a chain is as patient with its last hop as with
            // its first.
            let deadline = if i == 0 { deadline } else { Instant::now() + timeout };
            let (cmd, tgt) = match hops.get(i + 1) {
                Some(next) => (Command::Connect, next_hop(hop, next)),
                None => (command, *target),
            };
            let mut answered = i > 0;
            granted = request(fd, hop, user, cmd, &tgt, deadline, &mut answered).map_err(|error| Failure {
                error,
                hop: i,
                first_hop_down: !answered && matches!(error, ExchangeError::Timeout | ExchangeError::Unreachable(_)),
            })?;
        }
        Ok(granted)
    })();
    if flags & libc::O_NONBLOCK == 0 {
        let _ = sys::set_flags(fd, flags);
    }
    result
}

/// What hop `prev` is asked to connect to for the next hop: its name when `prev` resolves names,
/// else the address the configuration resolved (it checked there is one).
fn next_hop<'a>(prev: &Upstream, next: &'a Upstream) -> Target<'a> {
    match (next.url.ip(), next.addr) {
        (None, _) if prev.sends_names => Target::Name(&next.url.host, next.url.port),
        (_, Some(addr)) => Target::Addr(addr),
        (Some(ip), None) => Target::Addr(SocketAddr::new(ip, next.url.port)),
        (None, None) => Target::Name(&next.url.host, next.url.port),
    }
}

/// One hop: its login (SOCKS5), the request and the reply. `answered` turns true once the hop
/// has answered anything or a request reached it.
fn request(
    fd: c_int,
    hop: &Upstream,
    user: &[u8],
    command: Command,
    target: &Target<'_>,
    deadline: Instant,
    answered: &mut bool,
) -> Result<Granted, ExchangeError> {
    let mut bytes = Vec::with_capacity(64);
    match hop.protocol() {
        Protocol::Socks4 => {
            let destination = match *target {
                Target::Name(name, _) => v4::Destination::Name(name.to_owned()),
                Target::Addr(a) => match a.ip().to_canonical() {
                    IpAddr::V4(ip) => v4::Destination::Ip(ip),
                    IpAddr::V6(_) => return Err(ExchangeError::CannotCarry),
                },
            };
            let port = target_port(target);
            let user = hop.url.user.as_deref().unwrap_or(user).to_vec();
            let request = match command {
                Command::Connect => v4::Request::connect(destination, port, user),
                Command::Bind => v4::Request::bind(destination, port, user),
            };
            request.encode(&mut bytes);
        }
        Protocol::Socks5 => {
            negotiate(fd, hop, deadline, answered)?;
            let address = match *target {
                Target::Addr(a) => v5::Address::from(SocketAddr::new(a.ip().to_canonical(), a.port())),
                Target::Name(name, port) if !name.is_empty() && name.len() <= 255 => v5::Address::name(name, port),
                Target::Name(..) => return Err(ExchangeError::CannotCarry),
            };
            let command = match command {
                Command::Connect => v5::Command::Connect,
                Command::Bind => v5::Command::Bind,
            };
            v5::Request::new(command, address).encode(&mut bytes);
        }
    }
    send_all(fd, &bytes, deadline)?;
    *answered = true;
    let mut progress = ReplyProgress::default();
    loop {
        match read_reply(fd, hop.protocol(), &mut progress, 0) {
            Ok(Some(g)) => return Ok(g),
            Ok(None) => wait(fd, libc::POLLIN, deadline)?,
            Err(ExchangeError::Io(libc::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
}

fn target_port(target: &Target<'_>) -> u16 {
    match *target {
        Target::Addr(a) => a.port(),
        Target::Name(_, p) => p,
    }
}

/// The SOCKS5 greeting and, if the server picks it, the username/password login (RFC 1929).
fn negotiate(fd: c_int, hop: &Upstream, deadline: Instant, answered: &mut bool) -> Result<(), ExchangeError> {
    use v5::Method;
    let login = hop.login();
    let methods = match login {
        Some(_) => vec![Method::NoAuth, Method::UsernamePassword],
        None => vec![Method::NoAuth],
    };
    let mut bytes = Vec::with_capacity(4);
    v5::Greeting::new(methods).encode(&mut bytes);
    send_all(fd, &bytes, deadline)?;
    let mut buf = [0u8; 2];
    let selection =
        read_message(fd, &mut buf, deadline, |b| v5::MethodSelection::decode(b).map_err(ExchangeError::Garbage5))?;
    *answered = true;
    match (selection.method, login) {
        (Method::NoAuth, _) => Ok(()),
        (Method::UsernamePassword, Some((user, password))) => {
            let request = v5::PasswordRequest::new(user, password).map_err(ExchangeError::Garbage5)?;
            let mut bytes = Vec::with_capacity(3 + user.len() + password.len());
            request.encode(&mut bytes);
            send_all(fd, &bytes, deadline)?;
            let reply = read_message(fd, &mut buf, deadline, |b| {
                v5::PasswordReply::decode(b).map_err(ExchangeError::Garbage5)
            })?;
            if reply.is_success() { Ok(()) } else { Err(ExchangeError::AuthFailed) }
        }
        (Method::NoAcceptable, _) => Err(ExchangeError::NoAcceptableMethod),
        (other, _) => Err(ExchangeError::UnexpectedMethod(other.to_byte())),
    }
}

/// Reads one fixed-size message (`buf.len()` bytes), refusing garbage as soon as it arrives.
fn read_message<T>(
    fd: c_int,
    buf: &mut [u8],
    deadline: Instant,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, ExchangeError>,
) -> Result<T, ExchangeError> {
    let mut received = 0;
    loop {
        // No bytes yet decode as "need more" too.
        if let Some((message, _)) = decode(&buf[..received])? {
            return Ok(message);
        }
        match sys::recv(fd, &mut buf[received..], 0) {
            Ok(0) => return Err(ExchangeError::Closed),
            Ok(n) => received += n,
            Err(libc::EINTR) => {}
            Err(libc::EAGAIN) => wait(fd, libc::POLLIN, deadline)?,
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
}

/// Reads the bytes still missing from a reply of `protocol` (never more: what follows belongs to
/// the program). `Ok(None)`: would block, `progress` keeps what came.
///
/// # Errors
///
/// `Refused` for a failure code, `Closed` at end of stream, `Garbage`/`Garbage5` as soon as the
/// bytes cannot be a reply, `Io` otherwise, including `Io(EINTR)`: a blocking accept must stay
/// interruptible (Ctrl-C in Python), and the progress kept makes the retry safe.
pub fn read_reply(
    fd: c_int,
    protocol: Protocol,
    progress: &mut ReplyProgress,
    flags: c_int,
) -> Result<Option<Granted>, ExchangeError> {
    loop {
        let have = &progress.bytes[..progress.received];
        let want = match protocol {
            Protocol::Socks4 => {
                v4::Reply::decode(have).map_err(ExchangeError::Garbage)?;
                v4::REPLY_LEN
            }
            Protocol::Socks5 => {
                v5::Reply::wire_len(have).map_err(ExchangeError::Garbage5)?.unwrap_or(v5::REPLY_PREFIX_LEN)
            }
        };
        if progress.received >= want {
            break;
        }
        match sys::recv(fd, &mut progress.bytes[progress.received..want], flags) {
            Ok(0) => return Err(ExchangeError::Closed),
            Ok(n) => progress.received += n,
            Err(libc::EAGAIN) => return Ok(None),
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
    let have = &progress.bytes[..progress.received];
    match protocol {
        Protocol::Socks4 => match v4::Reply::decode(have) {
            Ok(Some((r, _))) if r.code == v4::ReplyCode::Granted => {
                Ok(Some(Granted { ip: Some(r.ip.into()), port: r.port }))
            }
            Ok(Some((r, _))) => Err(ExchangeError::Refused(Refusal::V4(r.code))),
            Ok(None) => unreachable!("8 bytes always decode or fail"),
            Err(e) => Err(ExchangeError::Garbage(e)),
        },
        Protocol::Socks5 => match v5::Reply::decode(have) {
            Ok(Some((r, _))) if r.code == v5::ReplyCode::Succeeded => {
                let ip = r.bound.socket_addr().map(|a| a.ip());
                Ok(Some(Granted { ip, port: r.bound.port }))
            }
            Ok(Some((r, _))) => Err(ExchangeError::Refused(Refusal::V5(r.code))),
            Ok(None) => unreachable!("wire_len bytes always decode or fail"),
            Err(e) => Err(ExchangeError::Garbage5(e)),
        },
    }
}

fn reach(fd: c_int, proxy: &SocketAddr, deadline: Instant) -> Result<(), ExchangeError> {
    match sys::connect(fd, proxy) {
        Ok(()) => return Ok(()),
        // EINTR: the connection attempt goes on in the background, exactly like EINPROGRESS.
        Err(libc::EINPROGRESS | libc::EINTR | libc::EALREADY) => {}
        Err(e) => return Err(ExchangeError::Unreachable(e)),
    }
    wait(fd, libc::POLLOUT, deadline)?;
    match sys::socket_error(fd) {
        0 => Ok(()),
        e => Err(ExchangeError::Unreachable(e)),
    }
}

fn send_all(fd: c_int, mut bytes: &[u8], deadline: Instant) -> Result<(), ExchangeError> {
    while !bytes.is_empty() {
        match sys::send(fd, bytes, libc::MSG_NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(libc::EINTR) => {}
            Err(libc::EAGAIN) => wait(fd, libc::POLLOUT, deadline)?,
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` (or has an error/hangup, which the next call reports).
fn wait(fd: c_int, events: i16, deadline: Instant) -> Result<(), ExchangeError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ExchangeError::Timeout);
        }
        let ms = left.as_millis().clamp(1, c_int::MAX as u128) as c_int;
        match sys::poll(fd, events, ms) {
            Ok(0) => {}
            Ok(_) => return Ok(()),
            Err(libc::EINTR) => {}
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests;
