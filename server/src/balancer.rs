//! Who the client is when socks4d runs behind a load balancer: the PROXY
//! protocol header (v1 or v2) a trusted source (`proxy_protocol_from`) must
//! send before the client's first byte, and the per-client session cap.
//!
//! No spoofing either way: a trusted source that sends no header is refused
//! (its connection would otherwise be served as the balancer's own), and a
//! header from any other source is never read as one (the SOCKS reader
//! refuses it as a bad first byte; see [`looks_like_header`]).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
pub use socks4_proto::proxy::looks_like_header;
use socks4_proto::proxy::{DEFAULT_MAX_V2_LEN, Header, ProxyError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::metrics::ProxyOutcome;

/// The client of a session, as the rules, IDENT, the log and the metrics
/// see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The real client: from the PROXY header, else the connection's peer.
    pub peer: SocketAddr,
    /// What the client connected to: the header's destination (the
    /// balancer's frontend), else the connection's local address.
    pub reached: SocketAddr,
    /// The balancer (the connection's peer) when a header named the client.
    pub via: Option<SocketAddr>,
    /// Bytes that came after the header: the start of the SOCKS request.
    pub buffered: Vec<u8>,
    /// What the header was, for the metrics; `None`: no header expected.
    pub header: Option<ProxyOutcome>,
}

impl Client {
    /// A client that connected directly.
    pub fn direct(peer: SocketAddr, local: SocketAddr) -> Client {
        Client { peer, reached: local, via: None, buffered: Vec::new(), header: None }
    }

    /// A connection a balancer made for itself (v2 LOCAL: its health
    /// check), which sent nothing else: not worth a session log line.
    pub fn is_health_check(&self) -> bool {
        self.header == Some(ProxyOutcome::Local) && self.buffered.is_empty()
    }
}

/// Why a trusted source's connection is refused (closed without a reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no PROXY protocol header from a trusted source (proxy_protocol_from)")]
    Missing,
    #[error("bad PROXY protocol header: {0}")]
    Invalid(ProxyError),
    /// v1 UNKNOWN, or a v2 PROXY of something else than TCP: there is no
    /// client address to apply the rules to.
    #[error("PROXY protocol header names no TCP client ({0})")]
    NoClient(Header),
    #[error("PROXY protocol header not received before handshake_timeout")]
    Timeout,
    #[error("closed before the PROXY protocol header ended")]
    Closed,
}

impl Refused {
    /// How the metrics count it.
    pub fn outcome(&self) -> ProxyOutcome {
        match self {
            Refused::Missing => ProxyOutcome::Missing,
            _ => ProxyOutcome::Invalid,
        }
    }
}

