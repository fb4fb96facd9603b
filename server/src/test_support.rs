//! Helpers for the crate's unit tests.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Runs `f` on a thread of its own and returns what it returns, failing the
/// calling test if `f` has not finished within `limit`: a loop that never
/// ends, or a task that never yields (no timer on its runtime could fire),
/// then fails the test in seconds instead of hanging the suite.
pub(crate) fn on_thread_within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(limit) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("not finished within {limit:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("it panicked (see above)"),
    }
}
