//! Fuzzes `Request::decode_with` on arbitrary bytes under arbitrary (often
//! tiny) caps, and checks the invariants the server relies on: no panic,
//! consumed <= len, caps respected, the answer does not depend on bytes after
//! the request, a prefix of a request needs more bytes, an error stays an
//! error whatever follows, and what was decoded re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::v4::{Destination, Limits, ProtocolError, Request};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the caps, so the fuzzer reaches the
    // "field too long" paths without needing 256-byte inputs; 0xff means the
    // default cap, so long realistic inputs are covered too.
    let Some((&[u, h], buf)) = data.split_first_chunk::<2>() else { return };
    let cap = |b: u8| if b == 0xff { socks4_proto::v4::DEFAULT_MAX_FIELD } else { usize::from(b % 64) };
    let limits = Limits { max_user_id: cap(u), max_host_name: cap(h) };

    let result = Request::decode_with(buf, &limits);
    match &result {
        Ok(Some((req, consumed))) => {
            let consumed = *consumed;
            assert!(consumed <= buf.len(), "consumed {consumed} of {}", buf.len());
            assert!(consumed >= 9, "a request is at least 9 bytes");
            assert!(req.user_id.len() <= limits.max_user_id);
            assert!(!req.user_id.contains(&0), "user id holds a NUL");
            if let Destination::Name(name) = &req.destination {
                assert!(!name.is_empty() && name.len() <= limits.max_host_name);
                assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)), "{name:?}");
            }
            let wire = &buf[..consumed];
            // Trailing bytes (the start of the relayed stream) change nothing.
            assert_eq!(Request::decode_with(wire, &limits), result);
            // Every proper prefix is "need more". Checked on the last few
            // prefixes plus a sample, to keep executions fast.
            for len in (0..consumed).rev().take(12).chain([0, 1, 2, 7, 8]) {
                if len < consumed {
                    assert_eq!(Request::decode_with(&wire[..len], &limits), Ok(None), "prefix {len}");
                }
            }
            // encode(decode(x)) == x, except that any 0.0.0.x (x != 0) marker
            // is re-encoded as the canonical 0.0.0.1.
            let mut out = Vec::new();
            req.encode(&mut out);
            assert_eq!(out.len(), consumed);
            let mut expected = wire.to_vec();
            if matches!(req.destination, Destination::Name(_)) {
                expected[7] = 1;
            }
            assert_eq!(out, expected);
            // decode(encode(x)) == x.
            assert_eq!(Request::decode_with(&out, &limits), Ok(Some((req.clone(), consumed))));
        }
        Ok(None) => {
            // "Need more" never happens once a cap is passed: the buffer a
            // server holds for one request is bounded.
            let bound = 8 + limits.max_user_id + 1 + limits.max_host_name + 1;
            assert!(buf.len() <= bound, "{} bytes still incomplete (bound {bound})", buf.len());
        }
        Err(e) => {
            // An error is final: more bytes cannot turn it into a request.
            let mut longer = buf.to_vec();
            longer.extend_from_slice(b"\0\0example\0");
            assert!(Request::decode_with(&longer, &limits).is_err(), "{e} undone by more bytes");
            match e {
                ProtocolError::BadVersion(v) => assert_ne!(*v, 4),
                ProtocolError::BadCommand(c) => assert!(*c != 1 && *c != 2),
                ProtocolError::UserIdTooLong(n) => assert_eq!(*n, limits.max_user_id),
                ProtocolError::HostNameTooLong(n) => assert_eq!(*n, limits.max_host_name),
                ProtocolError::EmptyHostName | ProtocolError::BadHostName => {}
                ProtocolError::BadReplyVersion(_) | ProtocolError::BadReplyCode(_) => {
                    panic!("reply error from the request decoder: {e:?}")
                }
            }
        }
    }
});
