//! The seccomp supervisor: how `socks4-run` socksifies programs that LD_PRELOAD cannot reach
//! (static binaries, Go, raw system calls).
//!
//! socks4-run forks; the child sets no_new_privs, installs the filter (`filter`) with a listener,
//! hands the listener's number to the parent (which takes it with pidfd_getfd) and execs the
//! program. The parent answers the notified calls (`notify`) with the shim's own decisions and
//! SOCKS exchanges (`crate::ops`), run on the program's own sockets (`program`), remembering what
//! it did per socket inode (`state`). Several threads receive notifications (`pool`), so a call
//! that waits on the network never holds up the program's other calls.

mod accept;
mod bind;
mod connect;
mod dns;
pub mod filter;
mod names;
mod notify;
mod pool;
mod program;
mod state;

use std::ffi::c_int;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::sys::Errno;
pub use filter::{Exec, check_kernel};
use notify::{Answer, Call, Listener};
use state::{Flight, State};

/// Everything the notification loop and the workers share; lives as long as the process.
pub struct Supervisor {
    listener: Listener,
    state: State,
    pool: pool::Pool,
    config: &'static Config,
    dns: Option<&'static dns::Responder>,
}

impl Supervisor {
    /// The program's descriptor (argument 0 of the call) as ours. The pidfd it is taken through
    /// names the calling task itself, so a reused thread id cannot lead to another process.
    fn take_fd(&self, call: &Call) -> Result<OwnedFd, Errno> {
        let fd = program::take_fd(call.tid, call.int(0))?;
        self.state.lock().saw(call.tid);
        Ok(fd)
    }

    /// Answers call `id` with `ok` (or the errno) once `flight` lands; gives up when the call is
    /// gone (a signal interrupted it: its restart waits on the same flight).
    fn answer_when_done(&self, id: u64, flight: &Flight, ok: Answer) {
        loop {
            match flight.wait(Duration::from_millis(200)) {
                Some(Ok(())) => return self.listener.answer(id, ok),
                Some(Err(e)) => return self.listener.answer(id, Answer::Fail(e)),
                None if !self.listener.is_valid(id) => return,
                None => {}
            }
        }
    }

    /// Handles `call` again once `flight` lands (the state then answers it), unless it is gone.
    fn handle_when_done(&'static self, call: Call, flight: &Flight) {
        loop {
            match flight.wait(Duration::from_millis(200)) {
                Some(_) => return self.handle(call),
                None if !self.listener.is_valid(call.id) => return,
                None => {}
            }
        }
    }

    fn handle(&'static self, call: Call) {
        let answer = match call.nr {
            libc::SYS_connect => connect::connect(self, call),
            libc::SYS_sendto => connect::sendto(self, call),
            libc::SYS_bind => bind::bind(self, call),
            libc::SYS_listen => bind::listen(self, call),
            libc::SYS_accept | libc::SYS_accept4 => accept::accept(self, call),
            libc::SYS_getsockname => names::getsockname(self, call),
            libc::SYS_getpeername => names::getpeername(self, call),
            libc::SYS_recvfrom => dns::recvfrom(self, call),
            _ => Some(Answer::Continue),
        };
        if let Some(answer) = answer {
            self.listener.answer(call.id, answer);
        }
    }
}

fn pipe() -> Result<[c_int; 2], Errno> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(crate::sys::errno());
    }
    Ok(fds)
}

/// Async-signal-safe stderr line for the child between fork and exec.
fn child_fail(what: &[u8], errno: Errno) -> ! {
    let mut buf = [0u8; 256];
    let mut n = 0;
    for part in [b"socks4-run: ".as_slice(), what, b": errno ".as_slice()] {
        let k = part.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&part[..k]);
        n += k;
    }
    let mut digits = [0u8; 12];
    let mut d = digits.len();
    let mut v = errno.unsigned_abs();
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &b in digits[d..].iter().chain(b"\n") {
        if n < buf.len() {
            buf[n] = b;
            n += 1;
        }
    }
    // SAFETY: write and _exit are async-signal-safe; buf is valid for n bytes.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::_exit(if errno == libc::ENOENT { 127 } else { 126 })
    }
}

