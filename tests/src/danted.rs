//! Runs Dante's danted (a standard SOCKS4/5 server) with a generated config, for interop tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, Netns, TempDir, free_port, wait_for_tcp};

/// Where danted listens and which address it uses for outgoing connections and BIND listeners.
#[derive(Debug, Clone)]
pub struct DantedOptions {
    /// Internal (listening) address; default 127.0.0.1.
    pub internal: IpAddr,
    /// Listening port; default a free one (retried on a start failure).
    pub port: Option<u16>,
    /// External address: source of its CONNECTs and address of its BIND listeners.
    pub external: IpAddr,
    /// Run inside this network namespace.
    pub netns: Option<String>,
}

impl Default for DantedOptions {
    fn default() -> Self {
        DantedOptions {
            internal: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            external: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
        }
    }
}

/// A running danted; `Drop` stops it by PID (the mother takes its children down with it).
pub struct Danted {
    pub addr: SocketAddr,
    log_path: std::path::PathBuf,
    child: ChildGuard,
    _dir: TempDir,
}

impl Danted {
    /// danted on 127.0.0.1:<free port> whose outgoing and BIND address is `external`.
    ///
    /// # Panics
    /// When danted does not come up (with its log).
    pub fn start(external: IpAddr) -> Danted {
        Danted::start_with(&DantedOptions { external, ..DantedOptions::default() })
    }

    /// danted with `opts`.
    ///
    /// # Panics
    /// When danted does not come up after a few tries (with its log).
    pub fn start_with(opts: &DantedOptions) -> Danted {
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = TempDir::new("danted");
            let port = opts.port.unwrap_or_else(free_port);
            let addr = SocketAddr::new(opts.internal, port);
            let log_path = dir.join("danted.log");
            let conf = dir.join("danted.conf");
            std::fs::write(&conf, config(addr, opts.external, &log_path)).expect("write danted.conf");
            // danted drops to `nobody` and must still write its log.
            std::fs::File::create(&log_path).expect("create danted log");
            let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
            let _ = Command::new("chmod").arg("0666").arg(&log_path).status();

            let mut cmd = match &opts.netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "/usr/sbin/danted"]);
                    c
                }
                None => Command::new("/usr/sbin/danted"),
            };
            cmd.arg("-f").arg(&conf).args(["-N", "1"]).arg("-p").arg(dir.join("danted.pid"));
            cmd.env_remove("LD_PRELOAD").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let mut child = ChildGuard::spawn("danted", &mut cmd);

            let deadline = Instant::now() + Duration::from_secs(10);
            let mut up = false;
            while Instant::now() < deadline {
                if child.try_wait().is_some() {
                    break;
                }
                // danted writes this line once its children are ready to take clients.
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains(" running") {
                    up = match &opts.netns {
                        Some(ns) => Netns::wait_for_tcp_in(ns, addr, Duration::from_secs(5)),
                        None => wait_for_tcp(addr, Duration::from_secs(5)),
                    };
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if up {
                return Danted { addr, log_path, child, _dir: dir };
            }
            child.stop();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if opts.port.is_some() {
                break;
            }
        }
        panic!("danted did not start; last log:\n{last_log}");
    }

    /// danted's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

fn config(internal: SocketAddr, external: IpAddr, log: &std::path::Path) -> String {
    // danted itself is reachable only on `internal` (loopback or a test namespace), so the
    // rules can pass everything; BIND needs `bind` and `bindreply`.
    format!(
        "logoutput: {log}
internal: {ip} port = {port}
external: {external}
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {{
  from: 0.0.0.0/0 to: 0.0.0.0/0
  log: error connect disconnect
}}
socks pass {{
  from: 0.0.0.0/0 to: 0.0.0.0/0
  command: connect bind bindreply
  log: error connect disconnect
}}
",
        log = log.display(),
        ip = internal.ip(),
        port = internal.port(),
    )
}
