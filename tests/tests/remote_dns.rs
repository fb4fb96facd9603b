//! Remote DNS through the shim (issue 4): names the client cannot resolve are answered with
//! placeholders and resolved by socks4d on the far side (SOCKS4A), without a single query leaving
//! the client. Real programs (inetutils-ftp, curl, Python) in network namespaces whose
//! /etc/hosts and /etc/resolv.conf the tests write (`ip netns exec` bind-mounts
//! /etc/netns/<ns>/{hosts,resolv.conf} over them).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socks4_tests::{
    ChildGuard, FtpClient, Netns, NetnsFiles, PeerServer, PyFtpd, RunOutput, Socks4d, Socks4dOptions, TempDir,
    Topology, checksum, go_binary, peer_payload, run_with_timeout, shim_command, supervise_command, test_content,
};

const NAME: &str = "files.internal";

/// socks4d in the proxy namespace: clients from the client net, to internal names only (so every
/// request that works names its destination; by address it is refused).
const FIREWALL_CONFIG: &str = r#"
[[rule]]
name = "inside clients to internal names"
action = "allow"
from = ["10.77.1.0/24"]
to = ["*.internal"]
"#;

const LOOPBACK_CONFIG: &str = r#"
[[rule]]
name = "loopback clients"
action = "allow"
from = ["127.0.0.0/8"]
"#;

/// A DNS server that answers every query NXDOMAIN and writes each query's name to its log: the
/// listener that must hear nothing while remote DNS is on.
const DNS_LISTENER: &str = r#"
import socket, sys, threading
ip, log = sys.argv[1], sys.argv[2]
lock = threading.Lock()
def answer(msg, how):
    i, labels = 12, []
    while i < len(msg) and msg[i]:
        labels.append(msg[i + 1:i + 1 + msg[i]].decode('ascii', 'replace'))
        i += 1 + msg[i]
    with lock, open(log, 'a') as f:
        f.write(how + ' ' + '.'.join(labels) + '\n')
    # Same id, QR + copied RD, RA + NXDOMAIN, the question echoed, no answers.
    return msg[:2] + bytes([0x80 | (msg[2] & 1), 0x83]) + b'\x00\x01\x00\x00\x00\x00\x00\x00' + msg[12:i + 5]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((ip, 53))
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((ip, 53))
tcp.listen(16)
def serve_tcp():
    while True:
        c, _ = tcp.accept()
        try:
            n = int.from_bytes(c.recv(2), 'big')
            msg = b''
            while len(msg) < n:
                chunk = c.recv(n - len(msg))
                if not chunk:
                    break
                msg += chunk
            r = answer(msg, 'tcp')
            c.sendall(len(r).to_bytes(2, 'big') + r)
        except Exception:
            pass
        c.close()
threading.Thread(target=serve_tcp, daemon=True).start()
print('ready', flush=True)
while True:
    msg, peer = udp.recvfrom(4096)
    if len(msg) > 12:
        udp.sendto(answer(msg, 'udp'), peer)
"#;

struct DnsListener {
    log: PathBuf,
    _child: ChildGuard,
    _dir: TempDir,
}

