//! Unit tests of the exchange against small scripted SOCKS servers on loopback: exact bytes on
//! the wire, replies read to their last byte, logins, chains and the errors.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::upstream::{Secret, Url};

const GRANTED: &[u8] = b"\x00\x5a\x04\x38\x0a\x00\x00\x02";

fn upstream(url: &str, addr: Option<SocketAddr>) -> Upstream {
    let url = Url::parse(url).unwrap();
    let sends_names = url.remote_dns.unwrap_or(false);
    Upstream { url, addr, sends_names }
}

fn socket() -> std::os::fd::OwnedFd {
    // SAFETY: a plain socket(2) call; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
}

/// A one-connection server on loopback running `script`; its result comes back on join. The
/// accept and every read are bounded (5 s): an exchange that never connects or never sends fails
/// the test instead of hanging it.
fn server<T: Send + 'static>(script: impl FnOnce(TcpStream) -> T + Send + 'static) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        let s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("no connection to the scripted server: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        script(s)
    });
    (addr, handle)
}

/// `exchange` on another thread, given `timeout` per hop and 5 s more: an exchange that blocks
/// (its socket left blocking, a wait that never waits) fails the test instead of hanging it.
fn run(
    fd: &std::os::fd::OwnedFd,
    proxy: SocketAddr,
    hops: &[&Upstream],
    user: &'static [u8],
    command: Command,
    target: Target<'static>,
    timeout: Duration,
) -> Result<Granted, Failure> {
    let fd = fd.as_raw_fd();
    let hops: Vec<Upstream> = hops.iter().map(|&h| h.clone()).collect();
    let bound = timeout * (hops.len() as u32 + 1) + Duration::from_secs(5);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let hops: Vec<&Upstream> = hops.iter().collect();
        tx.send(exchange(fd, &proxy, &hops, user, command, &target, timeout))
    });
    match rx.recv_timeout(bound) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the exchange was still running after {bound:?}"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the exchange panicked"),
    }
}

/// One end of a socket pair whose blocking reads give up after 2 s (EAGAIN).
fn pair() -> (UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    (ours, theirs)
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn reads_exactly_the_reply_and_leaves_the_banner() {
    let (ours, mut theirs) = pair();
    theirs.write_all(&[GRANTED, b"220 ready\r\n"].concat()).unwrap();
    let mut p = ReplyProgress::default();
    let g = read_reply(ours.as_raw_fd(), Protocol::Socks4, &mut p, 0).unwrap().unwrap();
    assert_eq!(g.addr(), Some("10.0.0.2:1080".parse().unwrap()));
    let mut rest = [0u8; 11];
    (&ours).read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"220 ready\r\n");

    let (ours, mut theirs) = pair();
    theirs.write_all(b"\x05\x00\x00\x03\x05proxy\x04\x38banner").unwrap();
    let mut p = ReplyProgress::default();
    let g = read_reply(ours.as_raw_fd(), Protocol::Socks5, &mut p, 0).unwrap().unwrap();
    assert_eq!(g.addr(), None, "a name is no socket address");
    let mut rest = [0u8; 6];
    (&ours).read_exact(&mut rest).unwrap();
    assert_eq!(&rest, b"banner");
}

#[test]
fn keeps_partial_bytes_until_the_reply_is_complete() {
    let reply: &[u8] = b"\x05\x00\x00\x04\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x01\xbb";
    let (ours, mut theirs) = pair();
    let mut p = ReplyProgress::default();
    for chunk in reply.chunks(3) {
        assert_eq!(read_reply(ours.as_raw_fd(), Protocol::Socks5, &mut p, libc::MSG_DONTWAIT), Ok(None));
        theirs.write_all(chunk).unwrap();
    }
    let g = read_reply(ours.as_raw_fd(), Protocol::Socks5, &mut p, libc::MSG_DONTWAIT).unwrap();
    assert_eq!(g.and_then(|g| g.addr()), Some("[2001:db8::1]:443".parse().unwrap()));
}

