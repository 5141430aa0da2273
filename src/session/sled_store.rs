//! [`SessionStore`] on an embedded sled database, `data_dir/db`.
//!
//! Two rules beyond storing records:
//! - A record's new value is visible only once it is durable. With fsync durability a
//!   [`put`](SessionStore::put) inserts into sled, flushes, and only then shows the new value to
//!   readers; meanwhile, and for good if the flush fails, they see the value it replaces.
//! - A write or flush that fails leaves sled 0.34 failed for good (it keeps the first I/O error
//!   and returns it from every later call). The store then drops that database and opens it
//!   again from disk, at once and then at most once a second until it succeeds; meanwhile
//!   every call fails with [`SessionError::Full`] (the disk is full: 507) or
//!   [`SessionError::Unavailable`] (503), so freeing space is enough to recover, no restart.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{SessionError, SessionStore};
use crate::config::Durability;
use crate::upload::{UploadId, UploadInfo};

/// Format version of stored records: first byte of every value.
const RECORD_VERSION: u8 = 1;

/// How many decoded records [`SledSessionStore`] keeps (a few MiB at most).
const RECENT_RECORDS: usize = 4096;

/// The least time between two attempts to reopen a failed database.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// [`SessionStore`] on an embedded sled database.
pub struct SledSessionStore {
    dir: PathBuf,
    durability: Durability,
    /// The open database; `None` after a failure until it is reopened.
    opened: RwLock<Option<Arc<Opened>>>,
    /// Why the database is closed, and when it was last tried.
    failure: Mutex<Option<Failure>>,
    /// One reopening at a time.
    reopening: tokio::sync::Mutex<()>,
    /// Decoded records, and the durable values of records being flushed. Every change of the
    /// tree happens under this mutex, and so does filling it after a miss, so it can never
    /// hold a record older than the tree's durable one.
    cache: Mutex<Cache>,
    /// Tests: the next put's flush waits for this, then fails if it carries an error.
    #[cfg(test)]
    flush_gate: Mutex<Option<tokio::sync::oneshot::Receiver<Option<SessionError>>>>,
}

/// One open sled database and what belongs to it alone.
struct Opened {
    db: sled::Db,
    uploads: sled::Tree,
    /// sled's log file (`{dir}/db`), opened again only to fdatasync it after each flush.
    log: File,
    /// sled's directory, fsynced after each flush: sled creates, renames and removes its
    /// files there (`conf`, `db`, `snap.*`) without ever syncing it, and a power cut can
    /// otherwise drop a snapshot's name while the log it covered moves on.
    dir: File,
    /// The directory's modification time when it was last fsynced: it changes only when sled
    /// creates, renames or removes a file (a snapshot), so most flushes need no directory fsync.
    dir_synced_at: Mutex<Option<std::time::SystemTime>>,
    /// Flushes of this database; a reopened one starts its own, so that no flush of the new
    /// database is taken to cover a write into the failed one.
    flusher: GroupCommit,
}

#[derive(Debug, Clone)]
struct Failure {
    error: SessionError,
    tried_at: Instant,
}

struct Cache {
    /// Records of recently used uploads: a HEAD (the call every resuming client makes, often
    /// many times) then costs a clone instead of a sled lookup and a JSON decode.
    recent: lru::LruCache<UploadId, UploadInfo>,
    /// Uploads whose new record is in the tree but not yet durable: what readers see meanwhile.
    pending: HashMap<UploadId, Pending>,
}

struct Pending {
    /// The last durable record (`None`: the upload had none).
    durable: Option<UploadInfo>,
    /// Puts of this upload still flushing.
    writers: usize,
}

impl Clone for SessionError {
    fn clone(&self) -> Self {
        match self {
            SessionError::Database(m) => SessionError::Database(m.clone()),
            SessionError::Full(m) => SessionError::Full(m.clone()),
            SessionError::Unavailable(m) => SessionError::Unavailable(m.clone()),
            SessionError::Corrupt { id, message } => SessionError::Corrupt {
                id: id.clone(),
                message: message.clone(),
            },
        }
    }
}

