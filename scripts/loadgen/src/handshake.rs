//! Sequential CONNECT handshakes: how long a client waits from `connect()`
//! to the proxy until it holds a granted relay, one connection at a time.
//!
//! TIME_WAIT is kept off 127.0.0.1's ephemeral ports, which danted needs:
//! it binds a port of its own (bind to port 0, then connect) for every
//! outgoing connection, and runs out when they are taken. So the
//! destination closes first (its TIME_WAIT sits on its listening port), and
//! the client connects from rotating source addresses 127.0.0.2 and up.
//! The destination listens with a deep accept queue, so a briefly starved
//! acceptor never drops a SYN (a 1 s retransmission, charged to the proxy).

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::proxy::{self, ConnectError, Proxy};
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

/// Runs `warmup` unmeasured handshakes, then `count` measured ones, from
/// `sources` rotating loopback addresses, and stops early (with what it
/// has) at `deadline` after the start.
///
/// # Errors
///
/// The first handshake that failed: a benchmark that drops connections has
/// no rate worth reporting.
pub fn run(
    proxy: Proxy,
    count: usize,
    warmup: usize,
    sources: usize,
    deadline: Duration,
) -> Result<Handshakes, ConnectError> {
    let (listener, dest) = crate::loopback_listener()?;
    // Accept and close at once: the relay's far end goes away first.
    thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let timeout = Duration::from_secs(5);
    let mut n = 0usize;
    let mut once = || -> Result<Duration, ConnectError> {
        let source = proxy::loopback_source(n, sources);
        n += 1;
        let t0 = Instant::now();
        let conn: TcpStream = proxy.connect_from(Some(source), dest, timeout)?;
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
