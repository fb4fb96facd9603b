//! The data relay between a client and its destination, both ways, with
//! half-close: one side's EOF becomes `shutdown(SHUT_WR)` on the other, and
//! the relay ends when both directions are done (or either fails).
//!
//! On Linux each direction splices through a pipe of its own (see
//! `splice.rs`), created when the first byte arrives; elsewhere, or when no
//! pipe can be had (EMFILE), it copies through a user-space buffer. An idle
//! relay holds neither a pipe nor a buffer.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

/// First buffer of the copy fallback: small, so an interactive relay stays
/// cheap.
const BUF_START: usize = 16 * 1024;
/// The copy buffer doubles each time a read fills it, up to this: a bulk
/// stream then moves in few large syscalls.
const BUF_MAX: usize = 128 * 1024;

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
/// are delivered, so it is right even if this future is dropped midway.
/// The caller must close both sockets when this returns: the direction that
/// ends last leaves its FIN to that close (see `pump`).
///
/// # Errors
///
/// The first read or write error of either direction.
pub async fn relay(client: &mut TcpStream, dest: &mut TcpStream, traffic: &mut Traffic) -> io::Result<()> {
    let (client_r, client_w) = client.split();
    let (dest_r, dest_w) = dest.split();
    // Both pumps run in this one task; the flag tells the second one to end
    // that it is the second (an atomic only because the future must be Send).
    let one_done = AtomicBool::new(false);
    tokio::try_join!(
        pump(client_r, dest_w, &mut traffic.up, &one_done),
        pump(dest_r, client_w, &mut traffic.down, &one_done)
    )
    .map(|_| ())
}

