//! Fuzzes `v5::Greeting::decode` (the first thing socks4d reads from a
//! SOCKS5 client) with the invariants of `v5_check.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::v5::{Greeting, MAX_GREETING_LEN, ProtocolError};

#[path = "v5_check.rs"]
mod v5_check;

fuzz_target!(|buf: &[u8]| {
    match v5_check::check(buf, Greeting::decode, Greeting::encode, MAX_GREETING_LEN, &[]) {
        Ok(Some(g)) => assert_eq!(g.methods.len(), usize::from(buf[1])),
        Ok(None) => {}
        Err(ProtocolError::BadVersion(v)) => assert_ne!(v, 5),
        Err(e) => panic!("unexpected error from the greeting decoder: {e:?}"),
    }
});
