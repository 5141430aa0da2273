//! Upload records and who may write them.
//!
//! The record of an upload (its [`UploadInfo`]) lives behind the [`SessionStore`] trait; the
//! default implementation is [`SledSessionStore`]. This is the only module that imports sled.
//! The per-upload write lock lives in [`lock`], the expiry sweeper in [`expiry`].
//!
//! Invariant: a record's `offset` never exceeds the bytes durably written for that upload. The
//! PATCH path syncs bytes first and stores the offset second; [`SessionStore::put`] with
//! [`Durability::Fsync`] flushes sled before it returns.

pub mod expiry;
pub mod lock;
pub mod redis;

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Durability;
use crate::upload::{UploadId, UploadInfo};

/// Why the session store failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The database itself failed.
    #[error("database error: {0}")]
    Database(String),
    /// A shared store (Redis) could not be reached: worth a retry.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record for upload {id}: {message}")]
    Corrupt {
        /// The upload.
        id: String,
        /// What could not be decoded.
        message: String,
    },
}

/// Where upload records live. Small on purpose so a shared store (Redis) can follow.
#[async_trait]
pub trait SessionStore: Send + Sync + fmt::Debug + 'static {
    /// The record of `id`, if any.
    async fn get(&self, id: &UploadId) -> Result<Option<UploadInfo>, SessionError>;
    /// Store `info` (create or replace), durably as configured, before returning.
    async fn put(&self, info: &UploadInfo) -> Result<(), SessionError>;
    /// Store `info` without waiting for it to be durable: the next [`put`](Self::put) or
    /// [`flush`](Self::flush) makes it so. For records no client has been told about yet.
    async fn put_lazy(&self, info: &UploadInfo) -> Result<(), SessionError>;
    /// Forget `id`.
    async fn remove(&self, id: &UploadId) -> Result<(), SessionError>;
    /// Every record (start-up reconciliation, admin listings).
    async fn all(&self) -> Result<Vec<UploadInfo>, SessionError>;
    /// The records expired at `now` (the expiry sweep). Stores with an index by expiry
    /// override this scan of every record.
    async fn expired(&self, now: u64) -> Result<Vec<UploadInfo>, SessionError> {
        let mut all = self.all().await?;
        all.retain(|info| info.is_expired(now));
        Ok(all)
    }
    /// Make everything stored so far durable.
    async fn flush(&self) -> Result<(), SessionError>;
    /// Bytes the store takes on disk (for metrics).
    async fn size_on_disk(&self) -> Result<u64, SessionError>;
}

/// Format version of stored records: first byte of every value.
const RECORD_VERSION: u8 = 1;

/// [`SessionStore`] on an embedded sled database.
pub struct SledSessionStore {
    db: sled::Db,
    uploads: sled::Tree,
    durability: Durability,
    flusher: GroupCommit,
    /// sled's log file (`{dir}/db`), opened again only to fdatasync it after each flush.
    log: Arc<File>,
    /// Decoded records of recently used uploads: a HEAD (the call every resuming client makes,
    /// often many times) then costs a clone instead of a sled lookup and a JSON decode. Every
    /// change of the tree happens under this mutex, and so does filling it after a miss, so it
    /// can never hold a record older than the tree's.
    recent: std::sync::Mutex<lru::LruCache<UploadId, UploadInfo>>,
}

/// How many decoded records [`SledSessionStore`] keeps (a few MiB at most).
const RECENT_RECORDS: usize = 4096;

/// One sled flush at a time, shared by everyone who waits.
///
/// sled 0.34's `flush_async` deadlocks when many tasks call it at once (its io threads all
/// wait on a log buffer whose write is queued behind them: spacejam/sled#1308), which
/// stalled tusk under 32 concurrent fsync-mode clients. Here a caller takes a ticket after its
/// insert; if no flush is running it runs one (`flush` on a blocking thread) covering every
/// ticket handed out so far, otherwise it waits for the next one to finish. Many small uploads
/// thus share one fsync (group commit), and sled never sees two flushes of ours at once.
#[derive(Debug, Default)]
struct GroupCommit {
    state: std::sync::Mutex<FlushState>,
    done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Tickets handed out.
    issued: u64,
    /// Every ticket up to this one is covered by a finished flush.
    covered: u64,
    /// A flush is running.
    running: bool,
}

