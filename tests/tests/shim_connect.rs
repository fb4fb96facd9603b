//! libsocks4.so CONNECT with real programs (curl, Python) against socks4d and danted. Test servers
//! listen on 127.0.0.1 and the proxies connect out from 127.0.0.2, so the peer a server records
//! proves the connection went through the proxy.

mod shim_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shim_support::*;
use socks4_tests::{Danted, TempDir, binaries, run_with_timeout, shim_command, socks4_run_command};

const HTTP_RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n";

/// curl GET through `proxy`; returns (curl's output, the peer the HTTP server saw).
fn curl_through(proxy: SocketAddr, extra: &[&str]) -> (socks4_tests::RunOutput, Option<SocketAddr>) {
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), HTTP_RESPONSE);
    let mut cmd = shim_command("curl", proxy);
    cmd.args(["-sS", "--max-time", "10", "--http1.0"]).args(extra).arg(format!("http://{}/", server.addr));
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    let peer = (server.accepted() > 0).then(|| server.next_conn().peer);
    (out, peer)
}

#[test]
fn curl_through_socks4d() {
    let socks4d = socks4d();
    let (out, peer) = curl_through(socks4d.addr, &[]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(peer.map(|p| p.ip()), Some(EXTERNAL), "the HTTP server must see socks4d's external address");
}

#[test]
fn curl_through_danted() {
    let danted = Danted::start(EXTERNAL);
    let (out, peer) = curl_through(danted.addr, &[]);
    assert!(out.success(), "{out}\ndanted log:\n{}", danted.log());
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(peer.map(|p| p.ip()), Some(EXTERNAL), "the HTTP server must see danted's external address");
}

/// curl --tcp-fastopen (TCP_FASTOPEN_CONNECT before a non-blocking connect here; sendto with
/// MSG_FASTOPEN on older kernels, covered with Python below) must not slip past the proxy.
#[test]
fn curl_tcp_fastopen_goes_through_the_proxy() {
    let socks4d = socks4d();
    let (out, peer) = curl_through(socks4d.addr, &["--tcp-fastopen"]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(peer.map(|p| p.ip()), Some(EXTERNAL));
}

const CLIENT: &str = r#"
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    if mode == "create_connection":
        s = socket.create_connection((host, port))
    elif mode == "v6":
        s = socket.socket(socket.AF_INET6)
        s.connect((host, port))
    elif mode == "nonblocking":
        import fcntl, select
        s = socket.socket()
        s.setblocking(False)
        out("connect_ex", s.connect_ex((host, port)))
        p = select.poll()
        p.register(s, select.POLLOUT)
        out("pollout", bool(p.poll(5000)))
        out("so_error", s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        out("nonblock_after", bool(fcntl.fcntl(s, fcntl.F_GETFL) & os.O_NONBLOCK))
    elif mode == "fastopen":
        s = socket.socket()
        s.sendto(b"early", socket.MSG_FASTOPEN, (host, port))
    elif mode == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, port))
        s.send(b"datagram")
        out("udp", "sent")
        sys.exit(0)
except OSError as e:
    fail(e)
out("peer", fmt(s.getpeername()))
out("local", fmt(s.getsockname()))
s.setblocking(True)
s.sendall(b"ping")
want = 9 if mode == "fastopen" else 4
got = b""
while len(got) < want:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
out("received", got.decode())
s.close()
"#;

fn client(proxy: SocketAddr, target: &str, port: u16, mode: &str, env: &[(&str, &str)]) -> socks4_tests::RunOutput {
    python(proxy, &format!("{PY_PRELUDE}{CLIENT}"), &[target.into(), port.to_string(), mode.into()], env)
}

#[test]
fn python_create_connection_reports_destination_and_proxy_side_addresses() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let out = client(socks4d.addr, "127.0.0.1", server.addr.port(), "create_connection", &[]);
    let map = kv(&out);
    assert_eq!(get(&map, "received", &out), "ping", "{out}");
    let conn = server.next_conn();
    assert_eq!(conn.peer.ip(), EXTERNAL);
    assert_eq!(conn.received, b"ping");
    // getpeername: the real destination, not the proxy.
    assert_eq!(addr(&map, "peer", &out), server.addr);
    // getsockname: exactly the address the destination saw (from socks4d's CONNECT reply).
    assert_eq!(addr(&map, "local", &out), conn.peer, "{out}");
}

