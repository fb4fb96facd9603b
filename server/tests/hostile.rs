//! Hostile clients against the real socks4d binary: dribbled, never-finished,
//! oversized and malformed requests, BIND abuse, connection floods,
//! descriptor exhaustion and upstream resets. After each, the server must
//! still answer a normal CONNECT and its descriptor count and RSS (read from
//! /proc) must be back at the baseline.

mod hostile_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostile_support::*;

/// A request sent one byte per segment (TCP_NODELAY, a pause between
/// bytes) is still a request: the server must not assume one read = one
/// request.
#[test]
fn dribbled_request_is_served() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config(""));
    let base = d.baseline(&echo, 2048);

    for request in [connect_request(echo.addr, b"dribbler"), connect_4a_request(b"localhost", echo.addr.port(), b"d")] {
        let mut s = client(d.addr);
        for &b in &request {
            s.write_all(&[b]).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
        let reply = read_reply(&mut s);
        assert_eq!(reply[..2], GRANTED, "dribbled {request:?}: {reply:?}");
        // And the relayed data may be dribbled too.
        for &b in b"abc" {
            s.write_all(&[b]).unwrap();
        }
        let mut back = [0u8; 3];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"abc");
    }
    d.assert_recovered(&base, &echo, "dribble");
}

/// Slowloris: many clients that start a request and never finish it (or
/// finish it at one byte a second) are dropped when handshake_timeout
/// expires, without a reply, and every descriptor is freed.
#[test]
fn never_finished_requests_are_dropped_after_handshake_timeout() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config("handshake_timeout = \"1s\""));
    let base = d.baseline(&echo, 2048);

    let start = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = client(d.addr);
            // Every stage of an unfinished request: version only, fixed
            // part, user id without its NUL, 4A name without its NUL.
            let partial: &[u8] = match i % 4 {
                0 => b"\x04",
                1 => b"\x04\x01\x00\x50\x7f\x00\x00",
                2 => b"\x04\x01\x00\x50\x7f\x00\x00\x01user",
                _ => b"\x04\x01\x00\x50\x00\x00\x00\x01user\0local",
            };
            s.write_all(partial).unwrap();
            s
        })
        .collect();
    // A dribbler that keeps the connection busy must still be cut: the limit
    // is on the whole request, not on idleness.
    let mut dribbler = client(d.addr);
    dribbler.write_all(b"\x04\x01\x00\x50\x7f\x00\x00\x01").unwrap();
    let dribble_start = Instant::now();
    let mut cut_after = None;
    for _ in 0..40 {
        if dribbler.write_all(b"u").is_err() {
            cut_after = Some(dribble_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_after = cut_after.expect("a client dribbling its user id for 4 s was never cut (handshake_timeout 1 s)");
    assert!(cut_after < Duration::from_secs(3), "dribbler cut only after {cut_after:?}");

    for (i, s) in stalled.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let got = read_until_close(s).unwrap_or_else(|b| panic!("stalled client {i} still open after 5 s (got {b:?})"));
        assert_eq!(got, b"", "stalled client {i} got bytes");
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(900), "dropped before handshake_timeout: {elapsed:?}");
    drop(stalled);
    drop(dribbler);
    d.assert_recovered(&base, &echo, "slowloris x100");
}

/// Sends `request` from a writer thread while this thread reads the reply,
/// so a server that answers early (at the cap) is seen even though the
/// writer still has megabytes to push.
fn send_huge(proxy: SocketAddr, request: Vec<u8>) -> Result<Vec<u8>, Vec<u8>> {
    let mut s = client(proxy);
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = std::thread::spawn(move || {
        // Refused at the cap: the server stops reading, so this fails.
        let _ = w.write_all(&request);
    });
    let got = read_until_close(&mut s);
    drop(s);
    writer.join().unwrap();
    got
}

/// User ids and SOCKS4A names of megabytes are refused with 91 as soon as
/// the cap (255) is passed, and the server's memory does not grow with them.
#[test]
fn megabyte_user_ids_and_names_are_refused_at_the_cap() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config(""));
    let base = d.baseline(&echo, 3072);
    const MIB4: usize = 4 << 20;

    // At the cap is fine (control: the cap is 255, not less).
    let mut s = client(d.addr);
    s.write_all(&connect_request(echo.addr, &[b'u'; 255])).unwrap();
    assert_eq!(read_reply(&mut s)[..2], GRANTED, "a 255-byte user id is within the cap");
    drop(s);

    for round in 0..4 {
        let mut user = connect_request(echo.addr, b"");
        user.pop(); // no NUL
        user.resize(user.len() + MIB4, b'u');
        let mut name = connect_4a_request(b"", echo.addr.port(), b"fred");
        name.pop();
        name.resize(name.len() + MIB4, b'h');
        for (what, request) in [("user id", user), ("4A name", name)] {
            let got = send_huge(d.addr, request).unwrap_or_else(|b| panic!("4 MiB {what}: not closed (got {b:?})"));
            assert_eq!(got, REJECTED, "round {round}: 4 MiB {what}");
        }
        d.assert_alive();
    }
    // A name of 256 bytes with its NUL is over the cap too.
    let mut s = client(d.addr);
    s.write_all(&connect_4a_request(&[b'h'; 256], 80, b"")).unwrap();
    assert_eq!(read_until_close(&mut s).unwrap(), REJECTED);
    drop(s);
    d.assert_recovered(&base, &echo, "8 x 4 MiB user ids / names");
}

