//! CONNECT through an in-process socks4d: exact reply bytes, data both
//! ways, rules, SOCKS4A, malformed requests, half-close, the session cap.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn connect_granted_carries_outgoing_address_and_relays() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    let got = read_reply(&mut c).await;
    let outgoing = next_peer(&mut seen).await;
    // The reply names the address the destination saw, exactly.
    assert_eq!(got, reply(90, v4(outgoing)));
    c.write_all(b"hello through socks").await.unwrap();
    assert_eq!(read_n(&mut c, 19).await, b"hello through socks");
}

#[tokio::test]
async fn connect_from_external_address() {
    let toml = format!("external = \"127.0.0.2\"\n{OPEN}");
    let (_server, proxy) = start(&toml).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"", None)).await;
    let got = read_reply(&mut c).await;
    let outgoing = v4(next_peer(&mut seen).await);
    assert_eq!(*outgoing.ip(), Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(got, reply(90, outgoing));
}

#[tokio::test]
async fn pipelined_data_after_request_is_forwarded() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut bytes = request(1, dest, b"fred", None);
    bytes.extend_from_slice(b"early");
    let mut c = send(proxy, &bytes).await;
    assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
    assert_eq!(read_n(&mut c, 5).await, b"early");
}

#[tokio::test]
async fn unreachable_destination_gets_91_and_close() {
    let (_server, proxy) = start(OPEN).await;
    let mut c = send(proxy, &request(1, closed_port(), b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn client_outside_every_rule_gets_91() {
    // Only 10.0.0.0/8 clients are served; we come from 127.0.0.1.
    let toml = "[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/8\"]\n";
    let (_server, proxy) = start(toml).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    assert!(seen.try_recv().is_err(), "the destination must not be contacted");
}

#[tokio::test]
async fn deny_rule_wins_when_first() {
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let toml = format!(
        "[[rule]]\naction = \"deny\"\nto = [\"127.0.0.1\"]\nports = [{}]\n[[rule]]\naction = \"allow\"\n",
        dest.port()
    );
    let (_server, proxy) = start(&toml).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    assert!(seen.try_recv().is_err());
    // Another port on the same host falls through to the allow rule.
    let (other, _seen2) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, other, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
}

#[tokio::test]
async fn user_id_rules() {
    let toml = "[[rule]]\naction = \"deny\"\nusers = [\"mallory\"]\n[[rule]]\naction = \"allow\"\nusers = [\"fred\", \"alice\"]\n";
    let (_server, proxy) = start(toml).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    for (user, ok) in [(&b"fred"[..], true), (b"alice", true), (b"mallory", false), (b"bob", false), (b"", false)] {
        let mut c = send(proxy, &request(1, dest, user, None)).await;
        let want = if ok { 90 } else { 91 };
        assert_eq!(read_reply(&mut c).await[1], want, "user {:?}", String::from_utf8_lossy(user));
    }
}

#[tokio::test]
async fn socks4a_localhost_is_resolved() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let marker = SocketAddrV4::new(Ipv4Addr::new(0, 0, 0, 1), dest.port());
    let mut c = send(proxy, &request(1, marker, b"fred", Some("localhost"))).await;
    let got = read_reply(&mut c).await;
    assert_eq!(got, reply(90, v4(next_peer(&mut seen).await)));
    c.write_all(b"4a").await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, b"4a");
}

#[tokio::test]
async fn socks4a_unresolvable_name_gets_91() {
    let (_server, proxy) = start(OPEN).await;
    let marker = SocketAddrV4::new(Ipv4Addr::new(0, 0, 0, 1), 80);
    let mut c = send(proxy, &request(1, marker, b"fred", Some("nonexistent.invalid"))).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn socks4a_name_cannot_dodge_network_deny() {
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let toml =
        "[[rule]]\naction = \"deny\"\nto = [\"127.0.0.0/8\"]\n[[rule]]\naction = \"allow\"\nto = [\"localhost\"]\n";
    let (_server, proxy) = start(toml).await;
    let marker = SocketAddrV4::new(Ipv4Addr::new(0, 0, 0, 1), dest.port());
    let mut c = send(proxy, &request(1, marker, b"", Some("localhost"))).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn socks4a_trailing_dot_cannot_dodge_name_deny() {
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let toml = "[[rule]]\naction = \"deny\"\nto = [\"localhost\"]\n[[rule]]\naction = \"allow\"\n";
    let (_server, proxy) = start(toml).await;
    let marker = SocketAddrV4::new(Ipv4Addr::new(0, 0, 0, 1), dest.port());
    for name in ["localhost.", "LOCALHOST."] {
        let mut c = send(proxy, &request(1, marker, b"", Some(name))).await;
        assert_eq!(read_reply(&mut c).await, REJECTED, "{name}");
        expect_closed(&mut c).await;
    }
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn oversized_user_id_gets_91() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut bytes = request(1, dest, &[b'u'; 300], None);
    bytes.truncate(bytes.len() - 1); // no NUL: the cap alone must trigger
    let mut c = send(proxy, &bytes).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn unknown_command_gets_91() {
    let (_server, proxy) = start(OPEN).await;
    let mut c = send(proxy, b"\x04\x03\x00\x50\x7f\x00\x00\x01\0").await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn bad_version_is_closed_without_reply() {
    let (_server, proxy) = start(OPEN).await;
    // Neither SOCKS4 nor SOCKS5: it could not parse a reply of ours.
    for bytes in [&b"\x06\x01\x00"[..], b"\x00\x01\x00\x50\x7f\x00\x00\x01\0", b"GET / HTTP/1.0\r\n\r\n"] {
        let mut c = send(proxy, bytes).await;
        expect_closed(&mut c).await;
    }
    // With SOCKS5 turned off, a SOCKS5 greeting is such a client too.
    let (_server, proxy) = start(&format!("protocols = [\"socks4\"]\n{OPEN}")).await;
    let mut c = send(proxy, b"\x05\x01\x00").await;
    expect_closed(&mut c).await;
    // And with SOCKS4 turned off, a SOCKS4 request.
    let (_server, proxy) = start(&format!("protocols = [\"socks5\"]\n{OPEN}")).await;
    let mut c = send(proxy, b"\x04\x01\x00\x50\x7f\x00\x00\x01\0").await;
    expect_closed(&mut c).await;
}

#[tokio::test]
async fn truncated_request_is_dropped_after_handshake_timeout() {
    let (_server, proxy) = start(OPEN).await; // handshake_timeout 500ms
    let mut c = send(proxy, b"\x04\x01\x00\x50\x7f\x00").await;
    let started = std::time::Instant::now();
    expect_closed(&mut c).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn half_close_reaches_destination_and_reply_still_flows() {
    let (_server, proxy) = start(OPEN).await;
    // A destination that reads to EOF, then answers with what it got.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dest = v4(listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("got {} bytes", got.len()).as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        got
    });
    let mut c = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
    c.write_all(b"request body").await.unwrap();
    c.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, b"got 12 bytes");
    assert_eq!(server.await.unwrap(), b"request body");
}

#[tokio::test]
async fn over_max_connections_gets_91() {
    let toml = format!("max_connections = 2\n{OPEN}");
    let (server, proxy) = start(&toml).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut live = Vec::new();
    for _ in 0..2 {
        let mut c = send(proxy, &request(1, dest, b"", None)).await;
        assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
        live.push(c);
    }
    assert_eq!(server.active_sessions(), 2);
    let mut third = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut third).await, REJECTED);
    expect_closed(&mut third).await;
    // The live ones still work, and closing one frees a slot.
    live[0].write_all(b"ok").await.unwrap();
    assert_eq!(read_n(&mut live[0], 2).await, b"ok");
    drop(live.pop());
    for _ in 0..100 {
        if server.active_sessions() < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut again).await[..2], [0, 90]);
}

