//! The shim's settings: the environment over the TOML file over the defaults, read once per process.
//!
//! The upstreams (SOCKS servers, as URLs) and the routes that pick them per destination are built
//! here once (`upstreams`): every URL resolved and given its password, every route checked. A
//! broken setting is reported once, naming the file, line and key (or the variable), and makes the
//! shim fail closed: every connection that is not direct then fails instead of guessing.

mod upstreams;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;
use socks4_proto::host::{self, HostName};
use toml::Spanned;

use crate::upstream::{Secret, Upstream, Url};

/// Where the file is looked for when SOCKS4_CONF is not set.
pub const DEFAULT_FILE: &str = "/etc/socks4.toml";
/// The default route when neither SOCKS4_SERVER nor `server` says otherwise.
pub const DEFAULT_SERVER: &str = "127.0.0.1:1080";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream that could not be reached is skipped.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(30);
/// The most upstreams one configuration may name (the shared back-off table has a slot for each).
pub const MAX_UPSTREAMS: usize = crate::backoff::SLOTS;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Every SOCKS server the routes name, once each; `Via` lists index it.
    pub upstreams: Vec<Upstream>,
    /// The `[[route]]` entries, tried in order.
    pub routes: Vec<RouteRule>,
    /// Where destinations no route matches go: `server`.
    pub default: Via,
    /// The addresses the shim itself connects to (first hops): always direct.
    pub first_hops: Vec<std::net::SocketAddr>,
    /// USERID sent in every SOCKS4 request (unless the server's URL names one).
    pub user: Vec<u8>,
    /// Networks connected directly, never through a proxy (a first route to "direct").
    pub direct: Vec<IpNet>,
    /// Limit for reaching one upstream and reading its reply (CONNECT, first BIND reply).
    pub timeout: Duration,
    /// How long an upstream that could not be reached (or did not answer in time) is skipped.
    pub backoff: Duration,
    pub debug: bool,
    /// listen() on a socket bound to a fixed port: false (default) = a real local server.
    pub proxy_fixed_ports: bool,
    /// The `remote_dns` setting: whether a bare `host:port` server gets names (SOCKS4A). None:
    /// unset, on unless that server is on loopback.
    pub remote_dns: Option<bool>,
    /// Names resolved locally even with remote DNS (each entry: that name and the names under it).
    pub direct_names: Vec<HostName>,
    /// The configuration could not be read: fail closed.
    pub broken: bool,
}

/// Where a route sends its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The real connect.
    Direct,
    /// Refused (EACCES), with one stderr line.
    Block,
    /// These upstreams (indexes into `Config::upstreams`), tried in order.
    Failover(Vec<usize>),
    /// Through all of these, each hop's CONNECT made through the one before.
    Chain(Vec<usize>),
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRule {
    pub to: Vec<Dest>,
    /// Inclusive port ranges; empty = every port.
    pub ports: Vec<(u16, u16)>,
    pub via: Via,
    /// Its line in the file, for messages.
    pub line: Option<usize>,
}

/// One entry of a route's `to` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// `*`: every destination, addresses and names.
    Any,
    /// A network or address (IPv4 or IPv6); matches addresses.
    Net(IpNet),
    /// One host name; matches names (remote-DNS placeholders stand for theirs).
    Host(HostName),
    /// `*.example.com`: the names below `example.com` (not itself).
    Suffix(HostName),
}

impl Dest {
    /// `*`, a network, an address, a name or `*.domain`.
    pub fn parse(s: &str) -> Result<Dest, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Dest::Any);
        }
        if let Ok(net) = parse_net(s) {
            return Ok(Dest::Net(net.trunc()));
        }
        // An address-looking word that did not parse (`10.0.0.0/33`, `::/0x`) is a typo, not a name.
        let name = |n: &str| HostName::parse(n).ok().filter(|h| h.as_str().bytes().any(|b| b.is_ascii_alphabetic()));
        let parsed = match s.strip_prefix("*.") {
            Some(domain) => name(domain).map(Dest::Suffix),
            None => name(s).map(Dest::Host),
        };
        parsed.ok_or_else(|| format!("`{s}` is not a network, an address, a host name, `*.domain` or `*`"))
    }

    /// Whether this entry covers the address `ip` (already canonical: IPv4-mapped made IPv4).
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        match self {
            Dest::Any => true,
            Dest::Net(net) => net.contains(&ip),
            Dest::Host(_) | Dest::Suffix(_) => false,
        }
    }

    /// Whether this entry covers the name `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            Dest::Any => true,
            Dest::Net(_) => false,
            Dest::Host(h) => host::same_name(name, h.as_str()),
            Dest::Suffix(d) => host::is_below(name, d.as_str()),
        }
    }
}