/// What the server must answer to `bytes` followed by EOF: nothing (not a
/// SOCKS client, or the request never ended) or exactly 91 (a SOCKS4
/// request that is malformed); for SOCKS5, the method selection and the
/// reply code the codec implies (no users here, so only "no
/// authentication" is acceptable). `None` for a valid request.
fn expected_answer(bytes: &[u8]) -> Option<Vec<u8>> {
    use socks4_proto::v4::{ProtocolError, Request};
    if bytes.first() == Some(&5) {
        return expected_v5_answer(bytes);
    }
    match Request::decode(bytes) {
        Err(ProtocolError::BadVersion(_)) => Some(Vec::new()),
        Err(_) => Some(REJECTED.to_vec()),
        Ok(None) => Some(Vec::new()),
        Ok(Some(_)) => None,
    }
}

fn expected_v5_answer(bytes: &[u8]) -> Option<Vec<u8>> {
    use socks4_proto::v5::{Greeting, Method, ProtocolError, Request};
    let (greeting, used) = match Greeting::decode(bytes) {
        Ok(Some(g)) => g,
        _ => return Some(Vec::new()),
    };
    if !greeting.offers(Method::NoAuth) {
        return Some(vec![5, 0xff]);
    }
    let code = match Request::decode(&bytes[used..]) {
        Ok(Some(_)) => return None,
        Ok(None) | Err(ProtocolError::BadVersion(_)) => return Some(vec![5, 0]),
        Err(ProtocolError::BadCommand(_)) => 7,
        Err(ProtocolError::BadAddressType(_)) => 8,
        Err(_) => 1,
    };
    Some(vec![5, 0, 5, code, 0, 1, 0, 0, 0, 0, 0, 0])
}

fn answer_to(proxy: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = client(proxy);
    // The server may close before reading everything (bad version).
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    read_until_close(&mut s).unwrap_or_else(|b| panic!("{bytes:?}: server did not close (got {b:?})"))
}

