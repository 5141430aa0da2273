//! `inline_content_type`: never panics, never lets an active type (HTML, SVG, XML, script)
//! be served inline, and only ever returns a bare, lowercase `type/subtype` from the
//! allow-list, equal to the declared type's essence.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::inline_content_type;

const EXACT: [&str; 8] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "application/pdf",
    "text/plain",
];

const NEVER: [&str; 9] = [
    "text/html",
    "image/svg+xml",
    "application/xhtml+xml",
    "text/xml",
    "application/xml",
    "application/javascript",
    "text/javascript",
    "application/ecmascript",
    "application/octet-stream",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    let Ok(declared) = std::str::from_utf8(data) else {
        return;
    };
    let Some(essence) = inline_content_type(declared) else {
        return;
    };
    assert!(
        !NEVER.contains(&essence.as_str()),
        "{declared:?} -> {essence:?}"
    );
    let (kind, subtype) = essence
        .split_once('/')
        .unwrap_or_else(|| panic!("{declared:?} -> {essence:?} has no '/'"));
    assert!(
        !kind.is_empty() && !subtype.is_empty() && subtype != "*",
        "{declared:?} -> {essence:?}"
    );
    assert!(
        kind.bytes().chain(subtype.bytes()).all(is_tchar),
        "{declared:?} -> {essence:?} is not a bare media type"
    );
    assert!(
        !essence.bytes().any(|b| b.is_ascii_uppercase()),
        "{declared:?} -> {essence:?} is not lowercase"
    );
    assert!(
        EXACT.contains(&essence.as_str()) || kind == "audio" || kind == "video",
        "{declared:?} -> {essence:?} is not on the allow-list"
    );
    let declared_essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim_matches([' ', '\t'])
        .to_ascii_lowercase();
    assert_eq!(essence, declared_essence, "{declared:?}");
});
