//! Concatenation and concatenation-unfinished extensions.

use std::time::Duration;

use protocol_tests::*;

fn create_partial(s: &TestServer, data: &[u8]) -> String {
    let (url, _) = create_with(
        s,
        &[
            ("Upload-Concat", "partial"),
            ("Upload-Length", &data.len().to_string()),
        ],
    );
    url
}

fn fill(url: &str, data: &[u8]) {
    patch_ok(url, 0, data);
}

fn post_final(s: &TestServer, parts: &[&str], extra: &[(&str, &str)]) -> Response {
    let mut req =
        tus("POST", s.endpoint()).header("Upload-Concat", &format!("final;{}", parts.join(" ")));
    for (n, v) in extra {
        req = req.header(n, v);
    }
    req.send()
}

/// "A partial upload represents a chunk of a file. It is constructed by including the
/// `Upload-Concat: partial` header". "Response to `HEAD` request against partial or
/// final upload MUST include the `Upload-Concat` header and its value as received".
#[test]
fn partial_upload_reports_upload_concat_partial() {
    let s = TestServer::spawn();
    let url = create_partial(&s, b"hello");
    let r = head(&url);
    assert_status(&r, &[200], "HEAD partial");
    assert_eq!(
        r.header("Upload-Concat"),
        Some("partial"),
        "{}",
        r.describe()
    );
    // "The response to a HEAD request for a partial upload MUST contain the
    // `Upload-Offset` header."
    assert_eq!(r.header_u64("Upload-Offset"), 0);
    assert_eq!(r.header_u64("Upload-Length"), 5);
}

/// "Multiple partial uploads are concatenated into a final upload in the specified
/// order." Partial URLs given as absolute URLs.
#[test]
fn final_upload_concatenates_partials_in_order() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"hello");
    let b = create_partial(&s, b" world");
    fill(&a, b"hello");
    fill(&b, b" world");
    let r = post_final(&s, &[&b, &a], &[]);
    assert_status(&r, &[201], "POST final");
    let fin = s.url(r.header("Location").unwrap());
    assert_eq!(get_bytes(&fin), b" worldhello");
    let r = post_final(&s, &[&a, &b], &[]);
    assert_status(&r, &[201], "POST final (other order)");
    let fin = s.url(r.header("Location").unwrap());
    assert_eq!(get_bytes(&fin), b"hello world");
}

/// "The partial uploads URLs MAY be absolute or relative": paths like `/files/<id>`.
#[test]
fn final_upload_accepts_relative_partial_urls() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"foo");
    let b = create_partial(&s, b"bar");
    fill(&a, b"foo");
    fill(&b, b"bar");
    let (pa, pb) = (path_of(&a), path_of(&b));
    let r = post_final(&s, &[&pa, &pb], &[]);
    assert_status(&r, &[201], "POST final with relative URLs");
    let fin = s.url(r.header("Location").unwrap());
    assert_eq!(get_bytes(&fin), b"foobar");
}

/// "The length of the final upload MUST be the sum of the length of all partial
/// uploads." "After successful concatenation, the `Upload-Offset` and `Upload-Length`
/// MUST be set and their values MUST be equal." HEAD shows `Upload-Concat: final;...`.
#[test]
fn final_upload_head_shows_sum_length_and_concat() {
    let s = TestServer::spawn();
    let d1 = pattern(40, 1000);
    let d2 = pattern(41, 2345);
    let d3 = pattern(42, 1);
    let urls: Vec<String> = [&d1, &d2, &d3]
        .iter()
        .map(|d| create_partial(&s, d))
        .collect();
    for (u, d) in urls.iter().zip([&d1, &d2, &d3]) {
        fill(u, d);
    }
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let r = post_final(&s, &refs, &[]);
    assert_status(&r, &[201], "POST final");
    let fin = s.url(r.header("Location").unwrap());
    let h = head(&fin);
    assert_status(&h, &[200], "HEAD final");
    let concat = h.header("Upload-Concat").unwrap_or("");
    assert!(concat.starts_with("final;"), "{}", h.describe());
    assert_eq!(h.header_u64("Upload-Length"), 3346, "{}", h.describe());
    assert_eq!(h.header_u64("Upload-Offset"), 3346, "{}", h.describe());
    let mut all = d1.clone();
    all.extend_from_slice(&d2);
    all.extend_from_slice(&d3);
    assert_eq!(sha256_hex(&get_bytes(&fin)), sha256_hex(&all));
}

