//! Runs vsftpd, a strict production FTP server (refuses PORT to any address but the control
//! connection's peer), with a protocol log the tests read back.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ChildGuard, TempDir, free_port};

/// A running vsftpd serving a directory to anonymous users, read-only; `Drop` kills it by PID.
pub struct Vsftpd {
    pub addr: SocketAddr,
    log_path: PathBuf,
    child: ChildGuard,
    _dir: TempDir,
}

impl Vsftpd {
    /// Serves `root` (must not be writable by user `ftp`) on `bind_ip`:<free port>.
    ///
    /// # Panics
    /// When vsftpd does not come up after a few ports.
    pub fn start(root: &Path, bind_ip: IpAddr) -> Vsftpd {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = TempDir::new("vsftpd");
            let port = free_port();
            let log_path = dir.join("vsftpd.log");
            let conf = dir.join("vsftpd.conf");
            // Our own empty secure_chroot_dir: /var/run/vsftpd/empty lives on a tmpfs that a
            // fresh container may not have populated.
            let empty = dir.join("empty");
            std::fs::create_dir(&empty).expect("mkdir empty");
            std::fs::write(&conf, config(root, bind_ip, port, &log_path, &empty)).expect("write vsftpd.conf");
            let mut cmd = Command::new("/usr/sbin/vsftpd");
            cmd.arg(&conf).env_remove("LD_PRELOAD").stdin(Stdio::null()).stdout(Stdio::null());
            cmd.stderr(std::fs::File::create(dir.join("vsftpd.stderr")).expect("create vsftpd stderr"));
            let mut child = ChildGuard::spawn("vsftpd", &mut cmd);
            // Readiness from the socket table, not by connecting: a probe connection would
            // show up in the log as a client that did not come through the proxy.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.try_wait().is_none() {
                if listening(bind_ip, port) {
                    return Vsftpd { addr: SocketAddr::new(bind_ip, port), log_path, child, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.stop();
            last = std::fs::read_to_string(dir.join("vsftpd.stderr")).unwrap_or_default();
        }
        panic!("vsftpd did not start: {last}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The client address of every control connection (`CONNECT: Client "a.b.c.d"`).
    pub fn clients(&self) -> Vec<IpAddr> {
        self.log()
            .lines()
            .filter(|l| l.contains("CONNECT: Client \""))
            .filter_map(|l| l.split('"').nth(1)?.parse().ok())
            .collect()
    }

    /// Every PORT/EPRT command received, e.g. `"PORT 127,0,0,2,4,1"`.
    pub fn port_commands(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("FTP command: "))
            .filter_map(|l| l.split('"').nth(3))
            .filter(|c| {
                c.starts_with("PORT ") || c.starts_with("EPRT ") || c.starts_with("PASV") || c.starts_with("EPSV")
            })
            .map(str::to_string)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

fn listening(ip: IpAddr, port: u16) -> bool {
    Command::new("ss")
        .args(["-Hltn", &format!("src {ip}:{port}")])
        .output()
        .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
}

fn config(root: &Path, ip: IpAddr, port: u16, log: &Path, empty: &Path) -> String {
    // connect_from_port_20=NO: parallel tests cannot share port 20. The log records every
    // command with the client's address.
    format!(
        "listen=YES
listen_ipv6=NO
listen_address={ip}
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
anon_root={root}
no_anon_password=YES
ftp_username=ftp
connect_from_port_20=NO
port_enable=YES
pasv_enable=YES
seccomp_sandbox=NO
secure_chroot_dir={empty}
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file={log}
",
        root = root.display(),
        log = log.display(),
        empty = empty.display()
    )
}
