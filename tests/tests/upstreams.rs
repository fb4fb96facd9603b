//! The shim's upstreams (issue 12), across namespace firewalls: SOCKS5 servers (microsocks,
//! `ssh -D`), logins, IPv6 destinations, routes per network, failover with the back-off the
//! program tree shares, and chains. Every destination reports the peer it saw, so each test
//! asserts which proxy carried each connection, or that nothing arrived.

mod upstreams_support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socks4_tests::{
    Danted, DantedOptions, Microsocks, MicrosocksOptions, NetnsFiles, PeerServer, Socks4d, Socks4dOptions, SshSocks,
    TempDir, Topology, binaries, peer_payload, run_with_timeout,
};
use upstreams_support::{
    Chain, Mode, PROBE_PY, SilentServer, TwoProxies, ip, probe, probes, with_config, with_server, write_config,
};

const TIMEOUT: Duration = Duration::from_secs(40);
const PYTHON: &str = "/usr/bin/python3";
const CURL: &str = "/usr/bin/curl";

/// microsocks in the proxy namespace of `topo`, on its inside address.
fn microsocks(topo: &Topology, port: u16, login: Option<(&str, &str)>) -> Microsocks {
    Microsocks::start(&MicrosocksOptions { netns: &topo.proxy, listen: topo.proxy_inside_ip, port, bind: None, login })
}

/// `peer=IP:PORT` at the start of a body: the address the destination saw.
fn body_peer(body: &str) -> Option<SocketAddr> {
    body.lines().next()?.strip_prefix("peer=")?.parse().ok()
}

/// curl fetches /bytes/N from the peer server; the body must say the proxy's outside address.
fn curl_through(topo: &Topology, server: &PeerServer, url_server: &str, what: &str) {
    let url = match server.addr {
        SocketAddr::V6(a) => format!("http://[{}]:{}/bytes/2000", a.ip(), a.port()),
        a => format!("http://{a}/bytes/2000"),
    };
    let mut cmd = with_server(CURL, url_server);
    cmd.args(["-sS", "-g", "--max-time", "20", &url]);
    let out = run_with_timeout(&mut topo.client.wrap(&cmd), b"", TIMEOUT);
    assert!(out.success(), "{what}: curl failed:\n{out}");
    let peer = body_peer(&out.stdout).unwrap_or_else(|| panic!("{what}: no peer line:\n{out}"));
    assert_eq!(peer.ip(), topo.proxy_outside_ip, "{what}: the destination saw {peer}\n{out}");
    assert!(out.stdout.ends_with(std::str::from_utf8(&peer_payload(2000)).unwrap()), "{what}: payload\n{out}");
}

/// A Python client connects to the peer server (by `host`); it must have come from the proxy.
fn python_through(topo: &Topology, host: &str, port: u16, url_server: &str, what: &str) {
    let mut cmd = with_server(PYTHON, url_server);
    cmd.arg("-c").arg(format!("{PROBE_PY}\nreport('p', {host:?}, {port})"));
    let out = run_with_timeout(&mut topo.client.wrap(&cmd), b"", TIMEOUT);
    let map = probes(&out);
    let p = probe(&map, "p", &out);
    assert_eq!(p.peer.map(|a| a.ip()), Some(topo.proxy_outside_ip), "{what}: {p:?}\n{out}");
    assert!(out.shim_lines().is_empty(), "{what}: no stderr line for a success\n{out}");
}

/// SOCKS5 through microsocks (a SOCKS5-only server): curl and Python by address (`socks5://`)
/// and by a name only the proxy's namespace knows (`socks5h://`: the name travels, no lookup
/// leaves the client).
#[test]
fn microsocks_carries_curl_and_python_by_address_and_by_name() {
    let topo = Topology::firewall();
    let _client_files = NetnsFiles::new(&topo.client, "127.0.0.1 localhost\n", "nameserver 127.0.0.1\n");
    let _proxy_files = NetnsFiles::new(&topo.proxy, "127.0.0.1 localhost\n10.77.2.2 dest.internal\n", "");
    let socks = microsocks(&topo, 1080, None);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let by_addr = format!("socks5://{}", socks.addr);
    let by_name = format!("socks5h://{}", socks.addr);
    curl_through(&topo, &server, &by_addr, "curl socks5://");
    python_through(&topo, &topo.server_ip.to_string(), server.addr.port(), &by_addr, "python socks5://");
    python_through(&topo, "dest.internal", server.addr.port(), &by_name, "python socks5h:// by name");
    // The same name with socks5:// is resolved here, where it does not exist: a clean failure.
    let mut cmd = with_server(PYTHON, &by_addr);
    cmd.arg("-c").arg(format!("{PROBE_PY}\nreport('p', 'dest.internal', {})", server.addr.port()));
    let out = run_with_timeout(&mut topo.client.wrap(&cmd), b"", TIMEOUT);
    assert!(!out.stdout.contains(" peer "), "socks5:// must resolve names locally:\n{out}");
    let peers = server.peers();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(peers.iter().all(|p| p.ip() == topo.proxy_outside_ip), "{peers:?}");
}

