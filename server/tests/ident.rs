//! IDENT (RFC 1413) through an in-process socks4d: a small identd written
//! here (on 127.0.0.1:0, via `ident_port`) and the real oidentd.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the test identd saw: its peer, and the query line.
type Seen = mpsc::UnboundedReceiver<(SocketAddr, String)>;

/// A one-answer-per-connection identd that answers `answer(query)`.
async fn identd(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                let mut line = String::new();
                if s.read_line(&mut line).await.is_ok() {
                    let _ = tx.send((peer, line.clone()));
                    let _ = s.get_mut().write_all(answer(line.trim_end()).as_bytes()).await;
                }
            });
        }
    });
    (port, rx)
}

fn config(ident_port: u16, mode: &str) -> String {
    format!("ident_port = {ident_port}\n{OPEN}ident = \"{mode}\"\n")
}

#[tokio::test]
async fn require_sends_the_rfc_query_and_grants() {
    let (port, mut seen) = identd(|q| format!("{q} : USERID : UNIX : someone\r\n")).await;
    let (_server, proxy) = start(&config(port, "require")).await;
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
    let (ident_peer, query) =
        tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.expect("identd asked in time").unwrap();
    // From the address the client reached, about (client port, proxy port).
    assert_eq!(ident_peer.ip(), proxy.ip());
    assert_eq!(query, format!("{} , {}\r\n", c.local_addr().unwrap().port(), proxy.port()));
}

#[tokio::test]
async fn require_without_identd_gets_92() {
    let (_server, proxy) = start(&config(closed_port().port(), "require")).await;
    let (dest, mut d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await, [0, 92, 0, 0, 0, 0, 0, 0]);
    expect_closed(&mut c).await;
    assert!(d.try_recv().is_err());
}

#[tokio::test]
async fn require_with_ident_error_gets_92() {
    let (port, _seen) = identd(|q| format!("{q} : ERROR : HIDDEN-USER\r\n")).await;
    let (_server, proxy) = start(&config(port, "require")).await;
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await, [0, 92, 0, 0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn overlong_or_unended_line_gets_92() {
    // No end of line within 1000 characters.
    let (port, _seen) = identd(|_| "x".repeat(2000)).await;
    let (_server, proxy) = start(&config(port, "require")).await;
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await[1], 92);
    // Closes without ending the line.
    let (port, _seen) = identd(|_| String::new()).await;
    let (_server, proxy) = start(&config(port, "require")).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await[1], 92);
}

/// An identd that answers `line` (no end of line in it) in pieces, 20 ms apart, then `\r\n`:
/// socks4d must put the pieces together and measure the whole line.
async fn dribbling_identd(line: impl Fn(&str) -> String + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let line = std::sync::Arc::new(line);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let line = line.clone();
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                let mut query = String::new();
                if s.read_line(&mut query).await.is_err() {
                    return;
                }
                let answer = line(query.trim_end());
                for piece in answer.as_bytes().chunks(300).chain([&b"\r\n"[..]]) {
                    if s.get_mut().write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    port
}

/// `query : USERID : UNIX : someone`, padded with blanks (which the parser trims) to `len`.
fn padded_answer(query: &str, len: usize) -> String {
    let head = format!("{query} : USERID : UNIX");
    let tail = " : someone";
    format!("{head}{}{tail}", " ".repeat(len - head.len() - tail.len()))
}

/// RFC 1413's limit is 1000 characters without the end of line: a line of exactly 1000 that
/// arrives in pieces is an answer; 1001 is too long (92).
#[tokio::test]
async fn line_limit_is_exactly_1000_characters_across_pieces() {
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    for (len, code) in [(1000, 90), (1001, 92)] {
        let port = dribbling_identd(move |q| padded_answer(q, len)).await;
        let (_server, proxy) = start(&config(port, "match")).await;
        let mut c = send(proxy, &request(1, dest, b"someone", None)).await;
        assert_eq!(read_reply(&mut c).await[1], code, "a line of {len} characters");
    }
}

/// How an identd that never gives a whole answer behaves.
#[derive(Clone, Copy)]
enum Stuck {
    /// Listens but never accepts: the kernel completes the connection, nobody reads.
    NeverAccepts,
    /// Accepts and reads the query, then says nothing.
    Silent,
    /// Answers a byte stream without end, never a newline.
    Endless,
}

/// An identd stuck in `how`; returns its port. Lives as long as the test's runtime.
async fn stuck_identd(how: Stuck) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        if let Stuck::NeverAccepts = how {
            let _keep = listener;
            return std::future::pending::<()>().await;
        }
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                let mut line = String::new();
                let _ = s.read_line(&mut line).await;
                match how {
                    Stuck::Endless => {
                        let chunk = [b'x'; 64];
                        while s.get_mut().write_all(&chunk).await.is_ok() {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    _ => {
                        let _keep = s;
                        std::future::pending::<()>().await
                    }
                }
            });
        }
    });
    port
}

