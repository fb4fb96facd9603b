//! The exported C entry points that LD_PRELOAD puts in front of libc's. Each file holds only the
//! thin `extern "C"` functions; the decisions are in `ops`.
//!
//! Every hook runs its op inside the re-entrancy guard (a nested call goes straight to libc),
//! catches panics (failing closed with EIO: a panic must never turn into a direct connection),
//! and leaves errno untouched unless it returns -1.

mod accept;
mod bind;
mod close;
mod close_range;
mod connect;
mod dup;
mod fcntl;
mod getaddrinfo;
mod gethostbyaddr;
mod gethostbyname;
mod getnameinfo;
mod getpeername;
mod getsockname;
mod listen;
mod sendto;

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use socks4_shim::guard;
use socks4_shim::log::error;
use socks4_shim::ops::Verdict;
use socks4_shim::sys;

/// Runs `op` for a hooked call. A nested call (the shim's own) passes through.
fn decide<T>(op: impl FnOnce() -> Verdict<T>) -> Verdict<T> {
    decide_with(Verdict::Pass, Verdict::Fail(libc::EIO), op)
}

/// Runs `op` inside the re-entrancy guard with errno saved and restored: a nested call gets
/// `nested` (pass through), a panic gets `panicked` (fail closed, never the real call).
fn decide_with<T>(nested: T, panicked: T, op: impl FnOnce() -> T) -> T {
    let Some(_guard) = guard::enter() else { return nested };
    let saved = sys::errno();
    let answer = catch_unwind(AssertUnwindSafe(op)).unwrap_or_else(|_| {
        error!("internal error in the shim; the call fails");
        panicked
    });
    sys::set_errno(saved);
    answer
}

/// Runs bookkeeping that must not change the call's result (close, dup).
fn note(op: impl FnOnce()) {
    let Some(_guard) = guard::enter() else { return };
    let saved = sys::errno();
    if catch_unwind(AssertUnwindSafe(op)).is_err() {
        error!("internal error in the shim while tracking descriptors");
    }
    sys::set_errno(saved);
}

/// getsockname/getpeername: asks `lookup` for the address to report, writes
/// it to `addr`/`len`, or leaves the call to `real`. A null buffer goes to
/// `real` too: it is the kernel's to refuse (EFAULT).
///
/// # Safety
///
/// `addr` is null or valid for `*len` bytes, `len` null or valid.
unsafe fn answer_name(
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
    lookup: impl FnOnce() -> Verdict<std::net::SocketAddr>,
    real: impl FnOnce() -> c_int,
) -> c_int {
    let verdict = if addr.is_null() || len.is_null() { Verdict::Pass } else { decide(lookup) };
    match verdict {
        Verdict::Pass => real(),
        Verdict::Done(name) => {
            // SAFETY: addr is valid for *len bytes (non-null, checked above; the contract).
            unsafe { socks4_shim::sockaddr::write(&name, addr, len) };
            0
        }
        Verdict::Fail(e) => fail(e),
    }
}

/// The C result of a verdict whose value is the return value.
fn finish(verdict: Verdict<c_int>, real: impl FnOnce() -> c_int) -> c_int {
    match verdict {
        Verdict::Pass => real(),
        Verdict::Done(v) => v,
        Verdict::Fail(e) => fail(e),
    }
}

fn fail(errno: sys::Errno) -> c_int {
    sys::set_errno(errno);
    -1
}

/// Loads the configuration before main, so the first connect does not pay for it, installs the
/// fork handlers and maps the tables the program tree shares.
#[ctor::ctor]
fn init() {
    note(|| {
        socks4_shim::registry::install_fork_handlers();
        let config = socks4_shim::config::get();
        // Both shared tables exist before any fork, so a child's lookups and its findings about
        // dead upstreams are its parent's too.
        if config.uses_placeholders() {
            socks4_shim::dns_pool::create();
        }
        if !config.broken {
            socks4_shim::backoff::create();
        }
    });
}
