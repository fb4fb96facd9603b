//! Fuzzes `v5::UdpHeader::decode` and `split` (what the UDP relay reads from
//! every client datagram) with the invariants of `v5_check.rs`; `split`
//! agrees with `decode`, a truncated datagram being its one extra error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::v5::{MAX_UDP_HEADER_LEN, ProtocolError, UdpHeader};

#[path = "v5_check.rs"]
mod v5_check;

fuzz_target!(|datagram: &[u8]| {
    let checked = v5_check::check(datagram, UdpHeader::decode, UdpHeader::encode, MAX_UDP_HEADER_LEN, &[0, 1]);
    let split = UdpHeader::split(datagram);
    match checked {
        Ok(Some(header)) => {
            let (h, payload) = split.unwrap();
            assert_eq!(h, header);
            assert!(datagram.ends_with(payload));
            assert_eq!(h.is_fragment(), datagram[2] != 0);
        }
        Ok(None) => assert_eq!(split, Err(ProtocolError::TruncatedDatagram)),
        Err(e) => {
            assert_eq!(split, Err(e));
            match e {
                ProtocolError::BadAddressType(t) => assert!(![1, 3, 4].contains(&t)),
                ProtocolError::EmptyHostName | ProtocolError::BadHostName => {}
                e => panic!("unexpected error from the UDP header decoder: {e:?}"),
            }
        }
    }
});
