//! `ByteSize::parse` (config sizes such as "16KiB"): never panics, and whatever it accepts
//! prints (Display, which is also its serialized form) to a string that parses back to the
//! same size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::config::ByteSize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(size) = ByteSize::parse(text) else {
        return;
    };
    let shown = size.to_string();
    assert_eq!(
        ByteSize::parse(&shown),
        Ok(size),
        "{text:?} -> {size:?} -> {shown:?}"
    );
});
