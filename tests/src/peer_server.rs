//! A TCP server (IPv4 or IPv6) that tells each client which address it saw: HTTP GETs get
//! `peer=IP:PORT` (`[IPv6]:PORT`) and a payload of a requested size; any other first line gets `peer=IP:PORT` echoed back with that
//! line. Every connection's peer goes to its log, so a test can assert who reached it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, TempDir};

const SCRIPT: &str = r#"
import socket, sys, threading
ip, log = sys.argv[1], sys.argv[2]
lock = threading.Lock()
def payload(n):
    return bytes(97 + (i * 7 + 3) % 26 for i in range(n))
def serve(c, peer):
    shown = ('[%s]:%d' if ':' in peer[0] else '%s:%d') % peer[:2]
    with lock, open(log, 'a') as f:
        f.write('peer %s\n' % shown)
    try:
        c.settimeout(20)
        data = b''
        while b'\n' not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        first = data.split(b'\n')[0].strip()
        head = b'peer=%s\n' % shown.encode()
        if first.startswith(b'GET '):
            while b'\r\n\r\n' not in data:
                chunk = c.recv(4096)
                if not chunk:
                    break
                data += chunk
            path = first.split(b' ')[1].decode()
            n = int(path.rsplit('/', 1)[1]) if path.startswith('/bytes/') else 0
            body = head + payload(n)
            c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % len(body) + body)
        else:
            c.sendall(head + first + b'\n')
    except Exception as e:
        sys.stderr.write('peer server: %r\n' % e)
    c.close()
s = socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, 0))
s.listen(256)
print('port', s.getsockname()[1], flush=True)
while True:
    c, peer = s.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"#;

/// The payload an HTTP GET of `/bytes/N` carries after its `peer=` line.
pub fn peer_payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + ((i * 7 + 3) % 26) as u8).collect()
}

/// A running peer server; `Drop` kills it by PID.
pub struct PeerServer {
    pub addr: SocketAddr,
    log: PathBuf,
    _child: ChildGuard,
    _dir: TempDir,
}

impl PeerServer {
    /// Listens on `ip`:<free port>, inside network namespace `netns` when given.
    ///
    /// # Panics
    /// When the server does not print its port within 10 s.
    pub fn start_in(netns: Option<&str>, ip: IpAddr) -> PeerServer {
        let dir = TempDir::new("peer-server");
        let script = dir.join("peer_server.py");
        std::fs::write(&script, SCRIPT).expect("write peer_server.py");
        let log = dir.join("peers.log");
        std::fs::write(&log, "").expect("create peers.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/python3"]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        cmd.arg(&script)
            .arg(ip.to_string())
            .arg(&log)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn("peer server", &mut cmd);
        let port = child.stdout_line("port ", Duration::from_secs(10)).expect("peer server port");
        let addr = SocketAddr::new(ip, port.parse().expect("peer server port number"));
        PeerServer { addr, log, _child: child, _dir: dir }
    }

    /// The peers of every connection so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("peer ")?.parse().ok())
            .collect()
    }
}
