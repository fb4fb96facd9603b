//! Remote DNS for resolvers inside the program (Go's pure resolver, static libcs): their queries
//! to port 53 go to a small responder in the supervisor that answers with the shim's placeholders.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use super::Supervisor;
use super::notify::{Answer, Call};
use crate::config::Config;

pub struct Responder {}

impl Responder {
    pub fn start(_config: &Config) -> Option<Responder> {
        None
    }
}

/// Whether a connect to `dest` is one of a resolver's (port 53, remote DNS on).
pub fn is_nameserver_port(sup: &Supervisor, dest: &SocketAddr) -> bool {
    sup.dns.is_some() && dest.port() == 53
}

/// Points a resolver's socket at the responder; None: not a resolver's socket after all.
pub fn redirect(_sup: &Supervisor, _call: &Call, _fd: &OwnedFd, _dest: SocketAddr) -> Option<Answer> {
    None
}

pub fn sendto(_sup: &'static Supervisor, _call: Call) -> Option<Answer> {
    Some(Answer::Continue)
}

pub fn recvfrom(_sup: &'static Supervisor, _call: Call) -> Option<Answer> {
    Some(Answer::Continue)
}