/// OpenSSH's dynamic forward (`ssh -D`) as the SOCKS5 server: curl and Python through it, by
/// address and by a name sshd's side resolves.
#[test]
fn ssh_dynamic_forward_carries_curl_and_python() {
    let topo = Topology::firewall();
    let _proxy_files = NetnsFiles::new(&topo.proxy, "127.0.0.1 localhost\n10.77.2.2 dest.internal\n", "");
    let ssh = SshSocks::start(&topo.client, &topo.proxy, topo.proxy_inside_ip);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    curl_through(&topo, &server, &format!("socks5://{}", ssh.addr), "curl via ssh -D");
    python_through(&topo, &topo.server_ip.to_string(), server.addr.port(), &format!("socks5://{}", ssh.addr), "python");
    python_through(&topo, "dest.internal", server.addr.port(), &format!("socks5h://{}", ssh.addr), "python by name");
    let peers = server.peers();
    assert_eq!(peers.len(), 3, "{peers:?}\n--- sshd ---\n{}", ssh.log());
    assert!(peers.iter().all(|p| p.ip() == topo.proxy_outside_ip), "{peers:?}");
}

/// A password-protected SOCKS5 server: the right password works from the environment, from a
/// password file and from the URL in the config file (socks4-run too); a wrong one, or none,
/// fails closed with EACCES and exactly one stderr line that never shows the password, and
/// nothing reaches the destination.
#[test]
fn socks5_login_right_password_works_wrong_one_fails_closed() {
    let topo = Topology::firewall();
    let socks = microsocks(&topo, 1080, Some(("alice", "s3cret-pw")));
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let dir = TempDir::new("upstreams-login");
    let password_file = write_config(&dir, "pw", "s3cret-pw\n");
    let probe_program = format!("{PROBE_PY}\nreport('p', '{}', {})", topo.server_ip, server.addr.port());
    let run = |cmd: &mut std::process::Command| run_with_timeout(&mut topo.client.wrap(cmd), b"", TIMEOUT);

    let user_url = format!("socks5://alice@{}", socks.addr);
    let mut from_env = with_server(PYTHON, &user_url);
    from_env.env("SOCKS4_PASSWORD", "s3cret-pw").arg("-c").arg(&probe_program);
    let in_url =
        write_config(&dir, "url.toml", &format!("direct = []\nserver = \"socks5://alice:s3cret-pw@{}\"\n", socks.addr));
    let mut from_url = with_config(Mode::Preload, PYTHON, &in_url);
    from_url.arg("-c").arg(&probe_program);
    let with_file = write_config(
        &dir,
        "file.toml",
        &format!("direct = []\nserver = \"{user_url}\"\npassword_file = \"{}\"\n", password_file.display()),
    );
    let mut from_file = with_config(Mode::Preload, PYTHON, &with_file);
    from_file.arg("-c").arg(&probe_program);
    let mut run_flag = std::process::Command::new(&binaries().socks4_run);
    run_flag
        .env("SOCKS4_DIRECT", "")
        .env_remove("SOCKS4_PASSWORD")
        .env_remove("LD_PRELOAD")
        .args(["--server", &user_url, "--password-file"])
        .arg(&password_file)
        .args(["--", PYTHON, "-c", &probe_program]);
    for (what, cmd) in [
        ("SOCKS4_PASSWORD", &mut from_env),
        ("URL", &mut from_url),
        ("password_file", &mut from_file),
        ("socks4-run", &mut run_flag),
    ] {
        let out = run(cmd);
        let map = probes(&out);
        assert_eq!(probe(&map, "p", &out).peer.map(|a| a.ip()), Some(topo.proxy_outside_ip), "{what}\n{out}");
    }
    assert_eq!(server.peers().len(), 4);

    let mut wrong = with_server(PYTHON, &user_url);
    wrong.env("SOCKS4_PASSWORD", "not-the-password").arg("-c").arg(&probe_program);
    let mut none = with_server(PYTHON, &format!("socks5://{}", socks.addr));
    none.arg("-c").arg(&probe_program);
    for (what, cmd, line) in [
        ("wrong password", &mut wrong, "refused the username/password"),
        ("no login", &mut none, "accepts none of our authentication methods"),
    ] {
        let out = run(cmd);
        let map = probes(&out);
        assert_eq!(probe(&map, "p", &out).errno.as_deref(), Some("EACCES"), "{what}\n{out}");
        let lines = out.shim_lines();
        assert_eq!(lines.len(), 1, "{what}: one stderr line\n{out}");
        assert!(lines[0].contains(line), "{what}\n{out}");
        assert!(
            !out.stderr.contains("not-the-password") && !out.stderr.contains("s3cret"),
            "{what}: a password leaked\n{out}"
        );
    }
    // The password never goes on socks4-run's command line.
    let mut on_argv = std::process::Command::new(&binaries().socks4_run);
    on_argv.args(["--server", &format!("socks5://alice:s3cret-pw@{}", socks.addr), "--", "/bin/true"]);
    let out = run_with_timeout(&mut on_argv, b"", TIMEOUT);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out}");
    assert!(out.stderr.contains("visible to every user") && !out.stderr.contains("s3cret"), "{out}");
    assert_eq!(server.peers().len(), 4, "a failed login let a connection through");
}

