//! libsocks4.so BIND with real Python programs: bind/getsockname/listen/accept become a SOCKS4
//! BIND through socks4d (external 127.0.0.2) and danted. The test plays the application server:
//! it accepts the control connection, is told an address, connects to it from 127.0.0.1 and
//! exchanges data both ways, recording where every byte went.

mod shim_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::channel;
use std::time::Duration;

use shim_support::*;
use socks4_tests::{Danted, RunOutput};

/// What the application server saw.
#[derive(Debug, Default)]
struct Seen {
    control_peer: Option<SocketAddr>,
    /// The address the client told us to connect to (its getsockname on the listening socket).
    told: Option<SocketAddr>,
    /// Our data connection's own address: the peer the client must see in accept.
    data_local: Option<SocketAddr>,
    data_received: Vec<u8>,
}

/// Runs `mode` of CLIENT under the shim against `proxy` while playing the application server.
fn bind_scenario(proxy: SocketAddr, mode: &str) -> (RunOutput, Seen) {
    bind_scenario_from(proxy, mode, std::net::Ipv4Addr::LOCALHOST)
}

/// `bind_scenario` with the data connection made from `data_source`.
fn bind_scenario_from(proxy: SocketAddr, mode: &str, data_source: std::net::Ipv4Addr) -> (RunOutput, Seen) {
    let app = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = app.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let result = (|| -> std::io::Result<()> {
            let (control, peer) = app.accept()?;
            seen.control_peer = Some(peer);
            control.set_read_timeout(Some(Duration::from_secs(15)))?;
            let mut line = String::new();
            BufReader::new(&control).read_line(&mut line)?;
            let told: SocketAddr = line.trim().parse().map_err(std::io::Error::other)?;
            seen.told = Some(told);
            let told_v4 = match canonical(told) {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => return Err(std::io::Error::other("not an IPv4 address")),
            };
            let mut data = connect_from(data_source, told_v4)?;
            seen.data_local = Some(data.local_addr()?);
            data.set_read_timeout(Some(Duration::from_secs(15)))?;
            data.write_all(b"from-server")?;
            data.shutdown(std::net::Shutdown::Write)?;
            data.read_to_end(&mut seen.data_received)?;
            Ok(())
        })();
        if let Err(e) = result {
            eprintln!("application server: {e}");
        }
        let _ = tx.send(seen);
    });
    let out = python(proxy, &format!("{PY_PRELUDE}{CLIENT}"), &[port.to_string(), mode.into()], &[]);
    let seen = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    (out, seen)
}

const CLIENT: &str = r#"
import select
port, mode = int(sys.argv[1]), sys.argv[2]
if mode == "v6":
    c = socket.socket(socket.AF_INET6)
    c.connect(("::ffff:127.0.0.1", port))
else:
    c = socket.create_connection(("127.0.0.1", port))
try:
    if mode == "v6":
        # The same as "fake" on AF_INET6 sockets with IPv4-mapped addresses.
        s = socket.socket(socket.AF_INET6)
        s.bind((c.getsockname()[0], 0))
        local = s.getsockname()
        s.listen(1)
    elif mode in ("fake", "accept4_nonblock"):
        # inetutils-ftp/tnftp: bind to the control connection's address, port 0, then getsockname,
        # then listen.
        s = socket.socket()
        s.bind((c.getsockname()[0], 0))
        local = s.getsockname()
        s.listen(1)
    elif mode == "unbound":
        # lftp: listen on an unbound socket.
        s = socket.socket()
        s.listen(1)
        local = s.getsockname()
    elif mode == "any":
        # Python ftplib: create_server(("", 0)) binds 0.0.0.0:0 for real, then listens.
        s = socket.create_server(("", 0), backlog=1)
        local = s.getsockname()
    elif mode == "interrupt":
        # A blocking accept must stay interruptible by signals (Ctrl-C): the handler raises.
        import signal
        class Alarm(Exception):
            pass
        def on_alarm(*a):
            raise Alarm()
        s = socket.socket()
        s.bind((c.getsockname()[0], 0))
        local = s.getsockname()
        s.listen(1)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        try:
            s.accept()
            out("interrupted", "no")
        except Alarm:
            out("interrupted", "yes")
    elif mode == "nonblocking":
        s = socket.socket()
        s.bind((c.getsockname()[0], 0))
        s.listen(1)
        local = s.getsockname()
        s.setblocking(False)
        try:
            s.accept()
            out("early_accept", "accepted")
        except BlockingIOError:
            out("early_accept", "EAGAIN")
        p = select.poll()
        p.register(s, select.POLLIN)
        ep = select.epoll()
        ep.register(s.fileno(), select.EPOLLIN)
        out("readable_before", bool(p.poll(300)) or bool(ep.poll(0.1)) or bool(select.select([s], [], [], 0.1)[0]))
    out("listen", fmt(local))
    try:
        s.getpeername()
        out("listener_peer", "connected")
    except OSError as e:
        out("listener_peer", errno.errorcode.get(e.errno, e.errno))
    c.sendall(f"{fmt(local)}\n".encode())
    if mode == "nonblocking":
        p = select.poll()
        p.register(s, select.POLLIN)
        out("readable_after", bool(p.poll(10000)))
        out("epoll_after", bool(ep.poll(1)))
        out("select_after", bool(select.select([s], [], [], 1)[0]))
    if mode == "accept4_nonblock":
        import ctypes, fcntl
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.accept4(s.fileno(), None, None, socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "accept4")
        out("accept4_nonblock", bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK))
        conn = socket.socket(fileno=fd)
        peer = conn.getpeername()
    else:
        conn, peer = s.accept()
