//! accept()/accept4() on a BIND socket: read the second reply (keeping partial bytes across calls)
//! and hand out a duplicate of the descriptor as the relayed connection.

use std::ffi::c_int;
use std::net::SocketAddr;

use socks4_proto::v4::ReplyCode;

use super::Verdict;
use crate::config;
use crate::log::{debug, error};
use crate::registry::{self, BindState, SocketState};
use crate::sockaddr::in_family;
use crate::socks::{self, ExchangeError};
use crate::sys;

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
    let result = socks::read_reply(fd, &mut bind.second_reply, &mut bind.received, recv_flags);
    let server = config::get().server;
    let verdict = match result {
        // Not all 8 bytes yet, or a signal: keep what came, the next accept goes on from there.
        Ok(None) => Verdict::Fail(libc::EAGAIN),
        Err(ExchangeError::Io(libc::EINTR)) => Verdict::Fail(libc::EINTR),
        Ok(Some(reply)) if reply.code == ReplyCode::Granted => {
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
                    let peer = in_family(reply.addr(), bind.v6);
                    bind.accepted = Some(nonblocking);
                    registry.insert(new, SocketState::Accepted { peer, local: bind.local });
                    debug!("accept on the BIND socket for {}: connection from {peer} on fd {new}", bind.conn);
                    Verdict::Done((new, peer))
                }
                Err(e) => Verdict::Fail(e),
            }
        }
        Ok(Some(reply)) => {
            bind.accepted = Some(nonblocking);
            error!("accept on the BIND socket for {} via {server}: second reply {}", bind.conn, reply.code);
            Verdict::Fail(libc::ECONNABORTED)
        }
        Err(e) => {
            bind.accepted = Some(nonblocking);
            error!("accept on the BIND socket for {} via {server} failed: {e}", bind.conn);
            Verdict::Fail(match e {
                ExchangeError::Closed => libc::ECONNABORTED,
                e => e.errno(),
            })
        }
    };
    store(fd, bind);
    verdict
}

fn store(fd: c_int, bind: BindState) {
    registry::global().update(fd, |s| *s = SocketState::Bind(bind));
}
