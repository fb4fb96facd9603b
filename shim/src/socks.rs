//! The SOCKS4 exchange on the program's own descriptor: reach the server, send one request, read
//! exactly one 8-byte reply, all within a deadline and immune to EINTR.

use std::ffi::c_int;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socks4_proto::{ProtocolError, REPLY_LEN, Reply, Request};

use crate::sys::{self, Errno};

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
    Garbage(ProtocolError),
    /// Another socket error while talking to the server.
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Io(Errno),
}

impl ExchangeError {
    pub fn errno(self) -> Errno {
        match self {
            ExchangeError::Unreachable(e) | ExchangeError::Io(e) => e,
            ExchangeError::Timeout => libc::ETIMEDOUT,
            ExchangeError::Closed => libc::ECONNRESET,
            ExchangeError::Garbage(_) => libc::EPROTO,
        }
    }
}

/// Connects `fd` to `proxy`, sends `request` and reads the reply. The descriptor is made
/// non-blocking for the exchange and its flags are restored afterwards, whatever happens.
pub fn exchange(fd: c_int, proxy: &SocketAddr, request: &Request, timeout: Duration) -> Result<Reply, ExchangeError> {
    let flags = sys::get_flags(fd).map_err(ExchangeError::Io)?;
    if flags & libc::O_NONBLOCK == 0 {
        sys::set_flags(fd, flags | libc::O_NONBLOCK).map_err(ExchangeError::Io)?;
    }
    let deadline = Instant::now() + timeout;
    let result = (|| {
        reach(fd, proxy, deadline)?;
        let mut bytes = Vec::with_capacity(64);
        request.encode(&mut bytes);
        send_all(fd, &bytes, deadline)?;
        let mut reply = [0u8; REPLY_LEN];
        let mut received = 0;
        loop {
            match read_reply(fd, &mut reply, &mut received, 0) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => wait(fd, libc::POLLIN, deadline)?,
                Err(ExchangeError::Io(libc::EINTR)) => {}
                Err(e) => return Err(e),
            }
        }
    })();
    if flags & libc::O_NONBLOCK == 0 {
        let _ = sys::set_flags(fd, flags);
    }
    result
}

/// Reads the bytes still missing from an 8-byte reply (never more: what follows belongs to the
/// program). `Ok(None)`: would block, `received` keeps the progress.
///
/// # Errors
///
/// `Closed` at end of stream, `Garbage` as soon as the bytes cannot be a reply, `Io` otherwise,
/// including `Io(EINTR)`: a blocking accept must stay interruptible (Ctrl-C in Python), and the
/// progress in `received` makes the retry safe.
pub fn read_reply(
    fd: c_int,
    buf: &mut [u8; REPLY_LEN],
    received: &mut usize,
    flags: c_int,
) -> Result<Option<Reply>, ExchangeError> {
    while *received < REPLY_LEN {
        match sys::recv(fd, &mut buf[*received..], flags) {
            Ok(0) => return Err(ExchangeError::Closed),
            Ok(n) => {
                *received += n;
                Reply::decode(&buf[..*received]).map_err(ExchangeError::Garbage)?;
            }
            Err(libc::EAGAIN) => return Ok(None),
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
    match Reply::decode(buf) {
        Ok(Some((reply, _))) => Ok(Some(reply)),
        Ok(None) => unreachable!("8 bytes always decode or fail"),
        Err(e) => Err(ExchangeError::Garbage(e)),
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
