//! One client session: read the request, decide, IDENT, then CONNECT or
//! BIND, relay, and log one line about it at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socks4_proto::host;
use socks4_proto::v4::{Command, Destination, Limits, ProtocolError, Reply, ReplyCode, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::busy_poll;
use crate::config::Config;
use crate::ident;
use crate::net;
use crate::relay::{self, Traffic};
use crate::rules::{self, Action, Decision, IdentMode, Query};

/// How long a refused client may keep sending before we close anyway; we
/// read its leftovers so that closing does not turn into a reset that could
/// destroy the reply in flight.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// What the session log line reports. The line is written when the record
/// is dropped, so a session cut short (server stopping) still gets its line.
#[derive(Debug)]
struct Record {
    peer: SocketAddr,
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
}

impl Record {
    /// Notes the deciding rule, with its name if it has one.
    fn set_rule(&mut self, rule: Option<usize>, config: &Config) {
        self.rule = rule;
        self.rule_name = rule.and_then(|i| config.rules.rules[i].name.clone());
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.finished && self.reason.is_empty() {
            self.reason = "cut: server stopping".into();
        }
        let rule = match (self.rule, &self.rule_name) {
            (Some(i), Some(name)) => format!("{i}:{name}"),
            (Some(i), None) => i.to_string(),
            (None, _) => "-".to_string(),
        };
        tracing::info!(
            peer = %self.peer,
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

/// Serves one accepted client to the end. `local` is the address the
/// client reached; `config` is the configuration at accept time (a reload
/// does not change a live session).
pub async fn serve(mut client: TcpStream, peer: SocketAddr, local: SocketAddr, config: &Config) {
    let mut rec = Record {
        peer,
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
    };
    handle(&mut client, peer, local, config, &mut rec).await;
    rec.finished = true;
}

/// The steps of a session, each of which may end it: read the request, find the destination
/// addresses, let the rules decide, check IDENT, then carry out the command.
async fn handle(client: &mut TcpStream, peer: SocketAddr, local: SocketAddr, config: &Config, rec: &mut Record) {
    let Some((request, leftover)) = receive(client, config, rec).await else { return };
    let query = |name, ip| Query {
        client: peer.ip(),
        command: request.command,
        port: request.port,
        name,
        ip,
        user: &request.user_id,
    };
    let (name, addrs) = match destination_addresses(&request, &query, config).await {
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
    if let Some(code) = check_ident(&decision, peer, local, &request.user_id, config, rec).await {
        return refuse(client, rec, code).await;
    }
    match request.command {
        Command::Connect => connect(client, &allowed, request.port, &leftover, config, rec).await,
        Command::Bind => bind(client, local, &allowed, &leftover, config, rec).await,
    }
}

/// Reads the request within `handshake_timeout` and notes it in the log record; `None` when the
/// session is over (refused, or closed without a reply).
async fn receive(client: &mut TcpStream, config: &Config, rec: &mut Record) -> Option<(Request, Vec<u8>)> {
    let (mut request, leftover) = match timeout(config.handshake_timeout, read_request(client)).await {
        Err(_) => {
            rec.reason = "handshake timeout".into();
            return None;
        }
        Ok(Err(ReadError::Closed)) => {
            rec.reason = "closed before the request ended".into();
            return None;
        }
        Ok(Err(ReadError::Protocol(ProtocolError::BadVersion(v)))) => {
            // Not a SOCKS4 client: it could not read a SOCKS4 reply anyway.
            rec.reason = format!("request version {v}: closed without reply");
            return None;
        }
        Ok(Err(ReadError::Protocol(e))) => {
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
            return Err("refused by rules (name not looked up)".into());
        }
        Destination::Name(name) => {
            let addrs = resolve(name, config.resolve_timeout).await.map_err(|e| format!("cannot resolve: {e}"))?;
            (Some(name.as_str()), addrs)
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
    Protocol(ProtocolError),
}

/// Reads exactly one request; returns it and any bytes the client sent
/// after it (a client may pipeline data before the reply).
async fn read_request(client: &mut TcpStream) -> Result<(Request, Vec<u8>), ReadError> {
    let limits = Limits::default();
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        match Request::decode_with(&buf, &limits) {
            Ok(Some((request, used))) => return Ok((request, buf.split_off(used))),
            Ok(None) => {}
            Err(e) => return Err(ReadError::Protocol(e)),
        }
        let n = client.read(&mut chunk).await.map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// IPv4 addresses of a SOCKS4A name (SOCKS4 cannot carry others).
async fn resolve(name: &str, limit: Duration) -> Result<Vec<Ipv4Addr>, String> {
    let found = timeout(limit, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| "timed out".to_string())?
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
async fn check_ident(
    decision: &Decision,
    peer: SocketAddr,
    local: SocketAddr,
    user_id: &[u8],
    config: &Config,
    rec: &mut Record,
) -> Option<ReplyCode> {
    if decision.ident == IdentMode::Off {
        return None;
    }
    match ident::lookup(local.ip(), peer, local.port(), config.ident_port, config.ident_timeout).await {
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
    rec: &mut Record,
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
    rec.reply = Some(ReplyCode::Granted);
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
    rec: &mut Record,
) {
    let listener = match bind_listener(local, addrs[0], config) {
        Ok(l) => l,
        Err(e) => {
            rec.reason = format!("bind listener: {e}");
            return refuse(client, rec, ReplyCode::Rejected).await;
        }
    };
    let bound = match listener.local_addr() {
        Ok(SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    };
    rec.reply = Some(ReplyCode::Granted);
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

async fn relay_with(client: &mut TcpStream, dest: &mut TcpStream, leftover: &[u8], rec: &mut Record) {
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
async fn refuse(client: &mut TcpStream, rec: &mut Record, code: ReplyCode) {
    rec.reply = Some(code);
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
