//! getsockname(2)/getpeername(2) under the supervisor: the addresses the SOCKS exchange
//! established, as the shim reports them, written into the program's buffers.

use std::net::SocketAddr;

use super::notify::{Answer, Call};
use super::state::Sock;
use super::{Supervisor, bind, program};

/// What one of the two calls reports for a socket's state; None: the kernel's answer.
enum Name {
    Is(SocketAddr),
    Fail(i32),
    /// A fake-bound socket: the BIND request is made now (FTP clients ask before listen).
    RequestBind,
    Kernel,
}

fn lookup(sup: &'static Supervisor, call: &Call, peer: bool) -> Option<(Name, std::os::fd::OwnedFd, u64)> {
    if sup.state.lock().is_empty() || call.args[1] == 0 || call.args[2] == 0 {
        return None;
    }
    let fd = sup.take_fd(call).ok()?;
    let ino = program::inode(&fd).ok()?;
    let name = match (sup.state.lock().socks.get(&ino), peer) {
        (Some(Sock::Connected { dest, .. }), true) => Name::Is(*dest),
        (Some(Sock::Connected { local: Some(local), .. }), false) => Name::Is(*local),
        (Some(Sock::Bind(b)), true) => b.peer.map_or(Name::Fail(libc::ENOTCONN), Name::Is),
        (Some(Sock::Bind(b)), false) => Name::Is(b.local),
        (Some(Sock::FakeBound { .. }), true) => Name::Fail(libc::ENOTCONN),
        (Some(Sock::FakeBound { .. }), false) => Name::RequestBind,
        (Some(Sock::Dns { nameserver }), true) => Name::Is(*nameserver),
        _ => Name::Kernel,
    };
    Some((name, fd, ino))
}

fn answer(sup: &'static Supervisor, call: Call, peer: bool) -> Option<Answer> {
    let Some((name, fd, ino)) = lookup(sup, &call, peer) else { return Some(Answer::Continue) };
    match name {
        Name::Is(addr) => Some(write(sup, &call, &addr)),
        Name::Fail(e) => Some(Answer::Fail(e)),
        Name::Kernel => Some(Answer::Continue),
        Name::RequestBind => {
            bind::request(sup, call, fd, ino, move |sup, call, local| write(sup, &call, &local));
            None
        }
    }
}

/// Writes `addr` into the call's buffer and answers 0.
pub fn write(sup: &Supervisor, call: &Call, addr: &SocketAddr) -> Answer {
    if !sup.listener.is_valid(call.id) {
        return Answer::Fail(libc::EINTR);
    }
    match program::write_sockaddr(call.tid, addr, call.args[1], call.args[2]) {
        Ok(()) => Answer::Value(0),
        Err(_) => Answer::Fail(libc::EFAULT),
    }
}

pub fn getsockname(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    answer(sup, call, false)
}

pub fn getpeername(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    answer(sup, call, true)
}
