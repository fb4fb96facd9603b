//! BIND through an in-process socks4d: both replies byte for byte, the
//! source check, the time limit, and cancellation by the client.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const APP_SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 21);

/// Connects to `to` from `from_ip`.
async fn connect_from(from_ip: Ipv4Addr, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from_ip, 0)))?;
    s.connect(SocketAddr::V4(to)).await
}

/// Sends a BIND and returns the client and the first reply's address, after
/// checking the first reply's code and that the address is usable.
async fn bind(proxy: SocketAddr, req: &[u8], want_ip: Ipv4Addr) -> (TcpStream, SocketAddrV4) {
    let mut c = send(proxy, req).await;
    let first = read_reply(&mut c).await;
    let bound = SocketAddrV4::new(
        Ipv4Addr::new(first[4], first[5], first[6], first[7]),
        u16::from_be_bytes([first[2], first[3]]),
    );
    assert_eq!(first, reply(90, SocketAddrV4::new(want_ip, bound.port())));
    assert_ne!(bound.port(), 0);
    (c, bound)
}

#[tokio::test]
async fn bind_granted_relays_both_ways() {
    let (_server, proxy) = start(OPEN).await;
    let (mut c, bound) = bind(proxy, &request(2, APP_SERVER, b"fred", None), Ipv4Addr::LOCALHOST).await;
    let mut incoming = connect_from(Ipv4Addr::LOCALHOST, bound).await.unwrap();
    let second = read_reply(&mut c).await;
    assert_eq!(second, reply(90, v4(incoming.local_addr().unwrap())));
    incoming.write_all(b"150 data").await.unwrap();
    assert_eq!(read_n(&mut c, 8).await, b"150 data");
    c.write_all(b"upload").await.unwrap();
    assert_eq!(read_n(&mut incoming, 6).await, b"upload");
    // Half-close from the client ends the peer's input; the peer can still answer.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), incoming.read_to_end(&mut rest))
        .await
        .expect("the client's half-close reaches the peer")
        .unwrap();
    assert!(rest.is_empty());
    incoming.write_all(b"bye").await.unwrap();
    drop(incoming);
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut tail)).await.unwrap().unwrap();
    assert_eq!(tail, b"bye");
}

