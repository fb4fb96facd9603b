//! socks4d in production, in-process on loopback: `/metrics` scraped over
//! HTTP before and after known traffic (the counters move by exactly what
//! was sent), the endpoint's bounds, the PROXY protocol from trusted and
//! untrusted sources (spoofing refused either way, malformed headers
//! refused, the real client used by the rules and IDENT), `advertise` in
//! BIND replies, and `max_sessions_per_client`.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use socks4_proto::proxy::{Endpoints, Header, Transport};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The in-process server with `/metrics` on 127.0.0.1:0.
async fn start_with_metrics(toml: &str) -> (socks4_server::Server, SocketAddr, SocketAddr) {
    let (server, proxy) = start(&format!("metrics = \"127.0.0.1:0\"\n{toml}")).await;
    let metrics = server.metrics_addr().expect("metrics listener");
    (server, proxy, metrics)
}

/// One HTTP exchange: sends `request`, returns the whole answer (the server closes).
async fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer");
    String::from_utf8(answer).unwrap()
}

/// Scrapes `/metrics`: every sample line `name{labels} value`, by series.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// How much `series` moved between two scrapes (absent = 0).
fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

/// Scrapes until no session is live (their counts are added when they end), within 5 s.
async fn scrape_settled(addr: SocketAddr) -> HashMap<String, f64> {
    let start = Instant::now();
    loop {
        let m = scrape(addr).await;
        if m["socks4d_sessions_live"] == 0.0 {
            return m;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "sessions still live: {m:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sessions(protocol: &str, command: &str, reply: &str) -> String {
    format!("socks4d_sessions_total{{protocol=\"{protocol}\",command=\"{command}\",reply=\"{reply}\"}}")
}

const RULES: &str = r#"
connect_timeout = "1s"
handshake_timeout = "1s"
resolve_timeout = "2s"
[[rule]]
name = "no-closed"
action = "deny"
to = ["127.0.0.9"]
[[rule]]
name = "lo"
action = "allow"
from = ["127.0.0.0/8"]
"#;

/// Every kind of session moves its counters by exactly one, the bytes by
/// exactly what crossed, and nothing else moves.
#[tokio::test]
async fn metrics_count_exactly_what_was_sent() {
    let (_server, proxy, metrics) = start_with_metrics(RULES).await;
    let before = scrape_settled(metrics).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;

    // Three relays: 10 bytes up and echoed back each.
    for _ in 0..3 {
        let mut c = send(proxy, &request(1, dest, b"", None)).await;
        assert_eq!(read_reply(&mut c).await[1], 90);
        c.write_all(b"0123456789").await.unwrap();
        assert_eq!(read_n(&mut c, 10).await, b"0123456789");
    }
    // A refusal by the deny rule, an unresolvable SOCKS4A name (no rule can
    // refuse it before the lookup), and a non-SOCKS client.
    let mut c = send(proxy, &request(1, SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 80), b"", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    let name = request(1, SocketAddrV4::new(Ipv4Addr::new(0, 0, 0, 1), 80), b"", Some("no-such-host.invalid"));
    let mut c = send(proxy, &name).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    let mut c = send(proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    expect_closed(&mut c).await;

    let after = scrape_settled(metrics).await;
    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d(&sessions("socks4", "connect", "90")), 3.0);
    assert_eq!(d(&sessions("socks4", "connect", "91")), 2.0);
    assert_eq!(d(&sessions("none", "none", "none")), 1.0);
    assert_eq!(d("socks4d_relayed_bytes_total{direction=\"up\"}"), 30.0);
    assert_eq!(d("socks4d_relayed_bytes_total{direction=\"down\"}"), 30.0);
    // Five replies sent, each one handshake.
    assert_eq!(d("socks4d_handshake_seconds_count"), 5.0);
    assert_eq!(d("socks4d_handshake_seconds_bucket{le=\"+Inf\"}"), 5.0);
    assert!(d("socks4d_handshake_seconds_sum") > 0.0);
    assert_eq!(d("socks4d_rule_hits_total{rule=\"lo\",action=\"allow\"}"), 3.0);
    assert_eq!(d("socks4d_rule_hits_total{rule=\"no-closed\",action=\"deny\"}"), 1.0);
    assert_eq!(d("socks4d_rule_misses_total"), 0.0);
    assert_eq!(d("socks4d_name_lookups_total{result=\"failed\"}"), 1.0);
    assert_eq!(d("socks4d_name_lookups_total{result=\"ok\"}"), 0.0);
    // Nothing else moved.
    let moved: Vec<_> = after
        .keys()
        .filter(|k| d(k) != 0.0)
        .filter(|k| !k.starts_with("socks4d_handshake_seconds_bucket"))
        .cloned()
        .collect();
    assert_eq!(moved.len(), 10, "{moved:#?}");
    assert_eq!(after["socks4d_sessions_live"], 0.0);
}

/// The live gauge counts sessions while they run.
#[tokio::test]
async fn live_sessions_gauge() {
    let (_server, proxy, metrics) = start_with_metrics(RULES).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut c = send(proxy, &request(1, dest, b"", None)).await;
        assert_eq!(read_reply(&mut c).await[1], 90);
        open.push(c);
    }
    assert_eq!(scrape(metrics).await["socks4d_sessions_live"], 4.0);
    drop(open);
    assert_eq!(scrape_settled(metrics).await["socks4d_sessions_live"], 0.0);
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let (server, _proxy) = start(RULES).await;
    assert!(server.metrics_addr().is_none() && server.metrics().is_none());
}

/// Only GET/HEAD /metrics; bounded heads; a silent scraper is answered 408
/// after 5 s, and sessions are served meanwhile.
#[tokio::test]
async fn metrics_endpoint_is_bounded() {
    let (_server, proxy, metrics) = start_with_metrics(RULES).await;
    assert!(http(metrics, b"GET / HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404 "));
    let post = http(metrics, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"), "{post}");
    assert!(http(metrics, b"\x04\x01\x00\x50\x7f\0\0\x01\0\r\n\r\n").await.starts_with("HTTP/1.1 400 "));
    let head = http(metrics, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 9000));
    assert!(http(metrics, &big).await.starts_with("HTTP/1.1 431 "));

    let silent_since = Instant::now();
    let silent = tokio::spawn(async move { http(metrics, b"GET /metr").await });
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"", None)).await;
    assert_eq!(read_reply(&mut c).await[1], 90);
    let answer = silent.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let waited = silent_since.elapsed();
    assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(8), "{waited:?}");
}

