//! socks4d's Prometheus metrics: what sessions, the accept loops and reloads
//! count, and their text exposition (prometheus-client's encoder).
//!
//! Cheap on the session path: every count is a relaxed atomic add on a
//! counter found by index (no map, no lock, no allocation); a session adds
//! its counts once, when it ends. prometheus-client's own `Family` and
//! `Histogram` are not used there because they take a lock (a `RwLock`
//! around the label map, a `Mutex` around the histogram); this module keeps
//! plain atomics and hands their values to the crate's encoder at scrape
//! time, through a [`Collector`]. The one lock here, the table of rule
//! counters by name, is taken at reload and scrape only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::rules::{Action, Rules};

/// The protocol a session spoke (its first byte), as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The session ended before its first byte, or that byte was neither 4 nor 5.
    Unknown,
    Socks4,
    Socks5,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Unknown, Protocol::Socks4, Protocol::Socks5];

    fn label(self) -> &'static str {
        match self {
            Protocol::Unknown => "none",
            Protocol::Socks4 => "socks4",
            Protocol::Socks5 => "socks5",
        }
    }
}

/// The command a session asked for, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// No request was read.
    None,
    Connect,
    Bind,
    UdpAssociate,
}

impl Command {
    const ALL: [Command; 4] = [Command::None, Command::Connect, Command::Bind, Command::UdpAssociate];

    fn label(self) -> &'static str {
        match self {
            Command::None => "none",
            Command::Connect => "connect",
            Command::Bind => "bind",
            Command::UdpAssociate => "udp",
        }
    }
}

/// How the rules decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOutcome {
    /// The session ended before the rules were asked.
    NotEvaluated,
    /// No rule matched (refused).
    NoMatch,
    /// The rule at this index of the session's configuration decided.
    Rule(usize),
}

/// How an IDENT check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentOutcome {
    /// identd named a user (for `match`: the request's).
    Ok,
    /// identd named another user than the request's (`match`: refused).
    Mismatch,
    /// No connection to identd.
    Unreachable,
    /// No answer within `ident_timeout`.
    Timeout,
    /// identd answered ERROR.
    Error,
    /// A closed, over-long or malformed answer.
    Malformed,
}

impl IdentOutcome {
    const ALL: [IdentOutcome; 6] = [
        IdentOutcome::Ok,
        IdentOutcome::Mismatch,
        IdentOutcome::Unreachable,
        IdentOutcome::Timeout,
        IdentOutcome::Error,
        IdentOutcome::Malformed,
    ];

    fn label(self) -> &'static str {
        match self {
            IdentOutcome::Ok => "ok",
            IdentOutcome::Mismatch => "mismatch",
            IdentOutcome::Unreachable => "unreachable",
            IdentOutcome::Timeout => "timeout",
            IdentOutcome::Error => "error",
            IdentOutcome::Malformed => "malformed",
        }
    }
}

/// How a host name lookup for a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// Addresses found.
    Ok,
    /// The lookup failed or found no usable address.
    Failed,
    /// No answer within `resolve_timeout`.
    Timeout,
    /// Not looked up: no allow rule could match the request.
    Skipped,
}

impl ResolveOutcome {
    const ALL: [ResolveOutcome; 4] =
        [ResolveOutcome::Ok, ResolveOutcome::Failed, ResolveOutcome::Timeout, ResolveOutcome::Skipped];

    fn label(self) -> &'static str {
        match self {
            ResolveOutcome::Ok => "ok",
            ResolveOutcome::Failed => "failed",
            ResolveOutcome::Timeout => "timeout",
            ResolveOutcome::Skipped => "skipped",
        }
    }
}

/// What happened with the PROXY protocol on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// A v1 header named the client.
    V1,
    /// A v2 header named the client.
    V2,
    /// A v2 LOCAL header (the balancer's own connection: a health check).
    Local,
    /// A trusted source sent no header: refused.
    Missing,
    /// An untrusted source sent a header: refused.
    Untrusted,
    /// A malformed header, or one that names no TCP client: refused.
    Invalid,
}

impl ProxyOutcome {
    const ALL: [ProxyOutcome; 6] = [
        ProxyOutcome::V1,
        ProxyOutcome::V2,
        ProxyOutcome::Local,
        ProxyOutcome::Missing,
        ProxyOutcome::Untrusted,
        ProxyOutcome::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            ProxyOutcome::V1 => "v1",
            ProxyOutcome::V2 => "v2",
            ProxyOutcome::Local => "local",
            ProxyOutcome::Missing => "missing",
            ProxyOutcome::Untrusted => "untrusted",
            ProxyOutcome::Invalid => "invalid",
        }
    }
}

