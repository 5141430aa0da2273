//! `Metadata::parse` must never panic, must honour its size cap, and whatever it accepts
//! must survive a trip through `to_header()` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::{HeaderError, Metadata};

/// The server's default `limits.max_metadata_size`.
const MAX_LEN: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Metadata::parse(value, MAX_LEN);

    // The cap is checked before anything else.
    if !value.is_empty() {
        let cap = value.len() - 1;
        assert_eq!(
            Metadata::parse(value, cap),
            Err(HeaderError::MetadataTooLarge(cap))
        );
    }

    let Ok(metadata) = parsed else {
        return;
    };
    let mut keys = std::collections::HashSet::new();
    for (key, value) in metadata.pairs() {
        assert!(!key.is_empty(), "empty key from {value:?}");
        assert!(
            key.bytes().all(|b| b.is_ascii_graphic() && b != b','),
            "bad key {key:?}"
        );
        assert!(keys.insert(key), "duplicate key {key:?}");
        assert!(
            value.is_none_or(|v| !v.is_empty()),
            "Some(empty) for {key:?}"
        );
        assert_eq!(metadata.get(key), value);
    }
    assert_eq!(metadata.is_empty(), keys.is_empty());

    // Round trip: the header form parses back to the same pairs, in the same order.
    let header = metadata.to_header();
    assert_eq!(
        Metadata::parse(&header, usize::MAX).as_ref(),
        Ok(&metadata),
        "round trip through {header:?} changed {value:?}"
    );
});
