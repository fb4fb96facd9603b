//! Structure-aware fuzzing: builds arbitrary `Request`s, encodes them and
//! checks `decode(encode(x)) == x` (or the exact cap error), byte by byte
//! delivery included, so the encoder and decoder can never disagree.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use socks4_proto::v4::{Command, Destination, Limits, ProtocolError, Request};
use std::net::Ipv4Addr;

#[derive(Debug, Arbitrary)]
struct Input {
    bind: bool,
    port: u16,
    ip: [u8; 4],
    /// `Some` makes a SOCKS4A request; the name is filtered to DNS bytes.
    name: Option<Vec<u8>>,
    user_id: Vec<u8>,
    max_user_id: u8,
    max_host_name: u8,
}

fuzz_target!(|input: Input| {
    let user_id: Vec<u8> = input.user_id.into_iter().filter(|&b| b != 0).collect();
    let destination = match input.name {
        Some(raw) => {
            // Map every byte onto the host-name alphabet, then drop what the
            // decoder must refuse (leading dot, "..", empty): those are
            // covered by request_decode.
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._";
            let name: String = raw.iter().map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect();
            if name.is_empty() || name.starts_with('.') || name.contains("..") {
                return;
            }
            Destination::Name(name)
        }
        None => {
            let ip = Ipv4Addr::from(input.ip);
            if socks4_proto::v4::is_socks4a_marker(ip) {
                return; // on the wire that is a 4A marker, not an address
            }
            Destination::Ip(ip)
        }
    };
    let command = if input.bind { Command::Bind } else { Command::Connect };
    let req = Request { command, port: input.port, destination, user_id };
    let limits =
        Limits { max_user_id: usize::from(input.max_user_id), max_host_name: usize::from(input.max_host_name) };

    let mut wire = Vec::new();
    req.encode(&mut wire);
    let expected = if req.user_id.len() > limits.max_user_id {
        Err(ProtocolError::UserIdTooLong(limits.max_user_id))
    } else if matches!(&req.destination, Destination::Name(n) if n.len() > limits.max_host_name) {
        Err(ProtocolError::HostNameTooLong(limits.max_host_name))
    } else {
        Ok(Some((req.clone(), wire.len())))
    };
    assert_eq!(Request::decode_with(&wire, &limits), expected);

    // Byte-at-a-time delivery (a dribbling client): every prefix is either
    // "need more" or, once a cap is passed, the same error as the whole.
    for len in 0..wire.len() {
        let got = Request::decode_with(&wire[..len], &limits);
        match (&got, &expected) {
            (Ok(None), _) => {}
            (Err(e), Err(want)) => assert_eq!(e, want, "prefix {len}"),
            _ => panic!("prefix {len} of {wire:?} gave {got:?}, whole gives {expected:?}"),
        }
    }
});
