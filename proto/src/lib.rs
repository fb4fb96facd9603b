//! The SOCKS wire formats (SOCKS4/4A in [`v4`], SOCKS5 in [`v5`]), host
//! names ([`host`]) and the PROXY protocol header a load balancer sends
//! ([`proxy`]), shared by the shim and the server so the two can never
//! disagree about a byte.
//!
//! Sans-I/O: `decode` takes the bytes received so far and answers
//! `Ok(None)` ("need more bytes"), `Ok(Some((message, consumed)))` or an
//! error; `encode` appends to a `Vec<u8>`. Nothing here reads a socket.
#![forbid(unsafe_code)]

pub mod host;
pub mod proxy;
pub mod v4;
pub mod v5;
