//! An `ssh -D` SOCKS server: OpenSSH's sshd in one namespace (its own temporary config and keys,
//! run as root on port 22 of a test address) and `ssh -N -D` in another, whose dynamic forward
//! is a SOCKS4/SOCKS5 server on that namespace's loopback. Connections made through it leave from
//! sshd's namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, Netns, TempDir};

/// The SOCKS port `ssh -D` listens on, on the client namespace's loopback.
pub const SSH_SOCKS_PORT: u16 = 1080;

/// A running sshd and `ssh -D`; `Drop` stops both by PID.
pub struct SshSocks {
    /// The SOCKS server, on loopback inside the client namespace.
    pub addr: SocketAddr,
    log: std::path::PathBuf,
    _ssh: ChildGuard,
    _sshd: ChildGuard,
    _dir: TempDir,
}

fn keygen(path: &std::path::Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .env_remove("LD_PRELOAD")
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
}

impl SshSocks {
    /// sshd on `sshd_ip`:22 inside `server_ns`, and `ssh -N -D 127.0.0.1:1080 root@sshd_ip`
    /// inside `client_ns`.
    ///
    /// # Panics
    /// When either does not come up within 15 s (with sshd's log).
    pub fn start(client_ns: &Netns, server_ns: &Netns, sshd_ip: IpAddr) -> SshSocks {
        let dir = TempDir::new("sshd");
        let (host_key, client_key) = (dir.join("host_key"), dir.join("client_key"));
        keygen(&host_key);
        keygen(&client_key);
        let public = std::fs::read_to_string(dir.join("client_key.pub")).expect("read client_key.pub");
        std::fs::write(dir.join("authorized_keys"), public).expect("write authorized_keys");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {sshd_ip}:22\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nAllowTcpForwarding yes\nPermitTTY no\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display(),
            ),
        )
        .expect("write sshd_config");
        // sshd's privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let log = dir.join("sshd.log");
        let log_file = std::fs::File::create(&log).expect("create sshd.log");
        let mut cmd = server_ns.command("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        cmd.env_remove("LD_PRELOAD").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file);
        let mut sshd = ChildGuard::spawn("sshd", &mut cmd);
        let sshd_addr = SocketAddr::new(sshd_ip, 22);
        if !Netns::wait_for_tcp_in(server_ns.name(), sshd_addr, Duration::from_secs(15)) {
            let status = sshd.stop();
            panic!("sshd did not come up ({status:?}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        let mut cmd = client_ns.command("ssh");
        cmd.args(["-F", "/dev/null", "-N", "-D", &format!("127.0.0.1:{SSH_SOCKS_PORT}"), "-i"])
            .arg(&client_key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "LogLevel=ERROR",
                &format!("root@{sshd_ip}"),
            ])
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut ssh = ChildGuard::spawn("ssh -D", &mut cmd);
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), SSH_SOCKS_PORT);
        if !Netns::wait_for_tcp_in(client_ns.name(), addr, Duration::from_secs(15)) {
            let status = ssh.stop();
            panic!(
                "ssh -D did not come up ({status:?}); sshd log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        SshSocks { addr, log, _ssh: ssh, _sshd: sshd, _dir: dir }
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
