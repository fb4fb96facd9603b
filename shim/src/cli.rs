//! socks4-run's command line, in the library so that the man page generator (scripts/manpages)
//! renders socks4-run(1) from the very definitions the launcher parses.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

/// Run a program with its connections going through SOCKS servers.
///
/// Runs PROGRAM so that its TCP connections go through SOCKS servers (SOCKS4/4A or SOCKS5, chosen
/// per destination by the routes of the configuration, with failover and chains) and its
/// listening sockets become SOCKS BIND requests: with libsocks4.so preloaded for dynamically
/// linked programs, under the seccomp supervisor for static ones (Go, busybox) or with
/// --supervise.
#[derive(Parser)]
#[command(name = "socks4-run", version)]
pub struct Args {
    /// The default route: a SOCKS server URL (socks4://, socks4a://, socks5://[user@], socks5h://,
    /// or host:port for SOCKS4), or several separated by commas, tried in order (failover); or
    /// "direct" / "block". Sets SOCKS4_SERVER. No passwords here (ps shows them): use
    /// --password-file, SOCKS4_PASSWORD or the config file.
    #[arg(long, value_name = "URL[,URL...]")]
    pub server: Option<String>,
    /// The password of SOCKS5 servers whose URL names a user: the first line of FILE (sets
    /// SOCKS4_PASSWORD_FILE).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// SOCKS4 user id sent in requests (sets SOCKS4_USER).
    #[arg(long)]
    pub user: Option<String>,
    /// Configuration file (sets SOCKS4_CONF).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// One stderr line per connection: its destination and the upstream that carried it, or
    /// direct (sets SOCKS4_DEBUG=1).
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