impl DnsListener {
    fn start_in(ns: &Netns, ip: IpAddr) -> DnsListener {
        let dir = TempDir::new("dns-listener");
        let script = dir.join("dns.py");
        std::fs::write(&script, DNS_LISTENER).expect("write dns.py");
        let log = dir.join("queries.log");
        std::fs::write(&log, "").expect("create queries.log");
        let mut cmd = ns.command("/usr/bin/python3");
        cmd.arg(&script)
            .arg(ip.to_string())
            .arg(&log)
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("dns.stderr")).expect("dns stderr"));
        let mut child = ChildGuard::spawn("dns listener", &mut cmd);
        child.stdout_line("ready", Duration::from_secs(10)).unwrap_or_else(|| {
            panic!("DNS listener not ready: {}", std::fs::read_to_string(dir.join("dns.stderr")).unwrap_or_default())
        });
        DnsListener { log, _child: child, _dir: dir }
    }

    fn queries(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The firewall topology with remote DNS set up: the client knows no names (its resolver is the
/// test's listener), the proxy knows `files.internal` = the server, socks4d runs in the proxy.
struct Firewall {
    topo: Topology,
    dns: DnsListener,
    socks4d: Socks4d,
    // After socks4d and the listener: they hold the bind mounts while they run.
    _client_files: NetnsFiles,
    _proxy_files: NetnsFiles,
}

impl Firewall {
    fn new() -> Firewall {
        let topo = Topology::firewall();
        let client_files = NetnsFiles::new(
            &topo.client,
            "127.0.0.1 localhost\n",
            &format!("nameserver {}\noptions timeout:1 attempts:1\n", topo.client_ip),
        );
        let proxy_files = NetnsFiles::new(
            &topo.proxy,
            &format!("127.0.0.1 localhost\n{} {NAME}\n", topo.server_ip),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        );
        let dns = DnsListener::start_in(&topo.client, topo.client_ip);
        let socks4d = Socks4d::start_with(
            FIREWALL_CONFIG,
            &Socks4dOptions {
                listen: Some(SocketAddr::new(topo.proxy_inside_ip, 1080).to_string()),
                netns: Some(topo.proxy.name().to_string()),
                rust_log: None,
            },
        );
        Firewall { topo, dns, socks4d, _client_files: client_files, _proxy_files: proxy_files }
    }

    /// `program` under the shim in the client namespace; `remote_dns` None = the default (on: the
    /// SOCKS server is not on loopback).
    fn client(&self, program: &str, remote_dns: Option<bool>) -> Command {
        let mut cmd = shim_command(program, self.socks4d.addr);
        match remote_dns {
            Some(on) => cmd.env("SOCKS4_REMOTE_DNS", if on { "1" } else { "0" }),
            None => cmd.env_remove("SOCKS4_REMOTE_DNS"),
        };
        self.topo.client.wrap(&cmd)
    }
}

/// The client's command line and script for an active-mode session with `files.internal`.
fn ftp_session(client: FtpClient, port: u16, got: &std::path::Path) -> (Vec<String>, String) {
    let got = got.display();
    match client {
        FtpClient::Lftp => {
            let script = format!(
                "set ftp:passive-mode off; set net:max-retries 1; set net:timeout 10; set xfer:clobber on; \
                 set cmd:fail-exit yes; open -u anonymous,socks4@test ftp://{NAME}:{port}; cls -l .; \
                 get big.bin -o {got}; bye"
            );
            (vec!["-c".into(), script], String::new())
        }
        _ => {
            let args = if client == FtpClient::Tnftp { vec!["-A", "-n", "-v"] } else { vec!["-n", "-v", "-i"] };
            let script =
                format!("open {NAME} {port}\nuser anonymous socks4@test\nbinary\nls .\nget big.bin {got}\nbye\n");
            (args.into_iter().map(String::from).collect(), script)
        }
    }
}

/// `client` fetches a file from `files.internal` in active mode across the firewall with remote
/// DNS on by default; then, with it off, fails to resolve while the local resolver is asked.
fn ftp_by_name(client: FtpClient, unresolved: &[&str]) {
    let fw = Firewall::new();
    let dir = TempDir::new("rdns-ftp");
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    let content = test_content(1 << 20, 0xd25);
    std::fs::write(root.join("big.bin"), &content).unwrap();
    std::fs::write(root.join("small.txt"), b"by name\n").unwrap();
    let ftpd = PyFtpd::start_in(Some(fw.topo.server.name()), &root, fw.topo.server_ip);
    let (args, script) = ftp_session(client, ftpd.addr.port(), &dir.join("got.bin"));

    // Remote DNS on by default: the SOCKS server is not on loopback.
    let mut cmd = fw.client(client.program(), None);
    cmd.args(&args);
    let out = run_with_timeout(&mut cmd, script.as_bytes(), Duration::from_secs(25));
    let diag = |out: &RunOutput| {
        format!(
            "{client:?}: {out}\n--- ftpd ---\n{}\n--- socks4d ---\n{}\n--- dns ---\n{}",
            ftpd.log(),
            fw.socks4d.log(),
            fw.dns.queries()
        )
    };
    assert!(out.success(), "ftp failed: {}", diag(&out));
    assert!(out.stdout.contains("small.txt") && out.stdout.contains("big.bin"), "no listing: {}", diag(&out));
    let got = std::fs::read(dir.join("got.bin")).unwrap_or_default();
    assert_eq!(checksum(&got), checksum(&content), "fetched {} bytes: {}", got.len(), diag(&out));
    let proxy = fw.topo.proxy_outside_ip;
    let controls = ftpd.control_peers();
    assert!(!controls.is_empty() && controls.iter().all(|p| p.ip() == proxy), "controls {controls:?}: {}", diag(&out));
    // Active mode: the PORT named the proxy's BIND address (a SOCKS4A BIND with the name) and the
    // server connected there.
    let ports = ftpd.port_addrs();
    assert!(!ports.is_empty() && ports.iter().all(|a| a.ip() == proxy), "PORTs {ports:?}: {}", diag(&out));
    assert!(!ftpd.saw_passive(), "passive mode used: {}", diag(&out));
    let data = ftpd.data_connections();
    assert!(
        data.len() >= 2 && data.iter().all(|(active, peer)| *active && ports.contains(peer)),
        "{data:?}: {}",
        diag(&out)
    );
    let log = fw.socks4d.log();
    assert!(log.contains(&format!("{NAME}:{}", ftpd.addr.port())), "socks4d did not get the name: {}", diag(&out));
    assert_eq!(fw.dns.queries(), "", "a lookup left the client with remote DNS on: {}", diag(&out));

    // Control: remote DNS off, the local resolver is asked (the listener hears it) and says no.
    let mut cmd = fw.client(client.program(), Some(false));
    cmd.args(&args);
    let off = run_with_timeout(&mut cmd, script.as_bytes(), Duration::from_secs(25));
    let text = format!("{}{}", off.stdout, off.stderr);
    assert!(unresolved.iter().any(|m| text.contains(m)), "want one of {unresolved:?}: {}", diag(&off));
    assert!(!off.stdout.contains("small.txt"), "{}", diag(&off));
    assert!(fw.dns.queries().contains(&format!("udp {NAME}")), "the listener heard no query: {}", diag(&off));
}

#[test]
fn inetutils_ftp_by_name_active_mode_through_the_firewall_without_local_dns() {
    ftp_by_name(FtpClient::Inetutils, &["files.internal: Name or service not known", "nknown host"]);
}

#[test]
fn tnftp_by_name_active_mode_through_the_firewall_without_local_dns() {
    ftp_by_name(FtpClient::Tnftp, &["Can't lookup `files.internal'", "Name or service not known"]);
}

/// lftp resolves in a forked child process: the placeholder that child got must be known to the
/// parent that connects (the placeholder table is shared across fork).
#[test]
fn lftp_by_name_active_mode_through_the_firewall_without_local_dns() {
    ftp_by_name(FtpClient::Lftp, &["Name or service not known", "not found", "No address"]);
}

#[test]
fn curl_by_name_through_the_firewall_without_local_dns() {
    let fw = Firewall::new();
    let dir = TempDir::new("rdns-http");
    std::fs::write(dir.join("hello.txt"), b"hello from the far side\n").unwrap();
    let http = SocketAddr::new(fw.topo.server_ip, 8080);
    let log = dir.join("http.stderr");
    let mut cmd = fw.topo.server.command("/usr/bin/python3");
    cmd.args(["-m", "http.server", "8080", "--bind"])
        .arg(http.ip().to_string())
        .arg("--directory")
        .arg(dir.path())
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _server = ChildGuard::spawn("http.server", &mut cmd);
    assert!(Netns::wait_for_tcp_in(fw.topo.server.name(), http, Duration::from_secs(10)), "http.server not up");
    let url = format!("http://{NAME}:8080/hello.txt");

    let mut cmd = fw.client("/usr/bin/curl", None);
    cmd.args(["-sS", "--max-time", "15", &url]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    let diag = |out: &RunOutput| {
        format!(
            "{out}\n--- http ---\n{}\n--- socks4d ---\n{}\n--- dns ---\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            fw.socks4d.log(),
            fw.dns.queries()
        )
    };
    assert!(out.success() && out.stdout == "hello from the far side\n", "curl: {}", diag(&out));
    let access = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        access
            .lines()
            .any(|l| l.starts_with(&format!("{} ", fw.topo.proxy_outside_ip)) && l.contains("GET /hello.txt")),
        "the server did not see the proxy's address: {}",
        diag(&out)
    );
    assert_eq!(fw.dns.queries(), "", "a lookup left the client with remote DNS on: {}", diag(&out));

    // The same server by address: socks4d's `*.internal` rule does not match, so it was the name
    // that socks4d matched above.
    let mut cmd = fw.client("/usr/bin/curl", None);
    cmd.args(["-sS", "--max-time", "15", &format!("http://{http}/hello.txt")]);
    let by_ip = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(by_ip.status.and_then(|s| s.code()), Some(7), "by address must be refused: {}", diag(&by_ip));

    let mut cmd = fw.client("/usr/bin/curl", Some(false));
    cmd.args(["-sS", "--max-time", "15", &url]);
    let off = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(off.status.and_then(|s| s.code()), Some(6), "curl should fail to resolve: {}", diag(&off));
    assert!(off.stderr.contains(&format!("Could not resolve host: {NAME}")), "{}", diag(&off));
    assert!(fw.dns.queries().contains(&format!("udp {NAME}")), "the listener heard no query: {}", diag(&off));
}

/// One namespace where socks4d (on loopback) knows `files.internal` = 127.0.0.1 and the client's
/// resolver knows nothing.
struct LoopbackNs {
    ns: Netns,
    socks4d: Socks4d,
    _files: NetnsFiles,
}

impl LoopbackNs {
    fn new() -> LoopbackNs {
        let ns = Netns::new("rdns");
        // n<k>.internal is 127.0.1.<k>: a destination tells which name it was reached by.
        let many: String = (0..MANY_NAMES).map(|k| format!("127.0.1.{k} n{k}.internal\n")).collect();
        let hosts = format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n{many}");
        let files = NetnsFiles::new(&ns, &hosts, "nameserver 127.0.0.1\n");
        let socks4d = Socks4d::start_with(
            LOOPBACK_CONFIG,
            &Socks4dOptions { listen: None, netns: Some(ns.name().to_string()), rust_log: None },
        );
        LoopbackNs { ns, socks4d, _files: files }
    }

    /// Runs a Python program under the shim with remote DNS set (the server is on loopback, so it
    /// is off by default).
    fn python(&self, program: &str, remote_dns: bool) -> RunOutput {
        self.python_with(program, remote_dns, &[])
    }

    fn python_with(&self, program: &str, remote_dns: bool, env: &[(&str, &str)]) -> RunOutput {
        let mut cmd = shim_command("/usr/bin/python3", self.socks4d.addr);
        cmd.env("SOCKS4_REMOTE_DNS", if remote_dns { "1" } else { "0" })
            .envs(env.iter().copied())
            .args(["-c", program]);
        run_with_timeout(&mut self.ns.wrap(&cmd), b"", Duration::from_secs(20))
    }
}

/// Names `n0.internal` .. in the loopback namespace's hosts file.
const MANY_NAMES: usize = 20;

/// Four forked children resolve twenty names at once, in different orders, and connect to each:
/// all processes get one placeholder per name, no two names share one, and every connection
/// reaches the address of the name it was made for (socks4d resolved the right name).
#[test]
fn concurrent_lookups_from_several_processes_share_one_table() {
    let lo = LoopbackNs::new();
    let program = format!(
        r#"
import os, socket
N, K = {MANY_NAMES}, 4
srv = socket.socket()
srv.bind(("0.0.0.0", 0))
srv.listen(N * K)
port = srv.getsockname()[1]
pids = []
for c in range(K):
    pid = os.fork()
    if pid == 0:
        try:
            got = {{}}
            for i in range(N):
                name = "n%d.internal" % ((i * 7 + c * 3) % N)
                ip = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
                got[name] = ip
                s = socket.create_connection((ip, port), timeout=10)
                s.sendall(name.encode())
                s.close()
            # One write(2): print may split a line, and the parent writes to the same pipe.
            os.write(1, ("child " + " ".join("%s=%s" % kv for kv in sorted(got.items())) + "\n").encode())
            os._exit(0)
        except Exception as e:
            os.write(1, ("child error %s\n" % e).encode())
            os._exit(1)
    pids.append(pid)
srv.settimeout(15)
for _ in range(N * K):
    conn, _ = srv.accept()
    conn.settimeout(10)
    data = b""
    while True:
        chunk = conn.recv(100)
        if not chunk:
            break
        data += chunk
    os.write(1, ("conn %s %s\n" % (conn.getsockname()[0], data.decode())).encode())
    conn.close()
for p in pids:
    _, status = os.waitpid(p, 0)
    print("exit", os.waitstatus_to_exitcode(status), flush=True)
"#
    );
    let out = lo.python(&program, true);
    let diag = || format!("{out}\n--- socks4d ---\n{}", lo.socks4d.log());
    assert!(out.success(), "{}", diag());
    let maps: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("child ")).collect();
    assert_eq!(maps.len(), 4, "{}", diag());
    assert!(maps.iter().all(|m| *m == maps[0]), "processes disagree on placeholders: {}", diag());
    let placeholders: std::collections::HashSet<&str> =
        maps[0].split(' ').map(|kv| kv.split_once('=').map_or("", |(_, ip)| ip)).collect();
    assert_eq!(placeholders.len(), MANY_NAMES, "two names share a placeholder: {}", diag());
    assert!(placeholders.iter().all(|ip| ip.starts_with("240.")), "{}", diag());
    let conns: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("conn ")).collect();
    assert_eq!(conns.len(), 4 * MANY_NAMES, "{}", diag());
    for conn in conns {
        let (local, name) = conn.split_once(' ').unwrap_or(("", ""));
        let k = name.strip_prefix('n').and_then(|r| r.strip_suffix(".internal")).unwrap_or("?");
        assert_eq!(local, format!("127.0.1.{k}"), "{name} reached the wrong address: {}", diag());
    }
    assert_eq!(out.stdout.matches("exit 0\n").count(), 4, "{}", diag());
}

