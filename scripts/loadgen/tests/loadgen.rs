//! The load generator against real peers: a recording SOCKS4 relay written
//! here on the shared codec (so the test sees every request and every byte),
//! microsocks for SOCKS5, and the process tree of a real child for `rss`.

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socks4_loadgen::proxy::{ConnectError, Proxy};
use socks4_loadgen::{handshake, hold, rss, throughput, udp};
use socks4_proto::v4::{Destination, Reply, ReplyCode, Request};

/// What the recording relay saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Request>>,
    clients: Mutex<std::collections::BTreeSet<std::net::IpAddr>>,
    bytes_up: AtomicU64,
    closed: AtomicU64,
}

/// A SOCKS4 CONNECT relay on 127.0.0.1:0 that answers `code`, records each
/// request, and counts the bytes it relays client to destination.
fn recording_relay(code: ReplyCode) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let s = s.clone();
            thread::spawn(move || serve(client, code, &s));
        }
    });
    (addr, seen)
}

fn serve(mut client: TcpStream, code: ReplyCode, seen: &Seen) {
    seen.clients.lock().unwrap().insert(client.peer_addr().unwrap().ip());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    let request = loop {
        match Request::decode(&buf) {
            Ok(Some((req, _))) => break req,
            Ok(None) => {}
            // Not SOCKS4 (the SOCKS5 test): close, as a SOCKS4 server would.
            Err(_) => return,
        }
        let n = client.read(&mut chunk).unwrap();
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Destination::Ip(ip) = request.destination else { panic!("loadgen sent a SOCKS4A name") };
    let dest = SocketAddrV4::new(ip, request.port);
    seen.requests.lock().unwrap().push(request);
    if code != ReplyCode::Granted {
        let _ = client.write_all(&Reply::code_only(code).to_bytes());
        return;
    }
    let mut upstream = TcpStream::connect(dest).unwrap();
    client.write_all(&Reply::new(ReplyCode::Granted, dest).to_bytes()).unwrap();
    let mut down_from = upstream.try_clone().unwrap();
    let mut down_to = client.try_clone().unwrap();
    thread::spawn(move || {
        let _ = std::io::copy(&mut down_from, &mut down_to);
        let _ = down_to.shutdown(std::net::Shutdown::Write);
    });
    let mut big = vec![0u8; 64 * 1024];
    loop {
        match client.read(&mut big) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                if upstream.write_all(&big[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    seen.closed.fetch_add(1, Ordering::Relaxed);
}

fn socks4(addr: SocketAddr) -> Proxy {
    Proxy::Socks4(addr)
}

#[test]
fn handshake_sends_one_socks4_connect_per_iteration() {
    let (addr, seen) = recording_relay(ReplyCode::Granted);
    let h = handshake::run(socks4(addr), 300, 20, 8, Duration::from_secs(30)).unwrap();
    assert_eq!(h.count, 300);
    assert!(h.per_second() > 0.0 && h.latency.p50_us > 0.0 && h.latency.p99_us >= h.latency.p50_us);
    let requests = seen.requests.lock().unwrap();
    assert_eq!(requests.len(), 320, "warm-up plus measured handshakes, each one CONNECT");
    let first = &requests[0];
    assert_eq!(first.user_id, b"bench");
    assert_eq!(first.destination, Destination::Ip([127, 0, 0, 1].into()));
    assert!(requests.iter().all(|r| r.port == first.port), "one destination listener per run");
    let clients: Vec<String> = seen.clients.lock().unwrap().iter().map(|ip| ip.to_string()).collect();
    let want: Vec<String> = (2..10).map(|d| format!("127.0.0.{d}")).collect();
    assert_eq!(clients, want, "8 rotating source addresses");
}

#[test]
fn refusal_fails_the_handshake_run() {
    let (addr, _) = recording_relay(ReplyCode::Rejected);
    match handshake::run(socks4(addr), 10, 0, 1, Duration::from_secs(10)) {
        Err(ConnectError::Socks4Refused(ReplyCode::Rejected)) => {}
        other => panic!("expected a 91 refusal, got {other:?}"),
    }
}

#[test]
fn throughput_counts_what_crossed_the_relay() {
    let (addr, seen) = recording_relay(ReplyCode::Granted);
    let t = throughput::run(socks4(addr), 2, Duration::from_millis(300)).unwrap();
    assert_eq!(t.streams, 2);
    assert!(t.bytes > 1_000_000, "{t:?}");
    // The sink counted exactly what the relay forwarded (each stream ends
    // only after the relay passed on its EOF).
    assert_eq!(t.bytes, seen.bytes_up.load(Ordering::Relaxed));
    assert!(t.elapsed >= Duration::from_millis(300) && t.gbit_per_s() > 0.0);
}

#[test]
fn direct_throughput_needs_no_proxy() {
    let t = throughput::run(Proxy::Direct, 1, Duration::from_millis(200)).unwrap();
    assert!(t.bytes > 1_000_000, "{t:?}");
}

#[test]
fn hold_keeps_every_relay_open_until_closed() {
    let (addr, seen) = recording_relay(ReplyCode::Granted);
    let held = hold::open(socks4(addr), 200, 8, Duration::from_secs(30)).unwrap();
    assert_eq!((held.relayed(), held.failed), (200, 0));
    assert_eq!(seen.requests.lock().unwrap().len(), 200);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(seen.closed.load(Ordering::Relaxed), 0, "a relay ended while held");
    held.close();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.closed.load(Ordering::Relaxed) < 200 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen.closed.load(Ordering::Relaxed), 200, "every client side saw its close");
}

#[test]
fn hold_counts_refusals_instead_of_failing() {
    let (addr, _) = recording_relay(ReplyCode::Rejected);
    let held = hold::open(socks4(addr), 20, 4, Duration::from_secs(10)).unwrap();
    assert_eq!((held.relayed(), held.failed), (0, 20));
    assert!(held.first_error.unwrap().contains("91"));
}

/// microsocks on a free loopback port, stopped (by PID) on drop.
struct Microsocks {
    child: Child,
    addr: SocketAddr,
}

impl Microsocks {
    fn start() -> Microsocks {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("microsocks")
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("microsocks is installed by scripts/test");
            let mut m = Microsocks { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect(m.addr).is_ok() {
                    return m;
                }
                if m.child.try_wait().unwrap().is_some() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        panic!("microsocks did not start");
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn socks5_mode_works_through_microsocks() {
    let m = Microsocks::start();
    let proxy = Proxy::Socks5(m.addr);
    let h = handshake::run(proxy, 100, 5, 4, Duration::from_secs(30)).unwrap();
    assert_eq!(h.count, 100);
    let held = hold::open(proxy, 50, 4, Duration::from_secs(30)).unwrap();
    assert_eq!((held.relayed(), held.failed), (50, 0));
    held.close();
    let t = throughput::run(proxy, 1, Duration::from_millis(200)).unwrap();
    assert!(t.bytes > 100_000, "{t:?}");
    // microsocks holds one thread per relay: its tree is one process.
    let mem = rss::measure(&[m.child.id()]);
    assert_eq!(mem.processes, 1);
    assert!(mem.rss_kib > 0);
}

#[test]
fn socks5_mode_reports_a_socks4_server_as_not_socks5() {
    // A SOCKS4 server reading a SOCKS5 greeting sees version 5 and closes.
    let (addr, _) = recording_relay(ReplyCode::Granted);
    let err = Proxy::Socks5(addr).connect("127.0.0.1:9".parse().unwrap(), Duration::from_secs(5));
    assert!(err.is_err());
}

#[test]
fn rss_sums_a_process_tree() {
    // sh with two sleeping children: three processes, all ours, killed on drop.
    struct Tree(Child);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let tree =
        Tree(Command::new("sh").args(["-c", "sleep 30 & sleep 30 & wait"]).stdin(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut mem = rss::measure(&[tree.0.id()]);
    while mem.processes < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        mem = rss::measure(&[tree.0.id()]);
    }
    assert_eq!(mem.processes, 3, "{mem:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", tree.0.id())).unwrap();
    let shell_alone = rss::kib_field(&status, "VmRSS").unwrap();
    assert!(mem.rss_kib > shell_alone, "children not counted: {mem:?}");
    assert!(mem.pss_kib > 0 && mem.pss_kib <= mem.rss_kib, "{mem:?}");
    // Killing the shell would leave its sleeps behind: stop them by PID.
    for pid in rss::tree(&[tree.0.id()]) {
        if pid != tree.0.id() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// A SOCKS5 UDP relay written here (no authentication, one association per
/// control connection, IPv4 headers only) that counts the datagrams it
/// carried each way.
fn recording_udp_relay() -> (SocketAddr, Arc<[AtomicU64; 2]>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let c = counts.clone();
    thread::spawn(move || {
        let (mut control, _) = listener.accept().unwrap();
        let mut greeting = [0u8; 3];
        control.read_exact(&mut greeting).unwrap();
        control.write_all(&[5, 0]).unwrap();
        let mut request = [0u8; 10];
        control.read_exact(&mut request).unwrap();
        assert_eq!(request[..4], [5, 3, 0, 1], "UDP ASSOCIATE with an IPv4 address");
        let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        relay.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let SocketAddr::V4(at) = relay.local_addr().unwrap() else { unreachable!() };
        let mut reply = vec![5, 0, 0, 1];
        reply.extend_from_slice(&at.ip().octets());
        reply.extend_from_slice(&at.port().to_be_bytes());
        control.write_all(&reply).unwrap();
        let mut client = None;
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = relay.recv_from(&mut buf) {
            if Some(from) == client || client.is_none() && buf[..3] == [0, 0, 0] {
                client = Some(from);
                let dest = SocketAddr::from(([buf[4], buf[5], buf[6], buf[7]], u16::from_be_bytes([buf[8], buf[9]])));
                relay.send_to(&buf[10..n], dest).unwrap();
                c[0].fetch_add(1, Ordering::SeqCst);
            } else if let Some(to) = client {
                let SocketAddr::V4(f) = from else { continue };
                let mut out = vec![0, 0, 0, 1];
                out.extend_from_slice(&f.ip().octets());
                out.extend_from_slice(&f.port().to_be_bytes());
                out.extend_from_slice(&buf[..n]);
                relay.send_to(&out, to).unwrap();
                c[1].fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (addr, counts)
}

#[test]
fn udp_mode_counts_the_answers_through_an_association() {
    let (addr, counts) = recording_udp_relay();
    let u = udp::run(Proxy::Socks5(addr), 8, 64, Duration::from_millis(300)).unwrap();
    assert!(u.answered > 100, "{u:?}");
    assert!(u.answered <= u.sent);
    // Every answer counted crossed the relay both ways.
    assert!(counts[0].load(Ordering::SeqCst) >= u.answered, "{u:?}");
    assert!(counts[1].load(Ordering::SeqCst) >= u.answered, "{u:?}");
    let direct = udp::run(Proxy::Direct, 8, 64, Duration::from_millis(200)).unwrap();
    assert!(direct.answered > 100, "{direct:?}");
    assert!(udp::run(Proxy::Socks4(addr), 8, 64, Duration::from_millis(100)).is_err(), "SOCKS4 has no UDP");
}