/// A SOCKS client connecting from `source` (a loopback address).
async fn connect_from(source: Ipv4Addr, proxy: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(proxy).await.unwrap()
}

fn v2_header(client: &str, reached: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let e = Endpoints::new(client.parse().unwrap(), reached.parse().unwrap()).unwrap();
    Header::V2Proxy(Transport::Stream(e)).encode(&mut out);
    out
}

fn v1_header(client: &str, reached: &str) -> Vec<u8> {
    let mut out = Vec::new();
    Header::V1(Endpoints::new(client.parse().unwrap(), reached.parse().unwrap())).encode(&mut out);
    out
}

/// The balancer is 127.0.0.1; rules about the real clients, which the
/// PROXY header names (TEST-NET addresses nobody can connect from here).
const BEHIND: &str = r#"
handshake_timeout = "1s"
connect_timeout = "1s"
proxy_protocol_from = ["127.0.0.1"]
[[rule]]
name = "alice"
action = "allow"
from = ["192.0.2.1"]
[[rule]]
name = "direct"
action = "allow"
from = ["127.0.0.2"]
"#;

/// Through a trusted balancer, the header's client is the one the rules
/// see: one real client is allowed, another denied, over the same
/// balancer connection source; v1 and v2 alike, with the request in the
/// same segment as the header or after it.
#[tokio::test]
async fn rules_apply_to_the_client_the_header_names() {
    let (_server, proxy, metrics) = start_with_metrics(BEHIND).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    for header in [v2_header("192.0.2.1:40000", "198.51.100.1:1080"), v1_header("192.0.2.1:40000", "198.51.100.1:1080")]
    {
        // Header and request in one write.
        let mut bytes = header.clone();
        bytes.extend_from_slice(&request(1, dest, b"", None));
        let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
        c.write_all(&bytes).await.unwrap();
        assert_eq!(read_reply(&mut c).await[1], 90);
        c.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut c, 4).await, b"ping");
        // Header, then the request in a later segment.
        let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
        c.write_all(&header).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.write_all(&request(1, dest, b"", None)).await.unwrap();
        assert_eq!(read_reply(&mut c).await[1], 90);
    }
    // Another real client through the same balancer: no rule allows it.
    let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
    let mut bytes = v2_header("192.0.2.66:40000", "198.51.100.1:1080");
    bytes.extend_from_slice(&request(1, dest, b"", None));
    c.write_all(&bytes).await.unwrap();
    assert_eq!(read_reply(&mut c).await, REJECTED);
    let m = scrape_settled(metrics).await;
    assert_eq!(m["socks4d_proxy_headers_total{result=\"v2\"}"], 3.0);
    assert_eq!(m["socks4d_proxy_headers_total{result=\"v1\"}"], 2.0);
    assert_eq!(m["socks4d_rule_hits_total{rule=\"alice\",action=\"allow\"}"], 4.0);
    assert_eq!(m["socks4d_rule_misses_total"], 1.0);
}

