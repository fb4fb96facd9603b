//! The check every proxied FTP test makes: an active-mode session (list + fetch a multi-MB file)
//! whose bytes arrive intact AND whose every connection, as the FTP server saw it, involved
//! the proxy's address, never the client's.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use crate::{FtpClient, FtpJob, FtpRun, PyFtpd, TempDir, checksum, run_ftp, test_content};

/// One active-mode FTP session to check.
#[derive(Debug, Clone)]
pub struct ActiveFtp<'a> {
    pub client: FtpClient,
    /// Run pyftpdlib in this namespace (None: the test's own).
    pub ftpd_netns: Option<&'a str>,
    /// pyftpdlib's address.
    pub ftpd_ip: IpAddr,
    /// The proxy's outside address: the FTP server must see it as the control peer, in every
    /// PORT/EPRT and as every data connection's peer.
    pub proxy_ip: IpAddr,
    /// Size of the fetched file.
    pub size: usize,
    /// Also store a file of this size (as user `tester`, active mode: the server connects to
    /// the proxy's BIND address and the bytes flow client -> proxy -> server).
    pub upload: Option<usize>,
    pub timeout: Duration,
}

impl ActiveFtp<'_> {
    pub fn new(client: FtpClient, ftpd_ip: IpAddr, proxy_ip: IpAddr) -> ActiveFtp<'static> {
        ActiveFtp {
            client,
            ftpd_netns: None,
            ftpd_ip,
            proxy_ip,
            size: 5 << 20,
            upload: None,
            timeout: Duration::from_secs(25),
        }
    }

    /// Runs the session with the client command built by `make` (see `run_ftp`) and asserts;
    /// `proxy_log` is appended to every failure message. Returns the client's output.
    ///
    /// # Panics
    /// On any failed check, with the client's output and both servers' logs.
    pub fn run(&self, make: impl FnOnce(&'static str) -> Command, proxy_log: impl Fn() -> String) -> FtpRun {
        let client = self.client;
        let dir = TempDir::new("ftp");
        let root = dir.join("root");
        std::fs::create_dir(&root).expect("mkdir root");
        let content = test_content(self.size, 0x5eed);
        std::fs::write(root.join("big.bin"), &content).expect("write big.bin");
        std::fs::write(root.join("small.txt"), b"hello through the firewall\n").expect("write small.txt");
        let ftpd = PyFtpd::start_in(self.ftpd_netns, &root, self.ftpd_ip);

        let local = dir.join("got.bin");
        let mut job = FtpJob::anonymous(ftpd.addr);
        job.list = Some(".".into());
        job.get.push(("big.bin".into(), local.clone()));
        let upload = self.upload.map(|n| test_content(n, 0xc0ffee));
        if let Some(up) = &upload {
            job.user = "tester".into();
            job.password = "secret".into();
            std::fs::write(dir.join("up.bin"), up).expect("write up.bin");
            job.put.push((dir.join("up.bin"), "up.bin".into()));
        }
        let out = run_ftp(client, &job, make, self.timeout);
        let diag = || {
            format!(
                "{client:?} via proxy {}: {out}\n--- ftpd log ---\n{}\n--- proxy log ---\n{}",
                self.proxy_ip,
                ftpd.log(),
                proxy_log()
            )
        };

        assert!(out.success(), "client failed: {}", diag());
        assert!(
            out.stdout.contains("big.bin") && out.stdout.contains("small.txt"),
            "listing lacks big.bin/small.txt: {}",
            diag()
        );
        let got = std::fs::read(&local).unwrap_or_default();
        assert!(
            got.len() == content.len() && checksum(&got) == checksum(&content),
            "fetched file differs: {} bytes, checksum {:x}, want {} bytes, {:x}: {}",
            got.len(),
            checksum(&got),
            content.len(),
            checksum(&content),
            diag()
        );

        let controls = ftpd.control_peers();
        assert!(
            !controls.is_empty() && controls.iter().all(|p| p.ip() == self.proxy_ip),
            "control connections from {controls:?}, want the proxy {}: {}",
            self.proxy_ip,
            diag()
        );
        let ports = ftpd.port_addrs();
        assert!(!ports.is_empty(), "no PORT/EPRT reached the server (passive fallback?): {}", diag());
        assert!(
            ports.iter().all(|a| a.ip() == self.proxy_ip),
            "PORT/EPRT named {:?}, want the proxy {}: {}",
            ftpd.port_commands(),
            self.proxy_ip,
            diag()
        );
        assert!(!ftpd.saw_passive(), "the client used passive mode: {}", diag());
        let data = ftpd.data_connections();
        // One for the listing, one for the file.
        assert!(data.len() >= 2, "data connections {data:?}: {}", diag());
        for (active, peer) in &data {
            assert!(
                *active && peer.ip() == self.proxy_ip && ports.contains(peer),
                "data connection to {peer} (active={active}) is not to a PORT'd proxy address: {}",
                diag()
            );
        }
        // Whether the server logged a finished `command` of exactly `len` bytes.
        let completed = |command: &str, len: usize| {
            ftpd.transfers().iter().any(|(cmd, _, done, bytes)| cmd == command && *done && *bytes == len as u64)
        };
        assert!(completed("RETR", content.len()), "no completed RETR of {} bytes: {}", content.len(), diag());
        if let Some(up) = &upload {
            let stored = std::fs::read(root.join("up.bin")).unwrap_or_default();
            assert!(
                stored.len() == up.len() && checksum(&stored) == checksum(up),
                "stored file differs: {} bytes, want {}: {}",
                stored.len(),
                up.len(),
                diag()
            );
            assert!(completed("STOR", up.len()), "no completed STOR of {} bytes: {}", up.len(), diag());
        }
        out
    }
}
