//! socks4d's outgoing connections when local ports are scarce. With `external` set, each
//! CONNECT binds its socket to that address first; IP_BIND_ADDRESS_NO_PORT leaves the port to
//! connect(), which may give one local port to several destinations (a connection is its four
//! addresses and ports). Without it, bind() would take a port from the ephemeral range for the
//! socket alone, and a busy proxy would run out of ports at about 28,000 connections whatever
//! their destinations. Here a namespace's range is two ports wide: four CONNECTs to two
//! destinations need both ports twice each.

use std::process::Command;
use std::time::Duration;

use socks4_tests::{Netns, Socks4d, Socks4dOptions, TempDir, run_with_timeout};

/// Runs in the namespace: two destinations on fixed ports, four SOCKS4 clients from fixed ports
/// outside the ephemeral range (so that they take none of it), two CONNECTs to each
/// destination, all four held open at once. Prints each reply code, then each destination's
/// view of the connection: `dest_port peer_ip:peer_port`.
const CLIENTS: &str = r#"
import socket, struct, sys
proxy = ("127.0.0.1", int(sys.argv[1]))
dests = []
for port in (2001, 2002):
    l = socket.socket()
    l.bind(("127.0.0.1", port))
    l.listen(8)
    l.settimeout(10)
    dests.append(l)
clients = []
for i, port in enumerate((2001, 2001, 2002, 2002)):
    c = socket.socket()
    c.settimeout(10)
    c.bind(("127.0.0.1", 50001 + i))
    c.connect(proxy)
    c.sendall(struct.pack(">BBH4s", 4, 1, port, socket.inet_aton("127.0.0.1")) + b"ports\0")
    reply = b""
    while len(reply) < 8:
        more = c.recv(8 - len(reply))
        if not more:
            break
        reply += more
    print("reply", reply[1] if len(reply) > 1 else "closed", flush=True)
    clients.append(c)
    if reply[1:2] == b"\x5a":
        peer_socket, peer = dests[0 if port == 2001 else 1].accept()
        print("dest", port, "%s:%d" % peer, flush=True)
        clients.append(peer_socket)
"#;

#[test]
fn connects_share_local_ports_across_destinations() {
    let ns = Netns::new("ports");
    ns.sysctl("net.ipv4.ip_local_port_range", "40000 40001");
    let config = r#"
external = "127.0.0.1"

[[rule]]
action = "allow"
from = ["127.0.0.0/8"]
to = ["127.0.0.0/8"]
"#;
    // A fixed listening port: port 0 would take one of the two.
    let opts =
        Socks4dOptions { listen: Some("127.0.0.1:1080".into()), netns: Some(ns.name().into()), ..Default::default() };
    let socks4d = Socks4d::start_with(config, &opts);
    let dir = TempDir::new("ports");
    let script = dir.join("clients.py");
    std::fs::write(&script, CLIENTS).expect("write clients.py");
    let mut cmd: Command = ns.command("/usr/bin/python3");
    cmd.arg(&script).arg(socks4d.addr.port().to_string());
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(30));
    let context = format!("stdout:\n{}\nstderr:\n{}\nsocks4d:\n{}", out.stdout, out.stderr, socks4d.log());
    assert!(out.success(), "the clients failed: {context}");

    let replies: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("reply ")).collect();
    assert_eq!(replies, ["90"; 4], "every CONNECT granted: {context}");
    // Where the connections came from, as each destination saw them.
    let mut seen: Vec<(u16, String)> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("dest "))
        .map(|l| {
            let (port, peer) = l.split_once(' ').expect("dest PORT PEER");
            (port.parse().unwrap(), peer.to_owned())
        })
        .collect();
    seen.sort();
    let expected: Vec<(u16, String)> = [2001, 2002]
        .into_iter()
        .flat_map(|d| ["127.0.0.1:40000", "127.0.0.1:40001"].map(|p| (d, p.to_owned())))
        .collect();
    assert_eq!(seen, expected, "each destination saw both ports of the range: {context}");
}
