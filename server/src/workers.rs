//! The daemon's session threads: one single-threaded tokio runtime per core,
//! each accepting on a listener of its own (SO_REUSEPORT: the kernel spreads
//! new connections over them). A session then lives on one thread from
//! accept to close, so no I/O event has to wake a second thread: with one
//! multi-threaded runtime, measured at about 15 % more CPU per handshake,
//! most of it in futex wake-ups and context switches.
//!
//! The listeners steer each new connection to the thread numbered after the
//! CPU the kernel handled it on (CPU modulo threads): a client on one CPU
//! keeps landing on one thread, which is then still busy polling (see
//! `busy_poll.rs`) when its next connection comes, instead of a sleeping
//! thread picked by hash. Measured: 8,800 sequential CONNECTs/s steered
//! against 7,200/s hashed, both with busy polling.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::busy_poll;

/// Session threads; dropping this stops them, which cuts the sessions still
/// running on them, and waits until they are gone.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Dropped first in `drop`: each thread's runtime then ends.
    done: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// The busy-polling window of every thread, in microseconds.
    busy_poll_us: Arc<AtomicU32>,
}

impl Workers {
    /// Starts `count` threads (at least one), each running a current-thread
    /// runtime until `Workers` is dropped, busy polling for `busy_poll_us`
    /// microseconds after work (0: not at all).
    ///
    /// # Errors
    ///
    /// If a runtime or a thread cannot be created.
    pub(crate) fn start(count: usize, busy_poll_us: u32) -> io::Result<Workers> {
        let mut handles = Vec::new();
        let mut done = Vec::new();
        let mut threads = Vec::new();
        let window = Arc::new(AtomicU32::new(busy_poll_us));
        for i in 0..count.max(1) {
            let hook = window.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(move || busy_poll::before_park(&hook))
                .build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            done.push(tx);
            let thread = thread::Builder::new().name(format!("socks4d-{i}")).spawn(move || {
                runtime.block_on(async {
                    tokio::spawn(busy_poll::spinner());
                    let _ = rx.await;
                });
                // A name lookup stuck on a blocking thread must not hold
                // this thread (or the daemon's exit) up.
                runtime.shutdown_background();
            })?;
            threads.push(thread);
        }
        Ok(Workers { handles, done, threads, busy_poll_us: window })
    }

    /// Changes the busy-polling window of every thread (0: off).
    pub(crate) fn set_busy_poll(&self, us: u32) {
        self.busy_poll_us.store(us, Ordering::Relaxed);
    }

    /// The busy-polling window of every thread.
    #[cfg(test)]
    pub(crate) fn busy_poll(&self) -> u32 {
        self.busy_poll_us.load(Ordering::Relaxed)
    }

    /// The runtimes, one per thread.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// One listener per thread on `addr` (all on the same port, port 0
    /// resolved by the first), each registered with its thread's runtime.
    ///
    /// # Errors
    ///
    /// The socket, option, bind or listen error.
    pub(crate) fn listen(&self, addr: SocketAddr) -> io::Result<Vec<TcpListener>> {
        let mut addr = addr;
        let mut listeners = Vec::new();
        for handle in &self.handles {
            // Registering with a reactor needs that runtime's context.
            let _entered = handle.enter();
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            socket.set_reuseaddr(true)?;
            // Only sockets of the same user can join the group.
            socket.set_reuseport(true)?;
            socket.bind(addr)?;
            let listener = socket.listen(1024)?;
            addr = listener.local_addr()?;
            listeners.push(listener);
        }
        // Without steering the kernel spreads connections by hash: slower,
        // still correct.
        let cpus = allowed_cpus();
        let count = listeners.len();
        if every_thread_has_a_cpu(&cpus, count) {
            if let Err(e) = steer_by_cpu(&listeners[0], count) {
                tracing::warn!(error = %e, "cannot steer connections by CPU");
            }
        } else {
            tracing::info!(?cpus, threads = count, "CPUs do not cover the threads: connections spread by hash");
        }
        Ok(listeners)
    }
}

impl Workers {
    /// One listener per thread over `listener`, a socket someone else opened
    /// (socket activation): each thread gets a duplicate descriptor of the
    /// same socket, registered with its own runtime.
    ///
    /// Why duplicates: the socket is not ours to re-create, and another
    /// socket cannot join it in a SO_REUSEPORT group unless systemd set
    /// `ReusePort=` on it, so per-thread listeners and CPU steering are out.
    /// With one socket watched by every thread, a new connection wakes them
    /// all; one accept wins and the others get EAGAIN and wait again (a
    /// wake-up per thread and connection, few threads). Sessions still stay
    /// on the thread that accepted them. Accepting on one thread and handing
    /// sessions over would instead cost a cross-thread wake-up on every
    /// connection, the cost `workers.rs` exists to avoid.
    ///
    /// # Errors
    ///
    /// The dup or registration error.
    pub(crate) fn adopt(&self, listener: std::net::TcpListener) -> io::Result<Vec<TcpListener>> {
        listener.set_nonblocking(true)?;
        let mut listeners = Vec::new();
        for handle in &self.handles {
            let _entered = handle.enter();
            listeners.push(TcpListener::from_std(listener.try_clone()?)?);
        }
        Ok(listeners)
    }
}

