//! SOCKS5 UDP ASSOCIATE through an in-process socks4d, in raw bytes: the
//! relay port, datagrams both ways with their headers, IPv4, IPv6 and
//! names, the rules per datagram, fragments and strangers dropped, and the
//! association ending with its control connection.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(1);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A datagram for the relay: RSV, FRAG, the destination, the payload.
fn datagram(frag: u8, dest: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, frag];
    push_addr(&mut out, dest);
    out.extend_from_slice(payload);
    out
}

fn datagram_to_name(name: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 3, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A UDP echo server on `ip`:0 that reports who sent each datagram.
async fn udp_echo(ip: IpAddr) -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let socket = UdpSocket::bind((ip, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = tx.send(from);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, rx)
}

/// Greets, asks for an association for `client` (the address the client
/// will send from, or zeros), returns the control connection and the relay.
async fn associate(proxy: SocketAddr, client: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut c = send(proxy, b"\x05\x01\x00").await;
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    let mut req = vec![5, 3, 0];
    push_addr(&mut req, client);
    c.write_all(&req).await.unwrap();
    let reply = read_n(&mut c, 10).await;
    assert_eq!(reply[..4], [5, 0, 0, 1], "UDP ASSOCIATE granted: {reply:?}");
    let relay = SocketAddr::new(
        Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]).into(),
        u16::from_be_bytes([reply[8], reply[9]]),
    );
    assert_eq!(relay.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST), "the relay is where the client reached us");
    assert_ne!(relay.port(), 0);
    (c, relay)
}

