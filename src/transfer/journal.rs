//! The commit journal: small fsync commits made durable in shared, append-only segment files.
//!
//! With fsync durability a PATCH normally ends in two syncs: its file's fdatasync, then the
//! record's group flush in the session store. For a small body (a creation-with-upload of a
//! few KiB, the last chunk of a file) both cost about as much as the body itself takes to
//! arrive, and the file's sync is paid once per upload. [`CommitJournal::commit`] replaces
//! both with one entry, the body's bytes and the record after them, appended to the current
//! segment under `{data_dir}/journal`; one `fdatasync` of the segment covers every entry that
//! queued meanwhile (group commit). The record then goes into the session store without a
//! flush, and the bytes stay in the upload's file without an fdatasync.
//!
//! [`CommitJournal::drain`] later closes the segment, syncs every upload file at once
//! (`syncfs`) and flushes the session store, and only then deletes the closed segments.
//! [`replay`] runs at start-up, before reconciling: whatever segments a crash left are read in
//! order (up to a torn tail, which was never acknowledged), their bytes are written back into
//! the files and their records restored where the store holds an older one.
//!
//! A deletion must not be undone by a replay: [`JournaledSessions`] wraps the session store
//! so that removing an upload with entries in a live segment first appends a removal entry.
//!
//! Unlike the earlier journal in sled (whose space sled 0.34 never reclaimed, growing the
//! database by about 6 KiB per upload), segments are plain files that a drain deletes: the
//! journal's disk use is bounded by what one drain interval writes.
//!
//! Entry layout: `len: u32 LE | crc32(payload): u32 LE | payload`, where payload is
//! `kind: u8 | id_len: u16 LE | id | at: u64 LE | record_len: u32 LE | record (JSON) | bytes`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, Notify, RwLock};
use tokio_util::sync::CancellationToken;

use crate::config::{Durability, Settings};
use crate::session::{SessionError, SessionStore};
use crate::storage::{BlobStore, BlobWriter, StoreError};
use crate::upload::{UploadId, UploadInfo};

/// Bytes in segments not yet drained past which commits take the ordinary path (their file's
/// fdatasync) until a drain catches up: bounds the journal's disk use and replay time.
const MAX_PENDING: u64 = 256 << 20;

/// Bytes in the live segment that start a drain before the interval is up.
const DRAIN_AT: u64 = 64 << 20;

/// One write (and one fdatasync) holds at most about this much of the queue.
const MAX_BATCH: usize = 4 << 20;

/// An entry with bytes and the record after them.
const KIND_COMMIT: u8 = 1;
/// An entry saying the upload is gone: a replay must not bring it back.
const KIND_REMOVED: u8 = 2;

/// Length and checksum in front of every payload.
const HEADER: usize = 8;

/// What one segment holds about one upload, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `bytes` were written at `at`; `record` is the upload's record after them.
    Commit {
        at: u64,
        record: UploadInfo,
        bytes: Vec<u8>,
    },
    /// The upload was deleted.
    Removed(UploadId),
}