except OSError as e:
    fail(e)
out("accepted_peer", fmt(peer))
out("conn_peer", fmt(conn.getpeername()))
out("conn_local", fmt(conn.getsockname()))
out("conn_inheritable", os.get_inheritable(conn.fileno()))
conn.setblocking(True)
got = b""
while True:
    chunk = conn.recv(4096)
    if not chunk:
        break
    got += chunk
out("received", got.decode())
conn.sendall(b"from-client")
conn.close()
try:
    s.accept()
    out("second_accept", "accepted")
except OSError as e:
    out("second_accept", errno.errorcode.get(e.errno, e.errno))
"#;

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The checks every successful BIND scenario must pass; `external` is the proxy's BIND address.
fn assert_bind_worked(out: &RunOutput, seen: &Seen, external: std::net::IpAddr) {
    let map = kv(out);
    let listen = addr(&map, "listen", out);
    assert_eq!(listen.ip().to_canonical(), external, "getsockname must give the proxy's BIND address:\n{out}");
    assert_eq!(seen.told, Some(listen), "the program told the server its getsockname");
    assert_eq!(seen.control_peer.map(|p| p.ip()), Some(external), "control connection via the proxy");
    let data_local = seen.data_local.expect("the application server connected");
    // An AF_INET6 socket reports the same addresses IPv4-mapped.
    let accepted_peer = addr(&map, "accepted_peer", out);
    assert_eq!(canonical(accepted_peer), data_local, "accept's peer comes from the second reply:\n{out}");
    assert_eq!(addr(&map, "conn_peer", out), accepted_peer, "getpeername on the accepted socket");
    assert_eq!(addr(&map, "conn_local", out), listen, "getsockname on the accepted socket");
    assert_eq!(get(&map, "received", out), "from-server");
    assert_eq!(seen.data_received, b"from-client", "bytes from the program reach the server:\n{out}");
    // Python's accept uses accept4(SOCK_CLOEXEC): the new descriptor must be close-on-exec.
    assert_eq!(get(&map, "conn_inheritable", out), "False");
    // The listening socket has no peer, though underneath it is connected to the proxy.
    assert_eq!(get(&map, "listener_peer", out), "ENOTCONN");
}

#[test]
fn python_bind_to_proxy_side_address_through_socks4d() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "fake");
    assert_bind_worked(&out, &seen, EXTERNAL);
    // SOCKS4 BIND carries one connection: a blocking second accept fails with EINVAL.
    assert_eq!(get(&kv(&out), "second_accept", &out), "EINVAL");
    assert!(out.stderr.contains("BIND carries one connection"), "{out}");
}

/// accept4(SOCK_NONBLOCK) on a blocking BIND socket gives a non-blocking relayed connection.
#[test]
fn accept4_sock_nonblock_applies_to_the_new_descriptor() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "accept4_nonblock");
    assert_eq!(get(&kv(&out), "accept4_nonblock", &out), "True");
    assert_bind_worked(&out, &seen, EXTERNAL);
}

#[test]
fn python_listen_on_unbound_socket_through_socks4d() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "unbound");
    assert_bind_worked(&out, &seen, EXTERNAL);
}

