//! `parse_checksum` (Upload-Checksum): never panics; an accepted digest has exactly the
//! algorithm's length, and the algorithm is the one named.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::{parse_checksum, HeaderError};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match parse_checksum(value) {
        Ok((algorithm, digest)) => {
            assert_eq!(digest.len(), algorithm.digest_len(), "{value:?}");
            let name = value
                .trim_matches([' ', '\t'])
                .split(' ')
                .next()
                .unwrap_or("");
            assert!(algorithm.name().eq_ignore_ascii_case(name), "{value:?}");
        }
        Err(HeaderError::UnsupportedChecksumAlgorithm(name)) => {
            assert!(name.len() <= 64, "unbounded algorithm name kept: {name:?}");
        }
        Err(_) => {}
    }
});
