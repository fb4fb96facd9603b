//! bind() and listen(): a listening socket of a process with a proxied connection becomes a SOCKS
//! BIND request, carried on the program's own descriptor (Dante's approach), so poll/select/epoll on
//! it turn readable exactly when the second reply arrives.
//!
//! The BIND goes to the upstream that carries the connection it belongs to (the last hop of a
//! chain), so the address in the first reply, which the program sends in PORT, is the one the FTP
//! server already sees as its peer.
//!
//! The policy ([`plan_bind`], [`plan_listen`]) and the request ([`through_proxy`]) are shared by
//! the hooks (over the registry, here) and the seccomp supervisor (over its own state).

use std::ffi::c_int;
use std::net::{IpAddr, SocketAddr};

use super::Verdict;
use super::accept::Taken;
use super::proxy::{self, Ask, Path};
use crate::config::{self, Config};
use crate::dns_pool;
use crate::log::{debug, error};
use crate::registry::{self, BindState, SocketState};
use crate::route::Conn;
use crate::sockaddr::{canonical, to_family};
use crate::socks::{self, Command};
use crate::sys::{self, Errno};

/// What a bind() becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindPlan {
    /// Not ours: the real bind, forgotten.
    Pass,
    /// The real bind, remembered (port 0 on a TCP socket: a listen() may follow).
    AnyPort,
    /// Recorded, not done: the address is the proxy-side address of this connection, which the
    /// BIND request will name.
    Fake(Conn),
}

/// bind() to the proxy-side address of a proxied connection with port 0 (what inetutils-ftp and
/// tnftp do with their data socket) is recorded, not done: that address is the proxy's, not ours.
/// Any other bind is real; with port 0 it is remembered, since a listen() may follow.
/// `connection_with_local_ip`: the most recent proxied connection whose proxy-side address is that
/// address.
pub fn plan_bind(
    fd: c_int,
    addr: &SocketAddr,
    connection_with_local_ip: impl FnOnce(IpAddr) -> Option<Conn>,
) -> BindPlan {
    if addr.port() != 0 || !sys::is_tcp(fd) {
        return BindPlan::Pass;
    }
    let ip = canonical(*addr).ip();
    match (!ip.is_unspecified()).then(|| connection_with_local_ip(ip)).flatten() {
        Some(conn) => {
            debug!("bind to {addr}: proxy-side address of the connection to {conn}; a BIND request follows");
            BindPlan::Fake(conn)
        }
        None => BindPlan::AnyPort,
    }
}

pub fn bind(fd: c_int, addr: SocketAddr) -> Verdict<c_int> {
    let registry = registry::global();
    match plan_bind(fd, &addr, |ip| registry.connection_with_local_ip(ip)) {
        BindPlan::Pass => Verdict::Pass,
        BindPlan::Fake(conn) => {
            registry.insert(fd, SocketState::FakeBound { addr, primary: conn });
            Verdict::Done(0)
        }
        BindPlan::AnyPort => match sys::bind(fd, &addr) {
            Ok(()) => {
                registry.insert(fd, SocketState::BoundAnyPort { addr });
                Verdict::Done(0)
            }
            Err(e) => Verdict::Fail(e),
        },
    }
}

/// Whether listen() on `fd` makes a BIND request, and for which connection (and whether the
/// socket is AF_INET6). `bound_any_port`: the address of a real bind with port 0, if one was
/// recorded; `latest`: the process's most recent proxied connection.
/// Sockets on a fixed port are real servers (unless `bind.proxy_fixed_ports`), and so are sockets
/// bound to an address in a direct network.
pub fn plan_listen(
    config: &Config,
    fd: c_int,
    bound_any_port: Option<SocketAddr>,
    latest: Option<Conn>,
) -> Option<(Conn, bool)> {
    let conn = latest?;
    let addr = match bound_any_port {
        Some(addr) => addr,
        None => {
            if !sys::is_tcp(fd) {
                return None;
            }
            let addr = sys::local_addr(fd).ok()?;
            // Port 0 here means never bound (lftp listens on an unbound socket).
            if addr.port() != 0 && !config.proxy_fixed_ports {
                debug!("listen on {addr}: a local server (fixed port)");
                return None;
            }
            addr
        }
    };
    if stays_local(config, &addr) {
        debug!("listen on {addr}: a local server (a direct network)");
        return None;
    }
    Some((conn, addr.is_ipv6()))
}

