//! `parse_u64` (Upload-Length / Upload-Offset) against a reference built on `str::parse`,
//! plus the two exact-match helpers `parse_defer_length` and `is_supported_version`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::{
    is_supported_version, parse_defer_length, parse_u64, HeaderError, TUS_VERSION,
};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let trimmed = value.trim_matches([' ', '\t']);
    let all_digits = !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit());
    let expected = if !all_digits {
        // `str::parse` would also accept a leading '+', which the header grammar forbids.
        Err(HeaderError::InvalidInteger("Upload-Length"))
    } else {
        trimmed
            .parse::<u64>()
            .map_err(|_| HeaderError::IntegerOverflow("Upload-Length"))
    };
    assert_eq!(parse_u64("Upload-Length", value), expected, "{value:?}");

    assert_eq!(
        parse_defer_length(value).is_ok(),
        trimmed == "1",
        "{value:?}"
    );
    assert_eq!(
        is_supported_version(value),
        trimmed == TUS_VERSION,
        "{value:?}"
    );
});
