//! libsocks4.so under faults: a C host program (shim_faults_support/faultc.c,
//! plain libc calls) against fake SOCKS servers that go down, stay silent,
//! answer garbage, short or dribbled replies, close or reset mid-reply; under
//! a signal storm, 100 threads at once, fork during activity, and broken
//! configuration. The host never crashes or hangs, gets the errno of the
//! README's table and one stderr line per failure, and never connects to the
//! destination directly (fail closed).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socks4_tests::{RunOutput, Socks4d, TempDir, free_port, run_with_timeout, shim_command};

const FAULTC_SOURCE: &str = include_str!("shim_faults_support/faultc.c");

/// faultc, compiled once per source version into cargo's per-target temp dir.
fn faultc() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let exe = dir.join(format!("faultc-{:016x}", socks4_tests::checksum(FAULTC_SOURCE.as_bytes())));
        if !exe.exists() {
            let src = dir.join(format!("faultc-{}.c", std::process::id()));
            std::fs::write(&src, FAULTC_SOURCE).unwrap();
            let tmp = dir.join(format!("faultc-{}.tmp", std::process::id()));
            let out = std::process::Command::new("gcc")
                .args(["-O1", "-Wall", "-Werror", "-pthread", "-o"])
                .arg(&tmp)
                .arg(&src)
                .output()
                .expect("run gcc");
            let _ = std::fs::remove_file(&src);
            assert!(out.status.success(), "gcc faultc.c:\n{}", String::from_utf8_lossy(&out.stderr));
            // Atomic: a parallel test process never runs a half-written file.
            std::fs::rename(&tmp, &exe).unwrap();
        }
        exe
    })
}

/// Binds `ip:0`, retrying for a while: a benchmark running on the same
/// machine can hold every ephemeral port in TIME_WAIT for a minute.
fn bind_retrying(ip: Ipv4Addr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpListener::bind((ip, 0)) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("bind {ip}:0: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("bind {ip}:0: {e}"),
        }
    }
}