/// A destination reachable only over IPv6 (the proxy-server link has IPv6, the client none):
/// through a SOCKS5 upstream it works (ATYP 4, the destination sees the proxy's IPv6 address);
/// through SOCKS4, which cannot carry it, it is ENETUNREACH, as before.
#[test]
fn ipv6_only_destination_through_socks5() {
    let topo = Topology::firewall();
    topo.proxy.ip(&["addr", "add", "fd77:2::1/64", "dev", "p1", "nodad"]);
    topo.server.ip(&["addr", "add", "fd77:2::2/64", "dev", "s0", "nodad"]);
    let socks = microsocks(&topo, 1080, None);
    let socks4d = Socks4d::start_with(
        "[[rule]]\naction = \"allow\"\nfrom = [\"10.77.1.0/24\"]\n",
        &Socks4dOptions {
            listen: Some(format!("{}:1081", topo.proxy_inside_ip)),
            netns: Some(topo.proxy.name().to_string()),
            rust_log: None,
        },
    );
    let server = PeerServer::start_in(Some(topo.server.name()), "fd77:2::2".parse().unwrap());
    let port = server.addr.port();
    let program = format!("{PROBE_PY}\nreport('p', 'fd77:2::2', {port})");

    // The client alone has no way there.
    let mut direct = std::process::Command::new(PYTHON);
    direct.arg("-c").arg(&program);
    let out = run_with_timeout(&mut topo.client.wrap(&direct), b"", TIMEOUT);
    assert_eq!(probe(&probes(&out), "p", &out).errno.as_deref(), Some("ENETUNREACH"), "{out}");

    let mut via5 = with_server(PYTHON, &format!("socks5://{}", socks.addr));
    via5.arg("-c").arg(&program);
    let out = run_with_timeout(&mut topo.client.wrap(&via5), b"", TIMEOUT);
    let p = probe(&probes(&out), "p", &out).clone();
    assert_eq!(p.peer.map(|a| a.ip()), Some("fd77:2::1".parse::<IpAddr>().unwrap()), "{out}");

    let mut curl = with_server(CURL, &format!("socks5://{}", socks.addr));
    curl.args(["-sS", "-g", "--max-time", "20", &format!("http://[fd77:2::2]:{port}/bytes/10")]);
    let out = run_with_timeout(&mut topo.client.wrap(&curl), b"", TIMEOUT);
    assert_eq!(body_peer(&out.stdout).map(|a| a.ip()), Some("fd77:2::1".parse::<IpAddr>().unwrap()), "{out}");

    let mut via4 = with_server(PYTHON, &format!("socks4://{}", socks4d.addr));
    via4.arg("-c").arg(&program);
    let out = run_with_timeout(&mut topo.client.wrap(&via4), b"", TIMEOUT);
    assert_eq!(probe(&probes(&out), "p", &out).errno.as_deref(), Some("ENETUNREACH"), "{out}");
    assert_eq!(server.peers().len(), 2, "{:?}", server.peers());
}

