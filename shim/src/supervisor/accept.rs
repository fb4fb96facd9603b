//! accept(2)/accept4(2) on a BIND socket under the supervisor: the shim's second-reply reading,
//! and the relayed connection installed into the program with SECCOMP_IOCTL_NOTIF_ADDFD.
//!
//! The program's BIND socket is its connection to the SOCKS server, so epoll/poll on it turn
//! readable when the second reply arrives (Go's netpoller waits exactly so). A non-blocking accept
//! before then fails with EAGAIN; a blocking one waits on a worker.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use super::notify::{Answer, Call};
use super::state::Sock;
use super::{Supervisor, program};
use crate::log::debug;
use crate::ops::accept::{SecondReply, Taken, peer_in_family, second_reply};
use crate::sys;

pub fn accept(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    if sup.state.lock().is_empty() {
        return Some(Answer::Continue);
    }
    let Ok(fd) = sup.take_fd(&call) else { return Some(Answer::Continue) };
    let Ok(ino) = program::inode(&fd) else { return Some(Answer::Continue) };
    let flags = if call.nr == libc::SYS_accept4 { call.int(3) } else { 0 };
    let nonblocking = sys::get_flags(fd.as_raw_fd()).is_ok_and(|f| f & libc::O_NONBLOCK != 0);
    match step(sup, &call, &fd, ino, flags, nonblocking) {
        Step::Done(answer) => Some(answer),
        Step::Answered => None,
        Step::Wait if nonblocking => Some(Answer::Fail(libc::EAGAIN)),
        Step::Wait => {
            sup.pool.run(move || {
                loop {
                    // Short polls, so a call interrupted by a signal is noticed and left (its
                    // restart, or the next accept, goes on from the bytes kept).
                    let _ = sys::poll(fd.as_raw_fd(), libc::POLLIN, 200);
                    if !sup.listener.is_valid(call.id) {
                        return;
                    }
                    match step(sup, &call, &fd, ino, flags, false) {
                        Step::Done(answer) => return sup.listener.answer(call.id, answer),
                        Step::Answered => return,
                        Step::Wait => {}
                        Step::NotOurs => return sup.listener.answer(call.id, Answer::Continue),
                    }
                }
            });
            None
        }
        Step::NotOurs => Some(Answer::Continue),
    }
}

enum Step {
    Done(Answer),
    /// ADDFD answered the call with the new descriptor.
    Answered,
    /// The second reply is not complete yet.
    Wait,
    NotOurs,
}

/// One attempt: read what is there of the second reply (never blocking) and, once granted, hand
/// the connection to the program.
fn step(sup: &Supervisor, call: &Call, fd: &OwnedFd, ino: u64, flags: i32, nonblocking: bool) -> Step {
    let mut st = sup.state.lock();
    let Some(Sock::Bind(bind)) = st.socks.get_mut(&ino) else { return Step::NotOurs };
    if let Some(e) = bind.taken.again(nonblocking, bind.primary) {
        return Step::Done(Answer::Fail(e));
    }
    let peer: SocketAddr = match bind.granted {
        Some(peer) => peer,
        None => match second_reply(fd.as_raw_fd(), bind.primary, &mut bind.second, libc::MSG_DONTWAIT) {
            SecondReply::Waiting(_) => return Step::Wait,
            SecondReply::Failed(e) => {
                bind.taken = Taken::Yes { nonblocking };
                bind.peer = Some(peer_in_family(SocketAddr::from(([0, 0, 0, 0], 0)), bind.v6));
                return Step::Done(Answer::Fail(e));
            }
            SecondReply::Granted(peer) => {
                bind.granted = Some(peer);
                peer
            }
        },
    };
    let peer = peer_in_family(peer, bind.v6);
    if !sup.listener.is_valid(call.id) {
        return Step::Done(Answer::Fail(libc::EINTR));
    }
    // The peer goes into the program's buffer before the descriptor: once ADDFD answers, the
    // program runs on.
    if program::write_sockaddr(call.tid, &peer, call.args[1], call.args[2]).is_err() {
        return Step::Done(Answer::Fail(libc::EFAULT));
    }
    // O_NONBLOCK lives on the open file description, which the BIND socket and the accepted one
    // share: give it what a real accept4 gives the new socket.
    let want_nonblocking = flags & libc::SOCK_NONBLOCK != 0;
    if want_nonblocking != nonblocking
        && let Ok(fl) = sys::get_flags(fd.as_raw_fd())
    {
        let _ = sys::set_flags(fd.as_raw_fd(), fl ^ libc::O_NONBLOCK);
    }
    match sup.listener.answer_with_fd(call.id, fd.as_raw_fd(), flags & libc::SOCK_CLOEXEC != 0) {
        Ok(new) => {
            bind.taken = Taken::Yes { nonblocking };
            bind.peer = Some(peer);
            bind.granted = None;
            debug!(
                "accept on the BIND socket for {}: connection from {peer} on fd {new} of thread {}",
                bind.primary, call.tid
            );
            Step::Answered
        }
        Err(e) => Step::Done(Answer::Fail(if e == libc::ENOENT { libc::EINTR } else { e })),
    }
}
