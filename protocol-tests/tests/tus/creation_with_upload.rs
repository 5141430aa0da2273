//! Creation With Upload extension: data in the POST body.

use protocol_tests::*;

/// "The Client MAY include either the entirety or a chunk of the upload data in the
/// body of the `POST` request. ... The Server ... MUST include the `Upload-Offset`
/// header in the response and MUST set its value to the offset of the upload after
/// applying the accepted bytes."
#[test]
fn post_with_partial_body_sets_offset() {
    let s = TestServer::spawn();
    let data = pattern(10, 100);
    let (url, r) = create_with_body(&s, 100, &data[..40]);
    assert_eq!(r.header_u64("Upload-Offset"), 40, "{}", r.describe());
    assert_eq!(head_offset(&url), 40);
    patch_ok(&url, 40, &data[40..]);
    assert_eq!(get_bytes(&url), data);
}

/// The entire upload in the POST body completes it at once.
#[test]
fn post_with_entire_body_completes_upload() {
    let s = TestServer::spawn();
    let data = pattern(11, 5000);
    let (url, r) = create_with_body(&s, 5000, &data);
    assert_eq!(r.header_u64("Upload-Offset"), 5000, "{}", r.describe());
    let h = head(&url);
    assert_eq!(h.header_u64("Upload-Offset"), 5000);
    assert_eq!(h.header_u64("Upload-Length"), 5000);
    assert_eq!(get_bytes(&url), data);
}

/// "In this case, similar rules as for the `PATCH` request and response apply": a
/// chunked POST body is accepted like a chunked PATCH body.
#[test]
fn post_with_chunked_body_sets_offset() {
    let s = TestServer::spawn();
    let data = pattern(12, 300);
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "300")
        .header("Content-Type", "application/offset+octet-stream")
        .chunked(vec![data[..100].to_vec(), data[100..250].to_vec()], vec![])
        .send();
    assert_status(&r, &[201], "chunked creation-with-upload");
    assert_eq!(r.header_u64("Upload-Offset"), 250, "{}", r.describe());
    let url = s.url(r.header("Location").unwrap());
    assert_eq!(head_offset(&url), 250);
    patch_ok(&url, 250, &data[250..]);
    assert_eq!(get_bytes(&url), data);
}

/// "the Client SHOULD include the `Expect: 100-continue` header in the request to
/// receive early feedback from the Server": such a request still succeeds.
#[test]
fn post_with_expect_100_continue_succeeds() {
    let s = TestServer::spawn();
    let data = pattern(13, 64);
    let req = tus("POST", s.endpoint())
        .header("Upload-Length", "64")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", "64")
        .header("Expect", "100-continue");
    let mut conn = req.open();
    // Send the body without waiting; an interim "100 Continue" is skipped when reading.
    conn.write_all(&data).expect("sending body");
    let r = conn.read_response().expect("reading response");
    assert_status(&r, &[201], "POST with Expect: 100-continue");
    assert_eq!(r.header_u64("Upload-Offset"), 64, "{}", r.describe());
    let url = s.url(r.header("Location").unwrap());
    assert_eq!(get_bytes(&url), data);
}

/// A POST with an empty body and the octet-stream Content-Type creates an upload at
/// offset 0 (the body is "a chunk" of zero bytes).
#[test]
fn post_with_empty_octet_stream_body_has_offset_zero() {
    let s = TestServer::spawn();
    let (url, r) = create_with_body(&s, 10, b"");
    if let Some(off) = r.header("Upload-Offset") {
        assert_eq!(off, "0", "{}", r.describe());
    }
    assert_eq!(head_offset(&url), 0);
}

fn create_with_body(s: &TestServer, len: u64, body: &[u8]) -> (String, Response) {
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", &len.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body.to_vec())
        .send();
    assert_status(&r, &[201], "creation-with-upload POST");
    let loc = r
        .header("Location")
        .unwrap_or_else(|| panic!("no Location: {}", r.describe()));
    (s.url(loc), r)
}
