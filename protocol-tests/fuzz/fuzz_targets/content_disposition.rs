//! `content_disposition`: never panics and never produces a header value that could break
//! out of its field or its quoted filename.
//!
//! Checked on every output:
//! * only printable ASCII: no CR, LF, NUL or other control character;
//! * the form is `inline|attachment[; filename="..."[; filename*=UTF-8''...]]`;
//! * the quoted fallback has no `"` or `\` inside, is 1..=255 bytes, and is present exactly
//!   when the name has a non-control character;
//! * `filename*` is present exactly when the cleaned name is not ASCII, uses only RFC 8187
//!   attr-chars and `%XX`, and decodes to the cleaned name cut to 255 bytes on a char
//!   boundary.
//!
//! Input layout: one byte whose low bit selects `inline`, then the filename (lossy UTF-8).
//! A lone byte with bit 1 clear means no filename at all (with it set, an empty one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tusk::protocol::headers::content_disposition;

const MAX_FILENAME_BYTES: usize = 255;

fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes an RFC 8187 value-chars run, asserting it is well formed.
fn percent_decode(star: &str) -> Vec<u8> {
    let bytes = star.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => panic!("bad percent escape at {i} in {star:?}"),
            }
            i += 3;
        } else {
            assert!(
                is_attr_char(bytes[i]),
                "{:?} unescaped in {star:?}",
                bytes[i]
            );
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn truncate_on_char(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn check(inline: bool, name: Option<&str>) {
    let out = content_disposition(inline, name);
    assert!(
        out.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "non-printable byte in {out:?} for {name:?}"
    );
    let kind = if inline { "inline" } else { "attachment" };
    let rest = out
        .strip_prefix(kind)
        .unwrap_or_else(|| panic!("{out:?} does not start with {kind}"));

    let cleaned: Option<String> = name.map(|n| n.chars().filter(|c| !c.is_control()).collect());
    let cleaned = cleaned.filter(|c| !c.is_empty());
    let Some(cleaned) = cleaned else {
        assert_eq!(rest, "", "filename parameter for an empty name {name:?}");
        return;
    };

    let quoted = rest
        .strip_prefix("; filename=\"")
        .unwrap_or_else(|| panic!("no filename in {out:?} for {name:?}"));
    // Nothing is backslash-escaped, so the first quote must be the closing one.
    let close = quoted
        .find('"')
        .unwrap_or_else(|| panic!("unterminated filename in {out:?}"));
    let fallback = &quoted[..close];
    assert!(!fallback.contains('\\'), "backslash in {out:?}");
    assert!(
        !fallback.is_empty() && fallback.len() <= MAX_FILENAME_BYTES,
        "fallback of {} bytes in {out:?}",
        fallback.len()
    );
    let after = &quoted[close + 1..];

    if cleaned.is_ascii() {
        assert_eq!(
            after, "",
            "unexpected parameters after the filename in {out:?}"
        );
        return;
    }
    let star = after
        .strip_prefix("; filename*=UTF-8''")
        .unwrap_or_else(|| panic!("non-ASCII name {name:?} without filename* in {out:?}"));
    let decoded = percent_decode(star);
    let expected = truncate_on_char(&cleaned, MAX_FILENAME_BYTES);
    assert_eq!(
        decoded,
        expected.as_bytes(),
        "filename* of {out:?} does not decode to the cleaned name"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let inline = flags & 1 == 1;
    if rest.is_empty() && flags & 2 == 0 {
        check(inline, None);
    } else {
        check(inline, Some(&String::from_utf8_lossy(rest)));
    }
});