/// Four networks in one configuration: net A by the default route through proxy A (socks4d,
/// SOCKS4), net B by a route through proxy B (danted, SOCKS5), one network direct and one
/// blocked, though the client could reach it. Each destination reports who reached it, and
/// --debug names the upstream of every connection. The same under the seccomp supervisor.
#[test]
fn routes_send_each_network_its_own_way() {
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
    let srv = |host: &str| PeerServer::start_in(Some(t.server.name()), ip(host));
    let (net_a, net_b, direct, blocked) = (
        srv(TwoProxies::NET_A_HOST),
        srv(TwoProxies::NET_B_HOST),
        srv(TwoProxies::DIRECT_HOST),
        srv(TwoProxies::BLOCKED_HOST),
    );
    let dir = TempDir::new("upstreams-routes");
    let config = write_config(
        &dir,
        "routes.toml",
        &format!(
            r#"# proxychains/Dante-style: per-network upstreams
direct = []
server = "socks4://{a}:1080"
debug = true

[[route]]
to = ["10.78.12.0/24"]
via = "socks5://{b}:1080"

[[route]]
to = ["10.78.3.0/24"]
via = "direct"

[[route]]
to = ["10.78.4.0/24"]
via = "block"
"#,
            a = TwoProxies::A_INSIDE,
            b = TwoProxies::B_INSIDE
        ),
    );
    let program = format!(
        "{PROBE_PY}\nreport('a', '{}', {})\nreport('b', '{}', {})\nreport('d', '{}', {})\nreport('x', '{}', {})",
        TwoProxies::NET_A_HOST,
        net_a.addr.port(),
        TwoProxies::NET_B_HOST,
        net_b.addr.port(),
        TwoProxies::DIRECT_HOST,
        direct.addr.port(),
        TwoProxies::BLOCKED_HOST,
        blocked.addr.port()
    );
    for mode in [Mode::Preload, Mode::Supervise] {
        let mut cmd = with_config(mode, PYTHON, &config);
        cmd.arg("-c").arg(&program);
        let out = run_with_timeout(&mut t.client.wrap(&cmd), b"", TIMEOUT);
        let diag = || format!("{mode:?}\n{out}\n--- socks4d ---\n{}\n--- danted ---\n{}", socks4d.log(), danted.log());
        let map = probes(&out);
        let peer = |label: &str| probe(&map, label, &out).peer.map(|a| a.ip());
        assert_eq!(peer("a"), Some(ip(TwoProxies::A_OUTSIDE)), "{}", diag());
        assert_eq!(peer("b"), Some(ip(TwoProxies::B_OUTSIDE)), "{}", diag());
        assert_eq!(peer("d"), Some(ip(TwoProxies::CLIENT_DIRECT)), "{}", diag());
        assert_eq!(probe(&map, "x", &out).errno.as_deref(), Some("EACCES"), "{}", diag());
        // --debug: one line per connection, naming the upstream (or direct, or the block).
        let lines = out.shim_lines();
        let has = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
        let a_line = format!(
            "connect to {}:{} via socks4://{}:1080: granted",
            TwoProxies::NET_A_HOST,
            net_a.addr.port(),
            TwoProxies::A_INSIDE
        );
        let b_line = format!(
            "connect to {}:{} via socks5://{}:1080: granted",
            TwoProxies::NET_B_HOST,
            net_b.addr.port(),
            TwoProxies::B_INSIDE
        );
        let d_line = format!("connect to {}:{}: direct", TwoProxies::DIRECT_HOST, direct.addr.port());
        let x_line =
            format!("connect to {}:{} refused: blocked by route 3", TwoProxies::BLOCKED_HOST, blocked.addr.port());
        for needle in [&a_line, &b_line, &d_line, &x_line] {
            assert_eq!(has(needle), 1, "want one `{needle}` line: {}", diag());
        }
    }
    assert_eq!(blocked.peers(), Vec::<SocketAddr>::new(), "the blocked network was reached");
    for (server, want) in
        [(&net_a, TwoProxies::A_OUTSIDE), (&net_b, TwoProxies::B_OUTSIDE), (&direct, TwoProxies::CLIENT_DIRECT)]
    {
        let peers = server.peers();
        assert!(peers.len() == 2 && peers.iter().all(|p| p.ip() == ip(want)), "{want}: {peers:?}");
    }
}

