//! socks4-server: the SOCKS4/4A and SOCKS5 server library behind `socks4d`.
//!
//! [`Server`] runs in-process (tests use it on `127.0.0.1:0`);
//! [`run_daemon`] adds what the binary needs (stdout `listening` lines,
//! SIGHUP reload, SIGTERM/SIGINT drain).

pub mod balancer;
mod busy_poll;
pub mod cli;
pub mod config;
pub mod ident;
mod memory;
pub mod metrics;
pub mod metrics_http;
pub mod net;
pub mod privileges;
pub mod relay;
pub mod rules;
pub mod server;
pub mod session;
#[cfg(target_os = "linux")]
mod splice;
pub mod systemd;
#[cfg(test)]
mod test_support;
pub mod udp;
pub mod users;
mod workers;

pub use config::{Config, ConfigError, External, Protocols};
pub use rules::{Decision, Query, Rules, evaluate};
pub use server::{Server, run_daemon};