/// The 8-byte reply and a server banner may arrive in one read: the banner belongs to the program.
#[test]
fn server_banner_after_the_reply_reaches_the_program() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"220 banner\r\n");
    let mut cmd = shim_command(PYTHON, socks4d.addr);
    let dir = TempDir::new("shim-banner");
    let script = dir.join("b.py");
    std::fs::write(
        &script,
        format!(
            "{PY_PRELUDE}\ns = socket.create_connection(('127.0.0.1', {}))\ngot = b''\nwhile len(got) < 12:\n    c = s.recv(100)\n    if not c: break\n    got += c\nout('banner', repr(got))\n",
            server.addr.port()
        ),
    )
    .unwrap();
    cmd.arg(&script);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(kv(&out).get("banner").map(String::as_str), Some("b'220 banner\\r\\n'"), "{out}");
    assert_eq!(server.next_conn().peer.ip(), EXTERNAL);
}

#[test]
fn nonblocking_connect_returns_0_and_keeps_the_flags() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let out = client(socks4d.addr, "127.0.0.1", server.addr.port(), "nonblocking", &[]);
    let map = kv(&out);
    assert_eq!(get(&map, "connect_ex", &out), "0", "{out}");
    assert_eq!(get(&map, "pollout", &out), "True");
    assert_eq!(get(&map, "so_error", &out), "0");
    assert_eq!(get(&map, "nonblock_after", &out), "True", "O_NONBLOCK must be as the program left it");
    assert_eq!(get(&map, "received", &out), "ping");
    assert_eq!(server.next_conn().peer.ip(), EXTERNAL);
}

#[test]
fn sendto_msg_fastopen_goes_through_the_proxy() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let out = client(socks4d.addr, "127.0.0.1", server.addr.port(), "fastopen", &[]);
    let map = kv(&out);
    assert_eq!(get(&map, "received", &out), "earlyping", "{out}");
    let conn = server.next_conn();
    assert_eq!(conn.peer.ip(), EXTERNAL);
    assert_eq!(conn.received, b"earlyping");
}

#[test]
fn ipv4_mapped_destination_goes_through_the_proxy() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let out = client(socks4d.addr, "::ffff:127.0.0.1", server.addr.port(), "v6", &[]);
    let map = kv(&out);
    assert_eq!(get(&map, "received", &out), "ping", "{out}");
    let conn = server.next_conn();
    assert_eq!(conn.peer.ip(), EXTERNAL);
    let peer = addr(&map, "peer", &out);
    assert_eq!(peer, format!("[::ffff:127.0.0.1]:{}", server.addr.port()).parse().unwrap());
    assert_eq!(addr(&map, "local", &out), format!("[::ffff:{}]:{}", EXTERNAL, conn.peer.port()).parse().unwrap());
}

#[test]
fn native_ipv6_destination_fails_with_enetunreach_and_no_direct_connection() {
    let socks4d = socks4d();
    let server = TestServer::start("[::1]:0".parse().unwrap(), b"");
    let out = client(socks4d.addr, "::1", server.addr.port(), "v6", &[]);
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ENETUNREACH"), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.accepted(), 0, "the IPv6 server must not have been reached directly");
}

#[test]
fn configured_direct_network_connects_directly() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let out =
        client(socks4d.addr, "127.0.0.1", server.addr.port(), "create_connection", &[("SOCKS4_DIRECT", "127.0.0.0/8")]);
    assert_eq!(kv(&out).get("received").map(String::as_str), Some("ping"), "{out}");
    assert_eq!(server.next_conn().peer.ip(), LOCALHOST, "a direct connection comes from 127.0.0.1");
}

#[test]
fn udp_is_not_touched() {
    let socks4d = socks4d();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = udp.local_addr().unwrap().port();
    let out = client(socks4d.addr, "127.0.0.1", port, "udp", &[]);
    assert_eq!(kv(&out).get("udp").map(String::as_str), Some("sent"), "{out}");
    let mut buf = [0u8; 64];
    let (n, _) = udp.recv_from(&mut buf).expect("the datagram arrives directly");
    assert_eq!(&buf[..n], b"datagram");
}

