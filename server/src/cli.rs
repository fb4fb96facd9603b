//! socks4d's command line, in the library so that the man page generator
//! (scripts/manpages) renders the very definitions the binary parses.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// A SOCKS4/4A and SOCKS5 server with access control by client,
/// destination, port, user id, login and IDENT.
///
/// Without --config: listens on 127.0.0.1:1080 and serves loopback clients
/// only.
#[derive(Parser, Debug)]
#[command(
    name = "socks4d",
    version,
    after_help = "Signals: SIGHUP reloads the config file (listeners stay); \
SIGTERM/SIGINT stop accepting and drain live sessions for drain_timeout (a second one: at once).\n\
Logs go to stderr; RUST_LOG overrides the config's `log` level."
)]
pub struct Args {
    /// TOML configuration file (see socks4d.toml(5)).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, instead of the config's `listen` (repeatable).
    #[arg(long, short, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Validate the configuration, print the effective settings and rules, and exit.
    #[arg(long)]
    pub check: bool,
}