impl Entry {
    fn encode(&self) -> io::Result<Vec<u8>> {
        let (kind, id, at, record, bytes): (_, _, _, Vec<u8>, &[u8]) = match self {
            Entry::Commit { at, record, bytes } => (
                KIND_COMMIT,
                &record.id,
                *at,
                serde_json::to_vec(record).map_err(io::Error::other)?,
                bytes,
            ),
            Entry::Removed(id) => (KIND_REMOVED, id, 0, Vec::new(), &[]),
        };
        let id = id.as_str().as_bytes();
        let payload_len = 1 + 2 + id.len() + 8 + 4 + record.len() + bytes.len();
        let mut out = Vec::with_capacity(HEADER + payload_len);
        out.extend_from_slice(
            &u32::try_from(payload_len)
                .map_err(io::Error::other)?
                .to_le_bytes(),
        );
        out.extend_from_slice(&[0; 4]);
        out.push(kind);
        out.extend_from_slice(
            &u16::try_from(id.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        );
        out.extend_from_slice(id);
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(
            &u32::try_from(record.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        );
        out.extend_from_slice(&record);
        out.extend_from_slice(bytes);
        let crc = crc32fast::hash(&out[HEADER..]);
        out[4..HEADER].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// The entries of one segment, in order, up to the first one that is torn or corrupt (a
    /// write a crash cut short, never acknowledged).
    fn decode_all(mut segment: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        while let Some(entry) = Self::decode_one(&mut segment) {
            entries.push(entry);
        }
        entries
    }

    fn decode_one(segment: &mut &[u8]) -> Option<Entry> {
        let header = segment.get(..HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
        let payload = segment.get(HEADER..HEADER.checked_add(len)?)?;
        if len == 0 || crc32fast::hash(payload) != crc {
            return None;
        }
        *segment = &segment[HEADER + len..];
        let mut rest = payload;
        let kind = take(&mut rest, 1)?[0];
        let id_len = u16::from_le_bytes(take(&mut rest, 2)?.try_into().ok()?) as usize;
        let id = UploadId::parse(std::str::from_utf8(take(&mut rest, id_len)?).ok()?)?;
        let at = u64::from_le_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let record_len = u32::from_le_bytes(take(&mut rest, 4)?.try_into().ok()?) as usize;
        let record = take(&mut rest, record_len)?;
        match kind {
            KIND_COMMIT => {
                let record: UploadInfo = serde_json::from_slice(record).ok()?;
                (record.id == id).then(|| Entry::Commit {
                    at,
                    record,
                    bytes: rest.to_vec(),
                })
            }
            KIND_REMOVED => Some(Entry::Removed(id)),
            _ => None,
        }
    }
}

/// The first `n` bytes of `rest`, which moves past them.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
    *rest = tail;
    Some(head)
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.log"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".log"))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(seq) = seq {
            found.push((seq, path));
        }
    }
    found.sort();
    Ok(found)
}

/// fsync a directory, so that files created or deleted in it stay so after a power cut.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create segment `seq`, its name durable before any entry in it is acknowledged.
fn create_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, seq))?;
    sync_dir(dir)?;
    Ok(file)
}

/// What the writer thread is asked to do, in order.
enum Request {
    /// Append an encoded entry; answered with the segment's number once it is durable.
    Append {
        entry: Vec<u8>,
        done: oneshot::Sender<io::Result<u64>>,
    },
    /// Close the current segment and start the next; answered with the closed one's number.
    Rotate {
        done: oneshot::Sender<io::Result<u64>>,
    },
}

/// The thread that owns the current segment: it writes whatever queued as one batch, then
/// fdatasyncs once for all of it.
fn write_segments(dir: PathBuf, mut seq: u64, mut file: File, requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::new();
    let mut waiting: Vec<oneshot::Sender<io::Result<u64>>> = Vec::new();
    // After a failed write the segment may hold a torn entry, past which a replay reads
    // nothing: every later append fails too (callers take the ordinary path).
    let mut failed: Option<io::ErrorKind> = None;
    while let Ok(first) = requests.recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append { entry, done } => {
                    batch.extend_from_slice(&entry);
                    waiting.push(done);
                }
                Request::Rotate { done } => {
                    write_batch(&mut file, &mut batch, &mut waiting, seq, &mut failed);
                    let rotated = create_segment(&dir, seq + 1).map(|new| {
                        file = new;
                        failed = None;
                        seq += 1;
                        seq - 1
                    });
                    let _ = done.send(rotated);
                }
            }
            if batch.len() < MAX_BATCH {
                next = requests.try_recv().ok();
            }
        }
        write_batch(&mut file, &mut batch, &mut waiting, seq, &mut failed);
    }
}

fn write_batch(
    file: &mut File,
    batch: &mut Vec<u8>,
    waiting: &mut Vec<oneshot::Sender<io::Result<u64>>>,
    seq: u64,
    failed: &mut Option<io::ErrorKind>,
) {
    if waiting.is_empty() {
        return;
    }
    let result = match *failed {
        Some(kind) => Err(kind),
        None => file
            .write_all(batch)
            .and_then(|()| file.sync_data())
            .map_err(|err| err.kind()),
    };
    if let Err(kind) = result {
        *failed = Some(kind);
    }
    for done in waiting.drain(..) {
        let _ = done.send(result.map(|()| seq).map_err(io::Error::from));
    }
    batch.clear();
}

/// Whether [`CommitJournal::commit`] made the commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journaled {
    /// Bytes and record are durable in the journal.
    Yes,
    /// The journal could not take them; nothing was stored.
    No,
}

