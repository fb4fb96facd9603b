//! bind() and listen(): a listening socket of a process with a proxied connection becomes a SOCKS4
//! BIND request, carried on the program's own descriptor (Dante's approach), so poll/select/epoll on
//! it turn readable exactly when the second reply arrives.
//!
//! The policy ([`plan_bind`], [`plan_listen`]) and the request ([`through_proxy`]) are shared by
//! the hooks (over the registry, here) and the seccomp supervisor (over its own state).

use std::ffi::c_int;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socks4_proto::v4::{ReplyCode, Request};

use super::{Verdict, proxy_for};
use crate::config::{self, Config};
use crate::log::{debug, error};
use crate::registry::{self, BindState, SocketState};
use crate::sockaddr::{in_family, ipv4_of};
use crate::socks;
use crate::sys::{self, Errno};

/// What a bind() becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindPlan {
    /// Not ours: the real bind, forgotten.
    Pass,
    /// The real bind, remembered (port 0 on a TCP socket: a listen() may follow).
    AnyPort,
    /// Recorded, not done: the address is the proxy-side address of the connection to this
    /// destination, which the BIND request will name.
    Fake(SocketAddrV4),
}

/// bind() to the proxy-side address of a proxied connection with port 0 (what inetutils-ftp and
/// tnftp do with their data socket) is recorded, not done: that address is the proxy's, not ours.
/// Any other bind is real; with port 0 it is remembered, since a listen() may follow.
/// `connection_with_local_ip`: the destination of the most recent proxied connection whose
/// proxy-side address is that address.
pub fn plan_bind(
    fd: c_int,
    addr: &SocketAddr,
    connection_with_local_ip: impl FnOnce(Ipv4Addr) -> Option<SocketAddrV4>,
) -> BindPlan {
    if addr.port() != 0 || !sys::is_tcp(fd) {
        return BindPlan::Pass;
    }
    match ipv4_of(addr).filter(|a| !a.ip().is_unspecified()).and_then(|a| connection_with_local_ip(*a.ip())) {
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
            registry.insert(fd, SocketState::FakeBound { addr, conn });
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

/// Whether listen() on `fd` makes a BIND request, and for which destination (and whether the
/// socket is AF_INET6). `bound_any_port`: the address of a real bind with port 0, if one was
/// recorded; `latest`: the destination of the process's most recent proxied connection.
/// Sockets on a fixed port are real servers (unless `bind.proxy_fixed_ports`), and so are sockets
/// bound to an address in a direct network.
pub fn plan_listen(
    config: &Config,
    fd: c_int,
    bound_any_port: Option<SocketAddr>,
    latest: Option<SocketAddrV4>,
) -> Option<(SocketAddrV4, bool)> {
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
        Some(SocketState::FakeBound { addr, conn }) => (conn, addr.is_ipv6()),
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
pub fn request_bind(fd: c_int, config: &Config, conn: SocketAddrV4, v6: bool) -> Result<SocketAddr, Errno> {
    let local = through_proxy(fd, config, conn, v6)?;
    registry::global().insert(
        fd,
        SocketState::Bind(BindState { conn, local, second: socks::ReplyProgress::default(), accepted: None, v6 }),
    );
    Ok(local)
}

/// Sends a BIND request naming `conn` on `fd` (AF_INET6 when `v6`) and reads the first reply: the
/// one entry point to the proxy for a BIND, used by the hooks and by the supervisor. Returns the
/// address the SOCKS server listens on (0.0.0.0 replaced by the server's), in the socket's family.
/// On failure the socket is disconnected again and one stderr line says why.
///
/// # Errors
///
/// The errno of the README's table.
pub fn through_proxy(fd: c_int, config: &Config, conn: SocketAddrV4, v6: bool) -> Result<SocketAddr, Errno> {
    if config.broken {
        error!("bind request for {conn} refused: the shim's configuration is broken (see the error above)");
        return Err(libc::EACCES);
    }
    let Some(proxy) = proxy_for(config, v6) else {
        error!("bind request for {conn}: SOCKS server {} is IPv6 but the socket is IPv4", config.server);
        return Err(libc::EAFNOSUPPORT);
    };
    // A connection made to a remote-DNS placeholder: SOCKS4A BIND with the name (socks4d's CONNECT
    // reply does not say which address the name had, so the server resolves it again).
    let request = Request::bind(super::dns::destination(config, *conn.ip())?, conn.port(), config.user.clone());
    match socks::exchange(fd, &proxy, &request, config.timeout) {
        Ok(reply) if reply.code == ReplyCode::Granted => {
            // The spec: 0.0.0.0 means "the SOCKS server's own address".
            let ip = match reply.ip.is_unspecified() {
                true => ipv4_of(&config.server).map_or(reply.ip, |a| *a.ip()),
                false => reply.ip,
            };
            let local = in_family(SocketAddrV4::new(ip, reply.port), v6);
            debug!("bind request for {conn} via {}: granted, listening at {local}", config.server);
            Ok(local)
        }
        Ok(reply) => {
            sys::disconnect(fd);
            error!("bind request for {conn} via {} refused: {}", config.server, reply.code);
            Err(libc::ECONNREFUSED)
        }
        Err(e) => {
            sys::disconnect(fd);
            error!("bind request for {conn} via {} failed: {e}", config.server);
            Err(e.errno())
        }
    }
}
