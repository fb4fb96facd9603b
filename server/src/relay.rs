//! The data relay between a client and its destination, both ways, with
//! half-close: one side's EOF becomes `shutdown(SHUT_WR)` on the other, and
//! the relay ends when both directions are done (or either fails).
//!
//! Kept in one place so a zero-copy (`splice(2)`) variant can replace it.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// Per-direction buffer. 16 KiB keeps two per session at 32 KiB while
/// filling a loopback or LAN pipe in few syscalls.
const BUF_SIZE: usize = 16 * 1024;

/// Bytes moved by a relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client to destination.
    pub up: u64,
    /// Destination to client.
    pub down: u64,
}

/// Relays until both directions have seen EOF, or until one fails (a reset,
/// say): then both connections are dropped, since a half that can no longer
/// be delivered is not worth waiting for. `traffic` is counted as bytes
/// move, so it is right even if this future is dropped midway.
///
/// # Errors
///
/// The first read or write error of either direction.
pub async fn relay(client: &mut TcpStream, dest: &mut TcpStream, traffic: &mut Traffic) -> io::Result<()> {
    let (client_r, client_w) = client.split();
    let (dest_r, dest_w) = dest.split();
    tokio::try_join!(pump(client_r, dest_w, &mut traffic.up), pump(dest_r, client_w, &mut traffic.down)).map(|_| ())
}

/// Copies one direction until EOF, then half-closes the writer.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, count: &mut u64) -> io::Result<()> {
    // Allocate only once there is something to read: thousands of idle
    // relays (held-open connections) then cost no buffer memory.
    from.readable().await?;
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // The peer may already be gone; its reset is not our error.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        *count += n as u64;
    }
}
