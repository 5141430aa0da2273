//! §Termination: DELETE `{base}{id}` ends an upload and frees its space.
//!
//! Statuses: 204; 404 (unknown); 412; 423 (held by a request that would not let go).
//! A PATCH in flight is asked to stop first, so termination never races a write.

use http::{HeaderMap, StatusCode};
use warp::reply::Response;

use crate::error::{Result, TusError};
use crate::metrics::UploadEvent;
use crate::state::AppState;
use crate::upload::UploadId;

/// DELETE `{base}{id}`.
pub async fn terminate_upload(
    state: &AppState,
    id: UploadId,
    headers: &HeaderMap,
) -> Result<Response> {
    super::require_tus_resumable(headers)?;
    let _guard = state.lock_for_write(&id).await?;
    // Expired uploads may still be terminated: the client is tidying up.
    if state.sessions.get(&id).await?.is_none() {
        return Err(TusError::NotFound);
    }
    state.remove_upload(&id).await?;
    state.metrics.upload(UploadEvent::Terminated);
    tracing::info!(upload = %id, "upload terminated");
    Ok(super::empty(StatusCode::NO_CONTENT))
}
