//! getsockname()/getpeername(): report the addresses the SOCKS exchange established, not the
//! connection to the proxy.

use std::ffi::c_int;
use std::net::SocketAddr;

use super::Verdict;
use super::bind::request_bind;
use crate::config;
use crate::registry::{self, SocketState};

/// For a proxied connection: the address the destination sees (from the CONNECT reply). For a BIND
/// socket: where the SOCKS server listens. A socket bound to a proxy-side address makes its BIND
/// request here, because FTP clients ask for the address before they call listen().
pub fn getsockname(fd: c_int) -> Verdict<SocketAddr> {
    match registry::global().get(fd) {
        Some(SocketState::Connected { local: Some(local), .. }) => Verdict::Done(local),
        Some(SocketState::FakeBound { addr, primary: conn }) => {
            match request_bind(fd, config::get(), conn, addr.is_ipv6()) {
                Ok(local) => Verdict::Done(local),
                Err(e) => Verdict::Fail(e),
            }
        }
        Some(SocketState::Bind(bind)) => Verdict::Done(bind.local),
        Some(SocketState::Accepted { local, .. }) => Verdict::Done(local),
        _ => Verdict::Pass,
    }
}

/// The real destination of a proxied connection, or the peer of an accepted BIND connection.
pub fn getpeername(fd: c_int) -> Verdict<SocketAddr> {
    match registry::global().get(fd) {
        Some(SocketState::Connected { dest, .. }) => Verdict::Done(dest),
        Some(SocketState::Accepted { peer, .. }) => Verdict::Done(peer),
        // A listening socket has no peer, whatever the descriptor is connected to underneath.
        Some(SocketState::Bind(_) | SocketState::FakeBound { .. }) => Verdict::Fail(libc::ENOTCONN),
        _ => Verdict::Pass,
    }
}