/// The journal's side of the PATCH path. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommitJournal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    requests: mpsc::Sender<Request>,
    /// The session store under the journal (not the [`JournaledSessions`] wrapper).
    sessions: Arc<dyn SessionStore>,
    blobs: Arc<dyn BlobStore>,
    max_write: u64,
    interval: Duration,
    /// Body bytes journaled since the last drain began.
    pending: AtomicU64,
    /// Woken when `pending` passes [`DRAIN_AT`].
    wake: Notify,
    /// Set once an append failed: commits take the ordinary path until the next drain.
    unhealthy: AtomicBool,
    /// Commits hold this shared from their append until their record is in the store; a
    /// drain holds it exclusively while it closes the segment, so that every entry in a
    /// closed segment has its record in the store before the drain flushes the store.
    gate: RwLock<()>,
    /// Uploads with an entry in a segment not yet deleted, and the newest such segment.
    live: Mutex<HashMap<UploadId, u64>>,
}

impl CommitJournal {
    /// The journal, when it applies: fsync durability, `storage.journal_max_write` above 0, a
    /// blob store that can sync all its files at once. Call after [`replay`].
    ///
    /// # Errors
    /// When the journal directory or its first segment cannot be created.
    pub fn open(
        settings: &Settings,
        sessions: &Arc<dyn SessionStore>,
        blobs: &Arc<dyn BlobStore>,
    ) -> io::Result<Option<CommitJournal>> {
        let storage = &settings.storage;
        if storage.durability != Durability::Fsync
            || storage.journal_max_write.0 == 0
            || !blobs.can_sync_all()
        {
            return Ok(None);
        }
        let dir = journal_dir(settings);
        fs::create_dir_all(&dir)?;
        // Its name in the data directory durable before any segment in it counts (found by
        // the LazyFs power-cut loop: unsynced, a power cut dropped the whole journal).
        sync_dir(&settings.storage.data_dir)?;
        let next = segments(&dir)?.last().map_or(1, |(seq, _)| seq + 1);
        let file = create_segment(&dir, next)?;
        let (requests, received) = mpsc::channel();
        let writer_dir = dir.clone();
        std::thread::Builder::new()
            .name("tusk-journal".to_owned())
            .spawn(move || write_segments(writer_dir, next, file, received))?;
        Ok(Some(CommitJournal {
            inner: Arc::new(Inner {
                dir,
                requests,
                sessions: Arc::clone(sessions),
                blobs: Arc::clone(blobs),
                max_write: storage.journal_max_write.0,
                interval: storage.journal_sync_interval.0,
                pending: AtomicU64::new(0),
                wake: Notify::new(),
                unhealthy: AtomicBool::new(false),
                gate: RwLock::new(()),
                live: Mutex::new(HashMap::new()),
            }),
        }))
    }

    /// Whether a commit of `len` new bytes goes through the journal.
    pub fn admits(&self, len: u64) -> bool {
        len > 0
            && len <= self.inner.max_write
            && !self.inner.unhealthy.load(Ordering::Relaxed)
            && self.inner.pending.load(Ordering::Relaxed) + len <= MAX_PENDING
    }

    /// Make `info` (already moved to its new offset) durable together with its blob's bytes
    /// `from..info.offset`, written through `writer` and not synced: one entry, one shared
    /// fdatasync; then the record goes into the session store without a flush.
    ///
    /// Returns [`Journaled::No`] when the journal could not take the entry (its segment cannot
    /// be written, e.g. a full disk): nothing is stored then, and the caller commits the
    /// ordinary way, so a failing journal costs speed, not uploads.
    ///
    /// # Errors
    /// When the bytes cannot be read back or the store refuses the record. Nothing was
    /// acknowledged then.
    pub async fn commit(
        &self,
        info: &UploadInfo,
        writer: &mut dyn BlobWriter,
        from: u64,
    ) -> Result<Journaled, StoreError> {
        let len = info.offset - from;
        let bytes = writer
            .read_back(from, usize::try_from(len).map_err(io::Error::other)?)
            .await?;
        let entry = Entry::Commit {
            at: from,
            record: info.clone(),
            bytes,
        }
        .encode()?;
        let _gate = self.inner.gate.read().await;
        let seq = match self.append(entry).await {
            Ok(seq) => seq,
            Err(err) => {
                self.inner.unhealthy.store(true, Ordering::Relaxed);
                tracing::error!(error = %err, "journal append failed; small commits fsync their files until the next drain");
                return Ok(Journaled::No);
            }
        };
        self.live().insert(info.id.clone(), seq);
        self.inner
            .sessions
            .put_lazy(info)
            .await
            .map_err(|err| StoreError::Io(io::Error::other(err.to_string())))?;
        let pending = self.inner.pending.fetch_add(len, Ordering::Relaxed) + len;
        if pending >= DRAIN_AT {
            self.inner.wake.notify_one();
        }
        Ok(Journaled::Yes)
    }