/// Whether steering by `CPU % count` gives every one of `count` threads
/// some of `cpus`: with CPUs {1, 3} and two threads, thread 0 would get no
/// clients.
fn every_thread_has_a_cpu(cpus: &[usize], count: usize) -> bool {
    (0..count).all(|t| cpus.iter().any(|c| c % count == t))
}

/// Attaches a classic BPF program to `listener`'s SO_REUSEPORT group that
/// picks the listener `CPU % count`, the group's listeners being numbered
/// in the order they were bound (ours are, one per thread). An index past
/// the group's end (another process joined it) falls back to the hash.
fn steer_by_cpu(listener: &TcpListener, count: usize) -> io::Result<()> {
    let count = u32::try_from(count).map_err(io::Error::other)?;
    let op = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let mut program = [
        // A = the CPU handling the packet
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32),
        // A %= count
        op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, count),
        // return A: the listener's index in the group
        op(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: a valid socket, and a program that outlives the call (the
    // kernel copies it).
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The CPUs this process may run on (all 0..CPU_SETSIZE if that cannot be
/// read: then nothing is assumed).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, which the call fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the set's own.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let all = 0..libc::CPU_SETSIZE as usize;
    if rc != 0 {
        return all.collect();
    }
    // SAFETY: c is below CPU_SETSIZE, the set's size.
    all.filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

impl Drop for Workers {
    /// Waits for the threads, so that the sessions they cut have logged
    /// their lines before the daemon exits. Short: a runtime shutting down
    /// drops its tasks at once and does not wait for blocking threads.
    fn drop(&mut self) {
        self.done.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every thread gets a listener on the same port, and a connection
    /// made from CPU c lands on listener c % 2: all 16 from one CPU on one
    /// listener (with hashing, odds 2^-15 each), checked from each CPU this
    /// process may use (which must cover both parities: CI's 0 and 1 do).
    #[test]
    fn listeners_share_the_port_and_steer_by_cpu() {
        let workers = Workers::start(2, 0).unwrap();
        let listeners = workers.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(listeners.len(), 2);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(listeners[1].local_addr().unwrap().port(), port);
        let listeners: Vec<_> = workers.handles().iter().cloned().zip(listeners).collect();

        let cpus = allowed_cpus();
        assert!(cpus.len() >= 2, "this test needs two CPUs of both parities, has {cpus:?}");
        for cpu in cpus.into_iter().take(2) {
            let clients = thread::spawn(move || {
                pin_to(cpu);
                (0..16).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect::<Vec<_>>()
            })
            .join()
            .unwrap();
            let accepted: Vec<usize> = listeners.iter().map(|(handle, l)| accept_all(handle, l)).collect();
            let mut expected = vec![0, 0];
            expected[cpu % 2] = clients.len();
            assert_eq!(accepted, expected, "connections from CPU {cpu}");
        }
    }

    #[test]
    fn steering_needs_a_cpu_for_every_thread() {
        assert!(every_thread_has_a_cpu(&[0, 1], 2));
        assert!(every_thread_has_a_cpu(&[2, 3, 4], 3));
        assert!(every_thread_has_a_cpu(&[5], 1));
        assert!(!every_thread_has_a_cpu(&[1, 3], 2));
        assert!(!every_thread_has_a_cpu(&[0, 1], 3));
        assert!(!every_thread_has_a_cpu(&[], 1));
    }

    /// The affinity mask as the kernel has it: the CPU this thread runs on
    /// is in it, and not every possible CPU is.
    #[test]
    fn allowed_cpus_are_the_affinity_mask() {
        let cpus = allowed_cpus();
        // SAFETY: sched_getcpu takes no arguments.
        let here = unsafe { libc::sched_getcpu() };
        assert!(cpus.contains(&usize::try_from(here).unwrap()), "running on CPU {here}, allowed {cpus:?}");
        assert!(cpus.len() < libc::CPU_SETSIZE as usize, "{} CPUs allowed", cpus.len());
    }

    /// The kernel accepts the steering program on a SO_REUSEPORT listener.
    #[test]
    fn steering_program_attaches() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseport(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8).unwrap();
        steer_by_cpu(&listener, 2).unwrap();
    }

    /// An adopted socket is served by every thread, each through its own
    /// duplicate: every connection is accepted exactly once.
    #[test]
    fn adopted_listener_is_shared_by_every_thread() {
        let workers = Workers::start(2, 0).unwrap();
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let listeners = workers.adopt(socket).unwrap();
        assert_eq!(listeners.len(), 2);
        assert!(listeners.iter().all(|l| l.local_addr().unwrap() == addr));
        let _clients: Vec<_> = (0..8).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let accepted: usize = workers.handles().iter().zip(&listeners).map(|(h, l)| accept_all(h, l)).sum();
        assert_eq!(accepted, 8);
    }

    fn pin_to(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; cpu comes from
        // allowed_cpus, so it is below CPU_SETSIZE.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    /// Accepts on the listener's own runtime (it is registered there) until
    /// nothing more comes for 300 ms; returns how many.
    fn accept_all(handle: &Handle, listener: &TcpListener) -> usize {
        handle.block_on(async {
            let mut n = 0;
            while let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_millis(300), listener.accept()).await {
                n += 1;
            }
            n
        })
    }
}
