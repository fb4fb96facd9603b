//! SOCKS5 (RFC 1928, RFC 1929) through an in-process socks4d, in raw bytes:
//! method negotiation, logins, every address type, every reply code the
//! server sends, BIND from the right and the wrong host, truncated and
//! pipelined messages.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

const NO_AUTH: &[u8] = b"\x05\x01\x00";

/// A CONNECT (1), BIND (2) or UDP ASSOCIATE (3) request for an address.
fn request(cmd: u8, dest: SocketAddr) -> Vec<u8> {
    let mut out = vec![5, cmd, 0];
    push_addr(&mut out, dest);
    out
}

/// A request for a host name.
fn request_name(cmd: u8, name: &str, port: u16) -> Vec<u8> {
    let mut out = vec![5, cmd, 0, 3, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out
}

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

/// The exact bytes of a reply naming `bound`.
fn reply5(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![5, code, 0];
    push_addr(&mut out, bound);
    out
}

/// A failure reply: the code and 0.0.0.0:0.
fn refused(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Reads one reply (any address type) within 5 s.
async fn read_reply5(s: &mut TcpStream) -> Vec<u8> {
    let mut head = read_n(s, 5).await;
    let rest = match head[3] {
        1 => 4 + 2 - 1,
        4 => 16 + 2 - 1,
        3 => usize::from(head[4]) + 2,
        other => panic!("reply with address type {other}: {head:?}"),
    };
    head.extend(read_n(s, rest).await);
    head
}

/// The address a reply names (IPv4 or IPv6).
fn reply_addr(reply: &[u8]) -> SocketAddr {
    let (ip, at): (IpAddr, usize) = match reply[3] {
        1 => (Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]).into(), 8),
        4 => (Ipv6Addr::from(<[u8; 16]>::try_from(&reply[4..20]).unwrap()).into(), 20),
        other => panic!("address type {other}"),
    };
    SocketAddr::new(ip, u16::from_be_bytes([reply[at], reply[at + 1]]))
}

/// Greets with "no authentication" and checks that it is selected.
async fn greet(proxy: SocketAddr) -> TcpStream {
    let mut c = send(proxy, NO_AUTH).await;
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    c
}

/// An echo server on `ip`:0 (IPv4 or IPv6) reporting each peer.
async fn echo_on(ip: IpAddr) -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
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

async fn assert_echo(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    assert_eq!(read_n(c, msg.len()).await, msg);
}

#[tokio::test]
async fn connect_ipv4_reply_names_the_outgoing_address() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(1, dest)).await.unwrap();
    let got = read_reply5(&mut c).await;
    assert_eq!(got, reply5(0, next_peer(&mut seen).await));
    assert_echo(&mut c, b"hello through socks5").await;
}

#[tokio::test]
async fn connect_from_the_external_address() {
    let (_server, proxy) = start(&format!("external = [\"127.0.0.2\", \"::1\"]\n{OPEN}")).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(1, dest)).await.unwrap();
    let got = read_reply5(&mut c).await;
    let outgoing = next_peer(&mut seen).await;
    assert_eq!(outgoing.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    assert_eq!(got, reply5(0, outgoing));
}

#[tokio::test]
async fn connect_ipv6_and_ipv4_mapped() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_on(Ipv6Addr::LOCALHOST.into()).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(1, dest)).await.unwrap();
    let got = read_reply5(&mut c).await;
    let outgoing = next_peer(&mut seen).await;
    assert_eq!(outgoing.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(got[3], 4, "an IPv6 outgoing address is named as ATYP 4");
    assert_eq!(got, reply5(0, outgoing));
    assert_echo(&mut c, b"v6").await;

    // ::ffff:127.0.0.1 is the IPv4 host: connected over IPv4, named as IPv4.
    let (dest4, mut seen4) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mapped = SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), dest4.port());
    let mut c = greet(proxy).await;
    c.write_all(&request(1, mapped)).await.unwrap();
    let got = read_reply5(&mut c).await;
    assert_eq!(got, reply5(0, next_peer(&mut seen4).await));
}

