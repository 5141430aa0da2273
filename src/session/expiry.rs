//! The expiry sweeper: deletes expired uploads, bytes and record, on a schedule.
//!
//! Uploads held by a request are skipped this round (their PATCH renews the expiry anyway).
//! The sweep scans every record; at the sizes one node serves (up to ~10^6 uploads) that is
//! milliseconds to a second once a minute. An index by expiry time is the next step if needed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lock::UploadLocks;
use super::{SessionError, SessionStore};
use crate::storage::BlobStore;
use crate::upload::unix_now;

/// Delete every upload expired at `now`; returns how many were deleted.
///
/// # Errors
/// When the session store cannot be read; a failure on one upload is logged and skipped.
pub async fn sweep_once(
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
    locks: &UploadLocks,
    now: u64,
) -> Result<usize, SessionError> {
    let mut deleted = 0;
    for info in sessions.expired(now).await? {
        let Ok(_guard) = locks.try_lock(&info.id).await else {
            continue;
        };
        // The record's copy, then the record: once it is gone nobody can reach the bytes, so
        // removing them is safe.
        if let Err(err) = blobs.drop_record_copy(&info.id).await {
            tracing::warn!(upload = %info.id, error = %err, "could not delete expired record's copy");
            continue;
        }
        if let Err(err) = sessions.remove(&info.id).await {
            tracing::warn!(upload = %info.id, error = %err, "could not delete expired record");
            continue;
        }
        if let Err(err) = blobs.remove(&info.id).await {
            tracing::warn!(upload = %info.id, error = %err, "could not delete expired data");
        }
        tracing::info!(upload = %info.id, "expired upload deleted");
        deleted += 1;
    }
    Ok(deleted)
}

/// Run [`sweep_once`] every `interval` until `stop` is cancelled, telling `on_deleted` how
/// many uploads each sweep removed.
pub fn spawn_sweeper(
    sessions: Arc<dyn SessionStore>,
    blobs: Arc<dyn BlobStore>,
    locks: UploadLocks,
    interval: Duration,
    stop: CancellationToken,
    on_deleted: impl Fn(usize) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match sweep_once(sessions.as_ref(), blobs.as_ref(), &locks, unix_now()).await {
                Ok(0) => {}
                Ok(n) => {
                    on_deleted(n);
                    tracing::info!(deleted = n, "expiry sweep");
                }
                Err(err) => tracing::warn!(error = %err, "expiry sweep failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::session::SledSessionStore;
    use crate::storage::fs::FsBlobStore;
    use crate::upload::{Concat, UploadId, UploadInfo};

    #[tokio::test]
    async fn expired_uploads_lose_record_and_bytes_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = SledSessionStore::open(&dir.path().join("db"), Durability::Relaxed).unwrap();
        let blobs = FsBlobStore::open(&dir.path().join("uploads")).unwrap();
        let locks = UploadLocks::new();
        let mut ids = Vec::new();
        for expires_at in [Some(100), Some(300), None] {
            let info = UploadInfo {
                id: UploadId::random(),
                length: Some(1),
                offset: 0,
                metadata: String::new(),
                created_at: 0,
                expires_at,
                concat: Concat::None,
                state: crate::upload::UploadState::Initiated,
                owner: None,
            };
            blobs.create(&info.id).await.unwrap();
            sessions.put(&info).await.unwrap();
            ids.push(info.id);
        }
        assert_eq!(sweep_once(&sessions, &blobs, &locks, 200).await.unwrap(), 1);
        assert!(sessions.get(&ids[0]).await.unwrap().is_none());
        assert!(!blobs.path(&ids[0]).exists());
        assert!(sessions.get(&ids[1]).await.unwrap().is_some());
        assert!(blobs.path(&ids[2]).exists());
    }
}