/// No spoofing either way: a trusted source without a header, and an
/// untrusted source with one, are closed without a reply and counted;
/// an untrusted source without a header is an ordinary client.
#[tokio::test]
async fn spoofing_is_refused_either_way() {
    let (_server, proxy, metrics) = start_with_metrics(BEHIND).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    // The balancer's address speaking SOCKS directly (a client on the balancer's host).
    let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
    c.write_all(&request(1, dest, b"", None)).await.unwrap();
    expect_closed(&mut c).await;
    // 127.0.0.2 is not trusted: it cannot claim to relay alice, in either version.
    for forged in [v2_header("192.0.2.1:40000", "198.51.100.1:1080"), v1_header("192.0.2.1:40000", "198.51.100.1:1080")]
    {
        let mut bytes = forged;
        bytes.extend_from_slice(&request(1, dest, b"", None));
        let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 2), proxy).await;
        c.write_all(&bytes).await.unwrap();
        expect_closed(&mut c).await;
    }
    // The same source without a header is served as itself.
    let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 2), proxy).await;
    c.write_all(&request(1, dest, b"", None)).await.unwrap();
    assert_eq!(read_reply(&mut c).await[1], 90);
    assert_eq!(next_peer(&mut seen).await.ip(), std::net::IpAddr::from(Ipv4Addr::LOCALHOST));
    assert!(seen.try_recv().is_err(), "a refused connection reached the destination");
    drop(c);
    let m = scrape_settled(metrics).await;
    assert_eq!(m["socks4d_proxy_headers_total{result=\"missing\"}"], 1.0);
    assert_eq!(m["socks4d_proxy_headers_total{result=\"untrusted\"}"], 2.0);
    assert_eq!(m["socks4d_rule_hits_total{rule=\"direct\",action=\"allow\"}"], 1.0);
}

/// Malformed or unusable headers from the trusted source: closed without a
/// reply, nothing reaches the destination.
#[tokio::test]
async fn malformed_headers_are_refused() {
    let (_server, proxy, metrics) = start_with_metrics(BEHIND).await;
    let (dest, mut seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut tlv_overrun = v2_header("192.0.2.1:40000", "198.51.100.1:1080");
    tlv_overrun[15] += 4;
    tlv_overrun.extend_from_slice(b"\x05\x00\x09a");
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x10\x00".to_vec();
    oversized.resize(16 + 4096, 0);
    let cases: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 192.0.2.1 198.51.100.1 40000 1080\n".to_vec(),
        b"PROXY TCP4 192.0.2.01 198.51.100.1 40000 1080\r\n".to_vec(),
        b"PROXY TCP6 192.0.2.1 198.51.100.1 40000 1080\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c".to_vec(),
        b"\r\n\r\n\0\r\nQUIT\n\x21\x12\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x01\x9c\x40\x04\x38".to_vec(),
        tlv_overrun,
        oversized,
        format!("PROXY UNKNOWN {}\r\n", "x".repeat(120)).into_bytes(),
    ];
    for header in &cases {
        let mut bytes = header.clone();
        bytes.extend_from_slice(&request(1, dest, b"", None));
        let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
        c.write_all(&bytes).await.unwrap();
        expect_closed(&mut c).await;
    }
    // Half a header, then silence: closed at handshake_timeout.
    let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
    c.write_all(b"PROXY TCP4 192.0.2.1").await.unwrap();
    let since = Instant::now();
    expect_closed(&mut c).await;
    assert!(since.elapsed() >= Duration::from_millis(800), "{:?}", since.elapsed());
    assert!(seen.try_recv().is_err(), "a refused connection reached the destination");
    let m = scrape_settled(metrics).await;
    assert_eq!(m["socks4d_proxy_headers_total{result=\"invalid\"}"], cases.len() as f64 + 1.0);
    assert_eq!(m["socks4d_proxy_headers_total{result=\"v2\"}"], 0.0);
}