/// Malformed requests get exactly the answer the spec calls for: 91 for a
/// SOCKS4 request it cannot serve (unknown command, bad 4A name, NUL-less
/// user id past the cap), a plain close for a peer that is not SOCKS4 at all.
#[test]
fn garbage_gets_91_or_a_close() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config(""));
    let base = d.baseline(&echo, 2048);

    let mut nul_less = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
    nul_less.extend((0..2000u32).map(|i| (i % 255 + 1) as u8));
    let cases: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("NUL-less user id", nul_less, &REJECTED),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), b""),
        ("SOCKS5 greeting alone", b"\x05\x01\x00".to_vec(), b"\x05\x00"),
        ("SOCKS5 password only", b"\x05\x01\x02".to_vec(), b"\x05\xff"),
        ("SOCKS5 no methods", b"\x05\x00".to_vec(), b"\x05\xff"),
        ("SOCKS5 half a greeting", b"\x05\x03\x00".to_vec(), b""),
        ("SOCKS5 command 9", b"\x05\x01\x00\x05\x09\x00\x01".to_vec(), b"\x05\x00\x05\x07\x00\x01\0\0\0\0\0\0"),
        ("SOCKS5 address type 2", b"\x05\x01\x00\x05\x01\x00\x02".to_vec(), b"\x05\x00\x05\x08\x00\x01\0\0\0\0\0\0"),
        ("SOCKS5 bad name", b"\x05\x01\x00\x05\x01\x00\x03\x03a/b".to_vec(), b"\x05\x00\x05\x01\x00\x01\0\0\0\0\0\0"),
        ("SOCKS4 request after a SOCKS5 greeting", b"\x05\x01\x00\x04\x01\x00\x50".to_vec(), b"\x05\x00"),
        ("version 0", b"\x00\x01\x00\x50\x7f\x00\x00\x01\0".to_vec(), b""),
        ("unknown command 3", b"\x04\x03\x00\x50\x7f\x00\x00\x01\0".to_vec(), &REJECTED),
        ("command 0", b"\x04\x00".to_vec(), &REJECTED),
        ("command 255", b"\x04\xff\x00\x50".to_vec(), &REJECTED),
        ("empty 4A name", b"\x04\x01\x00\x50\x00\x00\x00\x07\0\0".to_vec(), &REJECTED),
        ("4A name with a space", b"\x04\x01\x00\x50\x00\x00\x00\x07\0a b\0".to_vec(), &REJECTED),
        ("4A name with a slash", b"\x04\x01\x00\x50\x00\x00\x00\x07\0../etc\0".to_vec(), &REJECTED),
        ("4A name with high bytes", b"\x04\x01\x00\x50\x00\x00\x00\x07\0\xc3\xa9\0".to_vec(), &REJECTED),
        ("truncated request then EOF", b"\x04\x01\x00".to_vec(), b""),
        ("empty connection", Vec::new(), b""),
    ];
    for (what, bytes, want) in &cases {
        assert_eq!(expected_answer(bytes).as_deref(), Some(*want), "test table vs codec: {what}");
        assert_eq!(answer_to(d.addr, bytes), *want, "{what}");
    }

    // Random garbage from a fixed seed, biased towards SOCKS4-looking bytes
    // so that every decoder path is reached.
    let mut x: u64 = 0x5eed_1234_abcd_0001;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut checked = 0;
    for i in 0..300 {
        let len = (rand() % 600) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        if i % 2 == 0 && len >= 2 {
            bytes[0] = 4;
            bytes[1] = (rand() % 3) as u8;
        } else if i % 4 == 1 && len >= 6 {
            // A SOCKS5 greeting offering "no authentication", then garbage.
            let n = (rand() % 3) as u8 + 1;
            bytes[..2].copy_from_slice(&[5, n]);
            bytes[2..2 + usize::from(n)].fill(0);
            if let Some(b) = bytes.get_mut(2 + usize::from(n)) {
                *b = 5;
            }
        }
        if i % 4 == 0 && len >= 8 {
            bytes[4..7].fill(0); // SOCKS4A marker (or 0.0.0.0)
        }
        let Some(want) = expected_answer(&bytes) else { continue };
        assert_eq!(answer_to(d.addr, &bytes), want, "garbage #{i}: {bytes:?}");
        checked += 1;
    }
    assert!(checked > 200, "only {checked} garbage cases were garbage");
    eprintln!("garbage: {} fixed cases, {checked} random cases", cases.len());
    d.assert_recovered(&base, &echo, "garbage");
}