    /// Before `id` is deleted: if a live segment has entries of it, append (durably) that it
    /// is gone, so that a replay does not bring it back.
    async fn forget(&self, id: &UploadId) -> io::Result<()> {
        if !self.live().contains_key(id) {
            return Ok(());
        }
        self.append(Entry::Removed(id.clone()).encode()?).await?;
        Ok(())
    }

    async fn append(&self, entry: Vec<u8>) -> io::Result<u64> {
        let (done, answer) = oneshot::channel();
        self.send(Request::Append { entry, done })?;
        answer.await.map_err(|_| writer_gone())?
    }

    fn send(&self, request: Request) -> io::Result<()> {
        self.inner.requests.send(request).map_err(|_| writer_gone())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, u64>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Close the current segment, sync every upload file and flush the session store, then
    /// delete the closed segments: what they held is durable where it belongs.
    ///
    /// # Errors
    /// When a sync fails; the segments stay for the next drain (or a replay).
    pub async fn drain(&self) -> Result<(), StoreError> {
        let was_pending = self.inner.pending.load(Ordering::Relaxed);
        if was_pending == 0 {
            return Ok(());
        }
        let closed = {
            let _gate = self.inner.gate.write().await;
            let (done, answer) = oneshot::channel();
            self.send(Request::Rotate { done })?;
            answer.await.map_err(|_| writer_gone())??
        };
        // Every entry in a closed segment had its bytes written to its file before it was
        // appended, and its record put before the gate let the rotation through.
        self.inner.blobs.sync_all().await?;
        self.inner
            .sessions
            .flush()
            .await
            .map_err(|err| StoreError::Io(io::Error::other(err.to_string())))?;
        let dir = self.inner.dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            for (seq, path) in segments(&dir)? {
                if seq <= closed {
                    fs::remove_file(path)?;
                }
            }
            // Deleted for good before `live` forgets: a removal entry may be skipped only
            // when no segment that could bring the upload back remains.
            sync_dir(&dir)
        })
        .await
        .map_err(io::Error::other)??;
        self.live().retain(|_, seq| *seq > closed);
        let _ = self
            .inner
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(was_pending))
            });
        self.inner.unhealthy.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Drain every `storage.journal_sync_interval` (sooner when [`DRAIN_AT`] bytes wait)
    /// until `stop`, then once more.
    pub fn spawn_drainer(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let journal = self.clone();
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    () = stop.cancelled() => true,
                    () = journal.inner.wake.notified() => false,
                    () = tokio::time::sleep(journal.inner.interval) => false,
                };
                if let Err(err) = journal.drain().await {
                    tracing::error!(error = %err, "syncing journaled uploads failed; the journal keeps them");
                }
                if stopping {
                    break;
                }
            }
        })
    }
}

fn writer_gone() -> io::Error {
    io::Error::other("the journal's writer thread is gone")
}

/// Where the segments live.
pub fn journal_dir(settings: &Settings) -> PathBuf {
    settings.storage.data_dir.join("journal")
}

