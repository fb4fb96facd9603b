//! The Debian package, for real: scripts/package builds it from this tree (release build, man
//! pages, cargo-deb), `dpkg -i` installs it on this machine (root on a throwaway machine), and
//! the installed files are checked where they belong and in use: the shipped config, the man
//! pages, the systemd units (systemd-analyze verify, and every system call and address family
//! socks4d uses allowed by the service's filters), socks4-run finding the installed library. The
//! package is purged at the end, also when a check fails; a lock file keeps two test runs on one
//! machine from installing at once.

mod service_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use service_support::*;
use socks4_server::Config;
use socks4_server::rules::Action;
use socks4_tests::{ChildGuard, RunOutput, TempDir, run_with_timeout};

const PACKAGE: &str = "socks4";
const SERVICE: &str = "/usr/lib/systemd/system/socks4d.service";
const SOCKET: &str = "/usr/lib/systemd/system/socks4d.socket";

/// An exclusive lock on a file shared by every test run on this machine; waits up to 30 min
/// (a package build of another run may hold it that long). Held while the file is open.
struct MachineLock {
    _file: File,
}

impl MachineLock {
    fn acquire() -> MachineLock {
        let file = File::create("/tmp/socks4-tests-package.lock").expect("create the lock file");
        let deadline = Instant::now() + Duration::from_secs(30 * 60);
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return MachineLock { _file: file };
            }
            assert!(Instant::now() < deadline, "another test run held the package lock for 30 min");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The installed package; dropping it purges it (binaries, and the conffile too, so the next
/// run starts from the same state).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = run_with_timeout(Command::new("dpkg").args(["--purge", PACKAGE]), b"", Duration::from_secs(120));
        if !out.success() {
            eprintln!("dpkg --purge {PACKAGE} failed:\n{out}");
        }
    }
}

fn run(cmd: &mut Command, timeout: Duration) -> RunOutput {
    let out = run_with_timeout(cmd, b"", timeout);
    assert!(out.success(), "{cmd:?}:\n{out}");
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs scripts/package; returns the .deb it printed, checked to be written by this run.
fn build_package() -> PathBuf {
    let started = SystemTime::now() - Duration::from_secs(2);
    let out = run(&mut Command::new(repo().join("scripts/package")), Duration::from_secs(25 * 60));
    let deb = PathBuf::from(out.stdout.lines().last().expect("scripts/package printed the .deb").trim());
    let written = std::fs::metadata(&deb).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("{deb:?}: {e}"));
    assert!(written >= started, "{} is older than this run: stale", deb.display());
    deb
}

#[test]
fn debian_package_installs_and_works() {
    let _lock = MachineLock::acquire();
    let deb = build_package();
    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb).env("DEBIAN_FRONTEND", "noninteractive"), Duration::from_secs(300));

    files_where_they_belong();
    shipped_config_is_loopback_only();
    man_pages_render();
    units_verify();
    socks4_run_finds_the_installed_library();
    service_filters_allow_what_socks4d_uses();
}

fn files_where_they_belong() {
    let multiarch = run(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"), Duration::from_secs(30));
    let multiarch = multiarch.stdout.trim();
    let listed = run(Command::new("dpkg").args(["-L", PACKAGE]), Duration::from_secs(30));
    let files: BTreeSet<&str> = listed.stdout.lines().filter(|p| Path::new(p).is_file()).collect();
    let lib = format!("/usr/lib/{multiarch}/libsocks4.so");
    let expected: BTreeSet<&str> = [
        "/usr/sbin/socks4d",
        "/usr/bin/socks4-run",
        &lib,
        "/usr/share/man/man8/socks4d.8.gz",
        "/usr/share/man/man1/socks4-run.1.gz",
        "/usr/share/man/man5/socks4d.toml.5.gz",
        "/usr/share/man/man8/libsocks4.8.gz",
        "/etc/socks4d.toml",
        SERVICE,
        SOCKET,
        "/usr/share/doc/socks4/README.md",
        "/usr/share/doc/socks4/copyright",
    ]
    .into_iter()
    .collect();
    assert_eq!(files, expected, "dpkg -L {PACKAGE}");
    for exe in ["/usr/sbin/socks4d", "/usr/bin/socks4-run"] {
        assert_eq!(std::fs::metadata(exe).unwrap().permissions().mode() & 0o777, 0o755, "{exe}");
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]), Duration::from_secs(30));
    assert!(conffiles.stdout.trim_start().starts_with("/etc/socks4d.toml "), "conffiles: {:?}", conffiles.stdout);
    // The man pages are found by name, in the man path.
    for (name, path) in
        [("socks4d.toml", "/usr/share/man/man5/socks4d.toml.5.gz"), ("libsocks4", "/usr/share/man/man8/libsocks4.8.gz")]
    {
        assert_eq!(run(Command::new("man").args(["-w", name]), Duration::from_secs(30)).stdout.trim(), path);
    }
}