/// Moves one direction until EOF, then half-closes the writer, unless the
/// other direction is already done (`one_done`): then the relay ends and
/// both sockets are closed right after, and the close sends the FIN that
/// the shutdown would have (the writer's own input has already reached
/// EOF, so nothing unread is left to turn that close into a reset).
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, count: &mut u64, one_done: &AtomicBool) -> io::Result<()> {
    // Wait for the first byte (or EOF) holding nothing: thousands of idle
    // relays then cost no pipe and no buffer, and a relay that only ever
    // closes never makes a pipe.
    if from.peek(&mut [0u8; 1]).await? > 0 {
        move_data(&mut from, &mut to, count).await?;
    }
    if !one_done.swap(true, Ordering::Relaxed) {
        // The peer may already be gone; its reset is not our error.
        let _ = to.shutdown().await;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
async fn move_data(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, count: &mut u64) -> io::Result<()> {
    use crate::splice::{Pipe, Spliced, pump};
    match Pipe::new() {
        Ok(pipe) => match pump(&pipe, from.as_ref(), to.as_ref(), count).await? {
            Spliced::Eof => Ok(()),
            Spliced::Unsupported => {
                drop(pipe);
                copy(from, to, count).await
            }
        },
        Err(e) => {
            tracing::debug!(error = %e, "no pipe for splice: copying instead");
            copy(from, to, count).await
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn move_data(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, count: &mut u64) -> io::Result<()> {
    copy(from, to, count).await
}

/// The portable way: read into a buffer, write it out, until EOF.
async fn copy(from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, count: &mut u64) -> io::Result<()> {
    let mut buf = vec![0u8; BUF_START];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        *count += n as u64;
        buf.resize(grown(buf.len(), n), 0);
    }
}

/// The copy buffer's size after a read of `n` bytes into `len`: doubled when the read filled it,
/// never past [`BUF_MAX`] (a power-of-two multiple of [`BUF_START`]).
fn grown(len: usize, n: usize) -> usize {
    if n == len && len < BUF_MAX { len * 2 } else { len }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (b, _) = listener.accept().await.unwrap();
        (a, b)
    }

    /// Runs `test` on a runtime of its own thread, failing after 10 s: a
    /// relay that never ends may also never yield.
    fn within_10s(test: impl Future<Output = ()> + Send + 'static) {
        crate::test_support::on_thread_within(std::time::Duration::from_secs(10), || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(test)
        });
    }

    /// A relay between two loopback pairs: the client's far end, the
    /// destination's far end, and the relay's task (its counts at the end).
    async fn relayed() -> (TcpStream, TcpStream, tokio::task::JoinHandle<Traffic>) {
        let (client_far, mut client) = pair().await;
        let (mut dest, dest_far) = pair().await;
        let relay = tokio::spawn(async move {
            let mut traffic = Traffic::default();
            relay(&mut client, &mut dest, &mut traffic).await.unwrap();
            traffic
        });
        (client_far, dest_far, relay)
    }

    /// Sends `up` from the client end and `down` from the destination end
    /// through a relay; returns what each far end received and the counts.
    async fn through_relay(up: Vec<u8>, down: Vec<u8>) -> (Vec<u8>, Vec<u8>, Traffic) {
        let (mut client_far, mut dest_far, relay) = relayed().await;
        let (cr, mut cw) = client_far.split();
        let (dr, mut dw) = dest_far.split();
        let send_up = async {
            cw.write_all(&up).await.unwrap();
            cw.shutdown().await.unwrap();
        };
        let send_down = async {
            dw.write_all(&down).await.unwrap();
            dw.shutdown().await.unwrap();
        };
        async fn read_all(mut r: ReadHalf<'_>) -> Vec<u8> {
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            got
        }
        let ((), (), at_dest, at_client) = tokio::join!(send_up, send_down, read_all(dr), read_all(cr));
        (at_dest, at_client, relay.await.unwrap())
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    #[test]
    fn relays_both_ways_exactly_with_counts() {
        within_10s(async {
            // Larger than any pipe or buffer, and not a multiple of a page.
            let up = pattern(5 * 1024 * 1024 + 17, 0x11);
            let down = pattern(3 * 1024 * 1024 + 5, 0x22);
            let (at_dest, at_client, traffic) = through_relay(up.clone(), down.clone()).await;
            assert_eq!(at_dest, up);
            assert_eq!(at_client, down);
            assert_eq!(traffic, Traffic { up: up.len() as u64, down: down.len() as u64 });
        });
    }

    #[test]
    fn one_way_and_empty_directions() {
        within_10s(async {
            let up = pattern(100_000, 0x33);
            let (at_dest, at_client, traffic) = through_relay(up.clone(), Vec::new()).await;
            assert_eq!(at_dest, up);
            assert!(at_client.is_empty());
            assert_eq!(traffic, Traffic { up: 100_000, down: 0 });
            let (at_dest, at_client, traffic) = through_relay(Vec::new(), Vec::new()).await;
            assert!(at_dest.is_empty() && at_client.is_empty());
            assert_eq!(traffic, Traffic::default());
        });
    }

    /// Reads to EOF within 5 s, so a relay that never passes a FIN on fails
    /// the test instead of hanging it.
    async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .expect("EOF passed on within 5 s")
            .unwrap();
        got
    }

    /// One side half-closes and only then does the other answer: its EOF
    /// can only come through the relay (the far end has not closed), and
    /// the answer must still flow back after it.
    #[test]
    fn half_close_reaches_the_other_side_and_the_answer_still_flows() {
        within_10s(async {
            for client_first in [true, false] {
                let (mut client_far, mut dest_far, relay) = relayed().await;
                let (first, second) =
                    if client_first { (&mut client_far, &mut dest_far) } else { (&mut dest_far, &mut client_far) };
                first.write_all(b"request").await.unwrap();
                first.shutdown().await.unwrap();
                assert_eq!(read_to_eof(second).await, b"request", "client first: {client_first}");
                second.write_all(b"late answer").await.unwrap();
                second.shutdown().await.unwrap();
                assert_eq!(read_to_eof(first).await, b"late answer", "client first: {client_first}");
                let traffic = tokio::time::timeout(std::time::Duration::from_secs(5), relay).await.unwrap().unwrap();
                let (up, down) = if client_first { (7, 11) } else { (11, 7) };
                assert_eq!(traffic, Traffic { up, down });
            }
        });
    }

    /// Full reads double the buffer from 16 KiB up to 128 KiB and no further; a short read
    /// leaves it as it is.
    #[test]
    fn the_copy_buffer_grows_with_full_reads_up_to_its_cap() {
        let mut sizes = vec![BUF_START];
        for _ in 0..5 {
            let len = *sizes.last().unwrap();
            sizes.push(grown(len, len));
        }
        assert_eq!(sizes, [16384, 32768, 65536, 131072, 131072, 131072]);
        assert_eq!(grown(32768, 32767), 32768);
        assert_eq!(grown(32768, 1), 32768);
    }

    #[tokio::test]
    async fn copy_fallback_relays_exactly() {
        let (mut src_far, mut src) = pair().await;
        let (mut dst, mut dst_far) = pair().await;
        let data = pattern(1024 * 1024 + 3, 0x44);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            src_far.write_all(&sent).await.unwrap();
            src_far.shutdown().await.unwrap();
        });
        let mut count = 0;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            dst_far.read_to_end(&mut got).await.unwrap();
            got
        });
        {
            let (mut r, _) = src.split();
            let (_, mut w) = dst.split();
            copy(&mut r, &mut w, &mut count).await.unwrap();
            w.shutdown().await.unwrap();
        }
        writer.await.unwrap();
        assert_eq!(reader.await.unwrap(), data);
        assert_eq!(count, data.len() as u64);
    }
}
