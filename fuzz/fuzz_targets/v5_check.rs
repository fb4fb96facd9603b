//! The invariants every SOCKS5 decoder keeps, shared by the `v5_*_decode`
//! targets (included with `#[path]`; not a target itself).

use std::fmt::Debug;

use socks4_proto::v5::ProtocolError;

type Decode<T> = fn(&[u8]) -> Result<Option<(T, usize)>, ProtocolError>;

/// Runs `decode` on `buf` and checks: no panic; consumed <= len; the answer
/// does not depend on bytes after the message; every proper prefix needs
/// more; "need more" only below `max_len` (what a peer can make us buffer);
/// an error stays the same error whatever follows; and what was decoded
/// encodes to the bytes consumed (except the RSV bytes at `rsv`, written as
/// zero) and decodes back to itself. Returns the decoded message.
pub fn check<T: Clone + Debug + PartialEq>(
    buf: &[u8],
    decode: Decode<T>,
    encode: impl Fn(&T, &mut Vec<u8>),
    max_len: usize,
    rsv: &[usize],
) -> Result<Option<T>, ProtocolError> {
    let result = decode(buf);
    match result {
        Ok(Some((msg, consumed))) => {
            assert!(consumed <= buf.len(), "consumed {consumed} of {}", buf.len());
            assert!(consumed <= max_len, "consumed {consumed} > {max_len}");
            let wire = &buf[..consumed];
            assert_eq!(decode(wire), Ok(Some((msg.clone(), consumed))));
            for len in (0..consumed).rev().take(12).chain([0, 1, 2, 3, 4]) {
                if len < consumed {
                    assert!(matches!(decode(&wire[..len]), Ok(None)), "prefix {len} of {wire:?}");
                }
            }
            let mut out = Vec::new();
            encode(&msg, &mut out);
            let mut expected = wire.to_vec();
            for &i in rsv {
                expected[i] = 0;
            }
            assert_eq!(out, expected, "{msg:?}");
            assert_eq!(decode(&out), Ok(Some((msg.clone(), consumed))));
            Ok(Some(msg))
        }
        Ok(None) => {
            assert!(buf.len() < max_len, "{} bytes still incomplete (max {max_len})", buf.len());
            Ok(None)
        }
        Err(e) => {
            let mut longer = buf.to_vec();
            longer.extend_from_slice(b"\x01\x05\x00\x03\x07example\x00\x50");
            assert_eq!(decode(&longer).map(|_| ()), Err(e), "{e} changed by more bytes");
            Err(e)
        }
    }
}
