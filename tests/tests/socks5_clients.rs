//! Real SOCKS5 clients against socks4d: curl (`--socks5`, `--socks5-hostname`, with
//! `--proxy-user`), Python's PySocks with a password, the npm `socks` package (CONNECT, BIND
//! with both replies, UDP ASSOCIATE), `nc -X 5`, and Dante's socksify speaking `socks_v5` for
//! inetutils-ftp in active mode (SOCKS5 BIND) against pyftpdlib. socks4d's external address is
//! 127.0.0.2 and every destination listens on 127.0.0.1, so what the destination reports proves
//! that socks4d carried the bytes; socks4d's log shows which rule (and which login) served them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use socks4_tests::{
    ActiveFtp, FtpClient, PeerServer, Socks4d, TempDir, peer_payload, run_with_timeout, socksify_command_with,
};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const EXTERNAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const NODE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node");

/// A users file made by `htpasswd -B` (apache2-utils): fred/s3cret.
fn users_file(dir: &TempDir) -> std::path::PathBuf {
    let path = dir.join("users");
    let out = Command::new("htpasswd").args(["-B", "-b", "-c"]).arg(&path).args(["fred", "s3cret"]).output();
    let out = out.expect("htpasswd (apache2-utils; scripts/test installs it)");
    assert!(out.status.success(), "htpasswd: {}", String::from_utf8_lossy(&out.stderr));
    path
}

/// socks4d on 127.0.0.1 with external 127.0.0.2: rule 0 ("password") for fred logged in,
/// rule 1 ("open") for loopback clients without a login.
fn socks4d(dir: &TempDir) -> Socks4d {
    Socks4d::start(&format!(
        r#"
external = "127.0.0.2"
users_file = "{}"
connect_timeout = "10s"

[[rule]]
name = "password"
action = "allow"
auth = "password"
users = ["fred"]
from = ["127.0.0.0/8"]

[[rule]]
name = "open"
action = "allow"
from = ["127.0.0.0/8"]
"#,
        users_file(dir).display()
    ))
}

