//! socks4d's configuration: the TOML file format, its validation (every
//! error names the file, the line and the key) and the built-in default.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::privileges::User;
use crate::rules::{Action, AuthMode, Command, DestPattern, IdentMode, Rule, Rules, UserPattern};
use crate::users::Users;

/// `busy_poll_us` unless the file says otherwise (see `busy_poll.rs`).
pub const DEFAULT_BUSY_POLL_US: u32 = 100;
/// Polling longer than this after each burst of work would mostly burn CPU.
const MAX_BUSY_POLL_US: u32 = 10_000;

/// Where outgoing connections, BIND listeners and UDP relays toward a
/// destination live: per address family, a fixed local address, or (`None`)
/// the local address of the kernel's route to the destination ("auto").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct External {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl External {
    /// `"auto"` for both families.
    pub const AUTO: External = External { v4: None, v6: None };

    /// The fixed address for `dest`'s family, if there is one.
    pub fn for_family(&self, dest: IpAddr) -> Option<IpAddr> {
        match dest {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

/// Which protocols the listeners speak; the client's first byte picks one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub socks4: bool,
    pub socks5: bool,
}

/// The address BIND replies name instead of the BIND listener's own (a NAT
/// or a load balancer in front): one per address family, each used for
/// listeners of its family; `None` keeps the listener's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Advertise {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Advertise {
    /// The address to put in a reply for a listener bound to `bound`.
    pub fn reply_address(&self, bound: SocketAddr) -> SocketAddr {
        match bound {
            SocketAddr::V4(_) => self.v4.map_or(bound, |ip| SocketAddr::new(ip.into(), bound.port())),
            SocketAddr::V6(_) => self.v6.map_or(bound, |ip| SocketAddr::new(ip.into(), bound.port())),
        }
    }
}

/// The effective settings of a running server.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    /// SOCKS4/4A (first byte 4), SOCKS5 (first byte 5), or both.
    pub protocols: Protocols,
    pub external: External,
    /// SOCKS5 username/password logins; `None`: only "no authentication".
    pub users: Option<Arc<Users>>,
    /// Limit on establishing a CONNECT and on waiting for the BIND peer.
    pub connect_timeout: Duration,
    /// A client must have sent its whole request within this time.
    pub handshake_timeout: Duration,
    /// Limit on resolving a SOCKS4A name.
    pub resolve_timeout: Duration,
    /// Limit on the whole IDENT exchange.
    pub ident_timeout: Duration,
    /// Port of identd on the client's host (113; other values are for tests).
    pub ident_port: u16,
    /// How long live sessions may drain after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    /// Cap on concurrent sessions; a client over it gets 91.
    pub max_connections: usize,
    /// How long a session thread keeps polling after work before it
    /// sleeps, in microseconds (0: it sleeps at once). See `busy_poll.rs`.
    pub busy_poll_us: u32,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log: String,
    /// Who the daemon becomes once its listeners are open (started as
    /// root); `None`: it stays who it was started as.
    pub user: Option<User>,
    /// Where Prometheus metrics are served (`/metrics`); `None`: off.
    pub metrics: Option<SocketAddr>,
    /// Sources (load balancers) whose connections must start with a PROXY
    /// protocol header naming the real client; from anywhere else a header
    /// is refused.
    pub proxy_protocol_from: Vec<IpNet>,
    /// What BIND replies name instead of the listener's address.
    pub advertise: Advertise,
    /// Cap on the live sessions of one client address; `None`: no cap.
    pub max_sessions_per_client: Option<usize>,
    pub rules: Rules,
}

impl Default for Config {
    /// Listens on 127.0.0.1:1080 and serves loopback clients only: never an
    /// open proxy by default.
    fn default() -> Self {
        Config {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 1080))],
            protocols: Protocols { socks4: true, socks5: true },
            external: External::AUTO,
            users: None,
            connect_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(10),
            ident_timeout: Duration::from_secs(5),
            ident_port: 113,
            drain_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
            log: "info".into(),
            user: None,
            metrics: None,
            proxy_protocol_from: Vec::new(),
            advertise: Advertise::default(),
            max_sessions_per_client: None,
            rules: Rules {
                rules: vec![Rule {
                    from: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
                    ..Rule::new(Action::Allow)
                }],
            },
        }
    }
}

/// A configuration that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    /// `file:line: key: message`, the line where the bad key or value is.
    #[error("{file}:{line}: {key}: {message}")]
    Invalid { file: String, line: usize, key: String, message: String },
}

