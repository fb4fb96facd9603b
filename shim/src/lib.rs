//! libsocks4.so: an LD_PRELOAD shim that sends a program's TCP connections through a SOCKS4 server
//! (CONNECT) and turns its listening sockets into SOCKS4 BIND requests.
//!
//! Layers: `hooks` (the exported C functions, thin) call `ops` (safe decisions), which use the
//! `registry` (descriptor -> state), `route` (direct or proxied), `config` (read once), `socks`
//! (the exchange on the program's socket) and `sys` (the real libc functions). `unsafe` lives only
//! in `hooks`, `sys` and `sockaddr`. The rlib exposes the safe parts for tests and `socks4-run`.
#![deny(unsafe_op_in_unsafe_fn)]
// The unit-test build has no hooks, so parts of the core are unused there.
#![cfg_attr(test, allow(dead_code))]

pub mod config;
mod dns_pool;
mod guard;
pub mod launcher;
mod log;
mod ops;
pub mod registry;
pub mod route;
mod sockaddr;
mod socks;
mod sys;

// Not in the unit-test binary: it would intercept the test harness's own calls.
#[cfg(not(test))]
mod hooks;
