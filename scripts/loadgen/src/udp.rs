//! UDP through a SOCKS5 association (or directly): how many datagrams per
//! second come back from a UDP echo on 127.0.0.1:0, with `window` of them
//! in flight. A datagram lost on the way is replaced after a short wait, so
//! loss lowers the rate instead of stalling the run.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::proxy::{ConnectError, Proxy};

/// How long to wait for an answer before taking the window's datagrams as lost.
const LOST_AFTER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpRate {
    /// Datagrams that came back whole.
    pub answered: u64,
    pub sent: u64,
    pub elapsed: Duration,
}

impl UdpRate {
    pub fn per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs for `duration` with `window` datagrams of `size` payload bytes in flight.
///
/// # Errors
///
/// A socket error, a refused association, or SOCKS4 (which has no UDP).
pub fn run(proxy: Proxy, window: usize, size: usize, duration: Duration) -> Result<UdpRate, ConnectError> {
    let echo = UdpSocket::bind("127.0.0.1:0")?;
    echo.set_read_timeout(Some(Duration::from_millis(100)))?;
    let echo_addr = match echo.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("bound to an IPv4 address"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let echo_thread = thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !stopped.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let result = measure(proxy, echo_addr, window, size, duration);
    stop.store(true, Ordering::Relaxed);
    let _ = echo_thread.join();
    result
}

fn measure(
    proxy: Proxy,
    echo: SocketAddrV4,
    window: usize,
    size: usize,
    duration: Duration,
) -> Result<UdpRate, ConnectError> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(LOST_AFTER))?;
    // The control connection must stay open for the whole run.
    let (_control, to, datagram) = match proxy {
        Proxy::Direct => (None, SocketAddr::V4(echo), vec![0x5a; size]),
        Proxy::Socks4(_) => return Err(ConnectError::Io(io::Error::other("SOCKS4 has no UDP"))),
        Proxy::Socks5(server) => {
            let (control, relay) = associate(server)?;
            let mut datagram = vec![0, 0, 0, 1];
            datagram.extend_from_slice(&echo.ip().octets());
            datagram.extend_from_slice(&echo.port().to_be_bytes());
            datagram.resize(datagram.len() + size, 0x5a);
            (Some(control), relay, datagram)
        }
    };
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let top_up = |sent: &mut u64, n: usize| -> io::Result<()> {
        for _ in 0..n {
            socket.send_to(&datagram, to)?;
            *sent += 1;
        }
        Ok(())
    };
    top_up(&mut sent, window)?;
    while start.elapsed() < duration {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                if n == datagram.len() {
                    answered += 1;
                }
                top_up(&mut sent, 1)?;
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                top_up(&mut sent, window)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(UdpRate { answered, sent, elapsed: start.elapsed() })
}

/// SOCKS5, no authentication, UDP ASSOCIATE for 0.0.0.0:0: the control
/// connection and the relay's address.
fn associate(server: SocketAddr) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let mut control = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
    control.set_read_timeout(Some(Duration::from_secs(5)))?;
    control.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    control.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(ConnectError::Socks5(choice.to_vec()));
    }
    control.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])?;
    let mut head = [0u8; 4];
    control.read_exact(&mut head)?;
    if head[..2] != [5, 0] {
        return Err(ConnectError::Socks5(head.to_vec()));
    }
    let ip: IpAddr = match head[3] {
        1 => {
            let mut a = [0u8; 4];
            control.read_exact(&mut a)?;
            Ipv4Addr::from(a).into()
        }
        4 => {
            let mut a = [0u8; 16];
            control.read_exact(&mut a)?;
            Ipv6Addr::from(a).into()
        }
        _ => return Err(ConnectError::Socks5(head.to_vec())),
    };
    let mut port = [0u8; 2];
    control.read_exact(&mut port)?;
    // A relay on the unspecified address (danted may say 0.0.0.0) is the server's host.
    let ip = if ip.is_unspecified() { server.ip() } else { ip };
    Ok((control, SocketAddr::new(ip, u16::from_be_bytes(port))))
}