#[test]
fn refusal_is_econnrefused_with_one_stderr_line() {
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let port = server.addr.port();
    let socks4d = socks4d_with(&format!(
        "[[rule]]\nname = \"no test port\"\naction = \"deny\"\nto = [\"127.0.0.1\"]\nports = [{port}]\n"
    ));
    let out = client(socks4d.addr, "127.0.0.1", port, "create_connection", &[]);
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ECONNREFUSED"), "{out}");
    let lines = out.shim_lines();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains(&format!("connect to 127.0.0.1:{port} via {} refused: 91", socks4d.addr)), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.accepted(), 0);
}

#[test]
fn unreachable_proxy_fails_closed() {
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let proxy: SocketAddr = format!("127.0.0.1:{}", dead_port()).parse().unwrap();
    let out = client(proxy, "127.0.0.1", server.addr.port(), "create_connection", &[]);
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ECONNREFUSED"), "{out}");
    assert!(out.stderr.contains(&format!("via {proxy} failed: SOCKS server unreachable")), "{out}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.accepted(), 0, "no direct connection may be made");
}

#[test]
fn silent_proxy_times_out_with_etimedout() {
    let proxy = FakeProxy::start(None);
    let start = Instant::now();
    let out = client(proxy.addr, "127.0.0.1", 9, "create_connection", &[("SOCKS4_TIMEOUT", "0.5")]);
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ETIMEDOUT"), "{out}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // The request that was sent: CONNECT 127.0.0.1:9 with the login name (we run as root).
    assert_eq!(*proxy.request.lock().unwrap(), b"\x04\x01\x00\x09\x7f\x00\x00\x01root\0");
}

#[test]
fn garbage_reply_is_eproto() {
    let proxy = FakeProxy::start(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n"));
    let out = client(proxy.addr, "127.0.0.1", 9, "create_connection", &[("SOCKS4_USER", "alice")]);
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("EPROTO"), "{out}");
    assert!(out.stderr.contains("not a SOCKS4 reply"), "{out}");
    assert_eq!(*proxy.request.lock().unwrap(), b"\x04\x01\x00\x09\x7f\x00\x00\x01alice\0");
}

#[test]
fn broken_config_file_names_line_and_key_and_fails_closed() {
    let dir = TempDir::new("shim-conf");
    let conf = dir.join("socks4.toml");
    std::fs::write(&conf, "user = \"x\"\ntimeout = \"soon\"\n").unwrap();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let out = client(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1",
        server.addr.port(),
        "create_connection",
        &[("SOCKS4_CONF", conf.to_str().unwrap())],
    );
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("EACCES"), "{out}");
    let first = out.stderr.lines().next().unwrap_or("");
    assert!(first.contains(&format!("config {} line 2 key `timeout`", conf.display())), "{out}");
    assert_eq!(server.accepted(), 0);
}

#[test]
fn fork_and_exec_stay_socksified() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), HTTP_RESPONSE);
    let script = format!(
        "{PY_PRELUDE}
import subprocess
pid = os.fork()
if pid == 0:
    s = socket.create_connection(('127.0.0.1', {port}))
    s.sendall(b'child')
    s.shutdown(socket.SHUT_WR)
    while s.recv(100): pass
    os._exit(0)
os.waitpid(pid, 0)
r = subprocess.run(['curl', '-sS', '--http1.0', 'http://127.0.0.1:{port}/'], capture_output=True)
out('curl', r.stdout.decode().strip())
",
        port = server.addr.port()
    );
    let out = python(socks4d.addr, &script, &[], &[]);
    assert_eq!(kv(&out).get("curl").map(String::as_str), Some("hello"), "{out}");
    let peers = [server.next_conn(), server.next_conn()];
    assert!(peers.iter().all(|c| c.peer.ip() == EXTERNAL), "{peers:?}");
    assert!(peers.iter().any(|c| c.received == b"child"));
}

