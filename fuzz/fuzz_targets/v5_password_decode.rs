//! Fuzzes `v5::PasswordRequest::decode` (RFC 1929 login) with the invariants
//! of `v5_check.rs`, and that neither field is ever empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::v5::{MAX_PASSWORD_REQUEST_LEN, PasswordRequest, ProtocolError};

#[path = "v5_check.rs"]
mod v5_check;

fuzz_target!(|buf: &[u8]| {
    match v5_check::check(buf, PasswordRequest::decode, PasswordRequest::encode, MAX_PASSWORD_REQUEST_LEN, &[]) {
        Ok(Some(req)) => {
            assert!(!req.username().is_empty() && !req.password().is_empty());
            // The password never shows in Debug output.
            let hidden = format!("PasswordRequest {{ username: {:?}, password: <hidden> }}", req.username_lossy());
            assert_eq!(format!("{req:?}"), hidden);
        }
        Ok(None) => {}
        Err(ProtocolError::BadPasswordVersion(v)) => assert_ne!(v, 1),
        Err(ProtocolError::EmptyUsername | ProtocolError::EmptyPassword) => {}
        Err(e) => panic!("unexpected error from the password decoder: {e:?}"),
    }
});