#[tokio::test]
async fn reload_applies_to_new_sessions_only() {
    let (server, proxy) = start(OPEN).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut live = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut live).await[..2], [0, 90]);
    server.reload(socks4_server::Config::parse("[[rule]]\naction = \"deny\"\n", "new.toml").unwrap());
    let mut c = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    live.write_all(b"still").await.unwrap();
    assert_eq!(read_n(&mut live, 5).await, b"still");
}

#[tokio::test]
async fn shutdown_drains_then_cuts() {
    let (server, proxy) = start(OPEN).await; // drain_timeout 1s
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut live = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut live).await[..2], [0, 90]);
    let started = std::time::Instant::now();
    let drained = server.shutdown().await;
    assert!(!drained, "an idle live session cannot drain by itself");
    assert!(started.elapsed() >= Duration::from_millis(900));
    expect_closed(&mut live).await;
    assert!(TcpStream::connect(proxy).await.is_err(), "listener must be closed");
}

#[tokio::test]
async fn connect_to_unspecified_address_gets_91() {
    // Linux would connect 0.0.0.0 to this host: it must not be a way around `to` rules.
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let (_server, proxy) = start(OPEN).await;
    let mut c = send(proxy, &request(1, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dest.port()), b"", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn ipv6_loopback_client_with_builtin_default() {
    let config = socks4_server::Config { connect_timeout: Duration::from_secs(1), ..Default::default() };
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let server = socks4_server::Server::from_listeners(vec![listener], config).unwrap();
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(server.local_addrs()[0], &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut c).await, reply(90, v4(next_peer(&mut seen).await)));
    c.write_all(b"v6").await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, b"v6");
}