impl RouteRule {
    pub fn matches_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }
}

impl Config {
    /// Used when the settings cannot be had at all: everything that is not direct fails closed.
    fn fail_closed(direct: Vec<IpNet>) -> Self {
        Config {
            upstreams: Vec::new(),
            routes: Vec::new(),
            default: Via::Block,
            first_hops: Vec::new(),
            user: Vec::new(),
            direct,
            timeout: DEFAULT_TIMEOUT,
            backoff: DEFAULT_BACKOFF,
            debug: false,
            proxy_fixed_ports: false,
            remote_dns: None,
            direct_names: Vec::new(),
            broken: true,
        }
    }

    /// Whether `ip` is in a direct network; an IPv4-mapped address also counts as its IPv4 address.
    pub fn is_direct(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.direct.iter().any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// Whether names for destinations sent this way go to the server: the last hop sends them.
    pub fn sends_names(&self, via: &Via) -> bool {
        match via {
            Via::Direct | Via::Block => false,
            Via::Failover(list) => list.iter().any(|&i| self.upstreams[i].sends_names),
            Via::Chain(hops) => hops.last().is_some_and(|&i| self.upstreams[i].sends_names),
        }
    }

    /// Whether any lookup can get a remote-DNS placeholder: some route sends names, or routes by
    /// name (which needs the name at connect time).
    pub fn uses_placeholders(&self) -> bool {
        !self.broken
            && (self.sends_names(&self.default)
                || self.routes.iter().any(|r| {
                    self.sends_names(&r.via) || r.to.iter().any(|d| matches!(d, Dest::Host(_) | Dest::Suffix(_)))
                }))
    }
}

pub fn default_direct() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("valid prefix"),
        IpNet::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 128).expect("valid prefix"),
    ]
}

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ConfigError {
    /// The file path or the environment variable.
    pub origin: String,
    /// 1-based line in the file; None for the environment.
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn describe(&self) -> String {
        match self.line {
            Some(line) => format!("config {} line {} key `{}`: {}", self.origin, line, self.key, self.message),
            None => format!("config {}: {}", self.origin, self.message),
        }
    }
}

/// Where a setting was written, to name it in an error found later (resolving a server, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub origin: String,
    pub line: Option<usize>,
    pub key: String,
}

impl Origin {
    fn env(var: &str) -> Origin {
        Origin { origin: var.to_owned(), line: None, key: var.to_owned() }
    }

    pub fn error(&self, message: String) -> ConfigError {
        ConfigError { origin: self.origin.clone(), line: self.line, key: self.key.clone(), message }
    }
}

/// A route's destination as written: the upstreams by URL, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViaSpec {
    Direct,
    Block,
    Failover(Vec<Url>),
    Chain(Vec<Url>),
}

/// A `[[route]]` as written.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub to: Vec<Dest>,
    pub ports: Vec<(u16, u16)>,
    pub via: ViaSpec,
    pub at: Origin,
}

/// Settings found in one source; None = not set there.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Partial {
    pub server: Option<(ViaSpec, Origin)>,
    pub routes: Option<Vec<RouteSpec>>,
    pub user: Option<Vec<u8>>,
    pub direct: Option<Vec<IpNet>>,
    pub timeout: Option<Duration>,
    pub backoff: Option<Duration>,
    pub debug: Option<bool>,
    pub proxy_fixed_ports: Option<bool>,
    pub remote_dns: Option<bool>,
    pub direct_names: Option<Vec<HostName>>,
    /// SOCKS4_PASSWORD: the password of SOCKS5 URLs that name a user but no password.
    pub password: Option<Secret>,
    /// SOCKS4_PASSWORD_FILE or `password_file`: the same, from the first line of a file.
    pub password_file: Option<(String, Origin)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: Option<Spanned<toml::Value>>,
    user: Option<String>,
    direct: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<f64>>,
    backoff: Option<Spanned<f64>>,
    debug: Option<bool>,
    remote_dns: Option<bool>,
    direct_names: Option<Vec<Spanned<String>>>,
    password_file: Option<Spanned<String>>,
    bind: Option<FileBind>,
    route: Option<Vec<Spanned<FileRoute>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBind {
    proxy_fixed_ports: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    to: Option<Vec<Spanned<String>>>,
    ports: Option<Vec<Spanned<toml::Value>>>,
    via: Option<Spanned<toml::Value>>,
    chain: Option<Spanned<toml::Value>>,
}

