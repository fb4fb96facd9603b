//! The honest proof (issue 3): a firewall built from network namespaces. The client's namespace
//! has no route to the server's network and the proxy's namespace does not forward, so the
//! only way from client to server is a SOCKS4 server running in the proxy's namespace. Active
//! FTP must work through it, and the FTP server must see only the proxy's address.

use std::net::SocketAddr;
use std::time::Duration;

use socks4_tests::{
    ActiveFtp, Danted, DantedOptions, FtpClient, FtpJob, PyFtpd, Socks4d, Socks4dOptions, TempDir, Topology, run_ftp,
    run_with_timeout, shim_command, socksify_command,
};

const SOCKS_PORT: u16 = 1080;

/// socks4d config for the proxy namespace: clients from the client net only; the outside
/// address is left to the kernel's route ("auto"), as in a real deployment.
const CONFIG: &str = r#"
[[rule]]
name = "inside clients"
action = "allow"
from = ["10.77.1.0/24"]
"#;

/// socks4d with `config` on the proxy's inside address, in the proxy namespace.
fn socks4d_in(topo: &Topology, config: &str) -> Socks4d {
    Socks4d::start_with(
        config,
        &Socks4dOptions {
            listen: Some(SocketAddr::new(topo.proxy_inside_ip, SOCKS_PORT).to_string()),
            netns: Some(topo.proxy.name().to_string()),
            rust_log: None,
        },
    )
}

fn danted_in(topo: &Topology) -> Danted {
    Danted::start_with(&DantedOptions {
        internal: topo.proxy_inside_ip,
        port: Some(SOCKS_PORT),
        external: topo.proxy_outside_ip,
        netns: Some(topo.proxy.name().to_string()),
    })
}

/// Without a proxy the client cannot reach the FTP server, while the proxy's namespace can:
/// the firewall is real, and the server is up.
#[test]
fn client_cannot_reach_the_server_without_the_proxy() {
    let topo = Topology::firewall();
    let dir = TempDir::new("fw-direct");
    std::fs::write(dir.join("x.txt"), b"x").unwrap();
    let ftpd = PyFtpd::start_in(Some(topo.server.name()), dir.path(), topo.server_ip);
    let probe = format!("exec 3<>/dev/tcp/{}/{}", ftpd.addr.ip(), ftpd.addr.port());

    let from_proxy = run_with_timeout(topo.proxy.command("bash").args(["-c", &probe]), b"", Duration::from_secs(5));
    assert!(from_proxy.success(), "the proxy namespace cannot reach the FTP server: {from_proxy}");

    let from_client = run_with_timeout(topo.client.command("bash").args(["-c", &probe]), b"", Duration::from_secs(5));
    assert!(!from_client.success(), "the client reached the server directly: {from_client}");
    assert!(from_client.stderr.contains("unreachable"), "expected 'Network is unreachable': {from_client}");

    let mut job = FtpJob::anonymous(ftpd.addr);
    job.list = Some(".".into());
    let ftp = run_ftp(FtpClient::Inetutils, &job, |p| topo.client.command(p), Duration::from_secs(10));
    assert!(!ftp.stdout.contains("x.txt"), "direct FTP listed the server's files: {ftp}");
    let controls = ftpd.control_peers();
    assert!(
        controls.iter().all(|p| p.ip() == topo.proxy_outside_ip),
        "only the proxy-namespace probe may have reached the server: {controls:?}\n{}",
        ftpd.log()
    );
}

fn shim_through_socks4d(client: FtpClient) {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo, CONFIG);
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        ..ActiveFtp::new(client, topo.server_ip, topo.proxy_outside_ip)
    };
    case.run(|p| topo.client.wrap(&shim_command(p, socks4d.addr)), || socks4d.log());
}

#[test]
fn shim_inetutils_ftp_active_through_socks4d_firewall() {
    shim_through_socks4d(FtpClient::Inetutils);
}

#[test]
fn shim_tnftp_active_through_socks4d_firewall() {
    shim_through_socks4d(FtpClient::Tnftp);
}