/// Runs the program under the supervisor and returns the exit code for socks4-run: the program's,
/// or 128 + the signal that killed it; 126 when it could not be started under the filter (it is
/// then never run at all).
pub fn run(exec: &Exec) -> i32 {
    if let Err(why) = check_kernel() {
        eprintln!("socks4-run: cannot supervise {}: {why}", exec.path.to_string_lossy());
        return 126;
    }
    let config = crate::config::get();
    let filter = filter::Filter::new();
    let (Ok(up), Ok(down)) = (pipe(), pipe()) else {
        eprintln!("socks4-run: cannot create pipes: {}", std::io::Error::last_os_error());
        return 126;
    };
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());

    // SAFETY: socks4-run has started no thread yet; the child only makes async-signal-safe calls
    // (prctl, seccomp, read, write, close, signal, execve, _exit) on memory prepared above.
    let child = unsafe { libc::fork() };
    if child < 0 {
        eprintln!("socks4-run: fork: {}", std::io::Error::last_os_error());
        return 126;
    }
    if child == 0 {
        // SAFETY: see above; every pointer is into memory prepared before fork.
        unsafe {
            libc::close(up[0]);
            libc::close(down[1]);
            let fd = match filter.install() {
                Ok(fd) => fd,
                Err(e) => {
                    let report = -e;
                    libc::write(up[1], (&raw const report).cast(), 4);
                    child_fail(b"cannot install the seccomp filter", e);
                }
            };
            libc::write(up[1], (&raw const fd).cast(), 4);
            let mut go = 0u8;
            if libc::read(down[0], (&raw mut go).cast(), 1) != 1 || go != b'g' {
                libc::_exit(126);
            }
            // The program must not hold its own supervisor's listener.
            libc::close(fd);
            // Rust ignores SIGPIPE; exec would pass that on.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(exec.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            child_fail(b"cannot execute the program", crate::sys::errno());
        }
    }
    // SAFETY: closing our copies of the child's pipe ends.
    unsafe {
        libc::close(up[1]);
        libc::close(down[0]);
    }
    let mut fd: c_int = 0;
    // SAFETY: reading 4 bytes into an int.
    let n = unsafe { libc::read(up[0], (&raw mut fd).cast(), 4) };
    let listener =
        if n == 4 && fd >= 0 { program::take_fd(child, fd).map_err(|e| (e, true)) } else { Err((-fd, false)) };
    let listener = match listener {
        Ok(l) => l,
        Err((e, ours)) => {
            if ours {
                eprintln!(
                    "socks4-run: cannot take the seccomp listener from the child: {}",
                    std::io::Error::from_raw_os_error(e)
                );
            }
            // SAFETY: closing the pipe makes the child exit without running the program.
            unsafe { libc::close(down[1]) };
            wait_child(child);
            return 126;
        }
    };
    // SAFETY: one byte from a static.
    unsafe {
        libc::write(down[1], b"g".as_ptr().cast(), 1);
        libc::close(down[1]);
        libc::close(up[0]);
    }
    forward_signals(child);
    let dns = dns::Responder::start(config);
    let sup: &'static Supervisor = Box::leak(Box::new(Supervisor {
        listener: Listener::new(listener),
        state: State::default(),
        pool: pool::Pool::default(),
        config,
        dns,
    }));
    pool::start_receiver(sup);
    let status = wait_child(child);
    // The program's own descendants may outlive it: serve them until the last one is gone (the
    // listener reports a hangup once no process uses the filter).
    loop {
        let mut p = libc::pollfd { fd: sup.listener.raw(), events: 0, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the child; its exit code, or 128 + the signal that killed it.
fn wait_child(child: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            break;
        }
        if r < 0 && crate::sys::errno() != libc::EINTR {
            return 126;
        }
    }
    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
}

/// SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to socks4-run go to the program. SIGINT and SIGQUIT
/// are ignored: the terminal sends them to the program as well.
fn forward_signals(child: libc::pid_t) {
    // SAFETY: sigset operations on a local set; blocking in this (still the only) thread, so every
    // thread started later inherits the mask and sigwait below is the one receiver.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGINT, libc::SIGQUIT] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let set = Arc::new(SigSet(set));
    std::thread::spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: a valid set and out-parameter.
            if unsafe { libc::sigwait(&set.0, &mut sig) } != 0 {
                return;
            }
            if sig != libc::SIGINT && sig != libc::SIGQUIT {
                // SAFETY: signalling our own child (reaped only by the waiter, after which kill may
                // hit nothing or a zombie-free pid; the loop ends with the process).
                unsafe { libc::kill(child, sig) };
            }
        }
    });
}

struct SigSet(libc::sigset_t);
// SAFETY: a sigset_t is plain data, only read by the signal thread.
unsafe impl Send for SigSet {}
// SAFETY: as above.
unsafe impl Sync for SigSet {}