pub fn listen(fd: c_int) -> Verdict<c_int> {
    let registry = registry::global();
    let config = config::get();
    let (conn, v6) = match registry.get(fd) {
        // The BIND was already made by getsockname.
        Some(SocketState::Bind(_)) => return Verdict::Done(0),
        Some(SocketState::FakeBound { addr, primary: conn }) => (conn, addr.is_ipv6()),
        Some(SocketState::BoundAnyPort { addr }) => {
            match plan_listen(config, fd, Some(addr), registry.latest_connection()) {
                Some(plan) => plan,
                None => return Verdict::Pass,
            }
        }
        Some(_) => return Verdict::Pass,
        None => match plan_listen(config, fd, None, registry.latest_connection()) {
            Some(plan) => plan,
            None => return Verdict::Pass,
        },
    };
    match request_bind(fd, config, conn, v6) {
        Ok(_) => Verdict::Done(0),
        Err(e) => Verdict::Fail(e),
    }
}

/// A socket bound to a specific address in a direct network serves local clients.
fn stays_local(config: &Config, addr: &SocketAddr) -> bool {
    !addr.ip().is_unspecified() && config.is_direct(addr.ip())
}

/// Makes the BIND request on `fd` and records the socket as a BIND socket. Returns the address the
/// SOCKS server listens on, which getsockname reports from now on.
pub fn request_bind(fd: c_int, config: &Config, conn: Conn, v6: bool) -> Result<SocketAddr, Errno> {
    let local = through_proxy(fd, config, conn, v6)?;
    registry::global().insert(
        fd,
        SocketState::Bind(Box::new(BindState {
            primary: conn,
            local,
            second: socks::ReplyProgress::default(),
            taken: Taken::No,
            v6,
        })),
    );
    Ok(local)
}

/// Sends a BIND request for connection `conn` on `fd` (AF_INET6 when `v6`) to the upstream that
/// carries `conn`, and reads the first reply: the one entry point to the proxy for a BIND, used by
/// the hooks and by the supervisor. Returns the address the SOCKS server listens on (0.0.0.0
/// replaced by the server's own), in the socket's family. On failure the socket is disconnected
/// again and one stderr line says why.
///
/// # Errors
///
/// The errno of the README's table.
pub fn through_proxy(fd: c_int, config: &Config, conn: Conn, v6: bool) -> Result<SocketAddr, Errno> {
    if config.broken {
        error!("bind request for {conn} refused: the shim's configuration is broken (see the error above)");
        return Err(libc::EACCES);
    }
    // A connection made to a remote-DNS placeholder: the BIND names it by name too (socks4d's
    // CONNECT reply does not say which address the name had, so the server resolves it again).
    let name = match conn.dest.ip() {
        IpAddr::V4(ip) if dns_pool::is_placeholder(ip) => Some(super::dns::name_of_placeholder(config, ip)?),
        _ => None,
    };
    let ask = Ask { command: Command::Bind, dest: conn.dest, name: name.as_deref(), v6 };
    let granted = proxy::ask(fd, config, conn.carrier.route, Some(conn.carrier.pick), &ask)?;
    let hops = config.hops(conn.carrier);
    let last = hops.last().map(|&h| &config.upstreams[h]);
    // The spec: 0.0.0.0 means "the SOCKS server's own address"; here, the last hop's.
    let ip = match granted.reply.ip {
        Some(ip) if !ip.is_unspecified() => Some(ip),
        _ => last.and_then(|u| u.addr).map(|a| a.ip()),
    };
    let path = Path(config, hops);
    let Some(ip) = ip else {
        sys::disconnect(fd);
        error!("{ask} via {path}: granted, but the server did not say where it listens (EPROTO)");
        return Err(libc::EPROTO);
    };
    let Some(local) = to_family(SocketAddr::new(ip, granted.reply.port), v6) else {
        sys::disconnect(fd);
        error!("{ask} via {path}: the server listens at {ip}, which an IPv4 socket cannot report (EAFNOSUPPORT)");
        return Err(libc::EAFNOSUPPORT);
    };
    debug!("{ask} via {path}: listening at {local}");
    Ok(local)
}