/// Routes by name: names under `a.internal` go to proxy A (SOCKS4A: socks4d resolves them),
/// names under `b.internal` to proxy B (SOCKS5 with the name: danted resolves them), one name is
/// resolved here and connected to directly, names under `c.internal` are resolved here and sent
/// to proxy B as an address (`socks5://`), and everything else is blocked. Only each proxy's
/// namespace knows its names; the client's resolver knows the direct and `c.internal` ones alone.
#[test]
fn routes_by_name_send_each_name_its_own_way() {
    let t = TwoProxies::new();
    let _client_files = NetnsFiles::new(
        &t.client,
        "127.0.0.1 localhost\n10.78.3.1 printer.lan\n10.78.12.2 www.c.internal\n",
        "nameserver 127.0.0.1\n",
    );
    let _a_files = NetnsFiles::new(&t.proxy_a, "127.0.0.1 localhost\n10.78.11.2 files.a.internal\n", "");
    let _b_files = NetnsFiles::new(&t.proxy_b, "127.0.0.1 localhost\n10.78.12.2 www.b.internal\n", "");
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
    let srv = |host: &str| PeerServer::start_in(Some(t.server.name()), ip(host));
    let (net_a, net_b, direct) =
        (srv(TwoProxies::NET_A_HOST), srv(TwoProxies::NET_B_HOST), srv(TwoProxies::DIRECT_HOST));
    let dir = TempDir::new("upstreams-names");
    let config = write_config(
        &dir,
        "names.toml",
        &format!(
            r#"direct = []
server = "block"
debug = true
[[route]]
to = ["*.a.internal"]
via = "socks4a://{a}:1080"
[[route]]
to = ["*.b.internal"]
via = "socks5h://{b}:1080"
[[route]]
to = ["*.c.internal"]
via = "socks5://{b}:1080"
[[route]]
to = ["printer.lan"]
via = "direct"
"#,
            a = TwoProxies::A_INSIDE,
            b = TwoProxies::B_INSIDE
        ),
    );
    let program = format!(
        "{PROBE_PY}\nreport('a', 'files.a.internal', {})\nreport('b', 'www.b.internal', {})\n\
         report('c', 'www.c.internal', {})\nreport('d', 'printer.lan', {})\nreport('x', '{}', {})",
        net_a.addr.port(),
        net_b.addr.port(),
        net_b.addr.port(),
        direct.addr.port(),
        TwoProxies::DIRECT_HOST,
        direct.addr.port()
    );
    for mode in [Mode::Preload, Mode::Supervise] {
        let mut cmd = with_config(mode, PYTHON, &config);
        cmd.arg("-c").arg(&program);
        let out = run_with_timeout(&mut t.client.wrap(&cmd), b"", TIMEOUT);
        let diag = || format!("{mode:?}\n{out}\n--- socks4d ---\n{}\n--- danted ---\n{}", socks4d.log(), danted.log());
        let map = probes(&out);
        let peer = |label: &str| probe(&map, label, &out).peer.map(|a| a.ip());
        assert_eq!(peer("a"), Some(ip(TwoProxies::A_OUTSIDE)), "{}", diag());
        assert_eq!(peer("b"), Some(ip(TwoProxies::B_OUTSIDE)), "{}", diag());
        if mode == Mode::Preload {
            assert_eq!(peer("d"), Some(ip(TwoProxies::CLIENT_DIRECT)), "{}", diag());
            // Resolved here: proxy B does not know the name.
            assert_eq!(peer("c"), Some(ip(TwoProxies::B_OUTSIDE)), "{}", diag());
        } else {
            // Under the supervisor, a name the program's own libc finds in /etc/hosts never
            // becomes a DNS query, so it arrives as an address, which no name route matches
            // (README, the supervisor's limits).
            assert_eq!(probe(&map, "d", &out).errno.as_deref(), Some("EACCES"), "{}", diag());
            assert_eq!(probe(&map, "c", &out).errno.as_deref(), Some("EACCES"), "{}", diag());
        }
        // The same host by address matches no name route: the default blocks it.
        assert_eq!(probe(&map, "x", &out).errno.as_deref(), Some("EACCES"), "{}", diag());
        assert!(
            out.stderr.contains("connect to files.a.internal:") && out.stderr.contains("via socks4a://"),
            "{}",
            diag()
        );
        assert!(
            out.stderr.contains("connect to www.b.internal:") && out.stderr.contains("via socks5h://"),
            "{}",
            diag()
        );
    }
    // socks4d got the name (SOCKS4A), not an address.
    assert!(socks4d.log().contains("dest=files.a.internal:"), "{}", socks4d.log());
    assert_eq!(direct.peers().len(), 1);
}

