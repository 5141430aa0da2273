//! The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload), served
//! beside tus 1.0.0 on the same upload resources.
//!
//! A request is a draft request when it carries `Upload-Draft-Interop-Version` (and the draft
//! is enabled); it needs no `Tus-Resumable`. What changed between interop versions, from the
//! drafts' change logs, and what tusk does for each:
//!
//! | interop | drafts   | completeness field        | PATCH Content-Type           | `Upload-Limit`    | 104 progress | problem types |
//! |---------|----------|---------------------------|------------------------------|-------------------|--------------|---------------|
//! | 3       | -01      | `Upload-Incomplete: ?1/?0`| any                          | no                | no           | no            |
//! | 4       | -02      | `Upload-Complete: ?1/?0`  | any                          | no                | no           | no            |
//! | 5       | -03      | `Upload-Complete`         | any                          | no                | yes          | no            |
//! | 6       | -04, -05 | `Upload-Complete`         | `application/partial-upload` | yes, `expires`    | yes          | offset, completed |
//! | 7       | -06..-08 | `Upload-Complete`         | `application/partial-upload` | yes, `max-age`    | yes          | + length      |
//! | 8       | -09..    | `Upload-Complete`         | `application/partial-upload` | yes, `max-age`    | yes          | + length      |
//!
//! Every version: creation by POST with a `104 Upload Resumption Supported` (Location) before
//! the body, offset retrieval by HEAD, append by PATCH with `Upload-Offset` (409 on mismatch),
//! cancellation by DELETE. `Upload-Length` (draft -05 on) is accepted from every version, as is
//! tus's `Upload-Metadata` (tus-js-client sends both in draft mode). Problem-details bodies go
//! to every version; the older ones ignore them.
//!
//! Concurrency (the draft's rule): a new request on an upload ends the one in flight, which
//! commits what it received first; so the offset a HEAD reports is the one the next append
//! must send, and is accepted.

mod problem;
mod transfer;

pub mod fields;

use std::fmt;

use http::header::{HeaderName, HeaderValue, CACHE_CONTROL};
use http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use super::{header_str, set_header, BodyStream, RequestParts, TUS_RESUMABLE, UPLOAD_LIMIT};
use crate::error::{Result, TusError};
use crate::session::lock::UploadGuard;
use crate::state::AppState;
use crate::transfer::interim::{interim_message, InterimSender};
use crate::upload::{unix_now, UploadId, UploadInfo};

/// `Upload-Draft-Interop-Version`
pub const UPLOAD_DRAFT_INTEROP_VERSION: HeaderName =
    HeaderName::from_static("upload-draft-interop-version");
/// `Upload-Complete` (interop 4 and later)
pub const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
/// `Upload-Incomplete` (interop 3)
pub const UPLOAD_INCOMPLETE: HeaderName = HeaderName::from_static("upload-incomplete");
/// `Content-Digest` (RFC 9530)
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");
/// `Repr-Digest` (RFC 9530)
pub const REPR_DIGEST: HeaderName = HeaderName::from_static("repr-digest");
/// `Accept-Patch` (RFC 5789)
pub const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");
/// The media type of appended representation data (interop 6 and later).
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";

/// An interop version we serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interop(u8);

impl Interop {
    /// The oldest version served: draft -01, the first with server-made upload URLs.
    pub const OLDEST: u8 = 3;
    /// The newest version (drafts -09 and later).
    pub const NEWEST: u8 = 8;

    /// The version `text` names, if we serve it.
    pub fn parse(text: &str) -> Option<Interop> {
        fields::sf_non_negative_integer(text)
            .and_then(|v| u8::try_from(v).ok())
            .filter(|v| (Self::OLDEST..=Self::NEWEST).contains(v))
            .map(Interop)
    }

    /// The field that says whether an upload is complete.
    fn completeness_field(self) -> HeaderName {
        if self.0 == 3 {
            UPLOAD_INCOMPLETE
        } else {
            UPLOAD_COMPLETE
        }
    }

