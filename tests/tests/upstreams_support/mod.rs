//! Shared by the upstream tests (upstreams.rs, upstreams_ftp.rs): the namespace topologies with
//! several proxies, a Python probe that reports the peer each destination saw (or the errno) and
//! how long the connect took, and the commands that run a program under the shim or the
//! supervisor with a configuration file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use socks4_tests::{ChildGuard, Netns, RunOutput, TempDir, binaries};

/// A Python prelude: `report(label, host, port)` connects, sends a line to a peer server, and
/// writes `label peer IP:PORT ms=T` (the address the server saw) or `label errno ENAME ms=T`, in
/// one write(2) so forked processes never split a line.
pub const PROBE_PY: &str = r#"
import errno, os, resource, socket, sys, time
def probe(host, port):
    t = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"hello\n")
        data = b""
        while data.count(b"\n") < 2:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        line = data.split(b"\n")[0].decode(errors="replace")
        result = "peer " + line[5:] if line.startswith("peer=") else "garbage " + repr(data)
    except OSError as e:
        result = "errno " + errno.errorcode.get(e.errno, str(e.errno))
    return result, (time.monotonic() - t) * 1000
def report(label, host, port):
    result, ms = probe(host, port)
    os.write(1, ("%s %s ms=%.1f\n" % (label, result, ms)).encode())
def cpu_ms():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000
"#;

/// One `report` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub peer: Option<SocketAddr>,
    pub errno: Option<String>,
    pub ms: f64,
}

/// The `report` lines of a run, by label.
pub fn probes(out: &RunOutput) -> HashMap<String, Probe> {
    let mut map = HashMap::new();
    for line in out.stdout.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [label, kind, value, ms] = parts[..] else { continue };
        let Some(ms) = ms.strip_prefix("ms=").and_then(|m| m.parse().ok()) else { continue };
        let probe = match kind {
            "peer" => Probe { peer: value.parse().ok(), errno: None, ms },
            "errno" => Probe { peer: None, errno: Some(value.to_string()), ms },
            _ => continue,
        };
        map.insert(label.to_string(), probe);
    }
    map
}

/// The probe labelled `label`, or a panic showing the whole run.
pub fn probe<'a>(map: &'a HashMap<String, Probe>, label: &str, out: &RunOutput) -> &'a Probe {
    map.get(label).unwrap_or_else(|| panic!("no `{label}` line:\n{out}"))
}

/// How a program is socksified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// LD_PRELOAD=libsocks4.so.
    Preload,
    /// socks4-run --supervise (the seccomp supervisor).
    Supervise,
}

/// The environment every shim run starts from: none of the caller's SOCKS4_* settings.
fn clean(cmd: &mut Command) {
    for var in [
        "SOCKS4_SERVER",
        "SOCKS4_USER",
        "SOCKS4_DIRECT",
        "SOCKS4_TIMEOUT",
        "SOCKS4_BACKOFF",
        "SOCKS4_DEBUG",
        "SOCKS4_REMOTE_DNS",
        "SOCKS4_DIRECT_NAMES",
        "SOCKS4_PASSWORD",
        "SOCKS4_PASSWORD_FILE",
        "LD_PRELOAD",
    ] {
        cmd.env_remove(var);
    }
}

/// `program` under the shim (or the supervisor) with the configuration file `config`.
pub fn with_config(mode: Mode, program: &str, config: &Path) -> Command {
    let mut cmd = match mode {
        Mode::Preload => {
            let mut c = Command::new(program);
            clean(&mut c);
            c.env("LD_PRELOAD", &binaries().shim);
            c.env("SOCKS4_CONF", config);
            c
        }
        Mode::Supervise => {
            let mut c = Command::new(&binaries().socks4_run);
            clean(&mut c);
            c.arg("--supervise").arg("--config").arg(config).arg("--").arg(program);
            c
        }
    };
    cmd.env_remove("SOCKS4_USER");
    cmd
}

/// `program` under the shim with SOCKS4_SERVER=`server` (URLs) and nothing direct.
pub fn with_server(program: &str, server: &str) -> Command {
    let mut cmd = Command::new(program);
    clean(&mut cmd);
    cmd.env("LD_PRELOAD", &binaries().shim).env("SOCKS4_SERVER", server).env("SOCKS4_DIRECT", "");
    cmd
}

/// Writes `text` as `name` in `dir` and returns its path.
pub fn write_config(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// A TCP server that accepts and never says a word (a SOCKS server that hangs), counting the
/// connections it took.
pub struct SilentServer {
    pub addr: SocketAddr,
    log: std::path::PathBuf,
    _child: ChildGuard,
    _dir: TempDir,
}

const SILENT_PY: &str = r#"
import socket, sys, threading
ip, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ':' in ip else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, port))
s.listen(64)
print("ready", flush=True)
held = []
while True:
    c, peer = s.accept()
    held.append(c)
    with open(log, "a") as f:
        f.write("accepted %s:%d\n" % peer[:2])
"#;