#[tokio::test]
async fn bind_takes_exactly_one_connection() {
    let (_server, proxy) = start(OPEN).await;
    let (mut c, bound) = bind(proxy, &request(2, APP_SERVER, b"", None), Ipv4Addr::LOCALHOST).await;
    let _first = connect_from(Ipv4Addr::LOCALHOST, bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
    assert!(connect_from(Ipv4Addr::LOCALHOST, bound).await.is_err(), "the listener must be gone");
}

#[tokio::test]
async fn bind_from_wrong_host_gets_second_91_and_both_closed() {
    let (_server, proxy) = start(OPEN).await;
    let (mut c, bound) = bind(proxy, &request(2, APP_SERVER, b"", None), Ipv4Addr::LOCALHOST).await;
    let mut intruder = connect_from(Ipv4Addr::new(127, 0, 0, 2), bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    expect_closed(&mut intruder).await;
}

#[tokio::test]
async fn bind_times_out_with_91() {
    let toml = OPEN.replace("connect_timeout = \"1s\"", "connect_timeout = \"300ms\"");
    let (_server, proxy) = start(&toml).await;
    let (mut c, bound) = bind(proxy, &request(2, APP_SERVER, b"", None), Ipv4Addr::LOCALHOST).await;
    let started = std::time::Instant::now();
    assert_eq!(read_reply(&mut c).await, REJECTED);
    assert!(started.elapsed() >= Duration::from_millis(200), "{:?}", started.elapsed());
    expect_closed(&mut c).await;
    assert!(connect_from(Ipv4Addr::LOCALHOST, bound).await.is_err(), "port must be freed");
}

#[tokio::test]
async fn bind_cancelled_when_client_closes() {
    let toml = OPEN.replace("connect_timeout = \"1s\"", "connect_timeout = \"30s\"");
    let (server, proxy) = start(&toml).await;
    let (c, bound) = bind(proxy, &request(2, APP_SERVER, b"", None), Ipv4Addr::LOCALHOST).await;
    drop(c);
    // Well before the 30 s limit, the session ends and the port is free.
    let mut freed = false;
    for _ in 0..100 {
        if server.active_sessions() == 0 && connect_from(Ipv4Addr::LOCALHOST, bound).await.is_err() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "BIND listener {bound} still open after the client left");
}

#[tokio::test]
async fn bind_socks4a_checks_the_resolved_address() {
    let (_server, proxy) = start(OPEN).await;
    let marker = SocketAddrV4::new(Ipv4Addr::new(0, 0, 0, 1), 21);
    let (mut c, bound) = bind(proxy, &request(2, marker, b"", Some("localhost")), Ipv4Addr::LOCALHOST).await;
    let incoming = connect_from(Ipv4Addr::LOCALHOST, bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, reply(90, v4(incoming.local_addr().unwrap())));
    // localhost is 127.0.0.1 only: a connection from 127.0.0.2 is another host.
    let (mut c, bound) = bind(proxy, &request(2, marker, b"", Some("localhost")), Ipv4Addr::LOCALHOST).await;
    let mut intruder = connect_from(Ipv4Addr::new(127, 0, 0, 2), bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    expect_closed(&mut intruder).await;
}

#[tokio::test]
async fn bind_listens_on_external_address() {
    let toml = format!("external = \"127.0.0.2\"\n{OPEN}");
    let (_server, proxy) = start(&toml).await;
    let (mut c, bound) = bind(proxy, &request(2, APP_SERVER, b"", None), Ipv4Addr::new(127, 0, 0, 2)).await;
    let incoming = connect_from(Ipv4Addr::LOCALHOST, bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, reply(90, v4(incoming.local_addr().unwrap())));
}

#[tokio::test]
async fn bind_refused_by_command_rule() {
    let toml = "[[rule]]\naction = \"allow\"\ncommands = [\"connect\"]\n";
    let (_server, proxy) = start(toml).await;
    let mut c = send(proxy, &request(2, APP_SERVER, b"", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
}

/// The BIND of npm `socks`' example and of Dante's client: DSTIP 0.0.0.0,
/// DSTPORT 0 (no primary connection). The built-in default rules allow it
/// (they once refused it with 91: their ports began at 1), and since
/// 0.0.0.0 names no host, any host may connect back.
#[tokio::test]
async fn bind_port_zero_under_builtin_defaults() {
    let config = socks4_server::Config { connect_timeout: Duration::from_secs(5), ..Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = socks4_server::Server::from_listeners(vec![listener], config).unwrap();
    let (mut c, bound) =
        bind(server.local_addrs()[0], b"\x04\x02\x00\x00\x00\x00\x00\x00\0", Ipv4Addr::LOCALHOST).await;
    let mut incoming = connect_from(Ipv4Addr::new(127, 0, 0, 3), bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, reply(90, v4(incoming.local_addr().unwrap())));
    incoming.write_all(b"hello").await.unwrap();
    assert_eq!(read_n(&mut c, 5).await, b"hello");
}

/// A rule without `ports` covers port 0 for BIND; one that names its
/// ports covers port 0 only if a range includes it.
#[tokio::test]
async fn bind_port_zero_and_the_ports_key() {
    let no_port = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
    let (_server, proxy) = start(OPEN).await;
    let (mut c, bound) = bind(proxy, &request(2, no_port, b"", None), Ipv4Addr::LOCALHOST).await;
    let incoming = connect_from(Ipv4Addr::LOCALHOST, bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, reply(90, v4(incoming.local_addr().unwrap())));

    let (_server, proxy) = start(&format!("{OPEN}ports = [\"1-65535\"]\n")).await;
    let mut c = send(proxy, &request(2, no_port, b"", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED, "ports 1-65535 leave port 0 out");
    expect_closed(&mut c).await;

    let (_server, proxy) = start(&format!("{OPEN}ports = [0, 21]\n")).await;
    let (mut c, bound) = bind(proxy, &request(2, no_port, b"", None), Ipv4Addr::LOCALHOST).await;
    let incoming = connect_from(Ipv4Addr::LOCALHOST, bound).await.unwrap();
    assert_eq!(read_reply(&mut c).await, reply(90, v4(incoming.local_addr().unwrap())));
}
