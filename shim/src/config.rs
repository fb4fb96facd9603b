//! The shim's settings: the environment over the TOML file over the defaults, read once per process.
//!
//! A broken setting is reported once, naming the file, line and key (or the variable), and makes
//! the shim fail closed: every connection that is not direct then fails instead of guessing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;
use socks4_proto::host::HostName;
use toml::Spanned;

/// Where the file is looked for when SOCKS4_CONF is not set.
pub const DEFAULT_FILE: &str = "/etc/socks4.toml";
pub const DEFAULT_SERVER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1080));
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The SOCKS4 server.
    pub server: SocketAddr,
    /// USERID sent in every request.
    pub user: Vec<u8>,
    /// Networks connected directly, never through the proxy.
    pub direct: Vec<IpNet>,
    /// Limit for reaching the proxy and reading a reply (CONNECT, first BIND reply).
    pub timeout: Duration,
    pub debug: bool,
    /// listen() on a socket bound to a fixed port: false (default) = a real local server.
    pub proxy_fixed_ports: bool,
    /// Answer lookups of proxied names with placeholders and let the SOCKS server resolve them
    /// (SOCKS4A). Default: on unless the server is on loopback.
    pub remote_dns: bool,
    /// Names resolved locally even with `remote_dns` (each entry: that name and the names under it).
    pub direct_names: Vec<HostName>,
    /// The configuration could not be read: fail closed.
    pub broken: bool,
}

impl Config {
    /// Only used when the settings cannot be had at all: proxy everything that is not loopback and
    /// let it fail.
    fn fail_closed() -> Self {
        Config {
            server: DEFAULT_SERVER,
            user: Vec::new(),
            direct: default_direct(),
            timeout: DEFAULT_TIMEOUT,
            debug: false,
            proxy_fixed_ports: false,
            remote_dns: false,
            direct_names: Vec::new(),
            broken: true,
        }
    }

