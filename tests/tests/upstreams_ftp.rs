//! Active-mode FTP through the shim's upstreams (issue 12): BIND over SOCKS5 (Dante's danted,
//! five FTP clients), BIND through a chain of two socks4d (asked of the last hop), and BIND
//! following the route of its control connection when several proxies are configured. In each,
//! pyftpdlib must see the right proxy's address as the control peer, in every PORT/EPRT and as
//! every data connection's peer.

mod upstreams_support;

use socks4_tests::{
    ActiveFtp, Danted, DantedOptions, FtpClient, FtpJob, PyFtpd, Socks4d, Socks4dOptions, SshSocks, TempDir, Topology,
    run_ftp,
};
use upstreams_support::{Chain, Mode, TwoProxies, ip, with_config, with_server, write_config};

/// danted in the firewall's proxy namespace, spoken to in SOCKS5.
fn socks5_danted(client: FtpClient, upload: Option<usize>) {
    let topo = Topology::firewall();
    let danted = Danted::start_with(&DantedOptions {
        internal: topo.proxy_inside_ip,
        port: Some(1080),
        external: topo.proxy_outside_ip,
        netns: Some(topo.proxy.name().to_string()),
    });
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        upload,
        ..ActiveFtp::new(client, topo.server_ip, topo.proxy_outside_ip)
    };
    let server = format!("socks5://{}", danted.addr);
    let out = case.run(
        |p| {
            let mut cmd = with_server(p, &server);
            cmd.env("SOCKS4_DEBUG", "1");
            topo.client.wrap(&cmd)
        },
        || danted.log(),
    );
    // Dante speaks both versions: the debug lines say which the shim spoke.
    for what in ["connect to", "bind request for"] {
        let want = format!("via {server}: granted");
        assert!(
            out.stderr.lines().any(|l| l.contains(what) && l.contains(&want)),
            "no `{what} ... {want}` line:\n{out}"
        );
    }
}

#[test]
fn inetutils_ftp_active_through_danted_socks5() {
    socks5_danted(FtpClient::Inetutils, Some(1 << 20));
}

#[test]
fn tnftp_active_through_danted_socks5() {
    socks5_danted(FtpClient::Tnftp, None);
}

#[test]
fn lftp_active_through_danted_socks5() {
    socks5_danted(FtpClient::Lftp, None);
}

#[test]
fn curl_active_through_danted_socks5() {
    socks5_danted(FtpClient::Curl, None);
}

#[test]
fn ftplib_active_through_danted_socks5() {
    socks5_danted(FtpClient::Ftplib, Some(1 << 20));
}

/// A chain of two socks4d: the control connection goes client > hop1 > hop2 > server, the BIND
/// is asked of hop2, so the FTP server sees hop2's outside address everywhere.
fn through_the_chain(client: FtpClient, mode: Mode) {
    let t = Chain::new();
    let socks4d = |ns: &socks4_tests::Netns, listen: &str, from: &str| {
        Socks4d::start_with(
            &format!("[[rule]]\naction = \"allow\"\nfrom = [\"{from}\"]\n"),
            &Socks4dOptions { listen: Some(listen.to_string()), netns: Some(ns.name().to_string()), rust_log: None },
        )
    };
    let hop1 = socks4d(&t.hop1, "10.79.1.1:1080", "10.79.1.0/24");
    let hop2 = socks4d(&t.hop2, "10.79.2.2:1080", "10.79.2.0/24");
    let dir = TempDir::new("chain-ftp");
    let config = write_config(
        &dir,
        "chain.toml",
        "direct = []\nserver = \"block\"\n[[route]]\nto = [\"10.79.3.0/24\"]\n\
         chain = [\"socks4://10.79.1.1:1080\", \"socks4://10.79.2.2:1080\"]\n",
    );
    let case = ActiveFtp {
        ftpd_netns: Some(t.server.name()),
        ..ActiveFtp::new(client, ip(Chain::SERVER), ip(Chain::HOP2_OUTSIDE))
    };
    case.run(
        |p| t.client.wrap(&with_config(mode, p, &config)),
        || format!("--- hop1 ---\n{}\n--- hop2 ---\n{}", hop1.log(), hop2.log()),
    );
    // hop1 carried only CONNECTs to hop2; hop2 took the BINDs.
    let log1 = hop1.log();
    assert!(!log1.contains("command=bind"), "hop1 was asked for a BIND:\n{log1}");
    assert!(hop2.log().contains("command=bind"), "hop2 took no BIND:\n{}", hop2.log());
}

