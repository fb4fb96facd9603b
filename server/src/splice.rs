//! Zero-copy relay of one direction on Linux: `splice(2)` from the source
//! socket into a pipe and from the pipe into the destination socket, so the
//! bytes never enter user space, driven by tokio's readiness.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Pipe capacity asked for with `F_SETPIPE_SZ`. The default 64 KiB is 16
/// page slots, and a socket hands over its data one page fragment per slot,
/// so a bigger pipe moves more per `splice` call (fewer syscalls and
/// wake-ups per byte). The kernel may refuse (`pipe-max-size`, per-user
/// pipe limits); then the pipe keeps whatever size it got.
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// A non-blocking pipe used as the in-kernel buffer of one direction.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its real capacity: the most one `splice` into it can move.
    size: usize,
}

impl Pipe {
    /// # Errors
    ///
    /// `pipe2` failing: EMFILE or ENFILE when descriptors run out.
    pub(crate) fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and nothing
        // else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: plain fcntl on a descriptor we own; F_SETPIPE_SZ takes an int
        // and returns the new size or -1 (a refusal leaves the pipe as it was).
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        // SAFETY: as above; F_GETPIPE_SZ takes no argument.
        let size = if set > 0 { set } else { unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) } };
        // 4096 is the smallest pipe the kernel makes: a safe guess if asking failed.
        let size = usize::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096);
        Ok(Pipe { read, write, size })
    }
}

/// How a spliced direction ended.
pub(crate) enum Spliced {
    /// The source reached EOF; everything read was delivered.
    Eof,
    /// The kernel cannot splice this pair (EINVAL before any byte moved):
    /// the caller copies instead.
    Unsupported,
}

/// Moves `from`'s bytes to `to` through `pipe` until `from`'s EOF, adding
/// each byte delivered to `count`. Each chunk read into the pipe is written
/// out completely before the next read, so the pipe is empty whenever we
/// read from the socket: EAGAIN then always means "no data", never "pipe
/// full". Does not shut `to` down.
///
/// # Errors
///
/// The first error of either socket (reset, broken pipe...).
pub(crate) async fn pump(pipe: &Pipe, from: &TcpStream, to: &TcpStream, count: &mut u64) -> io::Result<Spliced> {
    let mut moved_any = false;
    loop {
        let read =
            from.async_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), pipe.size)).await;
        let n = match read {
            Ok(0) => return Ok(Spliced::Eof),
            Ok(n) => n,
            Err(e) if cannot_splice(&e, moved_any) => return Ok(Spliced::Unsupported),
            Err(e) => return Err(e),
        };
        moved_any = true;
        let mut left = n;
        while left > 0 {
            let m = to.async_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)).await?;
            if m == 0 {
                // Cannot happen with bytes in the pipe; do not spin if it does.
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= m;
            *count += m as u64;
        }
    }
}

/// Whether `e` means these sockets cannot be spliced at all (EINVAL before
/// any byte moved): then the caller copies instead. Later errors are the
/// connection's own.
fn cannot_splice(e: &io::Error, moved_any: bool) -> bool {
    !moved_any && e.raw_os_error() == Some(libc::EINVAL)
}

/// One non-blocking `splice` of up to `len` bytes; EAGAIN comes back as
/// `WouldBlock`, which makes tokio wait for readiness again.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors stay open for the call (owned by the caller's
    // TcpStream and Pipe); null offsets are required for sockets and pipes.
    // No SPLICE_F_MORE: it would cork small interactive writes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_einval_before_any_byte_means_no_splice() {
        let einval = io::Error::from_raw_os_error(libc::EINVAL);
        assert!(cannot_splice(&einval, false));
        assert!(!cannot_splice(&einval, true));
        assert!(!cannot_splice(&io::Error::from_raw_os_error(libc::ECONNRESET), false));
    }

    /// The pipe gets the capacity asked for (the kernel's limits allow 256 KiB: `pipe-max-size`
    /// is 1 MiB by default).
    #[test]
    fn pipe_has_the_size_asked_for() {
        assert_eq!(Pipe::new().unwrap().size, 256 * 1024);
    }
}
