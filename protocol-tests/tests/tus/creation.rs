//! Creation extension: POST to the creation endpoint.

use protocol_tests::*;

fn is_lower_hex_32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// "The Server MUST acknowledge a successful upload creation with the `201 Created`
/// status. The Server MUST set the `Location` header to the URL of the created
/// resource." tusk: an absolute URL whose last segment is 32 lowercase hex chars.
#[test]
fn post_creates_upload_with_201_and_location() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "100")
        .send();
    assert_status(&r, &[201], "POST");
    assert_tus_resumable(&r, "POST");
    let loc = r
        .header("Location")
        .unwrap_or_else(|| panic!("no Location: {}", r.describe()));
    assert!(
        loc.starts_with("http://") || loc.starts_with("https://"),
        "Location is not absolute: {loc:?}"
    );
    let id = upload_id(loc);
    assert!(
        is_lower_hex_32(&id),
        "upload id {id:?} is not 32 lowercase hex chars"
    );
}

/// "The new resource has an implicit offset of `0`."
#[test]
fn new_upload_has_offset_zero() {
    let s = TestServer::spawn();
    let url = create(&s, 42);
    let r = head(&url);
    assert_status(&r, &[200], "HEAD");
    assert_eq!(r.header_u64("Upload-Offset"), 0);
    assert_eq!(r.header_u64("Upload-Length"), 42);
    assert!(!r.has("Upload-Defer-Length"), "{}", r.describe());
}

/// Every creation yields a distinct upload URL.
#[test]
fn each_post_creates_a_distinct_upload() {
    let s = TestServer::spawn();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        assert!(seen.insert(create(&s, 1)), "duplicate upload URL");
    }
}

/// "The `Upload-Length` ... value MUST be a non-negative integer": 0 is valid and the
/// upload is complete at once.
#[test]
fn zero_length_upload_is_complete_on_creation() {
    let s = TestServer::spawn();
    let url = create(&s, 0);
    let r = head(&url);
    assert_status(&r, &[200], "HEAD");
    assert_eq!(r.header_u64("Upload-Offset"), 0);
    assert_eq!(r.header_u64("Upload-Length"), 0);
    let g = get(&url);
    assert_status(&g, &[200], "GET of an empty upload");
    assert!(g.body.is_empty());
}

/// "The value MUST be a non-negative integer": negative, fractional, non-numeric
/// and empty Upload-Length values are rejected with 400.
#[test]
fn invalid_upload_length_is_400() {
    let s = TestServer::spawn();
    for bad in [
        "-1",
        "abc",
        "1.5",
        "",
        "1e3",
        "0x10",
        " 12 x",
        "99999999999999999999999",
    ] {
        let r = tus("POST", s.endpoint())
            .header("Upload-Length", bad)
            .send();
        assert_status(&r, &[400], &format!("POST with Upload-Length {bad:?}"));
        assert!(!r.has("Location"), "{}", r.describe());
    }
}

/// "The request MUST include one of the following headers: a) `Upload-Length` ...
/// b) `Upload-Defer-Length: 1`": neither -> 400.
#[test]
fn post_without_length_or_defer_is_400() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint()).send();
    assert_status(&r, &[400], "POST without Upload-Length");
}

/// "one of the following headers": both Upload-Length and Upload-Defer-Length -> 400.
#[test]
fn post_with_both_length_and_defer_is_400() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "10")
        .header("Upload-Defer-Length", "1")
        .send();
    assert_status(
        &r,
        &[400],
        "POST with both Upload-Length and Upload-Defer-Length",
    );
}

/// "If the length of the upload exceeds the maximum, which MAY be specified using the
/// `Tus-Max-Size` header, the Server MUST respond with the `413 Request Entity Too
/// Large` status."
#[test]
fn upload_length_over_max_size_is_413() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[limits]\nmax_size = 1000\n");
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1001")
        .send();
    assert_status(&r, &[413], "POST over max_size");
    assert!(!r.has("Location"), "{}", r.describe());
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1000")
        .send();
    assert_status(&r, &[201], "POST at exactly max_size");
}

/// "If an upload contains additional metadata, responses to `HEAD` requests MUST
/// include the `Upload-Metadata` header and its value as specified by the Client".
#[test]
fn metadata_round_trips_through_head() {
    let s = TestServer::spawn();
    let sent = metadata(&[
        ("filename", "world_domination_plan.pdf".as_bytes()),
        ("spaces", b"a value with spaces"),
        ("utf8", "grüße, 世界 ✓".as_bytes()),
    ]);
    let (url, _) = create_with(&s, &[("Upload-Length", "1"), ("Upload-Metadata", &sent)]);
    let r = head(&url);
    let got = r
        .header("Upload-Metadata")
        .unwrap_or_else(|| panic!("HEAD lacks Upload-Metadata: {}", r.describe()));
    assert_eq!(
        parse_metadata(got),
        parse_metadata(&sent),
        "sent {sent:?}, got {got:?}"
    );
}

/// "Since metadata can contain arbitrary binary values, Servers SHOULD carefully
/// validate metadata values or sanitize them before using them as header values":
/// binary values (NUL, CR, LF, 0xFF) are still echoed base64-encoded by HEAD.
#[test]
fn metadata_with_binary_values_round_trips() {
    let s = TestServer::spawn();
    let sent = metadata(&[("binary", &[0u8, 255, 10, 13, 44, 32, 0xc3])]);
    let (url, _) = create_with(&s, &[("Upload-Length", "1"), ("Upload-Metadata", &sent)]);
    let r = head(&url);
    let got = r
        .header("Upload-Metadata")
        .unwrap_or_else(|| panic!("HEAD lacks Upload-Metadata: {}", r.describe()));
    assert_eq!(
        parse_metadata(got),
        parse_metadata(&sent),
        "sent {sent:?}, got {got:?}"
    );
}

