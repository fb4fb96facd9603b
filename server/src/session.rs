//! One client session: read the request, decide, IDENT, then CONNECT or
//! BIND, relay, and log one line about it at the end.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socks4_proto::host;
use socks4_proto::v4::{Command, Destination, Limits, ProtocolError, Reply, ReplyCode, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::balancer::{self, Client, PerClient};
use crate::busy_poll;
use crate::config::Config;
use crate::ident::{self, IdentError};
use crate::metrics::{self, IdentOutcome, Metrics, ProxyOutcome, Refusal, ResolveOutcome, RuleHits, RuleOutcome};
use crate::net;
use crate::relay::{self, Traffic};
use crate::rules::{self, Action, Decision, IdentMode, Query};

/// How long a refused client may keep sending before we close anyway; we
/// read its leftovers so that closing does not turn into a reset that could
/// destroy the reply in flight.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;
/// The handshake time a client over `max_sessions_per_client` gets to say
/// what it wants before it is refused: it holds a place in
/// `max_connections` meanwhile.
const OVER_LIMIT_HANDSHAKE: Duration = Duration::from_secs(2);

/// What a session knows of the server around it.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The configuration at accept time (a reload does not change a live session).
    pub config: &'a Config,
    /// The counters and this configuration's rule counters; `None`: metrics off.
    pub metrics: Option<(&'a Metrics, &'a RuleHits)>,
    /// Live sessions per client address, for `max_sessions_per_client`.
    pub per_client: &'a Arc<PerClient>,
}

/// What the session log line reports. The line is written when the record
/// is dropped, so a session cut short (server stopping) still gets its line.
struct Record<'a> {
    /// The client: the real one when a load balancer's PROXY header named it.
    peer: SocketAddr,
    /// The load balancer that relayed the client, if one did.
    via: Option<SocketAddr>,
    start: Instant,
    user: String,
    command: Option<Command>,
    dest: Option<String>,
    rule: Option<usize>,
    rule_name: Option<String>,
    /// The last reply code sent (for BIND, the second reply if one was sent).
    reply: Option<ReplyCode>,
    traffic: Traffic,
    /// Why the session ended, when it was not a clean relay.
    reason: String,
    finished: bool,
    /// When the first reply was sent (the handshake's end).
    replied: Option<Duration>,
    rule_outcome: RuleOutcome,
    ident: Option<IdentOutcome>,
    resolve: Option<ResolveOutcome>,
    /// A load balancer's health check (a PROXY v2 LOCAL header, then
    /// nothing): logged at debug level only, and not counted as a session.
    health_check: bool,
    metrics: Option<(&'a Metrics, &'a RuleHits)>,
}

impl Record<'_> {
    /// Notes a reply about to be sent: the last reply code, and for the
    /// first one, the handshake's end.
    fn note_reply(&mut self, code: ReplyCode) {
        self.reply = Some(code);
        self.replied.get_or_insert_with(|| self.start.elapsed());
    }

    /// Notes the deciding rule, with its name if it has one.
    fn set_rule(&mut self, rule: Option<usize>, config: &Config) {
        self.rule = rule;
        self.rule_outcome = rule.map_or(RuleOutcome::NoMatch, RuleOutcome::Rule);
        self.rule_name = rule.and_then(|i| config.rules.rules[i].name.clone());
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if !self.finished && self.reason.is_empty() {
            self.reason = "cut: server stopping".into();
        }
        let health_check = self.health_check && self.command.is_none() && self.reply.is_none();
        if let Some((metrics, rule_hits)) = self.metrics
            && !health_check
        {
            let end = metrics::SessionEnd {
                protocol: if self.command.is_some() || self.reply.is_some() {
                    metrics::Protocol::Socks4
                } else {
                    metrics::Protocol::Unknown
                },
                command: match self.command {
                    None => metrics::Command::None,
                    Some(Command::Connect) => metrics::Command::Connect,
                    Some(Command::Bind) => metrics::Command::Bind,
                },
                reply: self.reply.map(|c| c as u8),
                bytes_up: self.traffic.up,
                bytes_down: self.traffic.down,
                handshake: self.replied,
                rule: self.rule_outcome,
                ident: self.ident,
                resolve: self.resolve,
            };
            metrics.session_end(&end, rule_hits);
        }
        if health_check {
            tracing::debug!(balancer = %self.peer, "health check (PROXY v2 LOCAL)");
            return;
        }
        let rule = match (self.rule, &self.rule_name) {
            (Some(i), Some(name)) => format!("{i}:{name}"),
            (Some(i), None) => i.to_string(),
            (None, _) => "-".to_string(),
        };
        let via = self.via.map_or_else(|| "-".to_string(), |a| a.to_string());
        tracing::info!(
            peer = %self.peer,
            via = %via,
            user = ?self.user,
            command = %self.command.map_or("-", Command::name),
            dest = %self.dest.as_deref().unwrap_or("-"),
            rule = %rule,
            reply = self.reply.map_or(0, |c| c as u8),
            bytes_up = self.traffic.up,
            bytes_down = self.traffic.down,
            duration_ms = self.start.elapsed().as_millis() as u64,
            reason = %self.reason,
            "session"
        );
    }
}