#[test]
fn inetutils_ftp_active_through_a_chain_of_two_socks4d() {
    through_the_chain(FtpClient::Inetutils, Mode::Preload);
}

#[test]
fn lftp_active_through_a_chain_of_two_socks4d() {
    through_the_chain(FtpClient::Lftp, Mode::Preload);
}

#[test]
fn ftplib_active_through_a_chain_under_the_supervisor() {
    through_the_chain(FtpClient::Ftplib, Mode::Supervise);
}

/// Two proxies: the default route goes through socks4d (proxy A), the FTP server's network
/// through danted (proxy B, SOCKS5). The BIND must follow the control connection to proxy B: the
/// PORT address is then B's, the address the FTP server checks it against; proxy A cannot even
/// reach that network.
fn bind_follows_the_route(client: FtpClient) {
    let t = TwoProxies::new();
    let socks4d = Socks4d::start_with(
        "[[rule]]\naction = \"allow\"\nfrom = [\"10.78.1.0/24\"]\n",
        &Socks4dOptions {
            listen: Some(format!("{}:1080", TwoProxies::A_INSIDE)),
            netns: Some(t.proxy_a.name().to_string()),
            rust_log: None,
        },
    );
    let danted = Danted::start_with(&DantedOptions {
        internal: ip(TwoProxies::B_INSIDE),
        port: Some(1080),
        external: ip(TwoProxies::B_OUTSIDE),
        netns: Some(t.proxy_b.name().to_string()),
    });
    let dir = TempDir::new("route-ftp");
    let config = write_config(
        &dir,
        "routes.toml",
        &format!(
            "direct = []\nserver = \"socks4://{}:1080\"\n[[route]]\nto = [\"10.78.12.0/24\"]\nvia = \"socks5://{}:1080\"\n",
            TwoProxies::A_INSIDE,
            TwoProxies::B_INSIDE
        ),
    );
    let case = ActiveFtp {
        ftpd_netns: Some(t.server.name()),
        ..ActiveFtp::new(client, ip(TwoProxies::NET_B_HOST), ip(TwoProxies::B_OUTSIDE))
    };
    case.run(
        |p| t.client.wrap(&with_config(Mode::Preload, p, &config)),
        || format!("--- socks4d (A) ---\n{}\n--- danted (B) ---\n{}", socks4d.log(), danted.log()),
    );
    assert!(!socks4d.log().contains("session"), "proxy A was used:\n{}", socks4d.log());
}

#[test]
fn inetutils_ftp_bind_follows_the_route_of_its_connection() {
    bind_follows_the_route(FtpClient::Inetutils);
}

#[test]
fn tnftp_bind_follows_the_route_of_its_connection() {
    bind_follows_the_route(FtpClient::Tnftp);
}

/// `ssh -D` does CONNECT only: active FTP through it must fail closed, quickly, with nothing
/// around it: the control connection arrives from the proxy, but no PORT/EPRT names the client
/// and no data connection is made.
#[test]
fn active_ftp_through_ssh_dynamic_forward_fails_closed() {
    let topo = Topology::firewall();
    let ssh = SshSocks::start(&topo.client, &topo.proxy, topo.proxy_inside_ip);
    let dir = TempDir::new("ssh-ftp");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("file.bin"), b"must not arrive").unwrap();
    let ftpd = PyFtpd::start_in(Some(topo.server.name()), &root, topo.server_ip);
    let local = dir.join("got.bin");
    let mut job = FtpJob::anonymous(ftpd.addr);
    job.get.push(("file.bin".into(), local.clone()));
    let server = format!("socks5://{}", ssh.addr);
    let out = run_ftp(
        FtpClient::Inetutils,
        &job,
        |p| topo.client.wrap(&with_server(p, &server)),
        std::time::Duration::from_secs(30),
    );
    let diag = format!("{out}\n--- ftpd ---\n{}\n--- sshd ---\n{}", ftpd.log(), ssh.log());
    assert!(!out.timed_out(), "the client hung: {diag}");
    let controls = ftpd.control_peers();
    assert!(!controls.is_empty() && controls.iter().all(|p| p.ip() == topo.proxy_outside_ip), "{diag}");
    assert!(ftpd.port_commands().is_empty(), "a PORT/EPRT reached the server: {diag}");
    assert!(ftpd.data_connections().is_empty(), "a data connection was opened: {diag}");
    assert!(std::fs::read(&local).unwrap_or_default().is_empty(), "file.bin arrived: {diag}");
    assert!(out.stderr.contains("bind request for"), "one line says the BIND failed: {diag}");
}
