//! Active-mode FTP through the shim and socks4d against vsftpd, a strict production server:
//! it refuses a PORT naming any address but the control connection's peer, so the transfer
//! works only if the proxy's BIND address and its CONNECT source agree (127.0.0.2).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use socks4_tests::{FtpClient, FtpJob, Socks4d, TempDir, Vsftpd, checksum, run_ftp, shim_command, test_content};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SOCKS4D_EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

const CONFIG: &str = r#"
external = "127.0.0.2"

[[rule]]
action = "allow"
from = ["127.0.0.0/8"]
"#;

fn shim_through_socks4d_to_vsftpd(client: FtpClient) {
    let dir = TempDir::new("vsftpd-root");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let content = test_content(3 << 20, 11);
    std::fs::write(root.join("big.bin"), &content).unwrap();
    let vsftpd = Vsftpd::start(&root, LOCALHOST);
    let socks4d = Socks4d::start(CONFIG);

    let local = dir.join("got.bin");
    let mut job = FtpJob::anonymous(vsftpd.addr);
    job.list = Some(".".into());
    job.get.push(("big.bin".into(), local.clone()));
    let out = run_ftp(client, &job, |p| shim_command(p, socks4d.addr), Duration::from_secs(25));
    let diag =
        format!("{client:?}: {out}\n--- vsftpd log ---\n{}\n--- socks4d log ---\n{}", vsftpd.log(), socks4d.log());
    assert!(out.success(), "{diag}");
    assert!(out.stdout.contains("big.bin"), "listing lacks big.bin: {diag}");
    let got = std::fs::read(&local).unwrap_or_default();
    assert_eq!(checksum(&got), checksum(&content), "got {} bytes: {diag}", got.len());

    let clients = vsftpd.clients();
    assert!(!clients.is_empty() && clients.iter().all(|c| *c == SOCKS4D_EXTERNAL), "clients {clients:?}: {diag}");
    let ports = vsftpd.port_commands();
    assert!(
        ports.len() >= 2
            && ports.iter().all(|c| c.starts_with("PORT 127,0,0,2,") || c.starts_with("EPRT |1|127.0.0.2|")),
        "data channel commands {ports:?}: {diag}"
    );
    assert!(
        vsftpd.log().contains(&format!("OK DOWNLOAD: Client \"127.0.0.2\", \"/big.bin\", {} bytes", content.len())),
        "{diag}"
    );
}

#[test]
fn shim_inetutils_ftp_active_through_socks4d_to_vsftpd() {
    shim_through_socks4d_to_vsftpd(FtpClient::Inetutils);
}

#[test]
fn shim_tnftp_active_through_socks4d_to_vsftpd() {
    shim_through_socks4d_to_vsftpd(FtpClient::Tnftp);
}

#[test]
fn shim_lftp_active_through_socks4d_to_vsftpd() {
    shim_through_socks4d_to_vsftpd(FtpClient::Lftp);
}
