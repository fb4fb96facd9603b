//! `loadgen`: parses flags, runs one measurement, prints it as one JSON line
//! on stdout for scripts/bench to collect.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use socks4_loadgen::proxy::Proxy;
use socks4_loadgen::{handshake, hold, rss, throughput, udp};

#[derive(Parser)]
#[command(about = "Load generator for scripts/bench (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N streams push data through the proxy into a local sink for T seconds.
    Throughput {
        /// `direct`, `socks4://IP:PORT` or `socks5://IP:PORT`.
        #[arg(long)]
        proxy: Proxy,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Copied into the output line, to name the server.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Sequential CONNECT handshakes: rate and latency percentiles.
    Handshake {
        #[arg(long)]
        proxy: Proxy,
        #[arg(long, default_value_t = 5000)]
        count: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Stop measuring after this long even if `count` is not reached.
        #[arg(long, default_value_t = 30.0)]
        max_seconds: f64,
        /// Connect from this many source addresses, 127.0.0.2 and up (1-250).
        #[arg(long, default_value_t = 64)]
        sources: usize,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Open N idle relays, print a line, wait for a line on stdin (or its
    /// end), close them all, print a line.
    Hold {
        #[arg(long)]
        proxy: Proxy,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        parallel: usize,
        #[arg(long, default_value_t = 60.0)]
        max_seconds: f64,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Datagrams per second through a SOCKS5 UDP association (or direct) to
    /// a local UDP echo, `window` in flight.
    Udp {
        /// `direct` or `socks5://IP:PORT`.
        #[arg(long)]
        proxy: Proxy,
        #[arg(long, default_value_t = 32)]
        window: usize,
        /// Payload bytes per datagram.
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Memory (RSS and PSS, KiB) of these processes and all their descendants.
    Rss {
        #[arg(required = true)]
        pids: Vec<u32>,
        #[arg(long, default_value = "")]
        label: String,
    },
}

/// A JSON string literal; labels come from our own script but may hold
/// anything.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn emit(line: String) {
    let mut out = std::io::stdout().lock();
    // A closed stdout means the script is gone; nothing left to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Throughput { proxy, streams, seconds, label } => {
            let t = throughput::run(proxy, streams, Duration::from_secs_f64(seconds))?;
            emit(format!(
                r#"{{"kind":"throughput","label":{},"streams":{},"bytes":{},"seconds":{:.3},"gbit_s":{:.3}}}"#,
                json_str(&label),
                t.streams,
                t.bytes,
                t.elapsed.as_secs_f64(),
                t.gbit_per_s()
            ));
        }
        Command::Handshake { proxy, count, warmup, max_seconds, sources, label } => {
            let h = handshake::run(proxy, count, warmup, sources, Duration::from_secs_f64(max_seconds))?;
            emit(format!(
                concat!(
                    r#"{{"kind":"handshake","label":{},"count":{},"seconds":{:.3},"per_s":{:.0},"#,
                    r#""p50_us":{:.1},"p99_us":{:.1},"mean_us":{:.1},"max_us":{:.1}}}"#
                ),
                json_str(&label),
                h.count,
                h.elapsed.as_secs_f64(),
                h.per_second(),
                h.latency.p50_us,
                h.latency.p99_us,
                h.latency.mean_us,
                h.latency.max_us
            ));
        }
        Command::Hold { proxy, count, parallel, max_seconds, label } => {
            let held = hold::open(proxy, count, parallel, Duration::from_secs_f64(max_seconds))?;
            emit(format!(
                r#"{{"kind":"hold","label":{},"wanted":{},"relayed":{},"failed":{},"seconds":{:.3},"first_error":{}}}"#,
                json_str(&label),
                count,
                held.relayed(),
                held.failed,
                held.elapsed.as_secs_f64(),
                held.first_error.as_deref().map_or("null".to_owned(), json_str)
            ));
            let mut line = String::new();
            // Any line, or the end of stdin, means "close them now".
            let _ = std::io::stdin().lock().read_line(&mut line);
            held.close();
            emit(format!(r#"{{"kind":"closed","label":{}}}"#, json_str(&label)));
        }
        Command::Udp { proxy, window, size, seconds, label } => {
            let u = udp::run(proxy, window, size, Duration::from_secs_f64(seconds))?;
            emit(format!(
                r#"{{"kind":"udp","label":{},"window":{},"size":{},"sent":{},"answered":{},"seconds":{:.3},"per_s":{:.0}}}"#,
                json_str(&label),
                window,
                size,
                u.sent,
                u.answered,
                u.elapsed.as_secs_f64(),
                u.per_second()
            ));
        }
        Command::Rss { pids, label } => {
            let m = rss::measure(&pids);
            emit(format!(
                r#"{{"kind":"rss","label":{},"processes":{},"rss_kib":{},"pss_kib":{}}}"#,
                json_str(&label),
                m.processes,
                m.rss_kib,
                m.pss_kib
            ));
        }
    }
    Ok(())
}