    /// Whether `ip` is in a direct network; an IPv4-mapped address also counts as its IPv4 address.
    pub fn is_direct(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.direct.iter().any(|net| net.contains(&ip) || net.contains(&canonical))
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

/// Settings found in one source; None = not set there.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Partial {
    pub server: Option<SocketAddr>,
    pub user: Option<Vec<u8>>,
    pub direct: Option<Vec<IpNet>>,
    pub timeout: Option<Duration>,
    pub debug: Option<bool>,
    pub proxy_fixed_ports: Option<bool>,
    pub remote_dns: Option<bool>,
    pub direct_names: Option<Vec<HostName>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    server: Option<Spanned<String>>,
    user: Option<String>,
    direct: Option<Vec<Spanned<String>>>,
    timeout: Option<Spanned<f64>>,
    debug: Option<bool>,
    remote_dns: Option<bool>,
    direct_names: Option<Vec<Spanned<String>>>,
    bind: Option<FileBind>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBind {
    proxy_fixed_ports: Option<bool>,
}

/// Parses the TOML file. Every key is optional.
///
/// # Errors
///
/// The first unusable key, with its line: a syntax error, an unknown key, a wrong type or a bad value.
pub fn parse_file(path: &str, text: &str) -> Result<Partial, ConfigError> {
    let error_at = |offset: usize, key: Option<&str>, message: String| {
        let line = text[..offset.min(text.len())].matches('\n').count() + 1;
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
        out.server = Some(parse_server(server.get_ref()).map_err(|m| error_at(at, Some("server"), m))?);
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
        out.timeout = Some(parse_timeout(*t.get_ref()).map_err(|m| error_at(t.span().start, Some("timeout"), m))?);
    }
    if let Some(names) = file.direct_names {
        let mut direct_names = Vec::new();
        for name in names {
            let at = name.span().start;
            direct_names.push(parse_name(name.get_ref()).map_err(|m| error_at(at, Some("direct_names"), m))?);
        }
        out.direct_names = Some(direct_names);
    }
    out.proxy_fixed_ports = file.bind.and_then(|b| b.proxy_fixed_ports);
    Ok(out)
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
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match section {
        Some(s) if !key.is_empty() => format!("{s}.{key}"),
        _ => key,
    }
}

/// Reads SOCKS4_SERVER, SOCKS4_USER, SOCKS4_DIRECT, SOCKS4_TIMEOUT, SOCKS4_DEBUG, SOCKS4_REMOTE_DNS
/// and SOCKS4_DIRECT_NAMES.
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
        match parse_server(&v) {
            Ok(addr) => out.server = Some(addr),
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
    if let Some(v) = get("SOCKS4_TIMEOUT") {
        match v.trim().parse::<f64>().map_err(|_| format!("`{v}` is not a number of seconds")).and_then(parse_timeout) {
            Ok(t) => out.timeout = Some(t),
            Err(m) => fail("SOCKS4_TIMEOUT", m),
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
    (out, first_error)
}

/// Environment over file over defaults. The user id defaults to `login()` (the effective user's
/// login name), or empty.
pub fn merge(file: Partial, env: Partial, login: impl FnOnce() -> Option<Vec<u8>>) -> Config {
    let server = env.server.or(file.server).unwrap_or(DEFAULT_SERVER);
    Config {
        server,
        user: env.user.or(file.user).or_else(login).unwrap_or_default(),
        direct: env.direct.or(file.direct).unwrap_or_else(default_direct),
        timeout: env.timeout.or(file.timeout).unwrap_or(DEFAULT_TIMEOUT),
        debug: env.debug.or(file.debug).unwrap_or(false),
        proxy_fixed_ports: env.proxy_fixed_ports.or(file.proxy_fixed_ports).unwrap_or(false),
        // A server on loopback is on this side of any firewall, so local DNS is as good as its.
        remote_dns: env.remote_dns.or(file.remote_dns).unwrap_or(!server.ip().is_loopback()),
        direct_names: env.direct_names.or(file.direct_names).unwrap_or_default(),
        broken: false,
    }
}

/// Reads the real environment and file. The error, if any, is the first one found.
pub fn load() -> (Config, Option<ConfigError>) {
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let (env, env_error) = parse_env(var);
    let (file, file_error) = match var("SOCKS4_CONF") {
        Some(path) => read_file(&path, true),
        None => read_file(DEFAULT_FILE, false),
    };
    let mut config = merge(file, env, crate::sys::login_name);
    let error = file_error.or(env_error);
    config.broken = error.is_some();
    (config, error)
}

/// Longer than any sane configuration; a larger "file" (`/dev/zero`) is an error, not a hang.
const MAX_FILE: u64 = 1 << 20;

/// Reads a configuration file without ever blocking the program: opened
/// non-blocking (a FIFO nobody writes to would otherwise stop every
/// preloaded program before `main`), refused unless it is a regular file,
/// and read up to [`MAX_FILE`] bytes.
fn read_text(path: &str) -> std::io::Result<String> {
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

fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.trim().parse::<SocketAddr>() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> =
        s.trim().to_socket_addrs().map_err(|e| format!("`{s}` is not host:port ({e})"))?.collect();
    // SOCKS4 is an IPv4 protocol; prefer the server's IPv4 address.
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied().ok_or_else(|| format!("`{s}` resolves to no address"))
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

fn parse_timeout(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 3600.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{secs} is not a number of seconds in (0, 3600]"))
    }
}

const UNINIT: u8 = 0;
const LOADING: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static CONFIG: OnceLock<Config> = OnceLock::new();
static FALLBACK: OnceLock<Config> = OnceLock::new();

/// The process's configuration, loaded on first use (normally by the library constructor).
///
/// Never blocks on itself: it is called only inside the re-entrancy guard, so the thread that
/// loads cannot come back here; other threads wait for it (bounded), then fail closed.
pub fn get() -> &'static Config {
    if let Some(c) = CONFIG.get() {
        return c;
    }
    if STATE.compare_exchange(UNINIT, LOADING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        let (config, error) = load();
        crate::log::set_debug(config.debug);
        if let Some(e) = error {
            crate::log::error!("{e}; proxied connections will fail (EACCES) until it is fixed");
        }
        let c = CONFIG.get_or_init(|| config);
        STATE.store(READY, Ordering::Release);
        return c;
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Some(c) = CONFIG.get() {
            return c;
        }
        std::thread::yield_now();
    }
    FALLBACK.get_or_init(Config::fail_closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let c = merge(Partial::default(), Partial::default(), || Some(b"alice".to_vec()));
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.user, b"alice");
        assert!(c.is_direct("127.0.0.5".parse().unwrap()));
        assert!(c.is_direct("::1".parse().unwrap()));
        assert!(!c.is_direct("10.0.0.1".parse().unwrap()));
        assert!(c.is_direct("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn parses_every_file_key() {
        let text = "server = \"10.0.0.1:1081\"\nuser = \"bob\"\ndirect = [\"192.168.0.0/16\", \"10.9.9.9\"]\n\
                    timeout = 2.5\ndebug = true\n[bind]\nproxy_fixed_ports = true\n";
        let p = parse_file("/etc/socks4.toml", text).unwrap();
        assert_eq!(p.server, Some("10.0.0.1:1081".parse().unwrap()));
        assert_eq!(p.user.as_deref(), Some(&b"bob"[..]));
        assert_eq!(p.direct, Some(vec!["192.168.0.0/16".parse().unwrap(), "10.9.9.9/32".parse().unwrap()]));
        assert_eq!(p.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(p.debug, Some(true));
        assert_eq!(p.proxy_fixed_ports, Some(true));
    }

    #[test]
    fn remote_dns_defaults_on_unless_the_server_is_on_loopback() {
        let remote_dns =
            |pairs: &[(&str, &str)]| merge(Partial::default(), parse_env(env(pairs)).0, || None).remote_dns;
        assert!(!remote_dns(&[]));
        assert!(remote_dns(&[("SOCKS4_SERVER", "10.0.0.1:1080")]));
        assert!(!remote_dns(&[("SOCKS4_SERVER", "10.0.0.1:1080"), ("SOCKS4_REMOTE_DNS", "0")]));
        assert!(remote_dns(&[("SOCKS4_REMOTE_DNS", "1")]));
    }

    #[test]
    fn direct_names_from_file_and_env() {
        let p =
            parse_file("f", "remote_dns = true\ndirect_names = [\"*.Corp.example\", \".lan\", \"host\"]\n").unwrap();
        assert_eq!(p.remote_dns, Some(true));
        let names = |n: &[&str]| Some(n.iter().map(|n| n.parse().unwrap()).collect::<Vec<HostName>>());
        assert_eq!(p.direct_names, names(&["corp.example", "lan", "host"]));
        let (env, err) = parse_env(env(&[("SOCKS4_DIRECT_NAMES", "a.example, b.example.")]));
        assert_eq!(err, None);
        assert_eq!(env.direct_names, names(&["a.example", "b.example"]));
    }

    #[test]
    fn bad_remote_dns_settings_are_named() {
        let e = parse_file("/x.toml", "debug = true\ndirect_names = [\"ok.example\", \"10.0.0.0/8\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "direct_names"));
        let e = parse_file("/x.toml", "remote_dns = \"maybe\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(1), "remote_dns"));
        let (_, err) = parse_env(env(&[("SOCKS4_REMOTE_DNS", "maybe")]));
        assert_eq!(err.unwrap().key, "SOCKS4_REMOTE_DNS");
        let (_, err) = parse_env(env(&[("SOCKS4_DIRECT_NAMES", "a b")]));
        assert_eq!(err.unwrap().key, "SOCKS4_DIRECT_NAMES");
    }

    #[test]
    fn integer_timeout_is_seconds() {
        assert_eq!(parse_file("f", "timeout = 3").unwrap().timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn bad_value_names_line_and_key() {
        let e = parse_file("/x.toml", "user = \"u\"\n\nserver = \"nonsense\"\n").unwrap_err();
        assert_eq!((e.origin.as_str(), e.line, e.key.as_str()), ("/x.toml", Some(3), "server"));
        let e = parse_file("/x.toml", "direct = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/99\",\n]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "direct"));
        let e = parse_file("/x.toml", "timeout = -1\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(1), "timeout"));
    }

    #[test]
    fn unknown_key_and_wrong_type_name_line_and_key() {
        let e = parse_file("/x.toml", "user = \"u\"\nservr = \"1.2.3.4:1\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "servr"));
        assert!(e.message.contains("servr"), "{}", e.message);
        let e = parse_file("/x.toml", "user = \"u\"\n[bind]\nproxy_fixed_ports = \"yes\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "bind.proxy_fixed_ports"));
        let e = parse_file("/x.toml", "debug = true\ntimeout = = 3\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "timeout"));
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn environment_overrides_file() {
        let file = parse_file("f", "server = \"10.0.0.1:1081\"\ndirect = [\"10.0.0.0/8\"]\nuser = \"file\"\n").unwrap();
        let (env, err) = parse_env(env(&[("SOCKS4_SERVER", "127.0.0.1:9"), ("SOCKS4_USER", "envuser")]));
        assert_eq!(err, None);
        let c = merge(file, env, || None);
        assert_eq!(c.server, "127.0.0.1:9".parse().unwrap());
        assert_eq!(c.user, b"envuser");
        assert_eq!(c.direct, vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]);
    }

    #[test]
    fn empty_direct_proxies_everything() {
        let (env, err) = parse_env(env(&[("SOCKS4_DIRECT", "")]));
        assert_eq!(err, None);
        let c = merge(Partial::default(), env, || None);
        assert!(c.direct.is_empty());
        assert!(!c.is_direct("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn direct_list_from_env() {
        let (env, _) = parse_env(env(&[("SOCKS4_DIRECT", " 10.0.0.0/8, ::1 ,192.0.2.7")]));
        assert_eq!(env.direct.unwrap().len(), 3);
    }

    #[test]
    fn bad_env_var_is_named_and_others_still_apply() {
        let (p, err) = parse_env(env(&[("SOCKS4_TIMEOUT", "soon"), ("SOCKS4_USER", "u")]));
        let err = err.unwrap();
        assert_eq!(err.key, "SOCKS4_TIMEOUT");
        assert!(err.to_string().starts_with("config SOCKS4_TIMEOUT: "));
        assert_eq!(p.user.as_deref(), Some(&b"u"[..]));
        let (_, err) = parse_env(env(&[("SOCKS4_DIRECT", "10.0.0.0/8,banana")]));
        assert_eq!(err.unwrap().key, "SOCKS4_DIRECT");
    }
}
