//! The shim's core: everything `libsocks4.so` (the hooks, package socks4-preload) and
//! `socks4-run` decide and do, as safe functions over raw descriptors.
//!
//! Layers: `ops` (what one intercepted call does) uses the `registry` (descriptor -> state),
//! `route` (direct, blocked, or which route's upstreams), `config` (read once: the upstreams as
//! `upstream` URLs, the routes), `socks` (the SOCKS4/SOCKS5 exchange on the program's socket, hop
//! by hop through a chain), `backoff` (which upstreams are down, shared by the program tree),
//! `dns_pool` (remote-DNS placeholders shared across fork) and `sys` (the real libc functions).
//! `unsafe` lives in `sys`, `sockaddr`, `dns_pool` (the shared mapping and its lock), `backoff`
//! (its shared mapping) and `ops::dns` (the `hostent` laid out in a caller's buffer), each block
//! with its `SAFETY:` line; the hooks crate holds the rest.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod dns_pool;
pub mod guard;
pub mod launcher;
pub mod log;
pub mod ops;
pub mod registry;
pub mod route;
pub mod sockaddr;
pub mod socks;
pub mod supervisor;
pub mod sys;
pub mod upstream;