/// "The Server MUST respond with the `403 Forbidden` status to `PATCH` requests
/// against a final upload URL and MUST NOT modify the final or its partial uploads."
#[test]
fn patch_against_final_upload_is_403() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"abc");
    fill(&a, b"abc");
    let r = post_final(&s, &[&a], &[]);
    assert_status(&r, &[201], "POST final");
    let fin = s.url(r.header("Location").unwrap());
    for off in [0u64, 3] {
        let p = patch(&fin, off, b"x");
        assert_status(&p, &[403], &format!("PATCH final at {off}"));
    }
    assert_eq!(get_bytes(&fin), b"abc");
    assert_eq!(head_offset(&a), 3);
}

/// "The Client MUST NOT include the `Upload-Length` header in the final upload
/// creation." tusk: 400.
#[test]
fn final_upload_with_upload_length_is_400() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"abc");
    fill(&a, b"abc");
    let r = post_final(&s, &[&a], &[("Upload-Length", "3")]);
    assert_status(&r, &[400], "POST final with Upload-Length");
}

/// tusk: a final upload naming an unknown upload -> 400.
#[test]
fn final_upload_naming_unknown_upload_is_400() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"abc");
    fill(&a, b"abc");
    let unknown = s.url("0123456789abcdef0123456789abcdef");
    let r = post_final(&s, &[&a, &unknown], &[]);
    assert_status(&r, &[400], "POST final naming an unknown upload");
    assert!(!r.has("Location"), "{}", r.describe());
}

/// tusk: a final upload naming a regular (non-partial) upload -> 400.
#[test]
fn final_upload_naming_non_partial_upload_is_400() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"abc");
    fill(&a, b"abc");
    let regular = create(&s, 3);
    patch_ok(&regular, 0, b"def");
    let r = post_final(&s, &[&a, &regular], &[]);
    assert_status(&r, &[400], "POST final naming a non-partial upload");
}

/// tusk: a final upload naming another host's URL -> 400.
#[test]
fn final_upload_naming_foreign_host_is_400() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"abc");
    fill(&a, b"abc");
    let foreign = format!("http://elsewhere.example:1{}", path_of(&a));
    let r = post_final(&s, &[&foreign], &[]);
    assert_status(&r, &[400], "POST final naming another host's URL");
}

/// A malformed `Upload-Concat` (neither `partial` nor `final;...`, or `final;` with
/// no URL) -> 400.
#[test]
fn malformed_upload_concat_is_400() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint())
        .header("Upload-Concat", "parts")
        .header("Upload-Length", "3")
        .send();
    assert_status(&r, &[400], "Upload-Concat \"parts\"");
    for bad in ["final", "final;", "final; "] {
        let r = tus("POST", s.endpoint())
            .header("Upload-Concat", bad)
            .send();
        assert_status(&r, &[400], &format!("Upload-Concat {bad:?}"));
    }
}

/// "When creating a new final upload the partial uploads' metadata SHALL NOT be
/// transferred to the new final upload."
#[test]
fn final_upload_does_not_inherit_partial_metadata() {
    let s = TestServer::spawn();
    let (a, _) = create_with(
        &s,
        &[
            ("Upload-Concat", "partial"),
            ("Upload-Length", "3"),
            ("Upload-Metadata", &metadata(&[("filename", b"part.bin")])),
        ],
    );
    fill(&a, b"abc");
    let meta = metadata(&[("filename", b"whole.bin")]);
    let r = post_final(&s, &[&a], &[("Upload-Metadata", &meta)]);
    assert_status(&r, &[201], "POST final with metadata");
    let fin = s.url(r.header("Location").unwrap());
    let h = head(&fin);
    let got = parse_metadata(h.header("Upload-Metadata").unwrap_or(""));
    assert_eq!(got, parse_metadata(&meta), "{}", h.describe());
}