/// Nothing listens on port 0: a CONNECT there is refused before the rules,
/// even by a rule that names port 0 (which is for BIND).
#[tokio::test]
async fn connect_to_port_zero_gets_91() {
    for toml in [OPEN.to_string(), format!("{OPEN}ports = [0]\n")] {
        let (_server, proxy) = start(&toml).await;
        let mut c = send(proxy, b"\x04\x01\x00\x00\x7f\x00\x00\x01\0").await;
        assert_eq!(read_reply(&mut c).await, REJECTED, "{toml}");
        expect_closed(&mut c).await;
    }
}

/// A refused client that pipelined data after its request still reads the whole refusal and a
/// clean end: the server drains what it sent (up to 64 KiB, for 500 ms) before closing, since
/// closing with unread input would send a reset that destroys the reply in flight.
#[tokio::test]
async fn refused_client_with_pipelined_data_reads_the_reply_then_eof() {
    let (_server, proxy) = start("[[rule]]\naction = \"deny\"\n").await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut bytes = request(1, dest, b"", None);
    bytes.extend(std::iter::repeat_n(b'p', 48 * 1024));
    let mut c = send(proxy, &bytes).await;
    // Let the server refuse and close before we read anything.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await.expect("EOF in time");
    assert!(end.is_ok() && rest.is_empty(), "want a clean EOF after the reply: {end:?}, {} bytes", rest.len());
}

/// CONNECT to 0.0.0.0 is refused (Linux would take it as this host, around rules about
/// 127.0.0.0/8); a BIND naming 0.0.0.0 is a BIND that any host may answer.
#[tokio::test]
async fn connect_to_the_unspecified_address_is_refused_but_bind_is_not() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let zero = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dest.port());
    let mut c = send(proxy, &request(1, zero, b"", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    expect_closed(&mut c).await;
    assert!(seen.try_recv().is_err(), "0.0.0.0 reached the destination");
    let mut b = send(proxy, &request(2, zero, b"", None)).await;
    assert_eq!(read_reply(&mut b).await[..2], [0, 90]);
}
