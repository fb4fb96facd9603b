//! Access control: the ordered rule list and the pure decision
//! [`evaluate`] (first match wins; no match refuses).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use socks4_proto::host::{self, HostName};
/// The commands rules name: SOCKS4 has CONNECT and BIND, SOCKS5 adds UDP
/// ASSOCIATE ("udp"); one enum for both protocols.
pub use socks4_proto::v5::Command;

use crate::config::quote;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// Its word in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// The inverse of [`Action::name`].
    pub fn from_name(s: &str) -> Option<Action> {
        [Action::Allow, Action::Deny].into_iter().find(|a| a.name() == s)
    }
}

/// What IDENT (RFC 1413) a matching rule asks for, from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum IdentMode {
    /// No IDENT query.
    #[default]
    Off,
    /// identd must answer with a USERID; otherwise reply 92.
    Require,
    /// As `Require`, and its user id must equal the request's USERID; otherwise 93.
    Match,
}

impl IdentMode {
    /// Its word in the config file.
    pub fn name(self) -> &'static str {
        match self {
            IdentMode::Off => "off",
            IdentMode::Require => "require",
            IdentMode::Match => "match",
        }
    }

    /// The inverse of [`IdentMode::name`].
    pub fn from_name(s: &str) -> Option<IdentMode> {
        [IdentMode::Off, IdentMode::Require, IdentMode::Match].into_iter().find(|m| m.name() == s)
    }
}

/// Which sessions a rule may match by how the client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Every session: SOCKS4 (whose USERID is only a claim), SOCKS5 with or
    /// without a login.
    #[default]
    Any,
    /// Only SOCKS5 sessions that logged in with a password from `users_file`;
    /// `users` then matches the name they logged in as.
    Password,
}

impl AuthMode {
    /// Its word in the config file.
    pub fn name(self) -> &'static str {
        match self {
            AuthMode::Any => "any",
            AuthMode::Password => "password",
        }
    }

    /// The inverse of [`AuthMode::name`].
    pub fn from_name(s: &str) -> Option<AuthMode> {
        [AuthMode::Any, AuthMode::Password].into_iter().find(|m| m.name() == s)
    }
}

/// One entry of a rule's `to` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestPattern {
    /// Any destination, address or name.
    Any,
    /// An IPv4 or IPv6 network; matches the address (for a name: each
    /// resolved address).
    Net(IpNet),
    /// One host name (SOCKS4A, SOCKS5 ATYP 3).
    Host(HostName),
    /// `*.example.com`: every name below `example.com` (stored as `example.com`).
    Suffix(HostName),
}

impl DestPattern {
    /// Parses a `to` entry; `None` if it is none of the accepted forms.
    pub fn parse(s: &str) -> Option<DestPattern> {
        if s == "*" {
            return Some(DestPattern::Any);
        }
        if let Ok(net) = s.parse::<IpNet>() {
            return Some(DestPattern::Net(canonical_net(net.trunc())));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(DestPattern::Net(IpNet::from(ip.to_canonical())));
        }
        // A rule about "example.com." is about "example.com" (HostName drops the dot, and requests
        // are read the same way). An address-looking word that did not parse (e.g. "::/200") is a
        // typo, not a name.
        let name = |n: &str| HostName::parse(n).ok().filter(|h| h.bytes().any(|b| b.is_ascii_alphabetic()));
        if let Some(domain) = s.strip_prefix("*.") {
            return name(domain).map(DestPattern::Suffix);
        }
        name(s).map(DestPattern::Host)
    }

    fn matches(&self, name: Option<&str>, ip: Option<IpAddr>) -> bool {
        match self {
            DestPattern::Any => true,
            // An IPv4-mapped IPv6 destination (`::ffff:10.1.2.3`) is the IPv4 host: it must meet
            // the rules about 10.0.0.0/8, not slip past them.
            DestPattern::Net(net) => ip.is_some_and(|ip| net.contains(&ip.to_canonical())),
            DestPattern::Host(h) => name.is_some_and(|n| host::same_name(n, h)),
            DestPattern::Suffix(domain) => name.is_some_and(|n| host::is_below(n, domain)),
        }
    }
}

