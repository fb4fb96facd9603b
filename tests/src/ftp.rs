//! Runs real FTP clients (inetutils-ftp, tnftp, lftp) in active mode with a script and a timeout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{RunOutput, run_with_timeout};

/// The FTP clients the tests drive; all in ACTIVE mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtpClient {
    /// /usr/bin/inetutils-ftp (active by default).
    Inetutils,
    /// /usr/bin/tnftp -A (forced active; sends EPRT, then PORT).
    Tnftp,
    /// lftp with `ftp:passive-mode off`. It silently falls back to passive, so callers must
    /// assert the PORT/EPRT in the server's log.
    Lftp,
    /// curl with `--ftp-port -` (the control connection's local address), one curl per transfer
    /// run by /bin/sh.
    Curl,
    /// Python's ftplib with `set_pasv(False)`.
    Ftplib,
}

/// What to do in one session: log in, optionally list a directory, fetch files.
#[derive(Debug, Clone)]
pub struct FtpJob {
    pub server: SocketAddr,
    pub user: String,
    pub password: String,
    /// `ls` this remote directory (output goes to the client's stdout).
    pub list: Option<String>,
    /// `(remote name, local path)` to fetch in binary mode.
    pub get: Vec<(String, PathBuf)>,
    /// `(local path, remote name)` to store in binary mode (needs a user with write access).
    pub put: Vec<(PathBuf, String)>,
}

impl FtpJob {
    /// Anonymous session against `server`.
    pub fn anonymous(server: SocketAddr) -> FtpJob {
        FtpJob {
            server,
            user: "anonymous".into(),
            password: "socks4@test".into(),
            list: None,
            get: Vec::new(),
            put: Vec::new(),
        }
    }
}

/// Result of `run_ftp`: the client's output.
pub type FtpRun = RunOutput;

impl FtpClient {
    pub const ALL: [FtpClient; 5] =
        [FtpClient::Inetutils, FtpClient::Tnftp, FtpClient::Lftp, FtpClient::Curl, FtpClient::Ftplib];

    pub fn program(self) -> &'static str {
        match self {
            FtpClient::Inetutils => "/usr/bin/inetutils-ftp",
            FtpClient::Tnftp => "/usr/bin/tnftp",
            FtpClient::Lftp => "/usr/bin/lftp",
            FtpClient::Curl => "/bin/sh",
            FtpClient::Ftplib => "/usr/bin/python3",
        }
    }

    /// Command-line arguments for `job`.
    pub fn args(self, job: &FtpJob) -> Vec<String> {
        match self {
            // -n: no auto-login (we send USER), -v: show replies, -i: no prompts.
            FtpClient::Inetutils => vec!["-n".into(), "-v".into(), "-i".into()],
            // -A: active mode; -n: no auto-login.
            FtpClient::Tnftp => vec!["-A".into(), "-n".into(), "-v".into()],
            FtpClient::Lftp | FtpClient::Curl | FtpClient::Ftplib => vec!["-c".into(), self.script(job)],
        }
    }

    /// The commands fed on stdin (empty for lftp, which takes them with -c).
    pub fn stdin(self, job: &FtpJob) -> String {
        match self {
            FtpClient::Lftp | FtpClient::Curl | FtpClient::Ftplib => String::new(),
            _ => self.script(job),
        }
    }

    fn script(self, job: &FtpJob) -> String {
        let mut s = String::new();
        match self {
            FtpClient::Inetutils | FtpClient::Tnftp => {
                s += &format!("open {} {}\n", job.server.ip(), job.server.port());
                s += &format!("user {} {}\n", job.user, job.password);
                s += "binary\n";
                if let Some(dir) = &job.list {
                    s += &format!("ls {dir}\n");
                }
                for (remote, local) in &job.get {
                    s += &format!("get {remote} {}\n", local.display());
                }
                for (local, remote) in &job.put {
                    s += &format!("put {} {remote}\n", local.display());
                }
                s += "bye\n";
            }
            FtpClient::Lftp => {
                // No retries and short timeouts: a failure must show up as a failure, fast.
                s += "set ftp:passive-mode off; set net:max-retries 1; set net:timeout 10; ";
                s += "set net:reconnect-interval-base 1; set xfer:clobber on; set cmd:fail-exit yes; ";
                s += &format!(
                    "open -u {},{} ftp://{}:{}; ",
                    job.user,
                    job.password,
                    match job.server {
                        SocketAddr::V4(a) => a.ip().to_string(),
                        SocketAddr::V6(a) => format!("[{}]", a.ip()),
                    },
                    job.server.port()
                );
                if let Some(dir) = &job.list {
                    s += &format!("cls -l {dir}; ");
                }
                for (remote, local) in &job.get {
                    s += &format!("get {remote} -o {}; ", local.display());
                }
                for (local, remote) in &job.put {
                    s += &format!("put {} -o {remote}; ", local.display());
                }
                s += "bye";
            }
            FtpClient::Curl => {
                let base = match job.server {
                    SocketAddr::V4(a) => format!("ftp://{}:{}", a.ip(), a.port()),
                    SocketAddr::V6(a) => format!("ftp://[{}]:{}", a.ip(), a.port()),
                };
                let curl = format!("curl -sS --fail --max-time 20 --ftp-port - --user '{}:{}'", job.user, job.password);
                let mut steps = Vec::new();
                if let Some(dir) = &job.list {
                    let dir = dir.trim_start_matches('.').trim_matches('/');
                    steps.push(format!("{curl} '{base}/{dir}'"));
                }
                for (remote, local) in &job.get {
                    steps.push(format!("{curl} -o '{}' '{base}/{remote}'", local.display()));
                }
                for (local, remote) in &job.put {
                    steps.push(format!("{curl} -T '{}' '{base}/{remote}'", local.display()));
                }
                s = format!("set -e; {}", steps.join("; "));
            }
            FtpClient::Ftplib => {
                let q = |x: &str| format!("{x:?}");
                s += "import ftplib, sys\n";
                s += &format!(
                    "f = ftplib.FTP(timeout=20)\nf.connect({}, {})\nf.login({}, {})\nf.set_pasv(False)\n",
                    q(&job.server.ip().to_string()),
                    job.server.port(),
                    q(&job.user),
                    q(&job.password)
                );
                if let Some(dir) = &job.list {
                    s += &format!("f.retrlines('LIST ' + {})\n", q(dir));
                }
                for (remote, local) in &job.get {
                    s += &format!(
                        "with open({}, 'wb') as out:\n    f.retrbinary('RETR ' + {}, out.write)\n",
                        q(&local.display().to_string()),
                        q(remote)
                    );
                }
                for (local, remote) in &job.put {
                    s += &format!(
                        "with open({}, 'rb') as src:\n    f.storbinary('STOR ' + {}, src)\n",
                        q(&local.display().to_string()),
                        q(remote)
                    );
                }
                s += "f.quit()\n";
            }
        }
        s
    }
}

/// Runs `client` for `job`. `make` turns the client's program path into the `Command` to run
/// (plain `Command::new`, `shim_command(.., proxy)`, socksify, a namespace...); the client's
/// arguments are appended to it and its script is fed on stdin. Killed after `timeout`.
pub fn run_ftp(
    client: FtpClient,
    job: &FtpJob,
    make: impl FnOnce(&'static str) -> Command,
    timeout: Duration,
) -> FtpRun {
    let mut cmd = make(client.program());
    cmd.args(client.args(job));
    run_with_timeout(&mut cmd, client.stdin(job).as_bytes(), timeout)
}
