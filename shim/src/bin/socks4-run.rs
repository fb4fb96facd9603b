//! socks4-run: runs a program so that its connections go through SOCKS servers (SOCKS4/4A or
//! SOCKS5, per route, with failover and chains), with libsocks4.so preloaded (dynamic programs) or
//! under the seccomp supervisor (static programs, Go, or any program with --supervise).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;

use socks4_shim::cli::Args;
use socks4_shim::launcher::{self, Mode};
use socks4_shim::supervisor;
use socks4_shim::upstream::Url;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut settings = Vec::new();
    if let Some(server) = &args.server {
        // The whole command line is readable by every user of the machine (ps, /proc).
        if let Some(url) = server.split(',').filter_map(|u| Url::parse(u).ok()).find(|u| u.password.is_some()) {
            eprintln!(
                "socks4-run: --server {url}: a password on the command line is visible to every user (ps); \
                 use --password-file FILE, SOCKS4_PASSWORD or the config file"
            );
            return ExitCode::from(2);
        }
        settings.push(("SOCKS4_SERVER", OsString::from(server)));
    }
    if let Some(file) = &args.password_file {
        settings.push(("SOCKS4_PASSWORD_FILE", file.clone().into_os_string()));
    }
    if let Some(user) = &args.user {
        settings.push(("SOCKS4_USER", OsString::from(user)));
    }
    if let Some(config) = &args.config {
        settings.push(("SOCKS4_CONF", config.clone().into_os_string()));
    }
    if args.debug {
        settings.push(("SOCKS4_DEBUG", OsString::from("1")));
    }
    let path_var = std::env::var_os("PATH");
    let forced = match (args.supervise, args.preload) {
        (true, _) => Some(Mode::Supervise),
        (_, true) => Some(Mode::Preload),
        _ => None,
    };
    let mode = forced.unwrap_or_else(|| launcher::pick_mode(&args.command[0], path_var.as_deref()));
    match mode {
        Mode::Supervise => supervise(&args.command, &settings, path_var.as_deref()),
        Mode::Preload => preload(&args.command, &settings, path_var.as_deref()),
    }
}

fn preload(command: &[OsString], settings: &[(&str, OsString)], path_var: Option<&std::ffi::OsStr>) -> ExitCode {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    let Some(lib) = exe_dir.as_deref().and_then(launcher::find_library) else {
        eprintln!(
            "socks4-run: cannot find {} next to this program, in deps/, ../lib/ or the system's library directory",
            launcher::LIBRARY
        );
        return ExitCode::from(127);
    };
    for warning in launcher::warnings(&command[0], path_var) {
        eprintln!("socks4-run: warning: {warning}");
    }
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    cmd.env("LD_PRELOAD", launcher::preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref()));
    cmd.envs(settings.iter().map(|(k, v)| (k, v)));
    let err = cmd.exec();
    eprintln!("socks4-run: cannot run {}: {err}", command[0].to_string_lossy());
    ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
}

fn supervise(command: &[OsString], settings: &[(&str, OsString)], path_var: Option<&std::ffi::OsStr>) -> ExitCode {
    let Some(path) = launcher::resolve_program(&command[0], path_var) else {
        eprintln!("socks4-run: cannot run {}: not found", command[0].to_string_lossy());
        return ExitCode::from(127);
    };
    for (key, value) in settings {
        // SAFETY: no other thread exists yet (the supervisor starts its threads later), so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var(key, value) };
    }
    let cstring = |s: &[u8]| CString::new(s).ok();
    let exec = (|| {
        Some(supervisor::Exec {
            path: cstring(path.as_os_str().as_bytes())?,
            argv: command.iter().map(|a| cstring(a.as_bytes())).collect::<Option<_>>()?,
            envp: std::env::vars_os()
                .map(|(k, v)| {
                    let mut kv = k;
                    kv.push("=");
                    kv.push(v);
                    cstring(kv.as_bytes())
                })
                .collect::<Option<_>>()?,
        })
    })();
    let Some(exec) = exec else {
        eprintln!("socks4-run: an argument or environment variable contains a NUL byte");
        return ExitCode::from(126);
    };
    ExitCode::from(supervisor::run(&exec).clamp(0, 255) as u8)
}
