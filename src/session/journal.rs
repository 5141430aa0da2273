//! Small bodies acknowledged through the session store's journal reach their blobs' disk in
//! batches, off the request path; at start-up, journaled bodies are written back first.
//!
//! A PATCH or creation-with-upload body of at most [`JOURNAL_LIMIT`] bytes is written to its
//! blob without a sync and stored, with the record, in one shared flush of the session store
//! ([`SessionStore::put_journaled`]): the record's offset never exceeds bytes that are durable
//! somewhere. Every [`SETTLE_INTERVAL`] the settler syncs the blob store in one go (`syncfs`)
//! and forgets the entries that sync covered.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use super::{SessionError, SessionStore};
use crate::storage::{BlobStore, StoreError};

/// Largest body that is journaled instead of synced on its own.
pub const JOURNAL_LIMIT: u64 = 64 * 1024;

/// How often journaled bodies are synced into their blobs and forgotten.
pub const SETTLE_INTERVAL: Duration = Duration::from_millis(200);

/// Why settling or replaying the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The session store failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The blob store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sync every blob and forget the journal entries that existed before the sync began (their
/// bytes were written before they were journaled); returns how many were forgotten.
///
/// # Errors
/// When either store fails; the entries stay and the next round tries again.
pub async fn settle_once(
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
) -> Result<usize, JournalError> {
    let covered = sessions.journaled_keys().await?;
    if covered.is_empty() {
        return Ok(0);
    }
    blobs.sync_all().await?;
    sessions.forget_journaled(&covered).await?;
    Ok(covered.len())
}

/// Write every journaled body back into its blob (a power cut may have lost the unsynced
/// copy), sync, and forget them. Bodies of uploads that no longer exist are dropped.
///
/// # Errors
/// When either store fails; start-up must not go on with bytes it cannot place.
pub async fn replay(
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
) -> Result<usize, JournalError> {
    let entries = sessions.journal().await?;
    let mut replayed = 0;
    for entry in &entries {
        let (id, at) = &entry.key;
        if sessions.get(id).await?.is_none() {
            continue;
        }
        let mut writer = match blobs.writer(id).await {
            Ok(writer) => writer,
            Err(StoreError::NotFound) => {
                blobs.create(id).await?;
                blobs.writer(id).await?
            }
            Err(err) => return Err(err.into()),
        };
        let (_, written) = writer.write_at(BytesMut::from(&entry.bytes[..]), *at).await;
        written?;
        replayed += 1;
    }
    if !entries.is_empty() {
        blobs.sync_all().await?;
        let keys: Vec<_> = entries.into_iter().map(|entry| entry.key).collect();
        sessions.forget_journaled(&keys).await?;
    }
    Ok(replayed)
}

/// Run [`settle_once`] every [`SETTLE_INTERVAL`] until `stop`, then once more.
pub fn spawn_settler(
    sessions: Arc<dyn SessionStore>,
    blobs: Arc<dyn BlobStore>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SETTLE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                _ = ticker.tick() => false,
            };
            if let Err(err) = settle_once(sessions.as_ref(), blobs.as_ref()).await {
                tracing::warn!(error = %err, "could not settle journaled bodies; retrying");
            }
            if stopping {
                return;
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
    use crate::upload::{Concat, UploadId, UploadInfo, UploadState};

    fn record(offset: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(100),
            offset,
            metadata: String::new(),
            created_at: 1,
            expires_at: None,
            concat: Concat::None,
            state: UploadState::Uploading,
            owner: None,
        }
    }

    fn stores(dir: &std::path::Path) -> (SledSessionStore, FsBlobStore) {
        (
            SledSessionStore::open(&dir.join("db"), Durability::Fsync).unwrap(),
            FsBlobStore::open(&dir.join("uploads")).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_journaled_body_lost_from_its_file_is_written_back_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let info = record(5);
        {
            let (sessions, blobs) = stores(dir.path());
            blobs.create(&info.id).await.unwrap();
            // What a power cut leaves: the record and the journal, but not the unsynced file data.
            sessions.put_journaled(&info, 0, b"hello").await.unwrap();
            assert_eq!(blobs.len(&info.id).await.unwrap(), 0);
        }
        let (sessions, blobs) = stores(dir.path());
        assert_eq!(replay(&sessions, &blobs).await.unwrap(), 1);
        let mut writer = blobs.writer(&info.id).await.unwrap();
        assert_eq!(
            writer.read_at(0, 5).await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert!(sessions.journal().await.unwrap().is_empty());
        assert_eq!(sessions.get(&info.id).await.unwrap(), Some(info));
    }

    #[tokio::test]
    async fn settling_forgets_what_the_sync_covered_and_bodies_of_removed_uploads_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (sessions, blobs) = stores(dir.path());
        let (kept, removed) = (record(3), record(2));
        for (info, bytes) in [(&kept, &b"abc"[..]), (&removed, &b"xy"[..])] {
            blobs.create(&info.id).await.unwrap();
            let mut writer = blobs.writer(&info.id).await.unwrap();
            writer.write_at(BytesMut::from(bytes), 0).await.1.unwrap();
            sessions.put_journaled(info, 0, bytes).await.unwrap();
        }
        assert_eq!(sessions.journaled_keys().await.unwrap().len(), 2);
        sessions.remove(&removed.id).await.unwrap();
        // A replay skips the removed upload and keeps the other's bytes as they are.
        assert_eq!(replay(&sessions, &blobs).await.unwrap(), 1);
        sessions.put_journaled(&kept, 0, b"abc").await.unwrap();
        assert_eq!(settle_once(&sessions, &blobs).await.unwrap(), 1);
        assert!(sessions.journaled_keys().await.unwrap().is_empty());
        assert_eq!(settle_once(&sessions, &blobs).await.unwrap(), 0);
    }
}
