//! Core protocol: headers, HEAD, PATCH, OPTIONS, Tus-Resumable negotiation and
//! X-HTTP-Method-Override.

use protocol_tests::*;

const EXPECTED_EXTENSIONS: [&str; 9] = [
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "expiration",
    "checksum",
    "checksum-trailer",
    "termination",
    "concatenation",
    "concatenation-unfinished",
];

/// "A successful response indicated by the `204 No Content` or `200 OK` status
/// MUST contain the `Tus-Version` header."
#[test]
fn options_response_contains_tus_version() {
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint()).send();
    assert_status(&r, &[200, 204], "OPTIONS");
    let versions = r.header_list("Tus-Version");
    assert!(
        versions.iter().any(|v| v == "1.0.0"),
        "Tus-Version lacks 1.0.0: {}",
        r.describe()
    );
    assert_tus_resumable(&r, "OPTIONS");
}

/// "The `Tus-Extension` response header MUST be a comma-separated list of the
/// extensions supported by the Server." (tusk supports exactly this set.)
#[test]
fn options_lists_supported_extensions() {
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint()).send();
    assert_status(&r, &[200, 204], "OPTIONS");
    let mut got = r.header_list("Tus-Extension");
    got.sort();
    let mut want: Vec<String> = EXPECTED_EXTENSIONS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "Tus-Extension: {}", r.describe());
}

/// "The Client SHOULD NOT include the `Tus-Resumable` header in the request and the
/// Server MUST ignore the header." An OPTIONS with an unsupported version still works.
#[test]
fn options_ignores_tus_resumable_header() {
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint())
        .header("Tus-Resumable", "0.2.2")
        .send();
    assert_status(&r, &[200, 204], "OPTIONS with Tus-Resumable: 0.2.2");
    assert!(r.has("Tus-Version"), "{}", r.describe());
}

/// "The Server SHOULD set [Tus-Max-Size] if there is a known hard limit." tusk
/// sends it only when `max_size > 0`, and then equal to it.
#[test]
fn options_tus_max_size_matches_configured_limit() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[limits]\nmax_size = 1048576\n");
    let r = Request::new("OPTIONS", s.endpoint()).send();
    assert_status(&r, &[200, 204], "OPTIONS");
    assert_eq!(r.header_u64("Tus-Max-Size"), 1_048_576, "{}", r.describe());

    let s = TestServer::spawn_with_config("[limits]\nmax_size = \"2MiB\"\n");
    let r = Request::new("OPTIONS", s.endpoint()).send();
    assert_eq!(
        r.header_u64("Tus-Max-Size"),
        2 * 1_048_576,
        "{}",
        r.describe()
    );
}

/// tusk: with the default (unlimited) `max_size`, no `Tus-Max-Size` is sent.
#[test]
fn options_omits_tus_max_size_when_unlimited() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint()).send();
    assert_status(&r, &[200, 204], "OPTIONS");
    assert!(!r.has("Tus-Max-Size"), "{}", r.describe());
}

/// "The `Tus-Resumable` header MUST be included in every request and response except
/// for `OPTIONS` requests." tusk also sends it on errors and OPTIONS.
#[test]
fn every_response_carries_tus_resumable() {
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint()).send();
    assert_tus_resumable(&r, "OPTIONS");
    let (url, created) = create_with(&s, &[("Upload-Length", "4")]);
    assert_tus_resumable(&created, "POST 201");
    assert_tus_resumable(&head(&url), "HEAD 200");
    assert_tus_resumable(&patch(&url, 0, b"ab"), "PATCH 204");
    assert_tus_resumable(&patch(&url, 0, b"ab"), "PATCH 409");
    assert_tus_resumable(
        &head(&s.url("0123456789abcdef0123456789abcdef")),
        "HEAD 404",
    );
    let unknown = format!("{}{}", url, "x");
    assert_tus_resumable(&head(&unknown), "HEAD 404 (unknown id)");
    let r = Request::new("POST", s.endpoint())
        .header("Upload-Length", "4")
        .send();
    assert_tus_resumable(&r, "POST 412");
    let r = tus("PATCH", &url)
        .header("Upload-Offset", "2")
        .header("Content-Type", "text/plain")
        .body(b"cd".to_vec())
        .send();
    assert_tus_resumable(&r, "PATCH 415");
}