impl Config {
    /// Reads and validates a configuration file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] if the file cannot be read,
    /// [`ConfigError::Invalid`] naming line and key otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        Config::parse(&text, &file)
    }

    /// Parses and validates configuration text; `file` is only used in errors.
    /// Keys left out keep their [`Config::default`] value, except the rules:
    /// a file without `[[rule]]` refuses every request.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming line and key.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cx = Cx { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml says nothing at all about a value cut off by the end of the file.
            let message = match e.message().trim() {
                "" => "incomplete value (the file ends here)".to_string(),
                m => m.to_string(),
            };
            cx.error(e.span().unwrap_or(0..0), None, message)
        })?;
        let mut config = Config::default();
        cx.production(&raw, &mut config)?;
        if let Some(listen) = raw.listen {
            config.listen = listen
                .iter()
                .map(|s| {
                    s.get_ref().parse().map_err(|_| cx.error(s.span(), Some("listen"), "expected ADDR:PORT".into()))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(protocols) = raw.protocols {
            let list = cx.list(protocols, "protocols", "expected \"socks4\" or \"socks5\"", |s| match s {
                "socks4" | "socks5" => Some(s.to_string()),
                _ => None,
            })?;
            config.protocols =
                Protocols { socks4: list.iter().any(|p| p == "socks4"), socks5: list.iter().any(|p| p == "socks5") };
        }
        if let Some(ext) = raw.external {
            config.external = cx.external(ext)?;
        }
        if let Some(path) = raw.users_file {
            // Relative to the working directory, as every path socks4d is given.
            config.users = Some(Arc::new(Users::load(Path::new(path.get_ref())).map_err(|e| match e {
                ConfigError::Read { file, source } => {
                    cx.error(path.span(), Some("users_file"), format!("{file}: cannot read: {source}"))
                }
                invalid => invalid,
            })?));
        }
        for (slot, value, key) in [
            (&mut config.connect_timeout, &raw.connect_timeout, "connect_timeout"),
            (&mut config.handshake_timeout, &raw.handshake_timeout, "handshake_timeout"),
            (&mut config.resolve_timeout, &raw.resolve_timeout, "resolve_timeout"),
            (&mut config.ident_timeout, &raw.ident_timeout, "ident_timeout"),
            (&mut config.drain_timeout, &raw.drain_timeout, "drain_timeout"),
        ] {
            if let Some(v) = value {
                *slot = parse_duration(v.get_ref()).map_err(|m| cx.error(v.span(), Some(key), m))?;
            }
        }
        if let Some(port) = raw.ident_port {
            config.ident_port = u16::try_from(*port.get_ref())
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| cx.error(port.span(), Some("ident_port"), "expected a port 1-65535".into()))?;
        }
        if let Some(max) = raw.max_connections {
            config.max_connections = usize::try_from(*max.get_ref())
                .ok()
                .filter(|&m| m > 0)
                .ok_or_else(|| cx.error(max.span(), Some("max_connections"), "expected a number above 0".into()))?;
        }
        if let Some(us) = raw.busy_poll_us {
            config.busy_poll_us =
                u32::try_from(*us.get_ref()).ok().filter(|&us| us <= MAX_BUSY_POLL_US).ok_or_else(|| {
                    cx.error(
                        us.span(),
                        Some("busy_poll_us"),
                        format!("expected microseconds from 0 (off) to {MAX_BUSY_POLL_US}"),
                    )
                })?;
        }
        if let Some(log) = raw.log {
            check_log_filter(log.get_ref()).map_err(|m| cx.error(log.span(), Some("log"), m))?;
            config.log = log.into_inner();
        }
        if let Some(user) = raw.user {
            // Resolved now, so that `--check` and a SIGHUP catch a missing user, not a restart.
            config.user = Some(User::lookup(user.get_ref()).map_err(|m| cx.error(user.span(), Some("user"), m))?);
        }
        config.rules = Rules { rules: raw.rule.into_iter().map(|r| cx.rule(r)).collect::<Result<_, _>>()? };
        Ok(config)
    }
}

/// Accepts the plain part of tracing's filter syntax: comma-separated
/// `level`, `target` or `target=level`. Span and field filters (`[...]`,
/// `{...}`) are refused: tracing-subscriber compiles their values as regexes
/// whose size can explode, and panics on some non-ASCII input, and a config
/// file (or a SIGHUP) must not be able to stall or kill the server. Such
/// filters remain available through `RUST_LOG`, the operator's own choice.
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |s: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(s));
    let is_target = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'))
    };
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match directive.split_once('=') {
            Some((target, level)) => is_target(target.trim()) && is_level(level.trim()),
            None => is_level(directive) || is_target(directive),
        };
        if !ok {
            return Err(format!(
                "{directive:?} is not a log directive: expected `level`, `target` or `target=level` \
                 (levels: {}); span and field filters only through RUST_LOG",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `s` as a TOML string literal, quoted and escaped, so `--check` prints a
/// file that parses back.
pub(crate) fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Parses `"500ms"`, `"10s"`, `"2m"`, `"1h"` (a bare number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("{s:?} is not a duration (e.g. \"500ms\", \"10s\", \"2m\", \"1h\")");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: a zero time limit would refuse everything"));
    }
    // Deadlines are `now + limit`: keep them far from overflowing.
    if d > Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("{s:?} is longer than a year"));
    }
    Ok(d)
}

