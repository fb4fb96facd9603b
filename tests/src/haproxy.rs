//! Runs HAProxy (Debian's package) in the foreground with a given config, inside a network
//! namespace, and reads its servers' health from its stats socket.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, Netns, TempDir};

/// A running haproxy; `Drop` kills it by PID.
pub struct HaProxy {
    log_path: PathBuf,
    stats: PathBuf,
    child: ChildGuard,
    _dir: TempDir,
}

impl HaProxy {
    /// Starts `haproxy -db -f <config>` in namespace `netns`, with a second config file that
    /// only adds an admin stats socket in a temp dir (the first file stays as given, so a
    /// recipe can be run unchanged), and waits until something listens on `frontend` there.
    ///
    /// # Panics
    /// When the config is refused (`haproxy -c`) or nothing listens within 10 s.
    pub fn start_in(netns: &str, config: &str, frontend: SocketAddr) -> HaProxy {
        let dir = TempDir::new("haproxy");
        let main = dir.join("haproxy.cfg");
        std::fs::write(&main, config).expect("write haproxy.cfg");
        let stats = dir.join("admin.sock");
        let extra = dir.join("stats.cfg");
        std::fs::write(&extra, format!("global\n    stats socket {} mode 600 level admin\n", stats.display()))
            .expect("write stats.cfg");
        let check = Command::new("haproxy").arg("-c").arg("-f").arg(&main).arg("-f").arg(&extra).output();
        let check = check.expect("run haproxy -c (scripts/test installs haproxy)");
        assert!(
            check.status.success(),
            "haproxy -c refused the config:\n{}{}\n{config}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log_path = dir.join("haproxy.log");
        let log = std::fs::File::create(&log_path).expect("create haproxy log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "haproxy", "-db"])
            .arg("-f")
            .arg(&main)
            .arg("-f")
            .arg(&extra)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let mut child = ChildGuard::spawn("haproxy", &mut cmd);
        if !Netns::wait_for_tcp_in(netns, frontend, Duration::from_secs(10)) {
            let status = child.stop();
            panic!(
                "haproxy is not listening on {frontend} after 10 s (exit: {status:?}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        HaProxy { log_path, stats, child, _dir: dir }
    }

    /// HAProxy's log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends one command to the stats socket and returns the answer (`None` if the socket
    /// cannot be reached within 2 s).
    pub fn admin(&self, command: &str) -> Option<String> {
        let mut socket = UnixStream::connect(&self.stats).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// The `status` column of `show stat` for server `server` of backend `backend` ("UP",
    /// "DOWN", "UP 1/2", ...), if listed.
    pub fn server_status(&self, backend: &str, server: &str) -> Option<String> {
        let stat = self.admin("show stat")?;
        let mut lines = stat.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (px, sv, status) = (column("pxname")?, column("svname")?, column("status")?);
        lines.map(|l| l.split(',').collect::<Vec<_>>()).find_map(|row| {
            (row.get(px) == Some(&backend) && row.get(sv) == Some(&server))
                .then(|| row.get(status).map(|s| s.to_string()))?
        })
    }

    /// Polls until server `server` of `backend` has exactly `status` ("UP" or "DOWN"); false
    /// after `timeout`.
    pub fn wait_for_status(&self, backend: &str, server: &str, status: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.server_status(backend, server).as_deref() == Some(status) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}