/// tusk: error responses are `text/plain` with a one-line, non-empty reason.
#[test]
fn error_responses_are_plain_text_with_a_reason() {
    let s = TestServer::spawn();
    let url = create(&s, 4);
    let errors = vec![
        ("PATCH 409", patch(&url, 3, b"x")),
        (
            "PATCH 415",
            tus("PATCH", &url)
                .header("Upload-Offset", "0")
                .header("Content-Type", "text/plain")
                .body(b"x".to_vec())
                .send(),
        ),
        (
            "POST 412",
            Request::new("POST", s.endpoint())
                .header("Upload-Length", "4")
                .send(),
        ),
        ("PATCH 404", patch(&format!("{url}0"), 0, b"x")),
        (
            "POST 400",
            tus("POST", s.endpoint())
                .header("Upload-Length", "nope")
                .send(),
        ),
    ];
    for (what, r) in errors {
        assert!(r.status >= 400, "{what}: {}", r.describe());
        let ct = r.header("Content-Type").unwrap_or("").to_ascii_lowercase();
        assert!(
            ct.starts_with("text/plain"),
            "{what}: Content-Type {ct:?}: {}",
            r.describe()
        );
        let text = r.text();
        let text = text.trim_end_matches(['\r', '\n']);
        assert!(
            !text.trim().is_empty(),
            "{what}: empty reason: {}",
            r.describe()
        );
        assert!(
            !text.contains('\n'),
            "{what}: reason is not one line: {}",
            r.describe()
        );
    }
}

/// "If the version specified by the Client is not supported by the Server, it MUST
/// respond with the `412 Precondition Failed` status and MUST include the
/// `Tus-Version` header into the response. In addition, the Server MUST NOT process
/// the request." (A missing header is treated the same by tusk.)
#[test]
fn unsupported_tus_resumable_version_is_rejected_with_412() {
    let s = TestServer::spawn();
    for version in [None, Some("0.2.2"), Some("2.0.0"), Some("")] {
        let mut req = Request::new("POST", s.endpoint()).header("Upload-Length", "10");
        if let Some(v) = version {
            req = req.header("Tus-Resumable", v);
        }
        let r = req.send();
        assert_status(&r, &[412], &format!("POST with Tus-Resumable {version:?}"));
        assert!(
            r.has("Tus-Version"),
            "412 without Tus-Version: {}",
            r.describe()
        );
        assert!(!r.has("Location"), "412 but Location set: {}", r.describe());
    }
}

