//! socks4-run: runs a program with libsocks4.so preloaded and the SOCKS settings in its environment.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

use socks4_shim::launcher;

/// Run PROGRAM so that its TCP connections go through a SOCKS4 server and its listening sockets
/// become SOCKS4 BIND requests.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// SOCKS4 server as host:port (sets SOCKS4_SERVER).
    #[arg(long, value_name = "HOST:PORT")]
    server: Option<String>,
    /// User id sent in requests (sets SOCKS4_USER).
    #[arg(long)]
    user: Option<String>,
    /// Configuration file (sets SOCKS4_CONF).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One stderr line per decision (sets SOCKS4_DEBUG=1).
    #[arg(long)]
    debug: bool,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "PROGRAM ARGS")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    let Some(lib) = exe_dir.as_deref().and_then(launcher::find_library) else {
        eprintln!("socks4-run: cannot find {} next to this program, in deps/ or ../lib/", launcher::LIBRARY);
        return ExitCode::from(127);
    };
    let path_var = std::env::var_os("PATH");
    for warning in launcher::warnings(&args.command[0], path_var.as_deref()) {
        eprintln!("socks4-run: warning: {warning}");
    }
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    cmd.env("LD_PRELOAD", launcher::preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref()));
    if let Some(server) = args.server {
        cmd.env("SOCKS4_SERVER", server);
    }
    if let Some(user) = args.user {
        cmd.env("SOCKS4_USER", user);
    }
    if let Some(config) = args.config {
        cmd.env("SOCKS4_CONF", config);
    }
    if args.debug {
        cmd.env("SOCKS4_DEBUG", "1");
    }
    let err = cmd.exec();
    eprintln!("socks4-run: cannot run {}: {err}", args.command[0].to_string_lossy());
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}
