//! Structure-aware fuzzing of the SOCKS5 codec: builds arbitrary valid
//! messages of every kind, encodes them, and checks `decode(encode(x)) == x`
//! with the exact length, byte-by-byte delivery included (every proper
//! prefix needs more), so the encoder and decoder can never disagree.
#![no_main]

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use socks4_proto::v5::{
    Address, Command, Greeting, Host, Method, MethodSelection, PasswordReply, PasswordRequest, ProtocolError, Reply,
    ReplyCode, Request, UdpHeader,
};

#[derive(Debug, Arbitrary)]
enum RawHost {
    V4([u8; 4]),
    V6([u8; 16]),
    Name(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Input {
    Greeting(Vec<u8>),
    Selection(u8),
    Login(Vec<u8>, Vec<u8>),
    LoginReply(u8),
    Request(u8, RawHost, u16),
    Reply(u8, RawHost, u16),
    Udp(u8, RawHost, u16, Vec<u8>),
}

/// A host the wire can carry: name bytes mapped onto the host-name
/// alphabet, then the names the decoder must refuse dropped (those are
/// covered by the decode targets).
fn address(raw: RawHost, port: u16) -> Option<Address> {
    let host = match raw {
        RawHost::V4(b) => Host::Ip(Ipv4Addr::from(b).into()),
        RawHost::V6(b) => Host::Ip(Ipv6Addr::from(b).into()),
        RawHost::Name(raw) => {
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._";
            let name: String = raw.iter().map(|&b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()])).collect();
            if name.is_empty() || name.len() > 255 || name.starts_with('.') || name.contains("..") {
                return None;
            }
            Host::Name(name)
        }
    };
    Some(Address::new(host, port))
}

fn round_trip<T: Clone + Debug + PartialEq>(
    msg: T,
    encode: impl Fn(&T, &mut Vec<u8>),
    decode: fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>,
) {
    let mut wire = Vec::new();
    encode(&msg, &mut wire);
    for len in 0..wire.len() {
        assert_eq!(decode(&wire[..len]), Ok(None), "prefix {len} of {wire:?}");
    }
    let len = wire.len();
    wire.extend_from_slice(b"\x05\x01\x00\x01trailing");
    assert_eq!(decode(&wire), Ok(Some((msg, len))));
}

fuzz_target!(|input: Input| {
    match input {
        Input::Greeting(methods) => {
            if methods.len() <= 255 {
                let g = Greeting::new(methods.into_iter().map(Method::from_byte).collect::<Vec<_>>());
                round_trip(g, Greeting::encode, Greeting::decode);
            }
        }
        Input::Selection(m) => {
            round_trip(MethodSelection::new(Method::from_byte(m)), MethodSelection::encode, MethodSelection::decode)
        }
        Input::Login(user, pass) => match PasswordRequest::new(user.clone(), pass.clone()) {
            Ok(req) => round_trip(req, PasswordRequest::encode, PasswordRequest::decode),
            Err(e) => assert!(user.is_empty() || pass.is_empty() || user.len() > 255 || pass.len() > 255, "{e}"),
        },
        Input::LoginReply(status) => round_trip(PasswordReply { status }, PasswordReply::encode, PasswordReply::decode),
        Input::Request(cmd, raw, port) => {
            if let (Ok(command), Some(destination)) = (Command::from_byte(cmd), address(raw, port)) {
                round_trip(Request::new(command, destination), Request::encode, Request::decode);
            }
        }
        Input::Reply(rep, raw, port) => {
            if let (Ok(code), Some(bound)) = (ReplyCode::from_byte(rep), address(raw, port)) {
                round_trip(Reply::new(code, bound), Reply::encode, Reply::decode);
            }
        }
        Input::Udp(frag, raw, port, payload) => {
            if let Some(destination) = address(raw, port) {
                let header = UdpHeader { frag, destination };
                let mut datagram = Vec::new();
                header.encode(&mut datagram);
                let len = datagram.len();
                round_trip(header.clone(), UdpHeader::encode, UdpHeader::decode);
                datagram.extend_from_slice(&payload);
                assert_eq!(UdpHeader::split(&datagram), Ok((header, &payload[..])));
                assert_eq!(UdpHeader::split(&datagram[..len - 1]), Err(ProtocolError::TruncatedDatagram));
            }
        }
    }
});
