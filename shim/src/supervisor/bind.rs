//! bind(2)/listen(2) under the supervisor: the shim's BIND policy (`ops::bind::plan_bind`,
//! `plan_listen`) over the supervisor's state, and the shim's BIND request on the program's socket.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::notify::{Answer, Call};
use super::state::{self, Flight, Sock};
use super::{Supervisor, program};
use crate::ops;
use crate::ops::accept::Taken;
use crate::ops::bind::BindPlan;

pub fn bind(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    let addr = match program::read_sockaddr(call.tid, call.args[1], call.args[2]) {
        Ok(Some(addr)) if addr.port() == 0 => addr,
        _ => return Some(Answer::Continue),
    };
    let Ok(fd) = sup.take_fd(&call) else { return Some(Answer::Continue) };
    let Ok(ino) = program::inode(&fd) else { return Some(Answer::Continue) };
    let mut st = sup.state.lock();
    let plan = ops::bind::plan_bind(fd.as_raw_fd(), &addr, |ip| st.connection_with_local_ip(ip));
    match plan {
        BindPlan::Pass => Some(Answer::Continue),
        BindPlan::AnyPort => {
            st.socks.insert(ino, Sock::BoundAnyPort { addr });
            Some(Answer::Continue)
        }
        BindPlan::Fake(conn) => {
            st.socks.insert(ino, Sock::FakeBound { addr, primary: conn });
            Some(Answer::Value(0))
        }
    }
}

pub fn listen(sup: &'static Supervisor, call: Call) -> Option<Answer> {
    if sup.state.lock().latest.is_none() {
        return Some(Answer::Continue);
    }
    let Ok(fd) = sup.take_fd(&call) else { return Some(Answer::Continue) };
    let Ok(ino) = program::inode(&fd) else { return Some(Answer::Continue) };
    let (known, latest) = {
        let st = sup.state.lock();
        (st.socks.get(&ino).cloned(), st.latest)
    };
    let plan = match known {
        // The BIND was already made by getsockname.
        Some(Sock::Bind(_)) => return Some(Answer::Value(0)),
        Some(Sock::FakeBound { .. } | Sock::Binding(_)) => true,
        Some(Sock::BoundAnyPort { addr }) => {
            ops::bind::plan_listen(sup.config, fd.as_raw_fd(), Some(addr), latest).is_some()
        }
        Some(_) => return Some(Answer::Continue),
        None => ops::bind::plan_listen(sup.config, fd.as_raw_fd(), None, latest).is_some(),
    };
    if !plan {
        return Some(Answer::Continue);
    }
    request(sup, call, fd, ino, |_, _, _| Answer::Value(0));
    None
}

/// Makes the BIND request for socket `ino` on a worker and answers `call` with `then(local)` or
/// the errno. The destination is the fake bind's connection, or else the latest connection.
pub fn request(
    sup: &'static Supervisor,
    call: Call,
    fd: OwnedFd,
    ino: u64,
    then: impl FnOnce(&'static Supervisor, Call, std::net::SocketAddr) -> Answer + Send + 'static,
) {
    let (conn, v6, flight) = {
        let mut st = sup.state.lock();
        let (conn, v6) = match st.socks.get(&ino) {
            Some(Sock::FakeBound { addr, primary: conn }) => (*conn, addr.is_ipv6()),
            Some(Sock::Binding(flight)) => {
                // A restarted call: wait for the request under way, then answer from its result.
                let flight = flight.clone();
                sup.pool.run(move || sup.handle_when_done(call, &flight));
                return;
            }
            Some(Sock::BoundAnyPort { addr }) => match st.latest {
                Some(conn) => (conn, addr.is_ipv6()),
                None => return sup.listener.answer(call.id, Answer::Continue),
            },
            _ => match (st.latest, crate::sys::local_addr(fd.as_raw_fd())) {
                (Some(conn), Ok(addr)) => (conn, addr.is_ipv6()),
                _ => return sup.listener.answer(call.id, Answer::Continue),
            },
        };
        let flight = Arc::new(Flight::default());
        st.socks.insert(ino, Sock::Binding(flight.clone()));
        (conn, v6, flight)
    };
    sup.pool.run(move || {
        let result = ops::bind::through_proxy(fd.as_raw_fd(), sup.config, conn, v6);
        let answer = {
            let mut st = sup.state.lock();
            match result {
                Ok(local) => {
                    st.socks.insert(
                        ino,
                        Sock::Bind(Box::new(state::Bind {
                            primary: conn,
                            local,
                            second: Default::default(),
                            granted: None,
                            taken: Taken::No,
                            peer: None,
                            v6,
                        })),
                    );
                    None
                }
                Err(e) => {
                    st.socks.remove(&ino);
                    Some(Answer::Fail(e))
                }
            }
        };
        flight.finish(result.map(drop));
        let answer = match (answer, result) {
            (Some(a), _) => a,
            (None, Ok(local)) => then(sup, call, local),
            (None, Err(e)) => Answer::Fail(e),
        };
        sup.listener.answer(call.id, answer);
    });
}