#[test]
fn python_create_server_any_port_through_socks4d() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "any");
    assert_bind_worked(&out, &seen, EXTERNAL);
}

#[test]
fn python_bind_on_ipv6_sockets_with_mapped_addresses_through_socks4d() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "v6");
    assert_bind_worked(&out, &seen, EXTERNAL);
    assert!(addr(&kv(&out), "listen", &out).is_ipv6(), "an AF_INET6 socket reports IPv6 addresses:\n{out}");
}

#[test]
fn python_bind_through_danted() {
    let danted = Danted::start(EXTERNAL);
    let (out, seen) = bind_scenario(danted.addr, "fake");
    assert_bind_worked(&out, &seen, EXTERNAL);
}

/// poll on the "listening" socket turns readable exactly when the second reply arrives; a
/// non-blocking accept before that is EAGAIN, and after the one connection EAGAIN again.
#[test]
fn nonblocking_accept_and_poll_follow_the_second_reply() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "nonblocking");
    assert_bind_worked(&out, &seen, EXTERNAL);
    let map = kv(&out);
    assert_eq!(get(&map, "early_accept", &out), "EAGAIN");
    assert_eq!(get(&map, "readable_before", &out), "False");
    assert_eq!(get(&map, "readable_after", &out), "True");
    assert_eq!(get(&map, "epoll_after", &out), "True");
    assert_eq!(get(&map, "select_after", &out), "True");
    assert_eq!(get(&map, "second_accept", &out), "EAGAIN");
}

/// A signal interrupts a blocking accept waiting for the second reply (EINTR reaches the program),
/// and the next accept still works.
#[test]
fn blocking_accept_is_interruptible_and_resumes() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario(socks4d.addr, "interrupt");
    assert_eq!(get(&kv(&out), "interrupted", &out), "yes");
    assert_bind_worked(&out, &seen, EXTERNAL);
}

/// The wrong host connects to the BIND address: socks4d's second reply is 91 and accept fails
/// with ECONNABORTED and a stderr line.
#[test]
fn second_reply_91_is_econnaborted() {
    let socks4d = socks4d();
    let (out, seen) = bind_scenario_from(socks4d.addr, "fake", std::net::Ipv4Addr::new(127, 0, 0, 3));
    assert!(seen.told.is_some(), "{out}");
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ECONNABORTED"), "{out}");
    assert!(out.stderr.contains("second reply 91"), "{out}");
}

#[test]
fn refused_bind_fails_listen_with_econnrefused() {
    let socks4d = socks4d_with("[[rule]]\nname = \"no bind\"\naction = \"deny\"\ncommands = [\"bind\"]\n");
    let (out, _) = bind_scenario(socks4d.addr, "unbound");
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ECONNREFUSED"), "{out}");
    assert!(out.stderr.contains("bind request for 127.0.0.1:"), "{out}");
    assert!(out.stderr.contains("refused: 91"), "{out}");
}

/// A real server on a fixed port stays local even in a process with a proxied connection.
#[test]
fn fixed_port_listener_stays_local() {
    let socks4d = socks4d();
    let server = TestServer::start("127.0.0.1:0".parse().unwrap(), b"");
    let script = format!(
        "{PY_PRELUDE}
c = socket.create_connection(('127.0.0.1', {}))
out('control_local', fmt(c.getsockname()))
probe = socket.socket(); probe.bind(('127.0.0.1', 0)); port = probe.getsockname()[1]; probe.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', port)); s.listen(1)
out('listen', fmt(s.getsockname()))
",
        server.addr.port()
    );
    let out = python(socks4d.addr, &script, &[], &[]);
    let map = kv(&out);
    assert_eq!(addr(&map, "control_local", &out).ip(), EXTERNAL, "{out}");
    let listen = addr(&map, "listen", &out);
    assert_eq!(listen.ip(), LOCALHOST, "{out}");
    assert_ne!(listen.port(), 0);
}

