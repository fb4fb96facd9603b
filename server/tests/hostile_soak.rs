//! Soak: thousands of mixed sessions (CONNECT with data, BIND with a peer,
//! refused and malformed requests) against the real socks4d, from several
//! threads at once, bounded in count and time. Afterwards the server's
//! descriptors must be back at the baseline and its RSS must not have grown
//! beyond a small allowance over the warmed-up value.
//!
//! The short version runs in the normal suite; the long one is
//! `cargo test -p socks4-server --release --test hostile_soak -- --ignored`.

mod hostile_support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hostile_support::*;

/// One session of kind `n % 8`; panics with a reason if the server answers
/// anything but the exact expected bytes.
fn session(n: usize, proxy: SocketAddr, echo: SocketAddr, payload: &[u8]) {
    match n % 8 {
        // CONNECT and a payload echoed through the relay (most sessions).
        0..=4 => {
            let mut s = client(proxy);
            let mut req = connect_request(echo, b"soak");
            req.extend_from_slice(&payload[..100]); // pipelined before the reply
            s.write_all(&req).unwrap();
            assert_eq!(read_reply(&mut s)[..2], GRANTED, "session {n}");
            s.write_all(&payload[100..]).unwrap();
            let mut back = vec![0u8; payload.len()];
            s.read_exact(&mut back).unwrap_or_else(|e| panic!("session {n}: echo: {e}"));
            assert!(back == payload, "session {n}: relayed bytes differ");
            s.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(read_until_close(&mut s).expect("closed after EOF"), b"", "session {n}");
        }
        // BIND, the expected host connects back, data both ways.
        5 => {
            let mut s = client(proxy);
            s.write_all(&bind_request(Ipv4Addr::LOCALHOST, 21)).unwrap();
            let first = read_reply(&mut s);
            assert_eq!(first[..2], GRANTED, "session {n}: first BIND reply");
            let mut peer = TcpStream::connect(bind_reply_addr(first)).unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let second = read_reply(&mut s);
            assert_eq!(second[..2], GRANTED, "session {n}: second BIND reply");
            peer.write_all(b"220 hi\r\n").unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"220 hi\r\n");
            s.write_all(b"QUIT\r\n").unwrap();
            let mut buf = [0u8; 6];
            peer.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"QUIT\r\n");
        }
        // Refused by the rules (destination outside 127/8: never contacted).
        6 => {
            let mut s = client(proxy);
            s.write_all(&connect_request("192.0.2.1:80".parse().unwrap(), b"soak")).unwrap();
            assert_eq!(read_until_close(&mut s).expect("closed"), REJECTED, "session {n}");
        }
        // Malformed: unknown command.
        _ => {
            let mut s = client(proxy);
            s.write_all(b"\x04\x07\x00\x50\x7f\x00\x00\x01\0").unwrap();
            assert_eq!(read_until_close(&mut s).expect("closed"), REJECTED, "session {n}");
        }
    }
}

struct Outcome {
    sessions: usize,
    elapsed: Duration,
    base: Baseline,
    warm_rss: u64,
    end_fds: usize,
    end_rss: u64,
}

/// Runs up to `total` sessions from `threads` threads for at most `limit`.
fn soak(total: usize, threads: usize, limit: Duration) -> Outcome {
    let echo = Echo::start();
    let mut d = Daemon::start(&config("max_connections = 1000"));
    let base = d.baseline(&echo, 0);
    let payload: Arc<Vec<u8>> = Arc::new((0..16 * 1024).map(|i| (i * 7 % 251) as u8).collect());

    let run = |count: usize, deadline: Instant| {
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (next, failed, payload) = (next.clone(), failed.clone(), payload.clone());
                let (proxy, echo) = (d.addr, echo.addr);
                std::thread::spawn(move || {
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= count || Instant::now() >= deadline || failed.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = std::panic::catch_unwind(|| session(n, proxy, echo, &payload));
                        if let Err(e) = r {
                            failed.store(true, Ordering::SeqCst);
                            std::panic::resume_unwind(e);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a soak session failed");
        }
        next.load(Ordering::SeqCst).min(count)
    };

    let start = Instant::now();
    let deadline = start + limit;
    // Warm-up: a tenth of the sessions, so that allocator arenas and the
    // runtime's worker threads have reached their steady size.
    let warm = run(total / 10, deadline);
    std::thread::sleep(Duration::from_millis(300));
    let warm_rss = d.rss_kib();
    let done = warm + run(total - total / 10, deadline);
    let elapsed = start.elapsed();
    d.assert_alive();
    assert_normal_connect(d.addr, echo.addr);
    let end_fds = d.wait_fds_at_most(base.fds + 2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let end_rss = d.rss_kib();
    Outcome { sessions: done, elapsed, base, warm_rss, end_fds, end_rss }
}

fn check(o: &Outcome, what: &str, rss_growth_kib: u64) {
    eprintln!(
        "{what}: {} sessions in {:.1?} ({:.0}/s); fds {} -> {}; VmRSS {} KiB baseline, {} KiB warm, {} KiB end",
        o.sessions,
        o.elapsed,
        o.sessions as f64 / o.elapsed.as_secs_f64(),
        o.base.fds,
        o.end_fds,
        o.base.rss_kib,
        o.warm_rss,
        o.end_rss
    );
    assert!(o.end_fds <= o.base.fds + 2, "{what}: {} descriptors after the soak, baseline {}", o.end_fds, o.base.fds);
    assert!(
        o.end_rss <= o.warm_rss + rss_growth_kib,
        "{what}: VmRSS grew from {} KiB (warm) to {} KiB",
        o.warm_rss,
        o.end_rss
    );
}

#[test]
fn soak_short() {
    let o = soak(3000, 6, Duration::from_secs(90));
    assert!(o.sessions >= 3000, "only {} sessions in time", o.sessions);
    check(&o, "soak (short)", 2048);
}

#[test]
#[ignore = "long soak (minutes): run with --ignored, preferably --release"]
fn soak_long() {
    let o = soak(100_000, 8, Duration::from_secs(240));
    assert!(o.sessions >= 20_000, "only {} sessions in 4 minutes", o.sessions);
    check(&o, "soak (long)", 4096);
}
