//! Sequential CONNECT handshakes: how long a client waits from `connect()`
//! to the proxy until it holds a granted relay, one connection at a time.
//!
//! The destination accepts and closes at once; the client closes as soon as
//! it has the reply. Each run listens on a fresh port, so the TIME_WAIT
//! entries one run leaves never collide with the next run's 4-tuples.

use std::net::TcpStream;
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
    // Accept and drop: the relay's far end goes away at once, which is the
    // cheapest destination the proxy can have.
    thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
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
