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

// --- SOCKS5 -------------------------------------------------------------------

/// A users file made by `htpasswd -B` (apache2-utils): fred/s3cret.
fn users_file() -> (std::path::PathBuf, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "socks4-hostile-users-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users");
    let out = std::process::Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&path)
        .args(["fred", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    let key = format!("users_file = \"{}\"", path.display());
    (dir, key)
}

/// Slowloris against SOCKS5: clients stuck in the greeting, in the login
/// and in the request, and one dribbling its login, are all cut at
/// handshake_timeout (which covers the whole exchange), with nothing sent
/// but the method selection.
#[test]
fn socks5_slowloris_in_greeting_and_login() {
    let (users_dir, users_key) = users_file();
    let echo = Echo::start();
    let mut d = Daemon::start(&config(&format!("handshake_timeout = \"1s\"\n{users_key}")));
    let base = d.baseline(&echo, 2048);

    let stages: [(&[u8], &[u8]); 5] = [
        (b"\x05", b""),
        (b"\x05\x02\x00", b""),
        (b"\x05\x01\x02\x01\x04fr", b"\x05\x02"),
        (b"\x05\x01\x02\x01\x04fred\x06s3c", b"\x05\x02"),
        (b"\x05\x01\x00\x05\x01\x00\x03\x0aexa", b"\x05\x00"),
    ];
    let start = Instant::now();
    let mut stalled: Vec<(TcpStream, &[u8])> = (0..100)
        .map(|i| {
            let (partial, answer) = stages[i % stages.len()];
            let mut s = client(d.addr);
            s.write_all(partial).unwrap();
            (s, answer)
        })
        .collect();
    // A login dribbled a byte every 100 ms is still cut at the limit.
    let mut dribbler = client(d.addr);
    dribbler.write_all(b"\x05\x01\x02\x01\xff").unwrap();
    let dribble_start = Instant::now();
    let mut cut_after = None;
    for _ in 0..40 {
        if dribbler.write_all(b"u").is_err() {
            cut_after = Some(dribble_start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_after = cut_after.expect("a client dribbling its login for 4 s was never cut (handshake_timeout 1 s)");
    assert!(cut_after < Duration::from_secs(3), "login dribbler cut only after {cut_after:?}");
    for (i, (s, answer)) in stalled.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let got = read_until_close(s).unwrap_or_else(|b| panic!("stalled SOCKS5 client {i} still open (got {b:?})"));
        assert_eq!(got, *answer, "stalled SOCKS5 client {i}");
    }
    assert!(start.elapsed() >= Duration::from_millis(900), "dropped before handshake_timeout");
    drop(stalled);
    drop(dribbler);
    d.assert_recovered(&base, &echo, "SOCKS5 slowloris x100");
    let _ = std::fs::remove_dir_all(users_dir);
}

/// Asks for a UDP association; returns the control connection and the relay.
fn associate(proxy: SocketAddr) -> Result<(TcpStream, SocketAddr), Vec<u8>> {
    let mut s = client(proxy);
    s.write_all(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00").unwrap();
    let mut reply = [0u8; 12];
    let mut got = 0;
    while got < reply.len() {
        match s.read(&mut reply[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if got < reply.len() || reply[..6] != [5, 0, 5, 0, 0, 1] {
        let rest = read_until_close(&mut s).unwrap_or_else(|b| b);
        return Err([&reply[..got], &rest].concat());
    }
    let relay = SocketAddr::from((
        Ipv4Addr::new(reply[6], reply[7], reply[8], reply[9]),
        u16::from_be_bytes([reply[10], reply[11]]),
    ));
    Ok((s, relay))
}

fn udp_datagram(dest: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = dest else { panic!("IPv4 only") };
    let mut out = vec![0, 0, 0, 1];
    out.extend_from_slice(&v4.ip().octets());
    out.extend_from_slice(&v4.port().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A UDP server on 127.0.0.1 answering each datagram with `answer(datagram)`; stops on drop of
/// the returned socket clone's thread when the test ends (bounded by a read timeout).
fn udp_server(answer: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&answer(&buf[..n]), from);
        }
    });
    addr
}

/// A flood of UDP associations, then more past max_connections: each of
/// the first gets its relay port, the rest "no acceptable method" (or a
/// close); when they go, every descriptor is back.
#[test]
fn socks5_association_flood() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config("max_connections = 300"));
    let base = d.baseline(&echo, 8192);
    let held: Vec<(TcpStream, SocketAddr)> =
        (0..295).map(|i| associate(d.addr).unwrap_or_else(|b| panic!("association {i}: {b:?}"))).collect();
    let fds = d.fds();
    assert!(fds >= base.fds + 2 * 295, "295 associations hold {fds} descriptors (baseline {})", base.fds);
    // A datagram through each: every association gets its buffer and its outgoing socket.
    let udp_echo = udp_server(|d| d.to_vec());
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    for (i, (_, relay)) in held.iter().enumerate() {
        sender.send_to(&udp_datagram(udp_echo, b"ping"), relay).unwrap();
        let (n, from) = sender.recv_from(&mut buf).unwrap_or_else(|e| panic!("association {i}: {e}"));
        assert_eq!((&buf[..n], from), (&udp_datagram(udp_echo, b"ping")[..], *relay));
    }
    let (mut over, mut last_five) = (Vec::new(), Vec::new());
    for i in 0..50 {
        match associate(d.addr) {
            // Held too: a closed one would free its place for the next.
            Ok(held) if i < 5 => last_five.push(held),
            Ok((_, relay)) => panic!("association {i} past max_connections got {relay}"),
            Err(b) => over.push(b),
        }
    }
    assert!(over.iter().all(|b| b.is_empty() || b == b"\x05\xff"), "past the cap: {over:?}");
    assert!(over.iter().any(|b| b == b"\x05\xff"), "no client past the cap got 0xFF: {over:?}");
    drop(held);
    drop(last_five);
    d.assert_recovered(&base, &echo, "300 UDP associations + 45 over the cap");
}

/// Garbage datagrams at the relay port, from the client and from a
/// stranger, and 64 KiB datagrams both ways: nothing crashes, what cannot be
/// relayed is dropped and counted, and the association keeps working.
#[test]
fn socks5_garbage_and_64k_datagrams() {
    let echo = Echo::start();
    let mut d = Daemon::start(&config(""));
    let base = d.baseline(&echo, 4096);
    let udp_echo = udp_server(|d| d.to_vec());
    // Answers anything with the largest IPv4 UDP payload: with a header it no longer fits.
    let big_answer = udp_server(|_| vec![b'z'; 65507]);

    let (control, relay) = associate(d.addr).unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let stranger = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
    // The client's first datagram fixes its port.
    client.send_to(&udp_datagram(udp_echo, b"hello"), relay).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = client.recv_from(&mut buf).expect("first answer");
    assert_eq!(&buf[..n], udp_datagram(udp_echo, b"hello"));

    let mut x: u64 = 0x5eed_0005_0005_0005;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..1500 {
        let len = (rand() % 1500) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        if i % 3 == 0 && len > 4 {
            bytes[..4].copy_from_slice(&[0, 0, (rand() % 2) as u8 * 0x80 + 1, (rand() % 5) as u8]);
        }
        let from = if i % 2 == 0 { &stranger } else { &client };
        let _ = from.send_to(&bytes, relay);
    }
    // 64 KiB: the largest datagram whose answer still fits with its header.
    let payload: Vec<u8> = (0..65507 - 10).map(|i| (i % 251) as u8).collect();
    client.send_to(&udp_datagram(udp_echo, &payload), relay).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let (n, _) = client.recv_from(&mut buf).expect("the 64 KiB answer");
        if n > 1000 {
            break buf[..n].to_vec();
        }
        // Random garbage may have named the echo with a valid header: skip its answers.
        assert!(Instant::now() < deadline, "no 64 KiB answer");
    };
    assert_eq!(answer, udp_datagram(udp_echo, &payload), "64 KiB datagram through the relay, both ways");
    // An answer too big to wrap is dropped; the association goes on.
    client.send_to(&udp_datagram(big_answer, b"give me 64 KiB"), relay).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    client.send_to(&udp_datagram(udp_echo, b"after"), relay).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (n, _) = client.recv_from(&mut buf).expect("the association survived");
        assert!(n < 65000, "an answer too big for its header came through");
        if buf[..n] == udp_datagram(udp_echo, b"after")[..] {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    drop(control);
    // The session's line counts what was dropped: at least the stranger's 750.
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        if let Some(l) = d.log().lines().find(|l| l.contains("command=udp") && l.contains("datagrams_dropped=")) {
            break l.to_string();
        }
        assert!(Instant::now() < deadline, "no udp session line:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let dropped: u64 = line
        .split("datagrams_dropped=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(dropped >= 751, "dropped {dropped}: {line}");
    d.assert_recovered(&base, &echo, "1500 garbage datagrams + 64 KiB datagrams");
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (socks4d, started afterwards,
/// inherits it) and returns it.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the one struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// A crowd of relays that ends gives its heap back (memory.rs): glibc alone would keep most of
/// it (measured: 27 of 41 MiB still resident after 9,900 relays closed). 2,000 relays open at
/// once, then all close: within a few seconds VmRSS must fall to a quarter of what they added.
#[test]
fn memory_of_a_closed_crowd_of_relays_is_given_back() {
    const RELAYS: usize = 2000;
    let nofile = raise_nofile();
    assert!(nofile >= 3 * RELAYS as u64, "RLIMIT_NOFILE hard limit {nofile}: this test needs {}", 3 * RELAYS);
    // The far ends: accepted and held (no thread per connection).
    let sink = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let sink_addr = sink.local_addr().unwrap();
    sink.set_nonblocking(true).unwrap();
    let held = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut far = Vec::with_capacity(RELAYS);
        while far.len() < RELAYS && Instant::now() < deadline {
            match sink.accept() {
                Ok((s, _)) => far.push(s),
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("sink accept: {e}"),
            }
        }
        far
    });
    let echo = Echo::start();
    let mut d = Daemon::start(&config("max_connections = 5000"));
    let base = d.baseline(&echo, 0);
    let clients: Vec<TcpStream> = (0..RELAYS)
        .map(|i| {
            let mut s = client(d.addr);
            s.write_all(&connect_request(sink_addr, b"crowd")).unwrap();
            assert_eq!(read_reply(&mut s)[..2], GRANTED, "relay {i}");
            s
        })
        .collect();
    let far = held.join().unwrap();
    assert_eq!(far.len(), RELAYS, "the far ends accepted");
    let peak = d.rss_kib();
    let added = peak.saturating_sub(base.rss_kib);
    assert!(added >= 2048, "{RELAYS} relays added only {added} KiB: nothing here to give back");
    drop(clients);
    drop(far);
    d.wait_fds_at_most(base.fds + 2, Duration::from_secs(10));
    let limit = base.rss_kib + added / 4;
    let after = d.wait_rss_at_most(limit, Duration::from_secs(5));
    eprintln!("crowd of {RELAYS}: VmRSS {} KiB idle, {peak} KiB with them, {after} KiB after", base.rss_kib);
    assert!(
        after <= limit,
        "VmRSS {after} KiB 5 s after {RELAYS} relays closed: idle {} KiB, peak {peak} KiB",
        base.rss_kib
    );
    d.assert_alive();
}
