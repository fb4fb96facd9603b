//! socks4d under systemd: the sd_notify protocol (READY, RELOADING,
//! STOPPING, STATUS datagrams to `NOTIFY_SOCKET`) and listening sockets
//! passed by socket activation (`LISTEN_PID`, `LISTEN_FDS`). No crate: both
//! are a few lines over std, and libsystemd's own rules are followed (a
//! leading `@` is an abstract socket name; fds start at 3; `LISTEN_PID`
//! must be this process; the variables are removed once read).

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// What systemd handed this process, read once at start.
#[derive(Default)]
pub struct Systemd {
    /// Where to send sd_notify messages; `None` outside systemd.
    pub notify: Option<Notifier>,
    /// Listening sockets from socket activation, in systemd's order
    /// (`ListenStream=` lines); empty when not socket-activated.
    pub listeners: Vec<TcpListener>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `LISTEN_PID`/`LISTEN_FDS`, takes the passed
    /// sockets (marked close-on-exec), and removes those variables (and
    /// `LISTEN_FDNAMES`) from the environment so that no child inherits
    /// them.
    ///
    /// # Safety
    ///
    /// The process must have one thread: removing environment variables
    /// races with any other thread reading the environment (the binary
    /// calls this first thing in `main`).
    ///
    /// # Errors
    ///
    /// A malformed variable, or a passed descriptor that is not a listening
    /// TCP socket.
    pub unsafe fn take_from_env() -> io::Result<Systemd> {
        let notify = std::env::var_os("NOTIFY_SOCKET");
        let pid = std::env::var_os("LISTEN_PID");
        let fds = std::env::var_os("LISTEN_FDS");
        for name in ["NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            // SAFETY: single-threaded, as this function's contract says.
            unsafe { std::env::remove_var(name) };
        }
        let notify = notify.filter(|s| !s.is_empty()).map(|s| Notifier::new(&s)).transpose()?;
        let listeners = match (pid, fds) {
            (Some(pid), Some(fds)) => listen_fds(&pid, &fds)?,
            _ => Vec::new(),
        };
        Ok(Systemd { notify, listeners })
    }
}

/// The passed sockets if `LISTEN_PID` is this process, else none (they
/// were meant for another process, e.g. a shell in between).
fn listen_fds(pid: &OsString, fds: &OsString) -> io::Result<Vec<TcpListener>> {
    let bad = |what: &str, v: &OsString| io::Error::other(format!("socket activation: bad {what}: {v:?}"));
    let pid: u32 = pid.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad("LISTEN_PID", pid))?;
    if pid != std::process::id() {
        return Ok(Vec::new());
    }
    let count: RawFd = fds.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| bad("LISTEN_FDS", fds))?;
    (LISTEN_FDS_START..LISTEN_FDS_START.saturating_add(count)).map(adopt_listener).collect()
}

/// Takes ownership of the passed descriptor `fd` after checking it is a
/// listening TCP socket.
fn adopt_listener(fd: RawFd) -> io::Result<TcpListener> {
    let not_ours = |why: String| {
        io::Error::other(format!(
            "socket activation: fd {fd} {why}; socks4d takes only TCP sockets (ListenStream=ADDR:PORT)"
        ))
    };
    // SAFETY: fcntl on a descriptor number only reads its flags; a closed
    // number gives EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(not_ours(format!("is not open: {}", io::Error::last_os_error())));
    }
    // SAFETY: the descriptor is open and was handed to this process by the
    // LISTEN_FDS protocol; nothing else in it owns it, and the environment
    // that announced it is gone, so it is taken only once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: as above, on a descriptor we now own.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let int_option = |name| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len describe a writable c_int.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, (&raw mut value).cast(), &mut len) };
        if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
    };
    let ty = int_option(libc::SO_TYPE).map_err(|e| not_ours(format!("is not a socket ({e})")))?;
    let domain = int_option(libc::SO_DOMAIN)?;
    if ty != libc::SOCK_STREAM || !matches!(domain, libc::AF_INET | libc::AF_INET6) {
        return Err(not_ours("is not a TCP socket".into()));
    }
    if int_option(libc::SO_ACCEPTCONN)? != 1 {
        return Err(not_ours("is not listening".into()));
    }
    let listener = TcpListener::from(owned);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// A datagram socket to the service manager's `NOTIFY_SOCKET`.
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
}

