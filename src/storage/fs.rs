//! [`BlobStore`] on local files: `{data_dir}/uploads/{id[..2]}/{id}`.
//!
//! Files are spread over 256 subdirectories by the first two hex digits of their id: creating
//! or deleting a file takes its directory's lock, and with every upload in one directory
//! concurrent creations queued on it (a kernel profile of 5,000 small uploads from 64 clients
//! had 30% of the server's CPU spinning in `rwsem_down_write_slowpath` under `openat`).
//!
//! Writes are `pwritev` calls of whole pooled buffers (and large body frames), so each PATCH
//! makes few, large write calls; `sync` is `fdatasync`, on a blocking thread.
//!
//! Beside each upload file lies a copy of its record, `{id}.info`, written once the record
//! itself is durable and removed (durably, with its directory) before the record is. So a
//! file whose copy is there but whose record is not means the session database lost a record
//! it had stored: start-up refuses to guess and `tusk recover` rebuilds the records from the
//! copies. A file with neither was never acknowledged (a creation cut short) or was being
//! deleted; start-up moves it to `.quarantine/`, where it stays for a while instead of being
//! deleted at once.
//!
//! A new file's directory entry is not durable until its directory is fsynced (POSIX; XFS and
//! btrfs really lose it). Creating an upload does not fsync its directory: the first sync of
//! the upload's bytes does, once, so the record that a sync precedes never points at a file
//! that a power cut could take away.
//!
//! Creating, opening and writing happen on the request's own thread: they copy into the page
//! cache and return in microseconds, while a hop to tokio's blocking pool costs a thread
//! wake-up and two context switches each way, which on a virtual machine cost more than
//! the write itself (measured: see the commit that made them inline). Only calls that wait for
//! the disk (`fdatasync`, truncation with its sync, concatenation, listing) leave the thread.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BackgroundSync, BlobStore, BlobWriter, ByteStream, StoreError};
use crate::upload::{UploadId, UploadInfo, UploadState};

/// Read size for downloads.
const READ_CHUNK: usize = 256 * 1024;

/// The name of the directory (under the upload directory) that orphaned files move to.
const QUARANTINE: &str = ".quarantine";

/// The suffix of a record copy's file name.
const COPY_SUFFIX: &str = ".info";

/// Upload bytes as one file per upload.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: PathBuf,
    /// Uploads created by this process whose directory entries no fsync has covered yet.
    fresh: Arc<Mutex<HashSet<UploadId>>>,
    /// Fsync durability: removals of record copies are made durable, and new files'
    /// directories are fsynced with their first data sync.
    sync_dirs: bool,
    /// Whether syncfs(2) makes this directory's files durable (see [`syncfs_reaches`]).
    syncfs_works: bool,
}

