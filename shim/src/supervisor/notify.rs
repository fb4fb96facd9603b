//! The seccomp listener: receive a notification, check it is still alive, answer it (a value, an
//! errno, or "let the call continue"), and install a descriptor into the program (ADDFD).

use std::ffi::c_int;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sys::Errno;

/// One intercepted system call, as the kernel reported it.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub id: u64,
    /// The calling thread (in our pid namespace).
    pub tid: i32,
    pub nr: i64,
    pub args: [u64; 6],
}

impl Call {
    /// Argument `i` as the int the C prototype has (descriptors, flags).
    pub fn int(&self, i: usize) -> c_int {
        self.args[i] as c_int
    }
}

/// How the program's call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The kernel performs the call with the program's own arguments.
    Continue,
    /// The call returns this value.
    Value(i64),
    /// The call fails with this errno.
    Fail(Errno),
}

/// The listener descriptor of the program's filter.
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    pub fn new(fd: OwnedFd) -> Self {
        let listener = Listener { fd };
        // Linux 6.6: wake the receiving thread synchronously, on the caller's CPU, instead of
        // through the scheduler: a notified call then costs one switch there and one back, not two
        // cross-CPU wakeups. Older kernels refuse the flag; the supervisor works the same without.
        const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
        // SAFETY: SET_FLAGS takes the flags as its integer argument.
        unsafe { libc::ioctl(listener.raw(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP) };
        listener
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Waits for the next notification.
    ///
    /// # Errors
    ///
    /// ENOENT: the caller went away between the wakeup and the read (try again); EINTR; others
    /// mean the listener is unusable.
    pub fn receive(&self) -> Result<Call, Errno> {
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into n, which is large enough (the sizes were checked
        // against the kernel's in filter::check_kernel).
        if unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) } < 0 {
            return Err(crate::sys::errno());
        }
        Ok(Call { id: n.id, tid: n.pid as i32, nr: i64::from(n.data.nr), args: n.data.args })
    }

    /// Whether the notification is still pending: the caller has not been killed or interrupted
    /// by a signal. Checked after reading the program's memory and before writing it.
    pub fn is_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: ID_VALID reads one u64.
        unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
    }

    /// Ends the call. A caller that went away meanwhile (ENOENT) is not an error.
    pub fn answer(&self, id: u64, answer: Answer) {
        let (val, error, flags) = match answer {
            Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Answer::Value(v) => (v, 0, 0),
            Answer::Fail(e) => (0, -e, 0),
        };
        let mut resp = libc::seccomp_notif_resp { id, val, error, flags };
        // SAFETY: SEND reads one seccomp_notif_resp.
        unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    }

    /// Installs `fd` (ours) into the calling process and ends the call with the new descriptor's
    /// number, atomically (SECCOMP_ADDFD_FLAG_SEND): the accept of a BIND socket.
    ///
    /// # Errors
    ///
    /// The ioctl's errno (ENOENT: the caller went away; EMFILE: its table is full).
    pub fn answer_with_fd(&self, id: u64, fd: RawFd, cloexec: bool) -> Result<c_int, Errno> {
        let mut addfd = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: fd as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: ADDFD reads one seccomp_notif_addfd; srcfd is a descriptor we own.
        let n = unsafe { libc::ioctl(self.raw(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &mut addfd) };
        if n < 0 { Err(crate::sys::errno()) } else { Ok(n) }
    }
}
