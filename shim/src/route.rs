//! The per-connection decision: connect directly, through the SOCKS server, or not at all.

use std::net::{SocketAddr, SocketAddrV4};

use crate::config::Config;
use crate::sockaddr::ipv4_of;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A configured direct network (or the SOCKS server itself): the real connect.
    Direct,
    /// Through the SOCKS server, to this IPv4 destination.
    Proxy(SocketAddrV4),
    /// A native IPv6 destination: SOCKS4 cannot carry it (ENETUNREACH).
    Unreachable,
    /// The configuration is broken: fail closed (EACCES).
    Blocked,
}

/// Decides where a TCP connection to `dest` goes. Allocation-free: it runs for every connect.
pub fn route(config: &Config, dest: &SocketAddr) -> Route {
    let v4 = ipv4_of(dest);
    if config.is_direct(dest.ip()) {
        return Route::Direct;
    }
    // Never send the proxy to itself, whatever the direct list says.
    if v4.is_some_and(|a| ipv4_of(&config.server) == Some(a)) || *dest == config.server {
        return Route::Direct;
    }
    if config.broken {
        return Route::Blocked;
    }
    match v4 {
        Some(a) => Route::Proxy(a),
        None => Route::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Partial, merge};

    fn config(direct: Option<&str>) -> Config {
        let env = Partial {
            server: Some("127.0.0.1:1080".parse().unwrap()),
            direct: direct.map(|d| d.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()),
            ..Partial::default()
        };
        merge(Partial::default(), env, || None)
    }

    fn r(c: &Config, s: &str) -> Route {
        route(c, &s.parse().unwrap())
    }

    #[test]
    fn loopback_is_direct_by_default() {
        let c = config(None);
        assert_eq!(r(&c, "127.0.0.1:80"), Route::Direct);
        assert_eq!(r(&c, "[::1]:80"), Route::Direct);
        assert_eq!(r(&c, "[::ffff:127.0.0.1]:80"), Route::Direct);
        assert_eq!(r(&c, "10.0.0.5:21"), Route::Proxy("10.0.0.5:21".parse().unwrap()));
    }

    #[test]
    fn empty_direct_list_proxies_loopback_but_not_the_proxy() {
        let c = config(Some(""));
        assert_eq!(r(&c, "127.0.0.2:80"), Route::Proxy("127.0.0.2:80".parse().unwrap()));
        assert_eq!(r(&c, "127.0.0.1:1080"), Route::Direct);
        assert_eq!(r(&c, "[::ffff:127.0.0.1]:1080"), Route::Direct);
    }

    #[test]
    fn ipv4_mapped_is_proxied_as_ipv4() {
        let c = config(Some(""));
        assert_eq!(r(&c, "[::ffff:10.1.2.3]:21"), Route::Proxy("10.1.2.3:21".parse().unwrap()));
    }

    #[test]
    fn native_ipv6_is_unreachable_unless_direct() {
        assert_eq!(r(&config(Some("")), "[2001:db8::1]:80"), Route::Unreachable);
        assert_eq!(r(&config(Some("2001:db8::/32")), "[2001:db8::1]:80"), Route::Direct);
    }

    #[test]
    fn direct_networks_match_by_prefix() {
        let c = config(Some("10.0.0.0/8"));
        assert_eq!(r(&c, "10.200.0.1:80"), Route::Direct);
        assert_eq!(r(&c, "11.0.0.1:80"), Route::Proxy("11.0.0.1:80".parse().unwrap()));
    }

    #[test]
    fn broken_config_blocks_all_but_direct() {
        let mut c = config(None);
        c.broken = true;
        assert_eq!(r(&c, "10.0.0.5:21"), Route::Blocked);
        assert_eq!(r(&c, "127.0.0.1:21"), Route::Direct);
    }
}
