//! An upstream: one SOCKS server, written as a URL in curl's conventions (`socks4://`,
//! `socks4a://`, `socks5://`, `socks5h://`, or a bare `host:port`, which is SOCKS4).
//!
//! The scheme says where names are resolved: `socks4a://` and `socks5h://` send them to the
//! server, `socks4://` and `socks5://` resolve them here; a bare `host:port` follows the
//! `remote_dns` setting. A SOCKS5 URL may carry `user[:password]@` (percent-encoded, as in curl);
//! the password never appears in a log line or an error ([`Url`]'s `Display` and `Debug` leave it
//! out).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use socks4_proto::host::HostName;

/// The SOCKS version an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Socks4,
    Socks5,
}

/// The port curl assumes when a URL names none.
pub const DEFAULT_PORT: u16 = 1080;

/// A password, kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A server URL as written, parsed but not resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url {
    pub protocol: Protocol,
    /// Whether names go to the server: Some for an explicit scheme, None for a bare `host:port`
    /// (the `remote_dns` setting decides).
    pub remote_dns: Option<bool>,
    /// An IP literal (no brackets) or a host name.
    pub host: String,
    pub port: u16,
    /// SOCKS5: the username (RFC 1929); SOCKS4: the USERID sent instead of the `user` setting.
    pub user: Option<Vec<u8>>,
    /// SOCKS5 only.
    pub password: Option<Secret>,
}

impl Url {
    /// Parses `socks5h://user:pass@host:1080`, `socks4://[2001:db8::1]:1080`, `host:port`...
    ///
    /// # Errors
    ///
    /// A message naming what is wrong (never quoting a password).
    pub fn parse(text: &str) -> Result<Url, String> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            let (host, port) =
                host_port(text, false).map_err(|m| format!("`{text}` is not host:port or a URL ({m})"))?;
            return Ok(Url { protocol: Protocol::Socks4, remote_dns: None, host, port, user: None, password: None });
        };
        let (protocol, remote_dns) = match scheme.to_ascii_lowercase().as_str() {
            "socks4" => (Protocol::Socks4, false),
            "socks4a" => (Protocol::Socks4, true),
            "socks5" => (Protocol::Socks5, false),
            "socks5h" => (Protocol::Socks5, true),
            _ => return Err(format!("unknown scheme `{scheme}://` (socks4, socks4a, socks5 or socks5h)")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let shown = match userinfo {
            Some(u) => format!("{scheme}://{}@{hostport}", u.split(':').next().unwrap_or("")),
            None => format!("{scheme}://{hostport}"),
        };
        if hostport.contains(['/', '?', '#']) {
            return Err(format!("`{shown}`: a SOCKS URL has no path, query or fragment"));
        }
        let (host, port) = host_port(hostport, true).map_err(|m| format!("`{shown}`: {m}"))?;
        let (mut user, mut password) = (None, None);
        if let Some(info) = userinfo {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let u = percent_decode(u).ok_or_else(|| format!("`{shown}`: bad %-escape in the user name"))?;
            if u.is_empty() || u.len() > 255 {
                return Err(format!("`{shown}`: the user name must be 1 to 255 bytes"));
            }
            user = Some(u);
            if let Some(p) = p {
                let p = percent_decode(p).ok_or_else(|| format!("`{shown}`: bad %-escape in the password"))?;
                if p.is_empty() || p.len() > 255 {
                    return Err(format!("`{shown}`: the password must be 1 to 255 bytes"));
                }
                password = Some(Secret(p));
            }
        }
        if protocol == Protocol::Socks4 && password.is_some() {
            return Err(format!("`{shown}`: SOCKS4 has no passwords (only a user id: socks4://USER@host:port)"));
        }
        Ok(Url { protocol, remote_dns: Some(remote_dns), host, port, user, password })
    }

    /// The host as an address, if it is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Written as a bare `host:port` (SOCKS4, the `remote_dns` setting decides about names).
    pub fn is_bare(&self) -> bool {
        self.remote_dns.is_none()
    }
}

