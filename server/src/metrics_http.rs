//! The `/metrics` endpoint: a minimal HTTP/1.x server on a listener of its
//! own (`metrics = "ADDR:PORT"`), for Prometheus to scrape.
//!
//! It runs on the daemon's control runtime, never on a session thread, so
//! a slow or hostile scraper cannot delay a session. Everything a scraper
//! controls is bounded: the request head (`MAX_REQUEST` bytes), the time to
//! send it and to read the answer (`IO_LIMIT` each), and the scrapes served
//! at once (`MAX_SCRAPES`; one more is closed at once). Only `GET` (and
//! `HEAD`) of `/metrics` is served; the answer always closes the connection.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Longest request head read (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time limit for receiving the request head, and again for sending the answer.
pub const IO_LIMIT: Duration = Duration::from_secs(5);
/// Scrapes served at once.
pub const MAX_SCRAPES: usize = 8;
/// After an accept error such as EMFILE, wait before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// `GET /metrics` (`head`: HEAD, the same answer without its body).
    Metrics {
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    Malformed,
}

/// Reads the request line of a complete head (`\r\n\r\n` or `\n\n` seen).
fn parse(head: &[u8]) -> Request {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else { return Request::Malformed };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Malformed;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Malformed;
    }
    let head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    // A query string (Prometheus sends none, a person might) changes nothing.
    match target.split('?').next() {
        Some("/metrics") => Request::Metrics { head },
        _ => Request::NotFound,
    }
}

/// Whether `buf` holds a whole request head.
fn head_complete(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

fn response(status: &str, content_type: &str, extra: &str, body: &str, with_body: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn plain(status: &str, extra: &str, body: &str) -> Vec<u8> {
    response(status, "text/plain; charset=utf-8", extra, body, true)
}

/// Answers one connection.
async fn scrape(mut stream: TcpStream, metrics: &Arc<Metrics>) {
    let mut buf = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            if head_complete(&buf) {
                return Ok::<bool, io::Error>(true);
            }
            if buf.len() > MAX_REQUEST {
                return Ok(false);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let answer = match tokio::time::timeout(IO_LIMIT, read).await {
        Err(_) => plain("408 Request Timeout", "", "request head not received in time\n"),
        Ok(Err(_)) => return,
        Ok(Ok(false)) => plain("431 Request Header Fields Too Large", "", "request head too large\n"),
        Ok(Ok(true)) => match parse(&buf) {
            Request::Metrics { head } => response(
                "200 OK",
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                "",
                &metrics.render(),
                !head,
            ),
            Request::NotFound => plain("404 Not Found", "", "only /metrics is served here\n"),
            Request::MethodNotAllowed => plain("405 Method Not Allowed", "Allow: GET, HEAD\r\n", "GET /metrics\n"),
            Request::Malformed => plain("400 Bad Request", "", "not an HTTP/1.x request\n"),
        },
    };
    let _ = tokio::time::timeout(IO_LIMIT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves `/metrics` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::Relaxed) >= MAX_SCRAPES {
            busy.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let (metrics, busy) = (metrics.clone(), busy.clone());
        tokio::spawn(async move {
            scrape(stream, &metrics).await;
            busy.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_request_lines() {
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Request::Metrics { head: false });
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Request::Metrics { head: false });
        assert_eq!(parse(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Request::Metrics { head: true });
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"GET /metricsX HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Request::MethodNotAllowed);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Malformed);
        assert_eq!(parse(b"GET /metrics HTTP/2\r\n\r\n"), Request::Malformed);
        assert_eq!(parse(b"GET  /metrics HTTP/1.1\r\n\r\n"), Request::Malformed);
        assert_eq!(parse(b"GET metrics HTTP/1.1\r\n\r\n"), Request::Malformed);
        assert_eq!(parse(b"\xff\xfe\r\n\r\n"), Request::Malformed);
    }

    #[test]
    fn head_ends_at_a_blank_line() {
        assert!(!head_complete(b"GET /metrics HTTP/1.1\r\n"));
        assert!(head_complete(b"GET /metrics HTTP/1.1\r\n\r\n"));
        assert!(head_complete(b"GET /metrics HTTP/1.0\n\n"));
    }
}