/// Whether connections from `peer` must start with a PROXY header.
pub fn is_trusted(trusted: &[IpNet], peer: SocketAddr) -> bool {
    let ip = peer.ip().to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Reads the PROXY header a trusted source must send first, by
/// `deadline`, and returns the client it names. `peer` and `local` are the
/// connection's own endpoints (used for a LOCAL header: the balancer's own
/// connection).
///
/// # Errors
///
/// [`Refused`]: the connection must be closed without a reply.
pub async fn read_header(
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    deadline: Instant,
) -> Result<Client, Refused> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    let (header, used) = loop {
        match Header::decode_with(&buf, DEFAULT_MAX_V2_LEN) {
            Ok(Some(found)) => break found,
            Ok(None) => {}
            Err(ProxyError::NotProxy) => return Err(Refused::Missing),
            Err(e) => return Err(Refused::Invalid(e)),
        }
        // The decoder refuses a header over its cap as soon as it shows, so
        // `buf` stays under the cap plus one read.
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(Refused::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(Refused::Closed),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let buffered = buf.split_off(used);
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    match header {
        Header::V2Local => Ok(Client { peer, reached: local, via: None, buffered, header: Some(ProxyOutcome::Local) }),
        _ => match header.tcp() {
            Some(endpoints) => Ok(Client {
                peer: canonical(endpoints.source()),
                reached: canonical(endpoints.destination()),
                via: Some(peer),
                buffered,
                header: Some(if header.version() == 1 { ProxyOutcome::V1 } else { ProxyOutcome::V2 }),
            }),
            None => Err(Refused::NoClient(header)),
        },
    }
}

/// Live sessions per client address, for `max_sessions_per_client`:
/// sharded so that sessions of different clients rarely meet on a lock, and
/// used only when the cap is set.
#[derive(Debug)]
pub struct PerClient {
    shards: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    hasher: RandomState,
}

/// One session's place in [`PerClient`]; dropping it frees the place.
#[derive(Debug)]
pub struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl Default for PerClient {
    fn default() -> Self {
        PerClient { shards: (0..32).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }
}

impl PerClient {
    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, usize>> {
        &self.shards[self.hasher.hash_one(ip) as usize % self.shards.len()]
    }

    /// A place for one more session of `ip`, unless it has `max` already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let ip = ip.to_canonical();
        let mut map = self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner());
        let live = map.entry(ip).or_insert(0);
        if *live >= max {
            if *live == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *live += 1;
        Some(ClientSlot { table: self.clone(), ip })
    }

    /// Live sessions of `ip`.
    pub fn live(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        self.shard(&ip).lock().unwrap_or_else(|e| e.into_inner()).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.table.shard(&self.ip).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(live) = map.get_mut(&self.ip) {
            *live -= 1;
            if *live == 0 {
                // Gone clients leave nothing behind.
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Connects, sends `bytes` (then closes if `close`), and returns what
    /// `read_header` made of the server side.
    async fn read(bytes: &[u8], close: bool) -> Result<Client, Refused> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        client.write_all(bytes).await.unwrap();
        if close {
            client.shutdown().await.unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_millis(300);
        let result = read_header(&mut server, peer, addr, deadline).await;
        drop(client);
        result
    }

    #[tokio::test]
    async fn a_v2_header_names_the_client_and_keeps_what_follows() {
        let mut bytes = Vec::new();
        Header::V2Proxy(socks4_proto::proxy::Transport::Stream(
            socks4_proto::proxy::Endpoints::new(
                "192.0.2.9:5000".parse().unwrap(),
                "198.51.100.1:1080".parse().unwrap(),
            )
            .unwrap(),
        ))
        .encode(&mut bytes);
        bytes.extend_from_slice(b"\x04\x01\x00\x50");
        let client = read(&bytes, false).await.unwrap();
        assert_eq!(client.peer, "192.0.2.9:5000".parse().unwrap());
        assert_eq!(client.reached, "198.51.100.1:1080".parse().unwrap());
        assert_eq!(client.via.map(|a| a.ip()), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(client.buffered, b"\x04\x01\x00\x50");
        assert_eq!(client.header, Some(ProxyOutcome::V2));
        assert!(!client.is_health_check());
    }

    #[tokio::test]
    async fn a_v1_header_dribbled_byte_by_byte_is_read_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.set_nodelay(true).unwrap();
        let (mut server, peer) = listener.accept().await.unwrap();
        let writer = tokio::spawn(async move {
            for &b in b"PROXY TCP6 ::ffff:192.0.2.9 2001:db8::1 7 1080\r\n\x05" {
                client.write_all(&[b]).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            client
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let got = read_header(&mut server, peer, addr, deadline).await.unwrap();
        // An IPv4 client relayed over IPv6 is the IPv4 client.
        assert_eq!(got.peer, "192.0.2.9:7".parse().unwrap());
        assert_eq!(got.header, Some(ProxyOutcome::V1));
        assert!(got.buffered.is_empty() || got.buffered == b"\x05");
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_local_header_is_the_balancers_own_connection() {
        let client = read(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", true).await.unwrap();
        assert_eq!(client.via, None);
        assert_eq!(client.peer.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        assert!(client.is_health_check());
    }

    #[tokio::test]
    async fn refusals() {
        assert_eq!(read(b"\x04\x01\x00\x50\x7f\0\0\x01\0", false).await, Err(Refused::Missing));
        assert_eq!(read(b"\x05\x01\x00", false).await, Err(Refused::Missing));
        assert_eq!(
            read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", false).await,
            Err(Refused::Invalid(ProxyError::V1BadLineEnd))
        );
        assert_eq!(read(b"PROXY UNKNOWN\r\n", false).await, Err(Refused::NoClient(Header::V1(None))));
        assert_eq!(read(b"PROXY TCP4 1.2.3.4", false).await, Err(Refused::Timeout));
        assert_eq!(read(b"PROXY TCP4 1.2.3.4", true).await, Err(Refused::Closed));
        assert_eq!(read(b"", false).await, Err(Refused::Timeout));
        assert_eq!(Refused::Missing.outcome(), ProxyOutcome::Missing);
        assert_eq!(Refused::Timeout.outcome(), ProxyOutcome::Invalid);
    }

    #[test]
    fn trusted_sources() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(is_trusted(&nets, "10.1.2.3:1".parse().unwrap()));
        assert!(is_trusted(&nets, "[::ffff:10.1.2.3]:1".parse().unwrap()));
        assert!(is_trusted(&nets, "[::1]:1".parse().unwrap()));
        assert!(!is_trusted(&nets, "11.0.0.1:1".parse().unwrap()));
        assert!(!is_trusted(&[], "10.1.2.3:1".parse().unwrap()));
    }

    #[test]
    fn per_client_cap() {
        let table = Arc::new(PerClient::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.acquire(a, 2).unwrap();
        let second = table.acquire(a, 2).unwrap();
        assert!(table.acquire(a, 2).is_none());
        assert!(table.acquire("::ffff:192.0.2.1".parse().unwrap(), 2).is_none());
        let other = table.acquire(b, 2).unwrap();
        assert_eq!((table.live(a), table.live(b)), (2, 1));
        drop(first);
        let third = table.acquire(a, 2).unwrap();
        drop((second, third, other));
        assert_eq!((table.live(a), table.live(b)), (0, 0));
        assert!(table.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