impl fmt::Display for DestPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestPattern::Any => f.write_str("*"),
            DestPattern::Net(n) => write!(f, "{n}"),
            DestPattern::Host(h) => write!(f, "{h}"),
            DestPattern::Suffix(domain) => write!(f, "*.{domain}"),
        }
    }
}

/// A network about IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) is
/// the IPv4 network it maps: destinations are compared in their canonical
/// form, so the mapped spelling would otherwise match nothing.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        // A network of fewer than 96 bits cannot begin with ::ffff: (its low bits are zero).
        IpNet::V6(v6) => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// One entry of a rule's `users` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPattern {
    Any,
    /// Exactly these USERID bytes.
    Exact(Vec<u8>),
}

/// One `[[rule]]`. Every list must have an entry matching the request for
/// the rule to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: Option<String>,
    pub action: Action,
    /// Client networks (IPv4 or IPv6; an IPv4-mapped IPv6 client counts as IPv4).
    pub from: Vec<IpNet>,
    pub to: Vec<DestPattern>,
    /// Inclusive destination port ranges.
    pub ports: Vec<(u16, u16)>,
    pub commands: Vec<Command>,
    pub users: Vec<UserPattern>,
    pub ident: IdentMode,
    pub auth: AuthMode,
}

impl Rule {
    /// A rule with `action` that matches every request, no IDENT. Its
    /// ports are 0-65535: port 0 is what a BIND names when it has no
    /// primary connection (npm `socks`, Dante's client), and a CONNECT to
    /// port 0 never gets this far (the session refuses it before the rules).
    pub fn new(action: Action) -> Rule {
        Rule {
            name: None,
            action,
            from: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            to: vec![DestPattern::Any],
            ports: vec![(0, 65535)],
            commands: vec![Command::Connect, Command::Bind, Command::UdpAssociate],
            users: vec![UserPattern::Any],
            ident: IdentMode::Off,
            auth: AuthMode::Any,
        }
    }

    /// Whether this rule applies to `q`.
    pub fn matches(&self, q: &Query<'_>) -> bool {
        self.matches_all_but_destination(q) && self.to.iter().any(|p| p.matches(q.name, q.ip))
    }

    /// Whether this rule applies to `q` for some destination address.
    fn matches_all_but_destination(&self, q: &Query<'_>) -> bool {
        self.matches_client(q) && self.ports.iter().any(|&(lo, hi)| lo <= q.port && q.port <= hi)
    }

    /// Whether this rule applies to `q`'s client, command and user, whatever
    /// the destination and port.
    fn matches_client(&self, q: &Query<'_>) -> bool {
        let client = q.client.to_canonical();
        self.from.iter().any(|n| n.contains(&client))
            && self.commands.contains(&q.command)
            // A SOCKS4 USERID, or a SOCKS5 session without a login, never
            // satisfies a rule that wants a proof.
            && (self.auth == AuthMode::Any || q.authenticated)
            && self.users.iter().any(|u| match u {
                UserPattern::Any => true,
                UserPattern::Exact(id) => id == q.user,
            })
    }
}

impl fmt::Display for Rule {
    /// The rule in config file syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
            items.iter().map(|i| quote(&show(i))).collect::<Vec<_>>().join(", ")
        }
        writeln!(f, "[[rule]]")?;
        if let Some(name) = &self.name {
            writeln!(f, "name = {}", quote(name))?;
        }
        writeln!(f, "action = \"{}\"", self.action.name())?;
        writeln!(f, "from = [{}]", list(&self.from, |n| n.to_string()))?;
        writeln!(f, "to = [{}]", list(&self.to, |p| p.to_string()))?;
        let ports = list(&self.ports, |&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") });
        writeln!(f, "ports = [{ports}]")?;
        writeln!(f, "commands = [{}]", list(&self.commands, |c| c.name().to_string()))?;
        let users = list(&self.users, |u| match u {
            UserPattern::Any => "*".to_string(),
            UserPattern::Exact(id) => String::from_utf8_lossy(id).into_owned(),
        });
        writeln!(f, "users = [{users}]")?;
        writeln!(f, "ident = \"{}\"", self.ident.name())?;
        writeln!(f, "auth = \"{}\"", self.auth.name())
    }
}