impl From<sled::Error> for SessionError {
    fn from(err: sled::Error) -> Self {
        match &err {
            sled::Error::Io(io) if is_disk_full(io) => SessionError::Full(err.to_string()),
            _ => SessionError::Database(err.to_string()),
        }
    }
}

/// Delete the `snap.*.generating` files in `dir`; returns how many there were.
///
/// sled 0.34 writes a snapshot to `snap.N.generating` and renames it when it is complete. When
/// the disk fills up meanwhile, an empty `.generating` file stays behind, and sled then refuses
/// to open the database ("Read corrupted data") although its log is intact: measured after
/// ENOSPC on the database's volume; without that file the same database opens with every
/// record. An unfinished snapshot is never needed (the log has everything it would hold).
fn remove_unfinished_snapshots(dir: &Path) -> Result<usize, SessionError> {
    let failed = |e: std::io::Error| SessionError::Database(format!("{}: {e}", dir.display()));
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let path = entry.map_err(failed)?.path();
        let unfinished = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"));
        if unfinished {
            std::fs::remove_file(&path).map_err(failed)?;
            tracing::warn!(file = %path.display(), "removed an unfinished sled snapshot that kept the database from opening");
            removed += 1;
        }
    }
    Ok(removed)
}

fn is_disk_full(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || err.raw_os_error() == Some(28)
}

impl fmt::Debug for SledSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledSessionStore")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .field("failed", &self.failure().is_some())
            .finish()
    }
}

impl Opened {
    fn open(dir: &Path) -> Result<Opened, SessionError> {
        let config = sled::Config::new()
            .path(dir)
            // sled's background flusher also runs (with a real fsync); our own flush plus an
            // fdatasync of its log is what makes a PATCH durable.
            .flush_every_ms(Some(500));
        let db = match config.open() {
            Err(sled::Error::Corruption { .. }) if remove_unfinished_snapshots(dir)? > 0 => {
                config.open()?
            }
            other => other?,
        };
        let uploads = db.open_tree("uploads")?;
        // sled 0.34 keeps everything in one file named `db` in its directory.
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| SessionError::Database(format!("opening {}: {e}", log_path.display())))?;
        // What sled just created (its files, and its directory in the data directory) must
        // outlive a power cut before any record is acknowledged: found by the LazyFs loop.
        // sled writes `conf` once, never synced: torn by a power cut, the database no longer
        // opens ("failed to parse persisted config line").
        let synced = |d: &Path| File::open(d).and_then(|f| f.sync_all().map(|()| f));
        let dir_file = synced(&dir.join("conf"))
            .and_then(|_| synced(&log_path))
            .and_then(|_| synced(dir))
            .and_then(|f| {
                dir.parent()
                    .map_or(Ok(()), |p| synced(p).map(drop))
                    .map(|()| f)
            })
            .map_err(|e| SessionError::Database(format!("syncing {}: {e}", dir.display())))?;
        Ok(Opened {
            db,
            uploads,
            log,
            dir: dir_file,
            dir_synced_at: Mutex::new(None),
            flusher: GroupCommit::default(),
        })
    }

    /// fsync sled's directory if its entries changed since the last time.
    fn sync_dir_if_changed(&self) -> std::io::Result<()> {
        let modified = self.dir.metadata()?.modified()?;
        let mut synced_at = self.dir_synced_at.lock().unwrap_or_else(|p| p.into_inner());
        if *synced_at != Some(modified) {
            self.dir.sync_all()?;
            *synced_at = Some(modified);
        }
        Ok(())
    }

    fn read(&self, id: &UploadId) -> Result<Option<UploadInfo>, SessionError> {
        self.uploads
            .get(id.as_str())?
            .map(|bytes| decode(id.as_str().as_bytes(), &bytes))
            .transpose()
    }
}