/// Serves one accepted client to the end. `peer` and `local` are the
/// connection's endpoints (the client's, or the load balancer's when `peer`
/// is in `proxy_protocol_from`).
pub async fn serve(mut client: TcpStream, peer: SocketAddr, local: SocketAddr, cx: Context<'_>) {
    let config = cx.config;
    let mut rec = Record {
        peer,
        via: None,
        start: Instant::now(),
        user: String::new(),
        command: None,
        dest: None,
        rule: None,
        rule_name: None,
        reply: None,
        traffic: Traffic::default(),
        reason: String::new(),
        finished: false,
        replied: None,
        rule_outcome: RuleOutcome::NotEvaluated,
        ident: None,
        resolve: None,
        health_check: false,
        metrics: cx.metrics,
    };
    let deadline = tokio::time::Instant::from_std(rec.start) + config.handshake_timeout;
    let who = if balancer::is_trusted(&config.proxy_protocol_from, peer) {
        balancer::read_header(&mut client, peer, local, deadline).await
    } else {
        Ok(Client::direct(peer, local))
    };
    let who = match who {
        Ok(who) => who,
        Err(refused) => {
            if let Some((m, _)) = cx.metrics {
                m.proxy_header(refused.outcome());
            }
            tracing::warn!(balancer = %peer, reason = %refused, "PROXY protocol: connection refused");
            rec.reason = refused.to_string();
            rec.finished = true;
            return;
        }
    };
    if let (Some((m, _)), Some(outcome)) = (cx.metrics, who.header) {
        m.proxy_header(outcome);
    }
    rec.peer = who.peer;
    rec.via = who.via;
    rec.health_check = who.is_health_check();
    // Held to the session's end: its place among the client's sessions.
    let mut over_limit = None;
    let _slot = match config.max_sessions_per_client {
        Some(max) => match cx.per_client.acquire(who.peer.ip(), max) {
            Some(slot) => Some(slot),
            None => {
                if let Some((m, _)) = cx.metrics {
                    m.refused(Refusal::MaxSessionsPerClient);
                }
                tracing::warn!(peer = %who.peer, max, "max_sessions_per_client reached: refused");
                over_limit = Some(max);
                None
            }
        },
        None => None,
    };
    handle(&mut client, &who, local, config, over_limit, &mut rec).await;
    rec.finished = true;
}

/// The steps of a session, each of which may end it: read the request, find the destination
/// addresses, let the rules decide, check IDENT, then carry out the command. A client over
/// `max_sessions_per_client` (`over_limit`) is refused once its request is in.
async fn handle(
    client: &mut TcpStream,
    who: &Client,
    local: SocketAddr,
    config: &Config,
    over_limit: Option<usize>,
    rec: &mut Record<'_>,
) {
    let limit = if over_limit.is_some() {
        config.handshake_timeout.min(OVER_LIMIT_HANDSHAKE)
    } else {
        config.handshake_timeout
    };
    let deadline = tokio::time::Instant::from_std(rec.start) + limit;
    let Some((request, leftover)) = receive(client, deadline, who.buffered.clone(), rec).await else { return };
    if let Some(max) = over_limit {
        rec.reason = format!("max_sessions_per_client: this client has {max} live sessions");
        return refuse(client, rec, ReplyCode::Rejected).await;
    }
    let peer = who.peer;
    let query = |name, ip| Query {
        client: peer.ip(),
        command: request.command,
        port: request.port,
        name,
        ip,
        user: &request.user_id,
    };
    let (name, addrs) = match destination_addresses(&request, &query, config, &mut rec.resolve).await {
        Ok(found) => found,
        Err(reason) => {
            rec.reason = reason;
            return refuse(client, rec, ReplyCode::Rejected).await;
        }
    };
    let (decision, allowed) =
        match allowed_addresses(&addrs, |ip| rules::evaluate(&config.rules, &query(name, Some(ip)))) {
            Ok(allowed) => allowed,
            Err(refusal) => {
                rec.set_rule(refusal.and_then(|d| d.rule), config);
                rec.reason = "refused by rules".into();
                return refuse(client, rec, ReplyCode::Rejected).await;
            }
        };
    rec.set_rule(decision.rule, config);
    if let Some(code) = check_ident(&decision, who, local, &request.user_id, config, rec).await {
        return refuse(client, rec, code).await;
    }
    match request.command {
        Command::Connect => connect(client, &allowed, request.port, &leftover, config, rec).await,
        Command::Bind => bind(client, local, &allowed, &leftover, config, rec).await,
    }
}