/// The parent resolves, a forked child connects: the placeholder table is shared across fork.
#[test]
fn a_forked_child_connects_to_a_name_its_parent_resolved() {
    let lo = LoopbackNs::new();
    let program = format!(
        r#"
import os, socket
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
addr = socket.getaddrinfo("{NAME}", port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
print("resolved", addr[0], flush=True)
pid = os.fork()
if pid == 0:
    c = socket.create_connection(addr, timeout=10)
    c.sendall(b"from child " + c.getpeername()[0].encode())
    c.close()
    os._exit(0)
conn, peer = srv.accept()
data = b""
while True:
    chunk = conn.recv(100)
    if not chunk:
        break
    data += chunk
print("got", data.decode(), flush=True)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status), flush=True)
"#
    );
    let out = lo.python(&program, true);
    let diag = || format!("{out}\n--- socks4d ---\n{}", lo.socks4d.log());
    assert!(out.success(), "{}", diag());
    let placeholder = out.stdout.lines().find_map(|l| l.strip_prefix("resolved ")).unwrap_or("").to_string();
    assert!(placeholder.starts_with("240."), "not a placeholder: {}", diag());
    // The child's getpeername is the placeholder it connected to, and the bytes went through
    // socks4d, which resolved the name itself.
    assert!(out.stdout.contains(&format!("got from child {placeholder}\n")), "{}", diag());
    assert!(out.stdout.contains("child 0\n"), "{}", diag());
    assert!(lo.socks4d.log().contains(&format!("{NAME}:")), "socks4d never saw the name: {}", diag());
}