impl SledSessionStore {
    /// Open (or create) the database in `dir`.
    ///
    /// # Errors
    /// When sled cannot open the directory (permissions, another process holding it).
    pub fn open(dir: &Path, durability: Durability) -> Result<SledSessionStore, SessionError> {
        let opened = Opened::open(dir)?;
        Ok(SledSessionStore {
            dir: dir.to_owned(),
            durability,
            opened: RwLock::new(Some(Arc::new(opened))),
            failure: Mutex::new(None),
            reopening: tokio::sync::Mutex::new(()),
            cache: Mutex::new(Cache {
                recent: lru::LruCache::new(
                    std::num::NonZeroUsize::new(RECENT_RECORDS).expect("non-zero"),
                ),
                pending: HashMap::new(),
            }),
            #[cfg(test)]
            flush_gate: Mutex::new(None),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Poisoned only by a panic between a tree change and the cache update: clear it, so
        // the next reads go to the tree.
        self.cache.lock().unwrap_or_else(|poisoned| {
            let mut cache = poisoned.into_inner();
            cache.recent.clear();
            cache.pending.clear();
            cache
        })
    }

    fn failure(&self) -> std::sync::MutexGuard<'_, Option<Failure>> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current(&self) -> Option<Arc<Opened>> {
        self.opened
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The open database, reopening a failed one if it is time to try again.
    async fn database(&self) -> Result<Arc<Opened>, SessionError> {
        match self.current() {
            Some(opened) => Ok(opened),
            None => self.reopen().await,
        }
    }

    async fn reopen(&self) -> Result<Arc<Opened>, SessionError> {
        let _one_at_a_time = self.reopening.lock().await;
        if let Some(opened) = self.current() {
            return Ok(opened);
        }
        {
            let mut failure = self.failure();
            if let Some(failure) = failure.as_mut() {
                if failure.tried_at.elapsed() < REOPEN_EVERY {
                    return Err(closed(&failure.error));
                }
                failure.tried_at = Instant::now();
            }
        }
        let dir = self.dir.clone();
        let reopened = tokio::task::spawn_blocking(move || Opened::open(&dir))
            .await
            .map_err(|join| SessionError::Database(join.to_string()))
            .and_then(|opened| opened);
        match reopened {
            Ok(opened) => {
                let opened = Arc::new(opened);
                *self.opened.write().unwrap_or_else(|p| p.into_inner()) = Some(opened.clone());
                *self.failure() = None;
                tracing::warn!(dir = %self.dir.display(), "session database reopened after a failure");
                Ok(opened)
            }
            Err(err) => {
                tracing::error!(dir = %self.dir.display(), error = %err, "session database still cannot be opened; retrying");
                let mut failure = self.failure();
                if let Some(failure) = failure.as_mut() {
                    // Keep "full" while the disk is: the cause that matters to clients.
                    if !matches!(failure.error, SessionError::Full(_)) {
                        failure.error = err;
                    }
                }
                Err(closed(
                    &failure
                        .as_ref()
                        .map_or(SessionError::Unavailable(String::new()), |f| {
                            f.error.clone()
                        }),
                ))
            }
        }
    }

    /// A write or flush of `opened` failed with `err`: close it, forget what readers were
    /// shown, and try to open the database again at once.
    async fn fail(&self, opened: Arc<Opened>, err: SessionError) -> SessionError {
        tracing::error!(dir = %self.dir.display(), error = %err, "session database failed; reopening it");
        {
            let mut slot = self.opened.write().unwrap_or_else(|p| p.into_inner());
            if slot
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, &opened))
            {
                *slot = None;
                *self.failure() = Some(Failure {
                    error: err.clone(),
                    tried_at: Instant::now()
                        .checked_sub(REOPEN_EVERY)
                        .unwrap_or_else(Instant::now),
                });
            }
        }
        {
            let mut cache = self.cache();
            cache.recent.clear();
            cache.pending.clear();
        }
        drop(opened);
        // The failed database's last handles are going away with their requests; if one is
        // still held the reopening fails on sled's lock and the next call tries again.
        let _ = self.reopen().await;
        err
    }

    /// A flush result, or what a test's gate says in its place once the test opens it.
    async fn injected(&self, flushed: Result<(), SessionError>) -> Result<(), SessionError> {
        #[cfg(test)]
        {
            let gate = self
                .flush_gate
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(gate) = gate {
                if let Ok(Some(err)) = gate.await {
                    return Err(err);
                }
            }
        }
        flushed
    }

