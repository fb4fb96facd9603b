//! libsocks4.so: the `LD_PRELOAD` entry points. Each hook in `hooks/` converts the program's raw
//! arguments, asks the safe core in `socks4_shim::ops` what to do, and turns the answer into C
//! once; every decision and every socket the shim touches is in the `socks4-shim` crate.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod hooks;
