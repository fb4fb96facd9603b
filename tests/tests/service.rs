//! socks4d as a service, with the freshly built binary: the sd_notify messages read from a
//! NOTIFY_SOCKET the test owns (a path and an abstract name), socket activation through
//! systemd-socket-activate, and the `user` key dropping root after the listeners are open.

mod service_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use service_support::*;
use socks4_server::privileges::User;
use socks4_tests::{ChildGuard, TempDir, free_port, run_with_timeout, socks4d_binary};

/// socks4d with `config` written to `dir`, stdout piped, stderr to `dir/stderr`.
fn socks4d_command(dir: &TempDir, config: &str) -> Command {
    let path = dir.join("socks4d.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(socks4d_binary());
    cmd.arg("--config")
        .arg(path)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    cmd
}

fn stderr_of(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
}

/// Waits up to 10 s for the child to exit.
fn wait_exit(child: &mut ChildGuard) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait() {
            return status;
        }
        assert!(Instant::now() < deadline, "{} still running 10 s after SIGTERM", child.name());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// READY once listening; RELOADING with the monotonic clock, then READY, around SIGHUP; STOPPING
/// on SIGTERM; STATUS counting live sessions. Both kinds of NOTIFY_SOCKET.
#[test]
fn sd_notify_messages_around_start_reload_and_stop() {
    for abstract_socket in [false, true] {
        let dir = TempDir::new("notify");
        let target = if abstract_socket {
            PathBuf::from(format!("@socks4-tests-notify-{}", std::process::id()))
        } else {
            dir.join("notify")
        };
        let notify = NotifySocket::bind(&target);
        let mut cmd = socks4d_command(&dir, &loopback_config("connect_timeout = \"30s\""));
        cmd.args(["--listen", "127.0.0.1:0"]).env("NOTIFY_SOCKET", &target);
        let mut child = ChildGuard::spawn("socks4d", &mut cmd);
        let addr: SocketAddr = child
            .stdout_line("listening ", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no listening line; stderr:\n{}", stderr_of(&dir)))
            .parse()
            .unwrap();
        let what = if abstract_socket { "abstract NOTIFY_SOCKET" } else { "NOTIFY_SOCKET path" };
        assert_eq!(notify.recv_event(), format!("READY=1\nSTATUS=listening on {addr}; 0 live sessions"), "{what}");

        // A live session: a BIND waiting for its connection.
        let mut bind = TcpStream::connect(addr).unwrap();
        bind.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        bind.write_all(b"\x04\x02\x00\x15\x7f\x00\x00\x01\0").unwrap();
        let mut first = [0u8; 8];
        bind.read_exact(&mut first).unwrap();
        assert_eq!(first[..2], [0, 90]);

        let before = monotonic_usec();
        signal(child.pid(), libc::SIGHUP);
        let reloading = notify.recv_event();
        let after = monotonic_usec();
        let usec: u64 = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: expected RELOADING=1 and MONOTONIC_USEC, got {reloading:?}"));
        assert!((before..=after).contains(&usec), "{what}: MONOTONIC_USEC {usec} not within {before}..={after}");
        assert_eq!(notify.recv_event(), format!("READY=1\nSTATUS=listening on {addr}; 1 live sessions"), "{what}");
        assert!(stderr_of(&dir).contains("SIGHUP: config reloaded"), "{}", stderr_of(&dir));

        if !abstract_socket {
            // The session ends: the periodic STATUS says so within its 5 s period.
            drop(bind);
            assert_eq!(notify.recv(), format!("STATUS=listening on {addr}; 0 live sessions"), "{what}");
            signal(child.pid(), libc::SIGTERM);
            assert_eq!(notify.recv_event(), "STOPPING=1\nSTATUS=draining 0 live sessions", "{what}");
        } else {
            signal(child.pid(), libc::SIGTERM);
            assert_eq!(notify.recv_event(), "STOPPING=1\nSTATUS=draining 1 live sessions", "{what}");
            drop(bind);
        }
        assert!(wait_exit(&mut child).success(), "{what}: {}", stderr_of(&dir));
    }
}

/// systemd-socket-activate opens the port and starts socks4d with it at the first client:
/// socks4d serves that socket, not its `listen` list, and the CONNECT lands where it should.
#[test]
fn socket_activation_serves_the_passed_socket() {
    let dest = Destination::start();
    // A `listen` that must not be used: with it, a second listening line would come out.
    let config = loopback_config("listen = [\"127.0.0.3:0\"]");
    for attempt in 1.. {
        let dir = TempDir::new("activate");
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let path = dir.join("socks4d.toml");
        std::fs::write(&path, &config).unwrap();
        let stdout = dir.join("stdout");
        let mut cmd = Command::new("systemd-socket-activate");
        cmd.args(["-l", &addr.to_string(), "-E", "RUST_LOG=info"])
            .arg(socks4d_binary())
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        let mut child = ChildGuard::spawn("systemd-socket-activate", &mut cmd);
        let listening = wait_for(|| stderr_of(&dir).contains(&format!("Listening on {addr} as 3.")));
        if !listening {
            assert!(attempt < 5, "systemd-socket-activate never listened on {addr}:\n{}", stderr_of(&dir));
            continue; // the free port was taken meanwhile
        }
        connect_through(addr, &dest);
        let log = stderr_of(&dir);
        assert!(log.contains("socket activation: serving the sockets passed by systemd"), "{log}");
        signal(child.pid(), libc::SIGTERM);
        assert!(wait_exit(&mut child).success(), "{}", stderr_of(&dir));
        assert_eq!(std::fs::read_to_string(&stdout).unwrap(), format!("listening {addr}\n"));
        return;
    }
}

/// True once `cond` holds, false after 10 s.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `key:` line of /proc/PID/task/TID/status, split into fields.
fn status_fields(status: &str, key: &str) -> Vec<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} line"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Started as root with `user = "nobody"` on a port below 1024: every thread ends up as nobody,
/// with nobody's group only and no capabilities, and socks4d still serves on that port.
#[test]
fn root_becomes_the_configured_user_after_listening() {
    // SAFETY: reading the effective uid.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (scripts/test runs as root)");
    let nobody = User::lookup("nobody").expect("user nobody");
    let dest = Destination::start();
    for attempt in 1.. {
        let dir = TempDir::new("user");
        let port = free_low_port();
        let mut cmd =
            socks4d_command(&dir, &loopback_config(&format!("listen = [\"127.0.0.1:{port}\"]\nuser = \"nobody\"")));
        let mut child = ChildGuard::spawn("socks4d", &mut cmd);
        let Some(addr) = child.stdout_line("listening ", Duration::from_secs(10)) else {
            assert!(attempt < 5, "socks4d did not start on port {port}:\n{}", stderr_of(&dir));
            continue;
        };
        assert_eq!(addr, format!("127.0.0.1:{port}"));
        let tasks: Vec<PathBuf> =
            std::fs::read_dir(format!("/proc/{}/task", child.pid())).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(tasks.len() > 1, "expected session threads besides the main one");
        for task in &tasks {
            let status = std::fs::read_to_string(task.join("status")).unwrap();
            let (uid, gid) = (nobody.uid.to_string(), nobody.gid.to_string());
            assert_eq!(status_fields(&status, "Uid:"), vec![uid; 4], "{}", task.display());
            assert_eq!(status_fields(&status, "Gid:"), vec![gid; 4], "{}", task.display());
            assert_eq!(status_fields(&status, "Groups:"), Vec::<String>::new(), "{}", task.display());
            for caps in ["CapPrm:", "CapEff:"] {
                assert_eq!(status_fields(&status, caps), ["0000000000000000"], "{caps} {}", task.display());
            }
        }
        connect_through(addr.parse().unwrap(), &dest);
        assert!(stderr_of(&dir).contains("running as user"), "{}", stderr_of(&dir));
        return;
    }
}

fn check(config: &str) -> socks4_tests::RunOutput {
    let dir = TempDir::new("user-check");
    let path = dir.join("socks4d.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(socks4d_binary());
    cmd.arg("--check").arg("--config").arg(&path);
    run_with_timeout(&mut cmd, b"", Duration::from_secs(20))
}

/// `--check` shows the user and its ids; an unknown user is a config error naming file, line and
/// key; and a daemon not started as root refuses to run as someone else (fail closed).
#[test]
fn user_key_is_checked_and_fails_closed() {
    let nobody = User::lookup("nobody").expect("user nobody");
    let out = check("log = \"info\"\nuser = \"nobody\"\n");
    assert!(out.success(), "{out}");
    let shown = format!("user = \"nobody\"  # uid {}, gid {}\n", nobody.uid, nobody.gid);
    assert!(out.stdout.contains(&shown), "{out}");

    let out = check("log = \"info\"\nuser = \"no-such-user-socks4d\"\n");
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out}");
    assert!(out.stderr.contains("socks4d.toml:2: user: no such user \"no-such-user-socks4d\""), "{out}");

    let dir = TempDir::new("user-not-root");
    let path = dir.join("socks4d.toml");
    std::fs::write(&path, loopback_config("user = \"root\"")).unwrap();
    let mut cmd = Command::new(socks4d_binary());
    cmd.arg("--config").arg(&path).args(["--listen", "127.0.0.1:0"]);
    std::os::unix::process::CommandExt::uid(&mut cmd, nobody.uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, nobody.gid);
    let out = run_with_timeout(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(out.stderr.contains("not root"), "{out}");
    assert!(!out.stdout.contains("listening"), "it must not serve as the wrong user: {out}");
}