/// Parses the TOML file. Every key is optional.
///
/// # Errors
///
/// The first unusable key, with its line: a syntax error, an unknown key, a wrong type or a bad value.
pub fn parse_file(path: &str, text: &str) -> Result<Partial, ConfigError> {
    // An error at the end (an unclosed array) belongs to the last line written, not the empty
    // one after it.
    let line_of = |offset: usize| text[..offset.min(text.trim_end().len())].matches('\n').count() + 1;
    let origin_at =
        |offset: usize, key: &str| Origin { origin: path.to_owned(), line: Some(line_of(offset)), key: key.to_owned() };
    let error_at = |offset: usize, key: Option<&str>, message: String| {
        let line = line_of(offset);
        let key = key.map_or_else(|| key_on_line(text, line), str::to_owned);
        ConfigError { origin: path.to_owned(), line: Some(line), key, message }
    };
    let file: File = toml::from_str(text)
        .map_err(|e| error_at(e.span().map_or(0, |s| s.start), None, e.message().trim().replace('\n', " ")))?;

    let mut out = Partial {
        user: file.user.map(String::into_bytes),
        debug: file.debug,
        remote_dns: file.remote_dns,
        ..Partial::default()
    };
    if let Some(server) = file.server {
        let at = server.span().start;
        let via = words_or_urls(server.get_ref(), true).map_err(|m| error_at(at, Some("server"), m))?;
        out.server = Some((via, origin_at(at, "server")));
    }
    if let Some(nets) = file.direct {
        let mut direct = Vec::new();
        for net in nets {
            let at = net.span().start;
            direct.push(parse_net(net.get_ref()).map_err(|m| error_at(at, Some("direct"), m))?);
        }
        out.direct = Some(direct);
    }
    if let Some(t) = file.timeout {
        out.timeout = Some(parse_seconds(*t.get_ref()).map_err(|m| error_at(t.span().start, Some("timeout"), m))?);
    }
    if let Some(t) = file.backoff {
        out.backoff = Some(parse_seconds(*t.get_ref()).map_err(|m| error_at(t.span().start, Some("backoff"), m))?);
    }
    if let Some(names) = file.direct_names {
        let mut direct_names = Vec::new();
        for name in names {
            let at = name.span().start;
            direct_names.push(parse_name(name.get_ref()).map_err(|m| error_at(at, Some("direct_names"), m))?);
        }
        out.direct_names = Some(direct_names);
    }
    if let Some(p) = file.password_file {
        out.password_file = Some((p.get_ref().clone(), origin_at(p.span().start, "password_file")));
    }
    out.proxy_fixed_ports = file.bind.and_then(|b| b.proxy_fixed_ports);
    if let Some(routes) = file.route {
        let mut specs = Vec::new();
        for route in routes {
            let start = route.span().start;
            let r = route.into_inner();
            let Some(to) = r.to else {
                return Err(error_at(
                    start,
                    Some("route"),
                    "a route needs `to` (networks, names, `*.domain` or `*`)".into(),
                ));
            };
            if to.is_empty() {
                return Err(error_at(start, Some("route.to"), "an empty `to` matches nothing".into()));
            }
            let mut dests = Vec::new();
            for d in to {
                dests.push(Dest::parse(d.get_ref()).map_err(|m| error_at(d.span().start, Some("route.to"), m))?);
            }
            let mut ports = Vec::new();
            if let Some(list) = r.ports {
                if list.is_empty() {
                    return Err(error_at(start, Some("route.ports"), "an empty `ports` matches nothing".into()));
                }
                for p in list {
                    let range = parse_ports(p.get_ref()).ok_or_else(|| {
                        error_at(
                            p.span().start,
                            Some("route.ports"),
                            "expected a port or a range like \"1-1023\"".into(),
                        )
                    })?;
                    ports.push(range);
                }
            }
            let via = match (r.via, r.chain) {
                (Some(via), None) => {
                    words_or_urls(via.get_ref(), true).map_err(|m| error_at(via.span().start, Some("route.via"), m))?
                }
                (None, Some(chain)) => match words_or_urls(chain.get_ref(), false) {
                    Ok(ViaSpec::Failover(urls)) => ViaSpec::Chain(urls),
                    Ok(_) => unreachable!("words are refused for chains"),
                    Err(m) => return Err(error_at(chain.span().start, Some("route.chain"), m)),
                },
                (Some(_), Some(_)) => {
                    return Err(error_at(start, Some("route"), "a route has `via` or `chain`, not both".into()));
                }
                (None, None) => {
                    return Err(error_at(
                        start,
                        Some("route"),
                        "a route needs `via` (upstream URLs, \"direct\" or \"block\") or `chain`".into(),
                    ));
                }
            };
            specs.push(RouteSpec { to: dests, ports, via, at: origin_at(start, "route") });
        }
        out.routes = Some(specs);
    }
    Ok(out)
}