    /// Insert `info` into the tree, visible at once (relaxed durability, or a record the
    /// journal already made durable).
    async fn insert_visible(&self, info: &UploadInfo) -> Result<(), SessionError> {
        let opened = self.database().await?;
        let bytes = encode(info)?;
        let inserted = {
            let mut cache = self.cache();
            let inserted = opened.uploads.insert(info.id.as_str(), bytes);
            if inserted.is_ok() {
                if let Some(pending) = cache.pending.get_mut(&info.id) {
                    pending.durable = Some(info.clone());
                }
                cache.recent.put(info.id.clone(), info.clone());
            }
            inserted
        };
        match inserted {
            Ok(_) => Ok(()),
            Err(err) => Err(self.fail(opened, err.into()).await),
        }
    }

    /// Insert `info` and flush; readers see the record it replaces until the flush is done.
    async fn insert_durable(&self, info: &UploadInfo) -> Result<(), SessionError> {
        let opened = self.database().await?;
        let bytes = encode(info)?;
        let inserted = {
            let mut cache = self.cache();
            if !cache.pending.contains_key(&info.id) {
                let durable = match cache.recent.get(&info.id) {
                    Some(known) => Some(known.clone()),
                    None => opened.read(&info.id)?,
                };
                cache.pending.insert(
                    info.id.clone(),
                    Pending {
                        durable,
                        writers: 0,
                    },
                );
            }
            if let Some(pending) = cache.pending.get_mut(&info.id) {
                pending.writers += 1;
            }
            let inserted = opened.uploads.insert(info.id.as_str(), bytes);
            if inserted.is_err() {
                release(&mut cache, &info.id, None);
            }
            inserted
        };
        if let Err(err) = inserted {
            return Err(self.fail(opened, err.into()).await);
        }
        let flushed = self.injected(opened.flusher.flush(&opened).await).await;
        release(&mut self.cache(), &info.id, flushed.is_ok().then_some(info));
        match flushed {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(opened, err).await),
        }
    }
}

/// One put of `id` is over; `stored` is its record if it became durable.
fn release(cache: &mut Cache, id: &UploadId, stored: Option<&UploadInfo>) {
    let Some(pending) = cache.pending.get_mut(id) else {
        return;
    };
    pending.writers = pending.writers.saturating_sub(1);
    if let Some(stored) = stored {
        pending.durable = Some(stored.clone());
    }
    if pending.writers == 0 {
        let durable = cache.pending.remove(id).and_then(|p| p.durable);
        match durable {
            Some(info) => {
                cache.recent.put(id.clone(), info);
            }
            None => {
                cache.recent.pop(id);
            }
        }
    }
}

/// What callers hear while the database is closed.
fn closed(cause: &SessionError) -> SessionError {
    match cause {
        SessionError::Full(reason) => SessionError::Full(reason.clone()),
        other => SessionError::Unavailable(format!(
            "the session database failed and is being reopened ({other})"
        )),
    }
}