    /// The value of [`Self::completeness_field`] for a complete (or incomplete) upload.
    fn completeness_value(self, complete: bool) -> &'static str {
        fields::sf_boolean_text(if self.0 == 3 { !complete } else { complete })
    }

    /// Appends must be `application/partial-upload` (draft -04 on).
    fn requires_partial_upload(self) -> bool {
        self.0 >= 6
    }

    /// `104` progress reports with `Upload-Offset` (draft -03 on).
    fn reports_progress(self) -> bool {
        self.0 >= 5
    }

    /// `Upload-Limit` exists (draft -04 on).
    fn has_limits(self) -> bool {
        self.0 >= 6
    }

    /// The `Upload-Limit` key for the remaining lifetime (renamed in draft -06).
    fn lifetime_key(self) -> &'static str {
        if self.0 == 6 {
            "expires"
        } else {
            "max-age"
        }
    }
}

impl fmt::Display for Interop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a request path names, as far as the draft cares.
#[derive(Debug)]
pub enum Target {
    /// The creation endpoint.
    Endpoint,
    /// An upload resource.
    Upload(UploadId),
    /// Something under the endpoint that is no upload id of ours.
    NoSuchUpload,
}

/// The interop version a request asks for: `None` for a tus request (no draft header, a
/// disabled draft, or a draft header beside `Tus-Resumable` naming a version we do not serve),
/// `Some(Err(text))` for a version we do not serve.
pub fn requested(state: &AppState, headers: &HeaderMap) -> Option<Result<Interop, String>> {
    if !state.settings.draft.enabled {
        return None;
    }
    let text = headers.get(UPLOAD_DRAFT_INTEROP_VERSION)?;
    let text = String::from_utf8_lossy(text.as_bytes()).into_owned();
    match Interop::parse(&text) {
        Some(version) => Some(Ok(version)),
        None if headers.contains_key(TUS_RESUMABLE) => None,
        None => Some(Err(text)),
    }
}

/// Serve a draft request; errors become problem details.
pub async fn serve(
    state: &AppState,
    requested: Result<Interop, String>,
    method: &Method,
    target: Target,
    request: &RequestParts,
    body: BodyStream,
) -> Response {
    let version = match requested {
        Ok(version) => version,
        Err(text) => return problem::unsupported_version(&text),
    };
    // The same refusal of repeated single-value fields as for tus requests (see `routes`).
    let result = if let Err(refused) = super::require_single_values(&request.headers) {
        Err(refused)
    } else {
        match (target, method) {
            (_, &Method::OPTIONS) => Ok(options(state, version)),
            (Target::Endpoint, &Method::POST) => {
                transfer::create(state, version, request, body).await
            }
            (Target::Endpoint, _) => Err(TusError::MethodNotAllowed),
            (Target::NoSuchUpload, _) => Err(TusError::NotFound),
            (Target::Upload(id), &Method::HEAD) => offset(state, version, id).await,
            (Target::Upload(id), &Method::PATCH) => {
                transfer::append(state, version, id, request, body).await
            }
            (Target::Upload(id), &Method::DELETE) => cancel(state, id, request).await,
            (Target::Upload(id), &Method::GET) => {
                super::download::download(state, id, request).await
            }
            (Target::Upload(_), _) => Err(TusError::MethodNotAllowed),
        }
    };
    result.unwrap_or_else(|err| problem::response(state, version, err))
}

/// OPTIONS: tus's answer, plus what the draft asks for.
fn options(state: &AppState, version: Interop) -> Response {
    let mut response = super::core::server_info(state);
    if version.has_limits() {
        response
            .headers_mut()
            .insert(ACCEPT_PATCH, HeaderValue::from_static(PARTIAL_UPLOAD));
        match server_limits(state, version) {
            Some(limits) => set_header(&mut response, UPLOAD_LIMIT, limits),
            None => {
                response.headers_mut().remove(UPLOAD_LIMIT);
            }
        }
    }
    response
}

