//! Fuzzes socks4d's IDENT answer parser (`ident::parse_response`, fed by
//! whatever identd on a client's host sends): no panic; a user id is only
//! returned for the exact pair of ports asked about, is non-empty, at most
//! 512 octets, trimmed, and is a piece of the line itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_server::ident::{MAX_USER_ID, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((ports, line)) = data.split_first_chunk::<4>() else { return };
    let client_port = u16::from_be_bytes([ports[0], ports[1]]);
    let server_port = u16::from_be_bytes([ports[2], ports[3]]);
    if let Ok(user) = parse_response(line, client_port, server_port) {
        assert!(!user.is_empty() && user.len() <= MAX_USER_ID, "{} octets", user.len());
        assert!(!matches!(user[0], b' ' | b'\t') && !matches!(user[user.len() - 1], b' ' | b'\t'));
        assert!(line.windows(user.len()).any(|w| w == user.as_slice()), "user id not from the line");
        // The answer is about our ports: its first field names them.
        let head = line.split(|&b| b == b':').next().unwrap();
        let head = std::str::from_utf8(head).expect("ports field is text");
        let (c, s) = head.split_once(',').expect("two ports");
        assert_eq!(c.trim().parse::<u16>(), Ok(client_port));
        assert_eq!(s.trim().parse::<u16>(), Ok(server_port));
    }
});