#[tokio::test]
async fn mapped_address_cannot_dodge_an_ipv4_deny() {
    let toml = "[[rule]]\naction = \"deny\"\nto = [\"127.0.0.0/8\"]\n[[rule]]\naction = \"allow\"\n";
    let (_server, proxy) = start(toml).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    for addr in [dest, SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), dest.port())] {
        let mut c = greet(proxy).await;
        c.write_all(&request(1, addr)).await.unwrap();
        assert_eq!(read_reply5(&mut c).await, refused(2), "{addr}");
        expect_closed(&mut c).await;
    }
    assert!(seen.try_recv().is_err(), "the denied host saw a connection");
}

#[tokio::test]
async fn connect_by_name_tries_the_allowed_addresses_in_order() {
    // localhost may resolve to ::1 first; only 127.0.0.1 listens, so the
    // server must go on to it. Trailing dot and case are the same name.
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    for name in ["localhost", "LocalHost."] {
        let mut c = greet(proxy).await;
        c.write_all(&request_name(1, name, dest.port())).await.unwrap();
        let got = read_reply5(&mut c).await;
        assert_eq!(got, reply5(0, next_peer(&mut seen).await), "{name}");
        assert_echo(&mut c, b"by name").await;
    }
}

#[tokio::test]
async fn a_name_is_checked_against_the_rules_by_name_and_by_address() {
    let toml = "[[rule]]\naction = \"deny\"\nto = [\"::1\", \"127.0.0.1\"]\n\
                [[rule]]\naction = \"allow\"\nto = [\"localhost\", \"127.0.0.2\"]\n";
    let (_server, proxy) = start(toml).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mut c = greet(proxy).await;
    c.write_all(&request_name(1, "localhost", dest.port())).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, refused(2));
    assert!(seen.try_recv().is_err());
}

/// Every failure code the server sends for CONNECT, each followed by a close.
#[tokio::test]
async fn failure_reply_codes() {
    let toml = "connect_timeout = \"1s\"\nresolve_timeout = \"2s\"\n\
                [[rule]]\naction = \"deny\"\nto = [\"127.0.0.9\"]\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n";
    let (_server, proxy) = start(toml).await;
    let closed = SocketAddr::V4(closed_port());
    let cases: Vec<(&str, Vec<u8>, u8)> = vec![
        ("refused by the rules", request(1, "127.0.0.9:80".parse().unwrap()), 2),
        // TCP to a multicast address fails at once with ENETUNREACH: no packet leaves.
        ("network unreachable", request(1, "224.0.0.1:80".parse().unwrap()), 3),
        ("network unreachable (IPv6)", request(1, "[ff02::1]:80".parse().unwrap()), 3),
        ("name that does not resolve", request_name(1, "nonexistent.invalid", 80), 4),
        ("connection refused", request(1, closed), 5),
        ("port 0", request(1, "127.0.0.1:0".parse().unwrap()), 2),
        ("0.0.0.0", request(1, "0.0.0.0:80".parse().unwrap()), 2),
        ("::", request(1, "[::]:80".parse().unwrap()), 2),
        ("unknown command 4", b"\x05\x04\x00\x01\x7f\x00\x00\x01\x00\x50".to_vec(), 7),
        ("unknown command 0", b"\x05\x00\x00".to_vec(), 7),
        ("address type 2", b"\x05\x01\x00\x02".to_vec(), 8),
        ("address type 255", b"\x05\x01\x00\xff\x00".to_vec(), 8),
        ("a name with a slash", request_name(1, "a/b", 80), 1),
        ("an empty name", b"\x05\x01\x00\x03\x00\x00\x50".to_vec(), 1),
    ];
    for (what, bytes, code) in cases {
        let mut c = greet(proxy).await;
        c.write_all(&bytes).await.unwrap();
        assert_eq!(read_reply5(&mut c).await, refused(code), "{what}");
        expect_closed(&mut c).await;
    }
}