#[test]
fn socks4_run_preloads_the_shim() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), HTTP_RESPONSE);
    let mut cmd = socks4_run_command("curl", socks4d.addr);
    cmd.args(["-sS", "--http1.0", &format!("http://{}/", server.addr)]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(server.next_conn().peer.ip(), EXTERNAL);
}

#[test]
fn socks4_run_flags_set_the_environment() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let mut cmd = std::process::Command::new(&binaries().socks4_run);
    cmd.env("SOCKS4_DIRECT", "")
        .env_remove("LD_PRELOAD")
        .args(["--server", &socks4d.addr.to_string(), "--user", "carol", "--debug", "--"])
        .args([PYTHON, "-c"])
        .arg(format!(
            "{PY_PRELUDE}\ns = socket.create_connection(('127.0.0.1', {}))\nout('local', fmt(s.getsockname()))",
            server.addr.port()
        ));
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert!(kv(&out).contains_key("local"), "{out}");
    assert!(out.stderr.contains("granted"), "--debug prints decisions:\n{out}");
    assert!(!out.stdout.contains("socks4["), "the shim never writes to stdout:\n{out}");
    assert_eq!(server.next_conn().peer.ip(), EXTERNAL);
    // socks4d logs a session when it ends, a moment after the program exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socks4d.log().contains("carol") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(socks4d.log().contains("carol"), "socks4d should log the user id carol:\n{}", socks4d.log());
}

/// Forced to preload (`--preload`), a static program gets a warning that it goes direct; left to
/// itself socks4-run runs it under the seccomp supervisor instead (tests/tests/supervisor.rs), with
/// no such warning.
#[test]
fn socks4_run_warns_about_static_programs() {
    let mut cmd = std::process::Command::new(&binaries().socks4_run);
    cmd.env_remove("LD_PRELOAD").args(["--preload", "--server", "127.0.0.1:1", "--", "/sbin/ldconfig", "--version"]);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert!(out.stderr.contains("statically linked"), "{out}");
    assert!(out.success(), "the program still runs:\n{out}");
    let mut cmd = socks4_run_command("/sbin/ldconfig", "127.0.0.1:1".parse().unwrap());
    cmd.arg("--version");
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert!(!out.stderr.contains("statically linked"), "{out}");
    assert!(out.success(), "the program runs under the supervisor:\n{out}");
}

/// The proxy's own address is never proxied, even with SOCKS4_DIRECT="" (no loop).
#[test]
fn the_proxy_itself_is_reached_directly() {
    let socks4d = socks4d();
    let target = format!("socks4://{}", socks4d.addr);
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), HTTP_RESPONSE);
    // curl speaking SOCKS4 itself, under the shim: its connection to socks4d must stay direct.
    let (out, peer) = {
        let mut cmd = shim_command("curl", socks4d.addr);
        cmd.args(["-sS", "--max-time", "10", "--http1.0", "-x", &target, &format!("http://{}/", server.addr)]);
        let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
        (out, (server.accepted() > 0).then(|| server.next_conn().peer))
    };
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(peer.map(|p| p.ip()), Some(EXTERNAL));
}

/// Signals during the exchange (EINTR) must not corrupt it. The fake proxy answers after 300 ms
/// with a reply carrying 0.0.0.0 and a banner in the same write, while a 2 ms interval timer
/// interrupts the shim's waits.
#[test]
fn signals_during_the_exchange_do_not_corrupt_it() {
    let proxy = FakeProxy::start_delayed(Some(b"\x00\x5a\x00\x00\x00\x00\x00\x00banner"), Duration::from_millis(300));
    let script = format!(
        "{PY_PRELUDE}
import signal
count = [0]
def on_alarm(*a):
    count[0] += 1
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
try:
    s = socket.create_connection(('10.0.0.5', 21))
except OSError as e:
    fail(e)
signal.setitimer(signal.ITIMER_REAL, 0)
out('signals', count[0])
out('peer', fmt(s.getpeername()))
out('local', fmt(s.getsockname()))
out('after', s.recv(100).decode())
"
    );
    let out = python(proxy.addr, &script, &[], &[("SOCKS4_USER", "u")]);
    let map = kv(&out);
    assert_eq!(get(&map, "after", &out), "banner");
    assert_ne!(get(&map, "signals", &out), "0", "the timer must have fired during the exchange");
    assert_eq!(addr(&map, "peer", &out), "10.0.0.5:21".parse().unwrap());
    // The reply said 0.0.0.0: getsockname is the real local address of the connection to the proxy.
    let local = addr(&map, "local", &out);
    assert_eq!(local.ip(), LOCALHOST);
    assert_ne!(local.port(), 0);
    assert_eq!(*proxy.request.lock().unwrap(), b"\x04\x01\x00\x15\x0a\x00\x00\x05u\0");
}