/// `server`, `via` and `chain`: a string (one URL, URLs separated by commas, or, with `words`,
/// "direct" / "block") or an array of URL strings.
fn words_or_urls(value: &toml::Value, words: bool) -> Result<ViaSpec, String> {
    let items: Vec<&str> = match value {
        toml::Value::String(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
        toml::Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::trim).ok_or("every entry must be a URL string"))
            .collect::<Result<_, _>>()?,
        _ => return Err("expected a URL, URLs separated by commas, or an array of URLs".into()),
    };
    parse_via(&items, words)
}

fn parse_via(items: &[&str], words: bool) -> Result<ViaSpec, String> {
    match items {
        [] => Err("no upstream: give at least one URL".into()),
        [w] if words && w.eq_ignore_ascii_case("direct") => Ok(ViaSpec::Direct),
        [w] if words && w.eq_ignore_ascii_case("block") => Ok(ViaSpec::Block),
        _ => {
            let urls = items
                .iter()
                .map(|s| {
                    if s.eq_ignore_ascii_case("direct") || s.eq_ignore_ascii_case("block") {
                        Err(format!("`{s}` stands alone; it is not an upstream in a list"))
                    } else {
                        Url::parse(s)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            if urls.len() > MAX_UPSTREAMS {
                return Err(format!("more than {MAX_UPSTREAMS} upstreams"));
            }
            Ok(ViaSpec::Failover(urls))
        }
    }
}

/// The dotted key written on `line` (`bind.proxy_fixed_ports` inside `[bind]`), for errors the TOML
/// parser reports by position only.
fn key_on_line(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line - 1).copied().unwrap_or("").trim();
    if this.starts_with('[') {
        return this.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
    }
    let key = this.split('=').next().unwrap_or("").trim().trim_matches('"').to_owned();
    // Up to this line itself, which is no header.
    let section = lines
        .iter()
        .take(line)
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match section {
        Some(s) if !key.is_empty() => format!("{s}.{key}"),
        _ => key,
    }
}

/// Reads SOCKS4_SERVER, SOCKS4_USER, SOCKS4_DIRECT, SOCKS4_TIMEOUT, SOCKS4_BACKOFF, SOCKS4_DEBUG,
/// SOCKS4_REMOTE_DNS, SOCKS4_DIRECT_NAMES, SOCKS4_PASSWORD and SOCKS4_PASSWORD_FILE.
///
/// # Errors
///
/// The first variable that cannot be used; the others are still returned in the `Partial`.
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> (Partial, Option<ConfigError>) {
    let mut out = Partial::default();
    let mut first_error = None;
    let mut fail = |var: &str, message: String| {
        first_error.get_or_insert(ConfigError { origin: var.to_owned(), line: None, key: var.to_owned(), message });
    };
    if let Some(v) = get("SOCKS4_SERVER") {
        let items: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        match parse_via(&items, true) {
            Ok(via) => out.server = Some((via, Origin::env("SOCKS4_SERVER"))),
            Err(m) => fail("SOCKS4_SERVER", m),
        }
    }
    out.user = get("SOCKS4_USER").map(String::into_bytes);
    if let Some(v) = get("SOCKS4_DIRECT") {
        match v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_net).collect() {
            Ok(nets) => out.direct = Some(nets),
            Err(m) => fail("SOCKS4_DIRECT", m),
        }
    }
    for (var, slot) in [("SOCKS4_TIMEOUT", &mut out.timeout), ("SOCKS4_BACKOFF", &mut out.backoff)] {
        if let Some(v) = get(var) {
            match v
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("`{v}` is not a number of seconds"))
                .and_then(parse_seconds)
            {
                Ok(t) => *slot = Some(t),
                Err(m) => fail(var, m),
            }
        }
    }
    if let Some(v) = get("SOCKS4_DEBUG") {
        match v.trim() {
            "" | "0" | "false" | "no" | "off" => out.debug = Some(false),
            "1" | "true" | "yes" | "on" => out.debug = Some(true),
            _ => fail("SOCKS4_DEBUG", format!("`{v}` is not 0 or 1")),
        }
    }
    if let Some(v) = get("SOCKS4_REMOTE_DNS") {
        match v.trim() {
            "0" | "false" | "no" | "off" => out.remote_dns = Some(false),
            "1" | "true" | "yes" | "on" => out.remote_dns = Some(true),
            _ => fail("SOCKS4_REMOTE_DNS", format!("`{v}` is not 0 or 1")),
        }
    }
    if let Some(v) = get("SOCKS4_DIRECT_NAMES") {
        match v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse_name).collect() {
            Ok(names) => out.direct_names = Some(names),
            Err(m) => fail("SOCKS4_DIRECT_NAMES", m),
        }
    }
    out.password = get("SOCKS4_PASSWORD").map(Secret::new);
    out.password_file = get("SOCKS4_PASSWORD_FILE").map(|p| (p, Origin::env("SOCKS4_PASSWORD_FILE")));
    (out, first_error)
}

