//! The daemon's session threads: one single-threaded tokio runtime per core,
//! each accepting on a listener of its own (SO_REUSEPORT: the kernel spreads
//! new connections over them). A session then lives on one thread from
//! accept to close, so no I/O event has to wake a second thread: with one
//! multi-threaded runtime, measured at about 15 % more CPU per handshake,
//! most of it in futex wake-ups and context switches.

use std::io;
use std::net::SocketAddr;
use std::thread;

use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Session threads; dropping this stops them, which cuts the sessions still
/// running on them, and waits until they are gone.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Dropped first in `drop`: each thread's runtime then ends.
    done: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` threads (at least one), each running a current-thread
    /// runtime until `Workers` is dropped.
    ///
    /// # Errors
    ///
    /// If a runtime or a thread cannot be created.
    pub(crate) fn start(count: usize) -> io::Result<Workers> {
        let mut handles = Vec::new();
        let mut done = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (tx, rx) = oneshot::channel::<()>();
            done.push(tx);
            let thread = thread::Builder::new().name(format!("socks4d-{i}")).spawn(move || {
                runtime.block_on(async {
                    let _ = rx.await;
                });
                // A name lookup stuck on a blocking thread must not hold
                // this thread (or the daemon's exit) up.
                runtime.shutdown_background();
            })?;
            threads.push(thread);
        }
        Ok(Workers { handles, done, threads })
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
        Ok(listeners)
    }
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

    /// Every thread gets a listener on the same port, and the kernel
    /// spreads connections over them: with 32 clients, all landing on one
    /// listener would mean the group does not work (odds 2^-31 otherwise).
    #[test]
    fn listeners_share_the_port_and_split_the_connections() {
        let workers = Workers::start(2).unwrap();
        let listeners = workers.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(listeners.len(), 2);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert_eq!(listeners[1].local_addr().unwrap().port(), port);

        let clients: Vec<_> = (0..32).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let accepted: Vec<usize> =
            workers.handles().iter().zip(listeners).map(|(handle, listener)| accept_all(handle, listener)).collect();
        assert_eq!(accepted.iter().sum::<usize>(), clients.len(), "{accepted:?}");
        assert!(accepted.iter().all(|&n| n > 0), "one listener got every connection: {accepted:?}");
    }

    /// Accepts on the listener's own runtime (it is registered there) until
    /// nothing more comes for half a second; returns how many.
    fn accept_all(handle: &Handle, listener: TcpListener) -> usize {
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let mut n = 0;
            while let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_millis(500), listener.accept()).await {
                n += 1;
            }
            let _ = tx.send(n);
        });
        rx.recv().unwrap()
    }
}
