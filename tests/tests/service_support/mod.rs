//! Helpers for the service and package tests: a destination that records who connected, a raw
//! SOCKS4 CONNECT through a proxy, a free port below 1024, signals and the notify socket.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

/// socks4d's outgoing address in these tests: destinations listen on 127.0.0.1, so a peer of
/// 127.0.0.2 proves the connection came through the proxy.
pub const EXTERNAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A config for these tests: loopback clients allowed, CONNECTs from [`EXTERNAL`].
pub fn loopback_config(extra: &str) -> String {
    format!("external = \"{EXTERNAL}\"\n{extra}\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n")
}

/// A TCP server on 127.0.0.1:0 that echoes and reports each client's address.
pub struct Destination {
    pub addr: SocketAddr,
    peers: Receiver<SocketAddr>,
    stop: Arc<AtomicBool>,
}

impl Destination {
    pub fn start() -> Destination {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind destination");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, peers) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = tx.send(peer);
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            let mut buf = [0u8; 1024];
                            while let Ok(n @ 1..) = s.read(&mut buf) {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Destination { addr, peers, stop }
    }

    /// The address the next client connected from (within 10 s).
    pub fn next_peer(&self) -> SocketAddr {
        self.peers.recv_timeout(Duration::from_secs(10)).expect("a connection to the destination within 10 s")
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// SOCKS4 CONNECT to `dest` through `proxy`: asserts reply 90, that bytes are relayed both ways
/// and that the destination saw [`EXTERNAL`].
pub fn connect_through(proxy: SocketAddr, dest: &Destination) {
    let mut s = TcpStream::connect_timeout(&proxy, Duration::from_secs(10)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let SocketAddr::V4(d) = dest.addr else { panic!("IPv4 destination") };
    let mut request = vec![4, 1];
    request.extend_from_slice(&d.port().to_be_bytes());
    request.extend_from_slice(&d.ip().octets());
    request.extend_from_slice(b"tester\0");
    s.write_all(&request).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).expect("the 8-byte reply");
    assert_eq!(reply[..2], [0, 90], "CONNECT through {proxy}: {reply:?}");
    assert_eq!(dest.next_peer().ip(), EXTERNAL, "the destination must see socks4d's external address");
    s.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).expect("the echo through the proxy");
    assert_eq!(&echo, b"ping");
}

/// A port below 1024 free on 127.0.0.1 a moment ago (we are root). Racy like any free port:
/// callers retry when the server cannot bind it.
pub fn free_low_port() -> u16 {
    let start = 600 + (std::process::id() % 400) as u16;
    (0..400)
        .map(|i| 600 + (start - 600 + i) % 400)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 600-999 on 127.0.0.1")
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

/// A NOTIFY_SOCKET the test owns: a datagram socket bound at `path` (or, for a path starting
/// with `@`, an abstract name).
pub struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let socket = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
                UnixDatagram::bind_addr(&addr)
            }
            None => UnixDatagram::bind(path),
        }
        .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        NotifySocket { socket }
    }

    /// The next message (within 10 s).
    pub fn recv(&self) -> String {
        self.socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("an sd_notify message within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl NotifySocket {
    /// The next message that is not a periodic `STATUS=` line alone (those come every 5 s while
    /// the number of sessions changes, so a slow step could see one in between).
    pub fn recv_event(&self) -> String {
        loop {
            let msg = self.recv();
            let periodic = msg.starts_with("STATUS=") && !msg.contains('\n');
            if !periodic {
                return msg;
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds (the clock of MONOTONIC_USEC).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}
