//! connect(2) (and sendto with MSG_FASTOPEN) under the supervisor: the shim's decision, then the
//! shim's CONNECT exchange on the program's own socket, taken with pidfd_getfd.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::notify::{Answer, Call};
use super::state::{Flight, Sock};
use super::{Supervisor, dns, program};
use crate::log::debug;
use crate::ops::connect::Plan;
use crate::ops::{self, Verdict};
use crate::route::{Route, route};

pub fn connect(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    connect_then(sup, call, call.args[1], call.args[2], |_, _, _| Answer::Value(0))
}

/// sendto(2): with MSG_FASTOPEN a connect in disguise (the shim's CONNECT, then the data on the
/// established connection); with an address on a resolver's socket, a DNS query.
pub fn sendto(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    if call.int(3) & libc::MSG_FASTOPEN == 0 {
        return dns::sendto(sup, call);
    }
    connect_then(sup, call, call.args[4], call.args[5], |sup, call, fd| {
        let Ok(data) = program::read(call.tid, call.args[1], (call.args[2] as usize).min(1 << 16)) else {
            return Answer::Fail(libc::EFAULT);
        };
        if !sup.listener.is_valid(call.id) {
            return Answer::Fail(libc::EINTR);
        }
        let flags = (call.int(3) & !libc::MSG_FASTOPEN) | libc::MSG_NOSIGNAL;
        match crate::sys::send(fd.as_raw_fd(), &data, flags) {
            Ok(n) => Answer::Value(n as i64),
            Err(e) => Answer::Fail(e),
        }
    })
}

/// What a proxied connect answers once the exchange succeeded.
type Then = fn(&'static Supervisor, Call, &OwnedFd) -> Answer;

fn connect_then(sup: &'static Supervisor, call: Call, addr: u64, len: u64, then: Then) -> Option<Answer> {
    let dest = match program::read_sockaddr(call.tid, addr, len) {
        Ok(Some(dest)) => dest,
        // AF_UNIX, AF_UNSPEC (dissolving a connection), a null address: not ours.
        Ok(None) => return Some(Answer::Continue),
        Err(_) => return Some(Answer::Fail(libc::EFAULT)),
    };
    if !sup.listener.is_valid(call.id) {
        return None;
    }
    let dns_query = dns::is_nameserver_port(sup, &dest);
    // Plainly direct (not a placeholder, whose route is its name's): the kernel makes the call.
    let placeholder = crate::sockaddr::ipv4_of(&dest).is_some_and(|a| crate::dns_pool::is_placeholder(*a.ip()));
    if !placeholder && !dns_query && route(sup.config, &dest, None) == Route::Direct {
        debug!("connect to {dest}: direct");
        return Some(Answer::Continue);
    }
    let fd = match sup.take_fd(&call) {
        Ok(fd) => fd,
        Err(e) => return Some(Answer::Fail(e)),
    };
    if dns_query && let Some(answer) = dns::redirect(sup, &call, &fd, dest) {
        return Some(answer);
    }
    match ops::connect::decide(sup.config, fd.as_raw_fd(), &dest) {
        Verdict::Pass => Some(Answer::Continue),
        Verdict::Fail(e) => Some(Answer::Fail(e)),
        Verdict::Done(Plan::DirectName { name, port }) => {
            // The name is resolved here, which may take a while: on a worker.
            sup.pool.run(move || {
                let answer = match ops::connect::direct_to_name(fd.as_raw_fd(), &name, port, dest.is_ipv6()) {
                    Ok(()) => then(sup, call, &fd),
                    Err(e) => Answer::Fail(e),
                };
                sup.listener.answer(call.id, answer);
            });
            None
        }
        Verdict::Done(plan) => proxied(sup, call, fd, dest, plan, then),
    }
}

fn proxied(
    sup: &'static Supervisor,
    call: Call,
    fd: OwnedFd,
    dest: SocketAddr,
    plan: Plan,
    then: Then,
) -> Option<Answer> {
    let ino = match program::inode(&fd) {
        Ok(ino) => ino,
        Err(e) => return Some(Answer::Fail(e)),
    };
    let flight = {
        let mut state = sup.state.lock();
        match state.socks.get(&ino) {
            Some(Sock::Connected { .. } | Sock::Bind(_) | Sock::Binding(_)) => {
                return Some(Answer::Fail(libc::EISCONN));
            }
            // The same connect again, restarted after a signal: wait for the exchange under way.
            Some(Sock::Connecting(flight)) => {
                let flight = flight.clone();
                sup.pool.run(move || sup.answer_when_done(call.id, &flight, Answer::Value(0)));
                return None;
            }
            _ => {
                let flight = Arc::new(Flight::default());
                state.socks.insert(ino, Sock::Connecting(flight.clone()));
                flight
            }
        }
    };
    sup.pool.run(move || {
        let result = ops::connect::through_proxy(fd.as_raw_fd(), sup.config, dest.is_ipv6(), &plan);
        {
            let mut state = sup.state.lock();
            match result {
                Ok(done) => {
                    state.connected(ino, dest, &done);
                    state.prune_if_large();
                }
                Err(_) => {
                    state.socks.remove(&ino);
                }
            }
        }
        debug!("supervisor: connect of thread {} to {dest} answered: {result:?}", call.tid);
        flight.finish(result.map(drop));
        sup.listener.answer(call.id, result.map_or_else(Answer::Fail, |_| then(sup, call, &fd)));
    });
    None
}
