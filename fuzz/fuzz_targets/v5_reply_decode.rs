//! Fuzzes `v5::Reply::decode` (what a SOCKS5 client reads from a server)
//! with the invariants of `v5_check.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::host;
use socks4_proto::v5::{Host, MAX_REQUEST_LEN, ProtocolError, Reply};

#[path = "v5_check.rs"]
mod v5_check;

fuzz_target!(|buf: &[u8]| {
    match v5_check::check(buf, Reply::decode, Reply::encode, MAX_REQUEST_LEN, &[2]) {
        Ok(Some(reply)) => {
            if let Host::Name(name) = &reply.bound.host {
                assert_eq!(host::validate(name.as_bytes()), Ok(name.as_str()));
            }
        }
        Ok(None) => {}
        Err(ProtocolError::BadVersion(v)) => assert_ne!(v, 5),
        Err(ProtocolError::BadReplyCode(c)) => assert!(c > 8),
        Err(ProtocolError::BadAddressType(t)) => assert!(![1, 3, 4].contains(&t)),
        Err(ProtocolError::EmptyHostName | ProtocolError::BadHostName) => {}
        Err(e) => panic!("unexpected error from the reply decoder: {e:?}"),
    }
});