/// Why a client was turned away before its session proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` live sessions already.
    MaxConnections,
    /// `max_sessions_per_client` live sessions from this client's address already.
    MaxSessionsPerClient,
}

impl Refusal {
    const ALL: [Refusal; 2] = [Refusal::MaxConnections, Refusal::MaxSessionsPerClient];

    fn label(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxSessionsPerClient => "max_sessions_per_client",
        }
    }
}

/// What a session reports when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEnd {
    pub protocol: Protocol,
    pub command: Command,
    /// The last reply code sent, as on the wire; `None`: no reply was sent.
    pub reply: Option<u8>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// From accept to the (first) reply; `None`: no reply was sent.
    pub handshake: Option<Duration>,
    pub rule: RuleOutcome,
    pub ident: Option<IdentOutcome>,
    pub resolve: Option<ResolveOutcome>,
}

/// Upper bounds of the handshake latency buckets, in seconds: from a
/// loopback CONNECT (about 100 us) to a slow IDENT or name lookup.
const HANDSHAKE_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Reply codes a session may end with: none (index 0), then every byte.
const REPLY_SLOTS: usize = 1 + 256;

/// A histogram of atomic buckets (each counts its own range; the encoder
/// makes them cumulative) and an atomic sum in nanoseconds.
#[derive(Debug)]
struct AtomicHistogram {
    bounds_ns: [u64; HANDSHAKE_BUCKETS.len()],
    /// One per bound, then +Inf.
    buckets: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    fn new() -> AtomicHistogram {
        AtomicHistogram {
            bounds_ns: HANDSHAKE_BUCKETS.map(|s| (s * 1e9).round() as u64),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_ns.iter().position(|&b| ns <= b).unwrap_or(self.bounds_ns.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, [(upper bound, count in that bucket alone)])`.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> =
            HANDSHAKE_BUCKETS.iter().zip(&self.buckets).map(|(&bound, n)| (bound, n.load(Ordering::Relaxed))).collect();
        buckets.push((f64::INFINITY, self.buckets[HANDSHAKE_BUCKETS.len()].load(Ordering::Relaxed)));
        let count = buckets.iter().map(|(_, n)| n).sum();
        (self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9, count, buckets)
    }
}

/// The counters of one server.
#[derive(Debug)]
pub struct Metrics {
    /// By protocol, command and reply slot.
    sessions: Box<[AtomicU64]>,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    handshake: AtomicHistogram,
    no_rule: AtomicU64,
    /// By rule label and action, for every rule any configuration had.
    rules: Mutex<BTreeMap<(String, &'static str), Arc<AtomicU64>>>,
    ident: [AtomicU64; IdentOutcome::ALL.len()],
    resolve: [AtomicU64; ResolveOutcome::ALL.len()],
    proxy: [AtomicU64; ProxyOutcome::ALL.len()],
    refused: [AtomicU64; Refusal::ALL.len()],
    accept_errors: AtomicU64,
    /// `[ok, failed]`.
    reloads: [AtomicU64; 2],
    /// The server's live session count.
    live: Arc<AtomicUsize>,
}

/// The counters of the rules of one configuration, by rule index: built at
/// load and reload ([`Metrics::rule_hits`]), so that a session counts its
/// rule without looking up a name.
#[derive(Debug, Clone, Default)]
pub struct RuleHits(Box<[Arc<AtomicU64>]>);

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn session_slot(protocol: Protocol, command: Command, reply: Option<u8>) -> usize {
    let reply = reply.map_or(0, |code| 1 + usize::from(code));
    ((protocol as usize) * Command::ALL.len() + command as usize) * REPLY_SLOTS + reply
}

/// The label of rule `index`: its name, or `#index` if it has none.
fn rule_label(name: Option<&str>, index: usize) -> String {
    name.map_or_else(|| format!("#{index}"), str::to_string)
}

impl Metrics {
    /// Counters at zero; `live` is the server's live session count, read at scrape time.
    pub fn new(live: Arc<AtomicUsize>) -> Metrics {
        let slots = Protocol::ALL.len() * Command::ALL.len() * REPLY_SLOTS;
        Metrics {
            sessions: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            handshake: AtomicHistogram::new(),
            no_rule: AtomicU64::new(0),
            rules: Mutex::new(BTreeMap::new()),
            ident: zeros(),
            resolve: zeros(),
            proxy: zeros(),
            refused: zeros(),
            accept_errors: AtomicU64::new(0),
            reloads: zeros(),
            live,
        }
    }

    /// The counters for `rules`, by index. A rule keeps its counter across
    /// reloads as long as its label (name, or `#index`) and action stay.
    pub fn rule_hits(&self, rules: &Rules) -> RuleHits {
        let mut table = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        RuleHits(
            rules
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let key = (rule_label(rule.name.as_deref(), i), action_label(rule.action));
                    table.entry(key).or_default().clone()
                })
                .collect(),
        )
    }

    /// Adds a finished session's counts; `rules` are its configuration's.
    pub fn session_end(&self, end: &SessionEnd, rules: &RuleHits) {
        self.sessions[session_slot(end.protocol, end.command, end.reply)].fetch_add(1, Ordering::Relaxed);
        if end.bytes_up > 0 {
            self.bytes_up.fetch_add(end.bytes_up, Ordering::Relaxed);
        }
        if end.bytes_down > 0 {
            self.bytes_down.fetch_add(end.bytes_down, Ordering::Relaxed);
        }
        if let Some(d) = end.handshake {
            self.handshake.observe(d);
        }
        match end.rule {
            RuleOutcome::NotEvaluated => {}
            RuleOutcome::NoMatch => {
                self.no_rule.fetch_add(1, Ordering::Relaxed);
            }
            RuleOutcome::Rule(i) => {
                if let Some(counter) = rules.0.get(i) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(outcome) = end.ident {
            self.ident[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(outcome) = end.resolve {
            self.resolve[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn proxy_header(&self, outcome: ProxyOutcome) {
        self.proxy[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every counter.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

fn action_label(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

/// Reply codes each protocol's sessions are listed with even at zero, so
/// that dashboards see the series from the start; other codes appear once
/// counted.
fn expected_replies(protocol: Protocol, command: Command) -> &'static [u8] {
    match (protocol, command) {
        (_, Command::None) | (Protocol::Unknown, _) => &[],
        (Protocol::Socks4, Command::UdpAssociate) => &[],
        (Protocol::Socks4, _) => &[90, 91, 92, 93],
        (Protocol::Socks5, _) => &[0, 1, 2, 3, 4, 5, 7, 8],
    }
}

/// Writes one counter family: `series` are (labels, value).
fn counter_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'a str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut sessions = Vec::new();
        for protocol in Protocol::ALL {
            for command in Command::ALL {
                let expected = expected_replies(protocol, command);
                for slot in 0..REPLY_SLOTS {
                    let reply = slot.checked_sub(1).map(|c| c as u8);
                    let value = load(&self.sessions[session_slot(protocol, command, reply)]);
                    if value > 0 || reply.is_some_and(|r| expected.contains(&r)) {
                        let reply = reply.map_or_else(|| "none".to_string(), |r| r.to_string());
                        let labels = vec![
                            ("protocol", protocol.label().to_string()),
                            ("command", command.label().to_string()),
                            ("reply", reply),
                        ];
                        sessions.push((labels, value));
                    }
                }
            }
        }
        counter_family(
            e,
            "socks4d_sessions",
            "Sessions ended, by protocol, command and last reply code sent (none: no reply)",
            sessions,
        )?;
        let live = i64::try_from(self.live.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        ConstGauge::new(live).encode(e.encode_descriptor(
            "socks4d_sessions_live",
            "Sessions running now (from accept to close)",
            None,
            MetricType::Gauge,
        )?)?;
        counter_family(
            e,
            "socks4d_relayed_bytes",
            "Bytes relayed by ended sessions: up = client to destination, down = destination to client",
            [
                (vec![("direction", "up".to_string())], load(&self.bytes_up)),
                (vec![("direction", "down".to_string())], load(&self.bytes_down)),
            ],
        )?;
        let (sum, count, buckets) = self.handshake.snapshot();
        e.encode_descriptor(
            "socks4d_handshake_seconds",
            "From accept to the (first) reply sent, for every request that got one",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        let rules: Vec<_> = {
            let table = self.rules.lock().unwrap_or_else(|e| e.into_inner());
            table
                .iter()
                .map(|((rule, action), n)| (vec![("rule", rule.clone()), ("action", (*action).to_string())], load(n)))
                .collect()
        };
        counter_family(e, "socks4d_rule_hits", "Requests decided by a rule, by rule name (#index if unnamed)", rules)?;
        counter(e, "socks4d_rule_misses", "Requests no rule matched (refused)", load(&self.no_rule))?;
        counter_family(
            e,
            "socks4d_ident_lookups",
            "IDENT (RFC 1413) checks, by result",
            IdentOutcome::ALL.map(|o| (vec![("result", o.label().to_string())], load(&self.ident[o as usize]))),
        )?;
        counter_family(
            e,
            "socks4d_name_lookups",
            "Host name lookups for requests, by result (skipped: no rule could allow the request)",
            ResolveOutcome::ALL.map(|o| (vec![("result", o.label().to_string())], load(&self.resolve[o as usize]))),
        )?;
        counter_family(
            e,
            "socks4d_proxy_headers",
            "PROXY protocol headers, by result (missing, untrusted and invalid are refused)",
            ProxyOutcome::ALL.map(|o| (vec![("result", o.label().to_string())], load(&self.proxy[o as usize]))),
        )?;
        counter_family(
            e,
            "socks4d_refused_connections",
            "Connections refused before their session, by reason",
            Refusal::ALL.map(|r| (vec![("reason", r.label().to_string())], load(&self.refused[r as usize]))),
        )?;
        counter(e, "socks4d_accept_errors", "Failed accepts (EMFILE, ENFILE, ENOBUFS...)", load(&self.accept_errors))?;
        counter_family(
            e,
            "socks4d_config_reloads",
            "Configuration reloads (SIGHUP), by result (failed: the old configuration was kept)",
            [
                (vec![("result", "ok".to_string())], load(&self.reloads[0])),
                (vec![("result", "failed".to_string())], load(&self.reloads[1])),
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rule;

    fn end(protocol: Protocol, command: Command, reply: Option<u8>) -> SessionEnd {
        SessionEnd {
            protocol,
            command,
            reply,
            bytes_up: 0,
            bytes_down: 0,
            handshake: None,
            rule: RuleOutcome::NotEvaluated,
            ident: None,
            resolve: None,
        }
    }

    /// The value of the series `name{labels}` (labels as written, e.g.
    /// `direction="up"`), or 0 if it is not listed.
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    #[test]
    fn sessions_count_by_protocol_command_and_reply() {
        let m = Arc::new(Metrics::new(Arc::new(AtomicUsize::new(3))));
        let hits = RuleHits::default();
        m.session_end(&end(Protocol::Socks4, Command::Connect, Some(90)), &hits);
        m.session_end(&end(Protocol::Socks4, Command::Connect, Some(90)), &hits);
        m.session_end(&end(Protocol::Socks5, Command::UdpAssociate, Some(0)), &hits);
        m.session_end(&end(Protocol::Unknown, Command::None, None), &hits);
        let text = m.render();
        assert_eq!(value(&text, "socks4d_sessions_total{protocol=\"socks4\",command=\"connect\",reply=\"90\"}"), 2.0);
        assert_eq!(value(&text, "socks4d_sessions_total{protocol=\"socks5\",command=\"udp\",reply=\"0\"}"), 1.0);
        assert_eq!(value(&text, "socks4d_sessions_total{protocol=\"none\",command=\"none\",reply=\"none\"}"), 1.0);
        // Listed at zero: the replies each protocol can send.
        assert!(
            text.contains("socks4d_sessions_total{protocol=\"socks4\",command=\"bind\",reply=\"93\"} 0\n"),
            "{text}"
        );
        assert!(!text.contains("protocol=\"socks4\",command=\"udp\""), "{text}");
        assert_eq!(value(&text, "socks4d_sessions_live"), 3.0);
        assert!(text.contains("# TYPE socks4d_sessions_total counter\n"), "{text}");
        assert!(text.contains("# TYPE socks4d_sessions_live gauge\n"), "{text}");
    }

    #[test]
    fn bytes_handshakes_ident_and_lookups() {
        let m = Arc::new(Metrics::new(Arc::default()));
        let hits = RuleHits::default();
        let e = SessionEnd {
            bytes_up: 100,
            bytes_down: 7,
            handshake: Some(Duration::from_micros(300)),
            ident: Some(IdentOutcome::Mismatch),
            resolve: Some(ResolveOutcome::Timeout),
            ..end(Protocol::Socks4, Command::Connect, Some(93))
        };
        m.session_end(&e, &hits);
        m.session_end(&SessionEnd { handshake: Some(Duration::from_secs(20)), ..e }, &hits);
        let text = m.render();
        assert_eq!(value(&text, "socks4d_relayed_bytes_total{direction=\"up\"}"), 200.0);
        assert_eq!(value(&text, "socks4d_relayed_bytes_total{direction=\"down\"}"), 14.0);
        assert_eq!(value(&text, "socks4d_handshake_seconds_bucket{le=\"0.00025\"}"), 0.0);
        assert_eq!(value(&text, "socks4d_handshake_seconds_bucket{le=\"0.0005\"}"), 1.0);
        assert_eq!(value(&text, "socks4d_handshake_seconds_bucket{le=\"10\"}"), 1.0, "{text}");
        assert_eq!(value(&text, "socks4d_handshake_seconds_bucket{le=\"+Inf\"}"), 2.0);
        assert_eq!(value(&text, "socks4d_handshake_seconds_count"), 2.0);
        assert!((value(&text, "socks4d_handshake_seconds_sum") - 20.0003).abs() < 1e-9, "{text}");
        assert_eq!(value(&text, "socks4d_ident_lookups_total{result=\"mismatch\"}"), 2.0);
        assert_eq!(value(&text, "socks4d_name_lookups_total{result=\"timeout\"}"), 2.0);
        assert!(text.contains("socks4d_ident_lookups_total{result=\"ok\"} 0\n"), "{text}");
    }

    #[test]
    fn rule_hits_follow_rule_names_across_reloads() {
        let m = Arc::new(Metrics::new(Arc::default()));
        let named = |name: &str, action| Rule { name: Some(name.into()), ..Rule::new(action) };
        let first = Rules { rules: vec![named("office", Action::Allow), Rule::new(Action::Deny)] };
        let hits = m.rule_hits(&first);
        let at = |rule| SessionEnd { rule, ..end(Protocol::Socks4, Command::Connect, Some(90)) };
        m.session_end(&at(RuleOutcome::Rule(0)), &hits);
        m.session_end(&at(RuleOutcome::Rule(1)), &hits);
        m.session_end(&at(RuleOutcome::NoMatch), &hits);
        m.session_end(&at(RuleOutcome::NotEvaluated), &hits);
        // Reloaded with "office" moved: its count goes on.
        let second = Rules { rules: vec![Rule::new(Action::Allow), named("office", Action::Allow)] };
        let hits = m.rule_hits(&second);
        m.session_end(&at(RuleOutcome::Rule(1)), &hits);
        m.session_end(&at(RuleOutcome::Rule(7)), &hits);
        let text = m.render();
        assert_eq!(value(&text, "socks4d_rule_hits_total{rule=\"office\",action=\"allow\"}"), 2.0);
        assert_eq!(value(&text, "socks4d_rule_hits_total{rule=\"#1\",action=\"deny\"}"), 1.0);
        assert!(text.contains("socks4d_rule_hits_total{rule=\"#0\",action=\"allow\"} 0\n"), "{text}");
        assert_eq!(value(&text, "socks4d_rule_misses_total"), 1.0);
    }

    #[test]
    fn proxy_refusals_accept_errors_and_reloads() {
        let m = Arc::new(Metrics::new(Arc::default()));
        m.proxy_header(ProxyOutcome::V2);
        m.proxy_header(ProxyOutcome::Untrusted);
        m.proxy_header(ProxyOutcome::Untrusted);
        m.refused(Refusal::MaxSessionsPerClient);
        m.accept_error();
        m.reload(true);
        m.reload(false);
        m.reload(false);
        let text = m.render();
        assert_eq!(value(&text, "socks4d_proxy_headers_total{result=\"v2\"}"), 1.0);
        assert_eq!(value(&text, "socks4d_proxy_headers_total{result=\"untrusted\"}"), 2.0);
        assert_eq!(value(&text, "socks4d_refused_connections_total{reason=\"max_sessions_per_client\"}"), 1.0);
        assert_eq!(value(&text, "socks4d_accept_errors_total"), 1.0);
        assert_eq!(value(&text, "socks4d_config_reloads_total{result=\"ok\"}"), 1.0);
        assert_eq!(value(&text, "socks4d_config_reloads_total{result=\"failed\"}"), 2.0);
    }

    /// Counting from several threads at once loses nothing.
    #[test]
    fn concurrent_counts_add_up() {
        let m = Arc::new(Metrics::new(Arc::default()));
        let hits = RuleHits::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let e = SessionEnd { bytes_up: 3, ..end(Protocol::Socks5, Command::Connect, Some(0)) };
                        m.session_end(&e, &hits);
                    }
                });
            }
        });
        let text = m.render();
        assert_eq!(
            value(&text, "socks4d_sessions_total{protocol=\"socks5\",command=\"connect\",reply=\"0\"}"),
            40_000.0
        );
        assert_eq!(value(&text, "socks4d_relayed_bytes_total{direction=\"up\"}"), 120_000.0);
    }
}
