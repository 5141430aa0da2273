//! GET downloads (tusk's own extension; tus 1.0.0 does not define GET).

use protocol_tests::*;

fn finished(s: &TestServer, data: &[u8], meta: Option<&str>) -> String {
    let len = data.len().to_string();
    let mut headers = vec![("Upload-Length", len.as_str())];
    if let Some(m) = meta {
        headers.push(("Upload-Metadata", m));
    }
    let (url, _) = create_with(s, &headers);
    if !data.is_empty() {
        patch_ok(&url, 0, data);
    }
    url
}

/// tusk: GET of a finished upload (no `Tus-Resumable` needed) -> 200 with the bytes,
/// `Content-Length`, `ETag`, `Accept-Ranges: bytes`, `X-Content-Type-Options: nosniff`.
#[test]
fn get_returns_finished_upload_with_headers() {
    let s = TestServer::spawn();
    let data = pattern(60, 12_345);
    let url = finished(&s, &data, None);
    let r = get(&url);
    assert_status(&r, &[200], "GET");
    assert_eq!(r.body, data);
    assert_eq!(
        r.header_u64("Content-Length"),
        data.len() as u64,
        "{}",
        r.describe()
    );
    assert!(r.has("ETag"), "{}", r.describe());
    assert_eq!(
        r.header("Accept-Ranges")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bytes")
    );
    assert_eq!(
        r.header("X-Content-Type-Options")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("nosniff")
    );
}

/// tusk: `Range: bytes=a-b` -> 206 with `Content-Range` and those bytes.
#[test]
fn range_request_returns_partial_content() {
    let s = TestServer::spawn();
    let data = pattern(61, 1000);
    let url = finished(&s, &data, None);
    let r = Request::new("GET", &url)
        .header("Range", "bytes=100-199")
        .send();
    assert_status(&r, &[206], "GET bytes=100-199");
    assert_eq!(
        r.header("Content-Range"),
        Some("bytes 100-199/1000"),
        "{}",
        r.describe()
    );
    assert_eq!(r.body, &data[100..200]);
    let r = Request::new("GET", &url)
        .header("Range", "bytes=990-")
        .send();
    assert_status(&r, &[206], "GET bytes=990-");
    assert_eq!(r.body, &data[990..]);
    let r = Request::new("GET", &url)
        .header("Range", "bytes=-10")
        .send();
    assert_status(&r, &[206], "GET bytes=-10");
    assert_eq!(r.body, &data[990..]);
}

/// tusk: an unsatisfiable range -> 416 with `Content-Range: bytes */len`.
#[test]
fn unsatisfiable_range_is_416() {
    let s = TestServer::spawn();
    let url = finished(&s, &pattern(62, 100), None);
    let r = Request::new("GET", &url)
        .header("Range", "bytes=100-200")
        .send();
    assert_status(&r, &[416], "GET bytes=100-200 of 100 bytes");
    assert_eq!(
        r.header("Content-Range"),
        Some("bytes */100"),
        "{}",
        r.describe()
    );
}

/// tusk: `If-Range` with the current ETag -> 206; with another ETag -> 200 full body.
#[test]
fn if_range_honours_etag() {
    let s = TestServer::spawn();
    let data = pattern(63, 500);
    let url = finished(&s, &data, None);
    let etag = get(&url).header("ETag").expect("ETag").to_string();
    let r = Request::new("GET", &url)
        .header("Range", "bytes=0-9")
        .header("If-Range", &etag)
        .send();
    assert_status(&r, &[206], "If-Range with the current ETag");
    assert_eq!(r.body, &data[..10]);
    let r = Request::new("GET", &url)
        .header("Range", "bytes=0-9")
        .header("If-Range", "\"definitely-not-the-etag\"")
        .send();
    assert_status(&r, &[200], "If-Range with another ETag");
    assert_eq!(r.body, data);
}

/// tusk: metadata `filetype` of an active type (text/html, image/svg+xml) is not
/// served as that type and is sent as an attachment.
#[test]
fn active_content_types_are_served_as_attachment() {
    let s = TestServer::spawn();
    for ft in ["text/html", "image/svg+xml"] {
        let meta = metadata(&[("filetype", ft.as_bytes()), ("filename", b"x.html")]);
        let url = finished(&s, b"<script>alert(1)</script>", Some(&meta));
        let r = get(&url);
        assert_status(&r, &[200], "GET");
        let ct = r.header("Content-Type").unwrap_or("").to_ascii_lowercase();
        assert!(!ct.starts_with(ft), "served as {ct}: {}", r.describe());
        let cd = r
            .header("Content-Disposition")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            cd.starts_with("attachment"),
            "filetype {ft}: {}",
            r.describe()
        );
    }
}

/// tusk: a passive type (image/png) is served with that type, inline.
#[test]
fn safe_content_type_is_served_inline() {
    let s = TestServer::spawn();
    let meta = metadata(&[("filetype", b"image/png"), ("filename", b"pic.png")]);
    let url = finished(&s, b"\x89PNG\r\n\x1a\n", Some(&meta));
    let r = get(&url);
    assert_status(&r, &[200], "GET");
    assert_eq!(
        r.header("Content-Type")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("image/png"),
        "{}",
        r.describe()
    );
    let cd = r
        .header("Content-Disposition")
        .unwrap_or("inline")
        .to_ascii_lowercase();
    assert!(cd.starts_with("inline"), "{}", r.describe());
}

/// "Servers SHOULD carefully validate metadata values or sanitize them before using
/// them as header values to avoid header smuggling": a filename with quotes and
/// CR/LF never reaches Content-Disposition raw.
#[test]
fn filename_is_sanitized_in_content_disposition() {
    let s = TestServer::spawn();
    let evil = b"a\"b\r\nSet-Cookie: x=1\r\n\".txt";
    let meta = metadata(&[("filename", evil), ("filetype", b"text/plain")]);
    let url = finished(&s, b"data", Some(&meta));
    let r = get(&url);
    assert_status(&r, &[200], "GET");
    assert!(!r.has("Set-Cookie"), "header smuggled: {}", r.describe());
    let cd = r.header_joined("Content-Disposition").unwrap_or_default();
    assert!(!cd.contains('\r') && !cd.contains('\n'), "{cd:?}");
    if let Some(i) = cd.find("filename=\"") {
        let rest = &cd[i + "filename=\"".len()..];
        let end = rest.rfind('"').expect("unterminated filename");
        let name = &rest[..end];
        let unescaped_quote = name
            .char_indices()
            .any(|(j, c)| c == '"' && !name[..j].ends_with('\\'));
        assert!(!unescaped_quote, "raw quote inside filename: {cd:?}");
    }
}

/// tusk: GET of an unknown upload -> 404.
#[test]
fn get_of_unknown_upload_is_404() {
    let s = TestServer::spawn();
    let r = get(&s.url("0123456789abcdef0123456789abcdef"));
    assert_status(&r, &[404], "GET unknown upload");
}