#[test]
fn shim_lftp_active_through_socks4d_firewall() {
    shim_through_socks4d(FtpClient::Lftp);
}

#[test]
fn shim_curl_active_through_socks4d_firewall() {
    shim_through_socks4d(FtpClient::Curl);
}

#[test]
fn shim_ftplib_active_through_socks4d_firewall() {
    shim_through_socks4d(FtpClient::Ftplib);
}

#[test]
fn socksify_inetutils_ftp_active_through_socks4d_firewall() {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo, CONFIG);
    let dir = TempDir::new("socksify-fw");
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        upload: Some(1 << 20),
        ..ActiveFtp::new(FtpClient::Inetutils, topo.server_ip, topo.proxy_outside_ip)
    };
    case.run(|p| topo.client.wrap(&socksify_command(p, socks4d.addr, &dir)), || socks4d.log());
}

#[test]
fn shim_inetutils_ftp_active_through_danted_firewall() {
    let topo = Topology::firewall();
    let danted = danted_in(&topo);
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        upload: Some(1 << 20),
        ..ActiveFtp::new(FtpClient::Inetutils, topo.server_ip, topo.proxy_outside_ip)
    };
    case.run(|p| topo.client.wrap(&shim_command(p, danted.addr)), || danted.log());
}

/// Harness check: socksify through danted across the firewall (both halves are Dante's).
#[test]
fn socksify_inetutils_ftp_active_through_danted_firewall() {
    let topo = Topology::firewall();
    let danted = danted_in(&topo);
    let dir = TempDir::new("socksify-fw");
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        upload: Some(1 << 20),
        ..ActiveFtp::new(FtpClient::Inetutils, topo.server_ip, topo.proxy_outside_ip)
    };
    case.run(|p| topo.client.wrap(&socksify_command(p, danted.addr, &dir)), || danted.log());
}

/// A proxy that allows CONNECT but not BIND must stop active FTP, and nothing may leak around
/// it: the server sees the control connection from the proxy, yet no PORT/EPRT and no data
/// connection at all (a shim falling back to a local listener would send PORT 10.77.1.2).
#[test]
fn refused_bind_stops_active_ftp_without_a_bypass() {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(
        &topo,
        r#"
[[rule]]
name = "connect only"
action = "allow"
from = ["10.77.1.0/24"]
commands = ["connect"]
"#,
    );
    let dir = TempDir::new("fw-nobind");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("file.bin"), b"must not arrive").unwrap();
    let ftpd = PyFtpd::start_in(Some(topo.server.name()), &root, topo.server_ip);

    let local = dir.join("got.bin");
    let mut job = FtpJob::anonymous(ftpd.addr);
    job.list = Some(".".into());
    job.get.push(("file.bin".into(), local.clone()));
    let out = run_ftp(
        FtpClient::Inetutils,
        &job,
        |p| topo.client.wrap(&shim_command(p, socks4d.addr)),
        Duration::from_secs(20),
    );
    let diag = format!("{out}\n--- ftpd log ---\n{}\n--- socks4d log ---\n{}", ftpd.log(), socks4d.log());
    assert!(!out.timed_out(), "the client hung: {diag}");
    // The control connection did go through (CONNECT is allowed)...
    let controls = ftpd.control_peers();
    assert!(
        !controls.is_empty() && controls.iter().all(|p| p.ip() == topo.proxy_outside_ip),
        "control peers {controls:?}: {diag}"
    );
    // ...but no data channel was ever offered or opened, and nothing arrived.
    assert!(ftpd.port_commands().is_empty(), "a PORT/EPRT reached the server: {diag}");
    assert!(ftpd.data_connections().is_empty(), "a data connection was opened: {diag}");
    assert!(std::fs::read(&local).unwrap_or_default().is_empty(), "file.bin arrived: {diag}");
    // socks4d refused the BIND request with 91.
    assert!(
        socks4d.log().lines().any(|l| l.contains("command=bind") && l.contains("reply=91")),
        "no refused BIND in socks4d's log: {diag}"
    );
}
