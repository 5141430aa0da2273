//! §Termination: DELETE `{base}{id}` ends an upload and frees its space.
//!
//! Statuses: 204; 404 (unknown); 412; 423 (held by a request that would not let go).
//! A PATCH in flight is asked to stop first, so termination never races a write. The
//! pre-terminate hook may refuse (its status, upload kept); post-terminate follows a removal.
//! The IETF draft's DELETE ends an upload through [`terminate`] too: the same hooks either way.

use http::StatusCode;
use warp::reply::Response;

use crate::error::{Result, TusError};
use crate::metrics::UploadEvent;
use crate::state::AppState;
use crate::upload::UploadId;

use super::RequestParts;

/// DELETE `{base}{id}`.
pub async fn terminate_upload(
    state: &AppState,
    id: UploadId,
    request: &RequestParts,
) -> Result<Response> {
    super::require_tus_resumable(&request.headers)?;
    let _guard = state.lock_for_write(&id).await?;
    // Expired uploads may still be terminated: the client is tidying up.
    terminate(state, &id, request).await?;
    tracing::info!(upload = %id, "upload terminated");
    Ok(super::empty(StatusCode::NO_CONTENT))
}

/// End upload `id`, whose write lock the caller holds: pre-terminate may refuse, the record
/// and bytes go, post-terminate is queued before the caller answers.
///
/// # Errors
/// 404 for an unknown upload, the hook's refusal, or a store failure.
pub async fn terminate(state: &AppState, id: &UploadId, request: &RequestParts) -> Result<()> {
    let Some(info) = state.sessions.get(id).await? else {
        return Err(TusError::NotFound);
    };
    state.hooks.pre_terminate(&info, request).await?;
    state.remove_upload(id).await?;
    state.hooks.post_terminate(&info, request).await;
    state.metrics.upload(UploadEvent::Terminated);
    Ok(())
}
