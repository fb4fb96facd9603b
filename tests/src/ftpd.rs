//! Runs pyftpdlib (tests/py/ftpd.py) and reads back, from its log, where the bytes went.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, TempDir};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/ftpd.py");

/// One `EVENT` line of the FTP server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FtpEvent {
    /// A control connection was accepted from `peer`.
    Control { peer: SocketAddr, local: SocketAddr },
    /// PORT, EPRT, PASV or EPSV as received, e.g. `("PORT", "127,0,0,2,4,1")`.
    Command { name: String, arg: String },
    /// A data connection; `active` = the server connected out to a PORT/EPRT address.
    Data { active: bool, peer: SocketAddr, local: SocketAddr },
    /// A finished transfer (RETR, STOR, LIST, ...).
    Transfer { cmd: String, file: String, completed: bool, bytes: u64 },
}

/// A running pyftpdlib: anonymous read-only and user `tester`/`secret` read-write on `root`;
/// foreign PORT addresses refused (pyftpdlib's default). `Drop` kills it by PID.
pub struct PyFtpd {
    pub addr: SocketAddr,
    log_path: PathBuf,
    child: ChildGuard,
    _dir: TempDir,
}

impl PyFtpd {
    /// Serves `root` on `bind_ip`:<kernel-chosen port>.
    ///
    /// # Panics
    /// When the server does not print its port within 10 s.
    pub fn start(root: &Path, bind_ip: IpAddr) -> PyFtpd {
        PyFtpd::start_in(None, root, bind_ip)
    }

    /// Same as `start`, inside network namespace `netns` when given.
    ///
    /// # Panics
    /// When the server does not print its port within 10 s.
    pub fn start_in(netns: Option<&str>, root: &Path, bind_ip: IpAddr) -> PyFtpd {
        let dir = TempDir::new("ftpd");
        let log_path = dir.join("ftpd.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/python3"]);
                c
            }
            // Debian's python3 has python3-pyftpdlib; the first python3 on PATH may not.
            None => Command::new("/usr/bin/python3"),
        };
        cmd.arg(SCRIPT)
            .arg(root)
            .arg(bind_ip.to_string())
            .arg(&log_path)
            .env_remove("LD_PRELOAD")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("ftpd.stderr")).expect("create ftpd stderr"));
        let mut child = ChildGuard::spawn("pyftpdlib", &mut cmd);
        let Some(port) = child.stdout_line("port ", Duration::from_secs(10)) else {
            child.stop();
            panic!(
                "pyftpdlib did not print its port; stderr:\n{}",
                std::fs::read_to_string(dir.join("ftpd.stderr")).unwrap_or_default()
            );
        };
        let port: u16 = port.parse().expect("pyftpdlib port");
        PyFtpd { addr: SocketAddr::new(bind_ip, port), log_path, child, _dir: dir }
    }

    /// The whole log (pyftpdlib's DEBUG lines and our EVENT lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The EVENT lines, parsed, in order.
    pub fn events(&self) -> Vec<FtpEvent> {
        self.log().lines().filter_map(parse_event).collect()
    }

    /// Peers of the control connections.
    pub fn control_peers(&self) -> Vec<SocketAddr> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                FtpEvent::Control { peer, .. } => Some(peer),
                _ => None,
            })
            .collect()
    }

    /// Every PORT/EPRT received, as `"PORT 127,0,0,2,4,1"` / `"EPRT |1|127.0.0.2|1025|"`.
    pub fn port_commands(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                FtpEvent::Command { name, arg } if name == "PORT" || name == "EPRT" => Some(format!("{name} {arg}")),
                _ => None,
            })
            .collect()
    }

    /// The addresses PORT/EPRT named (unparseable ones are skipped; see `port_commands`).
    pub fn port_addrs(&self) -> Vec<SocketAddr> {
        self.port_commands().iter().filter_map(|c| parse_port_command(c)).collect()
    }

    /// Whether any PASV/EPSV was received (lftp falls back to passive silently).
    pub fn saw_passive(&self) -> bool {
        self.events().iter().any(|e| matches!(e, FtpEvent::Command { name, .. } if name == "PASV" || name == "EPSV"))
    }

    /// `(active, peer)` of every data connection.
    pub fn data_connections(&self) -> Vec<(bool, SocketAddr)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                FtpEvent::Data { active, peer, .. } => Some((active, peer)),
                _ => None,
            })
            .collect()
    }

    /// Finished transfers `(cmd, file, completed, bytes)`.
    pub fn transfers(&self) -> Vec<(String, String, bool, u64)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                FtpEvent::Transfer { cmd, file, completed, bytes } => Some((cmd, file, completed, bytes)),
                _ => None,
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// `"PORT h1,h2,h3,h4,p1,p2"` or `"EPRT |1|ip|port|"` -> the address it names.
pub fn parse_port_command(line: &str) -> Option<SocketAddr> {
    let (name, arg) = line.trim().split_once(' ')?;
    match name.to_ascii_uppercase().as_str() {
        "PORT" => {
            let n: Vec<u8> = arg.split(',').map(|x| x.trim().parse().ok()).collect::<Option<_>>()?;
            let [a, b, c, d, p1, p2] = n[..] else { return None };
            Some(SocketAddr::from(([a, b, c, d], u16::from(p1) << 8 | u16::from(p2))))
        }
        "EPRT" => {
            let delim = arg.chars().next()?;
            let parts: Vec<&str> = arg.split(delim).collect();
            let [_, _af, ip, port, ..] = parts[..] else { return None };
            Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        }
        _ => None,
    }
}

