//! One SOCKS request from a chosen source address inside a namespace (tests/py/socks_probe.py):
//! for tests that must control the client's address or send forged first bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::{Netns, RunOutput, run_with_timeout};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/py/socks_probe.py");

/// What to send.
#[derive(Debug, Clone, Default)]
pub struct Probe<'a> {
    /// 4 (SOCKS4 CONNECT, user id "probe") or 5 (no-auth CONNECT); 0 means 4.
    pub socks: u8,
    /// Raw bytes sent before the request (a forged PROXY protocol header, say).
    pub first: Option<&'a [u8]>,
    /// Sent after a granted reply; the answer is printed as `echo ...`.
    pub send: Option<&'a str>,
}

/// Runs the probe in `ns` from `source` through `proxy` to `dest`; its output says `reply CODE
/// ADDR`, `method FF` or `closed` (see the script). Bounded by 15 s.
pub fn socks_probe(ns: &Netns, source: IpAddr, proxy: SocketAddr, dest: SocketAddr, probe: &Probe) -> RunOutput {
    let mut cmd = ns.command("/usr/bin/python3");
    cmd.arg(SCRIPT)
        .arg(source.to_string())
        .arg(proxy.ip().to_string())
        .arg(proxy.port().to_string())
        .arg(dest.ip().to_string())
        .arg(dest.port().to_string())
        .args(["--socks", if probe.socks == 5 { "5" } else { "4" }])
        .env_remove("LD_PRELOAD");
    if let Some(first) = probe.first {
        cmd.arg("--first").arg(first.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    if let Some(send) = probe.send {
        cmd.arg("--send").arg(send);
    }
    run_with_timeout(&mut cmd, b"", Duration::from_secs(15))
}

/// The reply code a probe printed (`reply CODE ...`), or `None` for `closed`, `method FF` or
/// a failure.
pub fn probe_reply(out: &RunOutput) -> Option<u8> {
    out.stdout.lines().find_map(|l| l.strip_prefix("reply ")?.split(' ').next()?.parse().ok())
}

/// The local address the probe connected from (`local ADDR` line).
pub fn probe_local(out: &RunOutput) -> Option<SocketAddr> {
    out.stdout.lines().find_map(|l| l.strip_prefix("local ")?.parse().ok())
}