/// Reads the request by `deadline` (after `buffered`, bytes that came with a PROXY header) and
/// notes it in the log record; `None` when the session is over (refused, or closed without a
/// reply).
async fn receive(
    client: &mut TcpStream,
    deadline: tokio::time::Instant,
    buffered: Vec<u8>,
    rec: &mut Record<'_>,
) -> Option<(Request, Vec<u8>)> {
    let (mut request, leftover) = match tokio::time::timeout_at(deadline, read_request(client, buffered)).await {
        Err(_) => {
            rec.reason = "handshake timeout".into();
            return None;
        }
        Ok(Err(ReadError::Closed)) => {
            rec.reason = "closed before the request ended".into();
            return None;
        }
        Ok(Err(ReadError::Protocol(ProtocolError::BadVersion(v), first))) => {
            // Not a SOCKS4 client: it could not read a SOCKS4 reply anyway.
            rec.reason = if balancer::looks_like_header(&first) {
                // A PROXY header from a source not in proxy_protocol_from: a spoofing
                // attempt, or a balancer missing from the list.
                if let Some((m, _)) = rec.metrics {
                    m.proxy_header(ProxyOutcome::Untrusted);
                }
                tracing::warn!(peer = %rec.peer, "PROXY protocol header from a source not in proxy_protocol_from: refused");
                "PROXY protocol header from an untrusted source: closed without reply".into()
            } else {
                format!("request version {v}: closed without reply")
            };
            return None;
        }
        Ok(Err(ReadError::Protocol(e, _))) => {
            rec.reason = e.to_string();
            refuse(client, rec, ReplyCode::Rejected).await;
            return None;
        }
        Ok(Ok(r)) => r,
    };
    // "host." and "host" name the same host: one spelling for rules, lookups
    // and logs, so a trailing dot cannot step around a rule about the name.
    if let Destination::Name(name) = &mut request.destination {
        name.truncate(host::strip_root(name).len());
    }
    rec.user = request.user_id_lossy().into_owned();
    rec.command = Some(request.command);
    rec.dest = Some(format!("{}:{}", request.destination, request.port));
    Some((request, leftover))
}

/// The addresses a request points at, and the SOCKS4A name if it had one. A name is looked up
/// only if some allow rule could match the request at all (no DNS queries on behalf of clients
/// the rules keep out); the rules then see the name and each address. `Err` is the log reason of
/// a refusal.
async fn destination_addresses<'r>(
    request: &'r Request,
    query: &impl Fn(Option<&'r str>, Option<Ipv4Addr>) -> Query<'r>,
    config: &Config,
    resolved: &mut Option<ResolveOutcome>,
) -> Result<(Option<&'r str>, Vec<Ipv4Addr>), String> {
    if request.command == Command::Connect && request.port == 0 {
        // Nothing can listen on port 0: refused before any rule, lookup or
        // packet. (For BIND, port 0 only says there is no primary
        // connection; the rules decide as for any port.)
        return Err("port 0 is not a destination".into());
    }
    let (name, addrs) = match &request.destination {
        Destination::Ip(ip) => (None, vec![*ip]),
        Destination::Name(name) if !rules::may_allow(&config.rules, &query(Some(name.as_str()), None)) => {
            *resolved = Some(ResolveOutcome::Skipped);
            return Err("refused by rules (name not looked up)".into());
        }
        Destination::Name(name) => {
            let found = resolve(name, config.resolve_timeout).await;
            *resolved = Some(match &found {
                Ok(_) => ResolveOutcome::Ok,
                Err(e) if e == RESOLVE_TIMED_OUT => ResolveOutcome::Timeout,
                Err(_) => ResolveOutcome::Failed,
            });
            (Some(name.as_str()), found.map_err(|e| format!("cannot resolve: {e}"))?)
        }
    };
    if addrs.iter().all(|ip| ip.is_unspecified()) && request.command == Command::Connect {
        // Linux takes a connect to 0.0.0.0 as one to this host, which would
        // slip past rules about 127.0.0.0/8.
        return Err("0.0.0.0 is not a destination".into());
    }
    Ok((name, addrs))
}

