//! connect(): a TCP connection to a destination that is not direct becomes a SOCKS4 CONNECT on the
//! program's own socket. Fails closed: never a direct connection instead.

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

pub fn connect(fd: c_int, dest: SocketAddr) -> Verdict<c_int> {
    let config = config::get();
    match route(config, &dest) {
        Route::Direct => {
            // A socket bound before a direct connect is a client, not a listener to be.
            if let Some(SocketState::BoundAnyPort { .. } | SocketState::FakeBound { .. }) = registry::global().get(fd) {
                registry::global().remove(fd);
            }
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
        Route::Proxy(target) => proxied(fd, config, dest, target),
    }
}

fn proxied(fd: c_int, config: &Config, dest: SocketAddr, target: SocketAddrV4) -> Verdict<c_int> {
    let registry = registry::global();
    if let Some(SocketState::Connected { .. } | SocketState::Bind(_) | SocketState::Accepted { .. }) = registry.get(fd)
    {
        return Verdict::Fail(libc::EISCONN);
    }
    let v6 = dest.is_ipv6();
    let Some(proxy) = proxy_for(config, v6) else {
        error!("connect to {target}: SOCKS server {} is IPv6 but the socket is IPv4", config.server);
        return Verdict::Fail(libc::EAFNOSUPPORT);
    };
    // A remote-DNS placeholder becomes the name it stands for (SOCKS4A).
    let destination = match super::dns::destination(config, *target.ip()) {
        Ok(d) => d,
        Err(e) => return Verdict::Fail(e),
    };
    let request = Request::connect(destination, target.port(), config.user.clone());
    match socks::exchange(fd, &proxy, &request, config.timeout) {
        Ok(reply) if reply.code == ReplyCode::Granted => {
            let local = (!reply.ip.is_unspecified()).then(|| in_family(reply.addr(), v6));
            registry.connected(fd, dest, target, local);
            debug!("connect to {target} via {}: granted, the destination sees {}", config.server, reply.addr());
            Verdict::Done(0)
        }
        Ok(reply) => {
            sys::disconnect(fd);
            error!("connect to {target} via {} refused: {}", config.server, reply.code);
            Verdict::Fail(libc::ECONNREFUSED)
        }
        Err(e) => {
            sys::disconnect(fd);
            error!("connect to {target} via {} failed: {e}", config.server);
            Verdict::Fail(e.errno())
        }
    }
}
