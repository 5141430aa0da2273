//! §Creation, §Creation With Upload and §Creation Defer Length: POST `{base}`.
//!
//! Statuses: 201 (with Location, Upload-Expires, and Upload-Offset when a body came along);
//! 400 (lengths missing, both given, malformed, bad metadata); 412; 413 (over Tus-Max-Size);
//! and for creation-with-upload the PATCH statuses of its body (460, 500, 507).

use http::header::{HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use warp::reply::Response;

use super::{
    access, checksum, concatenation, core, expiration, header_str, headers, set_u64, BodyStream,
    RequestParts, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH, UPLOAD_LENGTH, UPLOAD_METADATA,
    UPLOAD_OFFSET,
};
use crate::auth::Principal;
use crate::error::{Result, TusError};
use crate::metrics::UploadEvent;
use crate::protocol::headers::{ConcatRequest, Metadata};
use crate::state::AppState;
use crate::upload::{unix_now, Concat, UploadId, UploadInfo, UploadState};

/// POST `{base}`: create an upload (or, with `Upload-Concat: final;...`, a final upload).
pub async fn create_upload(
    state: &AppState,
    request: &RequestParts,
    body: BodyStream,
) -> Result<Response> {
    let headers = &request.headers;
    super::require_tus_resumable(headers)?;
    admit_by_address(state, request)?;
    let concat = header_str(headers, &UPLOAD_CONCAT)
        .map(headers::parse_concat)
        .transpose()?;
    let metadata = parse_metadata(state, headers)?;
    state.check_free_space()?;
    let role = match concat {
        Some(ConcatRequest::Final(urls)) => {
            return concatenation::create_final(state, request, &urls, metadata).await;
        }
        Some(ConcatRequest::Partial) => Concat::Partial,
        None => Concat::None,
    };
    let length = requested_length(state, headers)?;
    // Validate the checksum header before anything is created.
    let checksum = checksum::requested(headers)?;
    let owner =
        access::admit_creation(state, request.principal.as_ref(), length, &metadata).await?;

    let mut info = UploadInfo {
        id: UploadId::random(),
        length,
        offset: 0,
        metadata: metadata.to_header(),
        created_at: unix_now(),
        expires_at: expiration::deadline(state, length == Some(0)),
        concat: role,
        state: if length == Some(0) {
            UploadState::Completed
        } else {
            UploadState::Initiated
        },
        owner,
    };
    state.hooks.pre_create(&mut info, request).await?;
    if info.is_finished() {
        // A zero-length upload is finished as it is created.
        state.hooks.pre_finish(&info, request).await?;
    }
    let with_body = super::has_offset_content_type(headers);
    // With a body, the commit of that body flushes the new record too, before the 201.
    let mut info = state.create_upload(info, !with_body).await?;
    if let (Some(owner), false) = (&info.owner, info.is_finished()) {
        state.auth.ledger.started(owner, info.id.clone());
    }
    state.hooks.post_create(&info, request);
    if info.is_finished() {
        state.hooks.post_finish(&info, request).await;
    }
    state.metrics.upload(UploadEvent::Created);
    tracing::info!(upload = %info.id, length = info.length.map_or_else(|| "deferred".to_owned(), |l| l.to_string()), "upload created");

    let location = super::upload_url(state, headers, &info.id);
    let mut result = Ok(());
    if with_body {
        // §Creation With Upload: the body is a first PATCH at offset 0.
        let guard = state.lock_for_write(&info.id).await?;
        result = core::receive(state, &mut info, request, body, checksum, &guard).await;
        if result.is_err() {
            // Some failures end before any commit; the Location we answer must still hold.
            state.sessions.flush().await?;
        }
        if !info.is_finished() && !matches!(result, Err(TusError::HookRejected { .. })) {
            // The record is durable now (the body's commit or the flush above). A body that
            // finished the upload had its copy written by the commit already.
            state.keep_record_copy(&info).await;
        }
    }
    let mut response = match result {
        Ok(()) => super::empty(StatusCode::CREATED),
        // pre-finish refused the upload and it is gone: no Location to resume.
        Err(err @ TusError::HookRejected { .. }) => return Err(err),
        // The upload exists even though its first chunk failed; Location lets the client resume.
        Err(err) => err.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    if with_body {
        set_u64(&mut response, UPLOAD_OFFSET, info.offset);
    }
    expiration::describe(&info, &mut response);
    Ok(response)
}

/// `limits.creation_rate` per client address, in every auth mode (token mode adds the
/// owner's own hourly limit on top).
///
/// # Errors
/// 429 with the seconds until the address may create again.
pub fn admit_by_address(state: &AppState, request: &RequestParts) -> Result<()> {
    let (Some(limiter), Some(ip)) = (
        &state.admission.creations,
        request.client_ip(&state.settings.server),
    ) else {
        return Ok(());
    };
    limiter
        .admit(ip, std::time::Instant::now())
        .map_err(|retry_after| {
            crate::admission::note_refusal(&state.admission.creation_log, |suppressed| {
                tracing::warn!(
                    client = %ip,
                    retry_after,
                    suppressed,
                    "creation refused: over limits.creation_rate for this address"
                );
            });
            TusError::CreationRateLimited { retry_after }
        })
}

/// Upload-Length or Upload-Defer-Length: exactly one of them (`None` = deferred).
fn requested_length(state: &AppState, headers: &HeaderMap) -> Result<Option<u64>> {
    let length = header_str(headers, &UPLOAD_LENGTH);
    let defer = header_str(headers, &UPLOAD_DEFER_LENGTH);
    match (length, defer) {
        (Some(_), Some(_)) => Err(TusError::BadRequest(
            "send either Upload-Length or Upload-Defer-Length, not both",
        )),
        (None, None) if headers.contains_key(UPLOAD_LENGTH) => Err(TusError::BadRequest(
            "Upload-Length must be a non-negative integer",
        )),
        (None, None) => Err(TusError::BadRequest(
            "Upload-Length or Upload-Defer-Length: 1 is required",
        )),
        (None, Some(value)) => {
            headers::parse_defer_length(value)?;
            Ok(None)
        }
        (Some(value), None) => {
            let length = headers::parse_u64("Upload-Length", value)?;
            check_max_size(state, length)?;
            Ok(Some(length))
        }
    }
}

/// Refuse lengths over Tus-Max-Size (413).
pub fn check_max_size(state: &AppState, length: u64) -> Result<()> {
    match state.settings.max_size() {
        Some(max) if length > max => Err(TusError::TooLarge(format!(
            "Upload-Length {length} exceeds Tus-Max-Size {max}"
        ))),
        _ => Ok(()),
    }
}

/// Upload-Metadata, bounded by `limits.max_metadata_size` and `limits.max_metadata_keys`
/// (thousands of one-letter keys fit in the size and would each cost a hook, a log field, a
/// stored entry).
pub fn parse_metadata(state: &AppState, headers: &HeaderMap) -> Result<Metadata> {
    let limits = &state.settings.limits;
    let max = usize::try_from(limits.max_metadata_size.0).unwrap_or(usize::MAX);
    let Some(value) = headers.get(UPLOAD_METADATA) else {
        return Ok(Metadata::default());
    };
    let text = value
        .to_str()
        .map_err(|_| TusError::BadRequest("Upload-Metadata must be ASCII"))?;
    let metadata = Metadata::parse(text, max)?;
    if metadata.pairs().count() > limits.max_metadata_keys {
        crate::admission::note_refusal(&state.admission.metadata_log, |suppressed| {
            tracing::warn!(
                max = limits.max_metadata_keys,
                suppressed,
                "refused Upload-Metadata with too many keys (limits.max_metadata_keys)"
            );
        });
        return Err(TusError::BadRequest(
            "Upload-Metadata has more keys than this server allows (limits.max_metadata_keys)",
        ));
    }
    Ok(metadata)
}

/// §Creation Defer Length: a PATCH may state the length of a deferred upload, once.
///
/// # Errors
/// 400 when the length changes or is below the offset; 413 over Tus-Max-Size.
pub fn declare_length(
    state: &AppState,
    principal: Option<&Principal>,
    info: &mut UploadInfo,
    length: u64,
) -> Result<()> {
    match info.length {
        Some(known) if known == length => Ok(()),
        Some(_) => Err(TusError::BadRequest(
            "Upload-Length cannot be changed once set",
        )),
        None if length < info.offset => Err(TusError::BadRequest(
            "Upload-Length is smaller than the bytes already uploaded",
        )),
        None => {
            check_max_size(state, length)?;
            if let Some(principal) = principal {
                access::check_owner_size(principal, length)?;
            }
            info.length = Some(length);
            Ok(())
        }
    }
}
