//! The registry: which descriptors the shim manages and in what state, keyed by descriptor.
//!
//! The lock is held for map operations only, never across I/O. `fork` is safe: the lock is taken
//! before the fork (pthread_atfork) and released in both parent and child, so a child never
//! inherits it held by a thread that does not exist there.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::route::Conn;

pub type Fd = i32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketState {
    /// A CONNECT through the proxy succeeded.
    Connected {
        /// The destination as the program gave it (getpeername).
        dest: SocketAddr,
        /// The destination the proxy connected to and what carried it (what a BIND request names,
        /// and where it goes).
        conn: Conn,
        /// The address the destination sees, from the reply; None when the reply said 0.0.0.0 and
        /// the real local address is reported instead.
        local: Option<SocketAddr>,
        /// The address getsockname shows for it (canonical): a bind() to it with port 0 is for a
        /// BIND belonging to this connection. None: a real local address in a direct network.
        side_ip: Option<IpAddr>,
        /// Order of the CONNECTs, to find the most recent.
        seq: u64,
    },
    /// Really bound with port 0: a listen() on it may become a BIND.
    BoundAnyPort { addr: SocketAddr },
    /// bind() to the proxy-side address of a proxied connection: recorded, not done.
    FakeBound { addr: SocketAddr, primary: Conn },
    /// A BIND request was granted; the descriptor is the connection to the SOCKS server.
    Bind(Box<BindState>),
    /// The relayed connection handed out by accept.
    Accepted { peer: SocketAddr, local: SocketAddr },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindState {
    /// The primary connection (the one to the application server) the BIND request was for.
    pub primary: Conn,
    /// The address from the first reply (0.0.0.0 replaced by the server's), in the socket's family.
    pub local: SocketAddr,
    /// Bytes of the second reply received so far.
    pub second: crate::socks::ReplyProgress,
    /// Whether accept has taken the BIND's one connection yet.
    pub taken: crate::ops::accept::Taken,
    /// The socket is AF_INET6.
    pub v6: bool,
}

struct Inner {
    map: BTreeMap<Fd, SocketState>,
    seq: u64,
    /// The most recent proxied CONNECT, even if since closed.
    latest: Option<Conn>,
}

pub struct Registry {
    inner: Mutex<Inner>,
    /// Entries in `map`, readable without the lock so the hot path skips it when nothing is managed.
    len: AtomicUsize,
    /// The pid this registry describes (0: not yet known). A vfork child shares our memory but has
    /// its own pid and descriptor table: what it closes or dup2s before exec (Python's subprocess
    /// does both) must not change the parent's state.
    owner: AtomicI32,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub const fn new() -> Self {
        Registry {
            inner: Mutex::new(Inner { map: BTreeMap::new(), seq: 0, latest: None }),
            len: AtomicUsize::new(0),
            owner: AtomicI32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Map operations cannot leave the map inconsistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.lock();
        let r = f(&mut inner);
        self.len.store(inner.map.len(), Ordering::Release);
        r
    }

    /// This registry now describes process `pid` (at startup, and in a fork child).
    pub fn claim(&self, pid: i32) {
        self.owner.store(pid, Ordering::Release);
    }

    /// Whether `pid` is another process sharing this memory (a vfork child).
    pub fn is_foreign(&self, pid: i32) -> bool {
        let owner = self.owner.load(Ordering::Acquire);
        owner != 0 && owner != pid
    }

    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub fn get(&self, fd: Fd) -> Option<SocketState> {
        if self.is_empty() {
            return None;
        }
        self.lock().map.get(&fd).cloned()
    }

    pub fn contains(&self, fd: Fd) -> bool {
        !self.is_empty() && self.lock().map.contains_key(&fd)
    }

    pub fn insert(&self, fd: Fd, state: SocketState) {
        self.with(|i| i.map.insert(fd, state));
    }

    pub fn remove(&self, fd: Fd) -> Option<SocketState> {
        if self.is_empty() {
            return None;
        }
        self.with(|i| i.map.remove(&fd))
    }

    /// Forgets descriptors `first..=last` (close_range).
    pub fn remove_range(&self, first: Fd, last: Fd) {
        // An empty range (first > last) retains every descriptor by itself.
        if self.is_empty() {
            return;
        }
        self.with(|i| i.map.retain(|&fd, _| fd < first || fd > last));
    }

    /// `new` is now a duplicate of `old` (dup, dup2, dup3, F_DUPFD): it had its own state dropped
    /// by the implicit close and now shares `old`'s.
    pub fn duplicate(&self, old: Fd, new: Fd) {
        if self.is_empty() || old == new {
            return;
        }
        self.with(|i| {
            i.map.remove(&new);
            if let Some(state) = i.map.get(&old).cloned() {
                i.map.insert(new, state);
            }
        });
    }

    /// Changes a descriptor's state in place; None if it has none.
    pub fn update<R>(&self, fd: Fd, f: impl FnOnce(&mut SocketState) -> R) -> Option<R> {
        self.with(|i| i.map.get_mut(&fd).map(f))
    }

    /// Records a granted CONNECT.
    pub fn connected(&self, fd: Fd, dest: SocketAddr, conn: Conn, local: Option<SocketAddr>, side_ip: Option<IpAddr>) {
        self.with(|i| {
            i.seq += 1;
            i.latest = Some(conn);
            i.map.insert(fd, SocketState::Connected { dest, conn, local, side_ip, seq: i.seq });
        });
    }

    /// The most recent proxied connection whose proxy-side address is `ip` (canonical): the
    /// connection a bind() to that address belongs to.
    pub fn connection_with_local_ip(&self, ip: IpAddr) -> Option<Conn> {
        if self.is_empty() {
            return None;
        }
        let inner = self.lock();
        inner
            .map
            .values()
            .filter_map(|s| match s {
                SocketState::Connected { conn, side_ip: Some(side), seq, .. } if *side == ip => Some((*seq, *conn)),
                _ => None,
            })
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, conn)| conn)
    }

    /// The most recent proxied CONNECT of the process.
    pub fn latest_connection(&self) -> Option<Conn> {
        self.lock().latest
    }
}

