//! The real `socks4d` binary: `--check`, `--help`, config errors naming
//! line and key, the `listening` line, SIGHUP reload, SIGTERM drain, and
//! curl through it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_socks4d");

/// A per-test scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("socks4d-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.join(file);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A running socks4d, killed by PID on drop.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &TempDir, config: &PathBuf) -> Daemon {
        Daemon::start_with_log(dir, config, Some("info"))
    }

    /// `rust_log: None` leaves the level to the config's `log` key.
    fn start_with_log(dir: &TempDir, config: &PathBuf, rust_log: Option<&str>) -> Daemon {
        let log = dir.0.join("stderr.log");
        let mut cmd = Command::new(BIN);
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd
            .arg("--config")
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap_or_default());
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("a `listening` line within 10 s");
        let addr = line.strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected stdout {line:?}"));
        Daemon { addr: addr.parse().unwrap(), child, log }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CONNECT to `dest` through `proxy`; returns the stream and the reply code.
fn connect(proxy: SocketAddr, dest: SocketAddr) -> (TcpStream, u8) {
    let SocketAddr::V4(d) = dest else { panic!() };
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&d.port().to_be_bytes());
    req.extend_from_slice(&d.ip().octets());
    req.push(0);
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).unwrap();
    (s, reply[1])
}

/// An echo server on 127.0.0.1:0 (threads; for the whole test process).
fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let mut w = s;
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    addr
}

const ALLOW: &str = "drain_timeout = \"1s\"\n[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n";
const DENY: &str = "drain_timeout = \"1s\"\n[[rule]]\naction = \"deny\"\n";

#[test]
fn help_names_the_flags() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--check", "SIGHUP"] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn check_prints_builtin_default() {
    let out = run(&["--check"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listen = [\"127.0.0.1:1080\"]"), "{text}");
    assert!(text.contains("from = [\"127.0.0.0/8\", \"::1/128\"]"), "{text}");
    assert!(text.contains("connect_timeout = \"2m\""), "{text}");
}

