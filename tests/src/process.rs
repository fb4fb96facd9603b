//! Child processes killed by PID on drop, commands run with a hard timeout, free ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Owns a spawned child; `Drop` sends SIGTERM, then SIGKILL after a grace period, and reaps it.
///
/// Only the PID we spawned is signalled (other engineers' servers run on the same machine).
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`.
    ///
    /// # Panics
    /// When the program cannot be started.
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        ChildGuard { child, name: name.to_string() }
    }

    pub fn from_child(name: &str, child: Child) -> ChildGuard {
        ChildGuard { child, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The rest of the first line of the child's piped stdout that starts
    /// with `prefix` (trimmed), or `None` if none came within `timeout`.
    /// stdout keeps being drained afterwards, so the child never blocks on
    /// a full pipe.
    pub fn stdout_line(&mut self, prefix: &'static str, timeout: Duration) -> Option<String> {
        self.stdout_until(prefix, timeout).map(|(line, _)| line)
    }

    /// Like `stdout_line`, and also every line printed before that one (trimmed).
    pub fn stdout_until(&mut self, prefix: &'static str, timeout: Duration) -> Option<(String, Vec<String>)> {
        let stdout = self.child.stdout.take().expect("the child's stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut before = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.trim().strip_prefix(prefix)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((rest.trim().to_string(), std::mem::take(&mut before)));
                } else if tx.is_some() {
                    before.push(line.trim().to_string());
                }
            }
        });
        rx.recv_timeout(timeout).ok()
    }

    /// `Some(status)` once the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the child now (SIGTERM, then SIGKILL after 2 s) and returns its status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) with a PID we spawned and have not reaped yet, so it cannot name a
    // recycled process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// What a command run under `run_with_timeout` did.
#[derive(Debug)]
pub struct RunOutput {
    /// `None` when the command was killed on timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The lines the shim (or the supervisor) wrote: `socks4[PID]: ...` on stderr.
    pub fn shim_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("socks4[")).collect()
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => writeln!(f, "status: {s} after {:?}", self.elapsed)?,
            None => writeln!(f, "status: KILLED on timeout after {:?}", self.elapsed)?,
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}", self.stderr)
    }
}

/// Runs `cmd` feeding it `stdin`, capturing stdout and stderr; after `timeout` kills its whole
/// process group (it runs in a group of its own) and reports `status: None`.
///
/// # Panics
/// When the program cannot be started.
pub fn run_with_timeout(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> RunOutput {
    let start = Instant::now();
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let input_bytes = stdin.to_vec();
    std::thread::spawn(move || {
        // The program may exit without reading everything: a write error is fine.
        let _ = input.write_all(&input_bytes);
    });
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("piped stdout");
    let tx_out = tx.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        let _ = tx_out.send((1, buf));
    });
    let mut err = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        let _ = tx.send((2, buf));
    });

    let deadline = start + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group we created for this child with process_group(0);
            // the group leader is not reaped yet so the group id cannot have been recycled.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A grandchild that escaped the group could hold the pipes open: do not wait forever.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok((1, b)) => stdout = b,
            Ok((_, b)) => stderr = b,
            Err(_) => break,
        }
    }
    RunOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// A loopback TCP port that was free a moment ago (bind to port 0, read it, close). Racy by
/// nature: callers retry on a bind failure.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Polls until a TCP connect to `addr` succeeds; false after `timeout`.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