/// "the Server MUST NOT process the request": a POST without `Tus-Resumable`
/// creates nothing.
#[test]
fn post_without_tus_resumable_creates_nothing() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    let r = Request::new("POST", s.endpoint())
        .header("Upload-Length", "10")
        .send();
    assert_status(&r, &[412], "POST without Tus-Resumable");
    let uploads = s.data_dir().join("uploads");
    // Upload files live in subdirectories of it (one per first two hex digits of the id).
    let count: usize = std::fs::read_dir(&uploads)
        .map(|shards| {
            shards
                .flatten()
                .map(|shard| std::fs::read_dir(shard.path()).map_or(0, |d| d.count()))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(
        count,
        0,
        "a rejected POST left files in {}",
        uploads.display()
    );
}

/// "the Server MUST NOT process the request": PATCH and DELETE without
/// `Tus-Resumable` (or with 0.2.2) get 412 and leave the upload untouched.
#[test]
fn patch_and_delete_without_tus_resumable_are_not_processed() {
    let s = TestServer::spawn();
    let url = create(&s, 6);
    patch_ok(&url, 0, b"abc");
    let r = Request::new("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "3")
        .body(b"def".to_vec())
        .send();
    assert_status(&r, &[412], "PATCH without Tus-Resumable");
    assert!(r.has("Tus-Version"), "{}", r.describe());
    let r = patch_req(&url, 3, b"def")
        .without_header("Tus-Resumable")
        .header("Tus-Resumable", "0.2.2")
        .send();
    assert_status(&r, &[412], "PATCH with Tus-Resumable 0.2.2");
    let r = Request::new("DELETE", &url).send();
    assert_status(&r, &[412], "DELETE without Tus-Resumable");
    let r = Request::new("HEAD", &url).send();
    assert_status(&r, &[412], "HEAD without Tus-Resumable");
    assert_eq!(head_offset(&url), 3, "rejected requests changed the upload");
}

/// "The Server MUST always include the `Upload-Offset` header in the response for a
/// `HEAD` request, even if the offset is `0`, or the upload is already considered
/// completed. If the size of the upload is known, the Server MUST include the
/// `Upload-Length` header."
#[test]
fn head_includes_upload_offset_and_length() {
    let s = TestServer::spawn();
    let url = create(&s, 5);
    let r = head(&url);
    assert_status(&r, &[200], "HEAD new upload");
    assert_eq!(r.header_u64("Upload-Offset"), 0, "{}", r.describe());
    assert_eq!(r.header_u64("Upload-Length"), 5, "{}", r.describe());
    patch_ok(&url, 0, b"hello");
    let r = head(&url);
    assert_status(&r, &[200], "HEAD finished upload");
    assert_eq!(r.header_u64("Upload-Offset"), 5, "{}", r.describe());
    assert_eq!(r.header_u64("Upload-Length"), 5, "{}", r.describe());
}

/// "The Server MUST prevent the client and/or proxies from caching the response by
/// adding the `Cache-Control: no-store` header to the response."
#[test]
fn head_response_is_not_cacheable() {
    let s = TestServer::spawn();
    let url = create(&s, 5);
    let r = head(&url);
    let cc = r.header_list("Cache-Control");
    assert!(cc.iter().any(|v| v == "no-store"), "{}", r.describe());
}

/// "If the resource is not found, the Server SHOULD return either the `404 Not
/// Found`, `410 Gone` or `403 Forbidden` status without the `Upload-Offset` header."
/// (tusk: 404.)
#[test]
fn head_of_unknown_upload_is_404_without_offset() {
    let s = TestServer::spawn();
    let r = head(&s.url("0123456789abcdef0123456789abcdef"));
    assert_status(&r, &[404], "HEAD unknown upload");
    assert!(!r.has("Upload-Offset"), "{}", r.describe());
}

/// "The Server MUST acknowledge successful `PATCH` requests with the `204 No Content`
/// status. It MUST include the `Upload-Offset` header containing the new offset."
#[test]
fn patch_success_returns_204_with_new_offset() {
    let s = TestServer::spawn();
    let data = pattern(1, 1000);
    let url = create(&s, 1000);
    let r = patch(&url, 0, &data[..400]);
    assert_status(&r, &[204], "first PATCH");
    assert_eq!(r.header_u64("Upload-Offset"), 400, "{}", r.describe());
    assert!(r.body.is_empty());
    patch_ok(&url, 400, &data[400..]);
    assert_eq!(head_offset(&url), 1000);
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}

/// "The Server SHOULD accept `PATCH` requests against any upload URL and apply the
/// bytes contained in the message at the given offset": many small PATCHes build
/// the exact file.
#[test]
fn patch_applies_bytes_at_offset_in_sequence() {
    let s = TestServer::spawn();
    let data = pattern(2, 10_000);
    let url = create(&s, data.len() as u64);
    let mut off = 0usize;
    for size in [1usize, 7, 512, 1, 4096, 3000, 2383] {
        patch_ok(&url, off as u64, &data[off..off + size]);
        off += size;
    }
    assert_eq!(off, data.len());
    assert_eq!(get_bytes(&url), data);
}

/// "The new offset MUST be the sum of the offset before the `PATCH` request and the
/// number of bytes received": an empty PATCH leaves the offset as it is.
#[test]
fn empty_patch_keeps_offset() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abc");
    let r = patch(&url, 3, b"");
    assert_status(&r, &[204], "empty PATCH");
    assert_eq!(r.header_u64("Upload-Offset"), 3);
    assert_eq!(head_offset(&url), 3);
}

/// A PATCH body sent with `Transfer-Encoding: chunked` is applied like any other.
#[test]
fn patch_with_chunked_body_is_applied() {
    let s = TestServer::spawn();
    let data = pattern(3, 3000);
    let url = create(&s, 3000);
    let r = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .chunked(
            vec![
                data[..1].to_vec(),
                data[1..1000].to_vec(),
                data[1000..].to_vec(),
            ],
            vec![],
        )
        .send();
    assert_status(&r, &[204], "chunked PATCH");
    assert_eq!(r.header_u64("Upload-Offset"), 3000, "{}", r.describe());
    assert_eq!(get_bytes(&url), data);
}

/// "All `PATCH` requests MUST use `Content-Type: application/offset+octet-stream`,
/// otherwise the server SHOULD return a `415 Unsupported Media Type` status."
#[test]
fn patch_without_offset_octet_stream_is_415() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    for ct in [Some("application/octet-stream"), Some("text/plain"), None] {
        let mut req = tus("PATCH", &url)
            .header("Upload-Offset", "0")
            .body(b"abc".to_vec());
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let r = req.send();
        assert_status(&r, &[415], &format!("PATCH with Content-Type {ct:?}"));
    }
    assert_eq!(head_offset(&url), 0, "a 415 PATCH changed the offset");
}

/// "The `Upload-Offset` request and response header indicates a byte offset within a
/// resource. The value MUST be a non-negative integer." Missing or invalid -> 400.
#[test]
fn patch_with_missing_or_invalid_upload_offset_is_400() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    let r = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .body(b"abc".to_vec())
        .send();
    assert_status(&r, &[400], "PATCH without Upload-Offset");
    for bad in [
        "-1",
        "abc",
        "1.5",
        "",
        "0x0",
        "+0",
        "99999999999999999999999",
    ] {
        let r = tus("PATCH", &url)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", bad)
            .body(b"abc".to_vec())
            .send();
        assert_status(&r, &[400], &format!("PATCH with Upload-Offset {bad:?}"));
    }
    assert_eq!(head_offset(&url), 0);
}