/// Failover: the first upstream of each route is dead (one accepts and never answers, one is an
/// address where no host answers); the second carries the connection. The dead one is then
/// skipped by every process of the program tree without waiting for its timeout: what a child
/// learned its parent knows, and what the parent learned its next child knows.
#[test]
fn failover_skips_a_dead_upstream_across_the_program_tree() {
    let topo = Topology::firewall();
    let live = microsocks(&topo, 1080, None);
    let silent = SilentServer::start_in(&topo.proxy, SocketAddr::new(topo.proxy_inside_ip, 1081));
    let (one, two) = (
        PeerServer::start_in(Some(topo.server.name()), topo.server_ip),
        PeerServer::start_in(Some(topo.server.name()), topo.server_ip),
    );
    let dir = TempDir::new("upstreams-failover");
    let config = write_config(
        &dir,
        "failover.toml",
        &format!(
            r#"direct = []
timeout = 1
backoff = 60
[[route]]
to = ["10.77.2.2"]
ports = [{p1}]
via = ["socks5://{silent}", "socks5://{live}"]
[[route]]
to = ["10.77.2.2"]
ports = [{p2}]
via = ["socks5://10.77.1.99:1080", "socks5://{live}"]
"#,
            p1 = one.addr.port(),
            p2 = two.addr.port(),
            silent = silent.addr,
            live = live.addr
        ),
    );
    let program = format!(
        r#"{PROBE_PY}
def in_child(label, port):
    pid = os.fork()
    if pid == 0:
        report(label, "10.77.2.2", port)
        os._exit(0)
    os.waitpid(pid, 0)
in_child("child_first", {p1})
report("parent_after_child", "10.77.2.2", {p1})
report("parent_first", "10.77.2.2", {p2})
in_child("child_after_parent", {p2})
"#,
        p1 = one.addr.port(),
        p2 = two.addr.port()
    );
    let mut cmd = with_config(Mode::Preload, PYTHON, &config);
    cmd.arg("-c").arg(&program);
    let out = run_with_timeout(&mut topo.client.wrap(&cmd), b"", TIMEOUT);
    let map = probes(&out);
    for label in ["child_first", "parent_after_child", "parent_first", "child_after_parent"] {
        let p = probe(&map, label, &out);
        assert_eq!(p.peer.map(|a| a.ip()), Some(topo.proxy_outside_ip), "{label}: {p:?}\n{out}");
    }
    let ms = |label: &str| probe(&map, label, &out).ms;
    // The first connect of each route waits for the dead upstream's 1 s timeout...
    assert!(ms("child_first") >= 900.0 && ms("parent_first") >= 900.0, "{out}");
    // ...the next one, in another process of the tree, goes straight to the live one.
    assert!(ms("parent_after_child") < 300.0, "child -> parent: {out}");
    assert!(ms("child_after_parent") < 300.0, "parent -> child: {out}");
    assert_eq!(silent.accepted(), 1, "the silent upstream was tried again\n{out}");
    let lines = out.shim_lines();
    assert_eq!(lines.len(), 2, "one line per upstream found down\n{out}");
    assert!(lines.iter().all(|l| l.contains("skipping") && l.contains("trying the next upstream")), "{out}");
    eprintln!(
        "failover: first connect {:.0} ms and {:.0} ms (1 s timeout), the next {:.1} ms (child -> parent) and {:.1} ms (parent -> child)",
        ms("child_first"),
        ms("parent_first"),
        ms("parent_after_child"),
        ms("child_after_parent")
    );
}