#[tokio::test]
async fn method_negotiation() {
    let (_server, proxy) = start(OPEN).await;
    // 0 methods, and 255 methods none of which we take: 0xFF, then close.
    let mut all_but_no_auth = vec![5, 255];
    all_but_no_auth.extend(1..=255u8);
    for greeting in [vec![5, 0], all_but_no_auth, b"\x05\x01\x02".to_vec(), b"\x05\x02\x01\x80".to_vec()] {
        let mut c = send(proxy, &greeting).await;
        assert_eq!(read_n(&mut c, 2).await, [5, 0xff], "{greeting:?}");
        expect_closed(&mut c).await;
    }
    // 255 methods, "no authentication" last: chosen.
    let mut all = vec![5, 255];
    all.extend((1..=254u8).chain([0]));
    let mut c = send(proxy, &all).await;
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    // Without a users file, curl's "no auth or password" gets no authentication.
    let mut c = send(proxy, b"\x05\x02\x00\x02").await;
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
}

#[tokio::test]
async fn pipelined_greeting_request_and_data() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mut all = NO_AUTH.to_vec();
    all.extend(request(1, dest));
    all.extend_from_slice(b"early bytes");
    let mut c = send(proxy, &all).await;
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    assert_eq!(read_reply5(&mut c).await, reply5(0, next_peer(&mut seen).await));
    assert_eq!(read_n(&mut c, 11).await, b"early bytes");
}

/// A megabyte sent right behind the request is relayed, not taken for a
/// longer request: SOCKS5 messages carry their own lengths.
#[tokio::test]
async fn oversized_pipelined_data_is_relayed() {
    let (_server, proxy) = start(OPEN).await;
    let (dest, _seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mut c = greet(proxy).await;
    let mut all = request(1, dest);
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    all.extend_from_slice(&payload);
    let (mut r, mut w) = c.split();
    let writer = async {
        w.write_all(&all).await.unwrap();
    };
    let reader = async {
        let mut head = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(5), r.read_exact(&mut head)).await.unwrap().unwrap();
        assert_eq!(head[..2], [5, 0]);
        let mut back = vec![0u8; payload.len()];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut back)).await.unwrap().unwrap();
        assert!(back == payload, "relayed bytes differ");
    };
    tokio::join!(writer, reader);
}

#[tokio::test]
async fn longest_name_and_truncated_messages() {
    let (_server, proxy) = start(OPEN).await; // handshake_timeout 500 ms
    // A 255-byte name (the most ATYP 3 can carry) is read whole.
    let name = format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(63));
    assert_eq!(name.len(), 255);
    let mut c = greet(proxy).await;
    c.write_all(&request_name(1, &name, 80)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, refused(4), "does not resolve");
    // Cut off in the greeting, in the request: closed at handshake_timeout, no reply.
    for (bytes, want) in [(&b"\x05\x03\x00"[..], &b""[..]), (b"\x05\x01\x00\x05\x01\x00\x03\x0aexam", b"\x05\x00")] {
        let started = Instant::now();
        let mut c = send(proxy, bytes).await;
        assert_eq!(read_n(&mut c, want.len()).await, want);
        expect_closed(&mut c).await;
        assert!(started.elapsed() >= Duration::from_millis(400), "closed before handshake_timeout");
    }
    // A request of another version after the greeting: not a SOCKS5 client after all, so no
    // reply it could not read, only the close.
    let mut c = greet(proxy).await;
    c.write_all(b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50").await.unwrap();
    expect_closed(&mut c).await;
    // Cut off and then EOF: closed at once.
    let mut c = send(proxy, b"\x05\x01\x00\x05\x01").await;
    c.shutdown().await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 0]);
    expect_closed(&mut c).await;
}

