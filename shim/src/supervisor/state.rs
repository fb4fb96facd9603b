//! What the supervisor knows about the program's sockets, keyed by the socket's inode: every
//! descriptor of a socket (dup, inherited across fork, passed to another process) shares one
//! inode, so descriptor reuse, dup and close need no tracking. Entries of sockets that are gone
//! are pruned from time to time by looking at the program's descriptor tables.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::ops::accept::Taken;
use crate::route::Conn;
use crate::socks::ReplyProgress;
use crate::sys::Errno;

/// An exchange with the proxy in progress on one socket. A call restarted after a signal (the
/// kernel restarts an interrupted connect as a new notification) waits for it instead of starting
/// another.
#[derive(Default)]
pub struct Flight {
    result: Mutex<Option<Result<(), Errno>>>,
    done: Condvar,
}

impl Flight {
    pub fn finish(&self, result: Result<(), Errno>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        self.done.notify_all();
    }

    /// The result, once there is one; None after `wait` without one.
    pub fn wait(&self, wait: Duration) -> Option<Result<(), Errno>> {
        let guard = self.result.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self.done.wait_timeout_while(guard, wait, |r| r.is_none()).unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// A BIND socket: the first reply is in, the second may be coming.
#[derive(Debug, Clone)]
pub struct Bind {
    /// The primary connection (the one to the application server) the BIND request was for.
    pub primary: Conn,
    /// The first reply's address, in the socket's family (getsockname).
    pub local: SocketAddr,
    pub second: ReplyProgress,
    /// A complete, granted second reply not yet handed to the program (its accept was interrupted).
    pub granted: Option<SocketAddr>,
    /// Whether accept has taken the one connection yet.
    pub taken: Taken,
    /// The peer of the connection taken (getpeername); 0.0.0.0 when the second reply failed.
    pub peer: Option<SocketAddr>,
    pub v6: bool,
}

#[derive(Clone)]
pub enum Sock {
    /// A CONNECT is being made.
    Connecting(Arc<Flight>),
    /// A CONNECT through the proxy succeeded.
    Connected {
        dest: SocketAddr,
        local: Option<SocketAddr>,
        /// What getsockname shows for it, as in the shim's registry.
        side_ip: Option<IpAddr>,
        conn: Conn,
        seq: u64,
    },
    /// Really bound with port 0: a listen() on it may become a BIND.
    BoundAnyPort {
        addr: SocketAddr,
    },
    /// bind() to the proxy-side address of a proxied connection: recorded, not done.
    FakeBound {
        addr: SocketAddr,
        primary: Conn,
    },
    /// A BIND request is being made.
    Binding(Arc<Flight>),
    Bind(Box<Bind>),
    /// A UDP or TCP socket of the program's own resolver, talking to our DNS responder instead of
    /// this nameserver (what getpeername and recvfrom report).
    Dns {
        nameserver: SocketAddr,
    },
}

#[derive(Default)]
pub struct Inner {
    pub socks: HashMap<u64, Sock>,
    seq: u64,
    /// The program's most recent proxied CONNECT, even if since closed.
    pub latest: Option<Conn>,
    /// Threads seen calling, whose descriptor tables tell which sockets are still alive.
    tids: HashSet<i32>,
    /// Prune when the table grows past this.
    prune_at: usize,
}

const PRUNE_MIN: usize = 1024;

#[derive(Default)]
pub struct State {
    inner: Mutex<Inner>,
}

impl State {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // Map operations cannot leave the map inconsistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    pub fn saw(&mut self, tid: i32) {
        self.tids.insert(tid);
    }

    pub fn connected(&mut self, ino: u64, dest: SocketAddr, done: &crate::ops::connect::Established) {
        self.seq += 1;
        self.latest = Some(done.conn);
        let (local, side_ip, conn) = (done.local, done.side_ip, done.conn);
        self.socks.insert(ino, Sock::Connected { dest, local, side_ip, conn, seq: self.seq });
    }

    /// The most recent proxied connection whose proxy-side address is `ip` (canonical).
    pub fn connection_with_local_ip(&self, ip: IpAddr) -> Option<Conn> {
        self.socks
            .values()
            .filter_map(|s| match s {
                Sock::Connected { conn, side_ip: Some(side), seq, .. } if *side == ip => Some((*seq, *conn)),
                _ => None,
            })
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, conn)| conn)
    }

    /// Forgets sockets no thread we know of still has open, when the table has grown.
    pub fn prune_if_large(&mut self) {
        if self.socks.len() < self.prune_at.max(PRUNE_MIN) {
            return;
        }
        let mut alive: HashSet<u64> = HashSet::new();
        self.tids.retain(|tid| {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{tid}/fd")) else { return false };
            for entry in dir.flatten() {
                if let Ok(link) = std::fs::read_link(entry.path())
                    && let Some(ino) =
                        link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
                {
                    alive.insert(ino);
                }
            }
            true
        });
        self.socks.retain(|ino, s| alive.contains(ino) || matches!(s, Sock::Connecting(_) | Sock::Binding(_)));
        self.prune_at = self.socks.len() * 2;
    }
}
