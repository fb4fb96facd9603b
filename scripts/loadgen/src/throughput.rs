//! Relay throughput: N streams push bytes through the proxy into a sink on
//! 127.0.0.1:0 for a fixed time; the rate is what the sink received.
//!
//! Counting at the sink, up to the last EOF, charges the proxy for the bytes
//! still in its buffers when the senders stop, so a proxy cannot look fast
//! by buffering.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::proxy::{ConnectError, Proxy};

/// Bytes per `write`: large enough that syscalls are not what we measure.
const WRITE_CHUNK: usize = 128 * 1024;
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    pub streams: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Throughput {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

/// Runs `streams` streams for `duration`.
///
/// # Errors
///
/// The first stream that could not be opened, or a sink that failed.
pub fn run(proxy: Proxy, streams: usize, duration: Duration) -> Result<Throughput, ConnectError> {
    let (listener, sink_addr) = crate::loopback_listener()?;
    let sink = thread::spawn(move || -> io::Result<Vec<thread::JoinHandle<Drained>>> {
        let mut readers = Vec::with_capacity(streams);
        for _ in 0..streams {
            let (conn, _) = listener.accept()?;
            readers.push(thread::spawn(move || drain(conn)));
        }
        Ok(readers)
    });

    let connect_timeout = Duration::from_secs(10);
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams {
        let conn = proxy.connect(sink_addr, connect_timeout)?;
        // The handshake's timeouts would cut a long blocking write short.
        conn.set_write_timeout(None)?;
        conns.push(conn);
    }
    let start_line = Arc::new(Barrier::new(streams + 1));
    let writers: Vec<_> = conns
        .into_iter()
        .map(|conn| {
            let start_line = start_line.clone();
            thread::spawn(move || {
                start_line.wait();
                push(conn, duration)
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    for w in writers {
        w.join().expect("writer thread panicked")?;
    }
    let readers = sink.join().expect("sink thread panicked")?;
    let mut bytes = 0;
    let mut end = start;
    for r in readers {
        let (n, eof) = r.join().expect("reader thread panicked")?;
        bytes += n;
        end = end.max(eof);
    }
    Ok(Throughput { streams, bytes, elapsed: end - start })
}

fn push(mut conn: TcpStream, duration: Duration) -> io::Result<()> {
    let chunk = vec![0x5au8; WRITE_CHUNK];
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        conn.write_all(&chunk)?;
    }
    conn.shutdown(Shutdown::Write)
}

/// Bytes a sink connection received, and when it saw the end of the stream.
type Drained = io::Result<(u64, Instant)>;

fn drain(mut conn: TcpStream) -> Drained {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok((total, Instant::now())),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