/// HEAD: where the upload stands.
async fn offset(state: &AppState, version: Interop, id: UploadId) -> Result<Response> {
    drop(take_over(state, &id).await?);
    let info = state.load(&id).await?;
    let mut response = super::empty(StatusCode::NO_CONTENT);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    describe(state, version, &info, &mut response);
    if let Some(length) = info.length {
        set_header(&mut response, super::UPLOAD_LENGTH, length);
    }
    Ok(response)
}

/// DELETE: cancel the upload and free its space, through tus termination's hooks.
async fn cancel(state: &AppState, id: UploadId, request: &RequestParts) -> Result<Response> {
    let _guard = take_over(state, &id).await?;
    super::termination::terminate(state, &id, request).await?;
    tracing::info!(upload = %id, "upload cancelled (draft)");
    Ok(super::empty(StatusCode::NO_CONTENT))
}

/// The draft's concurrency rule: a new request ends the one in flight on the upload (which
/// commits what it received), then holds the upload itself.
async fn take_over(state: &AppState, id: &UploadId) -> Result<UploadGuard> {
    state.locks.request_stop(id).await;
    state.lock_for_write(id).await
}

/// Upload-Offset, completeness and (from interop 6) Upload-Limit of `info`.
fn describe(state: &AppState, version: Interop, info: &UploadInfo, response: &mut Response) {
    super::set_u64(response, super::UPLOAD_OFFSET, info.offset);
    set_header(
        response,
        version.completeness_field(),
        version.completeness_value(info.is_finished()),
    );
    if version.has_limits() {
        let age = info.expires_at.map(|at| at.saturating_sub(unix_now()));
        if let Some(limits) = limits(state, version, age) {
            set_header(response, UPLOAD_LIMIT, limits);
        }
    }
}

/// `Upload-Limit` for new uploads.
fn server_limits(state: &AppState, version: Interop) -> Option<String> {
    let age = state.settings.expiration.expire_after.0.as_secs();
    limits(state, version, (age > 0).then_some(age))
}

fn limits(state: &AppState, version: Interop, age: Option<u64>) -> Option<String> {
    fields::limit_dictionary(&[
        ("max-size", state.settings.max_size()),
        ("max-append-size", state.settings.max_append_size()),
        (version.lifetime_key(), age),
    ])
}

/// Send `104 Upload Resumption Supported` with `fields` on the request's connection, if it
/// may carry interim responses (HTTP/1.1). The draft requires the interop version in it.
fn send_104(interim: Option<&InterimSender>, version: Interop, fields: &[(&str, String)]) {
    let Some(interim) = interim else {
        return;
    };
    let mut all = vec![("Upload-Draft-Interop-Version", version.to_string())];
    all.extend(fields.iter().cloned());
    interim.send(&interim_message(104, "Upload Resumption Supported", &all));
}

/// Whether a request body is `application/partial-upload` (parameters ignored).
fn is_partial_upload(headers: &HeaderMap) -> bool {
    header_str(headers, &http::header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(PARTIAL_UPLOAD))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_three_to_eight_are_served() {
        assert_eq!(Interop::parse("2"), None);
        assert_eq!(Interop::parse("3"), Some(Interop(3)));
        assert_eq!(Interop::parse("8"), Some(Interop(8)));
        assert_eq!(Interop::parse("9"), None);
        assert_eq!(Interop::parse("six"), None);
    }

    #[test]
    fn version_three_says_incomplete_the_others_complete() {
        assert_eq!(Interop(3).completeness_field(), UPLOAD_INCOMPLETE);
        assert_eq!(Interop(3).completeness_value(true), "?0");
        assert_eq!(Interop(4).completeness_field(), UPLOAD_COMPLETE);
        assert_eq!(Interop(4).completeness_value(true), "?1");
        assert_eq!(Interop(6).lifetime_key(), "expires");
        assert_eq!(Interop(7).lifetime_key(), "max-age");
    }
}
