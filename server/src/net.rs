//! Outgoing sockets: which local address the server uses towards a
//! destination, CONNECT's outgoing connection and BIND's listener.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::External;

/// The local address of the kernel's route to `dest`: connecting a UDP
/// socket only picks a route and a source address, it sends no packet.
pub fn route_source(dest: Ipv4Addr) -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((dest, 9)).ok()?;
    match socket.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

/// The address towards `dest` that both CONNECT and BIND use, so an FTP
/// server sees the data connection's PORT address equal to the control
/// connection's peer.
pub fn external_for(external: External, dest: Ipv4Addr) -> Option<Ipv4Addr> {
    match external {
        External::Addr(ip) => Some(ip),
        External::Auto => route_source(dest),
    }
}

/// Connects to `dest`, from `external` when it is a fixed address.
///
/// # Errors
///
/// The socket, bind or connect error.
pub async fn connect(external: External, dest: SocketAddrV4) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let External::Addr(ip) = external {
        // Without this, bind() would reserve a port for the address alone and
        // could run out of ports long before there are 64k connections per
        // destination; the kernel picks the port at connect() instead.
        set_bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    socket.connect(SocketAddr::V4(dest)).await
}

/// A BIND listener on `ip`, any port, backlog 1: SOCKS4 BIND takes one connection.
///
/// # Errors
///
/// The socket, bind or listen error.
pub fn bind_listener(ip: Ipv4Addr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((ip, 0)))?;
    socket.listen(1)
}

fn set_bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    enable_option(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)
}

/// Sets an int-valued socket option to 1 (on).
///
/// # Errors
///
/// The `setsockopt` error.
pub(crate) fn enable_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket of the caller's, alive for the whole
    // call; the option value points to a c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_from_loopback() {
        assert_eq!(route_source(Ipv4Addr::new(127, 0, 0, 9)), Some(Ipv4Addr::new(127, 0, 0, 1)));
    }
}
