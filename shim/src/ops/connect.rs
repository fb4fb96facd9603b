//! connect(): a TCP connection to a destination that is not direct becomes a SOCKS4 CONNECT on the
//! program's own socket. Fails closed: never a direct connection instead.
//!
//! [`decide`] and [`through_proxy`] are shared by the hooks (over the registry, here) and the
//! seccomp supervisor (over its own state): one decision and one exchange for both.

use std::ffi::c_int;
use std::net::{SocketAddr, SocketAddrV4};

use socks4_proto::v4::{ReplyCode, Request};

use super::{Verdict, proxy_for};
use crate::config::{self, Config};
use crate::log::{debug, error};
use crate::registry::{self, SocketState};
use crate::route::{Route, route};
use crate::sockaddr::in_family;
use crate::{socks, sys};

/// What a proxied CONNECT established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Established {
    /// The address the destination sees (from the reply), in the socket's family; None when the
    /// reply said 0.0.0.0 (the real local address is reported instead).
    pub local: Option<SocketAddr>,
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
        Verdict::Done(target) => proxied(fd, config, dest, target),
    }
}

/// Where a connect of `fd` to `dest` goes: Pass (direct, or not a TCP socket), Done(the IPv4
/// destination to ask the proxy for), or Fail (blocked, or IPv6 that SOCKS4 cannot carry).
pub fn decide(config: &Config, fd: c_int, dest: &SocketAddr) -> Verdict<SocketAddrV4> {
    match route(config, dest) {
        Route::Direct => {
            debug!("connect to {dest}: direct");
            Verdict::Pass
        }
        // UDP "connections" and other socket types are not ours.
        _ if !sys::is_tcp(fd) => Verdict::Pass,
        Route::Blocked => {
            error!("connect to {dest} refused: the shim's configuration is broken (see the error above)");
            Verdict::Fail(libc::EACCES)
        }
        Route::Unreachable => {
            debug!("connect to {dest}: IPv6 cannot go through SOCKS4, ENETUNREACH");
            Verdict::Fail(libc::ENETUNREACH)
        }
        Route::Proxy(target) => Verdict::Done(target),
    }
}

fn proxied(fd: c_int, config: &Config, dest: SocketAddr, target: SocketAddrV4) -> Verdict<c_int> {
    let registry = registry::global();
    if let Some(SocketState::Connected { .. } | SocketState::Bind(_) | SocketState::Accepted { .. }) = registry.get(fd)
    {
        return Verdict::Fail(libc::EISCONN);
    }
    match through_proxy(fd, config, dest.is_ipv6(), target) {
        Ok(done) => {
            registry.connected(fd, dest, target, done.local);
            Verdict::Done(0)
        }
        Err(e) => Verdict::Fail(e),
    }
}

/// Connects `fd` (a TCP socket, AF_INET6 when `v6`) to `target` through the SOCKS server: the one
/// entry point to the proxy for a CONNECT, used by the hooks and by the supervisor. A remote-DNS
/// placeholder becomes the name it stands for (SOCKS4A). On failure the socket is disconnected
/// again and one stderr line says why.
///
/// # Errors
///
/// The errno of the README's table.
pub fn through_proxy(fd: c_int, config: &Config, v6: bool, target: SocketAddrV4) -> Result<Established, sys::Errno> {
    let Some(proxy) = proxy_for(config, v6) else {
        error!("connect to {target}: SOCKS server {} is IPv6 but the socket is IPv4", config.server);
        return Err(libc::EAFNOSUPPORT);
    };
    let destination = super::dns::destination(config, *target.ip())?;
    let request = Request::connect(destination, target.port(), config.user.clone());
    match socks::exchange(fd, &proxy, &request, config.timeout) {
        Ok(reply) if reply.code == ReplyCode::Granted => {
            let local = (!reply.ip.is_unspecified()).then(|| in_family(reply.addr(), v6));
            debug!("connect to {target} via {}: granted, the destination sees {}", config.server, reply.addr());
            Ok(Established { local })
        }
        Ok(reply) => {
            sys::disconnect(fd);
            error!("connect to {target} via {} refused: {}", config.server, reply.code);
            Err(libc::ECONNREFUSED)
        }
        Err(e) => {
            sys::disconnect(fd);
            error!("connect to {target} via {} failed: {e}", config.server);
            Err(e.errno())
        }
    }
}