fn parse_event(line: &str) -> Option<FtpEvent> {
    let rest = &line[line.find("EVENT ")? + "EVENT ".len()..];
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let field = |key: &str| -> Option<&str> {
        rest.split(' ').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    match kind {
        "control" => Some(FtpEvent::Control { peer: normalize(field("peer")?)?, local: normalize(field("local")?)? }),
        "cmd" => {
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(FtpEvent::Command { name: name.to_string(), arg: arg.to_string() })
        }
        "data" => Some(FtpEvent::Data {
            active: field("mode")? == "active",
            peer: normalize(field("peer")?)?,
            local: normalize(field("local")?)?,
        }),
        "transfer" => Some(FtpEvent::Transfer {
            cmd: field("cmd")?.to_string(),
            file: field("file")?.to_string(),
            completed: field("completed")? == "1",
            bytes: field("bytes")?.parse().ok()?,
        }),
        _ => None,
    }
}

/// Parses `ip:port` / `[ip6]:port`, folding IPv4-mapped IPv6 to IPv4.
fn normalize(s: &str) -> Option<SocketAddr> {
    let addr: SocketAddr = s.parse().ok()?;
    Some(match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_and_eprt() {
        assert_eq!(parse_port_command("PORT 127,0,0,2,4,1"), Some("127.0.0.2:1025".parse().unwrap()));
        assert_eq!(parse_port_command("EPRT |1|127.0.0.2|1025|"), Some("127.0.0.2:1025".parse().unwrap()));
        assert_eq!(parse_port_command("EPRT |2|::1|21|"), Some("[::1]:21".parse().unwrap()));
        assert_eq!(parse_port_command("PORT 127,0,0,2,4"), None);
    }

    #[test]
    fn parses_events() {
        let l =
            "2026-01-01 INFO EVENT data mode=active peer=127.0.0.2:4000 local=127.0.0.1:40000 control_peer=127.0.0.2:5";
        assert_eq!(
            parse_event(l),
            Some(FtpEvent::Data {
                active: true,
                peer: "127.0.0.2:4000".parse().unwrap(),
                local: "127.0.0.1:40000".parse().unwrap()
            })
        );
        assert_eq!(
            parse_event("x INFO EVENT cmd PORT 127,0,0,2,4,1"),
            Some(FtpEvent::Command { name: "PORT".into(), arg: "127,0,0,2,4,1".into() })
        );
        assert_eq!(
            parse_event("x INFO EVENT transfer cmd=RETR file=/tmp/a completed=1 bytes=10"),
            Some(FtpEvent::Transfer { cmd: "RETR".into(), file: "/tmp/a".into(), completed: true, bytes: 10 })
        );
    }
}
