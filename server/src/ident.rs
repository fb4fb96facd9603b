//! IDENT (RFC 1413) client: asks identd on the client's host which user owns
//! the client's connection, for the reply codes 92 and 93.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Longest answer line accepted, without its end of line (RFC 1413: 1000).
pub const MAX_LINE: usize = 1000;
/// Longest user id accepted (RFC 1413: 512 octets).
pub const MAX_USER_ID: usize = 512;

/// Why IDENT gave no user id. Every variant maps to reply 92.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("cannot connect to identd: {0}")]
    Unreachable(String),
    #[error("identd did not answer in time")]
    Timeout,
    #[error("identd answered ERROR : {0}")]
    Error(String),
    #[error("identd closed before ending its line")]
    Closed,
    #[error("identd line longer than {MAX_LINE} characters")]
    LineTooLong,
    #[error("identd user id longer than {MAX_USER_ID} octets")]
    UserIdTooLong,
    #[error("malformed identd answer")]
    Malformed,
}

/// Asks identd at `client.ip():ident_port`, connecting from `local_ip` (the
/// address the client reached us on, so identd sees the same pair of hosts
/// as the client's connection), which user owns the connection from
/// `client.port()` to our `server_port`.
///
/// # Errors
///
/// Any [`IdentError`]; the whole exchange is bounded by `timeout`.
pub async fn lookup(
    local_ip: IpAddr,
    client: SocketAddr,
    server_port: u16,
    ident_port: u16,
    timeout: Duration,
) -> Result<Vec<u8>, IdentError> {
    tokio::time::timeout(timeout, exchange(local_ip, client, server_port, ident_port))
        .await
        .unwrap_or(Err(IdentError::Timeout))
}

async fn exchange(
    local_ip: IpAddr,
    client: SocketAddr,
    server_port: u16,
    ident_port: u16,
) -> Result<Vec<u8>, IdentError> {
    let unreachable = |e: std::io::Error| IdentError::Unreachable(e.to_string());
    let socket = if local_ip.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(unreachable)?;
    socket.bind(SocketAddr::new(local_ip, 0)).map_err(unreachable)?;
    let mut stream = socket.connect(SocketAddr::new(client.ip(), ident_port)).await.map_err(unreachable)?;
    let query = format!("{} , {}\r\n", client.port(), server_port);
    stream.write_all(query.as_bytes()).await.map_err(unreachable)?;

    let mut line = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| IdentError::Closed)?;
        if n == 0 {
            return Err(IdentError::Closed);
        }
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() > MAX_LINE {
            return Err(IdentError::LineTooLong);
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > MAX_LINE {
        return Err(IdentError::LineTooLong);
    }
    parse_response(&line, client.port(), server_port)
}

/// Parses one answer line (without its end of line) to a query for
/// `client_port , server_port`: the user id, or why there is none.
///
/// # Format
///
/// ```text
/// <client port> , <server port> : USERID : <opsys>[,<charset>] : <user id>
/// <client port> , <server port> : ERROR : <INVALID-PORT|NO-USER|HIDDEN-USER|UNKNOWN-ERROR>
/// ```
///
/// # Errors
///
/// [`IdentError::Error`] for an ERROR answer, [`IdentError::UserIdTooLong`],
/// [`IdentError::Malformed`] for anything else, including an answer about
/// other ports.
pub fn parse_response(line: &[u8], client_port: u16, server_port: u16) -> Result<Vec<u8>, IdentError> {
    let mut fields = line.splitn(4, |&b| b == b':');
    let ports = fields.next().ok_or(IdentError::Malformed)?;
    let ports = std::str::from_utf8(ports).map_err(|_| IdentError::Malformed)?;
    let (c, s) = ports.split_once(',').ok_or(IdentError::Malformed)?;
    if c.trim().parse::<u16>() != Ok(client_port) || s.trim().parse::<u16>() != Ok(server_port) {
        return Err(IdentError::Malformed);
    }
    let kind = fields.next().map(trim).ok_or(IdentError::Malformed)?;
    let info = fields.next().map(trim).ok_or(IdentError::Malformed)?;
    match kind {
        b"USERID" => {
            let user = fields.next().ok_or(IdentError::Malformed)?;
            // RFC 1413 keeps the user id's own octets; only the space after the colon is padding.
            let user = trim(user);
            if user.len() > MAX_USER_ID {
                return Err(IdentError::UserIdTooLong);
            }
            if user.is_empty() || info.is_empty() {
                return Err(IdentError::Malformed);
            }
            Ok(user.to_vec())
        }
        b"ERROR" => Err(IdentError::Error(String::from_utf8_lossy(info).into_owned())),
        _ => Err(IdentError::Malformed),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |i| i + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_userid_answer() {
        assert_eq!(parse_response(b"6193, 23 : USERID : UNIX : stjohns", 6193, 23), Ok(b"stjohns".to_vec()));
        assert_eq!(parse_response(b"6195 , 23 : USERID : OTHER,US-ASCII :a:b", 6195, 23), Ok(b"a:b".to_vec()));
    }

    #[test]
    fn parses_error_answer() {
        assert_eq!(parse_response(b"6195, 23 : ERROR : NO-USER", 6195, 23), Err(IdentError::Error("NO-USER".into())));
    }

    #[test]
    fn refuses_other_ports_and_garbage() {
        assert_eq!(parse_response(b"1, 2 : USERID : UNIX : x", 1, 3), Err(IdentError::Malformed));
        assert_eq!(parse_response(b"hello", 1, 2), Err(IdentError::Malformed));
        assert_eq!(parse_response(b"1,2:WHAT:UNIX:x", 1, 2), Err(IdentError::Malformed));
        assert_eq!(parse_response(b"1,2:USERID:UNIX:", 1, 2), Err(IdentError::Malformed));
        let mut long = b"1,2:USERID:UNIX:".to_vec();
        long.extend(std::iter::repeat_n(b'u', 512));
        assert_eq!(parse_response(&long, 1, 2).map(|u| u.len()), Ok(512), "512 octets is the limit itself");
        long.push(b'u');
        assert_eq!(parse_response(&long, 1, 2), Err(IdentError::UserIdTooLong));
    }
}