/// Every upstream down (one silent, one refusing): the first connect fails after trying both,
/// and the next 500 fail at once with the remembered errno and one line each, without spinning:
/// the whole process stays within a small CPU budget. curl gets one clean error.
#[test]
fn all_upstreams_down_fail_at_once_without_spinning() {
    let topo = Topology::firewall();
    let silent = SilentServer::start_in(&topo.proxy, SocketAddr::new(topo.proxy_inside_ip, 1081));
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let upstreams = format!("socks5://{},socks5://{}:1082", silent.addr, topo.proxy_inside_ip);
    let program = format!(
        r#"{PROBE_PY}
report("first", "{host}", {port})
cpu0, t0 = cpu_ms(), time.monotonic()
errs = {{}}
for i in range(500):
    result, ms = probe("{host}", {port})
    errs[result] = errs.get(result, 0) + 1
wall = (time.monotonic() - t0) * 1000
os.write(1, ("loop wall_ms=%.1f cpu_ms=%.1f results=%r\n" % (wall, cpu_ms() - cpu0, errs)).encode())
"#,
        host = topo.server_ip,
        port = server.addr.port()
    );
    let mut cmd = with_server(PYTHON, &upstreams);
    cmd.env("SOCKS4_TIMEOUT", "1").arg("-c").arg(&program);
    let out = run_with_timeout(&mut topo.client.wrap(&cmd), b"", TIMEOUT);
    let map = probes(&out);
    let first = probe(&map, "first", &out);
    assert_eq!(first.errno.as_deref(), Some("ECONNREFUSED"), "the last failure's errno\n{out}");
    assert!(first.ms >= 900.0 && first.ms < 5000.0, "{out}");
    let loop_line = out.stdout.lines().find(|l| l.starts_with("loop ")).unwrap_or_else(|| panic!("{out}"));
    let field = |name: &str| -> f64 {
        loop_line.split_whitespace().find_map(|w| w.strip_prefix(name)?.parse().ok()).unwrap_or(f64::MAX)
    };
    let (wall, cpu) = (field("wall_ms="), field("cpu_ms="));
    // The silent upstream's errno (the first one skipped), 500 times, at once.
    assert!(loop_line.contains("'errno ETIMEDOUT': 500"), "{out}");
    assert!(wall < 2000.0, "500 refused connects took {wall} ms\n{loop_line}");
    assert!(cpu < 1000.0, "500 refused connects used {cpu} ms of CPU\n{loop_line}");
    assert_eq!(silent.accepted(), 1, "a down upstream was tried again");
    let lines = out.shim_lines();
    assert_eq!(
        lines.len(),
        2 + 500,
        "two lines for the first connect, one per connect after\n{}",
        out.stderr.lines().take(5).collect::<Vec<_>>().join("\n")
    );
    // The first failure names the next upstream to try; the last one has none to name.
    assert!(lines[0].contains("skipping") && lines[0].contains("trying the next upstream"), "{}", lines[0]);
    assert!(lines[1].contains("skipping") && !lines[1].contains("trying the next"), "{}", lines[1]);
    assert!(lines[2].contains("every upstream of the default route (server) is down"), "{}", lines[2]);
    assert!(server.peers().is_empty(), "nothing may arrive");
    eprintln!("all upstreams down: 500 connects in {wall:.1} ms wall, {cpu:.1} ms CPU");

    let mut curl = with_server(CURL, &upstreams);
    curl.env("SOCKS4_TIMEOUT", "1").args(["-sS", "--max-time", "20", &format!("http://{}/bytes/10", server.addr)]);
    let out = run_with_timeout(&mut topo.client.wrap(&curl), b"", TIMEOUT);
    assert!(!out.success() && !out.timed_out(), "{out}");
    assert!(out.elapsed < Duration::from_secs(5), "{out}");
    assert!(out.stderr.lines().any(|l| l.starts_with("curl: (7)")), "one clean error from curl\n{out}");
}