/// A stuck identd is a failed IDENT (92), never a pass: for `require` and
/// `match`, within about `ident_timeout` (1 s in these configs), and the
/// destination hears nothing.
#[tokio::test]
async fn stuck_identd_gets_92_at_the_time_limit() {
    for how in [Stuck::NeverAccepts, Stuck::Silent, Stuck::Endless] {
        for mode in ["require", "match"] {
            let port = stuck_identd(how).await;
            let (_server, proxy) = start(&config(port, mode)).await;
            let (dest, mut d) = echo_server(Ipv4Addr::LOCALHOST).await;
            let started = std::time::Instant::now();
            let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
            assert_eq!(read_reply(&mut c).await, [0, 92, 0, 0, 0, 0, 0, 0], "{mode}");
            let took = started.elapsed();
            expect_closed(&mut c).await;
            assert!(d.try_recv().is_err(), "{mode}: the destination was reached");
            // The endless talker may be cut earlier, by the line limit.
            if !matches!(how, Stuck::Endless) {
                assert!(took >= Duration::from_millis(900), "{mode}: 92 after {took:?}, before ident_timeout");
            }
            assert!(took < Duration::from_secs(4), "{mode}: 92 only after {took:?}");
        }
    }
}

#[tokio::test]
async fn match_compares_user_ids() {
    let (port, _seen) = identd(|q| format!("{q} : USERID : UNIX : fred\r\n")).await;
    let (_server, proxy) = start(&config(port, "match")).await;
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, b"fred", None)).await;
    assert_eq!(read_reply(&mut c).await[..2], [0, 90]);
    let mut c = send(proxy, &request(1, dest, b"mallory", None)).await;
    assert_eq!(read_reply(&mut c).await, [0, 93, 0, 0, 0, 0, 0, 0]);
    expect_closed(&mut c).await;
}

/// The real oidentd on a private port, killed by PID on drop.
struct Oidentd(Child);

impl Drop for Oidentd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn real_oidentd_reports_our_user() {
    let port = closed_port().port();
    let child = Command::new("oidentd")
        .args(["-i", "-S", "-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("oidentd is installed by scripts/test");
    let _oidentd = Oidentd(child);
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "oidentd did not start on port {port}");
    // oidentd answers with the login of the socket's owner: whoever runs this test.
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
    let (_server, proxy) = start(&config(port, "match")).await;
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut c = send(proxy, &request(1, dest, me.as_bytes(), None)).await;
    assert_eq!(read_reply(&mut c).await[..2], [0, 90], "oidentd should report {me:?}");
    let mut c = send(proxy, &request(1, dest, b"not-the-owner", None)).await;
    assert_eq!(read_reply(&mut c).await, [0, 93, 0, 0, 0, 0, 0, 0]);
}

/// SOCKS5 clients meet the same IDENT checks: `require` asks identd and
/// grants; `match` compares identd's answer with the login name (empty
/// without a login), and a failure is 0x02 and a close. A UDP association
/// runs the check its rules ask for too.
#[tokio::test]
async fn socks5_sessions_are_checked_too() {
    let (port, mut seen) = identd(|q| format!("{q} : USERID : UNIX : someone\r\n")).await;
    let (dest, _d) = echo_server(Ipv4Addr::LOCALHOST).await;
    let mut connect = vec![5, 1, 0, 1];
    connect.extend_from_slice(&dest.ip().octets());
    connect.extend_from_slice(&dest.port().to_be_bytes());
    let greet = |proxy| async move {
        let mut c = send(proxy, b"\x05\x01\x00").await;
        assert_eq!(read_n(&mut c, 2).await, [5, 0]);
        c
    };

    let (_server, proxy) = start(&config(port, "require")).await;
    let mut c = greet(proxy).await;
    c.write_all(&connect).await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 0], "require: identd answered");
    let (_, query) = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
    assert_eq!(query, format!("{} , {}\r\n", c.local_addr().unwrap().port(), proxy.port()));
    // UDP ASSOCIATE under the same rule: IDENT asked, association granted.
    let mut c = greet(proxy).await;
    c.write_all(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00").await.unwrap();
    assert_eq!(read_n(&mut c, 2).await, [5, 0], "udp: identd answered");
    assert!(tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().is_some());

    // match: identd says "someone", the session has no login: refused.
    let (_server, proxy) = start(&config(port, "match")).await;
    let mut c = greet(proxy).await;
    c.write_all(&connect).await.unwrap();
    assert_eq!(read_n(&mut c, 10).await, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect_closed(&mut c).await;

    // require with no identd: refused, for CONNECT and for UDP.
    let (_server, proxy) = start(&config(closed_port().port(), "require")).await;
    for request in [connect.clone(), b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00".to_vec()] {
        let mut c = greet(proxy).await;
        c.write_all(&request).await.unwrap();
        assert_eq!(read_n(&mut c, 10).await, [5, 2, 0, 1, 0, 0, 0, 0, 0, 0], "{request:?}");
        expect_closed(&mut c).await;
    }
}
