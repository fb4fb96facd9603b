//! The load generator behind `scripts/bench`: relay throughput, sequential
//! handshake latency, idle-connection memory and UDP datagram rate, through
//! SOCKS4 or SOCKS5 (socks4d, danted, microsocks) or no proxy at all, on
//! loopback only.
//!
//! Blocking sockets and one thread per stream: the generator must not be the
//! bottleneck it measures, and on loopback a few threads are cheaper than a
//! runtime.

pub mod handshake;
pub mod hold;
pub mod proxy;
pub mod rss;
pub mod stats;
pub mod throughput;
pub mod udp;

use std::io;
use std::net::{SocketAddr, SocketAddrV4, TcpListener};

/// Accept queue of our listeners. std's 128 overflows when the machine is
/// busy and the accepting thread is not scheduled for a few milliseconds at
/// 40,000 connections a second; an overflow drops a SYN and costs that
/// handshake a 1 s retransmission, which is then charged to the proxy.
const BACKLOG: i32 = 4096;

/// A listener on an ephemeral loopback port, with its address.
pub(crate) fn loopback_listener() -> io::Result<(TcpListener, SocketAddrV4)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(BACKLOG)?;
    let listener: TcpListener = socket.into();
    match listener.local_addr()? {
        SocketAddr::V4(a) => Ok((listener, a)),
        SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
    }
}