/// "The Client MAY send the concatenation request while the partial uploads are still
/// in progress." "The response to a HEAD request for a final upload SHOULD NOT
/// contain the `Upload-Offset` header unless the concatenation has been successfully
/// finished."
#[test]
fn final_upload_of_unfinished_partials_completes_later() {
    let s = TestServer::spawn();
    let d1 = pattern(50, 4000);
    let d2 = pattern(51, 3000);
    let a = create_partial(&s, &d1);
    let b = create_partial(&s, &d2);
    patch_ok(&a, 0, &d1[..1000]);
    let r = post_final(&s, &[&a, &b], &[]);
    assert_status(&r, &[201], "POST final before partials finish");
    let fin = s.url(r.header("Location").unwrap());
    let h = head(&fin);
    assert_status(&h, &[200], "HEAD unfinished final");
    assert!(
        !h.has("Upload-Offset"),
        "unfinished final shows Upload-Offset: {}",
        h.describe()
    );
    assert!(
        h.header("Upload-Concat")
            .unwrap_or("")
            .starts_with("final;"),
        "{}",
        h.describe()
    );
    patch_ok(&a, 1000, &d1[1000..]);
    patch_ok(&b, 0, &d2);
    let mut done = None;
    wait_until(Duration::from_secs(5), || {
        let h = head(&fin);
        if h.has("Upload-Offset") {
            done = Some(h);
            true
        } else {
            false
        }
    });
    let h = done.expect("final upload never showed Upload-Offset after its partials finished");
    assert_eq!(h.header_u64("Upload-Offset"), 7000, "{}", h.describe());
    assert_eq!(h.header_u64("Upload-Length"), 7000, "{}", h.describe());
    let mut all = d1.clone();
    all.extend_from_slice(&d2);
    assert_eq!(sha256_hex(&get_bytes(&fin)), sha256_hex(&all));
}

/// Issue 23, item 7: one stored part named many times would be copied as often (1,000 MiB
/// from one 1 MiB part in 0.7 s). A part named twice is refused, and nothing is created.
#[test]
fn final_upload_naming_a_part_twice_is_400() {
    let s = TestServer::spawn();
    let a = create_partial(&s, b"abc");
    fill(&a, b"abc");
    let r = post_final(&s, &[&a, &a], &[]);
    assert_status(&r, &[400], "the same part twice");
    assert!(r.text().contains("more than once"), "{}", r.describe());
    let pa = path_of(&a);
    let r = post_final(&s, &[&a, &pa], &[]);
    assert_status(&r, &[400], "the same part as absolute and relative URL");
}

/// Issue 23, item 7: the number of parts is capped (`limits.max_concat_parts`).
#[test]
fn final_upload_with_more_parts_than_allowed_is_400() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[limits]\nmax_concat_parts = 3\n");
    let parts: Vec<String> = (0..4)
        .map(|_| {
            let url = create_partial(&s, b"x");
            fill(&url, b"x");
            url
        })
        .collect();
    let names: Vec<&str> = parts.iter().map(String::as_str).collect();
    let r = post_final(&s, &names, &[]);
    assert_status(&r, &[400], "four parts over a cap of three");
    assert!(r.text().contains("max_concat_parts"), "{}", r.describe());
    let r = post_final(&s, &names[..3], &[]);
    assert_status(&r, &[201], "three parts");
    assert_eq!(get_bytes(&s.url(r.header("Location").unwrap())), b"xxx");
}

/// Issue 23, item 7: a final upload over partials whose lengths were deferred is checked
/// against Tus-Max-Size when the join happens; over it, the join is refused (413) and the
/// final upload is discarded rather than written.
#[test]
fn final_upload_over_deferred_partials_is_held_to_max_size_at_the_join() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[limits]\nmax_size = 1000\n");
    let deferred = || {
        create_with(
            &s,
            &[("Upload-Concat", "partial"), ("Upload-Defer-Length", "1")],
        )
        .0
    };
    let (a, b) = (deferred(), deferred());
    let r = post_final(&s, &[&a, &b], &[]);
    assert_status(&r, &[201], "final over unfinished deferred partials");
    let fin = s.url(r.header("Location").unwrap());
    for part in [&a, &b] {
        let r = patch_req(part, 0, &[9u8; 600])
            .header("Upload-Length", "600")
            .send();
        assert_status(&r, &[204], "600 bytes, within max_size on its own");
    }
    let h = head(&fin);
    assert_status(&h, &[413], "HEAD of a final whose parts sum to 1200 > 1000");
    assert_status(&head(&fin), &[404], "the final upload is discarded");
    assert_status(&get(&fin), &[404], "nothing to download");
}