/// Waits up to 5 s for a session line in socks4d's log containing every one of `want`.
fn assert_logged(socks4d: &Socks4d, want: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = socks4d.log();
        if log.lines().any(|l| l.contains(" session ") && want.iter().all(|w| l.contains(w))) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no session line with {want:?} in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(cmd: &mut Command) -> socks4_tests::RunOutput {
    run_with_timeout(cmd.env_remove("LD_PRELOAD"), b"", Duration::from_secs(20))
}

#[test]
fn curl_socks5_and_socks5h_with_proxy_user() {
    let dir = TempDir::new("socks5-curl");
    let socks4d = socks4d(&dir);
    let peer = PeerServer::start_in(None, LOCALHOST);
    let proxy = socks4d.addr;
    for (flag, host) in [("--socks5", "127.0.0.1"), ("--socks5-hostname", "localhost")] {
        let url = format!("http://{host}:{}/bytes/1000", peer.addr.port());
        let out = run(Command::new("curl").args(["-sS", "--max-time", "15", flag, &proxy.to_string()]).args([
            "--proxy-user",
            "fred:s3cret",
            &url,
        ]));
        assert!(out.success(), "curl {flag}: {out}\n{}", socks4d.log());
        let (head, body) = out.stdout.split_once('\n').unwrap_or_else(|| panic!("curl {flag}: {out}"));
        let seen: SocketAddr = head.strip_prefix("peer=").and_then(|p| p.parse().ok()).expect("peer= line");
        assert_eq!(seen.ip(), EXTERNAL, "curl {flag}: the destination saw {seen}");
        assert_eq!(body.as_bytes(), peer_payload(1000), "curl {flag}: body");
    }
    assert_logged(&socks4d, &["proto=\"socks5\"", "user=\"fred\"", "rule=0:password", "reply=0", "dest=localhost:"]);
    // A wrong password: curl fails, the destination sees nothing more.
    let before = peer.peers().len();
    let url = format!("http://127.0.0.1:{}/bytes/1", peer.addr.port());
    let out = run(Command::new("curl").args(["-sS", "--max-time", "15", "--socks5", &proxy.to_string()]).args([
        "--proxy-user",
        "fred:wrong",
        &url,
    ]));
    assert!(!out.success(), "curl with a wrong password got through: {out}");
    assert_eq!(peer.peers().len(), before);
    assert_logged(&socks4d, &["user=\"fred\"", "reason=login failed"]);
}

#[test]
fn pysocks_with_a_password() {
    let dir = TempDir::new("socks5-pysocks");
    let socks4d = socks4d(&dir);
    let peer = PeerServer::start_in(None, LOCALHOST);
    // Debian's python3-socks (PySocks); /usr/bin/python3 has it.
    let script = r#"
import socks, sys
s = socks.socksocket()
s.settimeout(15)
s.set_proxy(socks.SOCKS5, sys.argv[1], int(sys.argv[2]), rdns=True, username="fred", password="s3cret")
s.connect((sys.argv[3], int(sys.argv[4])))
s.sendall(b"hello from pysocks\n")
got = b""
while not got.endswith(b"\n") or got.count(b"\n") < 2:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
sys.stdout.write(got.decode())
"#;
    for host in ["127.0.0.1", "localhost"] {
        let out = run(Command::new("/usr/bin/python3").args(["-c", script]).args([
            &socks4d.addr.ip().to_string(),
            &socks4d.addr.port().to_string(),
            host,
            &peer.addr.port().to_string(),
        ]));
        assert!(out.success(), "PySocks to {host}: {out}\n{}", socks4d.log());
        let mut lines = out.stdout.lines();
        let seen: SocketAddr = lines.next().and_then(|l| l.strip_prefix("peer=")?.parse().ok()).expect("peer=");
        assert_eq!(seen.ip(), EXTERNAL, "PySocks: the destination saw {seen}");
        assert_eq!(lines.next(), Some("hello from pysocks"));
    }
    assert_logged(&socks4d, &["proto=\"socks5\"", "user=\"fred\"", "rule=0:password", "command=connect"]);
}

fn node(
    mode: &str,
    socks4d: &Socks4d,
    user: &str,
    password: &str,
    dest: Option<SocketAddr>,
) -> socks4_tests::RunOutput {
    assert!(
        std::path::Path::new(NODE_DIR).join("node_modules/socks").is_dir(),
        "tests/node/node_modules/socks missing: scripts/test installs it (npm ci in tests/node)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(NODE_DIR).arg("socks_client.js").arg(mode);
    cmd.args([socks4d.addr.ip().to_string(), socks4d.addr.port().to_string(), user.into(), password.into()]);
    if let Some(d) = dest {
        cmd.args([d.ip().to_string(), d.port().to_string()]);
    }
    run(&mut cmd)
}

#[test]
fn npm_socks_connect_bind_and_udp() {
    let dir = TempDir::new("socks5-npm");
    let socks4d = socks4d(&dir);

    // CONNECT, logged in.
    let peer = PeerServer::start_in(None, LOCALHOST);
    let out = node("connect", &socks4d, "fred", "s3cret", Some(peer.addr));
    assert!(out.success(), "npm socks connect: {out}\n{}", socks4d.log());
    let mut lines = out.stdout.lines();
    let seen: SocketAddr = lines.next().and_then(|l| l.strip_prefix("peer=")?.parse().ok()).expect("peer=");
    assert_eq!(seen.ip(), EXTERNAL);
    assert_eq!(lines.next(), Some("hello from node"));

    // BIND: the first reply names socks4d's external address, the second the peer.
    let out = node("bind", &socks4d, "fred", "s3cret", None);
    assert!(out.success(), "npm socks bind: {out}\n{}", socks4d.log());
    let field = |name: &str| -> String {
        out.stdout.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("no {name}: {out}")).to_string()
    };
    let bound: SocketAddr = field("bound ").parse().unwrap();
    assert_eq!(bound.ip(), EXTERNAL, "BIND listens on the external address: {out}");
    assert_eq!(field("established "), field("peer "), "the second reply names the peer: {out}");
    assert_eq!(field("client got "), "\"from the peer\\n\"");
    assert_eq!(field("peer got "), "\"from the client\\n\"");
    assert_logged(&socks4d, &["command=bind", "dest=0.0.0.0:0", "rule=0:password", "reply=0"]);

    // UDP ASSOCIATE, no login: a UDP echo on 127.0.0.1 sees 127.0.0.2.
    let echo = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let echo_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
            let _ = tx.send((from, buf[..n].to_vec()));
        }
    });
    let out = node("udp", &socks4d, "", "", Some(echo_addr));
    assert!(out.success(), "npm socks udp: {out}\n{}", socks4d.log());
    let (from, payload) = rx.recv_timeout(Duration::from_secs(5)).expect("the echo got a datagram");
    assert_eq!(from.ip(), EXTERNAL, "datagram sent on from the external address");
    assert_eq!(payload, b"datagram from node");
    assert!(
        out.stdout.contains(&format!("answer from 127.0.0.1:{} \"datagram from node\"", echo_addr.port())),
        "{out}"
    );
    echo_thread.join().unwrap();
    assert_logged(&socks4d, &["command=udp", "rule=-", "datagrams_up=1", "datagrams_down=1", "bytes_up=18"]);
}

#[test]
fn netcat_x5() {
    let dir = TempDir::new("socks5-nc");
    let socks4d = socks4d(&dir);
    let peer = PeerServer::start_in(None, LOCALHOST);
    let mut cmd = Command::new("nc");
    cmd.args(["-X", "5", "-x", &socks4d.addr.to_string(), "-w", "10", "127.0.0.1", &peer.addr.port().to_string()]);
    let out = run_with_timeout(cmd.env_remove("LD_PRELOAD"), b"hello from nc\n", Duration::from_secs(20));
    assert!(out.success(), "nc -X 5: {out}\n{}", socks4d.log());
    let mut lines = out.stdout.lines();
    let seen: SocketAddr = lines.next().and_then(|l| l.strip_prefix("peer=")?.parse().ok()).expect("peer=");
    assert_eq!(seen.ip(), EXTERNAL);
    assert_eq!(lines.next(), Some("hello from nc"));
    // nc offers no login: served by the open rule.
    assert_logged(&socks4d, &["proto=\"socks5\"", "user=\"\"", "rule=1:open", "command=connect"]);
}

/// Dante's own client speaking SOCKS5: active-mode FTP needs BIND, and the FTP server must see
/// 127.0.0.2 as the control peer, in PORT and as every data peer.
#[test]
fn socksify_v5_inetutils_ftp_active() {
    let dir = TempDir::new("socks5-socksify");
    let socks4d = socks4d(&dir);
    ActiveFtp { upload: Some(1 << 20), ..ActiveFtp::new(FtpClient::Inetutils, LOCALHOST, EXTERNAL) }
        .run(|p| socksify_command_with(p, socks4d.addr, &dir, "socks_v5"), || socks4d.log());
    assert_logged(&socks4d, &["proto=\"socks5\"", "command=bind", "reply=0"]);
}
