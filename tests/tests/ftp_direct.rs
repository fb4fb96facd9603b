//! Baseline without any proxy: each FTP client fetches a file from pyftpdlib in active mode,
//! proving the harness (server, clients, log parsing) before a proxy is put in between.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use socks4_tests::{FtpClient, FtpJob, PyFtpd, TempDir, checksum, run_ftp, test_content};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn direct_active(client: FtpClient) {
    let dir = TempDir::new("direct");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let content = test_content(1 << 20, 7);
    std::fs::write(root.join("file.bin"), &content).unwrap();
    let ftpd = PyFtpd::start(&root, LOCALHOST);

    let local = dir.join("got.bin");
    let mut job = FtpJob::anonymous(ftpd.addr);
    job.list = Some(".".into());
    job.get.push(("file.bin".into(), local.clone()));
    let out = run_ftp(client, &job, Command::new, Duration::from_secs(20));
    let log = ftpd.log();
    assert!(out.success(), "{client:?}: {out}\nftpd log:\n{log}");
    assert!(out.stdout.contains("file.bin"), "{client:?} listing lacks file.bin: {out}");
    let got = std::fs::read(&local).unwrap_or_default();
    assert_eq!(checksum(&got), checksum(&content), "{client:?}: got {} bytes\n{out}", got.len());

    // Active mode: the server connected out to the address PORT/EPRT named, which is the
    // client's own (127.0.0.1) since nothing is in between.
    let ports = ftpd.port_addrs();
    assert!(!ports.is_empty(), "{client:?} sent no PORT/EPRT (passive?):\n{log}");
    assert!(ports.iter().all(|a| a.ip() == LOCALHOST), "{ports:?}");
    let data = ftpd.data_connections();
    assert!(data.len() >= 2, "{data:?}\n{log}");
    for (active, peer) in &data {
        assert!(*active, "passive data connection from {peer}:\n{log}");
        assert!(ports.contains(peer), "data connection to {peer} not in PORTs {ports:?}");
    }
    assert!(ftpd.control_peers().iter().all(|p: &SocketAddr| p.ip() == LOCALHOST));
    assert!(
        ftpd.transfers()
            .iter()
            .any(|(cmd, _, completed, bytes)| cmd == "RETR" && *completed && *bytes == content.len() as u64),
        "{log}"
    );
}

#[test]
fn inetutils_ftp_active_direct() {
    direct_active(FtpClient::Inetutils);
}

#[test]
fn tnftp_active_direct() {
    direct_active(FtpClient::Tnftp);
}

#[test]
fn lftp_active_direct() {
    direct_active(FtpClient::Lftp);
}

/// The proxied-FTP check must fail when no proxy is involved: an unproxied session is seen
/// from 127.0.0.1, not from the claimed proxy address.
#[test]
#[should_panic(expected = "want the proxy 127.0.0.2")]
fn active_ftp_check_detects_a_session_that_bypassed_the_proxy() {
    socks4_tests::ActiveFtp::new(FtpClient::Inetutils, LOCALHOST, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .run(Command::new, String::new);
}
