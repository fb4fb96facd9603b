//! accept()/accept4() on a BIND socket: read the second reply (keeping partial bytes across calls)
//! and hand out a duplicate of the descriptor as the relayed connection.
//!
//! [`second_reply`] is shared by the hooks and the seccomp supervisor: the one place that reads
//! the second reply of a BIND.

use std::ffi::c_int;
use std::net::{SocketAddr, SocketAddrV4};

use socks4_proto::v4::ReplyCode;

use super::Verdict;
use crate::config;
use crate::log::{debug, error};
use crate::registry::{self, BindState, SocketState};
use crate::sockaddr::in_family;
use crate::socks::{self, ExchangeError, ReplyProgress};
use crate::sys::{self, Errno};

/// Where the second reply of a BIND stands after one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondReply {
    /// Not complete yet (EAGAIN: nothing more to read now; EINTR: a signal): call again, the bytes
    /// so far are kept.
    Waiting(Errno),
    /// The SOCKS server connected the peer at this address; the descriptor now carries it.
    Granted(SocketAddrV4),
    /// The BIND is over with this errno (refused: ECONNABORTED); one stderr line said why.
    Failed(Errno),
}

/// Reads what is missing of the second reply to the BIND for `conn` on `fd` (`flags`:
/// MSG_DONTWAIT or 0). The one entry point to the proxy for it, used by the hooks and the
/// supervisor.
pub fn second_reply(fd: c_int, conn: SocketAddrV4, progress: &mut ReplyProgress, flags: c_int) -> SecondReply {
    let server = config::get().server;
    match socks::read_reply(fd, &mut progress.bytes, &mut progress.received, flags) {
        Ok(None) => SecondReply::Waiting(libc::EAGAIN),
        Err(ExchangeError::Io(libc::EINTR)) => SecondReply::Waiting(libc::EINTR),
        Ok(Some(reply)) if reply.code == ReplyCode::Granted => SecondReply::Granted(reply.addr()),
        Ok(Some(reply)) => {
            error!("accept on the BIND socket for {conn} via {server}: second reply {}", reply.code);
            SecondReply::Failed(libc::ECONNABORTED)
        }
        Err(e) => {
            error!("accept on the BIND socket for {conn} via {server} failed: {e}");
            SecondReply::Failed(match e {
                ExchangeError::Closed => libc::ECONNABORTED,
                e => e.errno(),
            })
        }
    }
}

/// `flags` are accept4's (SOCK_CLOEXEC, SOCK_NONBLOCK); accept passes 0.
pub fn accept(fd: c_int, flags: c_int) -> Verdict<(c_int, SocketAddr)> {
    let registry = registry::global();
    let Some(SocketState::Bind(mut bind)) = registry.get(fd) else { return Verdict::Pass };
    let nonblocking = sys::get_flags(fd).is_ok_and(|f| f & libc::O_NONBLOCK != 0);
    if let Some(was_nonblocking) = bind.accepted {
        if nonblocking || was_nonblocking {
            return Verdict::Fail(libc::EAGAIN);
        }
        error!("accept on the BIND socket for {}: SOCKS4 BIND carries one connection, already accepted", bind.conn);
        return Verdict::Fail(libc::EINVAL);
    }
    let recv_flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let verdict = match second_reply(fd, bind.conn, &mut bind.second, recv_flags) {
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
                    let peer = in_family(peer, bind.v6);
                    bind.accepted = Some(nonblocking);
                    registry.insert(new, SocketState::Accepted { peer, local: bind.local });
                    debug!("accept on the BIND socket for {}: connection from {peer} on fd {new}", bind.conn);
                    Verdict::Done((new, peer))
                }
                Err(e) => Verdict::Fail(e),
            }
        }
        SecondReply::Failed(e) => {
            bind.accepted = Some(nonblocking);
            Verdict::Fail(e)
        }
    };
    store(fd, bind);
    verdict
}

fn store(fd: c_int, bind: BindState) {
    registry::global().update(fd, |s| *s = SocketState::Bind(bind));
}
