//! One client session: read the request (SOCKS4/4A, or SOCKS5 with its
//! method negotiation and login), decide, IDENT, then CONNECT, BIND or UDP
//! ASSOCIATE, relay, and log one line about it at the end.
//!
//! Only the reading and the reply bytes differ between the protocols: both
//! arrive at one [`Request`], go through the same steps and end in the same
//! [`Record`] (the client, the reply code, the byte counts).

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socks4_proto::host;
use socks4_proto::v4;
use socks4_proto::v5::{self, Greeting, Host, Method, MethodSelection, PasswordReply, PasswordRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at};

use crate::balancer::{self, Client, PerClient};
use crate::busy_poll;
use crate::config::Config;
use crate::ident::{self, IdentError};
use crate::metrics::{self, IdentOutcome, Metrics, ProxyOutcome, Refusal, ResolveOutcome, RuleHits, RuleOutcome};
use crate::net;
use crate::relay::{self, Traffic};
use crate::rules::{self, Action, Command, Decision, IdentMode, Query};
use crate::udp::{self, UdpCounts};
use crate::users::Users;

/// How long a refused client may keep sending before we close anyway; we
/// read its leftovers so that closing does not turn into a reset that could
/// destroy the reply in flight.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Password checks (bcrypt, milliseconds of CPU each) running at once, off
/// the session threads; more logins wait here, within their handshake time.
static LOGINS: Semaphore = Semaphore::const_new(4);
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

/// Which protocol a client speaks: its first byte says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Socks4,
    Socks5,
}

impl Protocol {
    /// Its word in logs and in the `protocols` key.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Socks4 => "socks4",
            Protocol::Socks5 => "socks5",
        }
    }

    /// The reply code for `outcome` on the wire: SOCKS4 has 90-93 only, so
    /// every failure but IDENT's is 91 there.
    pub fn code(self, outcome: Outcome) -> u8 {
        match self {
            Protocol::Socks4 => v4_code(outcome) as u8,
            Protocol::Socks5 => v5_code(outcome) as u8,
        }
    }

    /// The reply bytes for `outcome`, naming `bound` (failures name
    /// `0.0.0.0:0`). SOCKS4 can name only an IPv4 address.
    pub fn reply(self, outcome: Outcome, bound: Option<SocketAddr>) -> Vec<u8> {
        match self {
            Protocol::Socks4 => {
                let code = v4_code(outcome);
                let addr = match bound.map(|a| (a.ip().to_canonical(), a.port())) {
                    Some((IpAddr::V4(ip), port)) => SocketAddrV4::new(ip, port),
                    _ => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                };
                v4::Reply::new(code, addr).to_bytes().to_vec()
            }
            Protocol::Socks5 => {
                let bound = bound.map_or(v5::Address::UNSPECIFIED, v5::Address::from);
                let mut out = Vec::with_capacity(22);
                v5::Reply::new(v5_code(outcome), bound).encode(&mut out);
                out
            }
        }
    }
}

fn v4_code(outcome: Outcome) -> v4::ReplyCode {
    match outcome {
        Outcome::Granted => v4::ReplyCode::Granted,
        Outcome::IdentUnreachable => v4::ReplyCode::IdentUnreachable,
        Outcome::IdentMismatch => v4::ReplyCode::IdentMismatch,
        _ => v4::ReplyCode::Rejected,
    }
}

fn v5_code(outcome: Outcome) -> v5::ReplyCode {
    use v5::ReplyCode as C;
    match outcome {
        Outcome::Granted => C::Succeeded,
        // IDENT is a rule's condition: failing it is "not allowed by ruleset".
        Outcome::NotAllowed | Outcome::IdentUnreachable | Outcome::IdentMismatch => C::NotAllowed,
        Outcome::GeneralFailure => C::GeneralFailure,
        Outcome::NetworkUnreachable => C::NetworkUnreachable,
        Outcome::HostUnreachable => C::HostUnreachable,
        Outcome::ConnectionRefused => C::ConnectionRefused,
        Outcome::CommandNotSupported => C::CommandNotSupported,
        Outcome::AddressTypeNotSupported => C::AddressTypeNotSupported,
    }
}

/// How a request ended, in words both protocols can say; [`Protocol::code`]
/// turns it into the wire's reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Granted,
    /// The rules refuse, or none matched.
    NotAllowed,
    IdentUnreachable,
    IdentMismatch,
    GeneralFailure,
    NetworkUnreachable,
    /// Also: a name that does not resolve, a connect that timed out.
    HostUnreachable,
    ConnectionRefused,
    CommandNotSupported,
    AddressTypeNotSupported,
}

impl Outcome {
    /// What a failed connect (or listener) tells the client.
    pub fn from_connect_error(e: &io::Error) -> Outcome {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Outcome::ConnectionRefused,
            Some(libc::ENETUNREACH | libc::ENETDOWN) => Outcome::NetworkUnreachable,
            Some(libc::EHOSTUNREACH | libc::EHOSTDOWN | libc::ETIMEDOUT) => Outcome::HostUnreachable,
            _ => Outcome::GeneralFailure,
        }
    }
}

