//! The seccomp supervisor (issue 13): static programs that LD_PRELOAD cannot reach (static
//! busybox, a CGO_ENABLED=0 Go client) go through socks4d across a namespace firewall, and fail
//! closed when the proxy does not do its part. Each test asserts the bytes that arrived and the
//! address the destination saw.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use socks4_tests::{
    PeerServer, RunOutput, Socks4d, Socks4dOptions, Topology, go_binary, peer_payload, run_with_timeout,
    socks4_run_command, supervise_command,
};

const BUSYBOX: &str = "/usr/bin/busybox";
const TIMEOUT: Duration = Duration::from_secs(30);

/// socks4d for the proxy namespace: clients from the client net only.
const FIREWALL_CONFIG: &str = r#"
[[rule]]
name = "inside clients"
action = "allow"
from = ["10.77.1.0/24"]
"#;

fn socks4d_in(topo: &Topology) -> Socks4d {
    Socks4d::start_with(
        FIREWALL_CONFIG,
        &Socks4dOptions {
            listen: Some(SocketAddr::new(topo.proxy_inside_ip, 1080).to_string()),
            netns: Some(topo.proxy.name().to_string()),
            rust_log: None,
        },
    )
}

/// The body a GET of /bytes/`n` must bring when the server saw `peer_ip`.
fn check_body(out: &RunOutput, peer_ip: IpAddr, n: usize) {
    let body = out.stdout.as_bytes();
    let line_end = body.iter().position(|&b| b == b'\n').unwrap_or_else(|| panic!("no peer line: {out}"));
    let peer: SocketAddr = std::str::from_utf8(&body[..line_end])
        .ok()
        .and_then(|l| l.strip_prefix("peer="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad peer line: {out}"));
    assert_eq!(peer.ip(), peer_ip, "the server saw {peer}: {out}");
    assert!(&body[line_end + 1..] == peer_payload(n).as_slice(), "payload differs ({} bytes): {out}", body.len());
}

/// A static program's connection reaches the server across the firewall only through socks4d.
fn across_the_firewall(make: impl FnOnce(&Topology, SocketAddr, &PeerServer) -> Command, n: usize) {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let mut cmd = make(&topo, socks4d.addr, &server);
    let out = run_with_timeout(&mut cmd, b"", TIMEOUT);
    assert!(out.success(), "{out}\n--- socks4d ---\n{}", socks4d.log());
    check_body(&out, topo.proxy_outside_ip, n);
    let peers = server.peers();
    assert!(!peers.is_empty() && peers.iter().all(|p| p.ip() == topo.proxy_outside_ip), "peers {peers:?}");
}

#[test]
fn static_busybox_wget_goes_through_the_firewall() {
    across_the_firewall(
        |topo, proxy, server| {
            let mut cmd = topo.client.wrap(&supervise_command(BUSYBOX, proxy));
            cmd.args(["wget", "-q", "-O", "-", &format!("http://{}/bytes/100000", server.addr)]);
            cmd
        },
        100_000,
    );
}

/// socks4-run picks the supervisor by itself for a static program (no --supervise).
#[test]
fn socks4_run_supervises_static_programs_by_itself() {
    across_the_firewall(
        |topo, proxy, server| {
            let mut cmd = topo.client.wrap(&socks4_run_command(BUSYBOX, proxy));
            cmd.args(["wget", "-q", "-O", "-", &format!("http://{}/bytes/1000", server.addr)]);
            cmd
        },
        1000,
    );
}

#[test]
fn static_busybox_nc_goes_through_the_firewall() {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let mut cmd = topo.client.wrap(&supervise_command(BUSYBOX, socks4d.addr));
    cmd.args(["nc", &server.addr.ip().to_string(), &server.addr.port().to_string()]);
    let out = run_with_timeout(&mut cmd, b"hello from nc\n", TIMEOUT);
    assert!(out.success(), "{out}");
    let mut lines = out.stdout.lines();
    let peer: SocketAddr = lines.next().and_then(|l| l.strip_prefix("peer=")?.parse().ok()).expect("peer line");
    assert_eq!(peer.ip(), topo.proxy_outside_ip, "{out}");
    assert_eq!(lines.next(), Some("hello from nc"), "{out}");
    assert!(server.peers().iter().all(|p| p.ip() == topo.proxy_outside_ip));
}

#[test]
fn static_go_http_client_goes_through_the_firewall() {
    let go = go_binary("s4go");
    across_the_firewall(
        |topo, proxy, server| {
            let mut cmd = topo.client.wrap(&supervise_command(go.to_str().unwrap(), proxy));
            cmd.args(["get", &format!("http://{}/bytes/300000", server.addr)]);
            cmd
        },
        300_000,
    );
}

/// A fake SOCKS server on loopback that answers every request with `reply` (None: refuses
/// connections by not existing).
fn fake_proxy(reply: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(reply);
            });
        }
    });
    addr
}

