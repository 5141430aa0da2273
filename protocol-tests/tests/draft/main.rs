//! The IETF draft "Resumable Uploads for HTTP" against the real binary, over raw sockets so
//! that interim `104 Upload Resumption Supported` responses are seen on the wire.
//!
//! - `rules` — the newest interop version (8), one test per rule of the draft.
//! - `versions` — what differs in interop versions 3 to 7.

mod rules;
mod versions;

use protocol_tests::*;

/// The newest interop version.
pub const NEWEST: &str = "8";

/// A draft request of interop `version`.
pub fn draft(method: &str, url: &str, version: &str) -> Request {
    Request::new(method, url).header("Upload-Draft-Interop-Version", version)
}

/// Sends `request` and returns the interim responses that came before the final one.
pub fn exchange(request: &Request) -> (Vec<Response>, Response) {
    let mut conn = request.open();
    if let Body::Bytes(bytes) = &request.body {
        conn.write_all(bytes).expect("writing the body");
    }
    let last = conn.read_response().expect("reading the final response");
    (conn.take_interim(), last)
}

/// The 104s among `interim`, checked to name the interop version.
pub fn resumption_supported(interim: &[Response], version: &str) -> Vec<Response> {
    let found: Vec<Response> = interim
        .iter()
        .filter(|r| r.status == 104)
        .cloned()
        .collect();
    for r in &found {
        assert_eq!(
            r.header("Upload-Draft-Interop-Version"),
            Some(version),
            "a 104 must name the interop version: {}",
            r.describe()
        );
    }
    found
}

/// Create a draft upload with `content` (not completing it); returns its URL.
pub fn create_incomplete(server: &TestServer, version: &str, content: &[u8]) -> String {
    let field = if version == "3" {
        ("Upload-Incomplete", "?1")
    } else {
        ("Upload-Complete", "?0")
    };
    let (_, resp) = exchange(
        &draft("POST", server.endpoint(), version)
            .header(field.0, field.1)
            .body(content.to_vec()),
    );
    assert_status(&resp, &[201], "draft creation");
    resolve(
        server.endpoint(),
        resp.header("Location").expect("201 carries Location"),
    )
}

/// Append `content` at `offset` with interop 8.
pub fn append(url: &str, offset: u64, content: &[u8], complete: bool) -> Response {
    draft("PATCH", url, NEWEST)
        .header("Content-Type", "application/partial-upload")
        .header("Upload-Offset", &offset.to_string())
        .header("Upload-Complete", if complete { "?1" } else { "?0" })
        .body(content.to_vec())
        .send()
}

/// A `application/problem+json` body's `type` and the whole body as text.
pub fn problem(resp: &Response) -> (String, String) {
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/problem+json"),
        "{}",
        resp.describe()
    );
    let text = resp.text();
    let kind = text
        .split("\"type\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned();
    (kind, text)
}

/// The problem type URI of the draft's `name`.
pub fn problem_type(name: &str) -> String {
    format!("https://iana.org/assignments/http-problem-types#{name}")
}
