//! The per-connection decision: which route a destination takes (direct, blocked, or through the
//! upstreams of a route), and for a name lookup whether the name must travel as a remote-DNS
//! placeholder.
//!
//! Order: the `direct` networks and the shim's own upstreams (never sent to themselves) first,
//! then the `[[route]]` entries in order (first match wins), then `server`. A destination that is
//! a remote-DNS placeholder is matched by its name only (its address means nothing). Deciding is
//! allocation-free: it runs for every connect.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Dest, Via};

/// Which route: the default (`server`) or a `[[route]]` by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteId {
    Default,
    Rule(u16),
}

/// What carried a connection: its route, and which entry of a failover list answered (0 for a
/// chain). A BIND for the connection goes exactly there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Carrier {
    pub route: RouteId,
    pub pick: u16,
}

/// A proxied connection as a BIND for it needs it: the destination (canonical; a remote-DNS
/// placeholder stands for its name) and what carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conn {
    pub dest: SocketAddr,
    pub carrier: Carrier,
}

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.dest.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A direct network, one of the upstreams themselves, or a route to "direct": the real connect.
    Direct,
    /// A route to "block": refused (EACCES).
    Block(RouteId),
    /// Through this route's upstreams.
    Proxy(RouteId),
    /// The configuration is broken: fail closed (EACCES).
    Broken,
}

impl Config {
    /// Where route `id` sends its destinations.
    pub fn via(&self, id: RouteId) -> &Via {
        match id {
            RouteId::Default => &self.default,
            RouteId::Rule(i) => self.routes.get(usize::from(i)).map_or(&Via::Block, |r| &r.via),
        }
    }

    /// The hops (upstream indexes) a connection carried by `carrier` went through.
    pub fn hops(&self, carrier: Carrier) -> &[usize] {
        let pick = usize::from(carrier.pick);
        match self.via(carrier.route) {
            Via::Failover(list) => list.get(pick..=pick).unwrap_or(&[]),
            Via::Chain(hops) => hops,
            Via::Direct | Via::Block => &[],
        }
    }

    /// `route 2 (line 14)` or `server`, for messages.
    pub fn route_name(&self, id: RouteId) -> RouteName<'_> {
        RouteName(self, id)
    }
}

/// A route as named in messages.
pub struct RouteName<'a>(&'a Config, RouteId);

impl std::fmt::Display for RouteName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            RouteId::Default => f.write_str("the default route (server)"),
            RouteId::Rule(i) => match self.0.routes.get(usize::from(i)).and_then(|r| r.line) {
                Some(line) => write!(f, "route {} (line {line})", i + 1),
                None => write!(f, "route {}", i + 1),
            },
        }
    }
}

/// Whether `dest` is a direct network or one of the shim's own first hops (a program that speaks
/// SOCKS itself): always the real connect.
pub fn always_direct(config: &Config, dest: &SocketAddr) -> bool {
    if config.is_direct(dest.ip()) {
        return true;
    }
    let ip = dest.ip().to_canonical();
    config.first_hops.iter().any(|h| h.port() == dest.port() && h.ip().to_canonical() == ip)
}

/// Decides where a TCP connection to `dest` goes. `name`: the name behind a remote-DNS
/// placeholder, which the routes then match instead of the address.
pub fn route(config: &Config, dest: &SocketAddr, name: Option<&str>) -> Route {
    if always_direct(config, dest) {
        return Route::Direct;
    }
    if config.broken {
        return Route::Broken;
    }
    let ip: IpAddr = dest.ip().to_canonical();
    for (i, rule) in config.routes.iter().enumerate() {
        let hit = match name {
            Some(n) => rule.to.iter().any(|d| d.matches_name(n)),
            None => rule.to.iter().any(|d| d.matches_ip(ip)),
        };
        if hit && rule.matches_port(dest.port()) {
            return by_via(&rule.via, RouteId::Rule(i as u16));
        }
    }
    by_via(&config.default, RouteId::Default)
}

fn by_via(via: &Via, id: RouteId) -> Route {
    match via {
        Via::Direct => Route::Direct,
        Via::Block => Route::Block(id),
        Via::Failover(_) | Via::Chain(_) => Route::Proxy(id),
    }
}

