//! Creation Defer Length extension.

use protocol_tests::*;

fn create_deferred(s: &TestServer) -> String {
    create_with(s, &[("Upload-Defer-Length", "1")]).0
}

/// "`Upload-Defer-Length: 1` if upload size is not known at the time" -> 201.
/// "As long as the length of the upload is not known, the Server MUST set
/// `Upload-Defer-Length: 1` in all responses to `HEAD` requests."
#[test]
fn deferred_upload_head_shows_defer_length() {
    let s = TestServer::spawn();
    let url = create_deferred(&s);
    let r = head(&url);
    assert_status(&r, &[200], "HEAD deferred upload");
    assert_eq!(
        r.header("Upload-Defer-Length"),
        Some("1"),
        "{}",
        r.describe()
    );
    assert!(!r.has("Upload-Length"), "{}", r.describe());
    assert_eq!(r.header_u64("Upload-Offset"), 0);
}

/// PATCHes without a length keep the upload deferred while bytes accumulate.
#[test]
fn deferred_upload_accepts_data_before_length_is_known() {
    let s = TestServer::spawn();
    let url = create_deferred(&s);
    patch_ok(&url, 0, b"hello ");
    let r = head(&url);
    assert_eq!(r.header_u64("Upload-Offset"), 6);
    assert_eq!(
        r.header("Upload-Defer-Length"),
        Some("1"),
        "{}",
        r.describe()
    );
    assert!(!r.has("Upload-Length"), "{}", r.describe());
}

/// "Once it is known the Client MUST set the `Upload-Length` header in the next
/// `PATCH` request." The length is then reported and the upload can finish.
#[test]
fn patch_with_upload_length_sets_the_length() {
    let s = TestServer::spawn();
    let url = create_deferred(&s);
    patch_ok(&url, 0, b"hello ");
    let r = patch_req(&url, 6, b"wor")
        .header("Upload-Length", "11")
        .send();
    assert_status(&r, &[204], "PATCH carrying Upload-Length");
    assert_eq!(r.header_u64("Upload-Offset"), 9);
    let h = head(&url);
    assert_eq!(h.header_u64("Upload-Length"), 11, "{}", h.describe());
    assert!(!h.has("Upload-Defer-Length"), "{}", h.describe());
    patch_ok(&url, 9, b"ld");
    assert_eq!(get_bytes(&url), b"hello world");
}

/// "Once set the length MUST NOT be changed": a later different Upload-Length -> 400.
#[test]
fn upload_length_cannot_be_changed_once_set() {
    let s = TestServer::spawn();
    let url = create_deferred(&s);
    let r = patch_req(&url, 0, b"abc")
        .header("Upload-Length", "10")
        .send();
    assert_status(&r, &[204], "PATCH setting Upload-Length");
    let r = patch_req(&url, 3, b"def")
        .header("Upload-Length", "12")
        .send();
    assert_status(&r, &[400], "PATCH changing Upload-Length");
    let h = head(&url);
    assert_eq!(h.header_u64("Upload-Length"), 10);
    assert_eq!(h.header_u64("Upload-Offset"), 3);
}

/// "If the `Upload-Defer-Length` header contains any other value than `1` the server
/// should return a `400 Bad Request` status."
#[test]
fn defer_length_other_than_one_is_400() {
    let s = TestServer::spawn();
    for bad in ["0", "2", "true", "", "01"] {
        let r = tus("POST", s.endpoint())
            .header("Upload-Defer-Length", bad)
            .send();
        assert_status(&r, &[400], &format!("Upload-Defer-Length {bad:?}"));
        assert!(!r.has("Location"), "{}", r.describe());
    }
}
