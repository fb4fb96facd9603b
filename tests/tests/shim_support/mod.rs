//! Helpers for the shim tests: a loopback TCP server that records who connected and what arrived,
//! socks4d configurations, and running /usr/bin/python3 scripts under libsocks4.so.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socks4_tests::{RunOutput, Socks4d, TempDir, run_with_timeout, shim_command};

/// The Python the project relies on (not the first python3 on PATH).
pub const PYTHON: &str = "/usr/bin/python3";
/// socks4d's outgoing address in these tests; test servers listen on 127.0.0.1, so a peer of
/// 127.0.0.2 proves the connection came through the proxy.
pub const EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// socks4d allowing loopback clients, with `deny_rules` (TOML `[[rule]]` tables) checked first.
pub fn socks4d_with(deny_rules: &str) -> Socks4d {
    Socks4d::start(&format!(
        "external = \"{EXTERNAL}\"\n\n{deny_rules}\n[[rule]]\nname = \"loopback\"\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n"
    ))
}

pub fn socks4d() -> Socks4d {
    socks4d_with("")
}

/// One finished connection to a [`TestServer`].
#[derive(Debug, Clone)]
pub struct Conn {
    pub peer: SocketAddr,
    pub received: Vec<u8>,
}

/// A TCP server on `bind` that greets each connection with `banner`, echoes what it reads and
/// records the peer and the bytes once the client closes.
pub struct TestServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    done: Receiver<Conn>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(bind: SocketAddr, banner: &'static [u8]) -> TestServer {
        let listener = TcpListener::bind(bind).expect("bind test server");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local_addr");
        let (tx, done) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        accepted2.fetch_add(1, Ordering::SeqCst);
                        let tx = tx.clone();
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                            let _ = s.write_all(banner);
                            let mut received = Vec::new();
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                received.extend_from_slice(&buf[..n]);
                            }
                            let _ = tx.send(Conn { peer, received });
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TestServer { addr, accepted, done, stop, thread: Some(thread) }
    }

    /// The next connection that finished, within 10 s.
    pub fn next_conn(&self) -> Conn {
        self.done.recv_timeout(Duration::from_secs(10)).expect("a connection to the test server")
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `/usr/bin/python3 -c`-style `script` with `args` under the shim pointed at `proxy`, with
/// extra environment `env`, and a 30 s limit.
pub fn python(proxy: SocketAddr, script: &str, args: &[String], env: &[(&str, &str)]) -> RunOutput {
    let dir = TempDir::new("shim-py");
    let path = dir.join("t.py");
    std::fs::write(&path, script).expect("write script");
    let mut cmd = shim_command(PYTHON, proxy);
    cmd.arg(&path).args(args).envs(env.iter().copied());
    run_with_timeout(&mut cmd, b"", Duration::from_secs(30))
}

/// The `key=value` lines a script printed.
pub fn kv(out: &RunOutput) -> HashMap<String, String> {
    out.stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// `map[key]` with the whole output in the panic message when it is missing.
pub fn get<'a>(map: &'a HashMap<String, String>, key: &str, out: &RunOutput) -> &'a str {
    map.get(key).unwrap_or_else(|| panic!("no `{key}=` in the output:\n{out}"))
}

pub fn addr(map: &HashMap<String, String>, key: &str, out: &RunOutput) -> SocketAddr {
    get(map, key, out).parse().unwrap_or_else(|e| panic!("`{key}` is not an address ({e}):\n{out}"))
}

/// Python helper printing an address as Rust parses it.
pub const PY_PRELUDE: &str = r#"
import errno, os, socket, sys
def out(k, v):
    print(f"{k}={v}", flush=True)
def fmt(a):
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"
def fail(e):
    out("errno", errno.errorcode.get(e.errno, e.errno))
    sys.exit(0)
"#;

/// A port on 127.0.0.1 where nothing listens (bound and closed a moment ago).
pub fn dead_port() -> u16 {
    socks4_tests::free_port()
}

/// A fake SOCKS server that accepts one client, reads its request and answers `reply` (nothing at
/// all when None), then holds the connection until dropped. Records the request bytes.
pub struct FakeProxy {
    pub addr: SocketAddr,
    pub request: Arc<Mutex<Vec<u8>>>,
    _thread: JoinHandle<()>,
}

impl FakeProxy {
    pub fn start(reply: Option<&'static [u8]>) -> FakeProxy {
        FakeProxy::start_delayed(reply, Duration::ZERO)
    }

    /// Like `start`, answering only after `delay`.
    pub fn start_delayed(reply: Option<&'static [u8]>, delay: Duration) -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let request = Arc::new(Mutex::new(Vec::new()));
        let req2 = request.clone();
        let thread = std::thread::spawn(move || {
            let Ok((mut s, _)) = listener.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 512];
            if let Ok(n) = s.read(&mut buf) {
                req2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            std::thread::sleep(delay);
            if let Some(reply) = reply {
                let _ = s.write_all(reply);
            }
            // Hold the connection open until the client gives up.
            let _ = s.read(&mut buf);
        });
        FakeProxy { addr, request, _thread: thread }
    }
}

/// Connects to `addr` and returns the stream (for tests that need a plain client).
pub fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
}

/// A TCP connection to `dst` from `src` (port 0): std cannot bind before connecting.
pub fn connect_from(src: Ipv4Addr, dst: std::net::SocketAddrV4) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream below or closed on error.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own; from_raw_fd takes ownership exactly once.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (local, remote) = (sin(src, 0), sin(*dst.ip(), dst.port()));
    // SAFETY: valid sockaddr_in values of `len` bytes on our stack.
    if unsafe { libc::bind(fd, (&raw const local).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&raw const remote).cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// A scripted SOCKS server: the n-th connection gets `answers[n]` once its request has arrived,
/// then is held open until the client closes. Records each request's bytes in order.
pub struct ScriptedProxy {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Vec<u8>>>>,
    _thread: JoinHandle<()>,
}

impl ScriptedProxy {
    /// Listens on `ip`, port 0: put it on another loopback address than the client's
    /// (127.0.0.1) to tell the server's address from the client's own.
    pub fn start(ip: &str, answers: Vec<&'static [u8]>) -> ScriptedProxy {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let thread = std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut s, _)) = listener.accept() else { return };
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                // A SOCKS4 request is 8 bytes, a user id and a NUL.
                let mut req = Vec::new();
                let mut byte = [0u8; 1];
                while !(req.len() > 8 && req.last() == Some(&0)) {
                    match s.read(&mut byte) {
                        Ok(1) => req.push(byte[0]),
                        _ => break,
                    }
                }
                recorded.lock().unwrap().push(req);
                let _ = s.write_all(answer);
                std::thread::spawn(move || {
                    let mut sink = [0u8; 256];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
        });
        ScriptedProxy { addr, requests, _thread: thread }
    }
}
