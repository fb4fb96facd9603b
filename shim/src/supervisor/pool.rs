//! Worker threads for calls that wait on the network (a CONNECT or BIND exchange, a blocking
//! accept), so one slow proxy never holds up the program's other calls. Threads are kept for
//! reuse: a new one starts only when every worker is busy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    jobs: Mutex<Sender<Job>>,
    queue: Arc<Mutex<Receiver<Job>>>,
    idle: Arc<AtomicUsize>,
}

impl Default for Pool {
    fn default() -> Self {
        let (tx, rx) = channel();
        Pool { jobs: Mutex::new(tx), queue: Arc::new(Mutex::new(rx)), idle: Arc::new(AtomicUsize::new(0)) }
    }
}

impl Pool {
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        // Claim an idle worker, or start one.
        let claimed = self.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
        if !claimed {
            // The new worker takes this job first, so it starts busy.
            let (queue, idle) = (self.queue.clone(), self.idle.clone());
            let spawned = std::thread::Builder::new().name("socks4-worker".into()).spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = job else { return };
                    job();
                    idle.fetch_add(1, Ordering::AcqRel);
                }
            });
            if spawned.is_err() {
                // No thread to be had: do the work here rather than leave the call unanswered.
                job();
                return;
            }
        }
        let _ = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(Box::new(job));
    }
}