/// dup, dup2, fcntl(F_DUPFD_CLOEXEC) share a proxied socket's state; close and close_range forget
/// it, so a new socket that reuses the number is not mistaken for the old one.
#[test]
fn duplicates_and_closes_keep_the_registry_true() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let script = format!(
        "{PY_PRELUDE}
import fcntl
def peer_of(fd):
    s = socket.socket(fileno=os.dup(fd))
    try:
        return fmt(s.getpeername())
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        s.close()
s = socket.create_connection(('127.0.0.1', {port}))
fd = s.detach()
out('dup', peer_of(os.dup(fd)))
os.dup2(fd, 50)
out('dup2', peer_of(50))
d = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 60)
out('f_dupfd', peer_of(d))
os.close(fd)
n = socket.socket()
out('reused', n.fileno() == fd)
out('new_socket', peer_of(n.fileno()))
os.closerange(50, 51)
keep = [socket.socket()]
while keep[-1].fileno() < 50:
    keep.append(socket.socket())
m = keep[-1]
out('after_close_range_fd', m.fileno())
out('after_close_range', peer_of(m.fileno()))
out('still', peer_of(d))
",
        port = server.addr.port()
    );
    let out = python(socks4d.addr, &script, &[], &[]);
    let map = kv(&out);
    let dest = server.addr.to_string();
    assert_eq!(get(&map, "dup", &out), dest, "{out}");
    assert_eq!(get(&map, "dup2", &out), dest);
    assert_eq!(get(&map, "f_dupfd", &out), dest);
    assert_eq!(get(&map, "reused", &out), "True");
    assert_eq!(get(&map, "new_socket", &out), "ENOTCONN");
    assert_eq!(get(&map, "after_close_range_fd", &out), "50");
    assert_eq!(get(&map, "after_close_range", &out), "ENOTCONN");
    assert_eq!(get(&map, "still", &out), dest);
    // The peers above would read the same on a direct connection: the destination's view shows
    // the socket was proxied.
    assert_eq!(server.next_conn().peer.ip(), EXTERNAL, "{out}");
}

/// Many threads connecting at once through the proxy (bounded: 16 threads x 5 connections).
#[test]
fn concurrent_connections_from_threads() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let script = format!(
        "{PY_PRELUDE}
import threading
ok = []
def work(i):
    for j in range(5):
        s = socket.create_connection(('127.0.0.1', {port}))
        if fmt(s.getpeername()) != '127.0.0.1:{port}':
            return
        s.sendall(b'x')
        if s.recv(1) == b'x':
            ok.append(1)
        s.close()
ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
[t.start() for t in ts]
[t.join() for t in ts]
out('ok', len(ok))
",
        port = server.addr.port()
    );
    let out = python(socks4d.addr, &script, &[], &[]);
    assert_eq!(kv(&out).get("ok").map(String::as_str), Some("80"), "{out}");
    let conns: Vec<_> = (0..80).map(|_| server.next_conn()).collect();
    assert!(conns.iter().all(|c| c.peer.ip() == EXTERNAL && c.received == b"x"));
}