impl SilentServer {
    /// Listens on `addr` inside `ns`.
    ///
    /// # Panics
    /// When it does not start within 10 s.
    pub fn start_in(ns: &Netns, addr: SocketAddr) -> SilentServer {
        let dir = TempDir::new("silent");
        let script = dir.join("silent.py");
        std::fs::write(&script, SILENT_PY).expect("write silent.py");
        let log = dir.join("accepted.log");
        std::fs::write(&log, "").expect("create accepted.log");
        let mut cmd = ns.command("/usr/bin/python3");
        cmd.arg(&script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&log)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn("silent server", &mut cmd);
        child.stdout_line("ready", Duration::from_secs(10)).expect("silent server ready");
        SilentServer { addr, log, _child: child, _dir: dir }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().count()
    }
}

/// Four namespaces, two proxies, and destinations on four networks:
///
/// ```text
/// client 10.78.1.2 -- 10.78.1.1 proxy_a 10.78.11.1 -- 10.78.11.2 server   (net A, behind proxy A)
/// client 10.78.2.2 -- 10.78.2.1 proxy_b 10.78.12.1 -- 10.78.12.2 server   (net B, behind proxy B)
/// client 10.78.3.2, 10.78.4.2 ------------ 10.78.3.1, 10.78.4.1 server   (reachable directly)
/// ```
///
/// No namespace forwards: net A is reachable only through a proxy in proxy_a, net B only through
/// one in proxy_b; 10.78.3.0/24 and 10.78.4.0/24 are on the client's own link.
pub struct TwoProxies {
    pub client: Netns,
    pub proxy_a: Netns,
    pub proxy_b: Netns,
    pub server: Netns,
}

impl TwoProxies {
    pub const A_INSIDE: &str = "10.78.1.1";
    pub const A_OUTSIDE: &str = "10.78.11.1";
    pub const NET_A_HOST: &str = "10.78.11.2";
    pub const B_INSIDE: &str = "10.78.2.1";
    pub const B_OUTSIDE: &str = "10.78.12.1";
    pub const NET_B_HOST: &str = "10.78.12.2";
    pub const CLIENT_DIRECT: &str = "10.78.3.2";
    pub const DIRECT_HOST: &str = "10.78.3.1";
    pub const BLOCKED_HOST: &str = "10.78.4.1";

    pub fn new() -> TwoProxies {
        let t = TwoProxies {
            client: Netns::new("rcli"),
            proxy_a: Netns::new("rpa"),
            proxy_b: Netns::new("rpb"),
            server: Netns::new("rsrv"),
        };
        t.client.link("ca", &["10.78.1.2/24"], &t.proxy_a, "ac", &["10.78.1.1/24"]);
        t.proxy_a.link("as", &["10.78.11.1/24"], &t.server, "sa", &["10.78.11.2/24"]);
        t.client.link("cb", &["10.78.2.2/24"], &t.proxy_b, "bc", &["10.78.2.1/24"]);
        t.proxy_b.link("bs", &["10.78.12.1/24"], &t.server, "sb", &["10.78.12.2/24"]);
        t.client.link("cd", &["10.78.3.2/24", "10.78.4.2/24"], &t.server, "sd", &["10.78.3.1/24", "10.78.4.1/24"]);
        for ns in [&t.proxy_a, &t.proxy_b, &t.server] {
            ns.sysctl("net.ipv4.ip_forward", "0");
        }
        t
    }
}

/// A chain of namespaces, each reachable only from the one before:
///
/// ```text
/// client 10.79.1.2 -- 10.79.1.1 hop1 10.79.2.1 -- 10.79.2.2 hop2 10.79.3.1 -- 10.79.3.2 server
/// ```
pub struct Chain {
    pub client: Netns,
    pub hop1: Netns,
    pub hop2: Netns,
    pub server: Netns,
}

impl Chain {
    pub const CLIENT: &str = "10.79.1.2";
    pub const HOP1_INSIDE: &str = "10.79.1.1";
    pub const HOP1_OUTSIDE: &str = "10.79.2.1";
    pub const HOP2_INSIDE: &str = "10.79.2.2";
    pub const HOP2_OUTSIDE: &str = "10.79.3.1";
    pub const SERVER: &str = "10.79.3.2";

    pub fn new() -> Chain {
        let t = Chain {
            client: Netns::new("kcli"),
            hop1: Netns::new("kh1"),
            hop2: Netns::new("kh2"),
            server: Netns::new("ksrv"),
        };
        t.client.link("c1", &["10.79.1.2/24"], &t.hop1, "h1c", &["10.79.1.1/24"]);
        t.hop1.link("h12", &["10.79.2.1/24"], &t.hop2, "h21", &["10.79.2.2/24"]);
        t.hop2.link("h2s", &["10.79.3.1/24"], &t.server, "sh2", &["10.79.3.2/24"]);
        for ns in [&t.hop1, &t.hop2, &t.server] {
            ns.sysctl("net.ipv4.ip_forward", "0");
        }
        t
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}
