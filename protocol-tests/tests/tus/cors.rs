//! CORS (tusk's own behaviour; browsers are the main tus clients).

use protocol_tests::*;

const ORIGIN: &str = "http://example.test";

/// Requests with an `Origin` get `Access-Control-Allow-Origin` and expose the tus
/// headers (`Upload-Offset`, `Location`, ...) to scripts.
#[test]
fn cors_response_exposes_tus_headers() {
    let s = TestServer::spawn();
    let r = tus("POST", s.endpoint())
        .header("Origin", ORIGIN)
        .header("Upload-Length", "5")
        .send();
    assert_status(&r, &[201], "POST with Origin");
    let allow = r.header("Access-Control-Allow-Origin").unwrap_or("");
    assert!(allow == "*" || allow == ORIGIN, "{}", r.describe());
    let exposed = r.header_list("Access-Control-Expose-Headers");
    for h in ["upload-offset", "location"] {
        assert!(
            exposed.iter().any(|e| e == h),
            "{h} not exposed: {}",
            r.describe()
        );
    }
    let url = s.url(r.header("Location").unwrap());
    let h = tus("HEAD", &url).header("Origin", ORIGIN).send();
    assert!(h.has("Access-Control-Allow-Origin"), "{}", h.describe());
}

/// A preflight for a PATCH with tus headers is allowed.
#[test]
fn cors_preflight_allows_patch_with_tus_headers() {
    let s = TestServer::spawn();
    let url = create(&s, 5);
    let r = Request::new("OPTIONS", &url)
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "tus-resumable,upload-offset,content-type",
        )
        .send();
    assert!(
        (200..300).contains(&r.status),
        "preflight: {}",
        r.describe()
    );
    assert!(r.has("Access-Control-Allow-Origin"), "{}", r.describe());
    let methods = r.header_list("Access-Control-Allow-Methods");
    assert!(methods.iter().any(|m| m == "patch"), "{}", r.describe());
    let headers = r.header_list("Access-Control-Allow-Headers");
    for h in ["tus-resumable", "upload-offset", "content-type"] {
        assert!(
            headers.iter().any(|x| x == h || x == "*"),
            "{h} not allowed: {}",
            r.describe()
        );
    }
}

/// A preflight on the creation endpoint allows POST with Upload-Length and
/// Upload-Metadata.
#[test]
fn cors_preflight_allows_creation() {
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint())
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "tus-resumable,upload-length,upload-metadata",
        )
        .send();
    assert!(
        (200..300).contains(&r.status),
        "preflight: {}",
        r.describe()
    );
    let methods = r.header_list("Access-Control-Allow-Methods");
    assert!(methods.iter().any(|m| m == "post"), "{}", r.describe());
    let headers = r.header_list("Access-Control-Allow-Headers");
    for h in ["tus-resumable", "upload-length", "upload-metadata"] {
        assert!(
            headers.iter().any(|x| x == h || x == "*"),
            "{h}: {}",
            r.describe()
        );
    }
}

/// tusk: `[cors] enabled = false` sends no CORS headers at all.
#[test]
fn cors_disabled_sends_no_cors_headers() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[cors]\nenabled = false\n");
    let r = tus("POST", s.endpoint())
        .header("Origin", ORIGIN)
        .header("Upload-Length", "5")
        .send();
    assert_status(&r, &[201], "POST with Origin");
    assert!(!r.has("Access-Control-Allow-Origin"), "{}", r.describe());
}

/// tusk: with `allowed_origins` set, only those origins are allowed.
#[test]
fn cors_only_allows_configured_origins() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config(
        "[cors]\nenabled = true\nallowed_origins = [\"http://good.test\"]\n",
    );
    let r = tus("POST", s.endpoint())
        .header("Origin", "http://good.test")
        .header("Upload-Length", "5")
        .send();
    assert_status(&r, &[201], "POST from an allowed origin");
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("http://good.test"),
        "{}",
        r.describe()
    );
    let r = tus("POST", s.endpoint())
        .header("Origin", "http://evil.test")
        .header("Upload-Length", "5")
        .send();
    let allow = r.header("Access-Control-Allow-Origin").unwrap_or("");
    assert!(
        allow != "*" && allow != "http://evil.test",
        "disallowed origin let in: {}",
        r.describe()
    );
}
