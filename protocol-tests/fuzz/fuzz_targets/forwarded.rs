//! `forwarded_origin`: never panics, and only ever returns a host made of the allowed
//! characters and a proto of `http` or `https`, since both are echoed into Location URLs.
//!
//! Input layout: up to three parts separated by 0xFF (never valid in UTF-8): Forwarded,
//! X-Forwarded-Host, X-Forwarded-Proto. A missing part or one that is not UTF-8 is `None`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::forwarded_origin;

fuzz_target!(|data: &[u8]| {
    let mut parts = data
        .split(|&b| b == 0xFF)
        .map(|p| std::str::from_utf8(p).ok());
    let forwarded = parts.next().flatten();
    let x_host = parts.next().flatten();
    let x_proto = parts.next().flatten();

    let (host, proto) = forwarded_origin(forwarded, x_host, x_proto);
    if let Some(host) = &host {
        assert!(!host.is_empty() && host.len() <= 300, "host {host:?}");
        assert!(
            host.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')),
            "host {host:?} from {forwarded:?} / {x_host:?}"
        );
    }
    if let Some(proto) = &proto {
        assert!(
            proto == "http" || proto == "https",
            "proto {proto:?} from {forwarded:?} / {x_proto:?}"
        );
    }
});
