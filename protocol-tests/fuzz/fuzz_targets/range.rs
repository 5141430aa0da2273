//! `parse_range` (Range on GET): never panics, and a partial range always lies inside the
//! resource: `start <= end < len`.
//!
//! Input layout: one selector byte, then the header value. A selector below 0xF0 is the
//! resource length itself (small lengths are where the edge cases are); otherwise the next
//! eight bytes are the length, little-endian.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::{parse_range, ByteRange};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (len, rest) = if selector < 0xF0 {
        (u64::from(selector), rest)
    } else {
        let Some((bytes, rest)) = rest.split_first_chunk::<8>() else {
            return;
        };
        (u64::from_le_bytes(*bytes), rest)
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    match parse_range(value, len) {
        ByteRange::Partial { start, end } => {
            assert!(
                start <= end && end < len,
                "{value:?} against {len} bytes gave {start}..={end}"
            );
        }
        ByteRange::Full | ByteRange::Unsatisfiable => {}
    }
});