impl fmt::Display for Url {
    /// The URL without its password: what log lines and errors show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_bare() {
            let scheme = match (self.protocol, self.remote_dns == Some(true)) {
                (Protocol::Socks4, false) => "socks4",
                (Protocol::Socks4, true) => "socks4a",
                (Protocol::Socks5, false) => "socks5",
                (Protocol::Socks5, true) => "socks5h",
            };
            write!(f, "{scheme}://")?;
            if let Some(user) = &self.user {
                write!(f, "{}@", String::from_utf8_lossy(user))?;
            }
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host:port`, `[v6]:port`, or (with `port_optional`) `host` / `[v6]` meaning port 1080.
fn host_port(s: &str, port_optional: bool) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an IPv6 address needs its closing `]`")?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| format!("`{host}` is not an IPv6 address"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected `{after}` after the address")),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("write an IPv6 address in brackets: [2001:db8::1]:1080".into());
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| format!("`{p}` is not a port (1-65535)"))?,
        None if port_optional => DEFAULT_PORT,
        None => return Err("no port".into()),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    if host.parse::<IpAddr>().is_err() && HostName::parse(host).is_err() {
        return Err(format!("`{host}` is not an address or a host name"));
    }
    Ok((host.to_owned(), port))
}

/// RFC 3986 percent-decoding (`%` and exactly two hex digits); None for a broken escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    // Each digit alone: `u8::from_str_radix` would also take a sign (`%+1`).
    let hex = |b: Option<&u8>| b.and_then(|&b| char::from(b).to_digit(16)).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes().iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let (high, low) = (hex(bytes.next())?, hex(bytes.next())?);
            out.push(high * 16 + low);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// An upstream ready for use: its URL, the address the shim connects to when it is the first hop,
/// and whether names go to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub url: Url,
    /// Resolved when the configuration was read. None: a name this host cannot resolve, usable
    /// only as a later hop of a chain whose previous hop sends names.
    pub addr: Option<SocketAddr>,
    /// Names for this server's destinations are sent to it (SOCKS4A / SOCKS5 ATYP 3) rather than
    /// resolved here.
    pub sends_names: bool,
}

impl Upstream {
    pub fn protocol(&self) -> Protocol {
        self.url.protocol
    }

    /// The SOCKS5 login, if the URL names a user (the password was filled in when the
    /// configuration was read).
    pub fn login(&self) -> Option<(&[u8], &[u8])> {
        match (&self.url.user, &self.url.password) {
            (Some(u), Some(p)) if self.url.protocol == Protocol::Socks5 => Some((u, p.bytes())),
            _ => None,
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn bare_host_port_is_socks4_with_the_remote_dns_setting() {
        let u = parse("10.0.0.1:1081");
        assert_eq!((u.protocol, u.remote_dns, u.host.as_str(), u.port), (Protocol::Socks4, None, "10.0.0.1", 1081));
        assert!(u.is_bare());
        assert_eq!(u.to_string(), "10.0.0.1:1081");
        assert_eq!(parse("[::1]:1080").host, "::1");
        assert!(Url::parse("10.0.0.1").unwrap_err().contains("no port"));
    }

    #[test]
    fn schemes_say_where_names_are_resolved() {
        for (url, protocol, remote) in [
            ("socks4://fw:1080", Protocol::Socks4, false),
            ("socks4a://fw:1080", Protocol::Socks4, true),
            ("SOCKS5://fw:1080", Protocol::Socks5, false),
            ("socks5h://fw:1080/", Protocol::Socks5, true),
        ] {
            let u = parse(url);
            assert_eq!((u.protocol, u.remote_dns), (protocol, Some(remote)), "{url}");
            assert_eq!(u.host, "fw");
        }
        assert_eq!(parse("socks5://fw").port, DEFAULT_PORT);
        assert_eq!(parse("socks5h://[2001:db8::1]").to_string(), "socks5h://[2001:db8::1]:1080");
    }

    #[test]
    fn user_and_password_are_percent_decoded_and_never_shown() {
        let u = parse("socks5://al%40ice:p%3Ass@proxy.example:1080");
        assert_eq!(u.user.as_deref(), Some(&b"al@ice"[..]));
        assert_eq!(u.password.as_ref().map(Secret::bytes), Some(&b"p:ss"[..]));
        assert_eq!(u.to_string(), "socks5://al@ice@proxy.example:1080");
        assert!(!format!("{u:?}").contains("p:ss"));
        // The last @ separates: an unescaped @ in a password still works (as in curl).
        let u = parse("socks5h://bob:a@b@10.0.0.1:1080");
        assert_eq!(u.password.map(|p| p.0), Some(b"a@b".to_vec()));
        assert_eq!(parse("socks5://carol@h:1").password, None);
        assert_eq!(parse("socks4://fred@h:1").user.as_deref(), Some(&b"fred"[..]));
    }

    #[test]
    fn percent_escapes_are_two_hex_digits() {
        assert_eq!(percent_decode("a%41%7a%7E%00%ff%FFz"), Some(b"aAz~\0\xff\xffz".to_vec()));
        assert_eq!(percent_decode(""), Some(Vec::new()));
        for bad in ["%", "%4", "x%4", "%4g", "%g4", "%+1", "%-1", "% 1", "%\u{e9}1"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn user_and_password_are_1_to_255_bytes() {
        let long = |n: usize| "u".repeat(n);
        assert_eq!(parse(&format!("socks5://{}@h:1", long(255))).user.map(|u| u.len()), Some(255));
        let e = Url::parse(&format!("socks5://{}@h:1", long(256))).unwrap_err();
        assert!(e.contains("the user name must be 1 to 255 bytes"), "{e}");
        let u = parse(&format!("socks5://u:{}@h:1", long(255)));
        assert_eq!(u.password.map(|p| p.0.len()), Some(255));
        let e = Url::parse(&format!("socks5://u:{}@h:1", long(256))).unwrap_err();
        assert!(e.contains("the password must be 1 to 255 bytes"), "{e}");
        // Escapes count as the bytes they stand for.
        assert_eq!(parse(&format!("socks5://{}@h:1", "%41".repeat(255))).user.map(|u| u.len()), Some(255));
    }

    #[test]
    fn ip_is_the_literal_host_only() {
        assert_eq!(parse("socks5://10.0.0.1:1080").ip(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(parse("socks5://[2001:db8::1]:1080").ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse("socks5://proxy.example:1080").ip(), None);
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "Secret(..)");
        let u = parse("socks5://alice:s3cret@10.0.0.1:1080");
        assert!(format!("{u:?}").contains("password: Some(Secret(..))"), "{u:?}");
    }

    /// Only a SOCKS5 upstream logs in; a SOCKS4 URL's user is its USERID, whatever else is set.
    #[test]
    fn login_is_socks5_only() {
        let upstream = |url: &str| Upstream { url: parse(url), addr: None, sends_names: false };
        let u = upstream("socks5://alice:s3cret@10.0.0.1:1080");
        assert_eq!(u.login(), Some((&b"alice"[..], &b"s3cret"[..])));
        assert_eq!(upstream("socks5://alice@10.0.0.1:1080").login(), None, "no password yet");
        let mut u = upstream("socks4://alice@10.0.0.1:1080");
        u.url.password = Some(Secret::new("s3cret"));
        assert_eq!(u.login(), None);
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_the_password() {
        for (url, want) in [
            ("http://proxy:3128", "unknown scheme"),
            ("socks5://proxy:0", "not a port"),
            ("socks5://proxy:99999", "not a port"),
            ("socks5://:1080", "no host"),
            ("socks5://pro xy:1080", "not an address"),
            ("socks5://2001:db8::1:1080", "brackets"),
            ("socks5://[2001:db8::1:1080", "closing"),
            ("socks5://[2001:db8::1]1080", "unexpected `1080` after the address"),
            ("socks5://[2001:db8::1]x:1080", "unexpected `x:1080` after the address"),
            ("socks5://proxy:1080/path", "no path"),
            ("socks5://:pw@proxy:1080", "user name"),
            ("socks5://u:@proxy:1080", "password must"),
            ("socks5://u:%zz@proxy:1080", "%-escape"),
            ("socks4://u:topsecret@proxy:1080", "SOCKS4 has no passwords"),
        ] {
            let e = Url::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("topsecret"), "{url}: {e}");
        }
    }
}