#[test]
fn garbage_refusals_and_early_close_are_errors() {
    let read = |protocol, bytes: &[u8], close: bool| {
        let (ours, mut theirs) = pair();
        theirs.write_all(bytes).unwrap();
        if close {
            drop(theirs);
        }
        read_reply(ours.as_raw_fd(), protocol, &mut ReplyProgress::default(), libc::MSG_DONTWAIT)
    };
    assert_eq!(
        read(Protocol::Socks4, b"HTTP/1.1 400", false),
        Err(ExchangeError::Garbage(v4::ProtocolError::BadReplyVersion(b'H')))
    );
    assert_eq!(read(Protocol::Socks4, &GRANTED[..5], true), Err(ExchangeError::Closed));
    let refused = read(Protocol::Socks4, b"\x00\x5b\0\0\0\0\0\0", false).unwrap_err();
    assert_eq!(
        (refused, refused.errno()),
        (ExchangeError::Refused(Refusal::V4(v4::ReplyCode::Rejected)), libc::ECONNREFUSED)
    );
    assert_eq!(
        read(Protocol::Socks5, b"\x00\x5a", false),
        Err(ExchangeError::Garbage5(v5::ProtocolError::BadVersion(0)))
    );
    for (code, errno) in [
        (1u8, libc::ECONNREFUSED),
        (2, libc::ECONNREFUSED),
        (3, libc::ENETUNREACH),
        (4, libc::EHOSTUNREACH),
        (5, libc::ECONNREFUSED),
        (6, libc::ETIMEDOUT),
        (7, libc::EOPNOTSUPP),
        (8, libc::EAFNOSUPPORT),
    ] {
        let e = read(Protocol::Socks5, &[5, code, 0, 1, 0, 0, 0, 0, 0, 0], false).unwrap_err();
        assert_eq!(e.errno(), errno, "reply code {code}: {e}");
    }
    assert_eq!(read(Protocol::Socks5, b"\x05\x09", false).map_err(ExchangeError::errno), Err(libc::EPROTO));
}

#[test]
fn socks4_exchange_sends_the_request_and_restores_blocking_mode() {
    let (proxy, server) = server(|mut s| {
        let req = read_n(&mut s, 13);
        s.write_all(GRANTED).unwrap();
        req
    });
    let fd = socket();
    let hop = upstream("socks4://127.0.0.1:1", Some(proxy));
    let target = Target::Addr("10.0.0.5:21".parse().unwrap());
    let g = run(&fd, proxy, &[&hop], b"fred", Command::Connect, target, Duration::from_secs(5)).unwrap();
    assert_eq!(g.addr(), Some("10.0.0.2:1080".parse().unwrap()));
    assert_eq!(&server.join().unwrap(), b"\x04\x01\x00\x15\x0a\x00\x00\x05fred\0");
    assert_eq!(sys::get_flags(fd.as_raw_fd()).unwrap() & libc::O_NONBLOCK, 0, "blocking again afterwards");
}

#[test]
fn socks5_connect_with_login_names_and_ipv6() {
    for (target, wire) in [
        (Target::Name("files.internal", 21), b"\x05\x01\x00\x03\x0efiles.internal\x00\x15".to_vec()),
        (Target::Addr("[2001:db8::7]:443".parse().unwrap()), {
            let mut w = b"\x05\x01\x00\x04\x20\x01\x0d\xb8".to_vec();
            w.extend_from_slice(&[0; 11]);
            w.extend_from_slice(b"\x07\x01\xbb");
            w
        }),
        (Target::Addr("[::ffff:10.1.2.3]:80".parse().unwrap()), b"\x05\x01\x00\x01\x0a\x01\x02\x03\x00\x50".to_vec()),
    ] {
        let want = wire.len();
        let (proxy, server) = server(move |mut s| {
            let greeting = read_n(&mut s, 4);
            s.write_all(b"\x05\x02").unwrap();
            let login = read_n(&mut s, 3 + 5 + 6);
            s.write_all(b"\x01\x00").unwrap();
            let request = read_n(&mut s, want);
            s.write_all(b"\x05\x00\x00\x01\x0a\x4d\x02\x01\x9c\x40hello").unwrap();
            (greeting, login, request)
        });
        let mut hop = upstream("socks5h://alice@127.0.0.1:1", Some(proxy));
        hop.url.password = Some(Secret::new("s3cret"));
        let fd = socket();
        let g = run(&fd, proxy, &[&hop], b"", Command::Connect, target, Duration::from_secs(5)).unwrap();
        assert_eq!(g.addr(), Some("10.77.2.1:40000".parse().unwrap()));
        let (greeting, login, request) = server.join().unwrap();
        assert_eq!(greeting, b"\x05\x02\x00\x02", "offers no-auth and username/password");
        assert_eq!(login, b"\x01\x05alice\x06s3cret");
        assert_eq!(request, wire, "{target}");
        let mut banner = [0u8; 5];
        // SAFETY: reading into our own buffer from our own socket.
        let n = unsafe { libc::recv(fd.as_raw_fd(), banner.as_mut_ptr().cast(), 5, libc::MSG_WAITALL) };
        assert_eq!((n, &banner), (5, b"hello"), "the bytes after the reply are the program's");
    }
}

