//! socks4d scaled out behind HAProxy, in network namespaces: client network (10.77.1.2 and
//! 10.77.1.3) | HAProxy on 10.77.1.1:1080 with two socks4d on 127.0.0.1:10801/10802 (outside
//! addresses 10.77.2.1 and 10.77.2.3, so that the FTP server shows which one carried what) |
//! FTP server network (10.77.2.2). HAProxy runs server/examples/haproxy.cfg exactly as the
//! README shows it: TCP mode, PROXY protocol v2, balance source, health checks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use socks4_tests::{
    ActiveFtp, FtpClient, HaProxy, Probe, PyFtpd, Socks4d, Socks4dOptions, TempDir, Topology, probe_reply,
    run_with_timeout, shim_command, socks_probe,
};

const RECIPE: &str = include_str!("../../server/examples/haproxy.cfg");
const FRONTEND_PORT: u16 = 1080;
const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 2));
const MALLORY: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 1, 3));

/// One socks4d instance of the recipe: on 127.0.0.1:`port`, PROXY headers from HAProxy
/// only, `/metrics` on 127.0.0.1:`port - 1692` (9109, 9110), rules about the real clients.
fn instance_config(port: u16, external: IpAddr) -> String {
    format!(
        r#"listen = ["127.0.0.1:{port}"]
external = "{external}"
proxy_protocol_from = ["127.0.0.1"]
metrics = "127.0.0.1:{metrics}"
connect_timeout = "10s"
[[rule]]
name = "alice"
action = "allow"
from = ["10.77.1.2"]
[[rule]]
name = "mallory"
action = "deny"
from = ["10.77.1.3"]
"#,
        metrics = port - 1692
    )
}

/// The namespaces, two socks4d and HAProxy with `haproxy_cfg`, both servers UP.
struct Farm {
    topo: Topology,
    /// s1 and s2, as HAProxy names them.
    instances: Vec<Socks4d>,
    /// Their outside addresses.
    externals: [IpAddr; 2],
    haproxy: HaProxy,
}

impl Farm {
    fn start(haproxy_cfg: &str) -> Farm {
        let topo = Topology::firewall();
        topo.client.ip(&["addr", "add", "10.77.1.3/24", "dev", "c0"]);
        topo.proxy.ip(&["addr", "add", "10.77.2.3/24", "dev", "p1"]);
        let externals = [topo.proxy_outside_ip, IpAddr::V4(Ipv4Addr::new(10, 77, 2, 3))];
        let instances = [10801, 10802]
            .iter()
            .zip(externals)
            .map(|(&port, external)| {
                Socks4d::start_with(
                    &instance_config(port, external),
                    &Socks4dOptions {
                        listen: None,
                        netns: Some(topo.proxy.name().to_string()),
                        rust_log: Some("info".into()),
                    },
                )
            })
            .collect();
        let haproxy = HaProxy::start_in(topo.proxy.name(), haproxy_cfg, frontend(&topo));
        let farm = Farm { topo, instances, externals, haproxy };
        for server in ["s1", "s2"] {
            assert!(
                farm.haproxy.wait_for_status("socks4d", server, "UP", Duration::from_secs(10)),
                "{server} not UP: {:?}\n{}",
                farm.haproxy.server_status("socks4d", server),
                farm.logs()
            );
        }
        farm
    }

    fn logs(&self) -> String {
        format!(
            "--- haproxy ---\n{}\n--- s1 ---\n{}\n--- s2 ---\n{}",
            self.haproxy.log(),
            self.instances[0].log(),
            self.instances[1].log()
        )
    }

    /// The index of the instance whose log has a session line from `client`.
    fn instance_of(&self, client: IpAddr) -> Option<usize> {
        let needle = format!("peer={client}:");
        self.instances.iter().position(|s| session_lines(s).iter().any(|l| l.contains(&needle)))
    }

    /// `/metrics` of instance `i`, fetched inside the namespace.
    fn metrics(&self, i: usize) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", 10801 + i as u16 - 1692);
        let out = run_with_timeout(
            self.topo.proxy.command("curl").args(["-sS", "--max-time", "5", &url]),
            b"",
            Duration::from_secs(10),
        );
        assert!(out.success(), "scrape {url}: {out}");
        out.stdout
    }
}

fn frontend(topo: &Topology) -> SocketAddr {
    SocketAddr::new(topo.proxy_inside_ip, FRONTEND_PORT)
}

fn session_lines(s: &Socks4d) -> Vec<String> {
    s.log().lines().filter(|l| l.contains(" session ")).map(str::to_string).collect()
}