/// Whether a lookup of `name` (one the local resolver does not keep: see `ops::dns`) is answered
/// with a placeholder. The port is not known yet, so every route the name could take counts: the
/// name travels as a placeholder if one of them routes by that name (the connect must see the
/// name to pick it) or sends names to its server. A placeholder whose route turns out to resolve
/// locally is resolved at connect time.
pub fn wants_placeholder(config: &Config, name: &str) -> bool {
    if config.broken {
        return false;
    }
    for rule in &config.routes {
        let by_name = rule.to.iter().any(|d| matches!(d, Dest::Host(_) | Dest::Suffix(_)) && d.matches_name(name));
        let any = rule.to.contains(&Dest::Any);
        if !by_name && !any {
            continue;
        }
        if by_name || config.sends_names(&rule.via) {
            return true;
        }
        if rule.ports.is_empty() {
            // Every connect to this name ends here.
            return false;
        }
    }
    config.sends_names(&config.default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Partial, merge, parse_env, parse_file};

    fn config(direct: Option<&str>) -> Config {
        let mut pairs = vec![("SOCKS4_SERVER", "127.0.0.1:1080")];
        if let Some(d) = direct {
            pairs.push(("SOCKS4_DIRECT", d));
        }
        let (env, err) = parse_env(|k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string()));
        assert_eq!(err, None);
        merge(Partial::default(), env, || None).unwrap()
    }

    fn file(text: &str) -> Config {
        merge(parse_file("f", text).unwrap(), Partial::default(), || None).unwrap()
    }

    fn r(c: &Config, s: &str) -> Route {
        route(c, &s.parse().unwrap(), None)
    }

    const D: Route = Route::Proxy(RouteId::Default);

    #[test]
    fn loopback_is_direct_by_default() {
        let c = config(None);
        assert_eq!(r(&c, "127.0.0.1:80"), Route::Direct);
        assert_eq!(r(&c, "[::1]:80"), Route::Direct);
        assert_eq!(r(&c, "[::ffff:127.0.0.1]:80"), Route::Direct);
        assert_eq!(r(&c, "10.0.0.5:21"), D);
    }

    #[test]
    fn empty_direct_list_proxies_loopback_but_not_the_proxy() {
        let c = config(Some(""));
        assert_eq!(r(&c, "127.0.0.2:80"), D);
        assert_eq!(r(&c, "127.0.0.1:1080"), Route::Direct);
        assert_eq!(r(&c, "[::ffff:127.0.0.1]:1080"), Route::Direct);
    }

    #[test]
    fn every_first_hop_is_direct_but_not_a_later_hop() {
        let c = file(
            "direct = []\nserver = \"socks5://10.0.0.1:1080, 10.0.0.2:1081\"\n\
             [[route]]\nto = [\"10.9.0.0/16\"]\nchain = [\"socks5h://10.0.0.3:1080\", \"socks5://10.0.0.4:1080\"]\n",
        );
        for direct in ["10.0.0.1:1080", "10.0.0.2:1081", "10.0.0.3:1080"] {
            assert_eq!(r(&c, direct), Route::Direct, "{direct}");
        }
        assert_eq!(r(&c, "10.0.0.4:1080"), D);
        assert_eq!(r(&c, "10.0.0.1:1081"), D);
    }

    #[test]
    fn direct_networks_match_by_prefix_and_ipv6_is_routed_too() {
        let c = config(Some("10.0.0.0/8"));
        assert_eq!(r(&c, "10.200.0.1:80"), Route::Direct);
        assert_eq!(r(&c, "11.0.0.1:80"), D);
        assert_eq!(r(&c, "[2001:db8::1]:80"), D);
        assert_eq!(r(&config(Some("2001:db8::/32")), "[2001:db8::1]:80"), Route::Direct);
    }

    #[test]
    fn broken_config_blocks_all_but_direct() {
        let mut c = config(None);
        c.broken = true;
        assert_eq!(r(&c, "10.0.0.5:21"), Route::Broken);
        assert_eq!(r(&c, "127.0.0.1:21"), Route::Direct);
    }

    #[test]
    fn first_matching_route_wins_by_address_port_or_name() {
        let c = file(
            r#"
direct = []
server = "socks5://10.0.0.1:1080"
[[route]]
to = ["10.1.0.0/16"]
ports = ["20-21"]
via = "block"
[[route]]
to = ["10.1.0.0/16", "*.corp.example"]
via = "socks4://10.0.0.2:1080"
[[route]]
to = ["192.168.0.0/16", "2001:db8::/32", "printer.lan"]
via = "direct"
"#,
        );
        assert_eq!(r(&c, "10.1.2.3:21"), Route::Block(RouteId::Rule(0)));
        assert_eq!(r(&c, "10.1.2.3:22"), Route::Proxy(RouteId::Rule(1)));
        assert_eq!(r(&c, "[::ffff:10.1.2.3]:22"), Route::Proxy(RouteId::Rule(1)));
        assert_eq!(r(&c, "192.168.1.1:80"), Route::Direct);
        assert_eq!(r(&c, "[2001:db8::5]:80"), Route::Direct);
        assert_eq!(r(&c, "172.16.0.1:80"), D);
        let name = |n: &str, port: u16| route(&c, &SocketAddr::from(([240, 0, 0, 1], port)), Some(n));
        assert_eq!(name("www.corp.example", 80), Route::Proxy(RouteId::Rule(1)));
        assert_eq!(name("printer.lan", 631), Route::Direct);
        // A name never matches a network: its placeholder address means nothing.
        assert_eq!(name("elsewhere.example", 21), D);
        assert_eq!(c.hops(Carrier { route: RouteId::Rule(1), pick: 0 }), [1]);
        assert_eq!(c.route_name(RouteId::Rule(1)).to_string(), "route 2 (line 8)");
    }

    /// The hops a connection went through: the one failover entry that answered, or the whole
    /// chain; none for a direct or blocked route, or a pick that is not there.
    #[test]
    fn hops_of_a_carrier() {
        let c = file(
            r#"
server = "socks5://10.0.0.1:1080, socks5://10.0.0.2:1080"
[[route]]
to = ["10.9.0.0/16"]
chain = ["socks5h://10.0.0.3:1080", "socks5://10.0.0.4:1080"]
[[route]]
to = ["10.8.0.0/16"]
via = "direct"
"#,
        );
        let hops = |route, pick| c.hops(Carrier { route, pick }).to_vec();
        assert_eq!(hops(RouteId::Default, 0), [0]);
        assert_eq!(hops(RouteId::Default, 1), [1]);
        assert_eq!(hops(RouteId::Default, 2), [0usize; 0]);
        assert_eq!(hops(RouteId::Rule(0), 0), [2, 3]);
        assert_eq!(hops(RouteId::Rule(1), 0), [0usize; 0]);
        assert_eq!(hops(RouteId::Rule(7), 0), [0usize; 0], "no such route: blocked");
        assert_eq!(c.route_name(RouteId::Default).to_string(), "the default route (server)");
    }

    #[test]
    fn a_conn_shows_its_destination() {
        let carrier = Carrier { route: RouteId::Rule(1), pick: 2 };
        assert_eq!(Conn { dest: "10.0.0.5:21".parse().unwrap(), carrier }.to_string(), "10.0.0.5:21");
        assert_eq!(Conn { dest: "[2001:db8::1]:443".parse().unwrap(), carrier }.to_string(), "[2001:db8::1]:443");
    }

    #[test]
    fn placeholders_for_names_routed_by_name_or_sent_to_the_server() {
        let c = file(
            r#"
server = "socks5://10.0.0.1:1080"
[[route]]
to = ["*.lan"]
via = "direct"
[[route]]
to = ["*"]
ports = [443]
via = "socks5h://10.0.0.2:1080"
[[route]]
to = ["10.0.0.0/8"]
via = "socks4a://10.0.0.3:1080"
"#,
        );
        // Routed by name: the connect must see the name, even to go direct.
        assert!(wants_placeholder(&c, "printer.lan"));
        // `*` on port 443 sends names, and the port is not known at lookup time.
        assert!(wants_placeholder(&c, "www.example"));
        let c = file(
            "server = \"socks5://10.0.0.1:1080\"\n[[route]]\nto = [\"10.0.0.0/8\"]\nvia = \"socks5h://10.0.0.2\"\n",
        );
        assert!(!wants_placeholder(&c, "www.example"), "a network route never sees names; the default resolves here");
        let c = file("server = \"socks5h://10.0.0.1:1080\"\n[[route]]\nto = [\"*\"]\nvia = \"socks5://10.0.0.2\"\n");
        assert!(!wants_placeholder(&c, "www.example"), "`*` catches every connect first and resolves here");
        assert!(wants_placeholder(&file("server = \"socks4a://10.0.0.1:1080\"\n"), "x.example"));
    }
}