/// The ordered rule list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

/// What a request looks like to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    pub client: IpAddr,
    pub command: Command,
    pub port: u16,
    /// The host name, if the request carried one (SOCKS4A, SOCKS5 ATYP 3).
    pub name: Option<&'a str>,
    /// The destination address: DSTIP or DST.ADDR, or a name's resolved
    /// address.
    pub ip: Option<IpAddr>,
    /// The SOCKS4 USERID (a claim), or the name a SOCKS5 client logged in as.
    pub user: &'a [u8],
    /// Whether `user` was proven with a password (SOCKS5 username/password).
    pub authenticated: bool,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Index of the matching rule; `None` when no rule matched (refused).
    pub rule: Option<usize>,
    pub ident: IdentMode,
}

/// The access decision: the first rule that matches decides; no match is a
/// refusal. A `to` entry matches a SOCKS4A request if it matches the name
/// OR the resolved address, so a network rule (allow or deny) applies to
/// names too: the server evaluates a name once per resolved address.
pub fn evaluate(rules: &Rules, q: &Query<'_>) -> Decision {
    rules
        .rules
        .iter()
        .position(|r| r.matches(q))
        .map(|i| Decision { action: rules.rules[i].action, rule: Some(i), ident: rules.rules[i].ident })
        .unwrap_or(Decision { action: Action::Deny, rule: None, ident: IdentMode::Off })
}

/// Whether some allow rule could match `q` whatever its destination
/// address. When none can, a SOCKS4A request is refused before its name is
/// looked up: no DNS queries on behalf of clients the rules keep out.
pub fn may_allow(rules: &Rules, q: &Query<'_>) -> bool {
    rules.rules.iter().any(|r| r.action == Action::Allow && r.matches_all_but_destination(q))
}

