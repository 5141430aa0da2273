//! Upload creation (POST) and append (PATCH) under the draft, on tus's receive loop.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::fields::{self, DigestError};
use super::{Interop, CONTENT_DIGEST, REPR_DIGEST, UPLOAD_INCOMPLETE};
use crate::error::{Result, TusError};
use crate::metrics::UploadEvent;
use crate::protocol::checksum::ChecksumRequest;
use crate::protocol::{
    content_length, core, creation, expiration, header_str, BodyStream, ProgressReport,
    RequestParts, UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET,
};
use crate::session::lock::UploadGuard;
use crate::state::AppState;
use crate::upload::{unix_now, Concat, UploadId, UploadInfo, UploadState};

/// What a creation or append request says about the upload, checked before any byte is read.
struct Intent {
    /// This request's content ends the upload.
    completes: bool,
    /// The upload's length, if the request or the upload knows it.
    length: Option<u64>,
    /// RFC 9530 digests to verify.
    digests: Option<ChecksumRequest>,
}

/// POST to the endpoint: create an upload resource, announce it in a 104, take the content.
pub async fn create(
    state: &AppState,
    version: Interop,
    request: &RequestParts,
    body: BodyStream,
) -> Result<Response> {
    let headers = &request.headers;
    creation::admit_by_address(state, request)?;
    let intent = intent(version, headers, 0, None)?;
    if let Some(length) = intent.length {
        creation::check_max_size(state, length)?;
    }
    let metadata = if headers.contains_key(UPLOAD_METADATA) {
        creation::parse_metadata(state, headers)?.to_header()
    } else {
        representation_metadata(state, headers)
    };
    state.check_free_space()?;
    let parsed = crate::protocol::headers::Metadata::parse(&metadata, usize::MAX)?;
    let owner = crate::protocol::access::admit_creation(
        state,
        request.principal.as_ref(),
        intent.length,
        &parsed,
    )
    .await?;
    let finished = intent.length == Some(0);
    let mut info = UploadInfo {
        id: UploadId::random(),
        length: intent.length,
        offset: 0,
        metadata,
        created_at: unix_now(),
        expires_at: expiration::deadline(state, finished),
        concat: Concat::None,
        state: if finished {
            UploadState::Completed
        } else {
            UploadState::Initiated
        },
        owner,
    };
    state.hooks.pre_create(&mut info, request).await?;
    if finished {
        // An empty upload is finished as it is created, as in tus creation.
        state.hooks.pre_finish(&info, request).await?;
    }
    // The commit of the content flushes the new record before the client hears of it.
    let mut info = state.create_upload(info, finished).await?;
    if let (Some(owner), false) = (&info.owner, info.is_finished()) {
        state.auth.ledger.started(owner, info.id.clone());
    }
    state.hooks.post_create(&info, request);
    if finished {
        state.hooks.post_finish(&info, request).await;
    }
    state.metrics.upload(UploadEvent::Created);
    tracing::info!(upload = %info.id, interop = %version, "upload created (draft)");

    let location = super::super::upload_url(state, headers, &info.id);
    let mut announced = vec![("Location", location.clone())];
    if version.has_limits() {
        announced.extend(super::server_limits(state, version).map(|l| ("Upload-Limit", l)));
    }
    super::send_104(request.interim.as_ref(), version, &announced);

    let guard = state.lock_for_write(&info.id).await?;
    let result = receive(state, version, &mut info, request, body, intent, &guard).await;
    if result.is_err() {
        // Some failures end before any commit; the Location we answer must still hold.
        state.sessions.flush().await?;
    }
    if !info.is_finished() && state.sessions.get(&info.id).await?.is_some() {
        // The record is durable now (the content's commit or the flush above), and still
        // there (a pre-finish hook may have refused the upload). Content that finished the
        // upload had its copy written by the commit already.
        state.keep_record_copy(&info).await;
    }
    let mut response = match result {
        Ok(()) => super::super::empty(StatusCode::CREATED),
        Err(err) => {
            // The resource exists even though its content failed: the client resumes there.
            super::problem::response(state, version, err)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    super::describe(state, version, &info, &mut response);
    Ok(response)
}

/// The draft describes the representation with `Content-Type` and `Content-Disposition`
/// (RFC 6266); kept as tus metadata (`filetype`, `filename`), so GET and tus clients see them.
/// Left out when longer than `limits.max_metadata_size`, like the metadata tus would refuse.
fn representation_metadata(state: &AppState, headers: &HeaderMap) -> String {
    let filetype = header_str(headers, &http::header::CONTENT_TYPE);
    let filename = header_str(headers, &http::header::CONTENT_DISPOSITION)
        .and_then(fields::disposition_filename);
    let pairs = [
        ("filetype", filetype.map(str::to_owned)),
        ("filename", filename),
    ];
    let encoded: Vec<String> = pairs
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key} {}", B64.encode(v))))
        .collect();
    let metadata = encoded.join(",");
    let max = usize::try_from(state.settings.limits.max_metadata_size.0).unwrap_or(usize::MAX);
    if metadata.len() <= max {
        metadata
    } else {
        String::new()
    }
}

/// PATCH an upload resource: append the content at `Upload-Offset`.
pub async fn append(
    state: &AppState,
    version: Interop,
    id: UploadId,
    request: &RequestParts,
    body: BodyStream,
) -> Result<Response> {
    let headers = &request.headers;
    if version.requires_partial_upload() && !super::is_partial_upload(headers) {
        return Err(TusError::UnsupportedMediaType);
    }
    let requested = header_str(headers, &UPLOAD_OFFSET)
        .and_then(fields::sf_non_negative_integer)
        .ok_or(TusError::BadRequest(
            "Upload-Offset is required and must be a non-negative integer",
        ))?;
    // A malformed request must not end the one in flight: check what needs no upload first.
    completes(version, headers)?;
    let guard = super::take_over(state, &id).await?;
    let mut info = state.load(&id).await?;
    if info.is_final() {
        return Err(TusError::FinalUploadPatch);
    }
    if info.is_finished() {
        // Repeating the completing request with no content changes nothing: not an error.
        let repeat = requested == info.offset && content_length(headers) == Some(0);
        return if repeat {
            Ok(appended(state, version, &info))
        } else {
            Err(TusError::UploadCompleted)
        };
    }
    if requested != info.offset {
        return Err(TusError::OffsetMismatch {
            current: info.offset,
            requested,
        });
    }
    let intent = intent(version, headers, info.offset, info.length)?;
    if let (Some(length), None) = (intent.length, info.length) {
        creation::declare_length(state, request.principal.as_ref(), &mut info, length)?;
    }
    receive(state, version, &mut info, request, body, intent, &guard).await?;
    Ok(appended(state, version, &info))
}

/// The response to a successful append.
fn appended(state: &AppState, version: Interop, info: &UploadInfo) -> Response {
    let mut response = super::super::empty(StatusCode::NO_CONTENT);
    super::describe(state, version, info, &mut response);
    expiration::describe(info, &mut response);
    response
}

/// Read the completeness, length and digest fields of a request to an upload at `offset`
/// whose length is `known`.
///
/// # Errors
/// 400 when completeness is missing (interop 4 and later) or the lengths disagree
/// (inconsistent-upload-length), or a digest field is malformed.
fn intent(
    version: Interop,
    headers: &HeaderMap,
    offset: u64,
    known: Option<u64>,
) -> Result<Intent> {
    let completes = completes(version, headers)?;
    // The draft: an Upload-Length that is no integer is ignored, not refused.
    let declared = header_str(headers, &UPLOAD_LENGTH).and_then(fields::sf_non_negative_integer);
    let content = content_length(headers);
    let implied = match (completes, content) {
        (true, Some(content)) => Some(offset.checked_add(content).ok_or(
            TusError::InconsistentLength("Content-Length is too large".to_owned()),
        )?),
        _ => None,
    };
    let mut length = known;
    for (source, value) in [("Upload-Length", declared), ("Content-Length", implied)] {
        let Some(value) = value else { continue };
        match length {
            Some(have) if have != value => {
                return Err(TusError::InconsistentLength(format!(
                    "the upload's length is {have}, but {source} says {value}"
                )));
            }
            _ => length = Some(value),
        }
    }
    if let Some(length) = length {
        if length < offset || content.is_some_and(|c| offset.saturating_add(c) > length) {
            return Err(TusError::InconsistentLength(format!(
                "a length of {length} leaves no room for this content at offset {offset}"
            )));
        }
    }
    Ok(Intent {
        completes,
        length,
        digests: digests(headers, completes)?,
    })
}

/// Whether the request ends the upload: `Upload-Complete` (interop 4 and later, required), or
/// for interop 3 the absence of `Upload-Incomplete: ?1`.
fn completes(version: Interop, headers: &HeaderMap) -> Result<bool> {
    let field = version.completeness_field();
    let value = header_str(headers, &field).and_then(fields::sf_boolean);
    match (field == UPLOAD_INCOMPLETE, value) {
        // Interop 3 had no way to say "complete" but leaving Upload-Incomplete out.
        (true, incomplete) => Ok(!incomplete.unwrap_or(false)),
        (false, Some(complete)) => Ok(complete),
        (false, None) => Err(TusError::BadRequest(
            "Upload-Complete is required and must be ?1 or ?0",
        )),
    }
}

/// `Content-Digest`, and on a completing request `Repr-Digest`, as a checksum request.
fn digests(headers: &HeaderMap, completes: bool) -> Result<Option<ChecksumRequest>> {
    let parse = |name, field: HeaderName| -> Result<Option<_>> {
        match header_str(headers, &field) {
            None => Ok(None),
            Some(value) => fields::strongest_digest(name, value).map_err(digest_error),
        }
    };
    let content = parse("Content-Digest", CONTENT_DIGEST)?;
    let representation = if completes {
        parse("Repr-Digest", REPR_DIGEST)?
    } else {
        None
    };
    Ok(
        (content.is_some() || representation.is_some()).then_some(ChecksumRequest::Digests {
            content,
            representation,
        }),
    )
}

fn digest_error(err: DigestError) -> TusError {
    match err {
        DigestError::Malformed(_) => TusError::BadRequest(
            "Content-Digest and Repr-Digest must be dictionaries like sha-256=:base64:",
        ),
        DigestError::WrongLength(..) => {
            TusError::BadRequest("a sha-256 or sha-512 digest has the wrong length")
        }
    }
}

/// tus's receive loop, with the draft's progress reports, then completion.
async fn receive(
    state: &AppState,
    version: Interop,
    info: &mut UploadInfo,
    request: &RequestParts,
    body: BodyStream,
    intent: Intent,
    guard: &UploadGuard,
) -> Result<()> {
    let mut request = request.clone();
    let interval = state.settings.draft.progress_interval.0;
    if version.reports_progress() && !interval.is_zero() && request.interim.is_some() {
        let interim = request.interim.clone();
        request.progress = Some(ProgressReport {
            interval,
            report: Arc::new(move |offset| {
                let fields = [("Upload-Offset", offset.to_string())];
                super::send_104(interim.as_ref(), version, &fields);
            }),
        });
    }
    core::receive(state, info, &request, body, intent.digests, guard).await?;
    if !intent.completes || info.is_finished() {
        return Ok(());
    }
    match info.length {
        // The content ended short of the length the client gave.
        Some(length) => Err(TusError::InconsistentLength(format!(
            "the upload was completed at {} bytes, but its length is {length}",
            info.offset
        ))),
        // Completed with an unannounced length (a body without Content-Length): now known.
        None => {
            let mut complete = info.clone();
            complete.length = Some(info.offset);
            complete.state = UploadState::Completed;
            // The same pre-finish as tus: a refusal discards the upload, a failure keeps it.
            if let Err(err) = state.hooks.pre_finish(&complete, &request).await {
                if matches!(err, TusError::HookRejected { .. }) {
                    state.remove_upload(&info.id).await?;
                }
                return Err(err);
            }
            state.blobs.complete(&info.id, info.offset).await?;
            *info = complete;
            expiration::renew(state, info);
            state.sessions.put(info).await?;
            state.keep_record_copy(info).await;
            state.hooks.post_finish(info, &request).await;
            state.metrics.upload(UploadEvent::Finished);
            Ok(())
        }
    }
}