/// What the session log line reports. The line is written when the record
/// is dropped, so a session cut short (server stopping) still gets its line.
#[derive(Debug)]
pub(crate) struct Record<'a> {
    /// The client: the real one when a load balancer's PROXY header named it.
    pub(crate) peer: SocketAddr,
    /// The load balancer that relayed the client, if one did.
    via: Option<SocketAddr>,
    start: Instant,
    pub(crate) protocol: Option<Protocol>,
    /// The SOCKS4 USERID, or the name a SOCKS5 client logged in as.
    user: String,
    command: Option<Command>,
    dest: Option<String>,
    rule: Option<usize>,
    rule_name: Option<String>,
    /// The last reply code sent, as on the wire (for BIND, the second reply
    /// if one was sent).
    pub(crate) reply: Option<u8>,
    pub(crate) traffic: Traffic,
    /// A UDP association's datagram counts (its bytes are in `traffic`).
    pub(crate) udp: Option<UdpCounts>,
    /// Why the session ended, when it was not a clean relay.
    pub(crate) reason: String,
    finished: bool,
    /// When the first reply was sent (the handshake's end).
    replied: Option<Duration>,
    rule_outcome: RuleOutcome,
    pub(crate) ident: Option<IdentOutcome>,
    resolve: Option<ResolveOutcome>,
    /// A load balancer's health check (a PROXY v2 LOCAL header, then
    /// nothing): logged at debug level only, and not counted as a session.
    health_check: bool,
    metrics: Option<(&'a Metrics, &'a RuleHits)>,
}

impl Record<'_> {
    /// Notes the deciding rule, with its name if it has one.
    pub(crate) fn set_rule(&mut self, rule: Option<usize>, config: &Config) {
        self.rule = rule;
        self.rule_outcome = rule.map_or(RuleOutcome::NoMatch, RuleOutcome::Rule);
        self.rule_name = rule.and_then(|i| config.rules.rules[i].name.clone());
    }

    /// The bytes of the reply for `outcome`, noted as the session's reply.
    pub(crate) fn reply_bytes(&mut self, outcome: Outcome, bound: Option<SocketAddr>) -> Vec<u8> {
        let protocol = self.protocol.unwrap_or(Protocol::Socks4);
        self.reply = Some(protocol.code(outcome));
        self.replied.get_or_insert_with(|| self.start.elapsed());
        protocol.reply(outcome, bound)
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
                protocol: match self.protocol {
                    None => metrics::Protocol::Unknown,
                    Some(Protocol::Socks4) => metrics::Protocol::Socks4,
                    Some(Protocol::Socks5) => metrics::Protocol::Socks5,
                },
                command: match self.command {
                    None => metrics::Command::None,
                    Some(Command::Connect) => metrics::Command::Connect,
                    Some(Command::Bind) => metrics::Command::Bind,
                    Some(Command::UdpAssociate) => metrics::Command::UdpAssociate,
                },
                reply: self.reply,
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
        let via = self.via.map_or_else(|| "-".to_string(), |a| a.to_string());
        let rule = match (self.rule, &self.rule_name) {
            (Some(i), Some(name)) => format!("{i}:{name}"),
            (Some(i), None) => i.to_string(),
            (None, _) => "-".to_string(),
        };
        let reply = self.reply.map_or_else(|| "-".to_string(), |c| c.to_string());
        let protocol = self.protocol.map_or("-", Protocol::name);
        let command = self.command.map_or("-", Command::name);
        let dest = self.dest.as_deref().unwrap_or("-");
        let duration_ms = self.start.elapsed().as_millis() as u64;
        match &self.udp {
            None => tracing::info!(
                peer = %self.peer,
                via = %via,
                proto = protocol,
                user = ?self.user,
                command = %command,
                dest = %dest,
                rule = %rule,
                reply = %reply,
                bytes_up = self.traffic.up,
                bytes_down = self.traffic.down,
                duration_ms,
                reason = %self.reason,
                "session"
            ),
            Some(udp) => tracing::info!(
                peer = %self.peer,
                via = %via,
                proto = protocol,
                user = ?self.user,
                command = %command,
                dest = %dest,
                rule = %rule,
                reply = %reply,
                bytes_up = self.traffic.up,
                bytes_down = self.traffic.down,
                datagrams_up = udp.up,
                datagrams_down = udp.down,
                datagrams_dropped = udp.dropped,
                duration_ms,
                reason = %self.reason,
                "session"
            ),
        }
    }
}

/// A request as the shared steps see it, whichever protocol it came in.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) protocol: Protocol,
    pub(crate) command: Command,
    /// An address (IPv4-mapped IPv6 turned into IPv4), or a name without its trailing dot.
    pub(crate) host: Host,
    pub(crate) port: u16,
    /// The SOCKS4 USERID (a claim), or the name a SOCKS5 client logged in as.
    pub(crate) user: Vec<u8>,
    /// Whether `user` was proven with a password.
    pub(crate) authenticated: bool,
    /// Bytes the client sent after its request (pipelined before the reply).
    leftover: Vec<u8>,
}

