//! Active-mode FTP through the seccomp supervisor (issue 13): BIND for static programs. A static
//! Go FTP client (listen on port 0, PORT from the listener's address, RETR) and the five FTP
//! clients of the shim's matrix, forced under --supervise, across the namespace firewall against
//! pyftpdlib, which refuses PORT addresses other than its client's.

use std::net::SocketAddr;
use std::time::Duration;

use socks4_tests::{
    ActiveFtp, FtpClient, PyFtpd, Socks4d, Socks4dOptions, TempDir, Topology, checksum, go_binary, run_with_timeout,
    supervise_command, test_content,
};

const CONFIG: &str = r#"
[[rule]]
name = "inside clients"
action = "allow"
from = ["10.77.1.0/24"]
"#;

fn socks4d_in(topo: &Topology) -> Socks4d {
    Socks4d::start_with(
        CONFIG,
        &Socks4dOptions {
            listen: Some(SocketAddr::new(topo.proxy_inside_ip, 1080).to_string()),
            netns: Some(topo.proxy.name().to_string()),
            rust_log: None,
        },
    )
}

#[test]
fn static_go_ftp_client_downloads_in_active_mode() {
    let go = go_binary("s4go");
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let dir = TempDir::new("go-ftp");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let content = test_content(3 << 20, 0x60);
    std::fs::write(root.join("big.bin"), &content).unwrap();
    let ftpd = PyFtpd::start_in(Some(topo.server.name()), &root, topo.server_ip);
    let out_file = dir.join("got.bin");
    let mut cmd = topo.client.wrap(&supervise_command(go.to_str().unwrap(), socks4d.addr));
    cmd.args(["ftp", &ftpd.addr.to_string(), "big.bin", out_file.to_str().unwrap()]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(40));
    let diag = || format!("{out}\n--- ftpd ---\n{}\n--- socks4d ---\n{}", ftpd.log(), socks4d.log());
    assert!(out.success(), "{}", diag());
    let got = std::fs::read(&out_file).unwrap_or_default();
    assert!(got.len() == content.len() && checksum(&got) == checksum(&content), "file differs: {}", diag());
    let ports = ftpd.port_addrs();
    assert!(!ports.is_empty() && ports.iter().all(|a| a.ip() == topo.proxy_outside_ip), "PORT {ports:?}: {}", diag());
    let listener: SocketAddr = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("listener ")?.parse().ok())
        .unwrap_or_else(|| panic!("no listener line: {}", diag()));
    assert_eq!(Some(&listener), ports.first(), "the listener's address is what PORT carried: {}", diag());
    let data = ftpd.data_connections();
    assert!(
        !data.is_empty() && data.iter().all(|(active, p)| *active && p.ip() == topo.proxy_outside_ip),
        "{}",
        diag()
    );
    let controls = ftpd.control_peers();
    assert!(controls.iter().all(|p| p.ip() == topo.proxy_outside_ip), "{}", diag());
    // The accepted connection's peer (getpeername/accept) is the FTP server's data address.
    assert!(out.stdout.lines().any(|l| l.starts_with(&format!("data-peer {}:", topo.server_ip))), "{}", diag());
}

fn matrix(client: FtpClient) {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        upload: Some(1 << 20),
        ..ActiveFtp::new(client, topo.server_ip, topo.proxy_outside_ip)
    };
    case.run(|p| topo.client.wrap(&supervise_command(p, socks4d.addr)), || socks4d.log());
}

#[test]
fn supervised_inetutils_ftp_active_through_the_firewall() {
    matrix(FtpClient::Inetutils);
}

#[test]
fn supervised_tnftp_active_through_the_firewall() {
    matrix(FtpClient::Tnftp);
}

#[test]
fn supervised_lftp_active_through_the_firewall() {
    matrix(FtpClient::Lftp);
}

#[test]
fn supervised_curl_active_through_the_firewall() {
    matrix(FtpClient::Curl);
}

#[test]
fn supervised_ftplib_active_through_the_firewall() {
    matrix(FtpClient::Ftplib);
}