/// "If the offsets do not match, the Server MUST respond with the `409 Conflict`
/// status without modifying the upload resource."
#[test]
fn patch_with_mismatched_offset_is_409_and_changes_nothing() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abcd");
    for off in [0u64, 2, 5, 10] {
        let r = patch(&url, off, b"zz");
        assert_status(&r, &[409], &format!("PATCH at offset {off} (current 4)"));
    }
    assert_eq!(head_offset(&url), 4);
    patch_ok(&url, 4, b"efghij");
    assert_eq!(get_bytes(&url), b"abcdefghij");
}

/// tusk: a body that would take the upload past `Upload-Length` is rejected with
/// 413 and the offset is unchanged (Content-Length body).
#[test]
fn patch_beyond_upload_length_is_413() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abcd");
    let r = patch(&url, 4, b"0123456789");
    assert_status(&r, &[413], "PATCH past Upload-Length");
    assert_eq!(head_offset(&url), 4);
    patch_ok(&url, 4, b"efghij");
    assert_eq!(get_bytes(&url), b"abcdefghij");
}

/// tusk: the same with a chunked body, whose size the server only learns while
/// reading: 413 and the offset is unchanged.
#[test]
fn chunked_patch_beyond_upload_length_is_413() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abcd");
    let r = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "4")
        .chunked(vec![b"0123".to_vec(), b"456789".to_vec()], vec![])
        .send();
    assert_status(&r, &[413], "chunked PATCH past Upload-Length");
    assert_eq!(head_offset(&url), 4);
    patch_ok(&url, 4, b"efghij");
    assert_eq!(get_bytes(&url), b"abcdefghij");
}

/// "If the server receives a `PATCH` request against a non-existent resource it
/// SHOULD return a `404 Not Found` status."
#[test]
fn patch_of_unknown_upload_is_404() {
    let s = TestServer::spawn();
    let r = patch(&s.url("0123456789abcdef0123456789abcdef"), 0, b"abc");
    assert_status(&r, &[404], "PATCH unknown upload");
}

/// "The `X-HTTP-Method-Override` request header MUST be a string which MUST be
/// interpreted as the request's method by the Server": POST + override PATCH.
#[test]
fn method_override_post_as_patch() {
    let s = TestServer::spawn();
    let url = create(&s, 5);
    let r = tus("POST", &url)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(b"hello".to_vec())
        .send();
    assert_status(&r, &[204], "POST overridden to PATCH");
    assert_eq!(r.header_u64("Upload-Offset"), 5, "{}", r.describe());
    assert_eq!(get_bytes(&url), b"hello");
}

/// X-HTTP-Method-Override: POST + override DELETE terminates the upload.
#[test]
fn method_override_post_as_delete() {
    let s = TestServer::spawn();
    let url = create(&s, 5);
    let r = tus("POST", &url)
        .header("X-HTTP-Method-Override", "DELETE")
        .send();
    assert_status(&r, &[204], "POST overridden to DELETE");
    assert_status(&head(&url), &[404, 410], "HEAD after overridden DELETE");
}

/// tusk honours `X-HTTP-Method-Override` only on a POST (README): it is for clients whose
/// proxies pass nothing but GET and POST. On a GET or HEAD (which caches and logs take for a
/// read) or a PUT it is ignored: the upload is neither deleted nor written.
#[test]
fn method_override_is_honoured_only_on_post() {
    let s = TestServer::spawn();
    // Finished: the s3 backend serves an upload's bytes only once it is complete.
    let url = create(&s, 5);
    patch_ok(&url, 0, b"hello");
    let r = Request::new("GET", &url)
        .header("X-HTTP-Method-Override", "DELETE")
        .send();
    assert_status(&r, &[200], "GET with an override to DELETE is a GET");
    assert_eq!(r.body, b"hello");
    let r = tus("HEAD", &url)
        .header("X-HTTP-Method-Override", "DELETE")
        .send();
    assert_status(&r, &[200], "HEAD with an override to DELETE is a HEAD");
    let other = create(&s, 5);
    patch_ok(&other, 0, b"he");
    let r = tus("PUT", &other)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "2")
        .body(b"llo".to_vec())
        .send();
    assert_status(&r, &[405], "PUT with an override to PATCH is a PUT");
    assert_eq!(head_offset(&other), 2, "nothing was written");
    assert_eq!(get_bytes(&url), b"hello", "nothing was deleted");
}
