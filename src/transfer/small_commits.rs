//! Small commits through the session store's journal, and the drain that syncs their files.
//!
//! With fsync durability a PATCH normally ends in two syncs: its file's fdatasync, then the
//! record's group flush. For a small body (a creation-with-upload of a few KiB, the last
//! chunk of a file) the file sync costs about as much as the flush and, unlike the flush, is
//! paid once per upload. [`SmallCommits::commit`] skips it: a copy of the body's bytes goes
//! into the session store's journal in the same transaction as the record, and the group
//! flush that many uploads share makes both durable. [`SmallCommits::drain`] later syncs all
//! upload files at once and lets the journal drop what they now hold durably;
//! [`replay`] puts journaled bytes back into their files at start-up, before anyone reads
//! them. See [`crate::session::journal`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Durability, Settings};
use crate::error::Result;
use crate::session::SessionStore;
use crate::storage::{BlobStore, BlobWriter, StoreError};
use crate::upload::UploadInfo;

/// Journaled bytes not yet synced into their files, past which new commits take the ordinary
/// path (their file's fdatasync) until a drain catches up: bounds sled's log and cache.
const MAX_PENDING: u64 = 64 << 20;

/// Journaled bytes that start a drain before the interval is up.
const DRAIN_AT: u64 = 16 << 20;

/// The journal's side of the PATCH path. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SmallCommits {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sessions: Arc<dyn SessionStore>,
    blobs: Arc<dyn BlobStore>,
    max_write: u64,
    interval: Duration,
    /// Journaled bytes not yet drained (as counted by the journal: pieces with headers).
    pending: AtomicU64,
    /// Woken when `pending` passes [`DRAIN_AT`].
    wake: tokio::sync::Notify,
}

impl SmallCommits {
    /// The journal path when it applies: fsync durability, `storage.journal_max_write` above 0,
    /// a session store with a journal and a blob store that can sync everything at once.
    pub fn new(
        settings: &Settings,
        sessions: &Arc<dyn SessionStore>,
        blobs: &Arc<dyn BlobStore>,
    ) -> Option<SmallCommits> {
        let storage = &settings.storage;
        let applies = storage.durability == Durability::Fsync
            && storage.journal_max_write.0 > 0
            && sessions.journal().is_some()
            && blobs.can_sync_all();
        applies.then(|| SmallCommits {
            inner: Arc::new(Inner {
                sessions: Arc::clone(sessions),
                blobs: Arc::clone(blobs),
                max_write: storage.journal_max_write.0,
                interval: storage.journal_sync_interval.0,
                pending: AtomicU64::new(0),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Whether a commit of `len` new bytes goes through the journal.
    pub fn admits(&self, len: u64) -> bool {
        len > 0
            && len <= self.inner.max_write
            && self.inner.pending.load(Ordering::Relaxed) + len <= MAX_PENDING
    }

    /// Store `info` (already moved to its new offset) with a copy of its blob's bytes
    /// `from..info.offset`, written through `writer` and not yet synced; durable on return.
    pub async fn commit(
        &self,
        info: &UploadInfo,
        writer: &mut dyn BlobWriter,
        from: u64,
    ) -> Result<()> {
        let len = info.offset - from;
        let bytes = writer
            .read_back(
                from,
                usize::try_from(len).expect("admitted sizes are small"),
            )
            .await?;
        let journal = self.inner.sessions.journal().expect("checked in new");
        journal.put_with_bytes(info, from, &bytes).await?;
        let pending = self.inner.pending.fetch_add(len, Ordering::Relaxed) + len;
        if pending >= DRAIN_AT {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Sync every upload file, then drop the journal entries whose bytes were written before
    /// the sync began.
    ///
    /// # Errors
    /// When the sync or the journal fails; the entries stay for the next drain (or replay).
    pub async fn drain(&self) -> Result<()> {
        let journal = self.inner.sessions.journal().expect("checked in new");
        // Every entry below this number had its bytes written before the sync starts.
        let upto = journal.next_seq();
        let was_pending = self.inner.pending.load(Ordering::Relaxed);
        if was_pending == 0 {
            return Ok(());
        }
        self.inner.blobs.sync_all().await?;
        journal.forget_before(upto)?;
        // Entries of commits still between their number and their insert stay for the next
        // drain; counting them as drained only lets a few more bytes in meanwhile.
        let _ = self
            .inner
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(was_pending))
            });
        Ok(())
    }

    /// Drain every `storage.journal_sync_interval` (sooner when [`DRAIN_AT`] bytes wait)
    /// until `stop`, then once more.
    pub fn spawn_drainer(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let commits = self.clone();
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    () = stop.cancelled() => true,
                    () = commits.inner.wake.notified() => false,
                    () = tokio::time::sleep(commits.inner.interval) => false,
                };
                if let Err(err) = commits.drain().await {
                    tracing::error!(error = %err, "syncing journaled uploads failed; the journal keeps them");
                }
                if stopping {
                    break;
                }
            }
        })
    }
}

