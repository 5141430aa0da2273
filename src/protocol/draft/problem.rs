//! Draft errors as problem details (RFC 9457, `application/problem+json`).
//!
//! The status and the extra headers are tus's ([`TusError::into_response`]), except where the
//! draft or RFC 9530 implies another; only the body differs: the problem types the draft
//! registers, and `about:blank` with the reason for everything else.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde_json::json;
use warp::reply::Response;

use super::{Interop, UPLOAD_DRAFT_INTEROP_VERSION};
use crate::error::TusError;
use crate::protocol::{set_header, UPLOAD_LIMIT, UPLOAD_OFFSET};
use crate::state::AppState;

const PROBLEM_TYPES: &str = "https://iana.org/assignments/http-problem-types";

/// The draft's response for `err`.
pub fn response(state: &AppState, version: Interop, err: TusError) -> Response {
    let detail = err.to_string();
    let (status, body) = match &err {
        TusError::OffsetMismatch { current, requested } => (
            err.status(),
            json!({
                "type": format!("{PROBLEM_TYPES}#mismatching-upload-offset"),
                "title": "offset from request does not match offset of resource",
                "detail": detail,
                "expected-offset": current,
                "provided-offset": requested,
            }),
        ),
        TusError::UploadCompleted => (
            err.status(),
            json!({
                "type": format!("{PROBLEM_TYPES}#completed-upload"),
                "title": "upload is already completed",
            }),
        ),
        TusError::InconsistentLength(_) => (
            err.status(),
            json!({
                "type": format!("{PROBLEM_TYPES}#inconsistent-upload-length"),
                "title": "inconsistent length values for upload",
                "detail": detail,
            }),
        ),
        // tus's 460 is tus's own; for RFC 9530 digests the problem type of
        // draft-ietf-httpapi-digest-fields-problem-types, with its 400.
        TusError::ChecksumMismatch => (
            StatusCode::BAD_REQUEST,
            json!({
                "type": format!("{PROBLEM_TYPES}#digest-mismatched-values"),
                "title": "digest does not match the content; it was discarded",
            }),
        ),
        // tus's message names tus's media type; the draft only refuses this one.
        TusError::UnsupportedMediaType => (
            err.status(),
            json!({
                "type": "about:blank",
                "title": "Unsupported Media Type",
                "detail": format!("Content-Type must be {}", super::PARTIAL_UPLOAD),
            }),
        ),
        _ => (
            err.status(),
            json!({
                "type": "about:blank",
                "title": err.status().canonical_reason().unwrap_or("error"),
                "detail": detail,
            }),
        ),
    };
    let offset = match &err {
        TusError::OffsetMismatch { current, .. } => Some(*current),
        _ => None,
    };
    let too_large = matches!(err, TusError::TooLarge(_));
    let mut response = err.into_response();
    *response.status_mut() = status;
    *response.body_mut() = body.to_string().into();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.remove(crate::protocol::TUS_VERSION_HEADER);
    if let Ok(value) = HeaderValue::from_str(&version.to_string()) {
        headers.insert(UPLOAD_DRAFT_INTEROP_VERSION, value);
    }
    if let Some(offset) = offset {
        set_header(&mut response, UPLOAD_OFFSET, offset);
    }
    // The draft: a 413 caused by our limits carries them.
    if too_large && version.has_limits() {
        if let Some(limit) = super::server_limits(state, version) {
            set_header(&mut response, UPLOAD_LIMIT, limit);
        }
    }
    response
}

/// 400 for an interop version we do not serve.
pub fn unsupported_version(version: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": "Bad Request",
        "detail": format!(
            "Upload-Draft-Interop-Version {version} is not served; tusk serves {} to {} (or tus 1.0.0 with Tus-Resumable)",
            Interop::OLDEST, Interop::NEWEST
        ),
    });
    let mut response = Response::new(body.to_string().into());
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}
