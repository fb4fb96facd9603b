//! Runs the project's socks4d with a generated config and learns its bound address.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, TempDir, socks4d_binary};

/// How to start socks4d beyond its config file.
#[derive(Debug, Clone, Default)]
pub struct Socks4dOptions {
    /// `--listen` value; default 127.0.0.1:0 unless the config has a `listen` key.
    pub listen: Option<String>,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// RUST_LOG for the server; default "debug".
    pub rust_log: Option<String>,
}

/// A running socks4d; `Drop` kills it by PID.
pub struct Socks4d {
    /// The address socks4d printed as `listening <ADDR>`.
    pub addr: SocketAddr,
    /// The address it printed as `metrics <ADDR>` (config key `metrics`), if any.
    pub metrics: Option<SocketAddr>,
    log_path: std::path::PathBuf,
    child: ChildGuard,
    // Dropped after the child: the log stays readable until the very end.
    _dir: TempDir,
}

impl Socks4d {
    /// Starts socks4d on 127.0.0.1:0 with `config_toml`.
    ///
    /// # Panics
    /// When socks4d does not print `listening <ADDR>` within 10 s (with its stderr).
    pub fn start(config_toml: &str) -> Socks4d {
        Socks4d::start_with(config_toml, &Socks4dOptions::default())
    }

    /// Starts socks4d with `config_toml` and `opts`.
    ///
    /// # Panics
    /// When socks4d does not print `listening <ADDR>` within 10 s (with its stderr).
    pub fn start_with(config_toml: &str, opts: &Socks4dOptions) -> Socks4d {
        let dir = TempDir::new("socks4d");
        let config = dir.join("socks4d.toml");
        std::fs::write(&config, config_toml).expect("write socks4d config");
        let log_path = dir.join("socks4d.stderr");
        let log = std::fs::File::create(&log_path).expect("create socks4d log");

        let socks4d = socks4d_binary();
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(socks4d);
                c
            }
            None => Command::new(socks4d),
        };
        cmd.arg("--config").arg(&config);
        let config_has_listen = config_toml.lines().any(|l| l.trim_start().starts_with("listen"));
        match &opts.listen {
            Some(listen) => {
                cmd.args(["--listen", listen]);
            }
            None if !config_has_listen => {
                cmd.args(["--listen", "127.0.0.1:0"]);
            }
            None => {}
        }
        cmd.env("RUST_LOG", opts.rust_log.as_deref().unwrap_or("debug"))
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = ChildGuard::spawn("socks4d", &mut cmd);
        let (addr, before) = match child.stdout_until("listening ", Duration::from_secs(10)) {
            Some(found) => found,
            None => {
                let status = child.stop();
                panic!(
                    "socks4d ({cmd:?}) printed no `listening <ADDR>` line within 10 s (exit: {status:?}); stderr:\n{}\nconfig:\n{config_toml}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        };
        let addr = addr.parse().unwrap_or_else(|e| panic!("socks4d printed `listening {addr}`: {e}"));
        let metrics = before.iter().find_map(|l| l.strip_prefix("metrics ")?.parse().ok());
        Socks4d { addr, metrics, log_path, child, _dir: dir }
    }

    /// socks4d's stderr (its tracing log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Kills socks4d now (it is also killed on drop); the log stays readable.
    pub fn stop(&mut self) {
        self.child.stop();
    }

    /// SIGKILL, as a crash would: no drain, listeners gone at once.
    pub fn crash(&mut self) {
        let _ = self.child.child_mut().kill();
        let _ = self.child.child_mut().wait();
    }
}