/// A name with an IPv6 and an IPv4 address: curl tries IPv6 first, gets ENETUNREACH (never a
/// direct IPv6 connection) and falls back to IPv4 through the proxy.
#[test]
fn curl_falls_back_from_ipv6_to_ipv4_through_the_proxy() {
    let socks4d = socks4d();
    // The same port on 127.0.0.1 and ::1, so a direct IPv6 connection would succeed.
    let (v4, v6) = (0..20)
        .find_map(|_| {
            let v4 = TestServer::start("127.0.0.1:0".parse().unwrap(), HTTP_RESPONSE);
            let v6 = std::net::TcpListener::bind(("::1", v4.addr.port())).ok()?;
            drop(v6);
            let v6 = TestServer::start(SocketAddr::new("::1".parse().unwrap(), v4.addr.port()), HTTP_RESPONSE);
            Some((v4, v6))
        })
        .expect("a port free on both 127.0.0.1 and ::1");
    let port = v4.addr.port();
    let mut cmd = shim_command("curl", socks4d.addr);
    cmd.args(["-sS", "--max-time", "10", "--http1.0", "--resolve"])
        .arg(format!("dual.test:{port}:[::1],127.0.0.1"))
        .arg(format!("http://dual.test:{port}/"));
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(v4.next_conn().peer.ip(), EXTERNAL);
    assert_eq!(v6.accepted(), 0, "no direct IPv6 connection");
}

/// A successful hooked call leaves errno as the program set it (called through ctypes, which
/// hands the program's errno to the call and reads it back).
#[test]
fn errno_is_untouched_by_successful_calls() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let script = format!(
        "{PY_PRELUDE}
import ctypes, struct
libc = ctypes.CDLL(None, use_errno=True)
def sockaddr(ip, port):
    raw = struct.pack('=H', socket.AF_INET) + struct.pack('!H', port) + socket.inet_aton(ip) + bytes(8)
    return ctypes.create_string_buffer(raw, len(raw)), len(raw)
s = socket.socket()
buf, n = sockaddr('127.0.0.1', {port})
ctypes.set_errno(1234)
out('connect_rc', libc.connect(s.fileno(), buf, n))
out('connect_errno', ctypes.get_errno())
name = ctypes.create_string_buffer(128)
size = ctypes.c_uint(128)
ctypes.set_errno(4321)
out('getsockname_rc', libc.getsockname(s.fileno(), name, ctypes.byref(size)))
out('getsockname_errno', ctypes.get_errno())
d = socket.socket()
ctypes.set_errno(77)
out('close_rc', libc.close(d.detach()))
out('close_errno', ctypes.get_errno())
",
        port = server.addr.port()
    );
    let out = python(socks4d.addr, &script, &[], &[]);
    let map = kv(&out);
    assert_eq!(get(&map, "connect_rc", &out), "0", "{out}");
    assert_eq!(get(&map, "connect_errno", &out), "1234");
    assert_eq!(get(&map, "getsockname_rc", &out), "0");
    assert_eq!(get(&map, "getsockname_errno", &out), "4321");
    assert_eq!(get(&map, "close_rc", &out), "0");
    assert_eq!(get(&map, "close_errno", &out), "77");
    assert_eq!(server.next_conn().peer.ip(), EXTERNAL);
}

/// Python's subprocess starts children with vfork: the child shares the parent's memory and
/// closes every inherited descriptor (close_range) and dup2s its pipes before exec. None of that
/// may change the parent's view of its proxied socket.
#[test]
fn subprocess_vfork_child_does_not_disturb_the_parent() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let script = format!(
        "{PY_PRELUDE}
import subprocess
s = socket.create_connection(('127.0.0.1', {port}))
out('before', fmt(s.getpeername()))
subprocess.run(['true'], close_fds=True, stdout=subprocess.PIPE)
subprocess.run(['true'], pass_fds=[s.fileno()])
out('after', fmt(s.getpeername()))
out('local', fmt(s.getsockname()))
s.sendall(b'ping')
out('echo', s.recv(4).decode())
",
        port = server.addr.port()
    );
    let out = python(socks4d.addr, &script, &[], &[]);
    let map = kv(&out);
    let dest = server.addr.to_string();
    assert_eq!(get(&map, "before", &out), dest);
    assert_eq!(get(&map, "after", &out), dest, "the vfork child's closes must not reach the parent's state");
    assert_eq!(get(&map, "echo", &out), "ping");
    let conn = server.next_conn();
    assert_eq!(conn.peer.ip(), EXTERNAL, "the connection went through the proxy: {out}");
    assert_eq!(addr(&map, "local", &out), conn.peer);
}