/// Apply whatever segments a crash left in `dir`: bytes back into their files, records back
/// into the store where it holds an older offset (or none), deleted uploads deleted; then
/// sync it all and delete the segments. Returns how many entries were applied.
///
/// # Errors
/// When a segment cannot be read, a file cannot be written or a store fails.
pub async fn replay(
    dir: &Path,
    sessions: &dyn SessionStore,
    blobs: &dyn BlobStore,
) -> Result<usize, StoreError> {
    let found = match segments(dir) {
        Ok(found) => found,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err.into()),
    };
    let mut entries = Vec::new();
    for (_, path) in &found {
        entries.extend(Entry::decode_all(&fs::read(path)?));
    }
    let session_err = |err: SessionError| StoreError::Io(io::Error::other(err.to_string()));
    let removed: std::collections::HashSet<UploadId> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Removed(id) => Some(id.clone()),
            Entry::Commit { .. } => None,
        })
        .collect();
    let mut writers: HashMap<UploadId, Box<dyn BlobWriter>> = HashMap::new();
    // How far each upload's file reaches: an entry may only continue what is there.
    let mut ends: HashMap<UploadId, u64> = HashMap::new();
    let mut lost: std::collections::HashSet<UploadId> = std::collections::HashSet::new();
    let applied = entries.len();
    for entry in entries {
        let Entry::Commit { at, record, bytes } = entry else {
            continue;
        };
        if removed.contains(&record.id) || lost.contains(&record.id) {
            continue;
        }
        if !writers.contains_key(&record.id) {
            let writer = match blobs.writer(&record.id).await {
                // Every byte of an upload whose first entry starts at 0 is in the journal.
                Err(StoreError::NotFound) if at == 0 => {
                    blobs.create(&record.id).await?;
                    blobs.writer(&record.id).await?
                }
                Err(StoreError::NotFound) => {
                    lost.insert(record.id.clone());
                    mark_lost(sessions, record, "its data file is gone").await?;
                    continue;
                }
                other => other?,
            };
            ends.insert(record.id.clone(), blobs.len(&record.id).await?);
            writers.insert(record.id.clone(), writer);
        }
        let end = ends.get_mut(&record.id).expect("inserted with the writer");
        if at > *end {
            // The bytes before this entry, synced before it was written, are not there:
            // writing it would leave a hole of zeros that HEAD would vouch for.
            writers.remove(&record.id);
            lost.insert(record.id.clone());
            mark_lost(sessions, record, "bytes before its last commit are gone").await?;
            continue;
        }
        *end = (*end).max(at + bytes.len() as u64);
        let writer = writers.get_mut(&record.id).expect("inserted above");
        writer
            .write_at(bytes::BytesMut::from(&bytes[..]), at)
            .await
            .1?;
        let stored = sessions.get(&record.id).await.map_err(session_err)?;
        if stored.is_none_or(|stored| stored.offset < record.offset) {
            sessions.put_lazy(&record).await.map_err(session_err)?;
        }
    }
    for id in &removed {
        sessions.remove(id).await.map_err(session_err)?;
        match blobs.remove(id).await {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(err) => return Err(err),
        }
    }
    for writer in writers.values_mut() {
        writer.sync().await?;
    }
    sessions.flush().await.map_err(session_err)?;
    for (_, path) in &found {
        fs::remove_file(path)?;
    }
    if !found.is_empty() {
        sync_dir(dir)?;
    }
    Ok(applied)
}

/// Record that a replay found `record`'s upload missing acknowledged bytes: it answers 410
/// from now on instead of serving what is left.
async fn mark_lost(
    sessions: &dyn SessionStore,
    mut record: UploadInfo,
    why: &str,
) -> Result<(), StoreError> {
    tracing::error!(upload = %record.id, offset = record.offset, "journal replay: {why}; the upload is marked lost");
    record.state = crate::upload::UploadState::Lost;
    sessions
        .put_lazy(&record)
        .await
        .map_err(|err| StoreError::Io(io::Error::other(err.to_string())))
}

/// The session store as the handlers see it while a journal runs: deleting an upload first
/// tells the journal, so that a replay cannot bring the upload back.
#[derive(Debug)]
pub struct JournaledSessions {
    store: Arc<dyn SessionStore>,
    journal: CommitJournal,
}

impl JournaledSessions {
    /// `store` with removals recorded in `journal`.
    pub fn new(store: Arc<dyn SessionStore>, journal: CommitJournal) -> JournaledSessions {
        JournaledSessions { store, journal }
    }
}