/// A v2 LOCAL header (HAProxy's health check) is the balancer's own
/// connection: accepted, not counted as a session.
#[tokio::test]
async fn health_checks_are_accepted_quietly() {
    let (_server, proxy, metrics) = start_with_metrics(BEHIND).await;
    for _ in 0..3 {
        let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
        c.write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00").await.unwrap();
        c.shutdown().await.unwrap();
        expect_closed(&mut c).await;
    }
    let m = scrape_settled(metrics).await;
    assert_eq!(m["socks4d_proxy_headers_total{result=\"local\"}"], 3.0);
    let sessions: f64 = m.iter().filter(|(k, _)| k.starts_with("socks4d_sessions_total")).map(|(_, v)| v).sum();
    assert_eq!(sessions, 0.0);
}

/// IDENT asks identd on the real client's host about the client's own
/// connection: its port, and the port it reached on the balancer.
#[tokio::test]
async fn ident_is_asked_of_the_real_client() {
    // identd on the real client's host, not the balancer's.
    let listener = TcpListener::bind("127.0.0.3:0").await.unwrap();
    let ident_port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                let mut line = String::new();
                if s.read_line(&mut line).await.is_ok() {
                    let _ = tx.send((peer, line.clone()));
                    let answer = format!("{} : USERID : UNIX : alice\r\n", line.trim_end());
                    let _ = s.get_mut().write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    let config = format!(
        "ident_port = {ident_port}\nhandshake_timeout = \"1s\"\nproxy_protocol_from = [\"127.0.0.1\"]\n\
         [[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.3\"]\nident = \"match\"\n"
    );
    let (_server, proxy, metrics) = start_with_metrics(&config).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    // A CONNECT from the real client's port `port` claiming `user`, through the balancer:
    // the reply code.
    let ask = async |port: u16, user: &[u8]| {
        let mut bytes = v2_header(&format!("127.0.0.3:{port}"), "127.0.0.1:1080");
        bytes.extend_from_slice(&request(1, dest, user, None));
        let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
        c.write_all(&bytes).await.unwrap();
        read_reply(&mut c).await[1]
    };
    assert_eq!(ask(40001, b"alice").await, 90);
    let (_peer, query) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(query, "40001 , 1080\r\n");
    // identd says alice: a claim of bob is a mismatch.
    assert_eq!(ask(40002, b"bob").await, 93);
    // And alice once more: two answers that matched, one that did not.
    assert_eq!(ask(40003, b"alice").await, 90);
    let m = scrape_settled(metrics).await;
    assert_eq!(m["socks4d_ident_lookups_total{result=\"ok\"}"], 2.0);
    assert_eq!(m["socks4d_ident_lookups_total{result=\"mismatch\"}"], 1.0);
}

/// `advertise` replaces the address of BIND's first reply; the port is the
/// listener's, which really takes the connection.
#[tokio::test]
async fn advertise_names_the_address_in_front_of_the_bind_listener() {
    let (_server, proxy) = start(&format!("advertise = \"203.0.113.7\"\n{OPEN}")).await;
    let mut c = send(proxy, &request(2, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 21), b"", None)).await;
    let first = read_reply(&mut c).await;
    assert_eq!(first[..2], [0, 90]);
    assert_eq!(first[4..], [203, 0, 113, 7]);
    let port = u16::from_be_bytes([first[2], first[3]]);
    // The listener is on the address CONNECTs to 127.0.0.1 come from.
    let mut peer = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.unwrap();
    let second = read_reply(&mut c).await;
    assert_eq!(second, reply(90, v4(peer.local_addr().unwrap())));
    peer.write_all(b"hi").await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, b"hi");
    // Without advertise: the listener's own address.
    let (_server, proxy) = start(OPEN).await;
    let mut c = send(proxy, &request(2, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 21), b"", None)).await;
    assert_eq!(read_reply(&mut c).await[4..], [127, 0, 0, 1]);
}

