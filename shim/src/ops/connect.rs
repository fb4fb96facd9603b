//! connect(): a TCP connection to a destination that is not direct becomes a SOCKS CONNECT on the
//! program's own socket, through the upstreams of its route. Fails closed: never a direct
//! connection instead.
//!
//! [`decide`] and [`through_proxy`] are shared by the hooks (over the registry, here) and the
//! seccomp supervisor (over its own state): one decision and one exchange for both.

use std::ffi::c_int;
use std::net::{IpAddr, SocketAddr};

use super::Verdict;
use super::proxy::{self, Ask};
use crate::config::{self, Config};
use crate::dns_pool;
use crate::log::{debug, error};
use crate::registry::{self, SocketState};
use crate::route::{Conn, Route, RouteId, route};
use crate::sockaddr::{canonical, to_family};
use crate::socks::Command;
use crate::sys;

/// What a proxied CONNECT established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    /// The address the destination sees (from the reply), in the socket's family; None when the
    /// reply said 0.0.0.0 (or named a host): the real local address is reported instead.
    pub local: Option<SocketAddr>,
    /// The destination and the upstream(s) that carried it: where a BIND for it goes.
    pub conn: Conn,
    /// The address getsockname shows for the connection (canonical): the reply's, or, when the
    /// reply said 0.0.0.0 (`ssh -D` does), the real local one unless it is in a direct network.
    /// A bind() to it with port 0 is an FTP client's data socket: a BIND for this connection.
    pub side_ip: Option<IpAddr>,
}

/// Where a connect that is not plainly direct goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Through the upstreams of `route`, to `dest` (canonical; a placeholder when `name` is set).
    Proxy { dest: SocketAddr, name: Option<String>, route: RouteId },
    /// A placeholder whose route goes direct: its name is resolved here and connected to.
    DirectName { name: String, port: u16 },
}

pub fn connect(fd: c_int, dest: SocketAddr) -> Verdict<c_int> {
    let config = config::get();
    match decide(config, fd, &dest) {
        Verdict::Pass => {
            // A socket bound before a direct connect is a client, not a listener to be.
            if let Some(SocketState::BoundAnyPort { .. } | SocketState::FakeBound { .. }) = registry::global().get(fd) {
                registry::global().remove(fd);
            }
            Verdict::Pass
        }
        Verdict::Fail(e) => Verdict::Fail(e),
        Verdict::Done(Plan::DirectName { name, port }) => match direct_to_name(fd, &name, port, dest.is_ipv6()) {
            Ok(()) => Verdict::Done(0),
            Err(e) => Verdict::Fail(e),
        },
        Verdict::Done(plan) => proxied(fd, config, dest, &plan),
    }
}

/// Where a connect of `fd` to `dest` goes: Pass (direct, or not a TCP socket), Done(the plan), or
/// Fail (blocked, a broken configuration, a placeholder that stands for no name). Allocation-free
/// when the answer is a direct connect.
pub fn decide(config: &Config, fd: c_int, dest: &SocketAddr) -> Verdict<Plan> {
    let placeholder = match canonical(*dest).ip() {
        IpAddr::V4(ip) if dns_pool::is_placeholder(ip) => Some(ip),
        _ => None,
    };
    let by_address = match placeholder {
        None => route(config, dest, None),
        Some(_) if crate::route::always_direct(config, dest) => Route::Direct,
        Some(_) => Route::Broken,
    };
    if by_address == Route::Direct {
        debug!("connect to {dest}: direct");
        return Verdict::Pass;
    }
    // UDP "connections" and other socket types are not ours.
    if !sys::is_tcp(fd) {
        return Verdict::Pass;
    }
    if config.broken {
        error!("connect to {dest} refused: the shim's configuration is broken (see the error above)");
        return Verdict::Fail(libc::EACCES);
    }
    let name = match placeholder {
        Some(ip) => match super::dns::name_of_placeholder(config, ip) {
            Ok(name) => Some(name),
            Err(e) => return Verdict::Fail(e),
        },
        None => None,
    };
    let decision = match &name {
        Some(n) => route(config, dest, Some(n)),
        None => by_address,
    };
    let shown = Shown(dest, name.as_deref());
    match decision {
        Route::Direct => match name {
            Some(name) => Verdict::Done(Plan::DirectName { name, port: dest.port() }),
            None => {
                debug!("connect to {shown}: direct");
                Verdict::Pass
            }
        },
        Route::Broken => {
            error!("connect to {shown} refused: the shim's configuration is broken (see the error above)");
            Verdict::Fail(libc::EACCES)
        }
        Route::Block(id) => {
            error!("connect to {shown} refused: blocked by {} (EACCES)", config.route_name(id));
            Verdict::Fail(libc::EACCES)
        }
        Route::Proxy(id) => Verdict::Done(Plan::Proxy { dest: canonical(*dest), name, route: id }),
    }
}