/// "The value MAY be empty. In these cases, the space, which would normally separate
/// the key and the value, MAY be left out." Both spellings round-trip as empty values.
#[test]
fn metadata_with_empty_values_round_trips() {
    let s = TestServer::spawn();
    let sent = "is_confidential,empty_with_space ,name bmFtZQ==";
    let (url, _) = create_with(&s, &[("Upload-Length", "1"), ("Upload-Metadata", sent)]);
    let r = head(&url);
    let got = parse_metadata(r.header("Upload-Metadata").unwrap_or(""));
    assert_eq!(
        got.get("is_confidential").map(Vec::len),
        Some(0),
        "{}",
        r.describe()
    );
    assert_eq!(
        got.get("empty_with_space").map(Vec::len),
        Some(0),
        "{}",
        r.describe()
    );
    assert_eq!(got.get("name").map(|v| v.as_slice()), Some(&b"name"[..]));
    assert_eq!(got.len(), 3, "{}", r.describe());
}

/// "the value MUST be Base64 encoded": a value that is not base64 -> 400.
#[test]
fn metadata_with_invalid_base64_is_400() {
    let s = TestServer::spawn();
    for bad in ["filename not*base64!", "filename a b", "filename Y"] {
        let r = tus("POST", s.endpoint())
            .header("Upload-Length", "1")
            .header("Upload-Metadata", bad)
            .send();
        assert_status(&r, &[400], &format!("Upload-Metadata {bad:?}"));
    }
}

/// "the value MUST be Base64 encoded" (RFC 4648 base64 is padded): a value with
/// wrong padding (`YQ=` for `a`, canonically `YQ==`) -> 400.
#[test]
fn metadata_with_badly_padded_base64_is_400() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1")
        .header("Upload-Metadata", "filename YQ=")
        .send();
    assert_status(&r, &[400], "Upload-Metadata \"filename YQ=\"");
}

/// "All keys MUST be unique": a duplicate key -> 400.
#[test]
fn metadata_with_duplicate_key_is_400() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1")
        .header("Upload-Metadata", "name YQ==,name Yg==")
        .send();
    assert_status(&r, &[400], "Upload-Metadata with a duplicate key");
}

/// tusk: metadata larger than `max_metadata_size` is refused (a 4xx) and creates
/// nothing.
#[test]
fn oversized_metadata_is_rejected() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[limits]\nmax_metadata_size = \"1KiB\"\n");
    let big = vec![b'x'; 2048];
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1")
        .header("Upload-Metadata", &metadata(&[("blob", &big)]))
        .send();
    assert!(
        (400..500).contains(&r.status),
        "oversized metadata accepted: {}",
        r.describe()
    );
    assert!(!r.has("Location"), "{}", r.describe());
}

/// Issue 23, item 10: more Upload-Metadata keys than `limits.max_metadata_keys` is 400, and
/// creates nothing.
#[test]
fn metadata_with_too_many_keys_is_400() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[limits]\nmax_metadata_keys = 3\n");
    let keys = ["a", "b", "c", "d"];
    let pairs: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, &b"v"[..])).collect();
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1")
        .header("Upload-Metadata", &metadata(&pairs))
        .send();
    assert_status(&r, &[400], "four metadata keys over a cap of three");
    assert!(r.text().contains("max_metadata_keys"), "{}", r.describe());
    assert!(!r.has("Location"), "{}", r.describe());
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "1")
        .header("Upload-Metadata", &metadata(&pairs[..3]))
        .send();
    assert_status(&r, &[201], "three keys");
}

/// Issue 23, item 10: one address creating faster than `limits.creation_rate` (after its
/// burst) gets 429 with Retry-After, and the refusals are logged once, not once each.
#[test]
fn creations_over_the_per_address_rate_get_429_with_retry_after() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config(
        "[limits]\ncreation_rate = 1\ncreation_burst = 3\ncreation_rate_exempt = []\n",
    );
    let post = || {
        tus("POST", s.endpoint())
            .header("Upload-Length", "1")
            .send()
    };
    for i in 0..3 {
        assert_status(&post(), &[201], &format!("creation {i} of the burst"));
    }
    let mut refused = 0;
    for _ in 0..20 {
        let r = post();
        if r.status == 429 {
            refused += 1;
            let retry: u64 = r.header("Retry-After").unwrap_or("0").parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert!(r.text().contains("this address"), "{}", r.describe());
            assert!(!r.has("Location"), "{}", r.describe());
        }
    }
    // At 1/s, at most a couple of the 20 quick requests find a new token.
    assert!(refused >= 15, "only {refused} of 20 over the burst refused");
    assert!(
        wait_until(std::time::Duration::from_secs(5), || s
            .stderr()
            .contains("over limits.creation_rate")),
        "the refusal was never logged:\n{}",
        s.stderr()
    );
    let lines = s.stderr().matches("over limits.creation_rate").count();
    assert_eq!(lines, 1, "each refusal logged:\n{}", s.stderr());
    // The bucket refills.
    assert!(
        wait_until(std::time::Duration::from_secs(5), || post().status == 201),
        "no creation allowed again after waiting"
    );
}