/// A socket bound with port 0 to an address in a direct network is a local server: listen() is
/// the real one and a local client reaches it. Bound to an address outside the direct networks,
/// or to the unspecified address, the same listen() is a BIND request. The proxy is on 127.0.0.3
/// and answers the CONNECT with 0.0.0.0, so the program's own address toward it (127.0.0.1) is
/// the connection's proxy-side address only when it is not in a direct network: bound to it,
/// the socket is a local server too.
#[test]
fn listener_on_a_direct_address_stays_local() {
    let cases = [
        ("127.0.0.0/8", "127.0.0.2", false),
        ("", "127.0.0.2", true),
        ("127.0.0.0/8", "0.0.0.0", true),
        ("127.0.0.0/8", "127.0.0.1", false),
    ];
    for (direct, ip, bind) in cases {
        let what = format!("SOCKS4_DIRECT={direct:?}, bound to {ip}:0");
        let proxy = ScriptedProxy::start(
            "127.0.0.3",
            vec![b"\x00\x5a\x00\x00\x00\x00\x00\x00", b"\x00\x5a\x10\x92\x00\x00\x00\x00"],
        );
        let script = format!(
            "{PY_PRELUDE}
try:
    c = socket.create_connection(('10.1.2.3', 21))
    s = socket.socket()
    s.bind(('{ip}', 0))
    s.listen(1)
    out('listen', fmt(s.getsockname()))
    if {local}:
        t = socket.create_connection(s.getsockname(), timeout=5)
        s.settimeout(5)
        conn, peer = s.accept()
        out('accepted', fmt(peer))
except OSError as e:
    fail(e)
",
            local = if bind { "False" } else { "True" }
        );
        let out = python(proxy.addr, &script, &[], &[("SOCKS4_DIRECT", direct)]);
        let map = kv(&out);
        let listen = addr(&map, "listen", &out);
        let requests = proxy.requests.lock().unwrap().clone();
        if bind {
            assert_eq!(listen, "127.0.0.3:4242".parse().unwrap(), "{what}: the first BIND reply\n{out}");
            assert_eq!(requests.len(), 2, "{what}: CONNECT, then BIND\n{out}");
            assert_eq!(requests[1][1], 2, "{what}: the second request is a BIND\n{out}");
        } else {
            assert_eq!(listen.ip().to_string(), ip, "{what}: a real listener\n{out}");
            assert_ne!(listen.port(), 0, "{what}\n{out}");
            assert_eq!(addr(&map, "accepted", &out).ip().to_string(), "127.0.0.1", "{what}\n{out}");
            assert_eq!(requests.len(), 1, "{what}: the CONNECT alone\n{out}");
        }
    }
}

/// The wire bytes of CONNECT and BIND, and the spec's rule for a first BIND reply of 0.0.0.0
/// (replaced by the SOCKS server's address), against a scripted server on 127.0.0.3 while the
/// client's own address is 127.0.0.1: CONNECT granted with 0.0.0.0, BIND granted at
/// 0.0.0.0:4242, then the second reply (1.2.3.4:5555) and data in one write.
#[test]
fn bind_request_bytes_and_zero_address_in_the_first_reply() {
    let proxy = ScriptedProxy::start(
        "127.0.0.3",
        vec![
            b"\x00\x5a\x00\x00\x00\x00\x00\x00",
            b"\x00\x5a\x10\x92\x00\x00\x00\x00\x00\x5a\x15\xb3\x01\x02\x03\x04hi",
        ],
    );
    let script = format!(
        "{PY_PRELUDE}
try:
    c = socket.create_connection(('10.1.2.3', 21))
    out('control_local', fmt(c.getsockname()))
    s = socket.socket()
    s.listen(1)
    out('listen', fmt(s.getsockname()))
    conn, peer = s.accept()
except OSError as e:
    fail(e)
out('peer', fmt(peer))
out('data', conn.recv(10).decode())
"
    );
    let out = python(proxy.addr, &script, &[], &[("SOCKS4_USER", "fred")]);
    let map = kv(&out);
    assert_eq!(get(&map, "listen", &out), "127.0.0.3:4242", "0.0.0.0 is replaced by the server's address");
    assert_eq!(get(&map, "peer", &out), "1.2.3.4:5555");
    assert_eq!(get(&map, "data", &out), "hi", "bytes after the second reply belong to the program");
    // The CONNECT reply said 0.0.0.0: getsockname is the real local address.
    assert_eq!(addr(&map, "control_local", &out).ip(), LOCALHOST);
    let requests = proxy.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![b"\x04\x01\x00\x15\x0a\x01\x02\x03fred\0".to_vec(), b"\x04\x02\x00\x15\x0a\x01\x02\x03fred\0".to_vec()],
        "CONNECT, then a BIND naming the same destination"
    );
}
