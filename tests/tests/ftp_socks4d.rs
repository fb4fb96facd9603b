//! Active-mode FTP through socks4d on loopback (issues 2 and 3). socks4d's external address is
//! 127.0.0.2 while clients and pyftpdlib use 127.0.0.1, so the FTP server's log proves which
//! connections the proxy carried: control peer, PORT/EPRT address and data peer must all be
//! 127.0.0.2.

use std::net::{IpAddr, Ipv4Addr};

use socks4_tests::{ActiveFtp, FtpClient, Socks4d, TempDir, shim_command, socks4_run_command, socksify_command};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const SOCKS4D_EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

const CONFIG: &str = r#"
external = "127.0.0.2"

[[rule]]
name = "loopback clients"
action = "allow"
from = ["127.0.0.0/8"]
"#;

fn shim_through_socks4d(client: FtpClient) {
    let socks4d = Socks4d::start(CONFIG);
    // Every client also stores a file: the BIND'd data connection carries bytes both ways.
    ActiveFtp { upload: Some(1 << 20), ..ActiveFtp::new(client, LOCALHOST, SOCKS4D_EXTERNAL) }
        .run(|p| shim_command(p, socks4d.addr), || socks4d.log());
}

/// Issue 2: Dante's client (the reference BIND implementation) against our server.
#[test]
fn socksify_inetutils_ftp_active_through_socks4d() {
    let socks4d = Socks4d::start(CONFIG);
    let dir = TempDir::new("socksify");
    ActiveFtp { upload: Some(1 << 20), ..ActiveFtp::new(FtpClient::Inetutils, LOCALHOST, SOCKS4D_EXTERNAL) }
        .run(|p| socksify_command(p, socks4d.addr, &dir), || socks4d.log());
}

fn socksify_through_socks4d(client: FtpClient) {
    let socks4d = Socks4d::start(CONFIG);
    let dir = TempDir::new("socksify");
    ActiveFtp { upload: Some(1 << 20), ..ActiveFtp::new(client, LOCALHOST, SOCKS4D_EXTERNAL) }
        .run(|p| socksify_command(p, socks4d.addr, &dir), || socks4d.log());
}

#[test]
fn socksify_tnftp_active_through_socks4d() {
    socksify_through_socks4d(FtpClient::Tnftp);
}

#[test]
fn socksify_lftp_active_through_socks4d() {
    socksify_through_socks4d(FtpClient::Lftp);
}

#[test]
fn shim_inetutils_ftp_active_through_socks4d() {
    shim_through_socks4d(FtpClient::Inetutils);
}

#[test]
fn shim_tnftp_active_through_socks4d() {
    shim_through_socks4d(FtpClient::Tnftp);
}

#[test]
fn shim_lftp_active_through_socks4d() {
    shim_through_socks4d(FtpClient::Lftp);
}

#[test]
fn socks4_run_inetutils_ftp_active_through_socks4d() {
    let socks4d = Socks4d::start(CONFIG);
    ActiveFtp::new(FtpClient::Inetutils, LOCALHOST, SOCKS4D_EXTERNAL)
        .run(|p| socks4_run_command(p, socks4d.addr), || socks4d.log());
}