/// The addresses the rules allow, in order, with the decision that governs them all: the first
/// allowed address's. A later address is kept only if its own rule asks for no stricter IDENT
/// check than that one, so the one IDENT check made covers every address that may be used.
/// `Err` carries the first refusing decision (a rule, or none matched).
fn allowed_addresses(
    addrs: &[Ipv4Addr],
    decide: impl Fn(Ipv4Addr) -> Decision,
) -> Result<(Decision, Vec<Ipv4Addr>), Option<Decision>> {
    let mut governing: Option<Decision> = None;
    let mut refusal = None;
    let mut allowed = Vec::new();
    for &ip in addrs {
        let d = decide(ip);
        if d.action != Action::Allow {
            refusal.get_or_insert(d);
            continue;
        }
        let first = *governing.get_or_insert(d);
        if d.ident <= first.ident {
            allowed.push(ip);
        }
    }
    governing.map(|d| (d, allowed)).ok_or(refusal)
}

enum ReadError {
    Closed,
    /// With the bytes received (for a log that tells what they were).
    Protocol(ProtocolError, Vec<u8>),
}

/// Reads exactly one request, after `buf` (bytes already received); returns
/// it and any bytes the client sent after it (a client may pipeline data
/// before the reply).
async fn read_request(client: &mut TcpStream, mut buf: Vec<u8>) -> Result<(Request, Vec<u8>), ReadError> {
    let limits = Limits::default();
    buf.reserve(64);
    let mut chunk = [0u8; 512];
    loop {
        match Request::decode_with(&buf, &limits) {
            Ok(Some((request, used))) => return Ok((request, buf.split_off(used))),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Protocol(e, buf)),
        }
        let n = client.read(&mut chunk).await.map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The error text of a lookup that ran out of `resolve_timeout`.
const RESOLVE_TIMED_OUT: &str = "timed out";

/// IPv4 addresses of a SOCKS4A name (SOCKS4 cannot carry others).
async fn resolve(name: &str, limit: Duration) -> Result<Vec<Ipv4Addr>, String> {
    let found = timeout(limit, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| RESOLVE_TIMED_OUT.to_string())?
        .map_err(|e| e.to_string())?;
    let mut addrs = Vec::new();
    for addr in found {
        if let SocketAddr::V4(a) = addr
            && !addrs.contains(a.ip())
        {
            addrs.push(*a.ip());
        }
    }
    if addrs.is_empty() {
        return Err("no IPv4 address".into());
    }
    Ok(addrs)
}

/// Runs the IDENT check the matching rule asks for; `Some(code)` refuses.
///
/// identd is asked about the client's own connection: from the client's port to the port it
/// reached. Behind a load balancer that is the balancer's frontend port, and our query leaves
/// from whatever address routes to the client (the address the client reached is the
/// balancer's, not ours).
async fn check_ident(
    decision: &Decision,
    who: &Client,
    local: SocketAddr,
    user_id: &[u8],
    config: &Config,
    rec: &mut Record<'_>,
) -> Option<ReplyCode> {
    if decision.ident == IdentMode::Off {
        return None;
    }
    let from = match (who.via, who.peer.ip()) {
        (None, _) => local.ip(),
        (Some(_), IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (Some(_), IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let answer = ident::lookup(from, who.peer, who.reached.port(), config.ident_port, config.ident_timeout).await;
    rec.ident = Some(match &answer {
        Ok(id) if decision.ident == IdentMode::Match && id != user_id => IdentOutcome::Mismatch,
        Ok(_) => IdentOutcome::Ok,
        Err(IdentError::Unreachable(_)) => IdentOutcome::Unreachable,
        Err(IdentError::Timeout) => IdentOutcome::Timeout,
        Err(IdentError::Error(_)) => IdentOutcome::Error,
        Err(_) => IdentOutcome::Malformed,
    });
    match answer {
        Err(e) => {
            rec.reason = format!("ident: {e}");
            Some(ReplyCode::IdentUnreachable)
        }
        Ok(id) if decision.ident == IdentMode::Match && id != user_id => {
            rec.reason = format!("ident: identd says {:?}", String::from_utf8_lossy(&id));
            Some(ReplyCode::IdentMismatch)
        }
        Ok(_) => None,
    }
}

async fn connect(
    client: &mut TcpStream,
    addrs: &[Ipv4Addr],
    port: u16,
    leftover: &[u8],
    config: &Config,
    rec: &mut Record<'_>,
) {
    // One time limit for all addresses of a name together.
    let attempt = async {
        let mut last = None;
        for &ip in addrs.iter().filter(|ip| !ip.is_unspecified()) {
            match net::connect(config.external, SocketAddrV4::new(ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
    };
    let mut dest = match timeout(config.connect_timeout, attempt).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            rec.reason = format!("connect: {e}");
            return refuse(client, rec, ReplyCode::Rejected).await;
        }
        Err(_) => {
            rec.reason = "connect: timed out".into();
            return refuse(client, rec, ReplyCode::Rejected).await;
        }
    };
    let _ = dest.set_nodelay(true);
    // The address the destination sees us as: a socksified program answers
    // getsockname() with it.
    let outgoing = match dest.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    rec.note_reply(ReplyCode::Granted);
    if client.write_all(&Reply::new(ReplyCode::Granted, outgoing).to_bytes()).await.is_err() {
        return rec.reason = "client gone before the reply".into();
    }
    relay_with(client, &mut dest, leftover, rec).await;
}

/// BIND: a listener where our CONNECTs to the host come from, the first reply with its address,
/// one connection within `connect_timeout` from an expected host, the second reply, the relay.
async fn bind(
    client: &mut TcpStream,
    local: SocketAddr,
    addrs: &[Ipv4Addr],
    leftover: &[u8],
    config: &Config,
    rec: &mut Record<'_>,
) {
    let listener = match bind_listener(local, addrs[0], config) {
        Ok(l) => l,
        Err(e) => {
            rec.reason = format!("bind listener: {e}");
            return refuse(client, rec, ReplyCode::Rejected).await;
        }
    };
    // What the application server is told to connect to: the listener, or the address in
    // front of it (`advertise`: a NAT, a load balancer).
    let bound = match listener.local_addr().map(|a| config.advertise.reply_address(a)) {
        Ok(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    rec.note_reply(ReplyCode::Granted);
    if client.write_all(&Reply::new(ReplyCode::Granted, bound).to_bytes()).await.is_err() {
        return rec.reason = "client gone before the first reply".into();
    }
    let (mut peer_stream, from) = match the_one_connection(listener, client, config.connect_timeout).await {
        Incoming::Connected(stream, from) => (stream, from),
        Incoming::Cancelled => return rec.reason = "bind: cancelled by the client".into(),
        Incoming::Failed(reason) => {
            rec.reason = reason;
            return refuse(client, rec, ReplyCode::Rejected).await;
        }
    };
    // DSTIP 0.0.0.0 names no host: any host may connect (the rules' `to` still had to allow 0.0.0.0).
    if !addrs.contains(from.ip()) && !addrs[0].is_unspecified() {
        rec.reason = format!("bind: connection from {from}, expected {}", addrs[0]);
        drop(peer_stream);
        return refuse(client, rec, ReplyCode::Rejected).await;
    }
    let _ = peer_stream.set_nodelay(true);
    rec.note_reply(ReplyCode::Granted);
    if client.write_all(&Reply::new(ReplyCode::Granted, from).to_bytes()).await.is_err() {
        return rec.reason = "client gone before the second reply".into();
    }
    relay_with(client, &mut peer_stream, leftover, rec).await;
}

/// The BIND listener: on the address our CONNECTs to `expected` come from (see
/// net::external_for), so the application server sees one address for both connections; if no
/// route is known, on the address the client reached, else anywhere.
fn bind_listener(local: SocketAddr, expected: Ipv4Addr, config: &Config) -> std::io::Result<tokio::net::TcpListener> {
    let ip = net::external_for(config.external, expected)
        .or(match local.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    net::bind_listener(ip)
}

/// How BIND's wait for its one connection ended.
enum Incoming {
    Connected(TcpStream, SocketAddrV4),
    /// The client closed while waiting: no reply to send.
    Cancelled,
    /// Timed out or failed: the log reason, and a 91 to send.
    Failed(String),
}

/// Waits up to `limit` for one connection, or for the client to give up; the listener is closed
/// as soon as the wait is over, which frees the port.
async fn the_one_connection(listener: tokio::net::TcpListener, client: &TcpStream, limit: Duration) -> Incoming {
    let waited = timeout(limit, async {
        tokio::select! {
            accepted = listener.accept() => Some(accepted),
            () = client_gone(client) => None,
        }
    })
    .await;
    drop(listener);
    match waited {
        Err(_) => Incoming::Failed("bind: no connection in time".into()),
        Ok(None) => Incoming::Cancelled,
        Ok(Some(Err(e))) => Incoming::Failed(format!("bind: accept: {e}")),
        Ok(Some(Ok((stream, from)))) => {
            let from = match from {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(a) => {
                    SocketAddrV4::new(a.ip().to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED), a.port())
                }
            };
            Incoming::Connected(stream, from)
        }
    }
}

/// Resolves when the client closes (or fails) while BIND waits. Data from
/// the client is left in the socket for the relay and stops the watch.
async fn client_gone(client: &TcpStream) {
    let mut probe = [0u8; 1];
    match client.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

async fn relay_with(client: &mut TcpStream, dest: &mut TcpStream, leftover: &[u8], rec: &mut Record<'_>) {
    if !leftover.is_empty() {
        if let Err(e) = dest.write_all(leftover).await {
            return rec.reason = format!("relay: {e}");
        }
        rec.traffic.up += leftover.len() as u64;
    }
    if let Err(e) = busy_poll::relaying(relay::relay(client, dest, &mut rec.traffic)).await {
        rec.reason = format!("relay: {e}");
    }
}

/// Sends a refusal and closes: our side shuts down at once (the client
/// sees the reply and EOF), then we read what the client may still send,
/// briefly, so the close does not reset the connection under the reply.
async fn refuse(client: &mut TcpStream, rec: &mut Record<'_>, code: ReplyCode) {
    rec.note_reply(code);
    if client.write_all(&Reply::code_only(code).to_bytes()).await.is_err() {
        return;
    }
    linger_close(client).await;
}

/// Half-closes, then drains the client's input for a bounded time.
pub(crate) async fn linger_close(client: &mut TcpStream) {
    let _ = client.shutdown().await;
    let _ = timeout(LINGER, async {
        let mut sink = [0u8; 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(action: Action, rule: usize, ident: IdentMode) -> Decision {
        Decision { action, rule: Some(rule), ident }
    }

    /// The first allowed address's rule governs; later addresses whose rules ask for a stricter
    /// IDENT check are dropped, laxer or equal ones kept; refused addresses are skipped.
    #[test]
    fn allowed_addresses_follow_the_first_allowing_rule() {
        let ip = |d: u8| Ipv4Addr::new(192, 0, 2, d);
        let rules = |addr: Ipv4Addr| match addr.octets()[3] {
            1 => decision(Action::Deny, 0, IdentMode::Off),
            2 => decision(Action::Allow, 1, IdentMode::Require),
            3 => decision(Action::Allow, 2, IdentMode::Match),
            4 => decision(Action::Allow, 3, IdentMode::Off),
            _ => decision(Action::Allow, 4, IdentMode::Require),
        };
        let (governing, allowed) = allowed_addresses(&[ip(1), ip(2), ip(3), ip(4), ip(5)], rules).unwrap();
        assert_eq!(governing, decision(Action::Allow, 1, IdentMode::Require));
        assert_eq!(allowed, [ip(2), ip(4), ip(5)]);
        let (governing, allowed) = allowed_addresses(&[ip(4), ip(2)], rules).unwrap();
        assert_eq!((governing.rule, allowed), (Some(3), vec![ip(4)]));
        assert_eq!(allowed_addresses(&[ip(1)], rules), Err(Some(decision(Action::Deny, 0, IdentMode::Off))));
        assert_eq!(allowed_addresses(&[], rules), Err(None));
    }
}