#[test]
fn socks5_login_refused_and_no_acceptable_method_are_eacces() {
    for (selection, after, want) in [
        (&b"\x05\x02"[..], &b"\x01\x01"[..], ExchangeError::AuthFailed),
        (b"\x05\xff", b"", ExchangeError::NoAcceptableMethod),
        (b"\x05\x01", b"", ExchangeError::UnexpectedMethod(1)),
    ] {
        let (proxy, server) = server(move |mut s| {
            read_n(&mut s, 4);
            s.write_all(selection).unwrap();
            if !after.is_empty() {
                read_n(&mut s, 14);
                s.write_all(after).unwrap();
            }
            // Hold the connection until the client is done.
            let _ = s.read(&mut [0u8; 1]);
        });
        let mut hop = upstream("socks5://alice@127.0.0.1:1", Some(proxy));
        hop.url.password = Some(Secret::new("wrong!"));
        let fd = socket();
        let target = Target::Addr("10.0.0.1:80".parse().unwrap());
        let f = run(&fd, proxy, &[&hop], b"", Command::Connect, target, Duration::from_secs(5)).unwrap_err();
        assert_eq!((f.error, f.hop, f.first_hop_down), (want, 0, false));
        drop(fd);
        server.join().unwrap();
    }
}

#[test]
fn silent_server_times_out_and_dead_server_is_down() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = listener.local_addr().unwrap();
    let target = Target::Addr("10.0.0.5:21".parse().unwrap());
    for (url, first_hop_down) in [("socks4://127.0.0.1:1", false), ("socks5://127.0.0.1:1", true)] {
        // SOCKS4 has no answer before the request: a silence after it may be the destination's,
        // so only SOCKS5's unanswered greeting says the server itself is down.
        let hop = upstream(url, Some(proxy));
        let fd = socket();
        let start = Instant::now();
        let f = run(&fd, proxy, &[&hop], b"", Command::Connect, target, Duration::from_millis(200)).unwrap_err();
        assert_eq!((f.error, f.first_hop_down), (ExchangeError::Timeout, first_hop_down), "{url}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }
    drop(listener);
    let hop = upstream("socks5://127.0.0.1:1", Some(proxy));
    let fd = socket();
    let f = run(&fd, proxy, &[&hop], b"", Command::Connect, target, Duration::from_secs(2)).unwrap_err();
    assert_eq!((f.error, f.first_hop_down), (ExchangeError::Unreachable(libc::ECONNREFUSED), true));
}

/// A chain of two hops: the first is asked to CONNECT to the second (by name, since it resolves
/// names), the second gets the real request; every reply is consumed exactly.
#[test]
fn a_chain_asks_each_hop_for_the_next() {
    let (proxy, server) = server(|mut s| {
        // Hop 1, SOCKS5: CONNECT to hop2.example:1081.
        let greeting = read_n(&mut s, 3);
        s.write_all(b"\x05\x00").unwrap();
        let to_hop2 = read_n(&mut s, 5 + 12 + 2);
        s.write_all(b"\x05\x00\x00\x01\x0a\x00\x00\x01\x10\x00").unwrap();
        // Hop 2, SOCKS4 (the same connection, now "relayed"): BIND for 10.0.0.9:21.
        let bind = read_n(&mut s, 9 + 4);
        s.write_all(b"\x00\x5a\x13\x88\x0a\x4d\x03\x01").unwrap();
        (greeting, to_hop2, bind)
    });
    let hop1 = upstream("socks5h://127.0.0.1:1", Some(proxy));
    let hop2 = upstream("socks4://hop2.example:1081", None);
    let fd = socket();
    let target = Target::Addr("10.0.0.9:21".parse().unwrap());
    let g = run(&fd, proxy, &[&hop1, &hop2], b"fred", Command::Bind, target, Duration::from_secs(5)).unwrap();
    assert_eq!(g.addr(), Some("10.77.3.1:5000".parse().unwrap()));
    let (greeting, to_hop2, bind) = server.join().unwrap();
    assert_eq!(greeting, b"\x05\x01\x00");
    assert_eq!(to_hop2, b"\x05\x01\x00\x03\x0chop2.example\x04\x39");
    assert_eq!(bind, b"\x04\x02\x00\x15\x0a\x00\x00\x09fred\0");
}

#[test]
fn socks4_cannot_carry_ipv6() {
    let (proxy, server) = server(|mut s| {
        let _ = s.read(&mut [0u8; 64]);
    });
    let hop = upstream("socks4://127.0.0.1:1", Some(proxy));
    let fd = socket();
    let target = Target::Addr("[2001:db8::1]:80".parse().unwrap());
    let f = run(&fd, proxy, &[&hop], b"", Command::Connect, target, Duration::from_secs(2)).unwrap_err();
    assert_eq!((f.error, f.error.errno()), (ExchangeError::CannotCarry, libc::ENETUNREACH));
    drop(fd);
    server.join().unwrap();
}

/// A SOCKS5 server that dribbles every answer a byte at a time: the blocking exchange waits for
/// each whole message and still reads not one byte past the reply.
#[test]
fn dribbled_socks5_answers_are_read_whole() {
    let (proxy, server) = server(|mut s| {
        let dribble = |s: &mut TcpStream, bytes: &[u8]| {
            for b in bytes {
                s.write_all(&[*b]).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        read_n(&mut s, 3);
        dribble(&mut s, b"\x05\x00");
        read_n(&mut s, 4 + 1 + 11 + 2);
        let mut reply = b"\x05\x00\x00\x03\xff".to_vec();
        reply.extend(std::iter::repeat_n(b'a', 255));
        reply.extend_from_slice(b"\x00\x15");
        dribble(&mut s, &reply[..12]);
        s.write_all(&[&reply[12..], b"220 ok\r\n"].concat()).unwrap();
    });
    let hop = upstream("socks5h://127.0.0.1:1", Some(proxy));
    let fd = socket();
    let target = Target::Name("ftp.example", 21);
    let g = run(&fd, proxy, &[&hop], b"", Command::Connect, target, Duration::from_secs(5)).unwrap();
    assert_eq!((g.ip, g.port), (None, 21), "a 255-byte BND.ADDR name, the longest reply");
    let mut banner = [0u8; 8];
    // SAFETY: reading into our own buffer from our own socket.
    let n = unsafe { libc::recv(fd.as_raw_fd(), banner.as_mut_ptr().cast(), 8, libc::MSG_WAITALL) };
    assert_eq!((n, &banner), (8, b"220 ok\r\n"));
    server.join().unwrap();
}

#[test]
fn targets_and_refusals_display_as_in_log_lines() {
    assert_eq!(Target::Addr("10.0.0.5:21".parse().unwrap()).to_string(), "10.0.0.5:21");
    assert_eq!(Target::Addr("[2001:db8::1]:443".parse().unwrap()).to_string(), "[2001:db8::1]:443");
    assert_eq!(Target::Name("ftp.example", 21).to_string(), "ftp.example:21");
    assert_eq!(Refusal::V4(v4::ReplyCode::Rejected).to_string(), "91 (request rejected or failed)");
    assert_eq!(Refusal::V5(v5::ReplyCode::HostUnreachable).to_string(), "4 (host unreachable)");
}

/// What a hop is asked to connect to for the next: the name when it resolves names (even if this
/// host could resolve it too), else the address the configuration resolved.
#[test]
fn next_hop_is_named_only_to_a_hop_that_resolves_names() {
    let resolved: SocketAddr = "10.0.0.9:1081".parse().unwrap();
    let named = upstream("socks4://hop2.example:1081", Some(resolved));
    let unresolved = upstream("socks4://hop2.example:1081", None);
    let literal = upstream("socks4://10.0.0.8:1081", Some("10.0.0.8:1081".parse().unwrap()));
    let sends_names = upstream("socks5h://127.0.0.1:1", None);
    let resolves_here = upstream("socks5://127.0.0.1:1", None);
    assert_eq!(next_hop(&sends_names, &named), Target::Name("hop2.example", 1081));
    assert_eq!(next_hop(&resolves_here, &named), Target::Addr(resolved));
    assert_eq!(next_hop(&sends_names, &unresolved), Target::Name("hop2.example", 1081));
    assert_eq!(next_hop(&sends_names, &literal), Target::Addr("10.0.0.8:1081".parse().unwrap()));
    assert_eq!(next_hop(&resolves_here, &literal), Target::Addr("10.0.0.8:1081".parse().unwrap()));
}

/// SOCKS5 names are 1 to 255 bytes: anything else is refused before a request is sent.
#[test]
fn socks5_cannot_carry_an_empty_or_overlong_name() {
    static LONG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| "a".repeat(256));
    for name in ["", LONG.as_str()] {
        let (proxy, server) = server(|mut s| {
            read_n(&mut s, 3);
            s.write_all(b"\x05\x00").unwrap();
            // Whatever comes after the greeting, until the client closes.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            rest
        });
        let hop = upstream("socks5h://127.0.0.1:1", Some(proxy));
        let fd = socket();
        let f = run(&fd, proxy, &[&hop], b"", Command::Connect, Target::Name(name, 80), Duration::from_millis(500))
            .unwrap_err();
        assert_eq!((f.error, f.hop, f.first_hop_down), (ExchangeError::CannotCarry, 0, false), "{} bytes", name.len());
        drop(fd);
        assert_eq!(server.join().unwrap(), b"", "no request for a {}-byte name", name.len());
    }
}

/// A later hop of a chain that does not answer is not the first hop being down: the first hop
/// answered, and another upstream must not be tried.
#[test]
fn a_silent_later_hop_is_a_timeout_at_that_hop() {
    let (proxy, server) = server(|mut s| {
        read_n(&mut s, 3);
        s.write_all(b"\x05\x00").unwrap();
        read_n(&mut s, 5 + 12 + 2);
        s.write_all(b"\x05\x00\x00\x01\x0a\x00\x00\x01\x10\x00").unwrap();
        // Hop 2's greeting gets no answer.
        read_n(&mut s, 3);
        let _ = s.read(&mut [0u8; 1]);
    });
    let hop1 = upstream("socks5h://127.0.0.1:1", Some(proxy));
    let hop2 = upstream("socks5://hop2.example:1081", None);
    let fd = socket();
    let target = Target::Addr("10.0.0.9:21".parse().unwrap());
    let f = run(&fd, proxy, &[&hop1, &hop2], b"", Command::Connect, target, Duration::from_millis(300)).unwrap_err();
    assert_eq!((f.error, f.hop, f.first_hop_down), (ExchangeError::Timeout, 1, false));
    drop(fd);
    server.join().unwrap();
}

/// Each hop of a chain gets the whole timeout from the moment it is reached: two hops that each
/// take two thirds of it make a chain that works.
#[test]
fn every_hop_of_a_chain_gets_the_whole_timeout() {
    let slow = Duration::from_millis(1000);
    let (proxy, server) = server(move |mut s| {
        read_n(&mut s, 3);
        std::thread::sleep(slow);
        s.write_all(b"\x05\x00").unwrap();
        read_n(&mut s, 5 + 12 + 2);
        s.write_all(b"\x05\x00\x00\x01\x0a\x00\x00\x01\x10\x00").unwrap();
        read_n(&mut s, 3);
        std::thread::sleep(slow);
        s.write_all(b"\x05\x00").unwrap();
        let request = read_n(&mut s, 10);
        s.write_all(b"\x05\x00\x00\x01\x0a\x4d\x03\x01\x13\x88").unwrap();
        request
    });
    let hop1 = upstream("socks5h://127.0.0.1:1", Some(proxy));
    let hop2 = upstream("socks5://hop2.example:1081", None);
    let fd = socket();
    let target = Target::Addr("10.0.0.9:21".parse().unwrap());
    let start = Instant::now();
    let g = run(&fd, proxy, &[&hop1, &hop2], b"", Command::Connect, target, Duration::from_millis(1500))
        .unwrap_or_else(|f| panic!("{f:?} after {:?}", start.elapsed()));
    assert_eq!(g.addr(), Some("10.77.3.1:5000".parse().unwrap()));
    assert_eq!(server.join().unwrap(), b"\x05\x01\x00\x01\x0a\x00\x00\x09\x00\x15");
}