/// BIND whose peer never comes: the second reply is 91 after
/// connect_timeout, and the listener is gone (its port refuses).
#[test]
fn bind_without_peer_times_out_and_frees_the_port() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config("connect_timeout = \"1s\""));
    let base = d.baseline(&echo, 2048);

    let mut s = client(d.addr);
    s.write_all(&bind_request(Ipv4Addr::LOCALHOST, 21)).unwrap();
    let first = read_reply(&mut s);
    assert_eq!(first[..2], GRANTED, "first BIND reply {first:?}");
    let listen_addr = bind_reply_addr(first);
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let rest = read_until_close(&mut s).expect("BIND with no peer still open after 6 s (connect_timeout 1 s)");
    let waited = start.elapsed();
    assert_eq!(rest, REJECTED, "second reply after the time limit");
    assert!(waited >= Duration::from_millis(800), "gave up after {waited:?}, limit is 1 s");
    assert_refused(listen_addr);
    drop(s);
    d.assert_recovered(&base, &echo, "BIND timeout");
}

fn assert_refused(addr: SocketAddr) {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
        other => panic!("BIND port {addr} should refuse connections now: {other:?}"),
    }
}

/// A client that sends BIND and disconnects before the peer comes: the
/// listener must be closed at once (not after connect_timeout), every time.
#[test]
fn bind_then_disconnect_frees_the_listener() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config("connect_timeout = \"60s\""));
    let base = d.baseline(&echo, 2048);

    for round in 0..30 {
        let mut s = client(d.addr);
        s.write_all(&bind_request(Ipv4Addr::LOCALHOST, 21)).unwrap();
        let first = read_reply(&mut s);
        assert_eq!(first[..2], GRANTED);
        let listen_addr = bind_reply_addr(first);
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match TcpStream::connect_timeout(&listen_addr, Duration::from_secs(1)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                other => {
                    assert!(Instant::now() < deadline, "round {round}: {listen_addr} still listening: {other:?}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    d.assert_recovered(&base, &echo, "BIND + disconnect x30");
}

/// Past max_connections every extra client gets a clean 91 (or, beyond the
/// server's bounded refusal queue, a plain close), and the server serves
/// again as soon as sessions end.
#[test]
fn flood_past_max_connections_gets_clean_91s() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config("max_connections = 8\nhandshake_timeout = \"30s\""));
    let base = d.baseline(&echo, 4096);

    let holders: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = client(d.addr);
            s.write_all(b"\x04\x01").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // One at a time: each gets exactly 91.
    for i in 0..50 {
        let mut s = client(d.addr);
        s.write_all(&connect_request(echo.addr, b"over")).unwrap();
        let got = read_until_close(&mut s).unwrap_or_else(|b| panic!("extra client {i} not closed: {b:?}"));
        assert_eq!(got, REJECTED, "extra client {i}");
    }
    // A burst of 1000 at once: 91 or a close, never anything else, never a hang.
    let burst: Vec<TcpStream> = (0..1000).filter_map(|_| TcpStream::connect(d.addr).ok()).collect();
    let (mut refused, mut closed) = (0, 0);
    for mut s in burst {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match read_until_close(&mut s) {
            Ok(b) if b == REJECTED => refused += 1,
            Ok(b) if b.is_empty() => closed += 1,
            other => panic!("burst client got {other:?}"),
        }
    }
    eprintln!("flood: burst of 1000 past max_connections=8: {refused} got 91, {closed} closed without reply");
    assert!(refused >= 256, "only {refused} of the burst got a 91");
    assert_eq!(echo.accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "an over-cap request was relayed");
    drop(holders);
    // The holders' sessions end when they see EOF; until then the cap is
    // still full, so a prompt CONNECT may rightly get 91. Wait for that.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = client(d.addr);
        s.write_all(&connect_request(echo.addr, b"after")).unwrap();
        if read_reply(&mut s)[..2] == GRANTED {
            break;
        }
        assert!(Instant::now() < deadline, "still refusing 5 s after the sessions ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.assert_recovered(&base, &echo, "flood 1050 past max_connections");
}

/// Descriptor exhaustion: with RLIMIT_NOFILE 64, 150 clients hold the
/// server at its limit (accept fails with EMFILE); once they go, it serves
/// again and is back at its baseline.
#[test]
fn descriptor_exhaustion_recovers() {
    let echo = Echo::start();
    let mut d = Daemon::start_with(&config("handshake_timeout = \"60s\""), Some(64));
    let base = d.baseline(&echo, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    assert!(limits.lines().any(|l| l.starts_with("Max open files") && l.contains(" 64 ")), "{limits}");

    let holders: Vec<TcpStream> = (0..150)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).unwrap();
            let _ = s.write_all(b"\x04");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let at_limit = d.fds();
    assert!(at_limit >= 60, "server holds only {at_limit} descriptors: the limit was not reached");
    // While exhausted: a CONNECT may wait in the backlog or be refused; the
    // server must not die. Give it a short time, then go on.
    let mut probe = client(d.addr);
    probe.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let _ = probe.write_all(&connect_request(echo.addr, b"probe"));
    let mut buf = [0u8; 8];
    let probe_result = probe.read(&mut buf);
    d.assert_alive();
    drop(probe);
    drop(holders);
    eprintln!("fd exhaustion: {at_limit} fds at the limit; probe while exhausted: {probe_result:?} {buf:?}");
    assert!(d.log().contains("accept failed"), "no accept failure logged: the server never hit EMFILE?\n{}", d.log());
    d.assert_recovered(&base, &echo, "fd exhaustion (nofile 64, 150 clients)");
}

/// An upstream that resets the connection in the middle of the relay: the
/// client sees the stream end, and the session's descriptors are freed.
/// Also an upstream that refuses: exactly 91.
#[test]
fn upstream_reset_mid_stream() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config(""));
    let base = d.baseline(&echo, 4096);

    let upstream = bind_retrying(Ipv4Addr::LOCALHOST);
    let up_addr = upstream.local_addr().unwrap();
    const ROUNDS: usize = 20;
    let server = std::thread::spawn(move || {
        for _ in 0..ROUNDS {
            let (mut s, _) = upstream.accept().unwrap();
            s.write_all(&[b'x'; 32 * 1024]).unwrap();
            // Wait until the client's bytes are here, but do not read them:
            // closing with unread data makes the kernel send RST.
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut peek = [0u8; 1];
            let _ = s.peek(&mut peek);
            drop(s);
        }
    });
    for round in 0..ROUNDS {
        let mut s = client(d.addr);
        s.write_all(&connect_request(up_addr, b"victim")).unwrap();
        assert_eq!(read_reply(&mut s)[..2], GRANTED);
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).unwrap();
        s.write_all(b"ping").unwrap();
        match read_until_close(&mut s) {
            Ok(_) => {}
            Err(b) => panic!("round {round}: relay still open 10 s after the upstream reset ({} bytes)", b.len()),
        }
    }
    server.join().unwrap();

    // An upstream port with no listener: exactly 91.
    let closed_port = {
        let l = bind_retrying(Ipv4Addr::LOCALHOST);
        l.local_addr().unwrap()
    };
    let mut s = client(d.addr);
    s.write_all(&connect_request(closed_port, b"")).unwrap();
    assert_eq!(read_until_close(&mut s).unwrap(), REJECTED);
    d.assert_recovered(&base, &echo, "upstream reset x20");
}
