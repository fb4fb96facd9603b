//! Helpers for the server tests: an in-process socks4d on 127.0.0.1:0,
//! raw SOCKS4 bytes, and small destination servers that record who
//! connected.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use socks4_server::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Allows everything from loopback, short timeouts.
pub const OPEN: &str = r#"
connect_timeout = "1s"
handshake_timeout = "500ms"
resolve_timeout = "2s"
ident_timeout = "1s"
drain_timeout = "1s"
[[rule]]
action = "allow"
from = ["127.0.0.0/8"]
"#;

/// Starts an in-process server with `toml` on 127.0.0.1:0.
pub async fn start(toml: &str) -> (Server, SocketAddr) {
    let config = Config::parse(toml, "test.toml").expect("test config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::from_listeners(vec![listener], config).unwrap();
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// A raw request: version 4, `cd`, port, ip, user id, optional 4A name.
pub fn request(cd: u8, dest: SocketAddrV4, user: &[u8], name: Option<&str>) -> Vec<u8> {
    let mut out = vec![4, cd];
    out.extend_from_slice(&dest.port().to_be_bytes());
    out.extend_from_slice(&dest.ip().octets());
    out.extend_from_slice(user);
    out.push(0);
    if let Some(n) = name {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
    }
    out
}

pub fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("expected IPv4: {addr}"),
    }
}

/// The exact 8 bytes of a reply.
pub fn reply(code: u8, addr: SocketAddrV4) -> [u8; 8] {
    let [p0, p1] = addr.port().to_be_bytes();
    let [a, b, c, d] = addr.ip().octets();
    [0, code, p0, p1, a, b, c, d]
}

pub const REJECTED: [u8; 8] = [0, 91, 0, 0, 0, 0, 0, 0];

/// Connects to the proxy and sends `bytes`.
pub async fn send(proxy: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Reads one 8-byte reply (within 5 s).
pub async fn read_reply(s: &mut TcpStream) -> [u8; 8] {
    let mut buf = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("reply in time")
        .expect("8 reply bytes");
    buf
}

/// Asserts that the peer closes (EOF or reset) without sending more, within 5 s.
pub async fn expect_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("close in time") {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected close, got {:?}", &buf[..n]),
    }
}

/// Reads exactly `n` bytes within 5 s.
pub async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.expect("data in time").expect("data");
    buf
}

/// An echo server on `ip`:0 that reports the peer address of every
/// connection it accepts; it echoes until EOF, then half-closes.
pub async fn echo_server(ip: Ipv4Addr) -> (SocketAddrV4, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = v4(listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, peer)) = listener.accept().await {
            let _ = tx.send(peer);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// The next peer a test server reports, within 5 s.
pub async fn next_peer<T>(seen: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("a connection in time")
        .expect("server alive")
}

/// A port on 127.0.0.1 with nothing listening.
pub fn closed_port() -> SocketAddrV4 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    v4(l.local_addr().unwrap())
}