/// Environment over file over defaults; the upstreams resolved, given their passwords, and the
/// routes checked. The user id defaults to `login()` (the effective user's login name), or empty.
///
/// # Errors
///
/// An upstream that cannot be used (a name that does not resolve, a user without a password, a
/// chain hop the previous hop cannot reach), naming where it was written.
pub fn merge(file: Partial, env: Partial, login: impl FnOnce() -> Option<Vec<u8>>) -> Result<Config, ConfigError> {
    let remote_dns = env.remote_dns.or(file.remote_dns);
    let server = env.server.or(file.server).unwrap_or_else(|| {
        (ViaSpec::Failover(vec![Url::parse(DEFAULT_SERVER).expect("valid default")]), Origin::env("default server"))
    });
    let routes = file.routes.unwrap_or_default();
    let password = env.password.or(file.password);
    let password_file = env.password_file.or(file.password_file);
    let built = upstreams::build(&server, &routes, remote_dns, password, password_file)?;
    Ok(Config {
        first_hops: built.first_hops,
        upstreams: built.upstreams,
        routes: built.routes,
        default: built.default,
        user: env.user.or(file.user).or_else(login).unwrap_or_default(),
        direct: env.direct.or(file.direct).unwrap_or_else(default_direct),
        timeout: env.timeout.or(file.timeout).unwrap_or(DEFAULT_TIMEOUT),
        backoff: env.backoff.or(file.backoff).unwrap_or(DEFAULT_BACKOFF),
        debug: env.debug.or(file.debug).unwrap_or(false),
        proxy_fixed_ports: env.proxy_fixed_ports.or(file.proxy_fixed_ports).unwrap_or(false),
        remote_dns,
        direct_names: env.direct_names.or(file.direct_names).unwrap_or_default(),
        broken: false,
    })
}

/// Reads the real environment and file. The error, if any, is the first one found.
pub fn load() -> (Config, Option<ConfigError>) {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let (env, env_error) = parse_env(var);
    let (file, file_error) = match var("SOCKS4_CONF") {
        Some(path) => read_file(&path, true),
        None => read_file(DEFAULT_FILE, false),
    };
    let direct = env.direct.clone().or_else(|| file.direct.clone()).unwrap_or_else(default_direct);
    let debug = env.debug.or(file.debug).unwrap_or(false);
    let (mut config, merge_error) = match merge(file, env, crate::sys::login_name) {
        Ok(c) => (c, None),
        Err(e) => {
            let mut c = Config::fail_closed(direct);
            c.debug = debug;
            (c, Some(e))
        }
    };
    let error = file_error.or(env_error).or(merge_error);
    config.broken = error.is_some();
    (config, error)
}