// --- Logins (RFC 1929) ---------------------------------------------------

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A users file made by `htpasswd -B` (apache2-utils): fred/s3cret,
/// alice/wonder.
fn users_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "socks5-users-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users");
    for (i, (user, password)) in [("fred", "s3cret"), ("alice", "wonder")].into_iter().enumerate() {
        let mut cmd = std::process::Command::new("htpasswd");
        cmd.arg("-B").arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd.arg(&path).arg(user).arg(password).output().expect("htpasswd (apache2-utils) runs");
        assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("fred:$2y$"), "htpasswd -B writes bcrypt: {text}");
    path
}

fn login(user: &str, password: &str) -> Vec<u8> {
    let mut out = vec![1, user.len() as u8];
    out.extend_from_slice(user.as_bytes());
    out.push(password.len() as u8);
    out.extend_from_slice(password.as_bytes());
    out
}

/// Greets as curl does (no auth or password), logs in, returns the status.
async fn try_login(proxy: SocketAddr, user: &str, password: &str) -> (TcpStream, u8) {
    let mut c = send(proxy, b"\x05\x02\x00\x02").await;
    assert_eq!(read_n(&mut c, 2).await, [5, 2], "username/password is chosen when there are users");
    c.write_all(&login(user, password)).await.unwrap();
    let status = read_n(&mut c, 2).await;
    assert_eq!(status[0], 1);
    (c, status[1])
}

fn password_config(users: &std::path::Path) -> String {
    format!(
        "users_file = \"{}\"\nhandshake_timeout = \"5s\"\n\
         [[rule]]\nname = \"fred\"\naction = \"allow\"\nauth = \"password\"\nusers = [\"fred\"]\nfrom = [\"127.0.0.0/8\"]\n\
         [[rule]]\nname = \"open\"\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\nto = [\"127.0.0.3\"]\n",
        users.display()
    )
}

#[tokio::test]
async fn good_and_bad_passwords() {
    let users = users_file();
    let (_server, proxy) = start(&password_config(&users)).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;

    let (mut c, status) = try_login(proxy, "fred", "s3cret").await;
    assert_eq!(status, 0);
    c.write_all(&request(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, reply5(0, next_peer(&mut seen).await));
    assert_echo(&mut c, b"logged in").await;

    // alice logs in, but the password rule is fred's.
    let (mut c, status) = try_login(proxy, "alice", "wonder").await;
    assert_eq!(status, 0);
    c.write_all(&request(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, refused(2));

    for (user, password) in [("fred", "wrong"), ("fred", "s3cre"), ("nobody", "s3cret"), ("Fred", "s3cret")] {
        let (mut c, status) = try_login(proxy, user, password).await;
        assert_ne!(status, 0, "{user}/{password}");
        expect_closed(&mut c).await;
    }
    // A malformed login (empty password) fails too.
    let mut c = send(proxy, b"\x05\x01\x02\x01\x04fred\x00").await;
    assert_eq!(read_n(&mut c, 4).await, [5, 2, 1, 1]);
    expect_closed(&mut c).await;
    assert!(seen.try_recv().is_err());
}

/// "No authentication" still works when the client offers nothing better,
/// but then only rules without `auth = "password"` match; a SOCKS4 USERID
/// naming the same user never does.
#[tokio::test]
async fn password_rules_need_a_password() {
    let users = users_file();
    let (_server, proxy) = start(&password_config(&users)).await;
    let (dest, mut seen) = echo_on(Ipv4Addr::LOCALHOST.into()).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(1, dest)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, refused(2));
    // The same without a login, to where the open rule allows: granted.
    let (dest3, mut seen3) = echo_on(Ipv4Addr::new(127, 0, 0, 3).into()).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(1, dest3)).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, reply5(0, next_peer(&mut seen3).await));
    // SOCKS4 with USERID "fred": a claim, not a proof.
    let SocketAddr::V4(dest4) = dest else { unreachable!() };
    let mut c = send(proxy, &common::request(1, dest4, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await, REJECTED);
    assert!(seen.try_recv().is_err());
}

