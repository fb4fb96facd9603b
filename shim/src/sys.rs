//! The real libc functions behind our hooks (found with `dlsym(RTLD_NEXT)`) and safe wrappers over raw descriptors.
//!
//! Every socket call the shim itself makes goes through here: calling `libc::connect` from inside
//! the shim would bind to our own exported `connect` and recurse.

use std::ffi::{CStr, c_int, c_void};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicPtr, Ordering};

use libc::{sockaddr, socklen_t};

use crate::sockaddr::{self as sa, RawAddr};

/// An errno value.
pub type Errno = c_int;

/// One lazily resolved libc symbol. Resolution never blocks and never recurses: two threads racing
/// both call `dlsym` and store the same pointer.
struct Symbol {
    name: &'static CStr,
    ptr: AtomicPtr<c_void>,
}

impl Symbol {
    const fn new(name: &'static CStr) -> Self {
        Symbol { name, ptr: AtomicPtr::new(std::ptr::null_mut()) }
    }

    fn get(&self) -> *mut c_void {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            return p;
        }
        // SAFETY: RTLD_NEXT and a NUL-terminated name are what dlsym expects; it returns null when
        // the symbol does not exist, which callers check.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) };
        self.ptr.store(p, Ordering::Release);
        p
    }
}

/// Declares `real::name(args) -> ret`, calling the next definition of `name` (libc's), or failing
/// with ENOSYS when libc has none (e.g. `close_range` before glibc 2.34).
macro_rules! real_functions {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        /// The real libc functions, one per hooked name.
        pub mod real {
            use super::*;
            $(
                /// Calls libc's own function of this name.
                ///
                /// # Safety
                ///
                /// The same contract as the libc function.
                // C's prototypes, not ours to shorten (gethostbyaddr_r has 8 parameters).
                #[allow(clippy::too_many_arguments)]
                pub unsafe fn $name($($arg: $ty),*) -> $ret {
                    static SYM: Symbol = Symbol::new(match CStr::from_bytes_with_nul(
                        concat!(stringify!($name), "\0").as_bytes()) {
                        Ok(s) => s,
                        Err(_) => panic!("symbol name"),
                    });
                    let p = SYM.get();
                    if p.is_null() {
                        set_errno(libc::ENOSYS);
                        return -1 as $ret;
                    }
                    // SAFETY: p is libc's definition of this very function, whose C prototype
                    // matches the declared Rust signature.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                    // SAFETY: forwarded under the caller's contract.
                    unsafe { f($($arg),*) }
                }
            )*

            /// libc's `fcntl`, which is variadic: the third argument is an int, a long or a pointer,
            /// all passed in one integer register, so one `usize` carries any of them.
            ///
            /// # Safety
            ///
            /// The same contract as fcntl(2) for `cmd`.
            pub unsafe fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
                static SYM: Symbol = Symbol::new(c"fcntl");
                // SAFETY: forwarded under the caller's contract.
                unsafe { variadic_fcntl(&SYM, fd, cmd, arg) }
            }

            /// libc's `fcntl64`; see [`fcntl`].
            ///
            /// # Safety
            ///
            /// The same contract as fcntl(2) for `cmd`.
            pub unsafe fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
                static SYM: Symbol = Symbol::new(c"fcntl64");
                // SAFETY: forwarded under the caller's contract.
                unsafe { variadic_fcntl(&SYM, fd, cmd, arg) }
            }

            /// # Safety
            ///
            /// `sym` names fcntl or fcntl64; the fcntl(2) contract for `cmd`.
            unsafe fn variadic_fcntl(sym: &Symbol, fd: c_int, cmd: c_int, arg: usize) -> c_int {
                let p = sym.get();
                if p.is_null() {
                    set_errno(libc::ENOSYS);
                    return -1;
                }
                // SAFETY: p is libc's variadic fcntl/fcntl64.
                let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int = unsafe { std::mem::transmute(p) };
                // SAFETY: forwarded under the caller's contract.
                unsafe { f(fd, cmd, arg) }
            }
        }
    };
}

real_functions! {
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    listen(fd: c_int, backlog: c_int) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    close(fd: c_int) -> c_int;
    close_range(first: libc::c_uint, last: libc::c_uint, flags: c_int) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    sendto(fd: c_int, buf: *const c_void, len: libc::size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> libc::ssize_t;
    getaddrinfo(node: *const libc::c_char, service: *const libc::c_char, hints: *const libc::addrinfo, res: *mut *mut libc::addrinfo) -> c_int;
    getnameinfo(addr: *const sockaddr, len: socklen_t, host: *mut libc::c_char, hostlen: socklen_t, serv: *mut libc::c_char, servlen: socklen_t, flags: c_int) -> c_int;
    gethostbyname_r(name: *const libc::c_char, ret: *mut libc::hostent, buf: *mut libc::c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int;
    gethostbyname2_r(name: *const libc::c_char, af: c_int, ret: *mut libc::hostent, buf: *mut libc::c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int;
    gethostbyaddr_r(addr: *const c_void, len: socklen_t, af: c_int, ret: *mut libc::hostent, buf: *mut libc::c_char, buflen: libc::size_t, result: *mut *mut libc::hostent, h_errnop: *mut c_int) -> c_int;
}

/// The real functions that return a pointer (null when libc lacks them, which glibc never does).
pub mod real_ptr {
    use super::*;

    macro_rules! pointer_functions {
        ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
            /// Calls libc's own function of this name.
            ///
            /// # Safety
            ///
            /// The same contract as the libc function.
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static SYM: Symbol = Symbol::new(match CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(s) => s,
                    Err(_) => panic!("symbol name"),
                });
                let p = SYM.get();
                if p.is_null() {
                    return std::ptr::null_mut();
                }
                // SAFETY: p is libc's definition of this very function, with this prototype.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: forwarded under the caller's contract.
                unsafe { f($($arg),*) }
            }
        )*};
    }

    pointer_functions! {
        gethostbyname(name: *const libc::c_char) -> *mut libc::hostent;
        gethostbyname2(name: *const libc::c_char, af: c_int) -> *mut libc::hostent;
        gethostbyaddr(addr: *const c_void, len: socklen_t, af: c_int) -> *mut libc::hostent;
    }
}

