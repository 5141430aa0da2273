//! `parse_concat` (Upload-Concat): never panics, and a `final;` list is non-empty, bounded,
//! and made of non-empty URLs without spaces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::{parse_concat, ConcatRequest, MAX_CONCAT_URLS};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let trimmed = value.trim_matches([' ', '\t']);
    match parse_concat(value) {
        Ok(ConcatRequest::Partial) => assert_eq!(trimmed, "partial"),
        Ok(ConcatRequest::Final(urls)) => {
            assert!(trimmed.starts_with("final;"), "{value:?}");
            assert!((1..=MAX_CONCAT_URLS).contains(&urls.len()), "{value:?}");
            for url in &urls {
                assert!(
                    !url.is_empty() && !url.contains(' '),
                    "{url:?} in {value:?}"
                );
            }
        }
        Err(_) => {}
    }
});
