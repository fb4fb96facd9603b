//! The SOCKS4 exchange on the program's own descriptor: reach the server, send one request, read
//! exactly one 8-byte reply, all within a deadline and immune to EINTR.

use std::ffi::c_int;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socks4_proto::v4::{ProtocolError, REPLY_LEN, Reply, Request};

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

/// The bytes of a reply received so far, kept across calls (a non-blocking accept reads BIND's
/// second reply in pieces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyProgress {
    pub bytes: [u8; REPLY_LEN],
    pub received: usize,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use socks4_proto::v4::{Destination, ReplyCode};

    const GRANTED: &[u8] = b"\x00\x5a\x04\x38\x0a\x00\x00\x02";

    #[test]
    fn reads_exactly_the_reply_and_leaves_the_banner() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(&[GRANTED, b"220 ready\r\n"].concat()).unwrap();
        let (mut buf, mut received) = ([0u8; REPLY_LEN], 0);
        let reply = read_reply(ours.as_raw_fd(), &mut buf, &mut received, 0).unwrap().unwrap();
        assert_eq!((reply.code, reply.addr()), (ReplyCode::Granted, "10.0.0.2:1080".parse().unwrap()));
        let mut rest = [0u8; 11];
        (&ours).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"220 ready\r\n");
    }

    #[test]
    fn keeps_partial_bytes_until_the_reply_is_complete() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (mut buf, mut received) = ([0u8; REPLY_LEN], 0);
        theirs.write_all(&GRANTED[..3]).unwrap();
        assert_eq!(read_reply(ours.as_raw_fd(), &mut buf, &mut received, libc::MSG_DONTWAIT), Ok(None));
        assert_eq!(received, 3);
        theirs.write_all(&GRANTED[3..]).unwrap();
        let reply = read_reply(ours.as_raw_fd(), &mut buf, &mut received, libc::MSG_DONTWAIT).unwrap();
        assert_eq!(reply.map(|r| r.port), Some(1080));
    }

    #[test]
    fn garbage_and_early_close_are_errors() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"HTTP/1.1 400").unwrap();
        let (mut buf, mut received) = ([0u8; REPLY_LEN], 0);
        assert_eq!(
            read_reply(ours.as_raw_fd(), &mut buf, &mut received, 0),
            Err(ExchangeError::Garbage(ProtocolError::BadReplyVersion(b'H')))
        );
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(&GRANTED[..5]).unwrap();
        drop(theirs);
        let (mut buf, mut received) = ([0u8; REPLY_LEN], 0);
        assert_eq!(read_reply(ours.as_raw_fd(), &mut buf, &mut received, 0), Err(ExchangeError::Closed));
    }

    #[test]
    fn exchange_sends_the_request_and_restores_blocking_mode() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = [0u8; 13];
            s.read_exact(&mut req).unwrap();
            s.write_all(GRANTED).unwrap();
            req
        });
        // SAFETY: a plain socket(2) call; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let request = Request::connect(Destination::Ip("10.0.0.5".parse().unwrap()), 21, "fred");
        let reply = exchange(fd, &proxy, &request, Duration::from_secs(5)).unwrap();
        assert_eq!(reply.code, ReplyCode::Granted);
        assert_eq!(&server.join().unwrap(), b"\x04\x01\x00\x15\x0a\x00\x00\x05fred\0");
        assert_eq!(sys::get_flags(fd).unwrap() & libc::O_NONBLOCK, 0, "blocking again afterwards");
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn silent_server_times_out_and_dead_server_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = listener.local_addr().unwrap();
        let request = Request::connect(Destination::Ip("10.0.0.5".parse().unwrap()), 21, "");
        // SAFETY: a plain socket(2) call; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let start = Instant::now();
        assert_eq!(exchange(fd, &proxy, &request, Duration::from_millis(200)), Err(ExchangeError::Timeout));
        assert!(start.elapsed() < Duration::from_secs(3));
        drop(listener);
        // SAFETY: our own descriptors.
        unsafe { libc::close(fd) };
        // SAFETY: a plain socket(2) call; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert_eq!(
            exchange(fd, &proxy, &request, Duration::from_secs(2)),
            Err(ExchangeError::Unreachable(libc::ECONNREFUSED))
        );
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
    }
}