/// `socks4d --check` passes on /etc/socks4d.toml, and the file listens on loopback and allows
/// loopback clients only.
fn shipped_config_is_loopback_only() {
    let out = run(
        Command::new("/usr/sbin/socks4d").args(["--check", "--config", "/etc/socks4d.toml"]),
        Duration::from_secs(30),
    );
    assert!(out.stdout.starts_with("# socks4d: configuration OK (/etc/socks4d.toml)\n"), "{out}");
    let config = Config::load(Path::new("/etc/socks4d.toml")).unwrap();
    assert!(config.listen.iter().all(|a| a.ip().is_loopback()), "{:?}", config.listen);
    assert!(config.user.is_none(), "the unit runs socks4d as a dynamic user: no `user` key");
    for rule in config.rules.rules.iter().filter(|r| r.action == Action::Allow) {
        for net in &rule.from {
            assert!(net.network().is_loopback() && net.broadcast().is_loopback(), "allow from {net}");
        }
    }
}

/// Each page renders at 80 columns without a groff warning and has the content it should.
fn man_pages_render() {
    for (page, wanted) in [
        ("man8/socks4d.8.gz", &["OPTIONS", "--check", "SIGHUP", "socket activation"][..]),
        ("man1/socks4-run.1.gz", &["OPTIONS", "--server", "libsocks4(8)"][..]),
        ("man5/socks4d.toml.5.gz", &["max_connections", "ACCESS CONTROL", "user"][..]),
        ("man8/libsocks4.8.gz", &["SOCKS4_SERVER", "ERRNO TABLE", "ECONNREFUSED"][..]),
    ] {
        let path = format!("/usr/share/man/{page}");
        let out = run(
            Command::new("man").args(["--warnings", "-l", &path]).env("MANWIDTH", "80").env("LC_ALL", "C.UTF-8"),
            Duration::from_secs(60),
        );
        assert_eq!(out.stderr, "", "{path}: groff warnings");
        for w in wanted {
            assert!(out.stdout.contains(w), "{path} lacks {w:?}:\n{}", out.stdout);
        }
        assert!(out.stdout.lines().all(|l| l.chars().count() <= 80), "{path}: a line over 80 columns");
    }
}

/// systemd-analyze verify passes on both installed units without a word (it also checks that
/// ExecStart exists and that the Documentation= man pages are installed), and the service's
/// exposure score stays low.
fn units_verify() {
    let out = run(Command::new("systemd-analyze").args(["verify", SERVICE, SOCKET]), Duration::from_secs(60));
    assert_eq!(out.stderr, "", "systemd-analyze verify");
    let out =
        run(Command::new("systemd-analyze").args(["security", "--offline=yes", SERVICE]), Duration::from_secs(60));
    let all = format!("{}{}", out.stdout, out.stderr);
    let score: f64 = all
        .lines()
        .find_map(|l| l.split("Overall exposure level for socks4d.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level:\n{all}"));
    assert!(score <= 2.0, "exposure {score} (systemd calls up to 2.0 OK):\n{all}");
}

/// /usr/sbin/socks4d with a loopback config on a free port.
fn start_installed_socks4d(dir: &TempDir, config: &str, wrapper: &[&str]) -> (ChildGuard, SocketAddr) {
    let path = dir.join("socks4d.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(wrapper.first().copied().unwrap_or("/usr/sbin/socks4d"));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg("/usr/sbin/socks4d");
    }
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(dir.join("stderr")).unwrap());
    let mut child = ChildGuard::spawn("socks4d", &mut cmd);
    let addr = child.stdout_line("listening ", Duration::from_secs(20)).unwrap_or_else(|| {
        panic!("no listening line:\n{}", std::fs::read_to_string(dir.join("stderr")).unwrap_or_default())
    });
    (child, addr.parse().unwrap())
}

