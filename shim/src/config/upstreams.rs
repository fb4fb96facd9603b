//! Turns the upstream URLs of `server` and the routes into the table the shim uses: each URL once
//! (its index is its slot in the shared back-off table), resolved where the shim itself must
//! reach it, given its password, and every chain checked hop by hop.
//!
//! A name is resolved here only when this host has to know its address: a first hop (the shim
//! connects to it), a bare `host:port` (its loopback-ness decides remote DNS), and a chain hop
//! whose previous hop resolves names locally. A hop behind a `socks4a://` or `socks5h://` hop is
//! sent by name and never looked up here, so chains into networks whose names only the far side
//! knows (and must not leak) work.

use std::net::{SocketAddr, ToSocketAddrs};

use super::{ConfigError, MAX_UPSTREAMS, Origin, RouteRule, RouteSpec, Via, ViaSpec};
use crate::upstream::{Protocol, Secret, Upstream, Url};

pub(super) struct Built {
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<RouteRule>,
    pub default: Via,
    pub first_hops: Vec<SocketAddr>,
}

struct Entry {
    url: Url,
    /// Where it was first written.
    at: Origin,
    first_hop: bool,
    addr: Option<SocketAddr>,
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
}

impl Table {
    fn intern(&mut self, url: &Url, at: &Origin, first_hop: bool) -> Result<usize, ConfigError> {
        let i = match self.entries.iter().position(|e| e.url == *url) {
            Some(i) => i,
            None => {
                if self.entries.len() == MAX_UPSTREAMS {
                    return Err(at.error(format!("more than {MAX_UPSTREAMS} different upstreams")));
                }
                let addr = url.ip().map(|ip| SocketAddr::new(ip, url.port));
                self.entries.push(Entry { url: url.clone(), at: at.clone(), first_hop: false, addr });
                self.entries.len() - 1
            }
        };
        self.entries[i].first_hop |= first_hop;
        Ok(i)
    }

    fn via(&mut self, spec: &ViaSpec, at: &Origin) -> Result<Via, ConfigError> {
        Ok(match spec {
            ViaSpec::Direct => Via::Direct,
            ViaSpec::Block => Via::Block,
            ViaSpec::Failover(urls) => {
                Via::Failover(urls.iter().map(|u| self.intern(u, at, true)).collect::<Result<_, _>>()?)
            }
            ViaSpec::Chain(urls) => {
                Via::Chain(urls.iter().enumerate().map(|(i, u)| self.intern(u, at, i == 0)).collect::<Result<_, _>>()?)
            }
        })
    }

    /// Resolves entry `i` if it has no address yet.
    fn resolve(&mut self, i: usize, why: &str) -> Result<SocketAddr, ConfigError> {
        let e = &mut self.entries[i];
        if let Some(addr) = e.addr {
            return Ok(addr);
        }
        let addrs: Vec<SocketAddr> = (e.url.host.as_str(), e.url.port)
            .to_socket_addrs()
            .map_err(|err| e.at.error(format!("{} does not resolve ({err}); {why}", e.url)))?
            .collect();
        // Most programs' sockets are AF_INET, which reach an IPv4 server only.
        let addr = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).copied();
        let addr = addr.ok_or_else(|| e.at.error(format!("{} resolves to no address; {why}", e.url)))?;
        e.addr = Some(addr);
        Ok(addr)
    }
}

/// Whether entry `e` gets names: its scheme says, or for a bare `host:port` the `remote_dns`
/// setting, which by default is on unless the server is on loopback (then it sits on this side
/// of any firewall and local DNS is as good as its).
fn sends_names(e: &Entry, remote_dns: Option<bool>) -> bool {
    e.url.remote_dns.unwrap_or_else(|| remote_dns.unwrap_or_else(|| !e.addr.is_some_and(|a| a.ip().is_loopback())))
}

pub(super) fn build(
    server: &(ViaSpec, Origin),
    routes: &[RouteSpec],
    remote_dns: Option<bool>,
    password: Option<Secret>,
    password_file: Option<(String, Origin)>,
) -> Result<Built, ConfigError> {
    let mut table = Table::default();
    let default = table.via(&server.0, &server.1)?;
    let mut rules = Vec::new();
    for r in routes {
        let via = table.via(&r.via, &r.at)?;
        rules.push(RouteRule { to: r.to.clone(), ports: r.ports.clone(), via, line: r.at.line });
    }

    for i in 0..table.entries.len() {
        let e = &table.entries[i];
        if e.first_hop {
            table.resolve(i, "the shim connects to it")?;
        } else if e.url.is_bare() {
            table.resolve(i, "a bare host:port server must resolve (remote_dns depends on it)")?;
        }
    }

    let chains = std::iter::once(&default).chain(rules.iter().map(|r| &r.via));
    for via in chains {
        let Via::Chain(hops) = via else { continue };
        for pair in hops.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            let prev_names = sends_names(&table.entries[prev], remote_dns);
            let next_is_name = table.entries[next].url.ip().is_none();
            if prev_names && next_is_name {
                // Sent by name; the previous hop resolves it.
                continue;
            }
            let why = format!(
                "{} resolves names here (use socks4a:// or socks5h:// to send it the name)",
                table.entries[prev].url
            );
            let addr = table.resolve(next, &why)?;
            let prev_entry = &table.entries[prev];
            if addr.is_ipv6() && prev_entry.url.protocol == Protocol::Socks4 {
                return Err(prev_entry.at.error(format!(
                    "chain: {} speaks SOCKS4, which cannot reach {} at the IPv6 address {addr}",
                    prev_entry.url, table.entries[next].url
                )));
            }
        }
    }

    let mut file_password: Option<Secret> = None;
    for e in &mut table.entries {
        if e.url.protocol != Protocol::Socks5 || e.url.user.is_none() || e.url.password.is_some() {
            continue;
        }
        let secret = match (&password, &password_file) {
            (Some(p), _) => p.clone(),
            (None, Some((path, at))) => match &file_password {
                Some(p) => p.clone(),
                None => {
                    let p = read_password(path).map_err(|m| at.error(m))?;
                    file_password = Some(p.clone());
                    p
                }
            },
            (None, None) => {
                return Err(e.at.error(format!(
                    "{} names a user but no password: write it in the URL (in the config file), or set \
                     SOCKS4_PASSWORD, SOCKS4_PASSWORD_FILE or password_file",
                    e.url
                )));
            }
        };
        e.url.password = Some(secret);
    }

    let first_hops = table.entries.iter().filter(|e| e.first_hop).filter_map(|e| e.addr).collect();
    let upstreams = table
        .entries
        .iter()
        .map(|e| Upstream { url: e.url.clone(), addr: e.addr, sends_names: sends_names(e, remote_dns) })
        .collect();
    Ok(Built { upstreams, routes: rules, default, first_hops })
}

/// The first line of a password file.
fn read_password(path: &str) -> Result<Secret, String> {
    let text = super::read_text(path).map_err(|e| format!("cannot read the password file {path}: {e}"))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() || line.len() > 255 {
        return Err(format!("the first line of the password file {path} must be the password (1 to 255 bytes)"));
    }
    Ok(Secret::new(line.as_bytes()))
}