/// getnameinfo and gethostbyaddr on a placeholder give the name back; gethostbyname_ex gives the
/// placeholder; IPv6-only lookups of a remote name fail, and so do AI_NUMERICHOST ones; AI_CANONNAME
/// is the name.
#[test]
fn reverse_lookups_of_a_placeholder_give_the_name() {
    let lo = LoopbackNs::new();
    let program = format!(
        r#"
import socket
ai = socket.getaddrinfo("{NAME}", 21, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)
ip = ai[0][4][0]
print("addrinfo", len(ai), ai[0][0] == socket.AF_INET, ai[0][3], ip)
print("byname", socket.gethostbyname_ex("{NAME}"))
print("byaddr", socket.gethostbyaddr(ip))
print("nameinfo", socket.getnameinfo((ip, 21), 0))
print("nofqdn", socket.getnameinfo((ip, 21), socket.NI_NOFQDN | socket.NI_NUMERICSERV))
print("numeric", socket.getnameinfo((ip, 21), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
try:
    socket.getaddrinfo("{NAME}", 21, socket.AF_INET6)
    print("v6 resolved")
except socket.gaierror as e:
    print("v6", e.errno == socket.EAI_ADDRFAMILY)
print("mapped", socket.getaddrinfo("{NAME}", 21, socket.AF_INET6, socket.SOCK_STREAM, 0, socket.AI_V4MAPPED)[0][4][0])
print("nocanon", repr(socket.getaddrinfo("{NAME}", 21, 0, socket.SOCK_STREAM)[0][3]))
print("addrconfig", socket.getaddrinfo("{NAME}", 21, socket.AF_INET, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG)[0][4][0])
try:
    socket.getaddrinfo("{NAME}", 21, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    print("numerichost resolved")
except socket.gaierror as e:
    print("numerichost", e.errno == socket.EAI_NONAME)
print("local", socket.gethostbyname("localhost"))
"#
    );
    let out = lo.python(&program, true);
    assert!(out.success(), "{out}");
    let ip = out.stdout.lines().find_map(|l| l.strip_prefix("addrinfo 1 True files.internal ")).unwrap_or("");
    assert!(ip.starts_with("240.0."), "{out}");
    for want in [
        format!("byname ('{NAME}', [], ['{ip}'])"),
        format!("byaddr ('{NAME}', [], ['{ip}'])"),
        format!("nameinfo ('{NAME}', 'ftp')"),
        "nofqdn ('files', '21')".to_string(),
        format!("numeric ('{ip}', '21')"),
        "v6 True".to_string(),
        format!("mapped ::ffff:{ip}"),
        // Without AI_CANONNAME, no ai_canonname.
        "nocanon ''".to_string(),
        // AI_ADDRCONFIG: the namespace has loopback only (no IPv4 address that counts), but the
        // placeholder is reached through the SOCKS server.
        format!("addrconfig {ip}"),
        // AI_NUMERICHOST: a name is not an address, placeholder or not.
        "numerichost True".to_string(),
        "local 127.0.0.1".to_string(),
    ] {
        assert!(out.stdout.lines().any(|l| l == want), "missing `{want}`: {out}");
    }
}

/// A placeholder reached with remote DNS off (handed down by a process that had it on, say) fails
/// closed with a clear line, and never goes anywhere; so does one that remote DNS, on, never
/// handed out, with a line that says so.
#[test]
fn placeholder_connect_with_remote_dns_off_fails_closed() {
    let lo = LoopbackNs::new();
    let program = r#"
import socket, errno
s = socket.socket()
try:
    s.connect(("240.0.0.1", 80))
    print("connected")
except OSError as e:
    print("refused", errno.errorcode[e.errno])
"#;
    for (remote_dns, why) in [(false, "remote_dns is off"), (true, "this process never handed out")] {
        let start = Instant::now();
        let out = lo.python(program, remote_dns);
        assert!(out.success() && out.stdout.contains("refused EHOSTUNREACH"), "{out}");
        let lines = out.shim_lines();
        assert!(
            lines.len() == 1 && lines[0].contains("240.0.0.1 is a remote-DNS placeholder") && lines[0].contains(why),
            "want one line saying {why:?}\n{out}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{out}");
    }
    assert!(!lo.socks4d.log().contains("240.0.0.1"), "the placeholder reached socks4d: {}", lo.socks4d.log());
}

/// Names in direct_names (and everything with remote DNS off) go to the local resolver, which here
/// knows files.internal as 127.0.0.1; other names still get placeholders.
#[test]
fn direct_names_and_remote_dns_off_resolve_locally() {
    let lo = LoopbackNs::new();
    let program = format!(
        r#"
import socket
print("{NAME}", socket.gethostbyname("{NAME}"))
print("other.example", socket.gethostbyname("other.example"))
"#
    );
    let out = lo.python_with(&program, true, &[("SOCKS4_DIRECT_NAMES", "*.internal")]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(&format!("{NAME} 127.0.0.1\n")), "{out}");
    assert!(out.stdout.lines().any(|l| l.starts_with("other.example 240.0.")), "{out}");

    let out = lo.python(&format!("import socket; print(socket.gethostbyname('{NAME}'))"), false);
    assert!(out.success() && out.stdout == "127.0.0.1\n", "{out}");
}

/// Static programs under the seccomp supervisor resolve with their own resolvers (Go's pure
/// resolver; static busybox's glibc, which checks the reply's source): their queries reach the
/// supervisor's responder, the placeholder becomes a SOCKS4A CONNECT, and no query reaches the
/// client's resolver address.
fn supervised_by_name(program: &str, args: &[&str]) {
    let fw = Firewall::new();
    let server = PeerServer::start_in(Some(fw.topo.server.name()), fw.topo.server_ip);
    let url = format!("http://{NAME}:{}/bytes/5000", server.addr.port());
    let mut cmd = supervise_command(program, fw.socks4d.addr);
    cmd.env_remove("SOCKS4_REMOTE_DNS").args(args).arg(&url);
    let out = run_with_timeout(&mut fw.topo.client.wrap(&cmd), b"", Duration::from_secs(30));
    let diag = || format!("{out}\n--- socks4d ---\n{}\n--- queries ---\n{}", fw.socks4d.log(), fw.dns.queries());
    assert!(out.success(), "{}", diag());
    let (peer, payload) = out.stdout.split_once('\n').unwrap_or_else(|| panic!("no peer line: {}", diag()));
    let peer: SocketAddr = peer.strip_prefix("peer=").and_then(|p| p.parse().ok()).expect("peer");
    assert_eq!(peer.ip(), fw.topo.proxy_outside_ip, "{}", diag());
    assert!(payload.as_bytes() == peer_payload(5000).as_slice(), "payload differs: {}", diag());
    assert!(fw.dns.queries().is_empty(), "queries reached the client's resolver: {}", diag());
    assert!(
        fw.socks4d.log().lines().any(|l| l.contains("command=connect") && l.contains(NAME)),
        "no SOCKS4A CONNECT naming {NAME}: {}",
        diag()
    );
}

#[test]
fn static_go_client_by_name_through_the_firewall_without_local_dns() {
    let go = go_binary("s4go");
    supervised_by_name(go.to_str().unwrap(), &["get"]);
}

#[test]
fn static_busybox_wget_by_name_through_the_firewall_without_local_dns() {
    supervised_by_name("/usr/bin/busybox", &["wget", "-q", "-O", "-"]);
}
