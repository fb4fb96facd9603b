//! bind() and listen(): a listening socket of a process with a proxied connection becomes a SOCKS4
//! BIND request, carried on the program's own descriptor (Dante's approach), so poll/select/epoll on
//! it turn readable exactly when the second reply arrives.

use std::ffi::c_int;
use std::net::{SocketAddr, SocketAddrV4};

use socks4_proto::v4::{ReplyCode, Request};

use super::{Verdict, proxy_for};
use crate::config::{self, Config};
use crate::log::{debug, error};
use crate::registry::{self, BindState, SocketState};
use crate::sockaddr::{in_family, ipv4_of};
use crate::socks;
use crate::sys::{self, Errno};

/// bind() to the proxy-side address of a proxied connection with port 0 (what inetutils-ftp and
/// tnftp do with their data socket) is recorded, not done: that address is the proxy's, not ours.
/// Any other bind is real; with port 0 it is remembered, since a listen() may follow.
pub fn bind(fd: c_int, addr: SocketAddr) -> Verdict<c_int> {
    if addr.port() != 0 {
        return Verdict::Pass;
    }
    if !sys::is_tcp(fd) {
        return Verdict::Pass;
    }
    let registry = registry::global();
    let conn =
        ipv4_of(&addr).filter(|a| !a.ip().is_unspecified()).and_then(|a| registry.connection_with_local_ip(*a.ip()));
    if let Some(conn) = conn {
        registry.insert(fd, SocketState::FakeBound { addr, conn });
        debug!("bind to {addr}: proxy-side address of the connection to {conn}; a BIND request follows");
        return Verdict::Done(0);
    }
    match sys::bind(fd, &addr) {
        Ok(()) => {
            registry.insert(fd, SocketState::BoundAnyPort { addr });
            Verdict::Done(0)
        }
        Err(e) => Verdict::Fail(e),
    }
}

/// listen() on a socket that is unbound or bound to port 0, in a process with a proxied connection,
/// makes a BIND request. Sockets on a fixed port are real servers (unless `bind.proxy_fixed_ports`),
/// and so are sockets bound to an address in a direct network.
pub fn listen(fd: c_int) -> Verdict<c_int> {
    let registry = registry::global();
    let config = config::get();
    let (conn, v6) = match registry.get(fd) {
        // The BIND was already made by getsockname.
        Some(SocketState::Bind(_)) => return Verdict::Done(0),
        Some(SocketState::FakeBound { addr, conn }) => (conn, addr.is_ipv6()),
        Some(SocketState::BoundAnyPort { addr }) => match registry.latest_connection() {
            Some(conn) if !stays_local(config, &addr) => (conn, addr.is_ipv6()),
            _ => {
                debug!("listen on {addr}: a local server (no proxied connection, or a direct network)");
                return Verdict::Pass;
            }
        },
        Some(_) => return Verdict::Pass,
        None => {
            let Some(conn) = registry.latest_connection() else { return Verdict::Pass };
            if !sys::is_tcp(fd) {
                return Verdict::Pass;
            }
            let Ok(addr) = sys::local_addr(fd) else { return Verdict::Pass };
            // Port 0 here means never bound (lftp listens on an unbound socket).
            if (addr.port() != 0 && !config.proxy_fixed_ports) || stays_local(config, &addr) {
                debug!("listen on {addr}: a local server (fixed port or a direct network)");
                return Verdict::Pass;
            }
            (conn, addr.is_ipv6())
        }
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

/// Sends a BIND request naming `conn` on `fd` and reads the first reply. Returns the address the
/// SOCKS server listens on, which getsockname reports from now on.
pub fn request_bind(fd: c_int, config: &Config, conn: SocketAddrV4, v6: bool) -> Result<SocketAddr, Errno> {
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
            registry::global().insert(
                fd,
                SocketState::Bind(BindState { conn, local, second_reply: [0; 8], received: 0, accepted: None, v6 }),
            );
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