/// One client address cannot take more than `max_sessions_per_client`
/// sessions; others are not affected; a place frees when a session ends.
/// Behind a balancer the count is per real client.
#[tokio::test]
async fn max_sessions_per_client() {
    let config = format!("max_sessions_per_client = 2\nproxy_protocol_from = [\"127.0.0.4\"]\n{OPEN}");
    let (_server, proxy, metrics) = start_with_metrics(&config).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let open_from = |source: Ipv4Addr| async move {
        let mut c = connect_from(source, proxy).await;
        c.write_all(&request(1, dest, b"", None)).await.unwrap();
        let code = read_reply(&mut c).await[1];
        (c, code)
    };
    let (a1, code) = open_from(Ipv4Addr::LOCALHOST).await;
    assert_eq!(code, 90);
    let (_a2, code) = open_from(Ipv4Addr::LOCALHOST).await;
    assert_eq!(code, 90);
    let (mut a3, code) = open_from(Ipv4Addr::LOCALHOST).await;
    assert_eq!(code, 91);
    expect_closed(&mut a3).await;
    let (_b1, code) = open_from(Ipv4Addr::new(127, 0, 0, 2)).await;
    assert_eq!(code, 90);
    drop(a1);
    let start = Instant::now();
    loop {
        let (_a, code) = open_from(Ipv4Addr::LOCALHOST).await;
        if code == 90 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the closed session's place was not freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Through the balancer 127.0.0.4: each real client has its own two places.
    let via = |client: &'static str| async move {
        let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 4), proxy).await;
        let mut bytes = v2_header(client, "198.51.100.1:1080");
        bytes.extend_from_slice(&request(1, dest, b"", None));
        c.write_all(&bytes).await.unwrap();
        let code = read_reply(&mut c).await[1];
        (c, code)
    };
    let held = [via("127.0.0.5:1").await, via("127.0.0.5:2").await, via("127.0.0.6:1").await];
    assert_eq!(held.iter().map(|(_, code)| *code).collect::<Vec<_>>(), [90, 90, 90]);
    assert_eq!(via("127.0.0.5:3").await.1, 91);
    let m = scrape(metrics).await;
    assert!(m["socks4d_refused_connections_total{reason=\"max_sessions_per_client\"}"] >= 2.0);
}

// --- SOCKS5 -----------------------------------------------------------------

/// A SOCKS5 CONNECT (or another `cmd`) to an IPv4 `dest`.
fn request5(cmd: u8, dest: SocketAddrV4) -> Vec<u8> {
    let mut out = vec![5, cmd, 0, 1];
    out.extend_from_slice(&dest.ip().octets());
    out.extend_from_slice(&dest.port().to_be_bytes());
    out
}

/// Reads a SOCKS5 reply with an IPv4 address (10 bytes): (code, address).
async fn read_reply5(c: &mut TcpStream) -> (u8, SocketAddrV4) {
    let r = read_n(c, 10).await;
    assert_eq!((r[0], r[3]), (5, 1), "{r:?}");
    (r[1], SocketAddrV4::new(Ipv4Addr::new(r[4], r[5], r[6], r[7]), u16::from_be_bytes([r[8], r[9]])))
}

/// Greets offering `methods`, returns the connection and the chosen method.
async fn greet5(c: &mut TcpStream, methods: &[u8]) -> u8 {
    let mut g = vec![5, methods.len() as u8];
    g.extend_from_slice(methods);
    c.write_all(&g).await.unwrap();
    let m = read_n(c, 2).await;
    assert_eq!(m[0], 5);
    m[1]
}

/// SOCKS5 sessions are counted under their protocol with the RFC 1928 reply codes.
#[tokio::test]
async fn socks5_sessions_are_counted_with_their_reply_codes() {
    let (_server, proxy, metrics) = start_with_metrics(RULES).await;
    let before = scrape_settled(metrics).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut c, &[0]).await, 0);
    c.write_all(&request5(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await.0, 0);
    c.write_all(b"abc").await.unwrap();
    assert_eq!(read_n(&mut c, 3).await, b"abc");
    drop(c);
    let mut c = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut c, &[0]).await, 0);
    c.write_all(&request5(1, closed_port())).await.unwrap();
    assert_eq!(read_reply5(&mut c).await.0, 5);
    drop(c);
    let after = scrape_settled(metrics).await;
    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d(&sessions("socks5", "connect", "0")), 1.0);
    assert_eq!(d(&sessions("socks5", "connect", "5")), 1.0);
    assert_eq!(d("socks4d_relayed_bytes_total{direction=\"up\"}"), 3.0);
    assert_eq!(d("socks4d_handshake_seconds_count"), 2.0);
    assert_eq!(d("socks4d_rule_hits_total{rule=\"lo\",action=\"allow\"}"), 2.0);
}