impl Notifier {
    /// For `NOTIFY_SOCKET`'s value: a path, or `@name` for an abstract socket.
    ///
    /// # Errors
    ///
    /// A value that is neither, or no socket could be made.
    pub fn new(target: &std::ffi::OsStr) -> io::Result<Notifier> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = target.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => abstract_addr(name)?,
            None if bytes.starts_with(b"/") => UnixAddr::from_pathname(std::path::Path::new(target))?,
            None => {
                return Err(io::Error::other(format!(
                    "NOTIFY_SOCKET={target:?}: expected an absolute path or @abstract name"
                )));
            }
        };
        Ok(Notifier { socket: UnixDatagram::unbound()?, addr })
    }

    /// Sends one message (`KEY=VALUE` lines). A failure is logged, never
    /// fatal: the service manager's view is not worth stopping a proxy for.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_addr(_: &[u8]) -> io::Result<UnixAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract sockets are Linux only"))
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd wants beside it (so it can
/// tell this reload from an earlier one).
pub fn reloading_message() -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec())
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to fill; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn notifies_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("socks4d-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(path.as_os_str()).unwrap().notify("READY=1");
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("socks4d-notify-test-{}", std::process::id());
        let receiver = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(format!("@{name}").as_ref()).unwrap().notify("STOPPING=1");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(Notifier::new("relative/path".as_ref()).is_err());
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        // The clock read here on its own, in whole microseconds.
        let clock = || {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: ts is a valid timespec to fill.
            assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
            u64::try_from(ts.tv_sec).unwrap() * 1_000_000 + u64::try_from(ts.tv_nsec).unwrap() / 1000
        };
        let before = clock();
        let msg = reloading_message();
        let after = clock();
        let usec: u64 = msg.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").unwrap().parse().unwrap();
        assert!((before..=after).contains(&usec), "{msg}: not within {before}..={after}");
    }

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0, "fd {fd}: {}", io::Error::last_os_error());
        flags & libc::FD_CLOEXEC != 0
    }

    /// What socket activation may pass, and what socks4d makes of it: a listening TCP socket
    /// is taken (and marked close-on-exec, as systemd passes it without), anything else is
    /// refused with what it is.
    #[test]
    fn adopts_listening_tcp_sockets_only() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let refusal = |fd: RawFd| adopt_listener(fd).unwrap_err().to_string();

        let bare = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        // SAFETY: clears the flags of a descriptor this test owns.
        assert_eq!(unsafe { libc::fcntl(bare, libc::F_SETFD, 0) }, 0);
        assert!(cloexec(adopt_listener(bare).unwrap().as_raw_fd()));
        let marked = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into_raw_fd();
        assert!(cloexec(marked));
        let adopted = adopt_listener(marked).unwrap();
        assert!(cloexec(adopted.as_raw_fd()));
        assert!(adopted.local_addr().unwrap().ip().is_loopback());

        // SAFETY: a plain socket(2) call; the descriptor goes to adopt_listener, which owns it.
        let unlistened = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(refusal(unlistened).contains("is not listening"));
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().into_raw_fd();
        assert!(refusal(udp).contains("is not a TCP socket"));
        let dir = std::env::temp_dir().join(format!("socks4d-adopt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap().into_raw_fd();
        assert!(refusal(unix).contains("is not a TCP socket"));
        std::fs::remove_dir_all(&dir).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        assert!(refusal(file).contains("is not a socket"));
        // Far past any descriptor this process has open.
        assert!(refusal(1 << 30).contains("is not open"));
    }

    #[test]
    fn listen_fds_for_another_process_are_not_taken() {
        let other = OsString::from((std::process::id() + 1).to_string());
        assert!(listen_fds(&other, &OsString::from("1")).unwrap().is_empty());
        assert!(listen_fds(&OsString::from("x"), &OsString::from("1")).is_err());
    }
}