/// busybox wget under the supervisor against `proxy`, to a destination on loopback that records
/// who reached it. SOCKS4_DIRECT is empty: only the proxy itself is direct.
fn wget_via(proxy: SocketAddr) -> (RunOutput, Vec<SocketAddr>) {
    let server = PeerServer::start_in(None, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut cmd = supervise_command(BUSYBOX, proxy);
    cmd.args(["wget", "-q", "-O", "-", &format!("http://{}/bytes/10", server.addr)]);
    let out = run_with_timeout(&mut cmd, b"", TIMEOUT);
    std::thread::sleep(Duration::from_millis(100));
    (out, server.peers())
}

fn fails_closed(proxy: SocketAddr, message: &str, stderr_line: &str) {
    let (out, peers) = wget_via(proxy);
    assert!(!out.success(), "wget succeeded: {out}");
    assert!(out.stderr.contains(message), "want `{message}`: {out}");
    assert!(out.stderr.contains(stderr_line), "want the supervisor's line `{stderr_line}`: {out}");
    assert!(peers.is_empty(), "the destination was reached directly by {peers:?}: {out}");
}

#[test]
fn proxy_down_fails_closed_with_econnrefused() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    fails_closed(dead, "Connection refused", "SOCKS server unreachable");
}

#[test]
fn refusal_fails_closed_with_econnrefused() {
    fails_closed(fake_proxy(b"\x00\x5b\x00\x00\x00\x00\x00\x00"), "Connection refused", "refused: 91");
}

#[test]
fn garbage_reply_fails_closed_with_eproto() {
    fails_closed(fake_proxy(b"HTTP/1.0 400 Bad Request\r\n\r\n"), "Protocol error", "not a SOCKS4 reply");
}

#[test]
fn proxy_closing_early_fails_closed_with_econnreset() {
    fails_closed(fake_proxy(b"\x00\x5a"), "Connection reset by peer", "closed the connection before replying");
}

/// getsockname answers the address the CONNECT reply named (what the destination saw, port
/// included), getpeername the destination: Go reads both right after connect.
#[test]
fn go_sees_the_proxy_side_address_and_the_destination() {
    let go = go_binary("s4go");
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let mut cmd = topo.client.wrap(&supervise_command(go.to_str().unwrap(), socks4d.addr));
    cmd.args(["dial", &server.addr.to_string()]);
    let out = run_with_timeout(&mut cmd, b"", TIMEOUT);
    assert!(out.success(), "{out}");
    let field = |key: &str| -> SocketAddr {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` line: {out}"))
    };
    let (local, remote, seen) = (field("local "), field("remote "), field("peer="));
    assert_eq!(remote, server.addr, "{out}");
    assert_eq!(local, seen, "getsockname must name what the server saw: {out}");
    assert_eq!(local.ip(), topo.proxy_outside_ip, "{out}");
    assert!(out.stdout.contains("hello from go"), "{out}");
}

/// 50 goroutines (Go runs them on several threads) connect at once; every connection goes
/// through the proxy.
#[test]
fn go_makes_50_concurrent_connections_through_the_supervisor() {
    let go = go_binary("s4go");
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let mut cmd = topo.client.wrap(&supervise_command(go.to_str().unwrap(), socks4d.addr));
    cmd.args(["many", "50", &format!("http://{}/bytes/20000", server.addr)]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(60));
    assert!(out.success(), "{out}\n--- socks4d ---\n{}", socks4d.log());
    assert!(out.stdout.starts_with("ok 50 distinct-peers 50"), "{out}");
    let peers = server.peers();
    assert_eq!(peers.len(), 50, "{peers:?}");
    assert!(peers.iter().all(|p| p.ip() == topo.proxy_outside_ip), "{peers:?}");
}

/// Children and what they exec stay under the filter: a static shell runs two fetches, one of them
/// in a subshell.
#[test]
fn forked_and_execed_descendants_are_supervised() {
    let topo = Topology::firewall();
    let socks4d = socks4d_in(&topo);
    let server = PeerServer::start_in(Some(topo.server.name()), topo.server_ip);
    let url = format!("http://{}/bytes/10", server.addr);
    let script = format!("{BUSYBOX} wget -q -O - {url} && ( {BUSYBOX} wget -q -O - {url} ) && echo done");
    let mut cmd = topo.client.wrap(&supervise_command(BUSYBOX, socks4d.addr));
    cmd.args(["sh", "-c", &script]);
    let out = run_with_timeout(&mut cmd, b"", TIMEOUT);
    assert!(out.success() && out.stdout.ends_with("done\n"), "{out}");
    let peers = server.peers();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(peers.iter().all(|p| p.ip() == topo.proxy_outside_ip), "{peers:?}");
}

/// io_uring could make socket calls the filter never sees: its setup fails with ENOSYS.
#[test]
fn io_uring_setup_fails_with_enosys() {
    let go = go_binary("s4go");
    let mut cmd = supervise_command(go.to_str().unwrap(), "127.0.0.1:9".parse().unwrap());
    cmd.arg("uring");
    let out = run_with_timeout(&mut cmd, b"", TIMEOUT);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("io_uring_setup: function not implemented"), "{out}");
}

/// The program's exit status is socks4-run's, and a program killed by a signal gives 128 + it.
#[test]
fn exit_status_is_the_programs() {
    let mut cmd = supervise_command(BUSYBOX, "127.0.0.1:9".parse().unwrap());
    cmd.args(["sh", "-c", "exit 7"]);
    assert_eq!(run_with_timeout(&mut cmd, b"", TIMEOUT).status.and_then(|s| s.code()), Some(7));
    let mut cmd = supervise_command(BUSYBOX, "127.0.0.1:9".parse().unwrap());
    cmd.args(["sh", "-c", "kill -TERM $$"]);
    assert_eq!(run_with_timeout(&mut cmd, b"", TIMEOUT).status.and_then(|s| s.code()), Some(128 + 15));
}