async fn recv_within(s: &UdpSocket, limit: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(limit, s.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

const UDP_OPEN: &str = r#"
external = ["127.0.0.2", "::1"]
resolve_timeout = "2s"
[[rule]]
action = "deny"
to = ["::1", "127.0.0.9"]
ports = ["1-65535"]
commands = ["udp"]
[[rule]]
action = "allow"
from = ["127.0.0.0/8"]
"#;

#[tokio::test]
async fn datagrams_both_ways_with_headers() {
    let (_server, proxy) = start(UDP_OPEN).await;
    let (echo, mut seen) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(proxy, "0.0.0.0:0".parse().unwrap()).await;
    let mut first_outgoing = None;
    for payload in [&b"first"[..], b"", b"second datagram"] {
        client.send_to(&datagram(0, echo, payload), relay).await.unwrap();
        let (back, from) = recv_within(&client, Duration::from_secs(5)).await.expect("the answer through the relay");
        assert_eq!(from, relay);
        assert_eq!(back, datagram(0, echo, payload), "the answer, wrapped with the far end's address");
        let outgoing = next_peer(&mut seen).await;
        assert_eq!(outgoing.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), "sent on from `external`");
        // One outgoing socket per family for the association's life: the far end sees one
        // address, so its later answers (and a NAT's mapping) stay valid.
        assert_eq!(*first_outgoing.get_or_insert(outgoing), outgoing, "the outgoing port changed");
    }
}

/// Answers come back from every far end the client wrote to, not only the
/// last one: a late answer from the first after a datagram to the second.
#[tokio::test]
async fn a_late_answer_from_an_earlier_far_end_comes_back() {
    let (_server, proxy) = start(UDP_OPEN).await;
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first_addr = first.local_addr().unwrap();
    let (second, mut seen_second) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(proxy, "0.0.0.0:0".parse().unwrap()).await;
    client.send_to(&datagram(0, first_addr, b"to the first"), relay).await.unwrap();
    let (got, outgoing) = recv_within(&first, Duration::from_secs(5)).await.expect("datagram at the first");
    assert_eq!(got, b"to the first");
    client.send_to(&datagram(0, second, b"to the second"), relay).await.unwrap();
    let (back, _) = recv_within(&client, Duration::from_secs(5)).await.expect("the second's answer");
    assert_eq!(back, datagram(0, second, b"to the second"));
    assert_eq!(next_peer(&mut seen_second).await, outgoing);
    // Now the first answers.
    first.send_to(b"late", outgoing).await.unwrap();
    let (back, _) = recv_within(&client, Duration::from_secs(5)).await.expect("the first's late answer");
    assert_eq!(back, datagram(0, first_addr, b"late"));
}

#[tokio::test]
async fn ipv6_destination_and_names() {
    // IPv6: the far end on ::1 sees the IPv6 external address.
    let (_server, proxy) =
        start("external = [\"127.0.0.2\", \"::1\"]\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n").await;
    let (echo6, mut seen6) = udp_echo(Ipv6Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(proxy, "0.0.0.0:0".parse().unwrap()).await;
    client.send_to(&datagram(0, echo6, b"six"), relay).await.unwrap();
    let (back, _) = recv_within(&client, Duration::from_secs(5)).await.expect("IPv6 answer");
    assert_eq!(back, datagram(0, echo6, b"six"));
    assert_eq!(next_peer(&mut seen6).await.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));

    // A name: localhost's ::1 is denied for UDP here, so 127.0.0.1 it is;
    // the answer names the address it came from.
    let (_server, proxy) = start(UDP_OPEN).await;
    let (echo, mut seen) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let (_control, relay) = associate(proxy, "0.0.0.0:0".parse().unwrap()).await;
    client.send_to(&datagram_to_name("localhost.", echo.port(), b"named"), relay).await.unwrap();
    let (back, _) = recv_within(&client, Duration::from_secs(5)).await.expect("answer for a name");
    assert_eq!(back, datagram(0, echo, b"named"));
    assert_eq!(next_peer(&mut seen).await.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
}

/// Refused destinations, fragments, garbage and strangers are dropped; the
/// association goes on, and only the client's own datagrams pass.
#[tokio::test]
async fn what_is_dropped() {
    let (_server, proxy) = start(UDP_OPEN).await;
    let (echo, mut seen) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(proxy, client.local_addr().unwrap()).await;
    // A far end the rules deny, listening, so that a datagram let through would be seen.
    let (denied, mut seen_denied) = udp_echo(Ipv4Addr::new(127, 0, 0, 9).into()).await;
    let stranger = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let same_host_other_port = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let drops: Vec<(&str, &UdpSocket, Vec<u8>)> = vec![
        ("refused by the rules", &client, datagram(0, denied, b"no")),
        ("a fragment", &client, datagram(1, echo, b"frag")),
        ("the last fragment", &client, datagram(0x81, echo, b"frag")),
        ("port 0", &client, datagram(0, SocketAddr::new(echo.ip(), 0), b"zero")),
        ("truncated header", &client, vec![0, 0, 0, 1, 127, 0]),
        ("address type 2", &client, vec![0, 0, 0, 2, 1, 2, 3, 4, 0, 80]),
        ("a bad name", &client, datagram_to_name("a b", echo.port(), b"x")),
        ("an unresolvable name", &client, datagram_to_name("nonexistent.invalid", echo.port(), b"x")),
        ("empty", &client, Vec::new()),
        ("from another host", &stranger, datagram(0, echo, b"stranger")),
        ("from another port of the client's host", &same_host_other_port, datagram(0, echo, b"port")),
    ];
    for (what, from, bytes) in drops {
        from.send_to(&bytes, relay).await.unwrap();
        assert!(recv_within(from, Duration::from_millis(300)).await.is_none(), "{what}: an answer came back");
    }
    assert!(seen.try_recv().is_err(), "a dropped datagram reached the far end");
    assert!(seen_denied.try_recv().is_err(), "a datagram reached a far end the rules deny");
    // The association still works.
    client.send_to(&datagram(0, echo, b"still here"), relay).await.unwrap();
    let (back, _) = recv_within(&client, Duration::from_secs(5)).await.expect("the association survived");
    assert_eq!(back, datagram(0, echo, b"still here"));
    // An answer from a host the client never wrote to is not let in.
    let intruder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Learn the relay's outgoing address from what the echo server saw.
    let outgoing = next_peer(&mut seen).await;
    intruder.send_to(b"unsolicited", outgoing).await.unwrap();
    assert!(recv_within(&client, Duration::from_millis(300)).await.is_none(), "unsolicited answer let in");
}

/// A rule's `ports` meet each datagram's destination port (not the port the
/// client named in its request).
#[tokio::test]
async fn rules_see_each_datagrams_port() {
    let (closed, mut seen_closed) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let (open, mut seen_open) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let config = format!(
        "[[rule]]\naction = \"deny\"\nports = [{}]\ncommands = [\"udp\"]\n\
         [[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n",
        closed.port()
    );
    let (_server, proxy) = start(&config).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (_control, relay) = associate(proxy, client.local_addr().unwrap()).await;
    client.send_to(&datagram(0, closed, b"denied port"), relay).await.unwrap();
    client.send_to(&datagram(0, open, b"open port"), relay).await.unwrap();
    let (back, _) = recv_within(&client, Duration::from_secs(5)).await.expect("the open port's answer");
    assert_eq!(back, datagram(0, open, b"open port"));
    next_peer(&mut seen_open).await;
    assert!(recv_within(&client, Duration::from_millis(300)).await.is_none(), "an answer from the denied port");
    assert!(seen_closed.try_recv().is_err(), "a datagram reached a port the rules deny");
}

#[tokio::test]
async fn association_refused_without_a_udp_rule() {
    let (_server, proxy) = start("[[rule]]\naction = \"allow\"\ncommands = [\"connect\", \"bind\"]\n").await;
    let mut c = send(proxy, b"\x05\x01\x00").await;
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    c.write_all(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00").await.unwrap();
    assert_eq!(read_n(&mut c, 10).await, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect_closed(&mut c).await;
    // SOCKS4 has no UDP: its command 3 is refused as before.
    let mut c = send(proxy, b"\x04\x03\x00\x50\x7f\x00\x00\x01\0").await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
}

/// Closing the control connection ends the association: the relay port is
/// closed (free to bind again) and nothing more is relayed.
#[tokio::test]
async fn association_ends_with_its_control_connection() {
    let (_server, proxy) = start(UDP_OPEN).await;
    let (echo, mut seen) = udp_echo(Ipv4Addr::LOCALHOST.into()).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, relay) = associate(proxy, "0.0.0.0:0".parse().unwrap()).await;
    client.send_to(&datagram(0, echo, b"one"), relay).await.unwrap();
    assert!(recv_within(&client, Duration::from_secs(5)).await.is_some());
    next_peer(&mut seen).await;
    drop(control);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::UdpSocket::bind(relay) {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "relay port {relay} still open: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    client.send_to(&datagram(0, echo, b"after"), relay).await.unwrap();
    assert!(recv_within(&client, Duration::from_millis(300)).await.is_none());
    assert!(seen.try_recv().is_err(), "relayed after the association ended");
}
