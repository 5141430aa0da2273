//! What differs in interop versions 3 to 7, one test per difference, each also walking
//! creation, the 104, HEAD and a completing append in that version.

use protocol_tests::*;

use crate::{create_incomplete, draft, exchange, problem, problem_type, resumption_supported};

const LIMITS: &str = "[limits]\nmax_size = 1000000\n";

/// Create with `version`, then complete with one PATCH of `content_type` (None: no
/// Content-Type); returns the final HEAD.
fn walk(server: &TestServer, version: &str, content_type: Option<&str>) -> Response {
    let content = pattern(20, 2000);
    let url = create_incomplete(server, version, &content[..500]);
    let mut req = draft("PATCH", &url, version).header("Upload-Offset", "500");
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if version != "3" {
        req = req.header("Upload-Complete", "?1");
    }
    let resp = req.body(content[500..].to_vec()).send();
    assert_status(
        &resp,
        &[204],
        &format!("interop {version}: completing append"),
    );
    assert_eq!(get_bytes(&url), content);
    let head = draft("HEAD", &url, version).send();
    assert_status(&head, &[200, 204], "HEAD");
    assert_eq!(head.header_u64("Upload-Offset"), 2000);
    assert_eq!(head.header("Cache-Control"), Some("no-store"));
    head
}

/// The creation 104 of `version` (with Location).
fn creation_104(server: &TestServer, version: &str, complete: (&str, &str)) -> Response {
    let (interim, resp) = exchange(
        &draft("POST", server.endpoint(), version)
            .header(complete.0, complete.1)
            .body(b"hello".to_vec()),
    );
    assert_status(&resp, &[201], &format!("interop {version}: creation"));
    let announced = resumption_supported(&interim, version);
    assert_eq!(announced.len(), 1, "{interim:?}");
    assert_eq!(announced[0].header("Location"), resp.header("Location"));
    announced[0].clone()
}

/// "Interop 3 (draft -01) says Upload-Incomplete: ?1 for an incomplete upload; leaving it
/// out completes; any Content-Type."
#[test]
fn interop_3_uses_upload_incomplete() {
    needs_spawned_server!();
    let server = TestServer::spawn();
    creation_104(&server, "3", ("Upload-Incomplete", "?1"));
    let url = create_incomplete(&server, "3", b"abc");
    let head = draft("HEAD", &url, "3").send();
    assert_eq!(head.header("Upload-Incomplete"), Some("?1"));
    assert!(!head.has("Upload-Complete"));
    let head = walk(&server, "3", None);
    assert_eq!(head.header("Upload-Incomplete"), Some("?0"));
}

/// "Interop 4 (draft -02) replaced Upload-Incomplete by Upload-Complete, which creation
/// requires."
#[test]
fn interop_4_requires_upload_complete() {
    needs_spawned_server!();
    let server = TestServer::spawn();
    creation_104(&server, "4", ("Upload-Complete", "?0"));
    let resp = draft("POST", server.endpoint(), "4")
        .body(b"abc".to_vec())
        .send();
    assert_status(&resp, &[400], "creation without Upload-Complete");
    let head = walk(&server, "4", Some("application/octet-stream"));
    assert_eq!(head.header("Upload-Complete"), Some("?1"));
    assert!(
        !head.has("Upload-Limit"),
        "no Upload-Limit before interop 6"
    );
}

/// "Interop 5 (draft -03, tus-js-client's ietf-draft-03) takes appends of any media type,
/// also none."
#[test]
fn interop_5_takes_any_media_type() {
    needs_spawned_server!();
    let server = TestServer::spawn();
    creation_104(&server, "5", ("Upload-Complete", "?0"));
    let head = walk(&server, "5", None);
    assert_eq!(head.header("Upload-Complete"), Some("?1"));
}

/// "Interop 6 (drafts -04/-05, tus-js-client's ietf-draft-05) requires
/// application/partial-upload for appends, has Upload-Limit (with `expires`) and problem types."
#[test]
fn interop_6_requires_partial_upload() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(LIMITS);
    let announced = creation_104(&server, "6", ("Upload-Complete", "?0"));
    assert_eq!(
        announced.header("Upload-Limit"),
        Some("max-size=1000000, max-append-size=1000000, expires=86400")
    );
    let url = create_incomplete(&server, "6", b"abc");
    let resp = draft("PATCH", &url, "6")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "3")
        .header("Upload-Complete", "?1")
        .body(b"def".to_vec())
        .send();
    assert_status(&resp, &[415], "interop 6 append without partial-upload");
    assert!(
        problem(&resp).1.contains("application/partial-upload"),
        "{}",
        resp.text()
    );
    let resp = draft("PATCH", &url, "6")
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", "1")
        .header("Upload-Complete", "?1")
        .body(b"def".to_vec())
        .send();
    assert_status(&resp, &[409], "interop 6 mismatch");
    assert_eq!(problem(&resp).0, problem_type("mismatching-upload-offset"));
    let head = draft("HEAD", &url, "6").send();
    let limit = head.header("Upload-Limit").expect("Upload-Limit on HEAD");
    assert!(limit.contains(", expires="), "{limit}");
    walk(&server, "6", Some("application/partial-upload"));
}

/// "Interop 7 (drafts -06 to -08) renamed the `expires` limit to `max-age`."
#[test]
fn interop_7_says_max_age() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(LIMITS);
    let announced = creation_104(&server, "7", ("Upload-Complete", "?0"));
    assert_eq!(
        announced.header("Upload-Limit"),
        Some("max-size=1000000, max-append-size=1000000, max-age=86400")
    );
    let url = create_incomplete(&server, "7", b"abc");
    let head = draft("HEAD", &url, "7").send();
    let limit = head.header("Upload-Limit").expect("Upload-Limit on HEAD");
    assert!(limit.contains(", max-age="), "{limit}");
    walk(&server, "7", Some("application/partial-upload"));
}
