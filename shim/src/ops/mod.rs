//! The safe core behind the hooks: each function decides what one intercepted call does.
//!
//! A hook turns the answer into C once: [`Verdict::Pass`] -> the real libc call,
//! [`Verdict::Done`] -> the return value (and out-parameters), [`Verdict::Fail`] -> errno and -1.

pub mod accept;
pub mod bind;
pub mod connect;
pub mod dns;
pub mod fds;
pub mod names;

use std::net::SocketAddr;

use crate::config::Config;
use crate::sockaddr::in_family;
use crate::sys::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Not ours: call libc's function with the program's own arguments.
    Pass,
    /// Handled: this is the result.
    Done(T),
    /// Handled and failed with this errno.
    Fail(Errno),
}

/// The SOCKS server's address in the family of the program's socket (IPv4-mapped for AF_INET6).
/// None: an IPv6 server cannot be reached from an AF_INET socket.
fn proxy_for(config: &Config, v6: bool) -> Option<SocketAddr> {
    match config.server {
        SocketAddr::V4(a) => Some(in_family(a, v6)),
        SocketAddr::V6(_) if v6 => Some(config.server),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().map(|ip| SocketAddr::new(ip.into(), a.port())),
    }
}