/// Over `max_sessions_per_client`, a SOCKS5 client is offered no login (no
/// password check spent on it) and its request gets reply 2, "connection
/// not allowed by ruleset".
#[tokio::test]
async fn socks5_over_the_per_client_cap_gets_reply_2_without_a_login() {
    let dir = std::env::temp_dir().join(format!("socks4d-production-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let users = dir.join("users");
    std::fs::write(&users, "fred:$2y$05$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS\n").unwrap();
    let config = format!("max_sessions_per_client = 1\nusers_file = \"{}\"\n{RULES}", users.display());
    let (_server, proxy, metrics) = start_with_metrics(&config).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut held = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut held, &[0]).await, 0);
    held.write_all(&request5(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut held).await.0, 0);
    // A second client offering a login too: with a place free it would get
    // username/password (0x02); over the cap it gets no login.
    let mut over = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut over, &[0, 2]).await, 0);
    over.write_all(&request5(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut over).await.0, 2);
    expect_closed(&mut over).await;
    drop(held);
    let m = scrape_settled(metrics).await;
    assert_eq!(m["socks4d_refused_connections_total{reason=\"max_sessions_per_client\"}"], 1.0);
    assert_eq!(m[&sessions("socks5", "connect", "2")], 1.0);
    // Its place free again, the same offer gets the login.
    let mut c = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut c, &[0, 2]).await, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `advertise` in SOCKS5: BIND's first reply and UDP ASSOCIATE's reply name
/// the advertised address with the socket's own port.
#[tokio::test]
async fn socks5_bind_and_udp_replies_carry_the_advertised_address() {
    let config = format!("advertise = \"203.0.113.7\"\n{OPEN}commands = [\"connect\", \"bind\", \"udp\"]\n");
    let (_server, proxy) = start(&config).await;
    let mut c = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut c, &[0]).await, 0);
    c.write_all(&request5(2, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 21))).await.unwrap();
    let (code, bound) = read_reply5(&mut c).await;
    assert_eq!((code, *bound.ip()), (0, Ipv4Addr::new(203, 0, 113, 7)));
    let peer = TcpStream::connect((Ipv4Addr::LOCALHOST, bound.port())).await.unwrap();
    let (code, from) = read_reply5(&mut c).await;
    assert_eq!((code, from), (0, v4(peer.local_addr().unwrap())));

    let mut u = TcpStream::connect(proxy).await.unwrap();
    assert_eq!(greet5(&mut u, &[0]).await, 0);
    u.write_all(&request5(3, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))).await.unwrap();
    let (code, relay) = read_reply5(&mut u).await;
    assert_eq!((code, *relay.ip()), (0, Ipv4Addr::new(203, 0, 113, 7)));
    // The port is the relay socket's: a datagram to it on loopback is relayed.
    let udp_echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = v4(udp_echo.local_addr().unwrap());
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut datagram = vec![0, 0, 0, 1];
    datagram.extend_from_slice(&echo_addr.ip().octets());
    datagram.extend_from_slice(&echo_addr.port().to_be_bytes());
    datagram.extend_from_slice(b"ping");
    client.send_to(&datagram, (Ipv4Addr::LOCALHOST, relay.port())).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp_echo.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"ping");
}

/// Behind a balancer, SOCKS5 works the same: the header, then the greeting
/// and the request, all in one segment; the rules see the real client.
#[tokio::test]
async fn socks5_behind_the_balancer() {
    let (_server, proxy, metrics) = start_with_metrics(BEHIND).await;
    let (dest, _seen) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut bytes = v2_header("192.0.2.1:40000", "198.51.100.1:1080");
    bytes.extend_from_slice(&[5, 1, 0]);
    let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
    c.write_all(&bytes).await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    c.write_all(&request5(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await.0, 0);
    drop(c);
    let mut bytes = v2_header("192.0.2.66:40000", "198.51.100.1:1080");
    bytes.extend_from_slice(&[5, 1, 0]);
    let mut c = connect_from(Ipv4Addr::LOCALHOST, proxy).await;
    c.write_all(&bytes).await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    c.write_all(&request5(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await.0, 2);
    drop(c);
    let m = scrape_settled(metrics).await;
    assert_eq!(m[&sessions("socks5", "connect", "0")], 1.0);
    assert_eq!(m[&sessions("socks5", "connect", "2")], 1.0);
    assert_eq!(m["socks4d_rule_hits_total{rule=\"alice\",action=\"allow\"}"], 1.0);
}