pub fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = e };
}

unsafe extern "C" {
    /// glibc's per-thread h_errno slot (netdb.h), which the libc crate does not declare.
    fn __h_errno_location() -> *mut c_int;
}

/// Sets h_errno, the error of the gethostby* functions.
pub fn set_h_errno(e: c_int) {
    // SAFETY: __h_errno_location returns this thread's h_errno slot, valid for the thread's life.
    unsafe { *__h_errno_location() = e };
}

/// `Ok` value or the errno of a `-1` return.
fn check(ret: c_int) -> Result<c_int, Errno> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

pub fn connect(fd: c_int, addr: &SocketAddr) -> Result<(), Errno> {
    let raw = RawAddr::from(addr);
    // SAFETY: raw points at a sockaddr of raw.size() bytes that lives across the call.
    check(unsafe { real::connect(fd, raw.as_ptr(), raw.size()) }).map(drop)
}

/// Dissolves a connection (connect with AF_UNSPEC), so a socket whose SOCKS exchange failed is not
/// left talking to the proxy if the program writes to it anyway.
pub fn disconnect(fd: c_int) {
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: a plain sockaddr of its own size; the result does not matter.
    unsafe { real::connect(fd, &unspec, size_of::<libc::sockaddr>() as socklen_t) };
}

pub fn bind(fd: c_int, addr: &SocketAddr) -> Result<(), Errno> {
    let raw = RawAddr::from(addr);
    // SAFETY: raw points at a sockaddr of raw.size() bytes that lives across the call.
    check(unsafe { real::bind(fd, raw.as_ptr(), raw.size()) }).map(drop)
}

pub fn send(fd: c_int, buf: &[u8], flags: c_int) -> Result<usize, Errno> {
    // SAFETY: buf is valid for buf.len() bytes. `send` is not hooked, so libc's is called.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

pub fn recv(fd: c_int, buf: &mut [u8], flags: c_int) -> Result<usize, Errno> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// Polls one descriptor; `Ok(0)` on timeout, else its revents.
pub fn poll(fd: c_int, events: i16, timeout_ms: c_int) -> Result<i16, Errno> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = check(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(if n == 0 { 0 } else { p.revents })
}

pub fn get_flags(fd: c_int) -> Result<c_int, Errno> {
    // SAFETY: F_GETFL takes no argument.
    check(unsafe { real::fcntl(fd, libc::F_GETFL, 0) })
}

pub fn set_flags(fd: c_int, flags: c_int) -> Result<(), Errno> {
    // SAFETY: F_SETFL takes an int.
    check(unsafe { real::fcntl(fd, libc::F_SETFL, flags as usize) }).map(drop)
}

/// Duplicates `fd` onto the lowest free descriptor, with or without close-on-exec.
pub fn dup_fd(fd: c_int, cloexec: bool) -> Result<c_int, Errno> {
    let cmd = if cloexec { libc::F_DUPFD_CLOEXEC } else { libc::F_DUPFD };
    // SAFETY: F_DUPFD* take an int (the lowest acceptable descriptor).
    check(unsafe { real::fcntl(fd, cmd, 0) })
}

fn getsockopt_int(fd: c_int, level: c_int, name: c_int) -> Result<c_int, Errno> {
    let mut v: c_int = 0;
    let mut len = size_of::<c_int>() as socklen_t;
    // SAFETY: v and len are valid for writes and len is v's size.
    check(unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast(), &mut len) })?;
    Ok(v)
}

/// A TCP socket (MPTCP included: it speaks TCP to the proxy). SCTP's SOCK_STREAM, UDP, raw and
/// non-sockets are not ours.
pub fn is_tcp(fd: c_int) -> bool {
    const IPPROTO_MPTCP: c_int = 262;
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) == Ok(libc::SOCK_STREAM)
        && matches!(getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL), Ok(libc::IPPROTO_TCP | IPPROTO_MPTCP))
}

/// The pending error of a socket (the result of a non-blocking connect).
pub fn socket_error(fd: c_int) -> Errno {
    getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or_else(|e| e)
}

/// The kernel's own idea of a socket's local address, and its family.
pub fn local_addr(fd: c_int) -> Result<SocketAddr, Errno> {
    let mut storage = sa::Storage::new();
    let mut len = storage.capacity();
    // SAFETY: storage is writable for len bytes.
    check(unsafe { real::getsockname(fd, storage.as_mut_ptr(), &mut len) })?;
    storage.to_socket_addr(len).ok_or(libc::EAFNOSUPPORT)
}

pub fn write_stderr(mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes; `write` is not hooked.
        let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
        if n > 0 {
            buf = &buf[n as usize..];
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            return;
        }
    }
}

pub fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The login name of the effective user (getpwuid_r(geteuid())), if there is one.
pub fn login_name() -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; all-zero is a valid value to be overwritten.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid; buf outlives the use of pw's string fields below.
    let rc = unsafe { libc::getpwuid_r(libc::geteuid(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside buf, still alive.
    Some(unsafe { CStr::from_ptr(pw.pw_name) }.to_bytes().to_vec())
}

/// Registers fork handlers (pthread_atfork).
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: three valid function pointers with the expected C signature.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}