fn encode(info: &UploadInfo) -> Result<Vec<u8>, SessionError> {
    let mut bytes = vec![RECORD_VERSION];
    serde_json::to_writer(&mut bytes, info).map_err(|e| SessionError::Corrupt {
        id: info.id.to_string(),
        message: e.to_string(),
    })?;
    Ok(bytes)
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

#[async_trait]
impl SessionStore for SledSessionStore {
    async fn get(&self, id: &UploadId) -> Result<Option<UploadInfo>, SessionError> {
        let opened = self.database().await?;
        let mut cache = self.cache();
        if let Some(pending) = cache.pending.get(id) {
            return Ok(pending.durable.clone());
        }
        if let Some(info) = cache.recent.get(id) {
            return Ok(Some(info.clone()));
        }
        let found = opened.read(id)?;
        if let Some(info) = &found {
            cache.recent.put(id.clone(), info.clone());
        }
        Ok(found)
    }

    async fn put(&self, info: &UploadInfo) -> Result<(), SessionError> {
        match self.durability {
            Durability::Fsync => self.insert_durable(info).await,
            Durability::Relaxed => self.insert_visible(info).await,
        }
    }

    async fn put_lazy(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.insert_visible(info).await
    }

    async fn remove(&self, id: &UploadId) -> Result<(), SessionError> {
        let opened = self.database().await?;
        let removed = {
            let mut cache = self.cache();
            let removed = opened.uploads.remove(id.as_str());
            if removed.is_ok() {
                cache.recent.pop(id);
                if let Some(pending) = cache.pending.get_mut(id) {
                    pending.durable = None;
                }
            }
            removed
        };
        if let Err(err) = removed {
            return Err(self.fail(opened, err.into()).await);
        }
        if self.durability == Durability::Fsync {
            if let Err(err) = opened.flusher.flush(&opened).await {
                return Err(self.fail(opened, err).await);
            }
        }
        Ok(())
    }

    async fn all(&self) -> Result<Vec<UploadInfo>, SessionError> {
        let opened = self.database().await?;
        opened
            .uploads
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(&key, &value)
            })
            .collect()
    }

    async fn flush(&self) -> Result<(), SessionError> {
        let opened = self.database().await?;
        match opened.flusher.flush(&opened).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(opened, err).await),
        }
    }

    async fn size_on_disk(&self) -> Result<u64, SessionError> {
        Ok(self.database().await?.db.size_on_disk()?)
    }
}

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
    state: Mutex<FlushState>,
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
    async fn flush(&self, opened: &Arc<Opened>) -> Result<(), SessionError> {
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
            let opened = Arc::clone(opened);
            let result = tokio::task::spawn_blocking(move || {
                opened.db.flush()?;
                // sled's flush ends in sync_file_range, which neither flushes the disk's write
                // cache nor commits the file's metadata: a power cut could still lose what it
                // "flushed" (its background thread's sync_all follows within 500 ms). An
                // fdatasync of its log file makes the record as durable as the upload's bytes.
                opened
                    .log
                    .sync_data()
                    .and_then(|()| opened.sync_dir_if_changed())
                    .map_err(|e| {
                        if is_disk_full(&e) {
                            SessionError::Full(format!("syncing the database: {e}"))
                        } else {
                            SessionError::Database(format!("syncing the database: {e}"))
                        }
                    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::Concat;
    use crate::upload::UploadState;

    fn record(offset: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(10),
            offset,
            metadata: "name aGk=".to_owned(),
            created_at: 1,
            expires_at: Some(2),
            concat: Concat::None,
            state: UploadState::Initiated,
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
            .current()
            .unwrap()
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
                            store.cache().recent.pop(&id);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_is_shown_only_once_flushed_and_a_failed_flush_reopens_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(SledSessionStore::open(dir.path(), Durability::Fsync).unwrap());
        let mut info = record(4);
        store.put(&info).await.unwrap();

        // A put whose flush has not finished: readers still see the durable offset.
        let (open_gate, gate) = tokio::sync::oneshot::channel();
        *store.flush_gate.lock().unwrap() = Some(gate);
        info.offset = 9;
        let writer = {
            let (store, info) = (store.clone(), info.clone());
            tokio::spawn(async move { store.put(&info).await })
        };
        while store.cache().pending.is_empty() {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.get(&info.id).await.unwrap().unwrap().offset, 4);
        let all = store.all().await.unwrap();
        assert_eq!(all.len(), 1);

        // The flush fails: the put says so, and the store is usable again at once.
        open_gate
            .send(Some(SessionError::Full("injected ENOSPC".to_owned())))
            .unwrap();
        let err = writer.await.unwrap().unwrap_err();
        assert!(matches!(err, SessionError::Full(_)), "{err}");
        assert!(store.current().is_some(), "the database was reopened");
        assert!(store.cache().pending.is_empty());
        info.offset = 10;
        store.put(&info).await.unwrap();
        assert_eq!(store.get(&info.id).await.unwrap().unwrap().offset, 10);
        drop(store);
        let reopened = SledSessionStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(reopened.get(&info.id).await.unwrap().unwrap().offset, 10);
    }
}