/// A chain of two socks4d in separate namespaces: the first sees the client and is asked to
/// connect to the second, the second sees the first and connects to the destination, which sees
/// the second. Then a SOCKS5 first hop (microsocks) in front of the SOCKS4 one.
#[test]
fn chain_of_two_proxies_each_sees_the_one_before() {
    let t = Chain::new();
    let socks4d = |ns: &socks4_tests::Netns, listen: &str, from: &str| {
        Socks4d::start_with(
            &format!("[[rule]]\naction = \"allow\"\nfrom = [\"{from}\"]\n"),
            &Socks4dOptions { listen: Some(listen.to_string()), netns: Some(ns.name().to_string()), rust_log: None },
        )
    };
    let hop1 = socks4d(&t.hop1, "10.79.1.1:1080", "10.79.1.0/24");
    let hop2 = socks4d(&t.hop2, "10.79.2.2:1080", "10.79.2.0/24");
    let first5 = Microsocks::start(&MicrosocksOptions {
        netns: &t.hop1,
        listen: ip(Chain::HOP1_INSIDE),
        port: 1081,
        bind: None,
        login: None,
    });
    let server = PeerServer::start_in(Some(t.server.name()), ip(Chain::SERVER));
    let dir = TempDir::new("upstreams-chain");
    let config = write_config(
        &dir,
        "chain.toml",
        &format!(
            "direct = []\nserver = \"block\"\n[[route]]\nto = [\"10.79.3.0/24\"]\nports = [{p}]\n\
             chain = [\"socks4://10.79.1.1:1080\", \"socks4://10.79.2.2:1080\"]\n",
            p = server.addr.port()
        ),
    );
    let mixed = write_config(
        &dir,
        "mixed.toml",
        "direct = []\n[[route]]\nto = [\"*\"]\nchain = [\"socks5://10.79.1.1:1081\", \"socks4://10.79.2.2:1080\"]\n",
    );
    let program = format!("{PROBE_PY}\nreport('p', '{}', {})", Chain::SERVER, server.addr.port());
    for (what, config, mode) in [
        ("socks4d > socks4d", &config, Mode::Preload),
        ("microsocks > socks4d", &mixed, Mode::Preload),
        ("supervised", &config, Mode::Supervise),
    ] {
        let mut cmd = with_config(mode, PYTHON, config);
        cmd.arg("-c").arg(&program);
        let out = run_with_timeout(&mut t.client.wrap(&cmd), b"", TIMEOUT);
        let p = probe(&probes(&out), "p", &out).clone();
        assert_eq!(
            p.peer.map(|a| a.ip()),
            Some(ip(Chain::HOP2_OUTSIDE)),
            "{what}\n{out}\n--- hop1 ---\n{}\n--- hop2 ---\n{}",
            hop1.log(),
            hop2.log()
        );
    }
    // socks4d logs each session when it ends, a moment after the client closed.
    let wait_for = |s: &Socks4d, n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.log().matches(" session ").count() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        s.log()
    };
    let log1 = wait_for(&hop1, 2);
    let sessions1: Vec<&str> = log1.lines().filter(|l| l.contains(" session ")).collect();
    assert_eq!(sessions1.len(), 2, "{log1}");
    for s in &sessions1 {
        assert!(s.contains("peer=10.79.1.2:") && s.contains("dest=10.79.2.2:1080") && s.contains("reply=90"), "{s}");
    }
    let log2 = wait_for(&hop2, 3);
    let sessions2: Vec<&str> = log2.lines().filter(|l| l.contains(" session ")).collect();
    assert_eq!(sessions2.len(), 3, "{log2}");
    let dest = format!("dest={}", server.addr);
    for s in &sessions2 {
        assert!(s.contains("peer=10.79.2.1:") && s.contains(&dest) && s.contains("reply=90"), "{s}");
    }
    let peers = server.peers();
    assert!(peers.len() == 3 && peers.iter().all(|p| p.ip() == ip(Chain::HOP2_OUTSIDE)), "{peers:?}");

    // A refusal at the second hop (nothing listens on port 1) says which hop refused, on the
    // path the request took.
    let mut cmd = with_config(Mode::Preload, PYTHON, &mixed);
    cmd.arg("-c").arg(format!("{PROBE_PY}\nreport('refused', '{}', 1)", Chain::SERVER));
    let out = run_with_timeout(&mut t.client.wrap(&cmd), b"", TIMEOUT);
    assert_eq!(probe(&probes(&out), "refused", &out).errno.as_deref(), Some("ECONNREFUSED"), "{out}");
    let lines = out.shim_lines();
    let want = "via socks5://10.79.1.1:1081 > socks4://10.79.2.2:1080 refused (at hop 2, socks4://10.79.2.2:1080)";
    assert!(lines.len() == 1 && lines[0].contains(want), "want {want:?}\n{out}");
    drop(first5);
}

/// The supervisor gets the upstreams for free: static busybox wget through a failover list whose
/// first SOCKS5 server is down and whose second is microsocks.
#[test]
fn supervised_static_program_uses_socks5_and_failover() {
    let topo = Topology::firewall();
    let socks = microsocks(&topo, 1080, None);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let mut cmd = std::process::Command::new(&binaries().socks4_run);
    cmd.env("SOCKS4_DIRECT", "")
        .env_remove("LD_PRELOAD")
        .env_remove("SOCKS4_SERVER")
        .args(["--supervise", "--server", &format!("socks5://{}:1082,socks5://{}", topo.proxy_inside_ip, socks.addr)])
        .args(["--", "/usr/bin/busybox", "wget", "-q", "-O", "-", &format!("http://{}/bytes/5000", server.addr)]);
    let out = run_with_timeout(&mut topo.client.wrap(&cmd), b"", TIMEOUT);
    assert!(out.success(), "{out}");
    assert_eq!(body_peer(&out.stdout).map(|a| a.ip()), Some(topo.proxy_outside_ip), "{out}");
    assert!(out.stdout.ends_with(std::str::from_utf8(&peer_payload(5000)).unwrap()), "{out}");
    let lines = out.shim_lines();
    assert!(lines.len() == 1 && lines[0].contains("trying the next upstream"), "{out}");
}
