//! Active-mode FTP through Dante's danted: with Dante's own client (socksify) as the reference
//! that validates the harness, and with our shim (a standard server must do for the shim).

use std::net::{IpAddr, Ipv4Addr};

use socks4_tests::{ActiveFtp, Danted, FtpClient, TempDir, shim_command, socksify_command};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// danted's external address: what the FTP server must see if the proxy carried the session.
const DANTED_EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

fn shim_through_danted(client: FtpClient) {
    let danted = Danted::start(DANTED_EXTERNAL);
    ActiveFtp { upload: Some(1 << 20), ..ActiveFtp::new(client, LOCALHOST, DANTED_EXTERNAL) }
        .run(|p| shim_command(p, danted.addr), || danted.log());
}

#[test]
fn socksify_inetutils_ftp_active_through_danted() {
    let danted = Danted::start(DANTED_EXTERNAL);
    let dir = TempDir::new("socksify");
    ActiveFtp { upload: Some(1 << 20), ..ActiveFtp::new(FtpClient::Inetutils, LOCALHOST, DANTED_EXTERNAL) }
        .run(|p| socksify_command(p, danted.addr, &dir), || danted.log());
}

#[test]
fn shim_inetutils_ftp_active_through_danted() {
    shim_through_danted(FtpClient::Inetutils);
}

#[test]
fn shim_tnftp_active_through_danted() {
    shim_through_danted(FtpClient::Tnftp);
}

#[test]
fn shim_lftp_active_through_danted() {
    shim_through_danted(FtpClient::Lftp);
}
