//! Fuzzes `Reply::decode` (what the shim runs on a proxy's answer): no
//! panic, exactly 8 bytes consumed, a prefix needs more, trailing bytes (a
//! server banner) are ignored, and the reply re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::v4::{REPLY_LEN, Reply};

fuzz_target!(|buf: &[u8]| {
    let result = Reply::decode(buf);
    match &result {
        Ok(Some((reply, consumed))) => {
            assert_eq!(*consumed, REPLY_LEN);
            assert!(buf.len() >= REPLY_LEN);
            assert_eq!(Reply::decode(&buf[..REPLY_LEN]), result);
            for len in 0..REPLY_LEN {
                assert_eq!(Reply::decode(&buf[..len]), Ok(None), "prefix {len}");
            }
            // Version 4 is accepted but always re-encoded as 0.
            let mut expected: [u8; REPLY_LEN] = buf[..REPLY_LEN].try_into().unwrap();
            assert!(expected[0] == 0 || expected[0] == 4);
            expected[0] = 0;
            assert_eq!(reply.to_bytes(), expected);
            assert_eq!(Reply::decode(&reply.to_bytes()), Ok(Some((*reply, REPLY_LEN))));
        }
        Ok(None) => assert!(buf.len() < REPLY_LEN),
        Err(_) => {
            let mut longer = buf.to_vec();
            longer.extend_from_slice(&[0x5a; REPLY_LEN]);
            assert!(Reply::decode(&longer).is_err(), "error undone by more bytes");
        }
    }
});
