//! Commands that run a program under libsocks4.so (directly via LD_PRELOAD, or via socks4-run).

use std::net::SocketAddr;
use std::process::Command;

use crate::binaries;

/// The environment that points the shim at `proxy` and sends everything through it.
pub fn shim_env(proxy: SocketAddr) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), binaries().shim.display().to_string()),
        ("SOCKS4_SERVER".into(), proxy.to_string()),
        // Empty: no destination is direct, not even loopback, so the tests see the proxy.
        ("SOCKS4_DIRECT".into(), String::new()),
    ]
}

/// `program` with LD_PRELOAD=libsocks4.so, SOCKS4_SERVER=proxy, SOCKS4_DIRECT="" and no
/// SOCKS4_USER.
pub fn shim_command(program: &str, proxy: SocketAddr) -> Command {
    let mut cmd = Command::new(program);
    cmd.envs(shim_env(proxy)).env_remove("SOCKS4_USER");
    cmd
}

/// `socks4-run --server proxy -- program` (the launcher sets LD_PRELOAD itself), with
/// SOCKS4_DIRECT="" and no SOCKS4_USER.
pub fn socks4_run_command(program: &str, proxy: SocketAddr) -> Command {
    let mut cmd = Command::new(&binaries().socks4_run);
    cmd.env("SOCKS4_DIRECT", "")
        .env_remove("SOCKS4_SERVER")
        .env_remove("SOCKS4_USER")
        .env_remove("LD_PRELOAD")
        .arg("--server")
        .arg(proxy.to_string())
        .arg("--")
        .arg(program);
    cmd
}

/// `socks4-run --supervise --server proxy -- program` (the seccomp supervisor whatever the
/// program), with SOCKS4_DIRECT="" and no SOCKS4_USER.
pub fn supervise_command(program: &str, proxy: SocketAddr) -> Command {
    let mut cmd = Command::new(&binaries().socks4_run);
    cmd.env("SOCKS4_DIRECT", "")
        .env_remove("SOCKS4_SERVER")
        .env_remove("SOCKS4_USER")
        .env_remove("LD_PRELOAD")
        .arg("--supervise")
        .arg("--server")
        .arg(proxy.to_string())
        .arg("--")
        .arg(program);
    cmd
}
