//! SOCKS5 UDP ASSOCIATE (RFC 1928 section 7): a relay port per association,
//! open while the TCP control connection lives. Datagrams from the client
//! (its address, and the port it first sent from or named) are checked
//! against the rules per destination and sent on from `external`'s address;
//! answers from the hosts the client wrote to come back wrapped in the UDP
//! header. Fragments, garbage and refused datagrams are dropped and counted;
//! nothing is queued: a datagram the kernel cannot take at once is dropped,
//! as the network would.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socks4_proto::v5::{Address, Host, MAX_UDP_HEADER_LEN, UdpHeader};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::balancer::Client;
use crate::config::Config;
use crate::net;
use crate::rules::{self, Action, IdentMode, Query};
use crate::session::{self, Families, Outcome, Record, Request};

/// Room in front of a received datagram for the header of its answer, so
/// that wrapping it copies nothing but the header.
const RESERVE: usize = MAX_UDP_HEADER_LEN;
/// The largest UDP payload there is.
const MAX_DATAGRAM: usize = 65535;
/// Names resolved per association (then the cache starts over): a client
/// sending to many names costs lookups, not memory.
const MAX_NAMES: usize = 64;
/// Far ends per association whose answers are let back (then the set starts over).
const MAX_PEERS: usize = 1024;
/// Datagrams taken from one socket per wake-up, so one busy direction
/// cannot starve the other or the control connection.
const BURST: usize = 64;

/// A UDP association's datagram counts, for its log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounts {
    /// Client to far end, sent on.
    pub up: u64,
    /// Far end to client, sent on.
    pub down: u64,
    /// Dropped: from a stranger, malformed, a fragment, refused by the
    /// rules, unresolvable, or not taken by the kernel.
    pub dropped: u64,
}

