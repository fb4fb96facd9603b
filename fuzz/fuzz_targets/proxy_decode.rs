//! Fuzzes `proxy::Header::decode_with` (the PROXY protocol header socks4d
//! reads from a trusted load balancer) under an arbitrary v2 cap, and checks
//! the invariants the server relies on: no panic; consumed <= len and within
//! the caps; the answer does not depend on bytes after the header (the
//! client's SOCKS request); every proper prefix needs more; "need more" only
//! below the caps, so a sender cannot make the server buffer more; an error
//! stays the same error whatever follows; and what was decoded encodes to a
//! header that decodes to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socks4_proto::proxy::{DEFAULT_MAX_V2_LEN, Header, ProxyError, V1_MAX_LEN, V2_FIXED_LEN, looks_like_header};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the v2 cap (0xff: the default), so the "too long"
    // path is reached without kilobyte inputs.
    let Some((&c, buf)) = data.split_first() else { return };
    let cap = if c == 0xff { DEFAULT_MAX_V2_LEN } else { V2_FIXED_LEN + usize::from(c) * 2 };

    let result = Header::decode_with(buf, cap);
    match result {
        Ok(Some((header, consumed))) => {
            assert!(consumed <= buf.len(), "consumed {consumed} of {}", buf.len());
            assert!(consumed <= V1_MAX_LEN.max(cap), "consumed {consumed}");
            assert!(looks_like_header(buf));
            let wire = &buf[..consumed];
            assert_eq!(Header::decode_with(wire, cap), result);
            for len in (0..consumed).rev().take(12).chain([0, 1, 5, 6, 12, 13, 15]) {
                if len < consumed {
                    assert_eq!(Header::decode_with(&wire[..len], cap), Ok(None), "prefix {len} of {wire:?}");
                }
            }
            // The canonical form decodes to the same header. (Not always the
            // same bytes: TLVs, UNKNOWN's ignored text and AF_UNIX paths are
            // not kept.)
            let mut out = Vec::new();
            header.encode(&mut out);
            assert_eq!(Header::decode_with(&out, usize::MAX), Ok(Some((header, out.len()))));
            if let Some(e) = header.tcp() {
                assert_eq!(e.source().is_ipv4(), e.destination().is_ipv4());
            }
        }
        Ok(None) => {
            assert!(buf.len() < V1_MAX_LEN.max(cap), "{} bytes still incomplete", buf.len());
            assert!(buf.is_empty() || looks_like_header(buf));
        }
        Err(e) => {
            let mut longer = buf.to_vec();
            longer.extend_from_slice(b"\r\n\x04\x01\x00\x50\x7f\x00\x00\x01\0");
            assert_eq!(Header::decode_with(&longer, cap), Err(e), "{e} changed by more bytes");
            if e == ProxyError::NotProxy {
                assert!(!looks_like_header(buf));
            }
        }
    }
});
