//! Harness for the end-to-end tests: spawns real servers and programs, blocking std code only.
//!
//! Everything a test starts is owned by a guard whose `Drop` kills it by PID (and deletes
//! temp dirs and network namespaces), so a failing assertion never leaks a process.

mod binaries;
mod danted;
mod ftp;
mod ftpd;
mod gobuild;
mod haproxy;
mod microsocks;
mod netns;
mod peer_server;
mod probe;
mod process;
mod scenario;
mod shim;
mod socks4d;
mod socksify;
mod sshd;
mod tempdir;
mod vsftpd;

pub use binaries::{Binaries, binaries, socks4d_binary};
pub use danted::{Danted, DantedOptions};
pub use ftp::{FtpClient, FtpJob, FtpRun, run_ftp};
pub use ftpd::{FtpEvent, PyFtpd};
pub use gobuild::go_binary;
pub use haproxy::HaProxy;
pub use microsocks::{Microsocks, MicrosocksOptions};
pub use netns::{Netns, NetnsFiles, Topology};
pub use peer_server::{PeerServer, peer_payload};
pub use probe::{Probe, probe_local, probe_reply, socks_probe};
pub use process::{ChildGuard, RunOutput, free_port, run_with_timeout, wait_for_tcp};
pub use scenario::ActiveFtp;
pub use shim::{shim_command, shim_env, socks4_run_command, supervise_command};
pub use socks4d::{Socks4d, Socks4dOptions};
pub use socksify::{socksify_command, socksify_command_with};
pub use sshd::{SSH_SOCKS_PORT, SshSocks};
pub use tempdir::TempDir;
pub use vsftpd::Vsftpd;

/// Content for a test file: `len` bytes that differ at every offset modulo a large prime, so a
/// dropped, duplicated or reordered block changes the bytes (and `checksum`).
pub fn test_content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            // xorshift32: cheap, deterministic, no dependency.
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// FNV-1a 64 of `data`, printed in assertion messages instead of megabytes of bytes.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