/// Longer than any sane configuration; a larger "file" (`/dev/zero`) is an error, not a hang.
const MAX_FILE: u64 = 1 << 20;

/// Reads a configuration file without ever blocking the program: opened
/// non-blocking (a FIFO nobody writes to would otherwise stop every
/// preloaded program before `main`), refused unless it is a regular file,
/// and read up to [`MAX_FILE`] bytes.
pub(crate) fn read_text(path: &str) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(Error::new(ErrorKind::InvalidInput, format!("larger than {MAX_FILE} bytes")));
    }
    Ok(text)
}

fn read_file(path: &str, required: bool) -> (Partial, Option<ConfigError>) {
    match read_text(path) {
        Ok(text) => match parse_file(path, &text) {
            Ok(p) => (p, None),
            Err(e) => (Partial::default(), Some(e)),
        },
        Err(e) if required || e.kind() != std::io::ErrorKind::NotFound => {
            let message = format!("cannot read {path}: {e}");
            (
                Partial::default(),
                Some(ConfigError { origin: "SOCKS4_CONF".into(), line: None, key: "SOCKS4_CONF".into(), message }),
            )
        }
        Err(_) => (Partial::default(), None),
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a network (a.b.c.d/n, an address, or an IPv6 network)"))
}

/// A `direct_names` entry: a host name, optionally written `*.name` or `.name` (same meaning).
fn parse_name(s: &str) -> Result<HostName, String> {
    let trimmed = s.trim();
    let name = trimmed.strip_prefix("*.").or_else(|| trimmed.strip_prefix('.')).unwrap_or(trimmed);
    HostName::parse(name)
        .map_err(|_| format!("`{s}` is not a host name or domain (e.g. `corp.example` or `*.corp.example`)"))
}

fn parse_seconds(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 3600.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{secs} is not a number of seconds in (0, 3600]"))
    }
}

/// A port (`80`, `"80"`) or an inclusive range (`"1-1023"`), as in socks4d's rules.
fn parse_ports(v: &toml::Value) -> Option<(u16, u16)> {
    match v {
        toml::Value::Integer(n) => u16::try_from(*n).ok().filter(|&p| p != 0).map(|p| (p, p)),
        toml::Value::String(s) => {
            let (lo, hi): (u16, u16) = match s.split_once('-') {
                Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
                None => {
                    let p = s.trim().parse().ok()?;
                    (p, p)
                }
            };
            (lo != 0 && lo <= hi).then_some((lo, hi))
        }
        _ => None,
    }
}

const UNINIT: u8 = 0;
const LOADING: u8 = 1;
const READY: u8 = 2;

/// A configuration loaded once, by the first caller; the others wait for it (bounded).
struct LoadOnce {
    state: AtomicU8,
    config: OnceLock<Config>,
    fallback: OnceLock<Config>,
}

impl LoadOnce {
    const fn new() -> LoadOnce {
        LoadOnce { state: AtomicU8::new(UNINIT), config: OnceLock::new(), fallback: OnceLock::new() }
    }

    /// The configuration `load` made, calling it in the first caller only. Another caller waits
    /// up to `patience` for it, then gets a fail-closed configuration instead.
    fn get(&self, load: impl FnOnce() -> Config, patience: Duration) -> &Config {
        if let Some(c) = self.config.get() {
            return c;
        }
        if self.state.compare_exchange(UNINIT, LOADING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let config = load();
            let c = self.config.get_or_init(|| config);
            self.state.store(READY, Ordering::Release);
            return c;
        }
        let start = Instant::now();
        while start.elapsed() < patience {
            if let Some(c) = self.config.get() {
                return c;
            }
            std::thread::yield_now();
        }
        self.fallback.get_or_init(|| Config::fail_closed(default_direct()))
    }
}

static CONFIG: LoadOnce = LoadOnce::new();

/// The process's configuration, loaded on first use (normally by the library constructor).
///
/// Never blocks on itself: it is called only inside the re-entrancy guard, so the thread that
/// loads cannot come back here; other threads wait for it (bounded), then fail closed.
pub fn get() -> &'static Config {
    CONFIG.get(
        || {
            let (config, error) = load();
            crate::log::set_debug(config.debug);
            if let Some(e) = error {
                crate::log::error!("{e}; proxied connections will fail (EACCES) until it is fixed");
            }
            config
        },
        Duration::from_secs(10),
    )
}

#[cfg(test)]
mod tests;
