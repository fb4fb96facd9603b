//! Idle relayed connections: open N connections through the proxy, keep
//! both ends (client side and destination side) open and silent, and let
//! the caller measure the proxy's memory before closing them all.

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::proxy::Proxy;

/// Connections held open on both sides of the proxy.
pub struct Held {
    pub clients: Vec<TcpStream>,
    destinations: Arc<Mutex<Vec<TcpStream>>>,
    pub failed: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Held {
    /// How many relays are up: granted on the client side and accepted on
    /// the destination side.
    pub fn relayed(&self) -> usize {
        self.clients.len().min(self.destinations.lock().expect("poisoned").len())
    }

    /// Closes the destination sides first and then the clients, so the
    /// TIME_WAIT entries land on the listening sides, not on ephemeral ports.
    pub fn close(self) {
        self.destinations.lock().expect("poisoned").clear();
        drop(self.clients);
    }
}

/// Opens up to `count` relays with `parallel` threads, giving up on the
/// rest at `deadline`. Failures are counted, not fatal: how many a server
/// could carry is itself the result.
///
/// # Errors
///
/// Only if the destination listener cannot be set up.
pub fn open(proxy: Proxy, count: usize, parallel: usize, deadline: Duration) -> std::io::Result<Held> {
    let (listener, dest) = crate::loopback_listener()?;
    let destinations = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let kept = destinations.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            kept.lock().expect("poisoned").push(conn);
        }
    });

    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let next = next.clone();
            thread::spawn(move || {
                let mut ok = Vec::new();
                let mut failed = 0;
                let mut first_error = None;
                while next.fetch_add(1, Ordering::Relaxed) < count && start.elapsed() < deadline {
                    match proxy.connect(dest, Duration::from_secs(10)) {
                        Ok(c) => ok.push(c),
                        Err(e) => {
                            failed += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (ok, failed, first_error)
            })
        })
        .collect();
    let mut held = Held {
        clients: Vec::with_capacity(count),
        destinations,
        failed: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for w in workers {
        let (ok, failed, err) = w.join().expect("worker panicked");
        held.clients.extend(ok);
        held.failed += failed;
        if held.first_error.is_none() {
            held.first_error = err;
        }
    }
    // The proxy's connections to the destination may still be in the
    // accept queue; give the acceptor a moment to catch up.
    let settle = Instant::now();
    while held.destinations.lock().expect("poisoned").len() < held.clients.len() && settle.elapsed().as_secs() < 5 {
        thread::sleep(Duration::from_millis(20));
    }
    held.elapsed = start.elapsed();
    Ok(held)
}