/// socks4-run from /usr/bin preloads /usr/lib/<multiarch>/libsocks4.so, and a program run
/// through it reaches its destination through the installed socks4d.
fn socks4_run_finds_the_installed_library() {
    let dir = TempDir::new("package-run");
    let (_socks4d, proxy) = start_installed_socks4d(&dir, &loopback_config(""), &[]);
    let dest = Destination::start();
    let script = "import os, socket, sys\n\
                  print(os.environ['LD_PRELOAD'])\n\
                  s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
                  s.sendall(b'ping')\n\
                  print(s.recv(4).decode())\n";
    let mut cmd = Command::new("/usr/bin/socks4-run");
    cmd.args(["--server", &proxy.to_string(), "--", "/usr/bin/python3", "-c", script, &dest.addr.port().to_string()])
        .current_dir("/")
        .env("SOCKS4_DIRECT", "") // the destination is on loopback: proxy it all the same
        .env_remove("LD_PRELOAD")
        .env_remove("LD_LIBRARY_PATH");
    let out = run(&mut cmd, Duration::from_secs(30));
    let multiarch = run(Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"), Duration::from_secs(30));
    assert_eq!(out.stdout, format!("/usr/lib/{}/libsocks4.so\nping\n", multiarch.stdout.trim()), "{out}");
    assert_eq!(dest.next_peer().ip(), EXTERNAL, "the destination must see the proxy's external address");
}

/// The system calls and socket address families the installed socks4d uses while serving
/// (CONNECT with data both ways through splice, a SOCKS4A name, BIND, SIGHUP, drain), traced
/// with strace, are all allowed by socks4d.service's SystemCallFilter= and
/// RestrictAddressFamilies=: the hardening cannot break it.
fn service_filters_allow_what_socks4d_uses() {
    let dir = TempDir::new("package-strace");
    let trace = dir.join("trace");
    let trace_arg = trace.to_str().unwrap().to_string();
    let (mut child, proxy) =
        start_installed_socks4d(&dir, &loopback_config(""), &["strace", "-f", "-qq", "-o", &trace_arg]);
    let dest = Destination::start();
    connect_through(proxy, &dest);
    // SOCKS4A: the name is resolved on a blocking thread (getaddrinfo).
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = vec![4, 1];
    req.extend_from_slice(&dest.addr.port().to_be_bytes());
    req.extend_from_slice(b"\0\0\0\x01\0localhost\0");
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [0, 90]);
    // BIND with its connection.
    let mut b = TcpStream::connect(proxy).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    b.write_all(b"\x04\x02\x00\x00\x00\x00\x00\x00\0").unwrap();
    b.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [0, 90]);
    let bound = SocketAddr::from(([reply[4], reply[5], reply[6], reply[7]], u16::from_be_bytes([reply[2], reply[3]])));
    let _peer = TcpStream::connect(bound).unwrap();
    b.read_exact(&mut reply).unwrap();
    assert_eq!(reply[..2], [0, 90]);
    drop((s, b));
    signal(child.pid(), libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    // socks4d is strace's child: the trace's first line (its execve) names it. SIGTERM to strace
    // would only detach it, so socks4d gets it, and strace ends with it.
    let first = std::fs::read_to_string(&trace).unwrap();
    let socks4d_pid: u32 = first.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a traced pid");
    signal(socks4d_pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().is_none() {
        assert!(Instant::now() < deadline, "socks4d under strace still running 20 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }

    let trace = std::fs::read_to_string(&trace).unwrap();
    let mut used = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in trace.lines() {
        let rest = line.split_once(' ').map_or("", |(_, r)| r.trim_start());
        let (rest, resumed) = match rest.strip_prefix("<... ") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let after = &rest[name.len()..];
        if name.is_empty() || !(after.starts_with('(') || after.starts_with(" resumed>")) {
            continue; // signals, exits
        }
        if name == "socket" && !resumed {
            families.insert(after[1..].split(',').next().unwrap_or("").to_string());
        }
        used.insert(name);
    }
    assert!(used.contains("splice") && used.contains("accept4"), "the trace missed the relay: {used:?}");
    // The filters as the installed unit states them: allow lines, then `~` deny lines.
    let unit = std::fs::read_to_string(SERVICE).unwrap();
    let values = |key: &str| -> Vec<String> {
        let prefix = format!("{key}=");
        unit.lines().filter_map(|l| l.strip_prefix(&prefix)).map(String::from).collect()
    };
    let groups = syscall_groups();
    let expand = |items: &str| -> BTreeSet<String> {
        items
            .split_whitespace()
            .flat_map(|i| if i.starts_with('@') { expand_group(&groups, i) } else { BTreeSet::from([i.to_string()]) })
            .collect()
    };
    let filters = values("SystemCallFilter");
    assert!(!filters.is_empty(), "{SERVICE} has no SystemCallFilter=");
    let allowed: BTreeSet<String> = filters.iter().filter(|f| !f.starts_with('~')).flat_map(|f| expand(f)).collect();
    let denied: BTreeSet<String> = filters.iter().filter_map(|f| f.strip_prefix('~')).flat_map(expand).collect();
    let blocked: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s) || denied.contains(*s)).collect();
    assert!(blocked.is_empty(), "socks4d uses system calls socks4d.service forbids: {blocked:?}");
    let allowed_families: BTreeSet<String> =
        values("RestrictAddressFamilies").iter().flat_map(|v| v.split_whitespace().map(String::from)).collect();
    assert!(families.is_subset(&allowed_families), "address families {families:?}, allowed {allowed_families:?}");
}

/// Every group `systemd-analyze syscall-filter` prints, with its members (system calls and
/// nested @groups).
fn syscall_groups() -> BTreeMap<String, Vec<String>> {
    let out = run(Command::new("systemd-analyze").arg("syscall-filter"), Duration::from_secs(30));
    let mut groups = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.stdout.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.insert(line.trim().to_string(), Vec::new());
        } else if let Some(g) = &current {
            let item = line.trim();
            if !item.is_empty() && !item.starts_with('#') {
                groups.get_mut(g).expect("inserted").push(item.to_string());
            }
        }
    }
    groups
}

fn expand_group(groups: &BTreeMap<String, Vec<String>>, group: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for item in groups.get(group).unwrap_or_else(|| panic!("no syscall group {group}")) {
        if item.starts_with('@') {
            out.extend(expand_group(groups, item));
        } else {
            out.insert(item.clone());
        }
    }
    out
}
