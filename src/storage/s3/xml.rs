//! The little XML tusk reads from S3: a handful of elements found by name, text unescaped.
//!
//! S3's answers are flat, machine-written documents (no CDATA, no comments inside the elements
//! we read, no namespace prefixes), so finding `<Name>…</Name>` by scanning is enough and
//! spares a parser dependency. An element whose name has another as prefix (`<Part>` and
//! `<PartNumber>`) is told apart by the character after the name.

use std::borrow::Cow;

/// The raw inner text of every `<name>` element in `xml`, in document order (elements of the
/// same name must not nest, which holds for everything S3 sends that we read).
pub fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some((inner, after)) = next_element(rest, name) {
        found.push(inner);
        rest = after;
    }
    found
}

/// The unescaped text of the first `<name>` element, if any.
pub fn text(xml: &str, name: &str) -> Option<String> {
    next_element(xml, name).map(|(inner, _)| unescape(inner).into_owned())
}

/// The first `<name>` element of `xml`: its inner text and what follows its end tag.
fn next_element<'a>(xml: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let mut from = 0;
    loop {
        let at = from + xml[from..].find('<')?;
        let after_lt = &xml[at + 1..];
        from = at + 1;
        let Some(after_name) = after_lt.strip_prefix(name) else {
            continue;
        };
        // `<Part>` must not match `<PartNumber>`.
        match after_name.bytes().next() {
            Some(b'>') | Some(b' ') | Some(b'\t') | Some(b'\r') | Some(b'\n') | Some(b'/') => {}
            _ => continue,
        }
        let close_open = after_name.find('>')?;
        let tag_rest = &after_name[..close_open];
        let body_start = at + 1 + name.len() + close_open + 1;
        if tag_rest.ends_with('/') {
            // `<Name/>`: present and empty.
            return Some(("", &xml[body_start..]));
        }
        let end_tag = format!("</{name}>");
        let body_len = xml[body_start..].find(&end_tag)?;
        let inner = &xml[body_start..body_start + body_len];
        return Some((inner, &xml[body_start + body_len + end_tag.len()..]));
    }
}

/// Replace the five predefined entities and numeric character references.
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            // Not an entity we know: keep the ampersand literally.
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Escape text for an element body.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST_PARTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><Key>k</Key><UploadId>u&amp;1</UploadId>
  <PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker>
  <IsTruncated>true</IsTruncated>
  <Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag><Size>5</Size></Part>
  <Part>
    <PartNumber>2</PartNumber><ETag>&#34;bb&#x22;</ETag><Size>6</Size>
  </Part>
  <Empty/>
</ListPartsResult>"#;

    #[test]
    fn finds_elements_by_exact_name() {
        let parts = elements(LIST_PARTS, "Part");
        assert_eq!(parts.len(), 2);
        assert_eq!(text(parts[0], "PartNumber").as_deref(), Some("1"));
        assert_eq!(text(parts[1], "ETag").as_deref(), Some("\"bb\""));
        assert_eq!(text(LIST_PARTS, "UploadId").as_deref(), Some("u&1"));
        assert_eq!(
            text(LIST_PARTS, "NextPartNumberMarker").as_deref(),
            Some("2")
        );
        assert_eq!(text(LIST_PARTS, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(text(LIST_PARTS, "Empty").as_deref(), Some(""));
        assert_eq!(text(LIST_PARTS, "Missing"), None);
        assert_eq!(text(LIST_PARTS, "Par"), None);
    }

    #[test]
    fn unescape_and_escape_round_trip() {
        assert_eq!(
            unescape("a&lt;b&gt;&amp;&apos;&#233;&bogus;"),
            "a<b>&'é&bogus;"
        );
        assert_eq!(unescape("plain"), "plain");
        let text = "\"x\" & <y>";
        assert_eq!(unescape(&escape(text)), text);
    }
}
