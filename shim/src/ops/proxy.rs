//! Asking a route's upstreams, shared by CONNECT and BIND: the candidates in order (a failover
//! list, or the one chain), the back-off shared by the program tree, the SOCKS exchange, and one
//! stderr line per failure.
//!
//! Failover happens only when the first hop is down: it could not be reached, or (SOCKS5) did not
//! answer the greeting in time. Then no request has reached it, so trying the next upstream cannot
//! make a second connection to the destination. Any answer, a refusal included, is final. A BIND
//! goes to the upstream of its connection whatever the back-off says: that one carries the
//! connection at this very moment.

use std::ffi::c_int;
use std::fmt;
use std::net::SocketAddr;

use super::dns;
use crate::backoff;
use crate::config::{Config, Via};
use crate::log::{debug, error};
use crate::route::{Carrier, RouteId};
use crate::sockaddr::{canonical, to_family};
use crate::socks::{self, Command, ExchangeError, Target};
use crate::sys::{self, Errno};
use crate::upstream::{Protocol, Upstream};

/// One request for a route's upstreams.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub command: Command,
    /// The destination as the program named it, canonical (IPv4-mapped made IPv4): a remote-DNS
    /// placeholder when `name` is set.
    pub dest: SocketAddr,
    /// The name behind a placeholder.
    pub name: Option<&'a str>,
    /// The program's socket is AF_INET6.
    pub v6: bool,
}

impl fmt::Display for Ask<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.command {
            Command::Connect => "connect to",
            Command::Bind => "bind request for",
        };
        match self.name {
            Some(name) => write!(f, "{what} {name}:{}", self.dest.port()),
            None => write!(f, "{what} {}", self.dest),
        }
    }
}

/// A granted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// The reply's address and port, as sent.
    pub reply: socks::Granted,
    /// The upstream(s) that granted it.
    pub carrier: Carrier,
}

/// The hops of a carrier, as written in messages: `socks5://a:1080 > socks4://b:1080`.
pub struct Path<'a>(pub &'a Config, pub &'a [usize]);

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &hop) in self.1.iter().enumerate() {
            if i > 0 {
                f.write_str(" > ")?;
            }
            self.0.upstreams[hop].fmt(f)?;
        }
        Ok(())
    }
}

/// Asks route `route`'s upstreams for `ask` on `fd`, in order, skipping those that are down.
/// `only`: the one failover entry to use (a BIND goes where its connection went).
///
/// # Errors
///
/// The errno of the README's table, after one stderr line (for a native IPv6 destination that no
/// upstream of the route can carry, ENETUNREACH with a debug line only: programs fall back to
/// IPv4).
pub fn ask(fd: c_int, config: &Config, route: RouteId, only: Option<u16>, ask: &Ask<'_>) -> Result<Granted, Errno> {
    let count = match config.via(route) {
        Via::Failover(list) => list.len(),
        Via::Chain(_) => 1,
        Via::Direct | Via::Block => 0,
    };
    let picks = match only {
        Some(p) => usize::from(p)..usize::from(p) + 1,
        None => 0..count,
    };
    let end = picks.end;
    let mut resolved: Option<SocketAddr> = None;
    let mut skipped: Option<(usize, Errno, std::time::Duration)> = None;
    let mut failed: Option<Errno> = None;
    let mut cannot_carry = false;
    for pick in picks {
        let carrier = Carrier { route, pick: pick as u16 };
        let hops = config.hops(carrier);
        let (Some(&first), Some(&last)) = (hops.first(), hops.last()) else { continue };
        let (first_up, last_up) = (&config.upstreams[first], &config.upstreams[last]);
        // A BIND goes where its connection went, which works: the back-off is for new connects.
        if only.is_none()
            && let Some((errno, left)) = backoff::down(first)
        {
            skipped.get_or_insert((first, errno, left));
            continue;
        }
        let target = match ask.name {
            Some(name) if last_up.sends_names => Target::Name(name, ask.dest.port()),
            Some(name) => {
                let addr = match resolved {
                    Some(a) => a,
                    None => *resolved.insert(dns::resolve_here(name, ask.dest.port())?),
                };
                Target::Addr(addr)
            }
            None => Target::Addr(ask.dest),
        };
        if last_up.protocol() == Protocol::Socks4 && matches!(target, Target::Addr(a) if canonical(a).is_ipv6()) {
            cannot_carry = true;
            continue;
        }
        let Some(proxy) = first_up.addr.and_then(|a| to_family(a, ask.v6)) else {
            error!("{ask} via {first_up}: the server is IPv6 but the socket is IPv4");
            failed = Some(libc::EAFNOSUPPORT);
            continue;
        };
        let path = Path(config, hops);
        let refs: Vec<&Upstream> = hops.iter().map(|&h| &config.upstreams[h]).collect();
        match socks::exchange(fd, &proxy, &refs, &config.user, ask.command, &target, config.timeout) {
            Ok(g) => {
                backoff::mark_up(first);
                match g.addr() {
                    Some(a) => debug!("{ask} via {path}: granted, {a}"),
                    None => debug!("{ask} via {path}: granted, a named host, port {}", g.port),
                }
                return Ok(Granted { reply: g, carrier });
            }
            Err(f) => {
                sys::disconnect(fd);
                let at = match hops.get(f.hop) {
                    Some(&h) if hops.len() > 1 => format!(" (at hop {}, {})", f.hop + 1, config.upstreams[h]),
                    _ => String::new(),
                };
                if f.first_hop_down {
                    backoff::mark_down(first, f.error.errno(), config.backoff);
                    let next = if pick + 1 < end { ", trying the next upstream" } else { "" };
                    error!(
                        "{ask} via {path} failed: {}; skipping {first_up} for {}s{next}",
                        f.error,
                        config.backoff.as_secs_f64()
                    );
                    failed = Some(f.error.errno());
                    continue;
                }
                match f.error {
                    ExchangeError::Refused(r) => error!("{ask} via {path} refused{at}: {r}"),
                    e => error!("{ask} via {path} failed{at}: {e}"),
                }
                return Err(f.error.errno());
            }
        }
    }
    if let Some(errno) = failed {
        return Err(errno);
    }
    if let Some((slot, errno, left)) = skipped {
        error!(
            "{ask}: every upstream of {} is down ({} failed: {}; tried again in {:.0}s)",
            config.route_name(route),
            config.upstreams[slot],
            std::io::Error::from_raw_os_error(errno),
            left.as_secs_f64().ceil()
        );
        return Err(errno);
    }
    if cannot_carry {
        debug!(
            "{ask}: IPv6 cannot go through SOCKS4 and {} has no SOCKS5 upstream, ENETUNREACH",
            config.route_name(route)
        );
        return Err(libc::ENETUNREACH);
    }
    error!("{ask}: {} has no upstream", config.route_name(route));
    Err(libc::EACCES)
}
