//! `HumanDuration::parse` (config durations such as "30s"): never panics, and whatever it
//! accepts prints (Display, which is also its serialized form) to a string that parses back
//! to the same duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::config::HumanDuration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(duration) = HumanDuration::parse(text) else {
        return;
    };
    let shown = duration.to_string();
    assert_eq!(
        HumanDuration::parse(&shown),
        Ok(duration),
        "{text:?} -> {duration:?} -> {shown:?}"
    );
});