/// `10.0.0.5:21`, or `files.internal:21` for a placeholder.
struct Shown<'a>(&'a SocketAddr, Option<&'a str>);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(name) => write!(f, "{name}:{}", self.0.port()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Resolves the name behind a placeholder here and connects `fd` to it directly (its route says
/// "direct"). The connect is the real one: a non-blocking socket gets EINPROGRESS as usual.
///
/// # Errors
///
/// EHOSTUNREACH when the name does not resolve here (one stderr line), or the connect's errno.
pub fn direct_to_name(fd: c_int, name: &str, port: u16, v6: bool) -> Result<(), sys::Errno> {
    let addr = super::dns::resolve_here(name, port)?;
    let Some(addr) = to_family(addr, v6) else {
        error!("connect to {name}:{port}: it resolves to {addr}, which an IPv4 socket cannot reach");
        return Err(libc::ENETUNREACH);
    };
    debug!("connect to {name}:{port}: direct, to {addr}");
    sys::connect(fd, &addr)
}

fn proxied(fd: c_int, config: &Config, dest: SocketAddr, plan: &Plan) -> Verdict<c_int> {
    let registry = registry::global();
    if let Some(SocketState::Connected { .. } | SocketState::Bind(_) | SocketState::Accepted { .. }) = registry.get(fd)
    {
        return Verdict::Fail(libc::EISCONN);
    }
    match through_proxy(fd, config, dest.is_ipv6(), plan) {
        Ok(done) => {
            registry.connected(fd, dest, done.conn, done.local, done.side_ip);
            Verdict::Done(0)
        }
        Err(e) => Verdict::Fail(e),
    }
}

/// Connects `fd` (a TCP socket, AF_INET6 when `v6`) to the destination of `plan` through its
/// route's upstreams: the one entry point to the proxy for a CONNECT, used by the hooks and by the
/// supervisor. A remote-DNS placeholder becomes the name it stands for. On failure the socket is
/// disconnected again and one stderr line says why.
///
/// # Errors
///
/// The errno of the README's table.
pub fn through_proxy(fd: c_int, config: &Config, v6: bool, plan: &Plan) -> Result<Established, sys::Errno> {
    let Plan::Proxy { dest, name, route } = plan else {
        return Err(libc::EINVAL);
    };
    let ask = Ask { command: Command::Connect, dest: *dest, name: name.as_deref(), v6 };
    let granted = proxy::ask(fd, config, *route, None, &ask)?;
    let local = granted.reply.addr().filter(|a| !a.ip().is_unspecified()).and_then(|a| to_family(a, v6));
    let side_ip = match local {
        Some(l) => Some(canonical(l).ip()),
        None => sys::local_addr(fd).ok().map(|a| canonical(a).ip()).filter(|ip| !config.is_direct(*ip)),
    };
    Ok(Established { local, conn: Conn { dest: *dest, carrier: granted.carrier }, side_ip })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::config::{Partial, merge, parse_env};

    /// A SOCKS4A server with remote DNS (placeholders) and `direct` as the direct networks.
    fn config(direct: &[&str]) -> Config {
        let (env, _) = parse_env(|k| (k == "SOCKS4_SERVER").then(|| "socks4a://10.0.0.1:1080".to_string()));
        let mut c = merge(Partial::default(), env, || None).unwrap();
        c.direct = direct.iter().map(|s| s.parse().unwrap()).collect();
        c
    }

    /// decide() only asks the kernel the socket's type: a listening TCP socket will do.
    fn tcp_socket() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    #[test]
    fn addresses_go_through_the_proxy_and_direct_networks_stay_direct() {
        let c = config(&["127.0.0.0/8"]);
        let fd = tcp_socket();
        let dest: SocketAddr = "10.1.2.3:21".parse().unwrap();
        assert_eq!(
            decide(&c, fd.as_raw_fd(), &dest),
            Verdict::Done(Plan::Proxy { dest, name: None, route: RouteId::Default })
        );
        assert_eq!(decide(&c, fd.as_raw_fd(), &"127.0.0.5:21".parse().unwrap()), Verdict::Pass);
    }

    /// A placeholder is proxied with the name it stands for; inside a network the configuration
    /// calls direct it is connected as it is, like any address there (no lookup of its name).
    #[test]
    fn placeholders_carry_their_name_unless_their_network_is_direct() {
        let ip = dns_pool::placeholder_for("decide.example").unwrap();
        let dest = SocketAddr::new(IpAddr::V4(ip), 21);
        let fd = tcp_socket();
        assert_eq!(
            decide(&config(&[]), fd.as_raw_fd(), &dest),
            Verdict::Done(Plan::Proxy { dest, name: Some("decide.example".into()), route: RouteId::Default })
        );
        assert_eq!(decide(&config(&["240.0.0.0/4"]), fd.as_raw_fd(), &dest), Verdict::Pass);
        let never = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(240, 0, 15, 254)), 21);
        assert_eq!(decide(&config(&[]), fd.as_raw_fd(), &never), Verdict::Fail(libc::EHOSTUNREACH));
    }
}
