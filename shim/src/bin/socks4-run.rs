//! socks4-run: runs a program with libsocks4.so preloaded and the SOCKS settings in its environment.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

// Compiled in rather than taken from the socks4 rlib: linking the rlib would also link the
// exported hooks into this launcher, which would then intercept its own calls.
#[path = "../launcher.rs"]
mod launcher;

#[path = "../cli.rs"]
mod cli;

use cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    let Some(lib) = exe_dir.as_deref().and_then(launcher::find_library) else {
        eprintln!(
            "socks4-run: cannot find {} next to this program, in deps/, ../lib/ or the system's library directory",
            launcher::LIBRARY
        );
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