#[async_trait]
impl SessionStore for JournaledSessions {
    async fn get(&self, id: &UploadId) -> Result<Option<UploadInfo>, SessionError> {
        self.store.get(id).await
    }
    async fn put(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.store.put(info).await
    }
    async fn put_lazy(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.store.put_lazy(info).await
    }
    async fn remove(&self, id: &UploadId) -> Result<(), SessionError> {
        self.journal
            .forget(id)
            .await
            .map_err(|err| SessionError::Database(format!("journal: {err}")))?;
        self.store.remove(id).await
    }
    async fn all(&self) -> Result<Vec<UploadInfo>, SessionError> {
        self.store.all().await
    }
    async fn expired(&self, now: u64) -> Result<Vec<UploadInfo>, SessionError> {
        self.store.expired(now).await
    }
    async fn flush(&self) -> Result<(), SessionError> {
        self.store.flush().await
    }
    async fn size_on_disk(&self) -> Result<u64, SessionError> {
        self.store.size_on_disk().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SledSessionStore;
    use crate::storage::fs::FsBlobStore;
    use crate::upload::{Concat, UploadState};

    struct Fixture {
        dir: tempfile::TempDir,
        settings: Settings,
        sessions: Arc<dyn SessionStore>,
        blobs: Arc<dyn BlobStore>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.storage.data_dir = dir.path().to_path_buf();
        let sessions: Arc<dyn SessionStore> =
            Arc::new(SledSessionStore::open(&dir.path().join("db"), Durability::Fsync).unwrap());
        let blobs: Arc<dyn BlobStore> =
            Arc::new(FsBlobStore::open(&dir.path().join("uploads")).unwrap());
        Fixture {
            dir,
            settings,
            sessions,
            blobs,
        }
    }

    impl Fixture {
        fn journal(&self) -> CommitJournal {
            CommitJournal::open(&self.settings, &self.sessions, &self.blobs)
                .unwrap()
                .expect("fsync durability and a file store: the journal applies")
        }

        fn segment_count(&self) -> usize {
            segments(&journal_dir(&self.settings)).unwrap().len()
        }

        async fn bytes_of(&self, id: &UploadId, len: u64) -> Vec<u8> {
            let stored = self.blobs.read(id, 0, len).await.unwrap();
            let chunks: Vec<_> = futures_util::StreamExt::collect(stored).await;
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap().to_vec())
                .collect()
        }
    }

    fn record(length: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(length),
            offset: 0,
            metadata: "filename ZmlsZQ==".to_owned(),
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
        journal: &CommitJournal,
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
        assert_eq!(
            journal.commit(info, &mut *writer, from).await.unwrap(),
            Journaled::Yes
        );
    }

    #[test]
    fn entries_read_back_as_written_and_a_torn_tail_ends_the_segment() {
        let info = record(3);
        let commit = Entry::Commit {
            at: 7,
            record: info.clone(),
            bytes: b"abc".to_vec(),
        };
        let removed = Entry::Removed(info.id.clone());
        let mut segment = commit.encode().unwrap();
        segment.extend(removed.encode().unwrap());
        assert_eq!(
            Entry::decode_all(&segment),
            vec![commit.clone(), removed.clone()]
        );
        // A crash in the middle of the second entry's write.
        let whole = segment.len();
        segment.truncate(whole - 3);
        assert_eq!(Entry::decode_all(&segment), vec![commit.clone()]);
        // A flipped bit in the first entry: nothing after it is trusted either.
        let mut flipped = commit.encode().unwrap();
        flipped[HEADER + 5] ^= 1;
        flipped.extend(removed.encode().unwrap());
        assert!(Entry::decode_all(&flipped).is_empty());
    }

    #[tokio::test]
    async fn a_failed_segment_write_refuses_appends_until_the_next_segment() {
        let dir = tempfile::tempdir().unwrap();
        let segment = create_segment(dir.path(), 1).unwrap();
        drop(segment);
        // A segment that cannot be written, as on a full disk.
        let unwritable = File::open(segment_path(dir.path(), 1)).unwrap();
        let (requests, received) = mpsc::channel();
        let writer_dir = dir.path().to_path_buf();
        let writer =
            std::thread::spawn(move || write_segments(writer_dir, 1, unwritable, received));
        let append = |entry: Vec<u8>| {
            let (done, answer) = oneshot::channel();
            requests.send(Request::Append { entry, done }).unwrap();
            answer
        };
        let id = UploadId::random();
        let entry = Entry::Removed(id.clone()).encode().unwrap();
        assert!(append(entry.clone()).await.unwrap().is_err());
        assert!(
            append(entry.clone()).await.unwrap().is_err(),
            "nothing may follow a possibly torn entry in the same segment"
        );
        let (done, rotated) = oneshot::channel();
        requests.send(Request::Rotate { done }).unwrap();
        assert_eq!(rotated.await.unwrap().unwrap(), 1);
        assert_eq!(append(entry.clone()).await.unwrap().unwrap(), 2);
        drop(requests);
        writer.join().unwrap();
        assert_eq!(
            Entry::decode_all(&fs::read(segment_path(dir.path(), 2)).unwrap()),
            vec![Entry::Removed(id)]
        );
    }

