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
    let (ident_peer, query) = seen.recv().await.unwrap();
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
async fn silent_or_endless_identd_gets_92() {
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
