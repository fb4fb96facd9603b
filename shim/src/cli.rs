//! socks4-run's command line, in the library so that the man page generator (scripts/manpages)
//! renders socks4-run(1) from the very definitions the launcher parses.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

/// Run a program with its connections going through a SOCKS4 server.
///
/// Runs PROGRAM so that its TCP connections go through a SOCKS4 server and its listening sockets
/// become SOCKS4 BIND requests: with libsocks4.so preloaded for dynamically linked programs, under
/// the seccomp supervisor for static ones (Go, busybox) or with --supervise.
#[derive(Parser)]
#[command(name = "socks4-run", version)]
pub struct Args {
    /// SOCKS4 server as host:port (sets SOCKS4_SERVER).
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// User id sent in requests (sets SOCKS4_USER).
    #[arg(long)]
    pub user: Option<String>,
    /// Configuration file (sets SOCKS4_CONF).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One stderr line per decision (sets SOCKS4_DEBUG=1).
    #[arg(long)]
    pub debug: bool,
    /// Use the seccomp supervisor whatever the program is (default: for static programs only).
    #[arg(long, conflicts_with = "preload")]
    pub supervise: bool,
    /// Use LD_PRELOAD whatever the program is (a static program is then NOT socksified).
    #[arg(long)]
    pub preload: bool,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "PROGRAM ARGS")]
    pub command: Vec<OsString>,
}
