//! Runs microsocks (a small SOCKS5-only server, optionally with a username/password) for the
//! upstream tests.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ChildGuard, Netns};

/// Where microsocks listens and what it asks of clients.
#[derive(Clone)]
pub struct MicrosocksOptions<'a> {
    /// Run inside this network namespace.
    pub netns: &'a Netns,
    /// Listening address.
    pub listen: IpAddr,
    pub port: u16,
    /// Source address of its outgoing connections (`-b`); None: the kernel's choice.
    pub bind: Option<IpAddr>,
    /// Require this username and password (RFC 1929).
    pub login: Option<(&'a str, &'a str)>,
}

/// A running microsocks; `Drop` kills it by PID.
pub struct Microsocks {
    pub addr: SocketAddr,
    child: ChildGuard,
}

impl Microsocks {
    /// Starts microsocks with `opts` and waits until it accepts connections.
    ///
    /// # Panics
    /// When it does not come up within 10 s.
    pub fn start(opts: &MicrosocksOptions<'_>) -> Microsocks {
        let addr = SocketAddr::new(opts.listen, opts.port);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", opts.netns.name(), "/usr/bin/microsocks"]).args([
            "-i",
            &opts.listen.to_string(),
            "-p",
            &opts.port.to_string(),
        ]);
        if let Some(bind) = opts.bind {
            cmd.args(["-b", &bind.to_string()]);
        }
        if let Some((user, password)) = opts.login {
            // A test server's password on its command line: nothing here is secret.
            cmd.args(["-u", user, "-P", password]);
        }
        cmd.env_remove("LD_PRELOAD").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = ChildGuard::spawn("microsocks", &mut cmd);
        if !Netns::wait_for_tcp_in(opts.netns.name(), addr, Duration::from_secs(10)) {
            let status = child.stop();
            panic!("microsocks on {addr} in {} did not come up (exit: {status:?})", opts.netns.name());
        }
        Microsocks { addr, child }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}