    #[tokio::test]
    async fn only_fsync_durability_and_small_bodies_take_the_journal() {
        let mut f = fixture();
        let journal = f.journal();
        assert!(journal.admits(4096));
        assert!(journal.admits(64 << 10));
        assert!(!journal.admits((64 << 10) + 1));
        assert!(!journal.admits(0));
        f.settings.storage.durability = Durability::Relaxed;
        assert!(CommitJournal::open(&f.settings, &f.sessions, &f.blobs)
            .unwrap()
            .is_none());
        f.settings.storage.durability = Durability::Fsync;
        f.settings.storage.journal_max_write = crate::config::ByteSize(0);
        assert!(CommitJournal::open(&f.settings, &f.sessions, &f.blobs)
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_drain_leaves_bytes_and_records_in_place_and_deletes_the_segment() {
        let f = fixture();
        let journal = f.journal();
        let mut info = record(8);
        f.blobs.create(&info.id).await.unwrap();
        write_and_commit(&f, &journal, &mut info, b"abcd").await;
        write_and_commit(&f, &journal, &mut info, b"efgh").await;
        assert_eq!(f.sessions.get(&info.id).await.unwrap().unwrap().offset, 8);
        assert_eq!(f.segment_count(), 1);

        journal.drain().await.unwrap();
        // The closed segment is gone; the next one is open for commits.
        let left = segments(&journal_dir(&f.settings)).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(fs::metadata(&left[0].1).unwrap().len(), 0);
        assert_eq!(f.bytes_of(&info.id, 8).await, b"abcdefgh");
        assert_eq!(f.sessions.get(&info.id).await.unwrap().unwrap().offset, 8);
    }

    #[tokio::test]
    async fn replay_restores_lost_bytes_and_records_and_keeps_deleted_uploads_deleted() {
        let f = fixture();
        let journal = f.journal();
        let wrapped = JournaledSessions::new(Arc::clone(&f.sessions), journal.clone());
        let mut lost = record(6);
        let mut deleted = record(3);
        let mut older = record(4);
        for info in [&mut lost, &mut deleted, &mut older] {
            f.blobs.create(&info.id).await.unwrap();
        }
        write_and_commit(&f, &journal, &mut lost, b"abc").await;
        write_and_commit(&f, &journal, &mut lost, b"def").await;
        write_and_commit(&f, &journal, &mut deleted, b"xyz").await;
        write_and_commit(&f, &journal, &mut older, b"12").await;
        // What a power cut does: unsynced files lose their bytes, lazily put records vanish
        // (one here; another keeps an older offset). And a DELETE before it.
        f.blobs.remove(&lost.id).await.unwrap();
        f.sessions.remove(&lost.id).await.unwrap();
        let mut stale = older.clone();
        stale.offset = 0;
        f.sessions.put(&stale).await.unwrap();
        wrapped.remove(&deleted.id).await.unwrap();
        f.blobs.remove(&deleted.id).await.unwrap();
        drop((wrapped, journal));

        let dir = journal_dir(&f.settings);
        assert_eq!(replay(&dir, &*f.sessions, &*f.blobs).await.unwrap(), 5);
        assert_eq!(f.bytes_of(&lost.id, 6).await, b"abcdef");
        assert_eq!(f.sessions.get(&lost.id).await.unwrap(), Some(lost));
        assert_eq!(f.sessions.get(&older.id).await.unwrap().unwrap().offset, 2);
        assert!(f.sessions.get(&deleted.id).await.unwrap().is_none());
        assert!(matches!(
            f.blobs.len(&deleted.id).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(f.segment_count(), 0, "replayed segments are deleted");
        // A second replay has nothing to do.
        assert_eq!(replay(&dir, &*f.sessions, &*f.blobs).await.unwrap(), 0);
        drop(f.dir);
    }
}
