//! Expiration extension.

use std::time::Duration;

use protocol_tests::*;

const FAST_EXPIRY: &str = "[expiration]\nexpire_after = \"2s\"\nsweep_interval = \"1s\"\n";

fn expires_of(r: &Response) -> i64 {
    let v = r
        .header("Upload-Expires")
        .unwrap_or_else(|| panic!("no Upload-Expires: {}", r.describe()));
    parse_http_date(v).unwrap_or_else(|| panic!("Upload-Expires {v:?} is not an RFC 9110 date"))
}

/// "If the expiration is known at the creation, the `Upload-Expires` header MUST be
/// included in the response to the initial `POST` request." "The value ... MUST be in
/// RFC 7231 datetime format." tusk expires unfinished uploads after 24 h by default.
#[test]
fn post_response_includes_upload_expires() {
    let s = TestServer::spawn();
    let (_, r) = create_with(&s, &[("Upload-Length", "10")]);
    let at = expires_of(&r);
    assert!(
        at > now_unix(),
        "Upload-Expires is in the past: {}",
        r.describe()
    );
}

/// "This header MUST be included in every `PATCH` response if the upload is going to
/// expire. ... Its value MAY change over time." tusk renews it on every PATCH.
#[test]
fn patch_response_renews_upload_expires() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[expiration]\nexpire_after = \"1h\"\n");
    let (url, created) = create_with(&s, &[("Upload-Length", "10")]);
    let first = expires_of(&created);
    std::thread::sleep(Duration::from_millis(2100));
    let r = patch(&url, 0, b"abc");
    assert_status(&r, &[204], "PATCH");
    let renewed = expires_of(&r);
    assert!(
        renewed > first,
        "Upload-Expires not renewed: {first} then {renewed}"
    );
}

/// "If a Client does attempt to resume an upload which has since been removed by the
/// Server, the Server SHOULD respond with the `404 Not Found` or `410 Gone` status."
#[test]
fn expired_unfinished_upload_is_gone() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config(FAST_EXPIRY);
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abc");
    std::thread::sleep(Duration::from_millis(3500));
    let h = head(&url);
    assert_status(&h, &[404, 410], "HEAD of expired upload");
    assert!(!h.has("Upload-Offset"), "{}", h.describe());
    let p = patch(&url, 3, b"def");
    assert_status(&p, &[404, 410], "PATCH of expired upload");
}

/// "A Server MAY wish to remove incomplete uploads after a given period of time to
/// prevent abandoned uploads from taking up extra storage." tusk's sweeper removes
/// `<data_dir>/uploads/<ab>/<id>` within a few seconds of expiry.
#[test]
fn expired_upload_file_is_removed() {
    needs_spawned_server!();
    local_backend_only!("looks for the upload's file (tests/cluster.rs checks the objects)");
    let s = TestServer::spawn_with_config(FAST_EXPIRY);
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abc");
    let file = s.upload_file(&upload_id(&url));
    assert!(file.exists(), "{} missing before expiry", file.display());
    let gone = wait_until(Duration::from_secs(8), || !file.exists());
    assert!(gone, "{} still exists after expiry", file.display());
}

/// "The Server MAY remove unfinished uploads once they expire": finished uploads do
/// not expire.
#[test]
fn finished_upload_does_not_expire() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config(FAST_EXPIRY);
    let url = create(&s, 5);
    patch_ok(&url, 0, b"hello");
    std::thread::sleep(Duration::from_millis(4000));
    let h = head(&url);
    assert_status(&h, &[200], "HEAD of finished upload after expire_after");
    assert_eq!(h.header_u64("Upload-Offset"), 5);
    assert_eq!(get_bytes(&url), b"hello");
}

/// PATCH activity keeps an upload alive: an upload patched every second with
/// `expire_after = 2s` is still there after 4 s.
#[test]
fn patching_keeps_upload_alive() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config(FAST_EXPIRY);
    let url = create(&s, 100);
    for i in 0..5u64 {
        patch_ok(&url, i, b"x");
        std::thread::sleep(Duration::from_millis(900));
    }
    assert_eq!(head_offset(&url), 5);
}