static GLOBAL: Registry = Registry::new();

pub fn global() -> &'static Registry {
    &GLOBAL
}

thread_local! {
    static HELD_OVER_FORK: RefCell<Option<MutexGuard<'static, Inner>>> = const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    let guard = GLOBAL.lock();
    // If the thread-local is gone the guard just drops here: no worse than not holding it.
    let _ = HELD_OVER_FORK.try_with(|h| *h.borrow_mut() = Some(guard));
}

extern "C" fn after_fork_parent() {
    let _ = HELD_OVER_FORK.try_with(|h| h.borrow_mut().take());
}

extern "C" fn after_fork_child() {
    // A fork child has its own copy of the registry (unlike a vfork child, which runs no handler).
    GLOBAL.claim(crate::sys::pid());
    after_fork_parent();
}

/// Registers the fork handlers and claims the registry for this process; called once from the
/// library constructor.
pub fn install_fork_handlers() {
    GLOBAL.claim(crate::sys::pid());
    crate::sys::at_fork(before_fork, after_fork_parent, after_fork_child);
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use crate::route::{Carrier, RouteId};
    use crate::sockaddr::canonical;

    fn v4(s: &str) -> Conn {
        Conn { dest: s.parse().unwrap(), carrier: Carrier { route: RouteId::Default, pick: 0 } }
    }

    fn connect(r: &Registry, fd: Fd, dest: &str, local: Option<&str>) {
        let local: Option<SocketAddr> = local.map(|l| l.parse().unwrap());
        r.connected(fd, dest.parse().unwrap(), v4(dest), local, local.map(|l| canonical(l).ip()));
    }

    #[test]
    fn empty_registry_answers_without_state() {
        let r = Registry::new();
        assert!(r.is_empty());
        assert_eq!(r.get(3), None);
        assert_eq!(r.remove(3), None);
        assert_eq!(r.latest_connection(), None);
    }

    #[test]
    fn close_forgets_and_dup_copies() {
        let r = Registry::new();
        connect(&r, 5, "10.0.0.5:21", Some("192.0.2.1:4000"));
        r.duplicate(5, 9);
        assert!(matches!(r.get(9), Some(SocketState::Connected { .. })));
        assert!(r.remove(5).is_some());
        assert!(r.get(5).is_none());
        assert!(r.get(9).is_some());
        r.remove(9);
        assert!(r.is_empty());
    }

    #[test]
    fn dup2_over_a_managed_descriptor_replaces_its_state() {
        let r = Registry::new();
        connect(&r, 5, "10.0.0.5:21", None);
        r.insert(7, SocketState::BoundAnyPort { addr: "0.0.0.0:0".parse().unwrap() });
        r.duplicate(5, 7);
        assert!(matches!(r.get(7), Some(SocketState::Connected { .. })));
        // Duplicating an unmanaged descriptor over a managed one leaves no state.
        r.duplicate(4, 7);
        assert_eq!(r.get(7), None);
    }

    #[test]
    fn close_range_forgets_the_range_only() {
        let r = Registry::new();
        for fd in 3..10 {
            connect(&r, fd, "10.0.0.5:21", None);
        }
        r.remove_range(5, 7);
        let left: Vec<Fd> = (3..10).filter(|&fd| r.get(fd).is_some()).collect();
        assert_eq!(left, [3, 4, 8, 9]);
    }

    #[test]
    fn close_range_of_one_and_empty_ranges() {
        let r = Registry::new();
        for fd in 3..6 {
            connect(&r, fd, "10.0.0.5:21", None);
        }
        r.remove_range(4, 4);
        r.remove_range(5, 3);
        let left: Vec<Fd> = (3..6).filter(|&fd| r.contains(fd)).collect();
        assert_eq!(left, [3, 5]);
    }

    #[test]
    fn contains_only_managed_descriptors() {
        let r = Registry::new();
        assert!(!r.contains(3));
        r.insert(3, SocketState::BoundAnyPort { addr: "0.0.0.0:0".parse().unwrap() });
        assert!(r.contains(3));
        assert!(!r.contains(4));
    }

    #[test]
    fn dup2_onto_itself_keeps_the_state() {
        let r = Registry::new();
        connect(&r, 5, "10.0.0.5:21", None);
        r.duplicate(5, 5);
        assert!(matches!(r.get(5), Some(SocketState::Connected { .. })));
    }

    #[test]
    fn bind_destination_is_the_connection_with_that_local_address() {
        let r = Registry::new();
        connect(&r, 3, "10.0.0.5:21", Some("192.0.2.1:4000"));
        connect(&r, 4, "10.0.0.6:21", Some("192.0.2.2:4001"));
        connect(&r, 5, "10.0.0.7:80", Some("192.0.2.1:4002"));
        assert_eq!(r.connection_with_local_ip("192.0.2.2".parse().unwrap()), Some(v4("10.0.0.6:21")));
        // Two connections share the address: the most recent wins.
        assert_eq!(r.connection_with_local_ip("192.0.2.1".parse().unwrap()), Some(v4("10.0.0.7:80")));
        assert_eq!(r.connection_with_local_ip("192.0.2.9".parse().unwrap()), None);
        assert_eq!(r.latest_connection(), Some(v4("10.0.0.7:80")));
        // The most recent by CONNECT order, not by descriptor number.
        connect(&r, 2, "10.0.0.8:80", Some("192.0.2.1:4003"));
        assert_eq!(r.connection_with_local_ip("192.0.2.1".parse().unwrap()), Some(v4("10.0.0.8:80")));
    }

    #[test]
    fn mapped_local_addresses_match_ipv4() {
        let r = Registry::new();
        connect(&r, 3, "10.0.0.5:21", Some("[::ffff:192.0.2.1]:4000"));
        assert_eq!(r.connection_with_local_ip("192.0.2.1".parse().unwrap()), Some(v4("10.0.0.5:21")));
    }

    #[test]
    fn latest_connection_survives_close() {
        let r = Registry::new();
        connect(&r, 3, "10.0.0.5:21", None);
        r.remove(3);
        assert_eq!(r.latest_connection(), Some(v4("10.0.0.5:21")));
    }

    #[test]
    fn only_another_pid_is_foreign() {
        let r = Registry::new();
        assert!(!r.is_foreign(42), "unclaimed: every caller may change it");
        r.claim(42);
        assert!(!r.is_foreign(42));
        assert!(r.is_foreign(43));
    }

    /// The fork handlers, installed once for the whole test process: pthread_atfork keeps them,
    /// and a second set would lock the registry twice before a fork.
    fn fork_handlers() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(install_fork_handlers);
    }

    /// Runs `child` in a forked child; whether it answered true. A child that has not exited
    /// within 5 s (stuck on a lock it inherited held) is killed and counts as false.
    fn in_child(child: impl FnOnce() -> bool) -> bool {
        // SAFETY: the child only uses the registry (its lock is released by the fork handlers) and
        // _exits without returning to the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(false);
            // SAFETY: leaving the child without running the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = 0;
        loop {
            // SAFETY: polling for our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            }
            if Instant::now() > deadline {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `f` on another thread, within 5 s: a registry lock left held makes it wait forever.
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(Duration::from_secs(5)).ok()
    }

    fn bound() -> SocketState {
        SocketState::BoundAnyPort { addr: "0.0.0.0:0".parse().unwrap() }
    }

    // The global registry is shared by the tests below: each uses its own descriptor numbers,
    // far above any real one.

    #[test]
    fn the_global_registry_is_one_and_belongs_to_this_process() {
        fork_handlers();
        global().insert(1_000_001, bound());
        assert_eq!(global().get(1_000_001), Some(bound()));
        global().remove(1_000_001);
        assert!(!global().is_foreign(crate::sys::pid()));
        assert!(global().is_foreign(crate::sys::pid() + 1), "claimed for this pid");
    }

    #[test]
    fn a_fork_child_owns_its_copy_and_both_sides_can_lock_it() {
        fork_handlers();
        global().insert(1_000_002, bound());
        let child = in_child(|| {
            let pid = crate::sys::pid();
            !global().is_foreign(pid) && global().remove(1_000_002) == Some(bound())
        });
        assert!(child, "the child could not use its registry (not claimed, or its lock held)");
        assert_eq!(
            within_5s(|| global().remove(1_000_002)),
            Some(Some(bound())),
            "the parent's lock held, or its state lost"
        );
    }

    #[test]
    fn fork_waits_for_a_registry_operation_in_flight() {
        fork_handlers();
        global().insert(1_000_003, bound());
        let (held_tx, held_rx) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            global().update(1_000_003, |_| {
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            })
        });
        held_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Another thread holds the lock now: the fork must wait for it, or the child inherits a
        // lock held by a thread it does not have.
        let child = in_child(|| global().get(1_000_003) == Some(bound()));
        assert!(child, "the child inherited the registry locked");
        assert_eq!(holder.join().unwrap(), Some(()));
        global().remove(1_000_003);
    }

    #[test]
    fn update_changes_in_place() {
        let r = Registry::new();
        r.insert(
            3,
            SocketState::Bind(Box::new(BindState {
                primary: v4("10.0.0.5:21"),
                local: "192.0.2.1:5000".parse().unwrap(),
                second: Default::default(),
                taken: crate::ops::accept::Taken::No,
                v6: false,
            })),
        );
        r.update(3, |s| {
            if let SocketState::Bind(b) = s {
                b.second.received = 3;
            }
        });
        assert!(matches!(r.get(3), Some(SocketState::Bind(b)) if b.second.received == 3));
        assert_eq!(r.update(4, |_| ()), None);
    }
}
