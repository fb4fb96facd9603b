//! Outgoing sockets: which local address the server uses towards a
//! destination, CONNECT's outgoing connection, BIND's listener and the
//! sockets of a UDP relay.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::External;

/// The local address of the kernel's route to `dest`: connecting a UDP
/// socket only picks a route and a source address, it sends no packet.
pub fn route_source(dest: IpAddr) -> Option<IpAddr> {
    let any = match dest {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind((any, 0)).ok()?;
    socket.connect((dest, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// The address towards `dest` that CONNECT, BIND and the UDP relay use, so
/// an FTP server sees the data connection's PORT address equal to the
/// control connection's peer: `external`'s address for `dest`'s family, or
/// the route's.
pub fn external_for(external: External, dest: IpAddr) -> Option<IpAddr> {
    external.for_family(dest).or_else(|| route_source(dest))
}

/// Connects to `dest`, from `external`'s address for its family when it has one.
///
/// # Errors
///
/// The socket, bind or connect error.
pub async fn connect(external: External, dest: SocketAddr) -> io::Result<TcpStream> {
    let socket = if dest.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = external.for_family(dest.ip()) {
        // Without this, bind() would reserve a port for the address alone and
        // could run out of ports long before there are 64k connections per
        // destination; the kernel picks the port at connect() instead.
        // (IPv6 shares the IP-level option.)
        set_bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(dest).await
}

/// A BIND listener on `ip`, any port, backlog 1: BIND takes one connection.
///
/// # Errors
///
/// The socket, bind or listen error.
pub fn bind_listener(ip: IpAddr) -> io::Result<TcpListener> {
    let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.listen(1)
}

/// A UDP socket on `ip`, any port, for a UDP relay.
///
/// # Errors
///
/// The socket or bind error.
pub fn udp_socket(ip: IpAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
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
        assert_eq!(route_source(Ipv4Addr::new(127, 0, 0, 9).into()), Some(Ipv4Addr::new(127, 0, 0, 1).into()));
        assert_eq!(route_source(Ipv6Addr::LOCALHOST.into()), Some(Ipv6Addr::LOCALHOST.into()));
    }
}