/// Formats a duration the way the config file writes it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Vec<Spanned<String>>>,
    protocols: Option<Vec<Spanned<String>>>,
    external: Option<Spanned<RawExternal>>,
    users_file: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
    resolve_timeout: Option<Spanned<String>>,
    ident_timeout: Option<Spanned<String>>,
    drain_timeout: Option<Spanned<String>>,
    ident_port: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    busy_poll_us: Option<Spanned<i64>>,
    log: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    proxy_protocol_from: Option<Vec<Spanned<String>>>,
    advertise: Option<Spanned<RawExternal>>,
    max_sessions_per_client: Option<Spanned<i64>>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// `external = "auto"`, `"ADDR"`, or `["IPv4", "IPv6"]`; `advertise`: the last two.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawExternal {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    action: Spanned<String>,
    from: Option<Vec<Spanned<String>>>,
    to: Option<Vec<Spanned<String>>>,
    ports: Option<Vec<Spanned<toml::Value>>>,
    commands: Option<Vec<Spanned<String>>>,
    users: Option<Vec<Spanned<String>>>,
    ident: Option<Spanned<String>>,
    auth: Option<Spanned<String>>,
}

/// The text being parsed, for turning byte spans into line numbers.
struct Cx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Cx<'_> {
    /// An error at `span`. Without a known key, the key is read from the
    /// line itself (`key = ...` or a `[table]` header).
    fn error(&self, span: Range<usize>, key: Option<&str>, message: String) -> ConfigError {
        let start = span.start.min(self.text.len());
        let line = self.text[..start].matches('\n').count() + 1;
        let key = key.map(str::to_string).unwrap_or_else(|| {
            let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_text = self.text[line_start..].lines().next().unwrap_or("").trim();
            match line_text.split_once('=') {
                Some((k, _)) if !line_text.starts_with('[') => k.trim().to_string(),
                _ if line_text.starts_with('[') => line_text.to_string(),
                _ => "(file)".to_string(),
            }
        });
        ConfigError::Invalid { file: self.file.to_string(), line, key, message }
    }

    /// The keys for running in production: metrics, behind a load balancer
    /// (PROXY protocol, BIND's advertised address), the per-client cap.
    fn production(&self, raw: &RawConfig, config: &mut Config) -> Result<(), ConfigError> {
        if let Some(addr) = &raw.metrics {
            config.metrics = Some(addr.get_ref().trim().parse().map_err(|_| {
                self.error(addr.span(), Some("metrics"), "expected ADDR:PORT, e.g. \"127.0.0.1:9108\"".into())
            })?);
        }
        if let Some(from) = &raw.proxy_protocol_from {
            // An empty list is allowed here: it is the default, no PROXY header from anyone.
            config.proxy_protocol_from = from
                .iter()
                .map(|s| {
                    parse_network(s.get_ref().trim()).ok_or_else(|| {
                        self.error(
                            s.span(),
                            Some("proxy_protocol_from"),
                            format!("{:?}: expected a network like \"10.0.0.0/8\" or an address", s.get_ref()),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(adv) = &raw.advertise {
            let bad = |m: String| self.error(adv.span(), Some("advertise"), m);
            let words = match adv.get_ref() {
                RawExternal::One(s) => vec![s.clone()],
                RawExternal::List(l) if l.is_empty() || l.len() > 2 => {
                    return Err(bad("expected an address, or a list of one IPv4 and one IPv6 address".into()));
                }
                RawExternal::List(l) => l.clone(),
            };
            for word in words {
                let ip: IpAddr = word
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("{word:?}: expected an address, e.g. \"203.0.113.7\"")))?;
                let ip = ip.to_canonical();
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(bad(format!("{ip} cannot be connected to")));
                }
                let taken = match ip {
                    IpAddr::V4(v4) => config.advertise.v4.replace(v4).is_some(),
                    IpAddr::V6(v6) => config.advertise.v6.replace(v6).is_some(),
                };
                if taken {
                    return Err(bad("at most one IPv4 and one IPv6 address".into()));
                }
            }
        }
        if let Some(max) = &raw.max_sessions_per_client {
            config.max_sessions_per_client =
                Some(usize::try_from(*max.get_ref()).ok().filter(|&m| m > 0).ok_or_else(|| {
                    self.error(max.span(), Some("max_sessions_per_client"), "expected a number above 0".into())
                })?);
        }
        Ok(())
    }

    /// `external`: "auto", one address, or a list of at most one IPv4 and
    /// one IPv6 address; each must be this host's (checked now, not at every
    /// CONNECT).
    fn external(&self, ext: Spanned<RawExternal>) -> Result<External, ConfigError> {
        let span = ext.span();
        let bad = |m: String| self.error(span.clone(), Some("external"), m);
        let words = match ext.into_inner() {
            RawExternal::One(s) if s == "auto" => return Ok(External::AUTO),
            RawExternal::One(s) => vec![s],
            RawExternal::List(l) if l.is_empty() || l.len() > 2 => {
                return Err(bad("expected a list of one IPv4 and one IPv6 address".into()));
            }
            RawExternal::List(l) => l,
        };
        let mut external = External::AUTO;
        for word in words {
            let ip: IpAddr = word.trim().parse().map_err(|_| {
                bad(format!("{word:?}: expected \"auto\", an address, or one IPv4 and one IPv6 address"))
            })?;
            let ip = ip.to_canonical();
            std::net::UdpSocket::bind((ip, 0)).map_err(|e| bad(format!("{ip} is not usable on this host: {e}")))?;
            let taken = match ip {
                IpAddr::V4(v4) => external.v4.replace(v4).is_some(),
                IpAddr::V6(v6) => external.v6.replace(v6).is_some(),
            };
            if taken {
                return Err(bad("at most one IPv4 and one IPv6 address".into()));
            }
        }
        Ok(external)
    }

    fn rule(&self, raw: RawRule) -> Result<Rule, ConfigError> {
        let action = Action::from_name(raw.action.get_ref())
            .ok_or_else(|| self.error(raw.action.span(), Some("action"), "expected \"allow\" or \"deny\"".into()))?;
        let mut rule = Rule::new(action);
        rule.name = raw.name;
        if let Some(from) = raw.from {
            rule.from =
                self.list(from, "from", "expected a network like \"10.0.0.0/8\" or an address", parse_network)?;
        }
        if let Some(to) = raw.to {
            rule.to = self.list(
                to,
                "to",
                "expected an IPv4 or IPv6 network, an address, a host name, \"*.domain\" or \"*\"",
                DestPattern::parse,
            )?;
        }
        if let Some(ports) = raw.ports {
            rule.ports = ports
                .into_iter()
                .map(|p| {
                    parse_ports(p.get_ref()).ok_or_else(|| {
                        self.error(p.span(), Some("ports"), "expected a port or a range like \"1-1023\"".into())
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(commands) = raw.commands {
            rule.commands = self.list(commands, "commands", "expected \"connect\", \"bind\" or \"udp\"", |s| {
                [Command::Connect, Command::Bind, Command::UdpAssociate].into_iter().find(|c| c.name() == s)
            })?;
        }
        if let Some(users) = raw.users {
            rule.users = self.list(users, "users", "expected a user id or \"*\"", |s| {
                Some(if s == "*" { UserPattern::Any } else { UserPattern::Exact(s.as_bytes().to_vec()) })
            })?;
        }
        if let Some(auth) = raw.auth {
            rule.auth = AuthMode::from_name(auth.get_ref())
                .ok_or_else(|| self.error(auth.span(), Some("auth"), "expected \"any\" or \"password\"".into()))?;
        }
        if let Some(ident) = raw.ident {
            rule.ident = IdentMode::from_name(ident.get_ref()).ok_or_else(|| {
                self.error(ident.span(), Some("ident"), "expected \"off\", \"require\" or \"match\"".into())
            })?;
        }
        Ok(rule)
    }

    /// Parses every entry of a list key, naming the first bad entry's line.
    /// An empty list is refused: it would make the rule match nothing.
    fn list<T>(
        &self,
        items: Vec<Spanned<String>>,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>, ConfigError> {
        if items.is_empty() {
            // No span for an empty list; fall back to searching the key.
            let at = self.text.find(&format!("{key} ")).or_else(|| self.text.find(&format!("{key}="))).unwrap_or(0);
            return Err(self.error(
                at..at,
                Some(key),
                "an empty list matches nothing; leave the key out to match all".into(),
            ));
        }
        items
            .iter()
            .map(|s| {
                parse(s.get_ref().trim())
                    .ok_or_else(|| self.error(s.span(), Some(key), format!("{:?}: {expected}", s.get_ref())))
            })
            .collect()
    }
}

/// A network (`"10.0.0.0/8"`) or one address (`"192.0.2.1"`, a /32 or /128).
fn parse_network(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A port (`80`, `"80"`) or an inclusive range (`"1-1023"`). Port 0 is a
/// port like any other here, written either way: it is what a BIND with no
/// primary port carries (see `Rule::new`).
fn parse_ports(v: &toml::Value) -> Option<(u16, u16)> {
    match v {
        toml::Value::Integer(n) => u16::try_from(*n).ok().map(|p| (p, p)),
        toml::Value::String(s) => {
            let (lo, hi) = match s.split_once('-') {
                Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
                None => {
                    let p = s.trim().parse().ok()?;
                    (p, p)
                }
            };
            (lo <= hi).then_some((lo, hi))
        }
        _ => None,
    }
}

impl fmt::Display for Config {
    /// The effective settings, in the config file's own syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listen: Vec<String> = self.listen.iter().map(|a| quote(&a.to_string())).collect();
        writeln!(f, "listen = [{}]", listen.join(", "))?;
        let protocols: Vec<&str> = [(self.protocols.socks4, "\"socks4\""), (self.protocols.socks5, "\"socks5\"")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        writeln!(f, "protocols = [{}]", protocols.join(", "))?;
        match self.external {
            External { v4: None, v6: None } => writeln!(f, "external = \"auto\"")?,
            External { v4: Some(a), v6: None } => writeln!(f, "external = \"{a}\"")?,
            External { v4: None, v6: Some(a) } => writeln!(f, "external = \"{a}\"")?,
            External { v4: Some(a), v6: Some(b) } => writeln!(f, "external = [\"{a}\", \"{b}\"]")?,
        }
        match &self.users {
            Some(u) => writeln!(f, "users_file = {}  # {} users", quote(&u.path.display().to_string()), u.len())?,
            None => writeln!(f, "# users_file: not set (SOCKS5 offers no username/password login)")?,
        }
        writeln!(f, "connect_timeout = \"{}\"", format_duration(self.connect_timeout))?;
        writeln!(f, "handshake_timeout = \"{}\"", format_duration(self.handshake_timeout))?;
        writeln!(f, "resolve_timeout = \"{}\"", format_duration(self.resolve_timeout))?;
        writeln!(f, "ident_timeout = \"{}\"", format_duration(self.ident_timeout))?;
        writeln!(f, "ident_port = {}", self.ident_port)?;
        writeln!(f, "drain_timeout = \"{}\"", format_duration(self.drain_timeout))?;
        writeln!(f, "max_connections = {}", self.max_connections)?;
        writeln!(f, "busy_poll_us = {}", self.busy_poll_us)?;
        writeln!(f, "log = {}", quote(&self.log))?;
        match &self.user {
            Some(u) => writeln!(f, "user = {}  # uid {}, gid {}", quote(&u.name), u.uid, u.gid)?,
            None => writeln!(f, "# user: not set (socks4d stays the user it is started as)")?,
        }
        match self.metrics {
            Some(addr) => writeln!(f, "metrics = \"{addr}\"")?,
            None => writeln!(f, "# metrics: off")?,
        }
        let from: Vec<String> = self.proxy_protocol_from.iter().map(|n| format!("\"{n}\"")).collect();
        writeln!(f, "proxy_protocol_from = [{}]", from.join(", "))?;
        match self.advertise {
            Advertise { v4: None, v6: None } => {
                writeln!(f, "# advertise: not set (BIND replies name the listener's own address)")?
            }
            Advertise { v4: Some(a), v6: None } => writeln!(f, "advertise = \"{a}\"")?,
            Advertise { v4: None, v6: Some(a) } => writeln!(f, "advertise = \"{a}\"")?,
            Advertise { v4: Some(a), v6: Some(b) } => writeln!(f, "advertise = [\"{a}\", \"{b}\"]")?,
        }
        match self.max_sessions_per_client {
            Some(n) => writeln!(f, "max_sessions_per_client = {n}")?,
            None => writeln!(f, "# max_sessions_per_client: not set (no cap per client address)")?,
        }
        if self.rules.rules.is_empty() {
            writeln!(f, "# no rules: every request is refused (91)")?;
        }
        for (i, rule) in self.rules.rules.iter().enumerate() {
            writeln!(f, "\n# rule {i}")?;
            write!(f, "{rule}")?;
        }
        writeln!(f, "\n# no rule matches: refused (91)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(text: &str) -> (usize, String, String) {
        match Config::parse(text, "t.toml") {
            Err(ConfigError::Invalid { line, key, message, .. }) => (line, key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_keeps_defaults_but_has_no_rules() {
        let c = Config::parse("", "t.toml").unwrap();
        assert_eq!(c.listen, Config::default().listen);
        assert!(c.rules.rules.is_empty());
    }

    #[test]
    fn parses_every_key() {
        let c = Config::parse(
            r#"
listen = ["127.0.0.1:1081", "[::1]:1082"]
external = "127.0.0.2"
connect_timeout = "2m"
handshake_timeout = "500ms"
resolve_timeout = "3s"
ident_timeout = "4s"
ident_port = 1113
drain_timeout = "1h"
max_connections = 7
busy_poll_us = 0
log = "debug"
user = "root"
[[rule]]
name = "lan"
action = "deny"
from = ["10.0.0.0/8", "192.0.2.1"]
to = ["0.0.0.0/0", "*.example.com", "localhost", "*"]
ports = [80, "1000-2000", "443"]
commands = ["bind"]
users = ["*", "fred"]
ident = "match"
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.external, External { v4: Some(Ipv4Addr::new(127, 0, 0, 2)), v6: None });
        assert_eq!(c.connect_timeout, Duration::from_secs(120));
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        assert_eq!(c.ident_port, 1113);
        assert_eq!(c.drain_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_connections, 7);
        assert_eq!(c.busy_poll_us, 0);
        assert_eq!(c.user, Some(User { name: "root".into(), uid: 0, gid: 0 }));
        let r = &c.rules.rules[0];
        assert_eq!(r.name.as_deref(), Some("lan"));
        assert_eq!(r.action, Action::Deny);
        assert_eq!(r.from.len(), 2);
        assert_eq!(r.to.len(), 4);
        assert_eq!(r.ports, vec![(80, 80), (1000, 2000), (443, 443)]);
        assert_eq!(r.commands, vec![Command::Bind]);
        assert_eq!(r.ident, IdentMode::Match);
    }

    #[test]
    fn names_line_and_key_of_bad_values() {
        let text = "listen = [\"127.0.0.1:1\"]\n\n[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/33\"]\n";
        let (line, key, msg) = invalid(text);
        assert_eq!((line, key.as_str()), (5, "from"), "{msg}");
        assert_eq!(invalid("x = 1\n").0, 1);
        assert_eq!(invalid("\n\nbogus = 1\n"), (3, "bogus".into(), invalid("\n\nbogus = 1\n").2));
        assert_eq!(invalid("\nconnect_timeout = \"2 fortnights\"\n").0, 2);
        assert_eq!(invalid("\n[[rule]]\naction = \"allow\"\nports = [\"9-1\"]\n").1, "ports");
        assert_eq!(invalid("\n[[rule]]\naction = \"allow\"\nports = [70000]\n").0, 4);
        assert_eq!(invalid("[[rule]]\naction = \"allow\"\nports = [-1]\n").1, "ports");
        assert_eq!(invalid("[[rule]]\naction = \"maybe\"\n").1, "action");
        assert_eq!(invalid("[[rule]]\naction = \"allow\"\nident = \"yes\"\n").0, 3);
        assert_eq!(invalid("[[rule]]\naction = \"allow\"\nto = [\"::/200\"]\n").1, "to");
        assert_eq!(invalid("[[rule]]\naction = \"allow\"\ncommands = [\"udp4\"]\n").1, "commands");
        assert_eq!(
            invalid("[[rule]]\naction = \"allow\"\nauth = \"maybe\"\n"),
            (3, "auth".into(), invalid("[[rule]]\naction = \"allow\"\nauth = \"x\"\n").2)
        );
        assert_eq!(invalid("protocols = [\"socks6\"]\n").1, "protocols");
        assert_eq!(invalid("protocols = []\n").1, "protocols");
        assert_eq!(invalid("\nusers_file = \"/nonexistent/users\"\n").0, 2);
        assert_eq!(invalid("users_file = \"/dev/zero\"\n").1, "users_file");
        assert_eq!(invalid("[[rule]]\naction = \"allow\"\nusers = []\n").1, "users");
        assert_eq!(invalid("max_connections = 0\n").1, "max_connections");
        assert_eq!(invalid("busy_poll_us = 10001\n").1, "busy_poll_us");
        assert_eq!(invalid("busy_poll_us = -1\n").1, "busy_poll_us");
        assert_eq!(invalid("external = \"::1.2\"\n").1, "external");
        assert_eq!(invalid("external = [\"127.0.0.1\", \"127.0.0.2\"]\n").1, "external");
        assert_eq!(invalid("external = []\n").1, "external");
        assert_eq!(invalid("external = 7\n").1, "external");
        let (line, key, msg) = invalid("\nuser = \"no-such-user-socks4d\"\n");
        assert_eq!((line, key.as_str()), (2, "user"), "{msg}");
        assert!(msg.contains("no such user"), "{msg}");
        // TEST-NET-1 is nobody's local address.
        assert_eq!(
            invalid("\nexternal = \"192.0.2.1\"\n"),
            (2, "external".into(), invalid("external = \"192.0.2.1\"").2)
        );
        assert_eq!(invalid("\n[[rule]]\nfrom = []\n").1, "[[rule]]");
    }

    /// `ports = [0]` and `ports = ["0"]` are the same rule (the integer was
    /// once refused while the string was taken).
    #[test]
    fn port_zero_as_integer_or_string() {
        let rule = |ports: &str| {
            let text = format!("[[rule]]\naction = \"allow\"\nports = {ports}\n");
            Config::parse(&text, "t.toml").unwrap_or_else(|e| panic!("{ports}: {e}")).rules.rules[0].ports.clone()
        };
        assert_eq!(rule("[0]"), vec![(0, 0)]);
        assert_eq!(rule("[\"0\"]"), vec![(0, 0)]);
        assert_eq!(rule("[\"0-0\"]"), vec![(0, 0)]);
        assert_eq!(rule("[0, 65535]"), vec![(0, 0), (65535, 65535)]);
    }

    #[test]
    fn production_keys() {
        let c = Config::parse(
            "metrics = \"127.0.0.1:9108\"\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\", \"::1\"]\n\
             advertise = [\"203.0.113.7\", \"2001:db8::7\"]\nmax_sessions_per_client = 20\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.metrics, Some("127.0.0.1:9108".parse().unwrap()));
        assert_eq!(
            c.proxy_protocol_from,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap(), "192.0.2.7/32".parse().unwrap(), "::1/128".parse().unwrap()]
        );
        assert_eq!(c.advertise.v4, Some(Ipv4Addr::new(203, 0, 113, 7)));
        assert_eq!(c.advertise.v6, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(c.max_sessions_per_client, Some(20));
        assert_eq!(Config::parse(&c.to_string(), "t.toml").unwrap(), c);
        // Off by default, and --check says so.
        let d = Config::default();
        assert_eq!((d.metrics, d.proxy_protocol_from.len(), d.max_sessions_per_client), (None, 0, None));
        assert_eq!(d.advertise, Advertise::default());
        let text = d.to_string();
        for line in [
            "# metrics: off\n",
            "proxy_protocol_from = []\n",
            "# advertise: not set",
            "# max_sessions_per_client: not set",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        let one = Config::parse("advertise = \"::ffff:203.0.113.9\"", "t.toml").unwrap();
        assert_eq!(one.advertise, Advertise { v4: Some(Ipv4Addr::new(203, 0, 113, 9)), v6: None });
        assert_eq!(Config::parse(&one.to_string(), "t.toml").unwrap(), one);
    }

    #[test]
    fn production_keys_name_line_and_key_of_bad_values() {
        assert_eq!(invalid("\nmetrics = \"localhost\"\n").0, 2);
        assert_eq!(invalid("metrics = \"127.0.0.1\"\n").1, "metrics");
        assert_eq!(invalid("metrics = 9108\n").1, "metrics");
        let (line, key, msg) = invalid("\n\nproxy_protocol_from = [\"10.0.0.0/8\",\n  \"10.0.0.0/33\"]\n");
        assert_eq!((line, key.as_str()), (4, "proxy_protocol_from"), "{msg}");
        assert!(msg.contains("10.0.0.0/33"), "{msg}");
        assert_eq!(invalid("proxy_protocol_from = \"10.0.0.0/8\"\n").1, "proxy_protocol_from");
        let (line, key, msg) = invalid("\nadvertise = \"nat.example\"\n");
        assert_eq!((line, key.as_str()), (2, "advertise"));
        assert!(msg.contains("\"nat.example\": expected an address"), "{msg}");
        assert_eq!(invalid("advertise = [\"192.0.2.1\", \"192.0.2.2\"]\n").1, "advertise");
        assert_eq!(invalid("advertise = []\n").1, "advertise");
        assert_eq!(invalid("advertise = \"0.0.0.0\"\n").1, "advertise");
        assert_eq!(invalid("advertise = \"224.0.0.1\"\n").1, "advertise");
        assert_eq!(
            invalid("\nmax_sessions_per_client = 0\n"),
            (2, "max_sessions_per_client".into(), invalid("max_sessions_per_client = -5").2)
        );
        assert_eq!(invalid("max_sessions_per_client = \"10\"\n").1, "max_sessions_per_client");
    }

    /// `advertise` replaces the address of BIND's reply, in its own family only.
    #[test]
    fn advertise_replaces_the_listeners_address() {
        let adv = Advertise { v4: Some(Ipv4Addr::new(203, 0, 113, 7)), v6: None };
        assert_eq!(adv.reply_address("10.0.0.2:40000".parse().unwrap()), "203.0.113.7:40000".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::2]:40000".parse().unwrap();
        assert_eq!(adv.reply_address(v6), v6);
        assert_eq!(Advertise::default().reply_address("10.0.0.2:1".parse().unwrap()), "10.0.0.2:1".parse().unwrap());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        // The longest limit is a (leap) year, 366 days, itself included.
        assert_eq!(parse_duration("8784h"), Ok(Duration::from_secs(366 * 24 * 3600)));
        assert!(parse_duration("8785h").is_err());
        assert!(parse_duration("31622401s").is_err());
    }

    /// Where toml names no key, the error's key comes from the line itself: `key = ...`, a
    /// `[table]` header (even one with a `=` in it), or `(file)` for a line that is neither.
    #[test]
    fn the_key_of_an_error_is_read_from_its_line() {
        assert_eq!(invalid("[a=b]\n").1, "[a=b]");
        assert_eq!(invalid("\ngarbage\n").1, "(file)");
        assert_eq!(invalid("\ngarbage\n").0, 2);
    }

    #[test]
    fn external_per_family() {
        let c = Config::parse("external = [\"::1\", \"127.0.0.2\"]", "t.toml").unwrap();
        let want = External { v4: Some(Ipv4Addr::new(127, 0, 0, 2)), v6: Some(Ipv6Addr::LOCALHOST) };
        assert_eq!(c.external, want);
        assert_eq!(c.external.for_family("10.0.0.1".parse().unwrap()), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(c.external.for_family("2001:db8::1".parse().unwrap()), Some("::1".parse().unwrap()));
        assert!(c.to_string().contains("external = [\"127.0.0.2\", \"::1\"]\n"), "{c}");
        assert_eq!(Config::parse(&c.to_string(), "t.toml").unwrap(), c);
        let c = Config::parse("external = \"::1\"", "t.toml").unwrap();
        assert_eq!(c.external, External { v4: None, v6: Some(Ipv6Addr::LOCALHOST) });
        assert_eq!(Config::parse(&c.to_string(), "t.toml").unwrap(), c);
        // A list of one is one address; three is one too many.
        let c = Config::parse("external = [\"127.0.0.2\"]", "t.toml").unwrap();
        assert_eq!(c.external, External { v4: Some(Ipv4Addr::new(127, 0, 0, 2)), v6: None });
        assert_eq!(invalid("external = [\"127.0.0.2\", \"::1\", \"127.0.0.3\"]\n").1, "external");
        assert_eq!(invalid("external = []\n").1, "external");
        let c = Config::parse("advertise = [\"203.0.113.7\"]", "t.toml").unwrap();
        assert_eq!(Config::parse(&c.to_string(), "t.toml").unwrap(), c);
        assert_eq!(invalid("advertise = [\"203.0.113.7\", \"2001:db8::7\", \"203.0.113.8\"]\n").1, "advertise");
    }

    #[test]
    fn users_file_and_protocols_round_trip() {
        let dir = std::env::temp_dir().join(format!("socks4d-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users");
        std::fs::write(&users, "fred:$2y$05$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS\nbad line\n")
            .unwrap();
        let text = format!("protocols = [\"socks5\"]\nusers_file = {}\n", quote(&users.display().to_string()));
        match Config::parse(&text, "t.toml") {
            Err(ConfigError::Invalid { file, line, key, .. }) => {
                assert_eq!((file, line, key.as_str()), (users.display().to_string(), 2, "users_file"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&users, "fred:$2y$05$0cURcgVZ4lxAQ450..dGAeCZDnIKrJDHZroKJFVzmjSMIUYm/vVOS\n").unwrap();
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(c.protocols, Protocols { socks4: false, socks5: true });
        assert_eq!(c.users.as_ref().map(|u| u.len()), Some(1));
        assert_eq!(Config::parse(&c.to_string(), "t.toml").unwrap(), c);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn display_round_trips() {
        let c = Config::default();
        let again = Config::parse(&c.to_string(), "t.toml").unwrap();
        assert_eq!(again, c);
        let c = Config { user: Some(User::lookup("root").unwrap()), ..c };
        assert!(c.to_string().contains("user = \"root\"  # uid 0, gid 0\n"), "{c}");
        assert_eq!(Config::parse(&c.to_string(), "t.toml").unwrap(), c);
    }

    #[test]
    fn log_filter_takes_plain_directives_only() {
        for ok in ["info", "socks4_server=debug,warn", " off ", "tokio::net", ""] {
            assert_eq!(check_log_filter(ok), Ok(()), "{ok:?}");
        }
        for bad in ["a[{s=Z*.Z}]=info", "\u{a0}\u{a0}x=1", "x=loud", "[span]"] {
            assert!(check_log_filter(bad).is_err(), "{bad:?}");
        }
        assert_eq!(invalid("log = \"[x]\"\n").1, "log");
    }

    #[test]
    fn quote_round_trips_through_toml() {
        for text in ["say \"hi\" \\", "it's", "a'b\"c", "line\nbreak"] {
            let table: toml::Table = toml::from_str(&format!("x = {}", quote(text))).unwrap();
            assert_eq!(table["x"].as_str(), Some(text));
        }
    }
}