impl FsBlobStore {
    /// Use (and create) `dir` for upload files.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: &Path) -> Result<FsBlobStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        // The directory's own name must be durable too, or a power cut soon after the first
        // start takes every upload with it (found by the LazyFs power-cut loop).
        if let Some(parent) = dir.parent() {
            File::open(parent)?.sync_all()?;
        }
        let store = FsBlobStore {
            dir: dir.to_owned(),
            fresh: Arc::default(),
            sync_dirs: false,
            syncfs_works: syncfs_reaches(dir),
        };
        store.make_shards()?;
        store.move_flat_files()?;
        Ok(store)
    }

    /// Fsync durability: make the removal of a record copy durable before returning, and a new
    /// file's directory entry durable with the first sync of its bytes.
    #[must_use]
    pub fn syncing_directories(mut self, sync: bool) -> FsBlobStore {
        self.sync_dirs = sync;
        self
    }

    /// The file of `id`. Safe because [`UploadId`] admits only hex characters.
    pub fn path(&self, id: &UploadId) -> PathBuf {
        self.dir.join(shard_of(id)).join(id.as_str())
    }

    /// The copy of `id`'s record, beside its file.
    fn copy_path(&self, id: &UploadId) -> PathBuf {
        self.dir
            .join(shard_of(id))
            .join(format!("{}{COPY_SUFFIX}", id.as_str()))
    }

    /// Where orphaned files wait before they are deleted.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.dir.join(QUARANTINE)
    }

    /// The record kept beside `id`'s bytes, if there is a readable one.
    pub fn read_copy(&self, id: &UploadId) -> io::Result<Option<UploadInfo>> {
        read_copy_at(&self.copy_path(id))
    }

    /// Move `id`'s file (and its record copy, if any) into the quarantine directory.
    ///
    /// # Errors
    /// When the quarantine directory cannot be made or a rename fails.
    pub fn move_to_quarantine(&self, id: &UploadId) -> io::Result<()> {
        let target = self.quarantine_dir();
        std::fs::create_dir_all(&target)?;
        for (from, name) in [
            (self.path(id), id.as_str().to_owned()),
            (self.copy_path(id), format!("{}{COPY_SUFFIX}", id.as_str())),
        ] {
            match std::fs::rename(&from, target.join(name)) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        File::open(&target)?.sync_all()?;
        File::open(self.dir.join(shard_of(id)))?.sync_all()
    }

    /// The ids of the files in quarantine.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn quarantined(&self) -> io::Result<Vec<UploadId>> {
        let mut ids = Vec::new();
        match std::fs::read_dir(self.quarantine_dir()) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(ids),
            Err(err) => return Err(err),
            Ok(entries) => {
                for entry in entries {
                    if let Some(id) = entry?.file_name().to_str().and_then(UploadId::parse) {
                        ids.push(id);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Move `id` back from quarantine, with its record copy.
    ///
    /// # Errors
    /// When a rename fails.
    pub fn restore_from_quarantine(&self, id: &UploadId) -> io::Result<()> {
        let from = self.quarantine_dir();
        std::fs::rename(from.join(id.as_str()), self.path(id))?;
        let copy = from.join(format!("{}{COPY_SUFFIX}", id.as_str()));
        match std::fs::rename(copy, self.copy_path(id)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
        File::open(self.dir.join(shard_of(id)))?.sync_all()
    }

    /// The record copy of a quarantined file, if any.
    pub fn quarantined_copy(&self, id: &UploadId) -> io::Result<Option<UploadInfo>> {
        read_copy_at(
            &self
                .quarantine_dir()
                .join(format!("{}{COPY_SUFFIX}", id.as_str())),
        )
    }

    /// Delete quarantined files that have waited longer than `keep`; returns how many.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn delete_quarantined_before(&self, keep: Duration) -> io::Result<usize> {
        use std::os::unix::fs::MetadataExt;
        let entries = match std::fs::read_dir(self.quarantine_dir()) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            other => other?,
        };
        let now = crate::upload::unix_now();
        let mut deleted = 0;
        for entry in entries {
            let entry = entry?;
            // A rename sets ctime: the moment the file entered quarantine.
            let since = u64::try_from(entry.metadata()?.ctime()).unwrap_or(0);
            if since + keep.as_secs() <= now {
                std::fs::remove_file(entry.path())?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// fsync the directory holding `id`'s file.
    fn sync_shard(&self, id: &UploadId) -> io::Result<()> {
        File::open(self.dir.join(shard_of(id)))?.sync_all()
    }

    /// Create the subdirectories that are missing, their names durable before any upload
    /// file in them is.
    fn make_shards(&self) -> io::Result<()> {
        let mut created = false;
        for shard in 0..=u8::MAX {
            match std::fs::create_dir(self.dir.join(format!("{shard:02x}"))) {
                Ok(()) => created = true,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        if created {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Files of a data directory from before the subdirectories (`{dir}/{id}`) move into theirs.
    fn move_flat_files(&self) -> io::Result<()> {
        let mut moved = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(UploadId::parse) else {
                continue;
            };
            if entry.file_type()?.is_file() {
                std::fs::rename(entry.path(), self.path(&id))?;
                moved.insert(shard_of(&id).to_owned());
            }
        }
        if !moved.is_empty() {
            for shard in &moved {
                File::open(self.dir.join(shard))?.sync_all()?;
            }
            File::open(&self.dir)?.sync_all()?;
            tracing::info!(shards = moved.len(), dir = %self.dir.display(), "upload files moved into subdirectories");
        }
        Ok(())
    }
}

/// The subdirectory of `id`: its first two hex digits.
fn shard_of(id: &UploadId) -> &str {
    &id.as_str()[..2]
}

/// Whether `name` is one of the 256 subdirectories.
fn is_shard(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A record copy; `None` when there is none or it cannot be decoded (a copy cut short by a
/// crash while the record itself was durable).
fn read_copy_at(path: &Path) -> io::Result<Option<UploadInfo>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(join) => Err(StoreError::Io(io::Error::other(join))),
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create(&self, id: &UploadId) -> Result<(), StoreError> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(id))?;
        if self.sync_dirs {
            // Without fsync durability nothing syncs the file; nothing needs the entry either.
            self.fresh_ids().insert(id.clone());
        }
        Ok(())
    }

    async fn writer(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>, StoreError> {
        // Readable too: a small commit reads its bytes back for the journal.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(id))?;
        let entry = self.fresh_ids().contains(id).then(|| FreshEntry {
            id: id.clone(),
            shard: self.dir.join(shard_of(id)),
            fresh: Arc::clone(&self.fresh),
        });
        Ok(Box::new(FsBlobWriter {
            file: Arc::new(file),
            entry,
        }))
    }

    async fn read(&self, id: &UploadId, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        let mut file = tokio::fs::File::open(self.path(id)).await?;
        file.seek(SeekFrom::Start(start)).await?;
        let reader = file.take(len);
        Ok(Box::pin(
            ReaderStream::with_capacity(reader, READ_CHUNK).map(|r| r),
        ))
    }

    async fn len(&self, id: &UploadId) -> Result<u64, StoreError> {
        Ok(tokio::fs::metadata(self.path(id)).await?.len())
    }

    async fn truncate(&self, id: &UploadId, len: u64) -> Result<(), StoreError> {
        let path = self.path(id);
        blocking(move || {
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(len)?;
            file.sync_data()
        })
        .await
    }

    async fn remove(&self, id: &UploadId) -> Result<(), StoreError> {
        self.fresh_ids().remove(id);
        for path in [self.path(id), self.copy_path(id)] {
            match tokio::fs::remove_file(path).await {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }

    async fn keep_record_copy(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let json = serde_json::to_vec(info).map_err(|e| StoreError::Io(io::Error::other(e)))?;
        // A torn copy is harmless: its record is durable, and start-up writes it again.
        std::fs::write(self.copy_path(&info.id), json)?;
        Ok(())
    }

    async fn drop_record_copy(&self, id: &UploadId) -> Result<(), StoreError> {
        match std::fs::remove_file(self.copy_path(id)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        }
        if self.sync_dirs {
            let store = self.clone();
            let id = id.clone();
            blocking(move || store.sync_shard(&id)).await?;
        }
        Ok(())
    }

    async fn record_copy(&self, id: &UploadId) -> Result<Option<UploadInfo>, StoreError> {
        Ok(self.read_copy(id)?)
    }

    async fn quarantine(&self, id: &UploadId) -> Result<(), StoreError> {
        let store = self.clone();
        let id = id.clone();
        blocking(move || store.move_to_quarantine(&id)).await
    }

    async fn expire_quarantine(&self, keep: Duration) -> Result<usize, StoreError> {
        let store = self.clone();
        blocking(move || store.delete_quarantined_before(keep)).await
    }

    async fn recover(&self, id: &UploadId) -> Result<Option<UploadInfo>, StoreError> {
        let Some(mut info) = self.read_copy(id)? else {
            return Ok(None);
        };
        let stored = match self.len(id).await {
            Ok(len) => len,
            Err(StoreError::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        };
        // Every byte in the file was sent by the client at its place; the bytes past a known
        // length never were.
        info.offset = info.length.map_or(stored, |length| stored.min(length));
        info.state = if info.length == Some(info.offset) {
            UploadState::Completed
        } else {
            UploadState::Interrupted
        };
        Ok(Some(info))
    }

    async fn concat(&self, target: &UploadId, parts: &[UploadId]) -> Result<u64, StoreError> {
        let entry = self.fresh_ids().contains(target).then(|| FreshEntry {
            id: target.clone(),
            shard: self.dir.join(shard_of(target)),
            fresh: Arc::clone(&self.fresh),
        });
        let target = self.path(target);
        let parts: Vec<PathBuf> = parts.iter().map(|p| self.path(p)).collect();
        blocking(move || {
            let mut out = OpenOptions::new().write(true).truncate(true).open(target)?;
            let mut total = 0;
            for part in parts {
                // io::copy uses copy_file_range on Linux: no bytes pass through user space.
                total += io::copy(&mut File::open(part)?, &mut out)?;
            }
            out.seek(SeekFrom::Start(0))?;
            out.sync_all()?;
            if let Some(entry) = entry {
                entry.make_durable()?;
            }
            Ok(total)
        })
        .await
    }

    fn can_sync_all(&self) -> bool {
        self.syncfs_works
    }

    async fn sync_all(&self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        // syncfs covers directory entries too: what was fresh before it started no longer is.
        let covered: Vec<UploadId> = self.fresh_ids().iter().cloned().collect();
        blocking(move || sync_file_system(&dir)).await?;
        let mut fresh = self.fresh_ids();
        for id in &covered {
            fresh.remove(id);
        }
        Ok(())
    }

    async fn ids(&self) -> Result<Vec<UploadId>, StoreError> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut ids = Vec::new();
            for shard in std::fs::read_dir(dir)? {
                let shard = shard?;
                let named_as_shard = shard.file_name().to_str().is_some_and(is_shard);
                if !named_as_shard || !shard.file_type()?.is_dir() {
                    continue;
                }
                for entry in std::fs::read_dir(shard.path())? {
                    if let Some(id) = entry?.file_name().to_str().and_then(UploadId::parse) {
                        ids.push(id);
                    }
                }
            }
            Ok(ids)
        })
        .await
    }
}

impl FsBlobStore {
    fn fresh_ids(&self) -> std::sync::MutexGuard<'_, HashSet<UploadId>> {
        self.fresh.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An upload whose directory entry is not known to be durable yet.
#[derive(Debug, Clone)]
struct FreshEntry {
    id: UploadId,
    shard: PathBuf,
    fresh: Arc<Mutex<HashSet<UploadId>>>,
}

impl FreshEntry {
    /// fsync the directory, unless someone already did since the file was made.
    fn make_durable(&self) -> io::Result<()> {
        let still_fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&self.id);
        if still_fresh {
            File::open(&self.shard)?.sync_all()?;
            self.fresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
        Ok(())
    }
}

/// fdatasync `file`, then make its directory entry durable if it may not be yet.
fn sync_data_and_entry(file: &File, entry: Option<&FreshEntry>) -> io::Result<()> {
    file.sync_data()?;
    match entry {
        Some(entry) => entry.make_durable(),
        None => Ok(()),
    }
}

/// Positional writer over one upload file.
#[derive(Debug)]
struct FsBlobWriter {
    file: Arc<File>,
    /// Set when the file was created by this process and its directory not synced since.
    entry: Option<FreshEntry>,
}

#[async_trait]
impl BlobWriter for FsBlobWriter {
    async fn write_at(&mut self, buf: BytesMut, offset: u64) -> (BytesMut, Result<(), StoreError>) {
        // One path for both: pwritev of a single slice is a pwrite.
        self.write_pair_at(buf, Bytes::new(), offset).await
    }

    async fn write_pair_at(
        &mut self,
        head: BytesMut,
        tail: Bytes,
        offset: u64,
    ) -> (BytesMut, Result<(), StoreError>) {
        // Into the page cache, on this thread (see the module's comment).
        let result = write_all_vectored_at(&self.file, &[&head, &tail], offset);
        (head, result.map_err(StoreError::from))
    }

    async fn sync(&mut self) -> Result<(), StoreError> {
        let file = Arc::clone(&self.file);
        let entry = self.entry.take();
        blocking(move || sync_data_and_entry(&file, entry.as_ref())).await
    }

    async fn read_back(&mut self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        // From the page cache, on this thread, like the writes.
        let mut bytes = vec![0; len];
        std::os::unix::fs::FileExt::read_exact_at(&*self.file, &mut bytes, offset)?;
        Ok(bytes)
    }

    fn background_sync(&self) -> Option<BackgroundSync> {
        // fdatasync covers every write that returned before it started, whatever is written
        // to the file meanwhile.
        let file = Arc::clone(&self.file);
        let entry = self.entry.clone();
        Some(Box::pin(blocking(move || {
            sync_data_and_entry(&file, entry.as_ref())
        })))
    }
}

/// Whether syncfs(2) on `dir`'s file system makes its files durable. Linux does not pass
/// syncfs to FUSE file systems (only virtiofs gets `FUSE_SYNCFS`): there it returns 0 and
/// syncs nothing, so the commit journal, which relies on it, would delete entries whose
/// bytes never reached the disk (found by the LazyFs power-cut loop).
#[cfg(target_os = "linux")]
fn syncfs_reaches(dir: &Path) -> bool {
    /// `FUSE_SUPER_MAGIC` from linux/magic.h.
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    match rustix::fs::statfs(dir) {
        // f_type is 32 bits wide on some architectures, 64 on others.
        #[allow(clippy::unnecessary_cast)]
        Ok(stat) => stat.f_type as i64 != FUSE_SUPER_MAGIC,
        Err(_) => false,
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs_reaches(_dir: &Path) -> bool {
    false
}

/// syncfs(2) on the file system holding `dir`: every dirty file written back, with one
/// journal commit and one cache flush for all of them, where an fdatasync per file would
/// commit once per file.
#[cfg(target_os = "linux")]
fn sync_file_system(dir: &Path) -> io::Result<()> {
    let dir = File::open(dir)?;
    Ok(rustix::fs::syncfs(&dir)?)
}

#[cfg(not(target_os = "linux"))]
fn sync_file_system(_dir: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `pwritev` until every byte of `parts` is written at `offset` (one syscall in the usual
/// case, however many parts).
fn write_all_vectored_at(file: &File, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|part| !part.is_empty())
        .map(|part| IoSlice::new(part))
        .collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        match rustix::io::pwritev(file, remaining, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                offset += written as u64;
                IoSlice::advance_slices(&mut remaining, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(stream: ByteStream) -> Vec<u8> {
        let chunks: Vec<_> = stream.collect().await;
        chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect()
    }

    /// A writer with only `write_at`, so `write_pair_at` is the trait's default.
    #[derive(Debug)]
    struct PlainWriter(Box<dyn BlobWriter>);

    #[async_trait]
    impl BlobWriter for PlainWriter {
        async fn write_at(
            &mut self,
            buf: BytesMut,
            offset: u64,
        ) -> (BytesMut, Result<(), StoreError>) {
            self.0.write_at(buf, offset).await
        }
        async fn sync(&mut self) -> Result<(), StoreError> {
            self.0.sync().await
        }
    }

    #[tokio::test]
    async fn pair_writes_put_head_then_tail_contiguously() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let id = UploadId::random();
        store.create(&id).await.unwrap();
        let mut vectored = store.writer(&id).await.unwrap();
        let tail = Bytes::from(vec![b'z'; 300_000]);
        let (head, res) = vectored
            .write_pair_at(BytesMut::from(&b"abc"[..]), tail.clone(), 2)
            .await;
        res.unwrap();
        assert_eq!(&head[..], b"abc", "the head comes back for reuse");
        let mut plain = PlainWriter(store.writer(&id).await.unwrap());
        let (_, res) = plain
            .write_pair_at(BytesMut::new(), Bytes::from_static(b"!"), 300_005)
            .await;
        res.unwrap();
        let (_, res) = plain
            .write_pair_at(BytesMut::from(&b"<>"[..]), Bytes::new(), 0)
            .await;
        res.unwrap();
        let stored = collect(store.read(&id, 0, u64::MAX).await.unwrap()).await;
        assert_eq!(stored.len(), 300_006);
        assert_eq!(&stored[..5], b"<>abc");
        assert!(stored[5..300_005].iter().all(|&b| b == b'z'));
        assert_eq!(stored[300_005], b'!');
    }

    #[tokio::test]
    async fn files_of_a_flat_data_directory_move_into_their_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        let id = UploadId::random();
        std::fs::write(dir.path().join(id.as_str()), b"kept").unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.ids().await.unwrap(), vec![id.clone()]);
        assert_eq!(store.len(&id).await.unwrap(), 4);
        assert!(store
            .path(&id)
            .starts_with(dir.path().join(&id.as_str()[..2])));
        assert!(!dir.path().join(id.as_str()).exists());
        // Opening again finds it where it now is.
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(store.ids().await.unwrap(), vec![id]);
    }

    #[tokio::test]
    async fn positional_writes_overwrite_instead_of_appending() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let id = UploadId::random();
        store.create(&id).await.unwrap();
        let mut writer = store.writer(&id).await.unwrap();
        let (buf, res) = writer.write_at(BytesMut::from(&b"hello"[..]), 0).await;
        res.unwrap();
        // A retried chunk at the same offset must not duplicate bytes.
        let (_, res) = writer.write_at(buf, 0).await;
        res.unwrap();
        let (_, res) = writer.write_at(BytesMut::from(&b" world"[..]), 5).await;
        res.unwrap();
        writer.sync().await.unwrap();
        assert_eq!(store.len(&id).await.unwrap(), 11);
        assert_eq!(writer.read_back(4, 3).await.unwrap(), b"o w");
        assert_eq!(
            collect(store.read(&id, 6, 5).await.unwrap()).await,
            b"world"
        );
        store.truncate(&id, 5).await.unwrap();
        assert_eq!(
            collect(store.read(&id, 0, 99).await.unwrap()).await,
            b"hello"
        );
    }

    #[tokio::test]
    async fn concat_joins_parts_in_order_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let (a, b, t) = (UploadId::random(), UploadId::random(), UploadId::random());
        for (id, data) in [(&a, &b"abc"[..]), (&b, &b"defg"[..])] {
            store.create(id).await.unwrap();
            let mut w = store.writer(id).await.unwrap();
            w.write_at(BytesMut::from(data), 0).await.1.unwrap();
        }
        store.create(&t).await.unwrap();
        assert_eq!(store.concat(&t, &[a.clone(), b.clone()]).await.unwrap(), 7);
        assert_eq!(
            collect(store.read(&t, 0, 7).await.unwrap()).await,
            b"abcdefg"
        );
        let mut ids = store.ids().await.unwrap();
        ids.sort();
        assert_eq!(ids.len(), 3);
        store.remove(&a).await.unwrap();
        store.remove(&a).await.unwrap();
        assert!(matches!(store.len(&a).await, Err(StoreError::NotFound)));
    }
}
