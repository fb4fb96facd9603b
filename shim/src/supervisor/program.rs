//! The supervised program's side of a call: its descriptors (pidfd_getfd gives us the very same
//! open file description, so the SOCKS exchange runs on the program's own socket) and its memory
//! (the sockaddr it passed, the buffers we answer into).
//!
//! Memory is read and written with process_vm_readv/writev. The program can change its own memory
//! while we look: this makes honest programs work, it is not a sandbox.

use std::collections::HashMap;
use std::ffi::c_int;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::sockaddr;
use crate::sys::{self, Errno};

/// pidfd_open's flag for a thread (not only a thread-group leader), Linux 6.9.
const PIDFD_THREAD: c_int = libc::O_EXCL;

fn pidfd_open(pid: i32, flags: c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(sys::errno());
    }
    // SAFETY: a fresh descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

fn pidfd_getfd(pidfd: &OwnedFd, fd: c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags; the result is ours.
    let new = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if new < 0 {
        return Err(sys::errno());
    }
    // SAFETY: a fresh descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new as c_int) })
}

/// The thread-group id of `tid`, from /proc (kernels before 6.9 open pidfds on leaders only).
fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

/// A pidfd for the process `tid` belongs to.
fn pidfd_of(tid: i32) -> Result<OwnedFd, Errno> {
    match pidfd_open(tid, PIDFD_THREAD) {
        Err(libc::EINVAL) => match pidfd_open(tid, 0) {
            Err(libc::EINVAL | libc::ENOENT) => pidfd_open(tgid_of(tid).ok_or(libc::ESRCH)?, 0),
            r => r,
        },
        r => r,
    }
}

/// pidfds of the threads seen, kept: a pidfd names one task for good, so a cached one whose tid
/// was reused by a newer task fails (ESRCH) instead of reaching the wrong process, and is renewed.
static PIDFDS: Mutex<Option<HashMap<i32, Arc<OwnedFd>>>> = Mutex::new(None);

fn cached_pidfd(tid: i32, fresh: bool) -> Result<Arc<OwnedFd>, Errno> {
    let mut cache = PIDFDS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if !fresh && let Some(p) = cache.get(&tid) {
        return Ok(p.clone());
    }
    if cache.len() > 4096 {
        cache.clear();
    }
    let p = Arc::new(pidfd_of(tid)?);
    cache.insert(tid, p.clone());
    Ok(p)
}

/// Our duplicate of descriptor `fd` of thread `tid`'s process: the same open file description.
///
/// # Errors
///
/// EBADF when the program has no such descriptor; ESRCH when it is gone.
pub fn take_fd(tid: i32, fd: c_int) -> Result<OwnedFd, Errno> {
    match pidfd_getfd(&*cached_pidfd(tid, false)?, fd) {
        Err(libc::ESRCH) => pidfd_getfd(&*cached_pidfd(tid, true)?, fd),
        r => r,
    }
}

/// Whether pidfd_getfd works here (on our own stderr).
pub fn probe_pidfd_getfd() -> Result<(), Errno> {
    pidfd_getfd(&pidfd_open(sys::pid(), 0)?, 2).map(drop)
}

/// The inode of a socket: the key of the supervisor's state (the same for every descriptor of one
/// socket, in every process).
pub fn inode(fd: &OwnedFd) -> Result<u64, Errno> {
    // SAFETY: stat is plain data, valid zeroed.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a writable stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(sys::errno());
    }
    Ok(st.st_ino)
}

/// Reads `len` bytes at `addr` in thread `tid`'s memory.
pub fn read(tid: i32, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` is our buffer of `len` bytes; the remote address is only read by the kernel,
    // which checks it against the program's mappings.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    match n {
        n if n < 0 => Err(sys::errno()),
        n if n as usize != len => Err(libc::EFAULT),
        _ => Ok(buf),
    }
}

/// Writes `bytes` at `addr` in thread `tid`'s memory.
pub fn write(tid: i32, addr: u64, bytes: &[u8]) -> Result<(), Errno> {
    let local = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: `local` is our buffer, only read; the kernel checks the remote range against the
    // program's writable mappings.
    let n = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
    match n {
        n if n < 0 => Err(sys::errno()),
        n if n as usize != bytes.len() => Err(libc::EFAULT),
        _ => Ok(()),
    }
}

/// The socket address the program passed (`addr`, `len`); None for a null pointer or a family
/// other than IPv4/IPv6.
pub fn read_sockaddr(tid: i32, addr: u64, len: u64) -> Result<Option<SocketAddr>, Errno> {
    if addr == 0 || len < 2 {
        return Ok(None);
    }
    let bytes = read(tid, addr, (len as usize).min(size_of::<libc::sockaddr_storage>()))?;
    // SAFETY: `bytes` is valid for its length.
    Ok(unsafe { sockaddr::read(bytes.as_ptr().cast(), bytes.len() as libc::socklen_t) })
}

/// Answers a call's `(struct sockaddr *addr, socklen_t *len)` out-parameters as the kernel does:
/// at most `*len` bytes, `*len` set to the full size. Nothing is written when `addr` is null.
pub fn write_sockaddr(tid: i32, name: &SocketAddr, addr: u64, len_ptr: u64) -> Result<(), Errno> {
    if addr == 0 || len_ptr == 0 {
        return Ok(());
    }
    let room = u32::from_ne_bytes(read(tid, len_ptr, 4)?.try_into().expect("4 bytes")) as usize;
    let raw = sockaddr::RawAddr::from(name);
    // SAFETY: raw is a sockaddr of raw.size() bytes on our stack.
    let bytes = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.size() as usize) };
    write(tid, addr, &bytes[..room.min(bytes.len())])?;
    write(tid, len_ptr, &raw.size().to_ne_bytes())
}