/// An unknown user costs as much time as a wrong password: measured, not
/// assumed (the server checks a dummy hash of the same cost).
#[tokio::test]
async fn unknown_user_takes_as_long_as_a_wrong_password() {
    let users = users_file();
    let (_server, proxy) = start(&password_config(&users)).await;
    let time = |user: &'static str| async move {
        let started = Instant::now();
        let (_c, status) = try_login(proxy, user, "not-the-password").await;
        assert_ne!(status, 0);
        started.elapsed()
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        known.push(time("fred").await);
        unknown.push(time("nobody-by-that-name").await);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[7].as_secs_f64(), unknown[7].as_secs_f64());
    eprintln!("login failure, median of 15: known user {:.2} ms, unknown user {:.2} ms", k * 1e3, u * 1e3);
    assert!(u > 0.6 * k && u < 1.6 * k, "known user {k:.4} s, unknown user {u:.4} s: timing tells them apart");
}

// --- BIND ------------------------------------------------------------------

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = if from.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.bind(SocketAddr::new(from, 0))?;
    s.connect(to).await
}

#[tokio::test]
async fn bind_two_replies_and_relay() {
    let (_server, proxy) = start(&format!("external = \"127.0.0.2\"\n{OPEN}")).await;
    for expected in ["127.0.0.1:21", "0.0.0.0:0"] {
        let mut c = greet(proxy).await;
        c.write_all(&request(2, expected.parse().unwrap())).await.unwrap();
        let first = read_reply5(&mut c).await;
        let bound = reply_addr(&first);
        assert_eq!(first, reply5(0, SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), bound.port())), "{expected}");
        let mut peer = connect_from(Ipv4Addr::LOCALHOST.into(), bound).await.unwrap();
        let second = read_reply5(&mut c).await;
        assert_eq!(second, reply5(0, peer.local_addr().unwrap()));
        peer.write_all(b"from peer").await.unwrap();
        assert_eq!(read_n(&mut c, 9).await, b"from peer");
        c.write_all(b"to peer").await.unwrap();
        assert_eq!(read_n(&mut peer, 7).await, b"to peer");
    }
}

#[tokio::test]
async fn bind_ipv6_and_by_name() {
    let (_server, proxy) = start(OPEN).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(2, "[::1]:21".parse().unwrap())).await.unwrap();
    let first = read_reply5(&mut c).await;
    let bound = reply_addr(&first);
    assert_eq!(bound.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST), "an IPv6 listener toward an IPv6 host");
    let peer = connect_from(Ipv6Addr::LOCALHOST.into(), bound).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, reply5(0, peer.local_addr().unwrap()));

    // By name: the name's addresses may connect back.
    let mut c = greet(proxy).await;
    c.write_all(&request_name(2, "localhost", 21)).await.unwrap();
    let bound = reply_addr(&read_reply5(&mut c).await);
    let peer = connect_from(bound.ip(), bound).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, reply5(0, peer.local_addr().unwrap()));
}

#[tokio::test]
async fn bind_from_the_wrong_host_is_refused() {
    let (_server, proxy) = start(OPEN).await;
    let mut c = greet(proxy).await;
    c.write_all(&request(2, "127.0.0.1:21".parse().unwrap())).await.unwrap();
    let bound = reply_addr(&read_reply5(&mut c).await);
    let mut wrong = connect_from(Ipv4Addr::new(127, 0, 0, 3).into(), bound).await.unwrap();
    assert_eq!(read_reply5(&mut c).await, refused(2));
    expect_closed(&mut c).await;
    expect_closed(&mut wrong).await;
}

#[tokio::test]
async fn bind_without_a_peer_times_out() {
    let (_server, proxy) = start(OPEN).await; // connect_timeout 1 s
    let mut c = greet(proxy).await;
    c.write_all(&request(2, "127.0.0.1:21".parse().unwrap())).await.unwrap();
    assert_eq!(read_reply5(&mut c).await[..2], [5, 0]);
    assert_eq!(read_reply5(&mut c).await, refused(4));
    expect_closed(&mut c).await;
}
