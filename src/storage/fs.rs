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
//! Creating, opening and writing happen on the request's own thread: they copy into the page
//! cache and return in microseconds, while a hop to tokio's blocking pool costs a thread
//! wake-up and two context switches each way, which on a virtual machine cost more than
//! the write itself (measured: see the commit that made them inline). Only calls that wait for
//! the disk (`fdatasync`, truncation with its sync, concatenation, listing) leave the thread.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{BackgroundSync, BlobStore, BlobWriter, ByteStream, StoreError};
use crate::upload::UploadId;

/// Read size for downloads.
const READ_CHUNK: usize = 256 * 1024;

/// Upload bytes as one file per upload.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: PathBuf,
}

impl FsBlobStore {
    /// Use (and create) `dir` for upload files.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: &Path) -> Result<FsBlobStore, StoreError> {
        std::fs::create_dir_all(dir)?;
        let store = FsBlobStore {
            dir: dir.to_owned(),
        };
        store.make_shards()?;
        store.move_flat_files()?;
        Ok(store)
    }

    /// The file of `id`. Safe because [`UploadId`] admits only hex characters.
    pub fn path(&self, id: &UploadId) -> PathBuf {
        self.dir.join(shard_of(id)).join(id.as_str())
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
        Ok(())
    }

    async fn writer(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>, StoreError> {
        // Readable too: a small commit reads its bytes back for the journal.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(id))?;
        Ok(Box::new(FsBlobWriter {
            file: Arc::new(file),
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
        match tokio::fs::remove_file(self.path(id)).await {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => Ok(other?),
        }
    }

    async fn concat(&self, target: &UploadId, parts: &[UploadId]) -> Result<u64, StoreError> {
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
            Ok(total)
        })
        .await
    }

    fn can_sync_all(&self) -> bool {
        cfg!(target_os = "linux")
    }

    async fn sync_all(&self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        blocking(move || sync_file_system(&dir)).await
    }

    async fn ids(&self) -> Result<Vec<UploadId>, StoreError> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut ids = Vec::new();
            for shard in std::fs::read_dir(dir)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
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

/// Positional writer over one upload file.
#[derive(Debug)]
struct FsBlobWriter {
    file: Arc<File>,
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
        blocking(move || file.sync_data()).await
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
        Some(Box::pin(blocking(move || file.sync_data())))
    }
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