/// What a fake SOCKS server does with each client.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Accept, read the request, never answer.
    Silent,
    /// Accept and close at once, before reading anything.
    CloseAtOnce,
    /// Read the request, then reset the connection (close with unread data).
    Reset,
    /// Read the request, send these bytes, then close.
    ReplyThenClose(&'static [u8]),
    /// Read the request, send these bytes, then hold the connection open.
    ReplyThenHold(&'static [u8]),
    /// Read the request, send these bytes one at a time `delay` apart, then echo.
    Dribble(&'static [u8], Duration),
    /// Read the request, wait `delay`, send these bytes, then echo what comes.
    DelayThenEcho(&'static [u8], Duration),
    /// CONNECT: granted, held open. BIND: first reply granted (port 4000),
    /// then these bytes as the "second reply" after 100 ms, then close.
    Bind(&'static [u8]),
}

const GRANTED: &[u8] = b"\x00\x5a\x00\x00\x00\x00\x00\x00";

/// socks4d for the working cases: its outside address differs from the client's (127.0.0.1), so
/// the destination can tell a proxied connection from a direct one.
const SOCKS4D_CONFIG: &str =
    "external = \"127.0.0.2\"\n\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\nto = [\"127.0.0.0/8\"]\n";
const SOCKS4D_EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A fake SOCKS server on loopback serving any number of clients with one
/// behaviour; records the requests. Threads end when clients go.
struct FakeProxy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeProxy {
    fn start(behaviour: Behaviour) -> FakeProxy {
        let listener = bind_retrying(Ipv4Addr::LOCALHOST);
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (acc, reqs, st) = (accepted.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                let (b, reqs) = (behaviour.clone(), reqs.clone());
                std::thread::spawn(move || serve(s, b, reqs));
            }
        });
        FakeProxy { addr, accepted, requests, stop, thread: Some(thread) }
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one SOCKS4 request (up to its first NUL after the 8 fixed bytes).
fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = s.read(&mut b) {
        req.push(b[0]);
        if req.len() > 8 && b[0] == 0 {
            break;
        }
    }
    req
}

fn serve(mut s: TcpStream, b: Behaviour, reqs: Arc<Mutex<Vec<Vec<u8>>>>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.set_nodelay(true);
    if matches!(b, Behaviour::CloseAtOnce) {
        return;
    }
    if matches!(b, Behaviour::Reset) {
        // Wait for the request but leave it unread: close() then sends RST.
        let mut peek = [0u8; 1];
        let _ = s.peek(&mut peek);
        std::thread::sleep(Duration::from_millis(50));
        return;
    }
    let req = read_request(&mut s);
    reqs.lock().unwrap().push(req);
    let echo = |s: &mut TcpStream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    };
    match b {
        Behaviour::Silent => {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
        Behaviour::ReplyThenClose(r) => {
            let _ = s.write_all(r);
        }
        Behaviour::ReplyThenHold(r) => {
            let _ = s.write_all(r);
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
        Behaviour::Dribble(r, delay) => {
            for &byte in r {
                let _ = s.write_all(&[byte]);
                std::thread::sleep(delay);
            }
            echo(&mut s);
        }
        Behaviour::DelayThenEcho(r, delay) => {
            std::thread::sleep(delay);
            let _ = s.write_all(r);
            echo(&mut s);
        }
        Behaviour::Bind(second) => {
            let is_bind = reqs.lock().unwrap().last().is_some_and(|r| r.get(1) == Some(&2));
            let mut buf = [0u8; 64];
            if !is_bind {
                let _ = s.write_all(GRANTED);
                let _ = s.read(&mut buf);
                return;
            }
            let _ = s.write_all(b"\x00\x5a\x0f\xa0\x7f\x00\x00\x01");
            std::thread::sleep(Duration::from_millis(100));
            let _ = s.write_all(second);
        }
        Behaviour::CloseAtOnce | Behaviour::Reset => unreachable!(),
    }
}

/// A loopback destination that must never be reached directly (or, for
/// the working cases, is reached only through socks4d).
struct Destination {
    addr: SocketAddr,
    /// Each accepted connection's peer address.
    peers: Arc<Mutex<Vec<IpAddr>>>,
    /// How many times the accept loop found the backlog empty.
    drained: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Destination {
    /// An echo server counting its connections.
    fn start() -> Destination {
        let listener = bind_retrying(Ipv4Addr::LOCALHOST);
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let drained = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ps, dr, st) = (peers.clone(), drained.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((mut s, peer)) = listener.accept() else {
                    dr.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                ps.lock().unwrap().push(peer.ip());
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Destination { addr, peers, drained, stop, thread: Some(thread) }
    }

    /// The connections accepted once the accept loop has emptied the backlog (everything that
    /// arrived before this call is counted: a program that just exited may have left its
    /// connections queued, and a loaded machine may not have run the loop yet).
    fn accepted(&self) -> usize {
        let asked = self.drained.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        // Two empty polls after asking: the first may have begun before the call.
        while self.drained.load(Ordering::SeqCst) < asked + 2 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.peers.lock().unwrap().len()
    }

    /// Asserts `n` connections arrived, every one from socks4d's external address (a direct
    /// connection would come from 127.0.0.1).
    fn assert_all_via_socks4d(&self, n: usize) {
        self.accepted();
        let peers = self.peers.lock().unwrap();
        assert!(
            peers.len() == n && peers.iter().all(|p| *p == SOCKS4D_EXTERNAL),
            "want {n} connections from {SOCKS4D_EXTERNAL}, got {peers:?}"
        );
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs faultc under the shim pointed at `proxy`, 30 s at most.
fn run(proxy: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> RunOutput {
    let mut cmd = shim_command(faultc().to_str().unwrap(), proxy);
    cmd.args(args).envs(env.iter().copied()).env("SOCKS4_USER", "fault");
    run_with_timeout(&mut cmd, b"", Duration::from_secs(30))
}

fn kv(out: &RunOutput) -> HashMap<String, String> {
    out.stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The host ran to its end by itself: not killed by a signal, not hung.
fn assert_finished(out: &RunOutput, what: &str) {
    assert!(!out.timed_out(), "{what}: host program HUNG (killed after {:?})\n{out}", out.elapsed);
    assert!(out.success(), "{what}: host program did not exit cleanly\n{out}");
    assert!(out.stdout.contains("done=1"), "{what}: no done line\n{out}");
}

fn get<'a>(map: &'a HashMap<String, String>, key: &str, out: &RunOutput) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or_else(|| panic!("no `{key}=` in the output:\n{out}"))
}

/// Every way a SOCKS server can fail a CONNECT, with the errno the README's
/// table promises, one stderr line, a bounded time, and the destination
/// never contacted.
#[test]
fn fake_proxy_faults_give_the_documented_errno() {
    let dest = Destination::start();
    let port = dest.addr.port().to_string();
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ms = Duration::from_millis;
    // (what, behaviour or None = nothing listening, errno, max time)
    let cases: Vec<(&str, Option<Behaviour>, &str, Duration)> = vec![
        ("proxy down", None, "ECONNREFUSED", ms(3000)),
        ("silent proxy", Some(Behaviour::Silent), "ETIMEDOUT", ms(5000)),
        ("closes at once", Some(Behaviour::CloseAtOnce), "ECONNRESET", ms(3000)),
        ("resets after the request", Some(Behaviour::Reset), "ECONNRESET", ms(3000)),
        ("3 bytes then close", Some(Behaviour::ReplyThenClose(b"\x00\x5a\x00")), "ECONNRESET", ms(3000)),
        ("7 bytes then close", Some(Behaviour::ReplyThenClose(&GRANTED[..7])), "ECONNRESET", ms(3000)),
        ("3 bytes then silence", Some(Behaviour::ReplyThenHold(b"\x00\x5a\x00")), "ETIMEDOUT", ms(5000)),
        ("HTTP answer", Some(Behaviour::ReplyThenHold(b"HTTP/1.1 400 Bad Request\r\n\r\n")), "EPROTO", ms(3000)),
        ("SOCKS5 answer", Some(Behaviour::ReplyThenHold(b"\x05\xff")), "EPROTO", ms(3000)),
        ("reply code 0", Some(Behaviour::ReplyThenHold(b"\x00\x00\x00\x00\x00\x00\x00\x00")), "EPROTO", ms(3000)),
        ("reply code 94", Some(Behaviour::ReplyThenHold(b"\x00\x5e\x00\x00\x00\x00\x00\x00")), "EPROTO", ms(3000)),
        ("91", Some(Behaviour::ReplyThenClose(b"\x00\x5b\x00\x00\x00\x00\x00\x00")), "ECONNREFUSED", ms(3000)),
        ("92", Some(Behaviour::ReplyThenClose(b"\x00\x5c\x00\x00\x00\x00\x00\x00")), "ECONNREFUSED", ms(3000)),
        ("93", Some(Behaviour::ReplyThenClose(b"\x00\x5d\x00\x00\x00\x00\x00\x00")), "ECONNREFUSED", ms(3000)),
    ];
    for (what, behaviour, errno, max) in cases {
        let fake = behaviour.map(FakeProxy::start);
        let proxy = fake.as_ref().map_or(down, |f| f.addr);
        let start = Instant::now();
        let out = run(proxy, &["connect", "127.0.0.1", &port], &[("SOCKS4_TIMEOUT", "1")]);
        let took = start.elapsed();
        assert_finished(&out, what);
        let map = kv(&out);
        assert_eq!(get(&map, "errno", &out), errno, "{what}\n{out}");
        assert!(took < max, "{what}: took {took:?}\n{out}");
        if errno == "ETIMEDOUT" {
            assert!(took >= ms(900), "{what}: ETIMEDOUT after {took:?}, SOCKS4_TIMEOUT is 1 s");
        }
        assert_eq!(out.shim_lines().len(), 1, "{what}: want exactly one stderr line\n{out}");
        if let Some(f) = &fake {
            assert_eq!(f.accepted.load(Ordering::SeqCst), 1, "{what}: the shim must try the proxy once");
        }
    }
    assert_eq!(dest.accepted(), 0, "a failing proxy made the shim connect directly");
}

/// A reply dribbled one byte every 50 ms is still one reply; the
/// connection then works (the shim reads exactly 8 bytes).
#[test]
fn dribbled_reply_is_read_whole() {
    let fake = FakeProxy::start(Behaviour::Dribble(GRANTED, Duration::from_millis(50)));
    let out = run(fake.addr, &["connect", "10.9.9.9", "21"], &[("SOCKS4_TIMEOUT", "5")]);
    assert_finished(&out, "dribble");
    assert_eq!(get(&kv(&out), "echo", &out), "ok", "{out}");
    assert_eq!(out.shim_lines(), Vec::<&str>::new(), "no stderr line for a success");
    assert_eq!(fake.requests.lock().unwrap()[0], b"\x04\x01\x00\x15\x0a\x09\x09\x09fault\0");
}

/// A SIGALRM every millisecond (handler without SA_RESTART) during a
/// 300 ms exchange: connect still returns 0 and the stream is intact.
#[test]
fn signal_storm_during_the_exchange() {
    let fake = FakeProxy::start(Behaviour::DelayThenEcho(GRANTED, Duration::from_millis(300)));
    let out = run(fake.addr, &["signals", "10.1.2.3", "80"], &[("SOCKS4_TIMEOUT", "5")]);
    assert_finished(&out, "signals");
    let map = kv(&out);
    assert_eq!(get(&map, "echo", &out), "ok", "{out}");
    let signals: u32 = get(&map, "signals", &out).parse().unwrap();
    assert!(signals >= 50, "only {signals} signals arrived during the exchange\n{out}");
    assert_eq!(fake.requests.lock().unwrap().len(), 1, "one request, not one per EINTR");
}

/// The same storm while the proxy is silent: the timeout still holds (no
/// restart of the clock on every EINTR, no endless loop).
#[test]
fn signal_storm_does_not_stretch_the_timeout() {
    let fake = FakeProxy::start(Behaviour::Silent);
    let start = Instant::now();
    let out = run(fake.addr, &["signals", "10.1.2.3", "80"], &[("SOCKS4_TIMEOUT", "1")]);
    assert_finished(&out, "signals + silent");
    assert_eq!(get(&kv(&out), "errno", &out), "ETIMEDOUT", "{out}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

/// 100 threads connect at the same instant through a proxy that answers
/// only after 200 ms, so all 100 exchanges are in flight together; then
/// through the real socks4d. Every thread gets its own bytes back.
#[test]
fn hundred_threads_connect_at_once() {
    let fake = FakeProxy::start(Behaviour::DelayThenEcho(GRANTED, Duration::from_millis(200)));
    let out = run(fake.addr, &["threads", "10.0.0.7", "443", "100"], &[]);
    assert_finished(&out, "100 threads, slow fake proxy");
    assert_eq!(get(&kv(&out), "ok", &out), "100", "{out}");
    assert_eq!(fake.accepted.load(Ordering::SeqCst), 100);
    let reqs = fake.requests.lock().unwrap();
    assert!(reqs.iter().all(|r| r == b"\x04\x01\x01\xbb\x0a\x00\x00\x07fault\0"), "{reqs:?}");
    drop(reqs);

    let dest = Destination::start();
    let socks4d = Socks4d::start(SOCKS4D_CONFIG);
    let out = run(socks4d.addr, &["threads", "127.0.0.1", &dest.addr.port().to_string(), "100"], &[]);
    assert_finished(&out, "100 threads, socks4d");
    assert_eq!(get(&kv(&out), "ok", &out), "100", "{out}\nsocks4d:\n{}", socks4d.log());
    dest.assert_all_via_socks4d(100);
}

/// fork() while four threads keep making proxied connections: each child
/// (which inherits whatever locks those threads held) can still connect
/// through the proxy and exits; none hangs.
#[test]
fn fork_during_activity() {
    let dest = Destination::start();
    let socks4d = Socks4d::start(SOCKS4D_CONFIG);
    let out = run(socks4d.addr, &["fork", "127.0.0.1", &dest.addr.port().to_string(), "40"], &[]);
    assert_finished(&out, "fork during activity");
    let map = kv(&out);
    assert_eq!(get(&map, "children_hung", &out), "0", "children deadlocked after fork\n{out}");
    assert_eq!(get(&map, "children_ok", &out), "40", "{out}");
    let hammer: usize = get(&map, "hammer_ok", &out).parse().unwrap();
    assert!(hammer > 0, "the threads made no connection\n{out}");
    // Every connection the destination saw came through socks4d.
    dest.assert_all_via_socks4d(40 + hammer);
}

/// A vfork child (it shares the parent's memory, the shim's registry included) closes the
/// parent's proxied socket before it exits: the parent still sees its destination as the peer
/// (not the proxy), and the socket still carries data.
#[test]
fn vfork_child_closing_a_proxied_socket_leaves_the_parent_its_view() {
    let dest = Destination::start();
    let socks4d = Socks4d::start(SOCKS4D_CONFIG);
    let out = run(socks4d.addr, &["vfork", "127.0.0.1", &dest.addr.port().to_string()], &[]);
    assert_finished(&out, "vfork");
    let map = kv(&out);
    let want = dest.addr.to_string();
    assert_eq!(get(&map, "peer_before", &out), want, "{out}");
    assert_eq!(get(&map, "peer_after", &out), want, "the vfork child's close reached the parent\n{out}");
    assert_eq!(get(&map, "echo", &out), "ok", "{out}");
    dest.assert_all_via_socks4d(1);
}

/// Fail closed: with the proxy down (or refusing), no way of connecting
/// reaches the destination directly: blocking, non-blocking, a second
/// connect on the same socket and on a dup, a fresh socket, and
/// sendto(MSG_FASTOPEN).
#[test]
fn fail_closed_when_the_proxy_is_down_or_refuses() {
    let dest = Destination::start();
    let port = dest.addr.port().to_string();
    let down: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let refusing = FakeProxy::start(Behaviour::ReplyThenClose(b"\x00\x5b\x00\x00\x00\x00\x00\x00"));
    for (what, proxy) in [("down", down), ("refusing", refusing.addr)] {
        let out = run(proxy, &["connect", "127.0.0.1", &port], &[]);
        assert_finished(&out, what);
        assert_eq!(get(&kv(&out), "errno", &out), "ECONNREFUSED", "{what}\n{out}");

        let out = run(proxy, &["nonblock", "127.0.0.1", &port], &[]);
        assert_finished(&out, what);
        let map = kv(&out);
        // Either the failure is immediate, or it shows in SO_ERROR.
        let immediate = map.get("errno").map(String::as_str);
        let so_error = map.get("so_error").map(String::as_str);
        assert!(
            immediate == Some("ECONNREFUSED") || so_error == Some("ECONNREFUSED"),
            "{what}: non-blocking connect\n{out}"
        );

        let out = run(proxy, &["retry", "127.0.0.1", &port], &[]);
        assert_finished(&out, what);
        let map = kv(&out);
        assert_eq!(get(&map, "first", &out), "ECONNREFUSED", "{what}\n{out}");
        for key in ["second", "dup", "fresh"] {
            assert_ne!(get(&map, key, &out), "0", "{what}: {key} connect succeeded\n{out}");
        }

        let out = run(proxy, &["fastopen", "127.0.0.1", &port], &[]);
        assert_finished(&out, what);
        assert_ne!(get(&kv(&out), "sendto", &out), "0", "{what}: sendto(MSG_FASTOPEN) succeeded\n{out}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(dest.accepted(), 0, "the destination was reached directly");
}

/// Broken configuration, from the file or the environment: every proxied
/// connect fails with EACCES, the problem is reported once (then one line
/// per refused connect), and nothing reaches the destination.
#[test]
fn broken_config_fails_closed_with_one_line() {
    let dest = Destination::start();
    let port = dest.addr.port().to_string();
    let dir = TempDir::new("shim-faults-conf");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let bad_utf8 = write("bad_utf8.toml", b"server = \"\xff\"\n");
    let bad_type = write("bad_type.toml", b"timeout = [1, 2]\n");
    let unknown = write("unknown.toml", b"sever = \"127.0.0.1:1080\"\n");
    let deep = write("deep.toml", format!("direct = {}{}\n", "[".repeat(50_000), "]".repeat(50_000)).as_bytes());
    let cut = write("cut.toml", b"timeout = ");
    let missing = dir.join("missing.toml").to_str().unwrap().to_owned();
    let a_dir = dir.path().to_str().unwrap().to_owned();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("invalid UTF-8", vec![("SOCKS4_CONF", &bad_utf8)]),
        ("wrong type", vec![("SOCKS4_CONF", &bad_type)]),
        ("unknown key", vec![("SOCKS4_CONF", &unknown)]),
        ("nesting bomb", vec![("SOCKS4_CONF", &deep)]),
        ("value cut off", vec![("SOCKS4_CONF", &cut)]),
        ("missing file", vec![("SOCKS4_CONF", &missing)]),
        ("a directory", vec![("SOCKS4_CONF", &a_dir)]),
        ("SOCKS4_TIMEOUT=soon", vec![("SOCKS4_TIMEOUT", "soon")]),
        ("SOCKS4_TIMEOUT=-1", vec![("SOCKS4_TIMEOUT", "-1")]),
        ("SOCKS4_TIMEOUT=nan", vec![("SOCKS4_TIMEOUT", "nan")]),
        ("SOCKS4_TIMEOUT=1e999", vec![("SOCKS4_TIMEOUT", "1e999")]),
        ("SOCKS4_SERVER=:::", vec![("SOCKS4_SERVER", ":::")]),
        ("SOCKS4_SERVER port 99999", vec![("SOCKS4_SERVER", "127.0.0.1:99999")]),
    ];
    let proxy: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for (what, env) in cases {
        let out = run(proxy, &["repeat", "127.0.0.1", &port, "10"], &env);
        assert_finished(&out, what);
        let map = kv(&out);
        assert_eq!(get(&map, "fails", &out), "10", "{what}: a connect succeeded with a broken config\n{out}");
        for i in 0..10 {
            assert_eq!(get(&map, &format!("errno{i}"), &out), "EACCES", "{what}\n{out}");
        }
        // The problem once (naming it), then one line per refused connect.
        let lines = out.shim_lines();
        let config_lines: Vec<_> = lines.iter().filter(|l| l.contains(": config ")).collect();
        assert_eq!(config_lines.len(), 1, "{what}: want the problem reported once\n{out}");
        assert_eq!(lines.len(), 11, "{what}: want 1 + one line per connect\n{out}");
    }
    assert_eq!(dest.accepted(), 0, "a broken config let a connection through directly");

    // A broken SOCKS4_DIRECT is reported too, but the direct list then is
    // the default (loopback), and "broken" blocks all but direct: so this
    // loopback destination is reached directly, by design (route.rs).
    let out = run(proxy, &["repeat", "127.0.0.1", &port, "2"], &[("SOCKS4_DIRECT", "300.0.0.0/8")]);
    assert_finished(&out, "broken SOCKS4_DIRECT");
    assert_eq!(get(&kv(&out), "fails", &out), "0", "{out}");
    assert_eq!(out.shim_lines().len(), 1, "{out}");
    assert_eq!(dest.accepted(), 2);
}

/// SOCKS4_CONF pointing at an endless file (/dev/zero): the shim must give
/// up with an error, not grow without bound. Run under RLIMIT_AS 1 GiB so a
/// failure cannot take the machine's memory; a crash (abort on allocation
/// failure) or a hang fails the test.
#[test]
fn endless_config_file_is_refused() {
    let dest = Destination::start();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.arg("--as=1073741824").arg("--").arg("env");
    for (k, v) in socks4_tests::shim_env("127.0.0.1:1".parse().unwrap()) {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg("SOCKS4_CONF=/dev/zero").arg(faultc()).args(["connect", "127.0.0.1", &dest.addr.port().to_string()]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(30));
    assert_finished(&out, "SOCKS4_CONF=/dev/zero");
    assert_eq!(get(&kv(&out), "errno", &out), "EACCES", "{out}");
    assert_eq!(dest.accepted(), 0);
}

/// SOCKS4_CONF naming a FIFO nobody writes to: the configuration is read
/// when the library loads, with a blocking open, so every program started
/// with the shim (even `timeout` or a shell) blocks before main, forever.
#[test]
fn fifo_config_does_not_hang_the_program() {
    let dir = TempDir::new("shim-faults-fifo");
    let fifo = dir.join("socks4.toml");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let dest = Destination::start();
    let mut cmd = shim_command(faultc().to_str().unwrap(), "127.0.0.1:1".parse().unwrap());
    cmd.env("SOCKS4_CONF", &fifo).args(["connect", "127.0.0.1", &dest.addr.port().to_string()]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(5));
    assert_finished(&out, "SOCKS4_CONF=FIFO");
    assert_eq!(get(&kv(&out), "errno", &out), "EACCES", "{out}");
    assert_eq!(dest.accepted(), 0);
}

/// BIND (listen/accept in a process with a proxied connection) whose
/// second reply is refused, cut short, garbage or never comes before the
/// server closes: `accept` fails with the README's errno, the program goes
/// on, and a whole second reply followed by data works.
#[test]
fn bind_second_reply_faults() {
    let cases: Vec<(&str, &'static [u8], &str)> = vec![
        ("second reply 91", b"\x00\x5b\x00\x00\x00\x00\x00\x00", "ECONNABORTED"),
        ("closed before the second reply", b"", "ECONNABORTED"),
        ("3 bytes then close", b"\x00\x5a\x00", "ECONNABORTED"),
        ("garbage second reply", b"HTTP/1.1 400 Bad\r\n", "EPROTO"),
        ("granted, then data", b"\x00\x5a\x30\x39\x0a\x00\x00\x09220 hello", "0"),
    ];
    for (what, second, want) in cases {
        let fake = FakeProxy::start(Behaviour::Bind(second));
        let out = run(fake.addr, &["bind", "10.0.0.9", "21"], &[("SOCKS4_TIMEOUT", "2")]);
        assert_finished(&out, what);
        let map = kv(&out);
        assert_eq!(get(&map, "bound", &out), "127.0.0.1:4000", "{what}: getsockname = the first reply\n{out}");
        assert_eq!(get(&map, "accept", &out), want, "{what}\n{out}");
        if want == "0" {
            assert_eq!(get(&map, "data", &out), "220 hello", "{what}\n{out}");
        } else {
            assert_eq!(out.shim_lines().len(), 1, "{what}: want one stderr line\n{out}");
        }
        let reqs = fake.requests.lock().unwrap();
        assert_eq!(reqs.len(), 2, "{what}: CONNECT then BIND\n{out}");
        assert_eq!(reqs[1], b"\x04\x02\x00\x15\x0a\x00\x00\x09fault\0", "{what}: the BIND request");
    }
}

/// The connection a BIND socket's accept returns carries the descriptor flags a kernel's accept
/// would give it: FD_CLOEXEC only when asked for (accept4 SOCK_CLOEXEC), O_NONBLOCK only when
/// asked for (SOCK_NONBLOCK), even from a non-blocking listener, whose descriptor the shim's
/// accepted one shares its file status flags with.
#[test]
fn bind_accept_gives_the_flags_asked_for() {
    let cases = [
        ("accept", "1", "0", "0"),
        ("accept4(SOCK_CLOEXEC) on a non-blocking listener", "2", "1", "0"),
        ("accept4(SOCK_NONBLOCK)", "3", "0", "1"),
    ];
    for (what, how, cloexec, nonblock) in cases {
        let fake = FakeProxy::start(Behaviour::Bind(b"\x00\x5a\x30\x39\x0a\x00\x00\x09220 hello"));
        let out = run(fake.addr, &["bind", "10.0.0.9", "21", how], &[("SOCKS4_TIMEOUT", "2")]);
        assert_finished(&out, what);
        let map = kv(&out);
        assert_eq!(get(&map, "accept", &out), "0", "{what}\n{out}");
        assert_eq!(get(&map, "cloexec", &out), cloexec, "{what}: FD_CLOEXEC\n{out}");
        assert_eq!(get(&map, "nonblock", &out), nonblock, "{what}: O_NONBLOCK\n{out}");
        assert_eq!(get(&map, "data", &out), "220 hello", "{what}\n{out}");
    }
}
