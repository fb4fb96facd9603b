//! socks4d: thin binary over the socks4-server library (flags, config,
//! logging, then `run_daemon`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use socks4_server::Config;
use socks4_server::cli::Args;
use socks4_server::systemd::Systemd;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

fn main() -> ExitCode {
    // SAFETY: first thing in main, before any thread exists.
    let systemd = match unsafe { Systemd::take_from_env() } {
        Ok(s) => s,
        Err(e) => {
            eprintln!("socks4d: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("socks4d: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if args.check {
        let source = args.config.as_ref().map_or("built-in default".to_string(), |p| p.display().to_string());
        println!("# socks4d: configuration OK ({source})");
        print!("{config}");
        return ExitCode::SUCCESS;
    }

    // RUST_LOG, when set, wins over the config's `log`, also across reloads.
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let (filter, filter_handle) = reload::Layer::new(from_env.unwrap_or_else(|| EnvFilter::new(&config.log)));
    // Colour only for a person at a terminal; log files stay plain text.
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
        .init();
    let on_reload = move |config: &Config| {
        if !pinned {
            let _ = filter_handle.modify(|f| *f = EnvFilter::new(&config.log));
        }
    };

    // Sessions get threads of their own (run_daemon); this runtime only
    // handles signals, reloads and the drain: one thread is plenty.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("socks4d: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(socks4_server::run_daemon(config, args.config, args.listen, systemd, on_reload));
    // A name lookup still running on a blocking thread must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socks4d: {e}");
            ExitCode::FAILURE
        }
    }
}