/// The value of one series in a Prometheus text page (0 if absent).
fn metric(page: &str, series: &str) -> f64 {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

/// An FTP server in the server namespace to CONNECT to (the probes do not speak FTP; it
/// only has to accept).
fn ftpd(topo: &Topology, dir: &TempDir) -> PyFtpd {
    PyFtpd::start_in(Some(topo.server.name()), dir.path(), topo.server_ip)
}

/// Active-mode FTP with the five clients through HAProxy, all carried by the instance
/// `balance source` gives alice; mallory, through the same balancer, refused by the rule
/// about her real address; the log and the metrics name the real clients.
#[test]
fn five_ftp_clients_through_haproxy_with_rules_on_real_addresses() {
    let farm = Farm::start(RECIPE);
    let topo = &farm.topo;
    let dir = TempDir::new("haproxy-probe");
    let server = ftpd(topo, &dir);

    let denied = socks_probe(&topo.client, MALLORY, frontend(topo), server.addr, &Probe::default());
    assert_eq!(probe_reply(&denied), Some(91), "mallory: {denied}\n{}", farm.logs());
    let allowed = socks_probe(&topo.client, ALICE, frontend(topo), server.addr, &Probe::default());
    assert_eq!(probe_reply(&allowed), Some(90), "alice: {allowed}\n{}", farm.logs());
    // SOCKS5 through the balancer too (reply 0 granted, 2 not allowed by ruleset).
    let socks5 = Probe { socks: 5, ..Probe::default() };
    let out = socks_probe(&topo.client, ALICE, frontend(topo), server.addr, &socks5);
    assert_eq!(probe_reply(&out), Some(0), "alice, SOCKS5: {out}\n{}", farm.logs());
    let out = socks_probe(&topo.client, MALLORY, frontend(topo), server.addr, &socks5);
    assert_eq!(probe_reply(&out), Some(2), "mallory, SOCKS5: {out}\n{}", farm.logs());
    let at = farm.instance_of(ALICE).unwrap_or_else(|| panic!("no session line from alice:\n{}", farm.logs()));
    let mallory_line = farm
        .instances
        .iter()
        .flat_map(session_lines)
        .find(|l| l.contains(&format!("peer={MALLORY}:")))
        .unwrap_or_else(|| panic!("no session line from mallory:\n{}", farm.logs()));
    for want in ["via=127.0.0.1:", "rule=1:mallory", "reply=91"] {
        assert!(mallory_line.contains(want), "{want} not in {mallory_line}");
    }

    for client in FtpClient::ALL {
        let case = ActiveFtp {
            ftpd_netns: Some(topo.server.name()),
            size: 1 << 20,
            ..ActiveFtp::new(client, topo.server_ip, farm.externals[at])
        };
        case.run(|p| topo.client.wrap(&shim_command(p, frontend(topo))), || farm.logs());
    }
    // Every session of alice's (control and data, all five clients) on one instance.
    let needle = format!("peer={ALICE}:");
    assert!(
        !session_lines(&farm.instances[1 - at]).iter().any(|l| l.contains(&needle)),
        "alice reached both instances:\n{}",
        farm.logs()
    );
    let lines: Vec<String> = session_lines(&farm.instances[at]).into_iter().filter(|l| l.contains(&needle)).collect();
    assert!(lines.iter().any(|l| l.contains("command=bind") && l.contains("reply=90")), "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains("via=127.0.0.1:") && l.contains("rule=0:alice")), "{lines:#?}");

    let page = farm.metrics(at);
    assert!(metric(&page, "socks4d_proxy_headers_total{result=\"v2\"}") >= lines.len() as f64, "{page}");
    assert!(metric(&page, "socks4d_proxy_headers_total{result=\"local\"}") >= 1.0, "health checks: {page}");
    assert_eq!(metric(&page, "socks4d_proxy_headers_total{result=\"missing\"}"), 0.0, "{page}");
    assert!(
        metric(&page, "socks4d_sessions_total{protocol=\"socks4\",command=\"bind\",reply=\"90\"}") >= 5.0,
        "{page}"
    );
    assert_eq!(metric(&page, "socks4d_rule_hits_total{rule=\"alice\",action=\"allow\"}"), lines.len() as f64, "{page}");
}

/// Killing the instance that serves alice: once HAProxy's health check marks it DOWN, new
/// sessions go to the other instance, and none fails.
#[test]
fn killing_an_instance_moves_new_sessions_to_the_other() {
    let mut farm = Farm::start(RECIPE);
    let dir = TempDir::new("haproxy-kill");
    let server = ftpd(&farm.topo, &dir);
    let first = socks_probe(&farm.topo.client, ALICE, frontend(&farm.topo), server.addr, &Probe::default());
    assert_eq!(probe_reply(&first), Some(90), "{first}\n{}", farm.logs());
    let at = farm.instance_of(ALICE).unwrap_or_else(|| panic!("no session line from alice:\n{}", farm.logs()));
    let other = 1 - at;
    let name = ["s1", "s2"][at];

    farm.instances[at].crash();
    let since = Instant::now();
    assert!(
        farm.haproxy.wait_for_status("socks4d", name, "DOWN", Duration::from_secs(10)),
        "HAProxy did not notice {name} is gone: {:?}\n{}",
        farm.haproxy.server_status("socks4d", name),
        farm.logs()
    );
    // inter 1s, fall 2: about two seconds.
    assert!(since.elapsed() < Duration::from_secs(6), "{:?}", since.elapsed());

    let topo = &farm.topo;
    for i in 0..10 {
        let out = socks_probe(&topo.client, ALICE, frontend(topo), server.addr, &Probe::default());
        assert_eq!(probe_reply(&out), Some(90), "session {i} after failover: {out}\n{}", farm.logs());
    }
    let case = ActiveFtp {
        ftpd_netns: Some(topo.server.name()),
        size: 1 << 20,
        ..ActiveFtp::new(FtpClient::Inetutils, topo.server_ip, farm.externals[other])
    };
    case.run(|p| topo.client.wrap(&shim_command(p, frontend(topo))), || farm.logs());
    let needle = format!("peer={ALICE}:");
    let moved = session_lines(&farm.instances[other]).iter().filter(|l| l.contains(&needle)).count();
    assert!(moved >= 12, "{moved} sessions of alice on the surviving instance:\n{}", farm.logs());
}

/// `send-proxy` (version 1) works as well: same recipe, v1 headers.
#[test]
fn proxy_protocol_v1_from_haproxy() {
    let cfg = RECIPE.replace("send-proxy-v2", "send-proxy");
    assert_ne!(cfg, RECIPE);
    let farm = Farm::start(&cfg);
    let dir = TempDir::new("haproxy-v1");
    let server = ftpd(&farm.topo, &dir);
    let out = socks_probe(&farm.topo.client, ALICE, frontend(&farm.topo), server.addr, &Probe::default());
    assert_eq!(probe_reply(&out), Some(90), "{out}\n{}", farm.logs());
    let denied = socks_probe(&farm.topo.client, MALLORY, frontend(&farm.topo), server.addr, &Probe::default());
    assert_eq!(probe_reply(&denied), Some(91), "{denied}\n{}", farm.logs());
    let at = farm.instance_of(ALICE).unwrap_or_else(|| panic!("no session line from alice:\n{}", farm.logs()));
    let page = farm.metrics(at);
    assert!(metric(&page, "socks4d_proxy_headers_total{result=\"v1\"}") >= 1.0, "{page}");
    assert_eq!(metric(&page, "socks4d_proxy_headers_total{result=\"v2\"}"), 0.0, "{page}");
}

/// Around HAProxy: a client that reaches a socks4d listener directly cannot claim another
/// address with a forged header, and HAProxy's own address cannot speak SOCKS without one.
#[test]
fn forged_headers_around_the_balancer_are_refused() {
    let topo = Topology::firewall();
    topo.client.ip(&["addr", "add", "10.77.1.3/24", "dev", "c0"]);
    // Listening on every address, so the client network can reach it around HAProxy.
    let config = instance_config(10801, topo.proxy_outside_ip).replace("127.0.0.1:10801", "0.0.0.0:10801");
    let socks4d = Socks4d::start_with(
        &config,
        &Socks4dOptions { listen: None, netns: Some(topo.proxy.name().to_string()), rust_log: Some("info".into()) },
    );
    let dir = TempDir::new("haproxy-forged");
    let server = ftpd(&topo, &dir);
    let direct = SocketAddr::new(topo.proxy_inside_ip, 10801);

    // Mallory pretends to be HAProxy relaying alice.
    let mut forged = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    forged.extend_from_slice(&[10, 77, 1, 2, 10, 77, 1, 1, 0x9c, 0x40, 0x04, 0x38]);
    for first in [&forged[..], b"PROXY TCP4 10.77.1.2 10.77.1.1 40000 1080\r\n"] {
        let probe = Probe { first: Some(first), ..Probe::default() };
        let out = socks_probe(&topo.client, MALLORY, direct, server.addr, &probe);
        assert!(out.stdout.contains("closed") && probe_reply(&out).is_none(), "{out}\n{}", socks4d.log());
    }
    // A client on the balancer's host (a trusted source) without a header.
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let out = socks_probe(&topo.proxy, lo, SocketAddr::new(lo, 10801), server.addr, &Probe::default());
    assert!(out.stdout.contains("closed") && probe_reply(&out).is_none(), "{out}\n{}", socks4d.log());

    let log = socks4d.log();
    let untrusted = log.lines().filter(|l| l.contains("source not in proxy_protocol_from")).count();
    assert_eq!(untrusted, 2, "{log}");
    assert!(
        log.lines().any(|l| l.contains("PROXY protocol: connection refused") && l.contains("no PROXY protocol header")),
        "{log}"
    );
    assert!(server.control_peers().is_empty(), "a refused connection reached the FTP server");
}

/// The README shows the very recipe the tests run.
#[test]
fn readme_shows_the_recipe_verbatim() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(readme.contains(&format!("```\n{RECIPE}```\n")), "README.md lacks server/examples/haproxy.cfg verbatim");
}
