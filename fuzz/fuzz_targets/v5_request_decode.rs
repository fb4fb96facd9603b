//! Fuzzes `v5::Request::decode` (what socks4d reads after the method
//! negotiation) with the invariants of `v5_check.rs`; a decoded name is a
//! valid host name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::host;
use socks4_proto::v5::{Host, MAX_REQUEST_LEN, ProtocolError, Request};

#[path = "v5_check.rs"]
mod v5_check;

fuzz_target!(|buf: &[u8]| {
    match v5_check::check(buf, Request::decode, Request::encode, MAX_REQUEST_LEN, &[2]) {
        Ok(Some(req)) => {
            if let Host::Name(name) = &req.destination.host {
                assert_eq!(host::validate(name.as_bytes()), Ok(name.as_str()));
            }
        }
        Ok(None) => {}
        Err(ProtocolError::BadVersion(v)) => assert_ne!(v, 5),
        Err(ProtocolError::BadCommand(c)) => assert!(!(1..=3).contains(&c)),
        Err(ProtocolError::BadAddressType(t)) => assert!(![1, 3, 4].contains(&t)),
        Err(ProtocolError::EmptyHostName | ProtocolError::BadHostName) => {}
        Err(e) => panic!("unexpected error from the request decoder: {e:?}"),
    }
});