impl GroupCommit {
    async fn flush(&self, db: &sled::Db, log: &Arc<File>) -> Result<(), SessionError> {
        let ticket = {
            let mut state = self.lock();
            state.issued += 1;
            state.issued
        };
        loop {
            let finished = self.done.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let target = {
                let mut state = self.lock();
                if state.covered >= ticket {
                    return Ok(());
                }
                if state.running {
                    None
                } else {
                    state.running = true;
                    Some(state.issued)
                }
            };
            let Some(target) = target else {
                finished.await;
                continue;
            };
            let db = db.clone();
            let log = Arc::clone(log);
            let result = tokio::task::spawn_blocking(move || {
                db.flush()?;
                // sled's flush ends in sync_file_range, which neither flushes the disk's write
                // cache nor commits the file's metadata: a power cut could still lose what it
                // "flushed" (its background thread's sync_all follows within 500 ms). An
                // fdatasync of its log file makes the record as durable as the upload's bytes.
                log.sync_data()
                    .map_err(|e| SessionError::Database(format!("syncing the database: {e}")))
            })
            .await;
            {
                let mut state = self.lock();
                state.running = false;
                if matches!(result, Ok(Ok(_))) {
                    state.covered = state.covered.max(target);
                }
            }
            self.done.notify_waiters();
            match result {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(err)) => return Err(err),
                Err(join) => return Err(SessionError::Database(join.to_string())),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlushState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for SledSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledSessionStore")
            .field("records", &self.uploads.len())
            .field("durability", &self.durability)
            .finish()
    }
}

impl From<sled::Error> for SessionError {
    fn from(err: sled::Error) -> Self {
        SessionError::Database(err.to_string())
    }
}

impl SledSessionStore {
    /// Open (or create) the database in `dir`.
    ///
    /// # Errors
    /// When sled cannot open the directory (permissions, another process holding it).
    pub fn open(dir: &Path, durability: Durability) -> Result<SledSessionStore, SessionError> {
        let db = sled::Config::new()
            .path(dir)
            // sled's background flusher also runs (with a real fsync); our own flush plus an
            // fdatasync of its log is what makes a PATCH durable.
            .flush_every_ms(Some(500))
            .open()?;
        let uploads = db.open_tree("uploads")?;
        // sled 0.34 keeps everything in one file named `db` in its directory.
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| SessionError::Database(format!("opening {}: {e}", log_path.display())))?;
        Ok(SledSessionStore {
            db,
            uploads,
            durability,
            flusher: GroupCommit::default(),
            log: Arc::new(log),
            recent: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(RECENT_RECORDS).expect("non-zero"),
            )),
        })
    }

    fn encode(info: &UploadInfo) -> Result<Vec<u8>, SessionError> {
        let mut bytes = vec![RECORD_VERSION];
        serde_json::to_writer(&mut bytes, info).map_err(|e| SessionError::Corrupt {
            id: info.id.to_string(),
            message: e.to_string(),
        })?;
        Ok(bytes)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, lru::LruCache<UploadId, UploadInfo>> {
        // Poisoned only by a panic between a tree change and the cache update: clear it, so
        // the next reads go to the tree.
        self.recent.lock().unwrap_or_else(|poisoned| {
            let mut cache = poisoned.into_inner();
            cache.clear();
            cache
        })
    }

    /// Store `info` in the tree and the cache, in one step as seen by readers.
    fn insert(&self, info: &UploadInfo) -> Result<(), SessionError> {
        let bytes = Self::encode(info)?;
        let mut recent = self.recent();
        self.uploads.insert(info.id.as_str(), bytes)?;
        recent.put(info.id.clone(), info.clone());
        Ok(())
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<UploadInfo, SessionError> {
        let corrupt = |message: String| SessionError::Corrupt {
            id: String::from_utf8_lossy(key).into_owned(),
            message,
        };
        match bytes.split_first() {
            Some((&RECORD_VERSION, body)) => {
                serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
            }
            Some((version, _)) => Err(corrupt(format!("unknown record version {version}"))),
            None => Err(corrupt("empty record".to_owned())),
        }
    }
}

#[async_trait]
impl SessionStore for SledSessionStore {
    async fn get(&self, id: &UploadId) -> Result<Option<UploadInfo>, SessionError> {
        let mut recent = self.recent();
        if let Some(info) = recent.get(id) {
            return Ok(Some(info.clone()));
        }
        let found = self
            .uploads
            .get(id.as_str())?
            .map(|bytes| Self::decode(id.as_str().as_bytes(), &bytes))
            .transpose()?;
        if let Some(info) = &found {
            recent.put(id.clone(), info.clone());
        }
        Ok(found)
    }

    async fn put(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.insert(info)?;
        if self.durability == Durability::Fsync {
            self.flush().await?;
        }
        Ok(())
    }

    async fn put_lazy(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.insert(info)
    }

    async fn remove(&self, id: &UploadId) -> Result<(), SessionError> {
        {
            let mut recent = self.recent();
            self.uploads.remove(id.as_str())?;
            recent.pop(id);
        }
        if self.durability == Durability::Fsync {
            self.flush().await?;
        }
        Ok(())
    }

    async fn all(&self) -> Result<Vec<UploadInfo>, SessionError> {
        self.uploads
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Self::decode(&key, &value)
            })
            .collect()
    }

    async fn flush(&self) -> Result<(), SessionError> {
        self.flusher.flush(&self.db, &self.log).await
    }

    async fn size_on_disk(&self) -> Result<u64, SessionError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::Concat;

    fn record(offset: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(10),
            offset,
            metadata: "name aGk=".to_owned(),
            created_at: 1,
            expires_at: Some(2),
            concat: Concat::None,
            state: crate::upload::UploadState::Initiated,
            owner: None,
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let info = record(4);
        {
            let store = SledSessionStore::open(dir.path(), Durability::Fsync).unwrap();
            store.put(&info).await.unwrap();
        }
        let store = SledSessionStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(store.get(&info.id).await.unwrap(), Some(info.clone()));
        assert_eq!(store.all().await.unwrap(), vec![info.clone()]);
        store.remove(&info.id).await.unwrap();
        assert_eq!(store.get(&info.id).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_durable_puts_all_finish_and_share_flushes() {
        // 64 writers at once hung sled's flush_async; the group commit must not.
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(SledSessionStore::open(dir.path(), Durability::Fsync).unwrap());
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    for round in 0..10 {
                        store.put(&record(i * 100 + round)).await.unwrap();
                    }
                })
            })
            .collect();
        let all = async {
            for writer in writers {
                writer.await.unwrap();
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), all)
            .await
            .expect("durable puts hung");
        assert_eq!(store.all().await.unwrap().len(), 640);
    }

    #[tokio::test]
    async fn an_unknown_record_version_is_reported_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledSessionStore::open(dir.path(), Durability::Relaxed).unwrap();
        let id = UploadId::random();
        store
            .uploads
            .insert(id.as_str(), vec![9, b'{', b'}'])
            .unwrap();
        let err = store.get(&id).await.unwrap_err();
        assert!(
            err.to_string().contains("unknown record version 9"),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_never_see_an_older_record_than_the_last_write() {
        // Readers fill the cache after misses while writers move offsets forward; every read
        // must be at least the offset whose put had returned before the read began.
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(SledSessionStore::open(dir.path(), Durability::Relaxed).unwrap());
        let mut info = record(0);
        info.length = Some(1_000_000);
        store.put(&info).await.unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (store, done, id) = (store.clone(), done.clone(), info.id.clone());
                tokio::spawn(async move {
                    loop {
                        let floor = done.load(std::sync::atomic::Ordering::SeqCst);
                        let seen = store.get(&id).await.unwrap().unwrap().offset;
                        assert!(seen >= floor, "read offset {seen} after {floor} was stored");
                        if floor >= 2000 {
                            break;
                        }
                        if seen % 7 == 0 {
                            // Evict now and then, so reads also go through misses.
                            store.recent().pop(&id);
                        }
                    }
                })
            })
            .collect();
        for offset in 1..=2000 {
            info.offset = offset;
            store.put_lazy(&info).await.unwrap();
            done.store(offset, std::sync::atomic::Ordering::SeqCst);
        }
        for reader in readers {
            reader.await.unwrap();
        }
        store.remove(&info.id).await.unwrap();
        assert_eq!(
            store.get(&info.id).await.unwrap(),
            None,
            "removed means gone"
        );
    }
}