/// The IDENT modes of the allow rules that could match some datagram of a
/// UDP association of `q`'s client, whatever its destination and port (the
/// request names neither); empty when no datagram could be allowed.
pub fn udp_ident_modes<'r>(rules: &'r Rules, q: &Query<'r>) -> impl Iterator<Item = IdentMode> + 'r {
    let q = *q;
    rules.rules.iter().filter(move |r| r.action == Action::Allow && r.matches_client(&q)).map(|r| r.ident)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(client: &str, ip: Option<&str>, name: Option<&'static str>) -> Query<'static> {
        Query {
            client: client.parse().unwrap(),
            command: Command::Connect,
            port: 80,
            name,
            ip: ip.map(|s| s.parse().unwrap()),
            user: b"fred",
            authenticated: false,
        }
    }

    #[test]
    fn default_config_serves_loopback_only() {
        let rules = crate::Config::default().rules;
        assert_eq!(evaluate(&rules, &q("127.0.0.1", Some("192.0.2.1"), None)).action, Action::Allow);
        assert_eq!(evaluate(&rules, &q("::1", Some("192.0.2.1"), None)).action, Action::Allow);
        assert_eq!(evaluate(&rules, &q("::ffff:127.0.0.9", Some("192.0.2.1"), None)).action, Action::Allow);
        // A BIND with no primary port (DSTIP 0.0.0.0, DSTPORT 0: npm `socks`).
        let bind_no_port = Query { command: Command::Bind, port: 0, ..q("127.0.0.1", Some("0.0.0.0"), None) };
        assert_eq!(evaluate(&rules, &bind_no_port).action, Action::Allow);
        let remote = evaluate(&rules, &q("192.0.2.9", Some("127.0.0.1"), None));
        assert_eq!(remote, Decision { action: Action::Deny, rule: None, ident: IdentMode::Off });
        // SOCKS5 from loopback: IPv6 destinations and UDP too.
        assert_eq!(evaluate(&rules, &q("::1", Some("2001:db8::1"), None)).action, Action::Allow);
        let udp = Query { command: Command::UdpAssociate, port: 53, ..q("127.0.0.1", Some("192.0.2.1"), None) };
        assert_eq!(evaluate(&rules, &udp).action, Action::Allow);
    }

    /// A rule with `auth = "password"` matches only sessions that logged
    /// in; a SOCKS4 USERID with the same name does not count.
    #[test]
    fn password_rules_need_a_login() {
        let mut rule = Rule::new(Action::Allow);
        rule.auth = AuthMode::Password;
        rule.users = vec![UserPattern::Exact(b"fred".to_vec())];
        let rules = Rules { rules: vec![rule] };
        let claimed = q("127.0.0.1", Some("192.0.2.1"), None);
        assert_eq!(evaluate(&rules, &claimed).rule, None);
        assert!(!may_allow(&rules, &claimed));
        let proven = Query { authenticated: true, ..claimed };
        assert_eq!(evaluate(&rules, &proven).rule, Some(0));
        let other = Query { user: b"bob", ..proven };
        assert_eq!(evaluate(&rules, &other).rule, None);
    }

    #[test]
    fn ipv6_networks_and_mapped_destinations() {
        let mut deny = Rule::new(Action::Deny);
        deny.to = vec![DestPattern::parse("10.0.0.0/8").unwrap(), DestPattern::parse("2001:db8::/32").unwrap()];
        let rules = Rules { rules: vec![deny, Rule::new(Action::Allow)] };
        for denied in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"] {
            assert_eq!(evaluate(&rules, &q("127.0.0.1", Some(denied), None)).rule, Some(0), "{denied}");
        }
        assert_eq!(evaluate(&rules, &q("127.0.0.1", Some("2001:db9::5"), None)).rule, Some(1));
        // A network written in the mapped spelling is the IPv4 network.
        assert_eq!(DestPattern::parse("::ffff:10.0.0.0/104").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn name_cannot_dodge_a_network_deny() {
        let mut deny = Rule::new(Action::Deny);
        deny.to = vec![DestPattern::parse("10.0.0.0/8").unwrap()];
        let mut allow = Rule::new(Action::Allow);
        allow.to = vec![DestPattern::parse("*.example.com").unwrap()];
        let rules = Rules { rules: vec![deny, allow] };
        let d = evaluate(&rules, &q("127.0.0.1", Some("10.1.2.3"), Some("in.example.com")));
        assert_eq!((d.action, d.rule), (Action::Deny, Some(0)));
        let d = evaluate(&rules, &q("127.0.0.1", Some("192.0.2.1"), Some("In.Example.COM")));
        assert_eq!((d.action, d.rule), (Action::Allow, Some(1)));
        // The bare domain is not below itself.
        assert_eq!(evaluate(&rules, &q("127.0.0.1", Some("192.0.2.1"), Some("example.com"))).rule, None);
    }

    /// A UDP association's IDENT check: the modes of the allow rules that could match its
    /// client, whatever the destination; deny rules and other clients' rules do not count.
    #[test]
    fn udp_ident_modes_are_those_of_the_clients_allow_rules() {
        let rule = |action, from: &str, ident| Rule { from: vec![from.parse().unwrap()], ident, ..Rule::new(action) };
        let rules = Rules {
            rules: vec![
                rule(Action::Deny, "127.0.0.0/8", IdentMode::Match),
                rule(Action::Allow, "10.0.0.0/8", IdentMode::Require),
                rule(Action::Allow, "127.0.0.0/8", IdentMode::Off),
            ],
        };
        let modes = |client: &str| udp_ident_modes(&rules, &q(client, None, None)).collect::<Vec<_>>();
        assert_eq!(modes("127.0.0.1"), [IdentMode::Off]);
        assert_eq!(modes("10.1.1.1"), [IdentMode::Require]);
        assert_eq!(modes("192.0.2.1"), []);
    }

    #[test]
    fn patterns_parse() {
        assert_eq!(DestPattern::parse("10.1.2.3"), Some(DestPattern::Net("10.1.2.3/32".parse().unwrap())));
        assert_eq!(DestPattern::parse("10.1.2.3/8"), Some(DestPattern::Net("10.0.0.0/8".parse().unwrap())));
        assert_eq!(DestPattern::parse("Files.Internal"), Some(DestPattern::Host("files.internal".parse().unwrap())));
        assert_eq!(DestPattern::parse("::/0"), Some(DestPattern::Net("::/0".parse().unwrap())));
        assert_eq!(DestPattern::parse("::1"), Some(DestPattern::Net("::1/128".parse().unwrap())));
        assert_eq!(DestPattern::parse("2001:db8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(DestPattern::parse("::/200"), None);
        // Mapped IPv4 networks are IPv4 networks; wider IPv6 networks stay IPv6.
        assert_eq!(DestPattern::parse("::ffff:10.0.0.0/104"), Some(DestPattern::Net("10.0.0.0/8".parse().unwrap())));
        assert_eq!(DestPattern::parse("::ffff:0.0.0.0/95").unwrap().to_string(), "::fffe:0:0/95");
        assert_eq!(DestPattern::parse("10.0.0.0/40"), None);
        assert_eq!(DestPattern::parse("*."), None);
        assert_eq!(DestPattern::parse("a b"), None);
        assert_eq!(DestPattern::parse("*.Example.COM.").unwrap().to_string(), "*.example.com");
        assert_eq!(DestPattern::parse("Example.COM.").unwrap().to_string(), "example.com");
    }

    /// A tiny deterministic generator, so the property test needs no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<T: Clone>(&mut self, items: &[T]) -> T {
            items[(self.next() % items.len() as u64) as usize].clone()
        }
        fn some<T: Clone>(&mut self, items: &[T]) -> Vec<T> {
            let n = 1 + self.next() % 2;
            (0..n).map(|_| self.pick(items)).collect()
        }
    }

    /// Reference semantics written independently: walk the rules, check each
    /// field by brute force over small domains.
    fn reference(rules: &Rules, q: &Query<'_>) -> (Action, Option<usize>) {
        for (i, r) in rules.rules.iter().enumerate() {
            let client = match q.client {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(q.client),
                v4 => v4,
            };
            let from_ok = r.from.iter().any(|n| n.contains(&client));
            let to_ok = r.to.iter().any(|p| match p {
                DestPattern::Any => true,
                DestPattern::Net(IpNet::V4(n)) => {
                    let mask = if n.prefix_len() == 0 { 0 } else { u32::MAX << (32 - n.prefix_len()) };
                    let ip = q.ip.map(|ip| match ip {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                        v4 => v4,
                    });
                    matches!(ip, Some(IpAddr::V4(ip)) if u32::from(ip) & mask == u32::from(n.network()) & mask)
                }
                DestPattern::Net(IpNet::V6(n)) => {
                    let mask = if n.prefix_len() == 0 { 0 } else { u128::MAX << (128 - n.prefix_len()) };
                    matches!(q.ip, Some(IpAddr::V6(ip))
                        if ip.to_ipv4_mapped().is_none() && u128::from(ip) & mask == u128::from(n.network()) & mask)
                }
                DestPattern::Host(h) => q.name.map(str::to_ascii_lowercase).as_deref() == Some(h.as_str()),
                DestPattern::Suffix(s) => q.name.is_some_and(|n| n.to_ascii_lowercase().ends_with(&format!(".{s}"))),
            });
            let port_ok = r.ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&q.port));
            let cmd_ok = r.commands.iter().filter(|&&c| c == q.command).count() > 0;
            let user_ok =
                r.users.iter().any(|u| matches!(u, UserPattern::Any) || *u == UserPattern::Exact(q.user.to_vec()));
            let auth_ok = match r.auth {
                AuthMode::Any => true,
                AuthMode::Password => q.authenticated,
            };
            if from_ok && to_ok && port_ok && cmd_ok && user_ok && auth_ok {
                return (r.action, Some(i));
            }
        }
        (Action::Deny, None)
    }

    #[test]
    fn evaluate_agrees_with_reference() {
        let froms: Vec<IpNet> = ["127.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16", "0.0.0.0/0", "::1/128"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let tos: Vec<DestPattern> = [
            "*",
            "10.0.0.0/8",
            "10.1.2.3",
            "192.0.2.0/24",
            "localhost",
            "*.example.com",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::1",
            "::/0",
        ]
        .iter()
        .map(|s| DestPattern::parse(s).unwrap())
        .collect();
        let ports = [(1, 65535), (80, 80), (1, 1023), (0, 0), (443, 8080)];
        let users = [UserPattern::Any, UserPattern::Exact(b"fred".to_vec()), UserPattern::Exact(Vec::new())];
        let clients: Vec<IpAddr> = ["127.0.0.1", "10.1.9.9", "10.2.0.1", "192.0.2.5", "::1", "::ffff:10.1.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let ips: Vec<Option<IpAddr>> = [
            None,
            Some("10.1.2.3"),
            Some("10.9.9.9"),
            Some("192.0.2.77"),
            Some("127.0.0.1"),
            Some("0.0.0.0"),
            Some("::ffff:10.1.2.3"),
            Some("2001:db8::7"),
            Some("::1"),
            Some("fe80::1"),
        ]
        .iter()
        .map(|s| s.map(|s| s.parse().unwrap()))
        .collect();
        let names = [None, Some("localhost"), Some("a.example.com"), Some("example.com"), Some("LocalHost")];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Miri (scripts/miri) runs this about 500 times slower.
        for _ in 0..if cfg!(miri) { 60 } else { 3000 } {
            let n = rng.next() % 4;
            let rules = Rules {
                rules: (0..n)
                    .map(|_| Rule {
                        name: None,
                        action: rng.pick(&[Action::Allow, Action::Deny]),
                        from: rng.some(&froms),
                        to: rng.some(&tos),
                        ports: rng.some(&ports),
                        commands: rng.some(&[Command::Connect, Command::Bind, Command::UdpAssociate]),
                        users: rng.some(&users),
                        ident: IdentMode::Off,
                        auth: rng.pick(&[AuthMode::Any, AuthMode::Password]),
                    })
                    .collect(),
            };
            for _ in 0..10 {
                let query = Query {
                    client: rng.pick(&clients),
                    command: rng.pick(&[Command::Connect, Command::Bind, Command::UdpAssociate]),
                    port: rng.pick(&[0, 21, 80, 443, 1080, 65535]),
                    name: rng.pick(&names),
                    ip: rng.pick(&ips),
                    user: rng.pick(&[&b"fred"[..], b"", b"bob"]),
                    authenticated: rng.pick(&[false, true]),
                };
                let d = evaluate(&rules, &query);
                assert_eq!((d.action, d.rule), reference(&rules, &query), "{rules:?} {query:?}");
                // The pre-resolution shortcut never refuses what evaluate would allow.
                if d.action == Action::Allow {
                    assert!(may_allow(&rules, &query), "{rules:?} {query:?}");
                    // Nor does the UDP association's: some allow rule with this IDENT mode.
                    assert!(udp_ident_modes(&rules, &query).any(|m| m == d.ident), "{rules:?} {query:?}");
                }
            }
        }
    }
}
