//! The threads that receive notifications. Each one that takes a call handles it itself, even a
//! call that waits on the network (a CONNECT or BIND exchange, a blocking accept): no hand-off to
//! another thread sits on the path of a connect. When the last idle receiver takes a call, a new
//! one starts first, so a slow proxy never holds up the program's other calls; receivers beyond a
//! few idle ones end.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Supervisor;
use crate::log::error;

/// Idle receivers kept after a burst.
const KEEP_IDLE: usize = 4;

#[derive(Default)]
pub struct Pool {
    idle: AtomicUsize,
}

impl Pool {
    /// Runs a job that may wait: here, on the receiver that took the call (see the module doc).
    pub fn run(&self, job: impl FnOnce()) {
        job();
    }
}

/// Starts a receiver thread.
pub fn start_receiver(sup: &'static Supervisor) {
    let spawned = std::thread::Builder::new().name("socks4-supervisor".into()).spawn(move || receive_loop(sup));
    if let Err(e) = spawned {
        error!("supervisor: cannot start a thread: {e}");
    }
}

fn receive_loop(sup: &'static Supervisor) {
    loop {
        sup.pool.idle.fetch_add(1, Ordering::AcqRel);
        let call = sup.listener.receive();
        if sup.pool.idle.fetch_sub(1, Ordering::AcqRel) == 1 {
            start_receiver(sup);
        }
        match call {
            Ok(call) => sup.handle(call),
            // The caller went away, or a signal: the next one.
            Err(libc::ENOENT | libc::EINTR) => {}
            Err(e) => {
                error!("supervisor: reading a notification: {}", std::io::Error::from_raw_os_error(e));
                return;
            }
        }
        if sup.pool.idle.load(Ordering::Acquire) >= KEEP_IDLE {
            return;
        }
    }
}