/// Serves a UDP ASSOCIATE request to the end of its control connection.
pub(crate) async fn associate(
    client: &mut TcpStream,
    who: &Client,
    local: SocketAddr,
    request: &Request,
    config: &Config,
    rec: &mut Record<'_>,
) {
    let peer = who.peer;
    // The request names no destination: let it through if some allow rule
    // could match a datagram of this client's, and run the strictest IDENT
    // check such a rule asks for; each datagram then meets the rules.
    let modes: Vec<IdentMode> = rules::udp_ident_modes(&config.rules, &request.query(peer.ip(), None, None)).collect();
    let Some(&strictest) = modes.iter().max() else {
        rec.reason = "refused by rules (no rule allows udp for this client)".into();
        return session::refuse(client, rec, Outcome::NotAllowed).await;
    };
    let mut ident = strictest;
    if let Some(outcome) = session::check_ident(strictest, who, local, &request.user, config, rec).await {
        // What IDENT did establish: identd answered (with another user id), or nothing.
        ident = if outcome == Outcome::IdentMismatch { IdentMode::Require } else { IdentMode::Off };
        if !modes.iter().any(|&m| m <= ident) {
            return session::refuse(client, rec, outcome).await;
        }
        rec.reason.clear();
    }
    // Behind a load balancer the address the client reached is the balancer's: the relay
    // socket listens on every address, and `advertise` says where the client finds it.
    let inside_ip = match (who.via, local.ip().to_canonical()) {
        (None, ip) => ip,
        (Some(_), IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (Some(_), IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let inside = match net::udp_socket(inside_ip) {
        Ok(s) => s,
        Err(e) => {
            rec.reason = format!("udp relay socket: {e}");
            return session::refuse(client, rec, Outcome::GeneralFailure).await;
        }
    };
    let reply = rec.reply_bytes(Outcome::Granted, inside.local_addr().ok().map(|a| config.advertise.reply_address(a)));
    if tokio::io::AsyncWriteExt::write_all(client, &reply).await.is_err() {
        return rec.reason = "client gone before the reply".into();
    }
    rec.udp = Some(UdpCounts::default());
    let mut relay = Relay {
        config,
        request,
        client_ip: peer.ip().to_canonical(),
        // A port the client named is the one it sends from; 0: learnt from its first datagram.
        client_port: (request.port != 0).then_some(request.port),
        ident,
        inside,
        outside_v4: None,
        outside_v6: None,
        names: HashMap::new(),
        peers: HashSet::new(),
    };
    relay.run(client, rec).await;
}

struct Relay<'a> {
    config: &'a Config,
    request: &'a Request,
    client_ip: IpAddr,
    client_port: Option<u16>,
    /// The strictest IDENT mode whose check passed: rules asking for more refuse.
    ident: IdentMode,
    /// Where the client sends its datagrams and gets the answers.
    inside: UdpSocket,
    /// Toward far ends, one per family, made on first use.
    outside_v4: Option<UdpSocket>,
    outside_v6: Option<UdpSocket>,
    names: HashMap<String, Vec<IpAddr>>,
    /// Far ends the client has sent to: only their answers come back.
    peers: HashSet<SocketAddr>,
}

/// Which socket woke the loop.
enum Ready {
    Control(io::Result<usize>),
    Inside,
    Outside(bool),
}

/// Sends one datagram if the kernel takes it now; never waits. (tokio's
/// `try_send_to` says WouldBlock until the reactor has seen the socket
/// writable once, which a fresh socket has not.)
fn send_now(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(socket).send_to(datagram, &to.into())
}

async fn readable(socket: Option<&UdpSocket>) -> io::Result<()> {
    match socket {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

impl Relay<'_> {
    async fn run(&mut self, client: &mut TcpStream, rec: &mut Record<'_>) {
        // Made when the first datagram comes: an association that never
        // sends one costs two sockets and no buffer.
        let mut buf = Vec::new();
        let mut control = [0u8; 256];
        loop {
            let ready = tokio::select! {
                r = client.read(&mut control) => Ready::Control(r),
                Ok(()) = self.inside.readable() => Ready::Inside,
                Ok(()) = readable(self.outside_v4.as_ref()) => Ready::Outside(true),
                Ok(()) = readable(self.outside_v6.as_ref()) => Ready::Outside(false),
            };
            if matches!(ready, Ready::Inside | Ready::Outside(_)) && buf.is_empty() {
                buf = vec![0u8; RESERVE + MAX_DATAGRAM];
            }
            match ready {
                // The association lives as long as its control connection,
                // which carries nothing more: what comes on it is dropped.
                Ready::Control(Ok(0)) => return,
                Ready::Control(Err(e)) => return rec.reason = format!("control connection: {e}"),
                Ready::Control(Ok(_)) => {}
                // An error other than "nothing more" would repeat at once and
                // spin this loop: the client's socket failing ends the
                // association, an outgoing one is dropped (remade on next use).
                Ready::Inside => {
                    for _ in 0..BURST {
                        match self.inside.try_recv_from(&mut buf[RESERVE..]) {
                            Ok((n, from)) => self.client_datagram(&buf[RESERVE..RESERVE + n], from, rec).await,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return rec.reason = format!("udp relay socket: {e}"),
                        }
                    }
                }
                Ready::Outside(v4) => {
                    for _ in 0..BURST {
                        let slot = if v4 { &mut self.outside_v4 } else { &mut self.outside_v6 };
                        let Some(socket) = slot else { break };
                        match socket.try_recv_from(&mut buf[RESERVE..]) {
                            Ok((n, from)) => self.answer_datagram(&mut buf, n, from, rec),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(peer = %rec.peer, error = %e, "udp: outgoing socket failed");
                                *slot = None;
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    fn drop_datagram(rec: &mut Record<'_>, why: &str) {
        tracing::debug!(peer = %rec.peer, why, "udp: datagram dropped");
        if let Some(c) = &mut rec.udp {
            c.dropped += 1;
        }
    }

    /// A datagram at the relay port: sent on if it is the client's, whole,
    /// and allowed.
    async fn client_datagram(&mut self, datagram: &[u8], from: SocketAddr, rec: &mut Record<'_>) {
        if from.ip().to_canonical() != self.client_ip || self.client_port.is_some_and(|p| p != from.port()) {
            return Self::drop_datagram(rec, "not from the client");
        }
        let Ok((header, payload)) = UdpHeader::split(datagram) else {
            return Self::drop_datagram(rec, "malformed header");
        };
        if header.is_fragment() {
            return Self::drop_datagram(rec, "fragment");
        }
        self.client_port.get_or_insert(from.port());
        let port = header.destination.port;
        if port == 0 {
            return Self::drop_datagram(rec, "port 0");
        }
        let Some(to) = self.destination(&header.destination.host, port).await else {
            return Self::drop_datagram(rec, "refused by rules or unresolvable");
        };
        let Some(socket) = self.outside(to.ip()) else {
            return Self::drop_datagram(rec, "no socket toward the destination");
        };
        match send_now(socket, payload, to) {
            Ok(_) => {
                if self.peers.len() >= MAX_PEERS {
                    self.peers.clear();
                }
                self.peers.insert(to);
                rec.traffic.up += payload.len() as u64;
                if let Some(c) = &mut rec.udp {
                    c.up += 1;
                }
            }
            Err(_) => Self::drop_datagram(rec, "send failed"),
        }
    }

    /// The first address of `host` the rules allow this datagram to, with
    /// no stricter IDENT check than the association passed.
    async fn destination(&mut self, host: &Host, port: u16) -> Option<SocketAddr> {
        let (name, addrs) = match host {
            Host::Ip(ip) => (None, vec![ip.to_canonical()]),
            Host::Name(name) => {
                let name = socks4_proto::host::strip_root(name).to_string();
                if !rules::may_allow(&self.config.rules, &self.query(port, Some(&name), None)) {
                    return None;
                }
                if !self.names.contains_key(&name) {
                    let found =
                        session::resolve(&name, self.config.resolve_timeout, Families::Both).await.unwrap_or_default();
                    if self.names.len() >= MAX_NAMES {
                        self.names.clear();
                    }
                    self.names.insert(name.clone(), found);
                }
                let addrs = self.names.get(&name).cloned().unwrap_or_default();
                (Some(name), addrs)
            }
        };
        addrs.into_iter().filter(|ip| !ip.is_unspecified()).find_map(|ip| {
            let d = rules::evaluate(&self.config.rules, &self.query(port, name.as_deref(), Some(ip)));
            (d.action == Action::Allow && d.ident <= self.ident).then_some(SocketAddr::new(ip, port))
        })
    }

    /// What the rules see for a datagram to `name`/`ip` port `port`.
    fn query<'q>(&'q self, port: u16, name: Option<&'q str>, ip: Option<IpAddr>) -> Query<'q> {
        Query { port, ..self.request.query(self.client_ip, name, ip) }
    }

    /// The socket toward `dest`'s family, on `external`'s address for it.
    fn outside(&mut self, dest: IpAddr) -> Option<&UdpSocket> {
        let slot = if dest.is_ipv4() { &mut self.outside_v4 } else { &mut self.outside_v6 };
        if slot.is_none() {
            let any =
                if dest.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
            let ip = net::external_for(self.config.external, dest).unwrap_or(any);
            *slot = net::udp_socket(ip).ok();
        }
        slot.as_ref()
    }

    /// An answer from a far end (`buf[RESERVE..RESERVE + n]`): wrapped in
    /// the header naming it, and sent to the client.
    fn answer_datagram(&mut self, buf: &mut [u8], n: usize, from: SocketAddr, rec: &mut Record<'_>) {
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let Some(port) = self.client_port.filter(|_| self.peers.contains(&from)) else {
            return Self::drop_datagram(rec, "answer from a host the client did not write to");
        };
        let mut head = Vec::with_capacity(32);
        UdpHeader::new(Address::from(from)).encode(&mut head);
        let start = RESERVE - head.len();
        buf[start..RESERVE].copy_from_slice(&head);
        match send_now(&self.inside, &buf[start..RESERVE + n], SocketAddr::new(self.client_ip, port)) {
            Ok(_) => {
                rec.traffic.down += n as u64;
                if let Some(c) = &mut rec.udp {
                    c.down += 1;
                }
            }
            // Too big with its header (a 64 KiB answer), or no room: dropped.
            Err(_) => Self::drop_datagram(rec, "send to the client failed"),
        }
    }
}