#[test]
fn check_prints_effective_settings_and_rules() {
    let dir = TempDir::new("check");
    let path = dir.write(
        "c.toml",
        "handshake_timeout = \"3s\"\n[[rule]]\nname = \"office\"\naction = \"allow\"\nfrom = [\"10.0.0.0/8\"]\nports = [\"20-21\"]\nident = \"match\"\n",
    );
    let out = run(&["--check", "--config", path.to_str().unwrap(), "--listen", "127.0.0.1:9999"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "listen = [\"127.0.0.1:9999\"]",
        "handshake_timeout = \"3s\"",
        "name = \"office\"",
        "from = [\"10.0.0.0/8\"]",
        "ports = [\"20-21\"]",
        "ident = \"match\"",
        "# rule 0",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn bad_configs_name_file_line_and_key() {
    let dir = TempDir::new("bad");
    let cases = [
        ("listen = [\"127.0.0.1:1\"]\nlisten_typo = 1\n", 2, "listen_typo"),
        ("\n[[rule]]\naction = \"allow\"\nfrom = [\"10.0.0.0/8\", \"300.0.0.0/8\"]\n", 4, "from"),
        ("[[rule]]\naction = \"allow\"\n\nports = [\"80-10\"]\n", 4, "ports"),
        ("handshake_timeout = \"soon\"\n", 1, "handshake_timeout"),
        ("[[rule]]\naction = \"allow\"\nident = \"maybe\"\n", 3, "ident"),
        ("max_connections = \"many\"\n", 1, "max_connections"),
    ];
    for (text, line, key) in cases {
        let path = dir.write("bad.toml", text);
        let out = run(&["--check", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "accepted:\n{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:{line}: {key}:", path.display());
        assert!(err.contains(&want), "want {want:?} in {err:?}");
    }
    let out = run(&["--check", "--config", "/nonexistent/socks4d.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/socks4d.toml"));
}

#[test]
fn sighup_reloads_and_keeps_live_sessions() {
    let dir = TempDir::new("hup");
    let path = dir.write("c.toml", ALLOW);
    let daemon = Daemon::start(&dir, &path);
    let dest = echo();
    let (mut live, code) = connect(daemon.addr, dest);
    assert_eq!(code, 90);

    std::fs::write(&path, DENY).unwrap();
    daemon.signal("-HUP");
    let start = Instant::now();
    loop {
        let (_, code) = connect(daemon.addr, dest);
        if code == 91 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "reload not applied; log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    live.write_all(b"alive").unwrap();
    let mut buf = [0u8; 5];
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"alive");

    // A broken file is refused and the last good config stays.
    std::fs::write(&path, "[[rule]]\naction = \"allow\"\nfrom = [\"nonsense\"]\n").unwrap();
    daemon.signal("-HUP");
    let start = Instant::now();
    while !daemon.log().contains("bad config") {
        assert!(start.elapsed() < Duration::from_secs(5), "no error logged:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(daemon.log().contains(":3: from:"), "{}", daemon.log());
    assert_eq!(connect(daemon.addr, dest).1, 91);
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let dir = TempDir::new("term");
    let path = dir.write("c.toml", ALLOW);
    let mut daemon = Daemon::start(&dir, &path);
    let (mut live, code) = connect(daemon.addr, echo());
    assert_eq!(code, 90);
    let started = Instant::now();
    daemon.signal("-TERM");
    // New clients are refused at once...
    std::thread::sleep(Duration::from_millis(200));
    assert!(TcpStream::connect(daemon.addr).is_err(), "still accepting after SIGTERM");
    // ...the live one keeps working during the drain...
    live.write_all(b"drain").unwrap();
    let mut buf = [0u8; 5];
    live.read_exact(&mut buf).unwrap();
    // ...and after drain_timeout (1s) the process exits 0.
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exit after drain");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The cut session still gets its line, with the bytes it moved.
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("cut: server stopping")).unwrap_or_else(|| panic!("no line:\n{log}"));
    assert!(line.contains("bytes_up=5") && line.contains("bytes_down=5"), "{line}");
}

#[test]
fn session_log_line_has_the_fields() {
    let dir = TempDir::new("log");
    let path = dir.write("c.toml", "[[rule]]\nname = \"lo\"\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n");
    let daemon = Daemon::start(&dir, &path);
    let dest = echo();
    let (mut s, code) = connect(daemon.addr, dest);
    assert_eq!(code, 90);
    s.write_all(b"12345").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    drop(s);
    let start = Instant::now();
    loop {
        let log = daemon.log();
        if let Some(line) = log.lines().find(|l| l.contains(" session ") || l.ends_with(" session")) {
            let dest = format!("dest={dest}");
            for want in [
                "peer=127.0.0.1:",
                "user=\"\"",
                "command=connect",
                &dest,
                "rule=0:lo",
                "reply=90",
                "bytes_up=5",
                "bytes_down=5",
                "duration_ms=",
            ] {
                assert!(line.contains(want), "{want} missing in {line}");
            }
            // A relay that ended normally gives no reason.
            assert!(line.ends_with("reason="), "{line}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no session line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A one-page HTTP server on 127.0.0.1:0 that reports each client's address.
fn http_server() -> (SocketAddr, mpsc::Receiver<SocketAddr>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let _ = tx.send(s.peer_addr().unwrap());
            let mut s = s;
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = "hello from behind the firewall\n";
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    (addr, rx)
}

#[test]
fn curl_socks4_and_socks4a_through_socks4d() {
    let dir = TempDir::new("curl");
    let path = dir.write("c.toml", &format!("external = \"127.0.0.2\"\n{ALLOW}"));
    let daemon = Daemon::start(&dir, &path);
    let (http, seen) = http_server();
    for (flag, url) in [
        ("--socks4", format!("http://127.0.0.1:{}/", http.port())),
        ("--socks4a", format!("http://localhost:{}/", http.port())),
    ] {
        let out = Command::new("timeout")
            .args(["20", "curl", "-sS", "--max-time", "10", flag, &daemon.addr.to_string(), &url])
            .output()
            .expect("curl is installed by scripts/test");
        assert!(out.status.success(), "curl {flag}: {}\nlog:\n{}", String::from_utf8_lossy(&out.stderr), daemon.log());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from behind the firewall\n");
        let peer = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            peer.ip().to_string(),
            "127.0.0.2",
            "curl {flag}: the HTTP server must see the proxy's external address"
        );
    }
}

/// The README's configuration reference must parse, and its values must be
/// the real defaults.
#[test]
fn readme_config_reference_is_valid_and_shows_the_defaults() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let section = &readme[readme.find("## socks4d").expect("README has a socks4d section")..];
    let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];
    let parsed = socks4_server::Config::parse(block, "README.md").unwrap();
    let default = socks4_server::Config::default();
    assert_eq!(
        socks4_server::Config { rules: default.rules.clone(), ..parsed.clone() },
        default,
        "README shows other defaults than the code has"
    );
    let rule = &parsed.rules.rules[0];
    let mut expected = socks4_server::rules::Rule::new(socks4_server::rules::Action::Allow);
    expected.name = Some("office".into());
    assert_eq!(*rule, expected, "README's rule shows other per-key defaults than the code has");
}

#[test]
fn one_listening_line_per_listener() {
    /// Kills the daemon by PID even if an assertion fails first.
    struct Guard(Child);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Guard(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--listen", "[::1]:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    drop(child);
    let first: SocketAddr = first.strip_prefix("listening ").unwrap().parse().unwrap();
    let second: SocketAddr = second.strip_prefix("listening ").unwrap().parse().unwrap();
    assert!(first.is_ipv4() && first.port() != 0, "{first}");
    assert!(second.is_ipv6() && second.port() != 0, "{second}");
}

#[test]
fn busy_listen_address_fails_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new("timeout").args(["10", BIN, "--listen", &addr]).output().unwrap();
    assert!(!out.status.success() && out.status.code() != Some(124), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert!(out.stdout.is_empty(), "no `listening` line for a failed start");
}

#[test]
fn second_sigterm_skips_the_drain() {
    let dir = TempDir::new("term2");
    let path = dir.write("c.toml", &ALLOW.replace("drain_timeout = \"1s\"", "drain_timeout = \"30s\""));
    let mut daemon = Daemon::start(&dir, &path);
    let (mut live, code) = connect(daemon.addr, echo());
    assert_eq!(code, 90);
    daemon.signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.child.try_wait().unwrap().is_none(), "must drain, not exit, after one SIGTERM");
    daemon.signal("-TERM");
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exit at once on the second signal");
    assert!(status.success(), "{status:?}");
    let mut buf = [0u8; 1];
    assert!(matches!(live.read(&mut buf), Ok(0) | Err(_)), "the live session must be cut");
}

#[test]
fn sighup_applies_the_log_level() {
    let dir = TempDir::new("loglevel");
    let path = dir.write("c.toml", &format!("log = \"warn\"\n{ALLOW}"));
    let daemon = Daemon::start_with_log(&dir, &path, None);
    let dest = echo();
    drop(connect(daemon.addr, dest));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!daemon.log().contains(" session"), "info lines at level warn:\n{}", daemon.log());

    std::fs::write(&path, format!("log = \"info\"\n{ALLOW}")).unwrap();
    daemon.signal("-HUP");
    let start = Instant::now();
    while !daemon.log().contains(" session") {
        assert!(start.elapsed() < Duration::from_secs(5), "level not applied:\n{}", daemon.log());
        drop(connect(daemon.addr, dest));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Busy polling (on by default) keeps a thread polling while CONNECTs come
/// back to back, but must stop once they stop: an idle server that kept
/// polling would burn a core.
#[test]
fn busy_polling_stops_when_the_traffic_stops() {
    let dir = TempDir::new("busy-poll");
    let path = dir.write("c.toml", ALLOW);
    let daemon = Daemon::start_with_log(&dir, &path, Some("warn"));
    let dest = echo();
    let pid = daemon.child.id();
    let before = cpu_time(pid);
    let start = Instant::now();
    for _ in 0..1000 {
        let (_s, code) = connect(daemon.addr, dest);
        assert_eq!(code, 90);
    }
    let busy = cpu_time(pid) - before;
    assert!(busy > Duration::ZERO, "no CPU time measured for 1,000 CONNECTs: the test cannot see polling");

    std::thread::sleep(Duration::from_millis(300));
    let idle_from = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(1));
    let idle = cpu_time(pid) - idle_from;
    assert!(
        idle <= Duration::from_millis(50),
        "{idle:?} of CPU in 1 s idle (1,000 CONNECTs took {busy:?} over {:?})",
        start.elapsed()
    );
}

/// The session line of the first session that ends after `start`: waits up to 5 s.
fn session_line(daemon: &Daemon, skip: usize) -> String {
    let start = Instant::now();
    loop {
        let log = daemon.log();
        if let Some(line) = log.lines().filter(|l| l.contains(" session ") || l.ends_with(" session")).nth(skip) {
            return line.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no session line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes a client pipelines after its request count as sent up, with what it sends later.
#[test]
fn pipelined_bytes_count_in_the_log_line() {
    let dir = TempDir::new("log-pipe");
    let path = dir.write("c.toml", "[[rule]]\naction = \"allow\"\nfrom = [\"127.0.0.0/8\"]\n");
    let daemon = Daemon::start(&dir, &path);
    let dest = echo();
    let SocketAddr::V4(d) = dest else { panic!("IPv4 echo") };
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&d.port().to_be_bytes());
    req.extend_from_slice(&d.ip().octets());
    req.extend_from_slice(b"\0abc");
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 90);
    s.write_all(b"12").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abc12");
    drop(s);
    let line = session_line(&daemon, 0);
    assert!(line.contains("bytes_up=5") && line.contains("bytes_down=5"), "{line}");
}

/// A SOCKS4A request that no allow rule could match is refused without looking the name up,
/// and the log says so; a refusal by a matching deny rule names the rule.
#[test]
fn refusals_say_why_in_the_log_line() {
    let dir = TempDir::new("log-refuse");
    let path = dir.write(
        "c.toml",
        "[[rule]]\nname = \"no-ten\"\naction = \"deny\"\nto = [\"10.0.0.0/8\"]\n\
         [[rule]]\naction = \"allow\"\nfrom = [\"192.0.2.0/24\"]\n",
    );
    let daemon = Daemon::start(&dir, &path);
    let ask = |req: &[u8]| {
        let mut s = TcpStream::connect(daemon.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req).unwrap();
        let mut reply = [0u8; 8];
        s.read_exact(&mut reply).unwrap();
        reply[1]
    };
    assert_eq!(ask(b"\x04\x01\x00\x50\x00\x00\x00\x01\0localhost\0"), 91);
    let line = session_line(&daemon, 0);
    assert!(line.ends_with("reason=refused by rules (name not looked up)"), "{line}");
    assert!(line.contains("rule=-"), "{line}");
    assert_eq!(ask(b"\x04\x01\x00\x50\x0a\x00\x00\x01\0"), 91);
    let line = session_line(&daemon, 1);
    assert!(line.ends_with("reason=refused by rules") && line.contains("rule=0:no-ten"), "{line}");
}

/// A protocol turned off: its client is closed without a reply, and the log line says why.
#[test]
fn a_protocol_turned_off_says_so_in_the_log_line() {
    let dir = TempDir::new("log-protocol-off");
    let path = dir.write("c.toml", &format!("protocols = [\"socks5\"]\n{ALLOW}"));
    let daemon = Daemon::start(&dir, &path);
    let mut s = TcpStream::connect(daemon.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x04\x01\x00\x50\x7f\x00\x00\x01\0").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed without a reply");
    let line = session_line(&daemon, 0);
    assert!(line.ends_with("reason=request version 4: protocol off: closed without reply"), "{line}");
}

/// A SOCKS5 UDP association lives through the drain while its datagrams
/// flow, is cut at drain_timeout, and still gets its line with the counts.
#[test]
fn sigterm_drains_a_udp_association() {
    let dir = TempDir::new("term-udp");
    let path = dir.write("c.toml", ALLOW);
    let mut daemon = Daemon::start(&dir, &path);
    let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let echo_addr = echo.local_addr().unwrap();
    let mut control = TcpStream::connect(daemon.addr).unwrap();
    control.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    control.write_all(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00").unwrap();
    let mut reply = [0u8; 12];
    control.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..6], [5, 0, 5, 0, 0, 1]);
    let relay =
        SocketAddr::from(([reply[6], reply[7], reply[8], reply[9]], u16::from_be_bytes([reply[10], reply[11]])));
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut datagram = vec![0, 0, 0, 1, 127, 0, 0, 1];
    datagram.extend_from_slice(&echo_addr.port().to_be_bytes());
    datagram.extend_from_slice(b"ping");
    let round_trip = |n: usize| {
        for _ in 0..n {
            client.send_to(&datagram, relay).unwrap();
            let mut buf = [0u8; 64];
            let (len, from) = echo.recv_from(&mut buf).expect("datagram at the echo");
            echo.send_to(&buf[..len], from).unwrap();
            let (len, _) = client.recv_from(&mut buf).expect("answer through the relay");
            assert_eq!(&buf[..len], &datagram[..]);
        }
    };
    round_trip(2);
    // Two fragments: dropped, and counted as such.
    let mut fragment = datagram.clone();
    fragment[2] = 1;
    for _ in 0..2 {
        client.send_to(&fragment, relay).unwrap();
    }
    let started = Instant::now();
    daemon.signal("-TERM");
    std::thread::sleep(Duration::from_millis(200));
    round_trip(1);
    let status = daemon.wait_exit(Duration::from_secs(5)).expect("exit after drain");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let log = daemon.log();
    let line = log.lines().find(|l| l.contains("cut: server stopping")).unwrap_or_else(|| panic!("no line:\n{log}"));
    for want in [
        "proto=\"socks5\"",
        "command=udp",
        "reply=0",
        "datagrams_up=3",
        "datagrams_down=3",
        "datagrams_dropped=2",
        "bytes_up=12",
        "bytes_down=12",
    ] {
        assert!(line.contains(want), "{want} missing in {line}");
    }
}
