//! Sequential CONNECT handshakes: how long a client waits from `connect()`
//! to the proxy until it holds a granted relay, one connection at a time.
//!
//! The client closes as soon as it has the reply; the destination closes
//! only after it has read the end of the stream. Were both ends to close at
//! once, the destination's TIME_WAIT could meet a later SYN on the same
//! 4-tuple and stall that handshake for a 1 s SYN retransmission.
//! Each run listens on a fresh port, so one run's TIME_WAIT entries never
//! collide with the next run's 4-tuples.

use std::io::Read;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::proxy::{ConnectError, Proxy};
use crate::stats::{self, Latency};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Handshakes {
    pub count: usize,
    pub elapsed: Duration,
    pub latency: Latency,
}

impl Handshakes {
    pub fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `warmup` unmeasured handshakes, then `count` measured ones, and
/// stops early (with what it has) at `deadline` after the start.
///
/// # Errors
///
/// The first handshake that failed: a benchmark that drops connections has
/// no rate worth reporting.
pub fn run(proxy: Proxy, count: usize, warmup: usize, deadline: Duration) -> Result<Handshakes, ConnectError> {
    let (listener, dest) = crate::loopback_listener()?;
    // One thread accepts, another waits for each stream's end in turn, so
    // a proxy slow to close one relay never fills the accept queue.
    let (closing, to_close) = mpsc::channel::<TcpStream>();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if closing.send(conn).is_err() {
                return;
            }
        }
    });
    thread::spawn(move || {
        let mut sink = [0u8; 512];
        for mut conn in to_close {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
        }
    });
    let timeout = Duration::from_secs(5);
    let once = || -> Result<Duration, ConnectError> {
        let t0 = Instant::now();
        let conn: TcpStream = proxy.connect(dest, timeout)?;
        let took = t0.elapsed();
        drop(conn);
        Ok(took)
    };
    for _ in 0..warmup {
        once()?;
    }
    let mut samples = Vec::with_capacity(count);
    let start = Instant::now();
    while samples.len() < count && start.elapsed() < deadline {
        samples.push(once()?);
    }
    let elapsed = start.elapsed();
    let n = samples.len();
    Ok(Handshakes { count: n, elapsed, latency: stats::summarise(&mut samples) })
}