impl Request {
    /// What the rules see for destination `name`/`ip`.
    pub(crate) fn query<'r>(&'r self, client: IpAddr, name: Option<&'r str>, ip: Option<IpAddr>) -> Query<'r> {
        Query {
            client,
            command: self.command,
            port: self.port,
            name,
            ip,
            user: &self.user,
            authenticated: self.authenticated,
        }
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
        protocol: None,
        user: String::new(),
        command: None,
        dest: None,
        rule: None,
        rule_name: None,
        reply: None,
        traffic: Traffic::default(),
        udp: None,
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
/// `max_sessions_per_client` (`over_limit`) is refused once its request is in (SOCKS5: "not
/// allowed by ruleset", without a login).
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
    let over = over_limit.is_some();
    let Some(request) = receive(client, config, deadline, who.buffered.clone(), over, rec).await else { return };
    if let Some(max) = over_limit {
        rec.reason = format!("max_sessions_per_client: this client has {max} live sessions");
        return refuse(client, rec, Outcome::NotAllowed).await;
    }
    let peer = who.peer;
    if request.command == Command::UdpAssociate {
        return udp::associate(client, who, local, &request, config, rec).await;
    }
    let query = |name, ip| request.query(peer.ip(), name, ip);
    let (name, addrs) = match destination_addresses(&request, &query, config, &mut rec.resolve).await {
        Ok(found) => found,
        Err((reason, outcome)) => {
            rec.reason = reason;
            return refuse(client, rec, outcome).await;
        }
    };
    let (decision, allowed) =
        match allowed_addresses(&addrs, |ip| rules::evaluate(&config.rules, &query(name, Some(ip)))) {
            Ok(allowed) => allowed,
            Err(refusal) => {
                rec.set_rule(refusal.and_then(|d| d.rule), config);
                rec.reason = "refused by rules".into();
                return refuse(client, rec, Outcome::NotAllowed).await;
            }
        };
    rec.set_rule(decision.rule, config);
    if let Some(outcome) = check_ident(decision.ident, who, local, &request.user, config, rec).await {
        return refuse(client, rec, outcome).await;
    }
    match request.command {
        Command::Connect => connect(client, &allowed, request.port, &request.leftover, config, rec).await,
        Command::Bind => bind(client, local, &allowed, &request.leftover, config, rec).await,
        Command::UdpAssociate => unreachable!("handled above"),
    }
}

enum ReadError<E> {
    Closed,
    Protocol(E),
}

/// Reads until `decode` finds one message at the start of `buf`, removes it
/// from `buf` and returns it; bytes after it stay in `buf`. Every decoder
/// used here caps its message, so `buf` stays small.
async fn read_message<T, E>(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> Result<T, ReadError<E>> {
    let mut chunk = [0u8; 512];
    loop {
        match decode(buf) {
            Ok(Some((message, used))) => {
                buf.drain(..used);
                return Ok(message);
            }
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

/// Reads the request by `deadline` (for SOCKS5: the greeting, the login and
/// the request together), after `buf` (bytes that came with a PROXY header),
/// and notes it in the log record; `None` when the session is over (refused,
/// or closed without a reply). A client `over_limit` is not offered a login.
async fn receive(
    client: &mut TcpStream,
    config: &Config,
    deadline: tokio::time::Instant,
    mut buf: Vec<u8>,
    over_limit: bool,
    rec: &mut Record<'_>,
) -> Option<Request> {
    buf.reserve(64);
    let first = |b: &[u8]| Ok::<_, Infallible>(b.first().map(|&v| (v, 0)));
    let version = match timeout_at(deadline, read_message(client, &mut buf, first)).await {
        Err(_) => {
            rec.reason = "handshake timeout".into();
            return None;
        }
        Ok(Err(_)) => {
            rec.reason = "closed before the request ended".into();
            return None;
        }
        Ok(Ok(v)) => v,
    };
    match version {
        4 if config.protocols.socks4 => receive_v4(client, buf, deadline, rec).await,
        5 if config.protocols.socks5 => receive_v5(client, buf, deadline, config, over_limit, rec).await,
        v => {
            // Not a client we serve: it could not read our reply anyway.
            rec.reason = match v {
                4 | 5 => format!("request version {v}: protocol off: closed without reply"),
                _ if balancer::looks_like_header(&buf) => {
                    // A PROXY header from a source not in proxy_protocol_from: a spoofing
                    // attempt, or a balancer missing from the list.
                    if let Some((m, _)) = rec.metrics {
                        m.proxy_header(ProxyOutcome::Untrusted);
                    }
                    tracing::warn!(
                        peer = %rec.peer,
                        "PROXY protocol header from a source not in proxy_protocol_from: refused"
                    );
                    "PROXY protocol header from an untrusted source: closed without reply".into()
                }
                _ => format!("request version {v}: closed without reply"),
            };
            None
        }
    }
}

async fn receive_v4(
    client: &mut TcpStream,
    mut buf: Vec<u8>,
    deadline: tokio::time::Instant,
    rec: &mut Record<'_>,
) -> Option<Request> {
    rec.protocol = Some(Protocol::Socks4);
    let limits = v4::Limits::default();
    let read = read_message(client, &mut buf, |b| v4::Request::decode_with(b, &limits));
    let mut request = match timeout_at(deadline, read).await {
        Err(_) => {
            rec.reason = "handshake timeout".into();
            return None;
        }
        Ok(Err(ReadError::Closed)) => {
            rec.reason = "closed before the request ended".into();
            return None;
        }
        Ok(Err(ReadError::Protocol(e))) => {
            rec.reason = e.to_string();
            refuse(client, rec, Outcome::NotAllowed).await;
            return None;
        }
        Ok(Ok(r)) => r,
    };
    // "host." and "host" name the same host: one spelling for rules, lookups
    // and logs, so a trailing dot cannot step around a rule about the name.
    if let v4::Destination::Name(name) = &mut request.destination {
        name.truncate(host::strip_root(name).len());
    }
    rec.user = request.user_id_lossy().into_owned();
    rec.dest = Some(format!("{}:{}", request.destination, request.port));
    let command = match request.command {
        v4::Command::Connect => Command::Connect,
        v4::Command::Bind => Command::Bind,
    };
    rec.command = Some(command);
    let host = match request.destination {
        v4::Destination::Ip(ip) => Host::Ip(IpAddr::V4(ip)),
        v4::Destination::Name(name) => Host::Name(name),
    };
    Some(Request {
        protocol: Protocol::Socks4,
        command,
        host,
        port: request.port,
        user: request.user_id,
        authenticated: false,
        leftover: leftover(buf),
    })
}

/// What the client sent after its request, for the relay; usually nothing,
/// and then the read buffer is not kept for the whole relay.
fn leftover(buf: Vec<u8>) -> Vec<u8> {
    if buf.is_empty() { Vec::new() } else { buf }
}

/// The method a greeting gets: username/password whenever there are users
/// and the client offers it (clients such as curl offer both), else no
/// authentication if offered, else none acceptable.
fn choose_method(greeting: &Greeting, users: bool) -> Method {
    if users && greeting.offers(Method::UsernamePassword) {
        Method::UsernamePassword
    } else if greeting.offers(Method::NoAuth) {
        Method::NoAuth
    } else {
        Method::NoAcceptable
    }
}

async fn receive_v5(
    client: &mut TcpStream,
    mut buf: Vec<u8>,
    deadline: tokio::time::Instant,
    config: &Config,
    over_limit: bool,
    rec: &mut Record<'_>,
) -> Option<Request> {
    rec.protocol = Some(Protocol::Socks5);
    let greeting = match timeout_at(deadline, read_message(client, &mut buf, Greeting::decode)).await {
        Err(_) => {
            rec.reason = "handshake timeout (greeting)".into();
            return None;
        }
        Ok(Err(ReadError::Closed)) => {
            rec.reason = "closed before the greeting ended".into();
            return None;
        }
        Ok(Err(ReadError::Protocol(e))) => {
            rec.reason = e.to_string();
            return None;
        }
        Ok(Ok(g)) => g,
    };
    // A client about to be refused gets no login: no password check spent on it.
    let method = choose_method(&greeting, config.users.is_some() && !over_limit);
    if client.write_all(&MethodSelection::new(method).to_bytes()).await.is_err() {
        rec.reason = "client gone before the method selection".into();
        return None;
    }
    if method == Method::NoAcceptable {
        let offered: Vec<String> = greeting.methods.iter().map(|m| format!("{:#04x}", m.to_byte())).collect();
        rec.reason = format!("no acceptable method (offered: [{}])", offered.join(", "));
        linger_close(client).await;
        return None;
    }
    let (user, authenticated) = match method {
        Method::UsernamePassword => {
            let users = config.users.clone().expect("username/password is chosen only with users");
            login(client, &mut buf, deadline, users, rec).await?
        }
        _ => (Vec::new(), false),
    };
    let request = match timeout_at(deadline, read_message(client, &mut buf, v5::Request::decode)).await {
        Err(_) => {
            rec.reason = "handshake timeout".into();
            return None;
        }
        Ok(Err(ReadError::Closed)) => {
            rec.reason = "closed before the request ended".into();
            return None;
        }
        Ok(Err(ReadError::Protocol(e))) => {
            rec.reason = e.to_string();
            let outcome = match e {
                // A request that is not SOCKS5 after all: it could not read a reply.
                v5::ProtocolError::BadVersion(_) => return None,
                v5::ProtocolError::BadCommand(_) => Outcome::CommandNotSupported,
                v5::ProtocolError::BadAddressType(_) => Outcome::AddressTypeNotSupported,
                _ => Outcome::GeneralFailure,
            };
            refuse(client, rec, outcome).await;
            return None;
        }
        Ok(Ok(r)) => r,
    };
    let v5::Address { host, port } = request.destination;
    let host = match host {
        // `::ffff:10.1.2.3` is the IPv4 host, for the rules and for the connect.
        Host::Ip(ip) => Host::Ip(ip.to_canonical()),
        Host::Name(mut name) => {
            name.truncate(host::strip_root(&name).len());
            Host::Name(name)
        }
    };
    rec.dest = Some(v5::Address::new(host.clone(), port).to_string());
    rec.command = Some(request.command);
    Some(Request {
        protocol: Protocol::Socks5,
        command: request.command,
        host,
        port,
        user,
        authenticated,
        leftover: leftover(buf),
    })
}

/// RFC 1929: reads the login and checks it; a failure is answered and the
/// connection closed (`None`). The password is never logged.
async fn login(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    users: Arc<Users>,
    rec: &mut Record<'_>,
) -> Option<(Vec<u8>, bool)> {
    let request = match timeout_at(deadline, read_message(client, buf, PasswordRequest::decode)).await {
        Err(_) => {
            rec.reason = "handshake timeout (login)".into();
            return None;
        }
        Ok(Err(ReadError::Closed)) => {
            rec.reason = "closed before the login ended".into();
            return None;
        }
        Ok(Err(ReadError::Protocol(e))) => {
            rec.reason = format!("login: {e}");
            if client.write_all(&PasswordReply::FAILURE.to_bytes()).await.is_ok() {
                linger_close(client).await;
            }
            return None;
        }
        Ok(Ok(r)) => r,
    };
    rec.user = request.username_lossy().into_owned();
    let check = async {
        let _permit = LOGINS.acquire().await.ok()?;
        let name = request.username().to_vec();
        let password = request.password().to_vec();
        tokio::task::spawn_blocking(move || users.verify(&name, &password)).await.ok()
    };
    let ok = match timeout_at(deadline, check).await {
        Ok(Some(ok)) => ok,
        Ok(None) => false,
        Err(_) => {
            rec.reason = "handshake timeout (password check)".into();
            return None;
        }
    };
    if !ok {
        rec.reason = "login failed".into();
        if client.write_all(&PasswordReply::FAILURE.to_bytes()).await.is_ok() {
            linger_close(client).await;
        }
        return None;
    }
    if client.write_all(&PasswordReply::SUCCESS.to_bytes()).await.is_err() {
        rec.reason = "client gone before the login reply".into();
        return None;
    }
    Some((request.username().to_vec(), true))
}

/// The addresses a request points at, and its host name if it had one. A name is looked up only
/// if some allow rule could match the request at all (no DNS queries on behalf of clients the
/// rules keep out); the rules then see the name and each address. `Err` is the log reason of a
/// refusal and its outcome.
async fn destination_addresses<'r>(
    request: &'r Request,
    query: &impl Fn(Option<&'r str>, Option<IpAddr>) -> Query<'r>,
    config: &Config,
    resolved: &mut Option<ResolveOutcome>,
) -> Result<(Option<&'r str>, Vec<IpAddr>), (String, Outcome)> {
    if request.command == Command::Connect && request.port == 0 {
        // Nothing can listen on port 0: refused before any rule, lookup or
        // packet. (For BIND, port 0 only says there is no primary
        // connection; the rules decide as for any port.)
        return Err(("port 0 is not a destination".into(), Outcome::NotAllowed));
    }
    let (name, addrs) = match &request.host {
        Host::Ip(ip) => (None, vec![*ip]),
        Host::Name(name) if !rules::may_allow(&config.rules, &query(Some(name.as_str()), None)) => {
            *resolved = Some(ResolveOutcome::Skipped);
            return Err(("refused by rules (name not looked up)".into(), Outcome::NotAllowed));
        }
        Host::Name(name) => {
            // SOCKS4 replies can only name IPv4 hosts.
            let families = if request.protocol == Protocol::Socks4 { Families::V4 } else { Families::Both };
            let found = resolve(name, config.resolve_timeout, families).await;
            *resolved = Some(resolve_outcome(&found));
            (Some(name.as_str()), found.map_err(|e| (format!("cannot resolve: {e}"), Outcome::HostUnreachable))?)
        }
    };
    if addrs.iter().all(|ip| ip.is_unspecified()) && request.command == Command::Connect {
        // Linux takes a connect to 0.0.0.0 (or ::) as one to this host, which
        // would slip past rules about 127.0.0.0/8.
        return Err((format!("{} is not a destination", addrs[0]), Outcome::NotAllowed));
    }
    Ok((name, addrs))
}

/// The addresses the rules allow, in order, with the decision that governs them all: the first
/// allowed address's. A later address is kept only if its own rule asks for no stricter IDENT
/// check than that one, so the one IDENT check made covers every address that may be used.
/// `Err` carries the first refusing decision (a rule, or none matched).
fn allowed_addresses(
    addrs: &[IpAddr],
    decide: impl Fn(IpAddr) -> Decision,
) -> Result<(Decision, Vec<IpAddr>), Option<Decision>> {
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

/// Which addresses a name lookup keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Families {
    V4,
    Both,
}

/// The error text of a lookup that ran out of `resolve_timeout`.
const RESOLVE_TIMED_OUT: &str = "timed out";

/// How a [`resolve`] ended, for the metrics.
fn resolve_outcome(found: &Result<Vec<IpAddr>, String>) -> ResolveOutcome {
    match found {
        Ok(_) => ResolveOutcome::Ok,
        Err(e) if e == RESOLVE_TIMED_OUT => ResolveOutcome::Timeout,
        Err(_) => ResolveOutcome::Failed,
    }
}

/// The addresses of `name` (IPv4-mapped ones as IPv4), in the resolver's
/// order, without repeats.
pub(crate) async fn resolve(name: &str, limit: Duration, families: Families) -> Result<Vec<IpAddr>, String> {
    let found = timeout(limit, tokio::net::lookup_host((name, 0)))
        .await
        .map_err(|_| RESOLVE_TIMED_OUT.to_string())?
        .map_err(|e| e.to_string())?;
    let mut addrs = Vec::new();
    for addr in found {
        let ip = addr.ip().to_canonical();
        if (families == Families::Both || ip.is_ipv4()) && !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    if addrs.is_empty() {
        return Err(if families == Families::V4 { "no IPv4 address" } else { "no address" }.into());
    }
    Ok(addrs)
}

/// Runs the IDENT check `mode` asks for; `Some(outcome)` refuses.
///
/// identd is asked about the client's own connection: from the client's port to the port it
/// reached. Behind a load balancer that is the balancer's frontend port, and the query leaves
/// from whatever address routes to the client (the address the client reached is the
/// balancer's, not ours).
pub(crate) async fn check_ident(
    mode: IdentMode,
    who: &Client,
    local: SocketAddr,
    user_id: &[u8],
    config: &Config,
    rec: &mut Record<'_>,
) -> Option<Outcome> {
    if mode == IdentMode::Off {
        return None;
    }
    let from = match (who.via, who.peer.ip()) {
        (None, _) => local.ip(),
        (Some(_), IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (Some(_), IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let answer = ident::lookup(from, who.peer, who.reached.port(), config.ident_port, config.ident_timeout).await;
    rec.ident = Some(match &answer {
        Ok(id) if mode == IdentMode::Match && id != user_id => IdentOutcome::Mismatch,
        Ok(_) => IdentOutcome::Ok,
        Err(IdentError::Unreachable(_)) => IdentOutcome::Unreachable,
        Err(IdentError::Timeout) => IdentOutcome::Timeout,
        Err(IdentError::Error(_)) => IdentOutcome::Error,
        Err(_) => IdentOutcome::Malformed,
    });
    match answer {
        Err(e) => {
            rec.reason = format!("ident: {e}");
            Some(Outcome::IdentUnreachable)
        }
        Ok(id) if mode == IdentMode::Match && id != user_id => {
            rec.reason = format!("ident: identd says {:?}", String::from_utf8_lossy(&id));
            Some(Outcome::IdentMismatch)
        }
        Ok(_) => None,
    }
}

async fn connect(
    client: &mut TcpStream,
    addrs: &[IpAddr],
    port: u16,
    leftover: &[u8],
    config: &Config,
    rec: &mut Record<'_>,
) {
    // One time limit for all addresses of a name together.
    let attempt = async {
        let mut last = None;
        for &ip in addrs.iter().filter(|ip| !ip.is_unspecified()) {
            match net::connect(config.external, SocketAddr::new(ip, port)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address")))
    };
    let mut dest = match timeout(config.connect_timeout, attempt).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            rec.reason = format!("connect: {e}");
            return refuse(client, rec, Outcome::from_connect_error(&e)).await;
        }
        Err(_) => {
            rec.reason = "connect: timed out".into();
            return refuse(client, rec, Outcome::HostUnreachable).await;
        }
    };
    let _ = dest.set_nodelay(true);
    // The address the destination sees us as: a socksified program answers
    // getsockname() with it.
    let outgoing = dest.local_addr().ok();
    let reply = rec.reply_bytes(Outcome::Granted, outgoing);
    if client.write_all(&reply).await.is_err() {
        return rec.reason = "client gone before the reply".into();
    }
    relay_with(client, &mut dest, leftover, rec).await;
}

/// BIND: a listener where our CONNECTs to the host come from, the first reply with its address,
/// one connection within `connect_timeout` from an expected host, the second reply, the relay.
async fn bind(
    client: &mut TcpStream,
    local: SocketAddr,
    addrs: &[IpAddr],
    leftover: &[u8],
    config: &Config,
    rec: &mut Record<'_>,
) {
    let listener = match bind_listener(local, addrs[0], config) {
        Ok(l) => l,
        Err(e) => {
            rec.reason = format!("bind listener: {e}");
            return refuse(client, rec, Outcome::GeneralFailure).await;
        }
    };
    // What the application server is told to connect to: the listener, or the address in
    // front of it (`advertise`: a NAT, a load balancer).
    let reply =
        rec.reply_bytes(Outcome::Granted, listener.local_addr().ok().map(|a| config.advertise.reply_address(a)));
    if client.write_all(&reply).await.is_err() {
        return rec.reason = "client gone before the first reply".into();
    }
    let (mut peer_stream, from) = match the_one_connection(listener, client, config.connect_timeout).await {
        Incoming::Connected(stream, from) => (stream, from),
        Incoming::Cancelled => return rec.reason = "bind: cancelled by the client".into(),
        Incoming::Failed(reason) => {
            rec.reason = reason;
            return refuse(client, rec, Outcome::HostUnreachable).await;
        }
    };
    // An unspecified address (0.0.0.0, ::) names no host: any host may connect (the rules' `to`
    // still had to allow it).
    if !addrs.contains(&from.ip()) && !addrs[0].is_unspecified() {
        rec.reason = format!("bind: connection from {from}, expected {}", addrs[0]);
        drop(peer_stream);
        return refuse(client, rec, Outcome::NotAllowed).await;
    }
    let _ = peer_stream.set_nodelay(true);
    let reply = rec.reply_bytes(Outcome::Granted, Some(from));
    if client.write_all(&reply).await.is_err() {
        return rec.reason = "client gone before the second reply".into();
    }
    relay_with(client, &mut peer_stream, leftover, rec).await;
}

/// The BIND listener, on the address our CONNECTs to `expected` come from (see
/// net::external_for), so the application server sees one address for both connections; see
/// [`listen_address`] for when there is none.
fn bind_listener(local: SocketAddr, expected: IpAddr, config: &Config) -> io::Result<tokio::net::TcpListener> {
    net::bind_listener(listen_address(net::external_for(config.external, expected), local.ip(), expected))
}

/// Where BIND listens for a peer at `expected`: the external (or routed) address for its
/// family; without one (no route to it), the address the client reached if it is of that
/// family, else every address of the family.
fn listen_address(external: Option<IpAddr>, local: IpAddr, expected: IpAddr) -> IpAddr {
    let local = local.to_canonical();
    external.or((local.is_ipv4() == expected.is_ipv4()).then_some(local)).unwrap_or(match expected {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    })
}

/// How BIND's wait for its one connection ended.
enum Incoming {
    /// With the peer's address, IPv4-mapped ones as IPv4.
    Connected(TcpStream, SocketAddr),
    /// The client closed while waiting: no reply to send.
    Cancelled,
    /// Timed out or failed: the log reason, and a refusal to send.
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
            Incoming::Connected(stream, SocketAddr::new(from.ip().to_canonical(), from.port()))
        }
    }
}

/// Resolves when the client closes (or fails) while BIND waits. Data from
/// the client is left in the socket for the relay and stops the watch.
pub(crate) async fn client_gone(client: &TcpStream) {
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
pub(crate) async fn refuse(client: &mut TcpStream, rec: &mut Record<'_>, outcome: Outcome) {
    let reply = rec.reply_bytes(outcome, None);
    if client.write_all(&reply).await.is_err() {
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
        let ip = |d: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, d));
        let last = |addr: IpAddr| match addr {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(_) => 0,
        };
        let rules = |addr: IpAddr| match last(addr) {
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

    /// BIND listens on the external address; without one, on the client's if the families
    /// agree, else on every address of the peer's family.
    #[test]
    fn bind_listens_where_the_peer_can_reach_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(listen_address(Some(ip("192.0.2.7")), ip("127.0.0.1"), ip("198.51.100.1")), ip("192.0.2.7"));
        assert_eq!(listen_address(None, ip("::ffff:127.0.0.3"), ip("198.51.100.1")), ip("127.0.0.3"));
        assert_eq!(listen_address(None, ip("127.0.0.3"), ip("2001:db8::1")), ip("::"));
        assert_eq!(listen_address(None, ip("::1"), ip("2001:db8::1")), ip("::1"));
        assert_eq!(listen_address(None, ip("::1"), ip("198.51.100.1")), ip("0.0.0.0"));
    }

    /// A lookup keeps the families asked for, IPv4-mapped addresses as IPv4, and says which
    /// family it found nothing of.
    #[tokio::test]
    async fn lookups_keep_the_families_asked_for() {
        let limit = Duration::from_secs(5);
        let v6: IpAddr = Ipv6Addr::LOCALHOST.into();
        assert_eq!(resolve("::1", limit, Families::Both).await, Ok(vec![v6]));
        assert_eq!(resolve("::1", limit, Families::V4).await, Err("no IPv4 address".to_string()));
        assert_eq!(resolve("::ffff:127.0.0.1", limit, Families::V4).await, Ok(vec![Ipv4Addr::LOCALHOST.into()]));
        let found = resolve("localhost", limit, Families::V4).await.unwrap();
        assert!(found.iter().all(IpAddr::is_ipv4) && found.contains(&Ipv4Addr::LOCALHOST.into()), "{found:?}");
    }

    /// SOCKS4A looks up IPv4 only (its reply cannot name an IPv6 host), SOCKS5 both families;
    /// the lookup's outcome is noted for the metrics, a timeout as such.
    #[tokio::test]
    async fn destination_lookups_by_protocol_and_their_outcomes() {
        let request = |protocol, name: &str| Request {
            protocol,
            command: Command::Connect,
            host: Host::Name(name.to_string()),
            port: 80,
            user: Vec::new(),
            authenticated: false,
            leftover: Vec::new(),
        };
        let config = Config::default();
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let ask = async |request: &Request, config: &Config| {
            let mut resolved = None;
            let query = |name, ip| request.query(client, name, ip);
            let found = destination_addresses(request, &query, config, &mut resolved).await;
            (found.map(|(_, addrs)| addrs), resolved)
        };
        let socks5 = request(Protocol::Socks5, "::1");
        assert_eq!(ask(&socks5, &config).await, (Ok(vec![Ipv6Addr::LOCALHOST.into()]), Some(ResolveOutcome::Ok)));
        let socks4 = request(Protocol::Socks4, "::1");
        assert_eq!(
            ask(&socks4, &config).await,
            (
                Err(("cannot resolve: no IPv4 address".to_string(), Outcome::HostUnreachable)),
                Some(ResolveOutcome::Failed)
            )
        );
        // A lookup that ran out of time is counted as such, not as a failure.
        assert_eq!(resolve_outcome(&Err(RESOLVE_TIMED_OUT.to_string())), ResolveOutcome::Timeout);
        assert_eq!(resolve_outcome(&Err("no address".to_string())), ResolveOutcome::Failed);
    }

    /// Every outcome has one code per protocol; SOCKS4 says 91 for all but
    /// success and IDENT's two.
    #[test]
    fn reply_codes_per_protocol() {
        let cases = [
            (Outcome::Granted, 90, 0),
            (Outcome::NotAllowed, 91, 2),
            (Outcome::IdentUnreachable, 92, 2),
            (Outcome::IdentMismatch, 93, 2),
            (Outcome::GeneralFailure, 91, 1),
            (Outcome::NetworkUnreachable, 91, 3),
            (Outcome::HostUnreachable, 91, 4),
            (Outcome::ConnectionRefused, 91, 5),
            (Outcome::CommandNotSupported, 91, 7),
            (Outcome::AddressTypeNotSupported, 91, 8),
        ];
        for (outcome, four, five) in cases {
            assert_eq!(Protocol::Socks4.code(outcome), four, "{outcome:?}");
            assert_eq!(Protocol::Socks5.code(outcome), five, "{outcome:?}");
            assert_eq!(Protocol::Socks4.reply(outcome, None), [0, four, 0, 0, 0, 0, 0, 0]);
            assert_eq!(Protocol::Socks5.reply(outcome, None), [5, five, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let mut want = vec![5, 0, 0, 4];
        want.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(&[0, 80]);
        assert_eq!(Protocol::Socks5.reply(Outcome::Granted, Some(v6)), want);
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:21".parse().unwrap();
        assert_eq!(Protocol::Socks4.reply(Outcome::Granted, Some(mapped)), [0, 90, 0, 21, 10, 0, 0, 1]);
    }

    #[test]
    fn connect_errors_map_to_rfc_codes() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(Outcome::from_connect_error(&e(libc::ECONNREFUSED)), Outcome::ConnectionRefused);
        assert_eq!(Outcome::from_connect_error(&e(libc::ENETUNREACH)), Outcome::NetworkUnreachable);
        assert_eq!(Outcome::from_connect_error(&e(libc::EHOSTUNREACH)), Outcome::HostUnreachable);
        assert_eq!(Outcome::from_connect_error(&e(libc::ETIMEDOUT)), Outcome::HostUnreachable);
        assert_eq!(Outcome::from_connect_error(&e(libc::EACCES)), Outcome::GeneralFailure);
    }

    #[test]
    fn method_choice() {
        let g = |m: &[u8]| Greeting::new(m.iter().map(|&b| Method::from_byte(b)).collect::<Vec<_>>());
        assert_eq!(choose_method(&g(&[0, 2]), true), Method::UsernamePassword);
        assert_eq!(choose_method(&g(&[0, 2]), false), Method::NoAuth);
        assert_eq!(choose_method(&g(&[0]), true), Method::NoAuth);
        assert_eq!(choose_method(&g(&[2]), false), Method::NoAcceptable);
        assert_eq!(choose_method(&g(&[]), true), Method::NoAcceptable);
        assert_eq!(choose_method(&g(&[1, 3, 0x80]), true), Method::NoAcceptable);
    }
}