/// Write the bytes still in the session store's journal back into their files and sync them
/// (after a crash, a file may lack bytes whose only durable copy was the journal), then empty
/// the journal. Entries of uploads that no longer have a record are dropped.
///
/// # Errors
/// When the journal cannot be read or a file cannot be written.
pub async fn replay(sessions: &dyn SessionStore, blobs: &dyn BlobStore) -> Result<usize> {
    let Some(journal) = sessions.journal() else {
        return Ok(0);
    };
    let entries = journal.entries()?;
    let mut writers: HashMap<_, Box<dyn BlobWriter>> = HashMap::new();
    let mut replayed = 0;
    for entry in entries {
        if sessions.get(&entry.id).await?.is_none() {
            continue;
        }
        if !writers.contains_key(&entry.id) {
            let writer = match blobs.writer(&entry.id).await {
                Err(StoreError::NotFound) => {
                    blobs.create(&entry.id).await?;
                    blobs.writer(&entry.id).await?
                }
                other => other?,
            };
            writers.insert(entry.id.clone(), writer);
        }
        let writer = writers.get_mut(&entry.id).expect("inserted above");
        let (_, written) = writer
            .write_at(bytes::BytesMut::from(&entry.bytes[..]), entry.at)
            .await;
        written?;
        replayed += 1;
    }
    for writer in writers.values_mut() {
        writer.sync().await?;
    }
    journal.forget_before(journal.next_seq())?;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SledSessionStore;
    use crate::storage::fs::FsBlobStore;
    use crate::upload::{Concat, UploadId, UploadState};

    struct Fixture {
        _dir: tempfile::TempDir,
        sessions: Arc<dyn SessionStore>,
        blobs: Arc<dyn BlobStore>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sessions: Arc<dyn SessionStore> =
            Arc::new(SledSessionStore::open(&dir.path().join("db"), Durability::Fsync).unwrap());
        let blobs: Arc<dyn BlobStore> =
            Arc::new(FsBlobStore::open(&dir.path().join("uploads")).unwrap());
        Fixture {
            _dir: dir,
            sessions,
            blobs,
        }
    }

    fn record(length: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(length),
            offset: 0,
            metadata: String::new(),
            created_at: 1,
            expires_at: None,
            concat: Concat::None,
            state: UploadState::Uploading,
            owner: None,
        }
    }

    /// Write `bytes` at the upload's offset and commit them through the journal.
    async fn write_and_commit(
        f: &Fixture,
        commits: &SmallCommits,
        info: &mut UploadInfo,
        bytes: &[u8],
    ) {
        let mut writer = f.blobs.writer(&info.id).await.unwrap();
        let (_, written) = writer
            .write_at(bytes::BytesMut::from(bytes), info.offset)
            .await;
        written.unwrap();
        let from = info.offset;
        info.offset += bytes.len() as u64;
        commits.commit(info, &mut *writer, from).await.unwrap();
    }

    #[tokio::test]
    async fn only_fsync_durability_and_small_bodies_take_the_journal() {
        let f = fixture();
        let mut settings = Settings::default();
        let commits = SmallCommits::new(&settings, &f.sessions, &f.blobs).expect("applies");
        assert!(commits.admits(4096));
        assert!(commits.admits(64 << 10));
        assert!(!commits.admits((64 << 10) + 1));
        assert!(!commits.admits(0));
        settings.storage.durability = Durability::Relaxed;
        assert!(SmallCommits::new(&settings, &f.sessions, &f.blobs).is_none());
    }

    #[tokio::test]
    async fn a_drain_leaves_the_bytes_in_their_files_and_empties_the_journal() {
        let f = fixture();
        let commits = SmallCommits::new(&Settings::default(), &f.sessions, &f.blobs).unwrap();
        let mut info = record(8);
        f.blobs.create(&info.id).await.unwrap();
        write_and_commit(&f, &commits, &mut info, b"abcd").await;
        write_and_commit(&f, &commits, &mut info, b"efgh").await;
        let journal = f.sessions.journal().unwrap();
        assert_eq!(journal.entries().unwrap().len(), 2);
        assert_eq!(f.sessions.get(&info.id).await.unwrap().unwrap().offset, 8);

        commits.drain().await.unwrap();
        assert!(journal.entries().unwrap().is_empty());
        assert_eq!(f.blobs.len(&info.id).await.unwrap(), 8);
    }

    #[tokio::test]
    async fn replay_restores_lost_bytes_and_skips_uploads_since_deleted() {
        let f = fixture();
        let commits = SmallCommits::new(&Settings::default(), &f.sessions, &f.blobs).unwrap();
        let mut lost = record(6);
        let mut deleted = record(3);
        for info in [&mut lost, &mut deleted] {
            f.blobs.create(&info.id).await.unwrap();
        }
        write_and_commit(&f, &commits, &mut lost, b"abc").await;
        write_and_commit(&f, &commits, &mut lost, b"def").await;
        write_and_commit(&f, &commits, &mut deleted, b"xyz").await;
        // What a power cut does to unsynced files, and a DELETE before it.
        f.blobs.remove(&lost.id).await.unwrap();
        f.sessions.remove(&deleted.id).await.unwrap();
        f.blobs.remove(&deleted.id).await.unwrap();

        assert_eq!(replay(&*f.sessions, &*f.blobs).await.unwrap(), 2);
        let stored = f.blobs.read(&lost.id, 0, 6).await.unwrap();
        let chunks: Vec<_> = futures_util::StreamExt::collect(stored).await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(bytes, b"abcdef");
        assert!(matches!(
            f.blobs.len(&deleted.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(f.sessions.journal().unwrap().entries().unwrap().is_empty());
    }
}
