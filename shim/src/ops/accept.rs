//! accept()/accept4() on a BIND socket: read the second reply (keeping partial bytes across calls)
//! and hand out a duplicate of the descriptor as the relayed connection.
//!
//! [`second_reply`] is shared by the hooks and the seccomp supervisor: the one place that reads
//! the second reply of a BIND.

use std::ffi::c_int;
use std::net::{Ipv4Addr, SocketAddr};

use super::Verdict;
use super::proxy::Path;
use crate::config;
use crate::log::{debug, error};
use crate::registry::{self, BindState, SocketState};
use crate::route::Conn;
use crate::sockaddr::to_family;
use crate::socks::{self, ExchangeError, ReplyProgress};
use crate::sys::{self, Errno};

/// Where the second reply of a BIND stands after one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondReply {
    /// Not complete yet (EAGAIN: nothing more to read now; EINTR: a signal): call again, the bytes
    /// so far are kept.
    Waiting(Errno),
    /// The SOCKS server connected the peer at this address (0.0.0.0 if it named a host); the
    /// descriptor now carries it.
    Granted(SocketAddr),
    /// The BIND is over with this errno (refused: ECONNABORTED); one stderr line said why.
    Failed(Errno),
}

/// Reads what is missing of the second reply to the BIND for `conn` on `fd` (`flags`:
/// MSG_DONTWAIT or 0), in the protocol of the upstream that took the BIND. The one entry point to
/// the proxy for it, used by the hooks and the supervisor.
pub fn second_reply(fd: c_int, conn: Conn, progress: &mut ReplyProgress, flags: c_int) -> SecondReply {
    let config = config::get();
    let hops = config.hops(conn.carrier);
    let Some(&last) = hops.last() else { return SecondReply::Failed(libc::ECONNABORTED) };
    let path = Path(config, hops);
    match socks::read_reply(fd, config.upstreams[last].protocol(), progress, flags) {
        Ok(None) => SecondReply::Waiting(libc::EAGAIN),
        Err(ExchangeError::Io(libc::EINTR)) => SecondReply::Waiting(libc::EINTR),
        Ok(Some(g)) => SecondReply::Granted(g.addr().unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, g.port)))),
        Err(ExchangeError::Refused(r)) => {
            error!("accept on the BIND socket for {conn} via {path}: second reply {r}");
            SecondReply::Failed(libc::ECONNABORTED)
        }
        Err(e) => {
            error!("accept on the BIND socket for {conn} via {path} failed: {e}");
            SecondReply::Failed(match e {
                ExchangeError::Closed => libc::ECONNABORTED,
                e => e.errno(),
            })
        }
    }
}

/// The peer of an accepted BIND connection in the socket's family (0.0.0.0 when an IPv6 peer
/// cannot be said to an AF_INET socket).
pub fn peer_in_family(peer: SocketAddr, v6: bool) -> SocketAddr {
    to_family(peer, v6).unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, peer.port())))
}

/// A BIND carries one connection: whether an accept has taken it (or found that it failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Not yet: the next accept reads the second reply.
    No,
    /// Taken by an accept made while the socket was non-blocking, or blocking.
    Yes { nonblocking: bool },
}

impl Taken {
    /// What an accept after the one connection gets, `nonblocking` or not: EAGAIN if either this
    /// call or the one that took it was non-blocking (a poll loop asking again is normal), else
    /// EINVAL with one stderr line (a blocking accept would wait forever).
    pub fn again(self, nonblocking: bool, primary: Conn) -> Option<Errno> {
        let Taken::Yes { nonblocking: then } = self else { return None };
        if nonblocking || then {
            return Some(libc::EAGAIN);
        }
        error!("accept on the BIND socket for {primary}: a SOCKS BIND carries one connection, already accepted");
        Some(libc::EINVAL)
    }
}

/// `flags` are accept4's (SOCK_CLOEXEC, SOCK_NONBLOCK); accept passes 0.
pub fn accept(fd: c_int, flags: c_int) -> Verdict<(c_int, SocketAddr)> {
    let registry = registry::global();
    let Some(SocketState::Bind(mut bind)) = registry.get(fd) else { return Verdict::Pass };
    let nonblocking = sys::get_flags(fd).is_ok_and(|f| f & libc::O_NONBLOCK != 0);
    if let Some(e) = bind.taken.again(nonblocking, bind.primary) {
        return Verdict::Fail(e);
    }
    let recv_flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let verdict = match second_reply(fd, bind.primary, &mut bind.second, recv_flags) {
        // Not all 8 bytes yet, or a signal: keep what came, the next accept goes on from there.
        SecondReply::Waiting(e) => Verdict::Fail(e),
        SecondReply::Granted(peer) => {
            match sys::dup_fd(fd, flags & libc::SOCK_CLOEXEC != 0) {
                Ok(new) => {
                    // O_NONBLOCK lives on the open file description, which the two descriptors
                    // share: give it what a real accept4 gives the new socket. The BIND socket
                    // follows, harmlessly, since it cannot accept again.
                    let want_nonblocking = flags & libc::SOCK_NONBLOCK != 0;
                    if want_nonblocking != nonblocking
                        && let Ok(fl) = sys::get_flags(fd)
                    {
                        let _ = sys::set_flags(fd, fl ^ libc::O_NONBLOCK);
                    }
                    let peer = peer_in_family(peer, bind.v6);
                    bind.taken = Taken::Yes { nonblocking };
                    registry.insert(new, SocketState::Accepted { peer, local: bind.local });
                    debug!("accept on the BIND socket for {}: connection from {peer} on fd {new}", bind.primary);
                    Verdict::Done((new, peer))
                }
                Err(e) => Verdict::Fail(e),
            }
        }
        SecondReply::Failed(e) => {
            bind.taken = Taken::Yes { nonblocking };
            Verdict::Fail(e)
        }
    };
    store(fd, bind);
    verdict
}

fn store(fd: c_int, bind: Box<BindState>) {
    registry::global().update(fd, |s| *s = SocketState::Bind(bind));
}
