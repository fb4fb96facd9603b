//! Commands that run a program under Dante's socksify (dante-client), the reference SOCKS client.

use std::net::SocketAddr;
use std::process::Command;

use crate::TempDir;

/// `socksify program` routed through the SOCKS4 server at `proxy` for every destination,
/// CONNECT and BIND, with its socks.conf written into `dir` (keep `dir` alive while it runs).
pub fn socksify_command(program: &str, proxy: SocketAddr, dir: &TempDir) -> Command {
    socksify_command_with(program, proxy, dir, "socks_v4")
}

/// As [`socksify_command`], speaking `protocol` (`socks_v4` or `socks_v5`; SOCKS5 offering
/// no authentication only: Dante's client would otherwise offer username/password too and
/// prompt for a password on the terminal).
pub fn socksify_command_with(program: &str, proxy: SocketAddr, dir: &TempDir, protocol: &str) -> Command {
    let conf = dir.join("socks.conf");
    let log = dir.join("socksify.log");
    std::fs::write(
        &conf,
        format!(
            "route {{
  from: 0.0.0.0/0 to: 0.0.0.0/0 via: {ip} port = {port}
  proxyprotocol: {protocol}{method}
  command: connect bind bindreply
}}
",
            // Dante 1.4's client calls it `method` (its server says `socksmethod`).
            method = if protocol == "socks_v5" { "\n  method: none" } else { "" },
            ip = proxy.ip(),
            port = proxy.port()
        ),
    )
    .expect("write socks.conf");
    let mut cmd = Command::new("/usr/bin/socksify");
    cmd.arg(program)
        .env("SOCKS_CONF", &conf)
        // Otherwise socksify adds direct routes for the local networks, 127.0.0.0/8 included,
        // and nothing would go through the proxy.
        .env("SOCKS_AUTOADD_LANROUTES", "no")
        .env("SOCKS_LOGOUTPUT", &log)
        .env_remove("SOCKS_SERVER")
        .env_remove("SOCKS4_SERVER")
        .env_remove("SOCKS5_SERVER")
        .env_remove("LD_PRELOAD");
    cmd
}
