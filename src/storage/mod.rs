//! Upload bytes.
//!
//! [`BlobStore`] is what the protocol layer needs from a place to keep bytes; [`fs::FsBlobStore`]
//! keeps each upload in one file. Bytes are always written at an explicit offset (never
//! appended blindly), so a retried chunk overwrites rather than duplicates. This module knows
//! nothing of HTTP.

pub mod fs;
pub mod s3;

use std::fmt;
use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::upload::{UploadId, UploadInfo};

/// Why the blob store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No bytes are stored under this id.
    #[error("no data for this upload")]
    NotFound,
    /// The disk is full.
    #[error("no space left on the data volume")]
    Full,
    /// A remote store (object store) could not be reached or answered 5xx: worth a retry.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// The process (EMFILE) or the system (ENFILE) is out of file descriptors: passing, as
    /// connections close; worth a retry.
    #[error("out of file descriptors: {0}")]
    NoDescriptors(#[source] io::Error),
    /// Any other I/O failure.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
}

/// `EMFILE` and `ENFILE` (Linux numbering; std has no `ErrorKind` for them).
const OUT_OF_DESCRIPTORS: [i32; 2] = [24, 23];

impl From<io::Error> for StoreError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::Full,
            _ if err
                .raw_os_error()
                .is_some_and(|code| OUT_OF_DESCRIPTORS.contains(&code)) =>
            {
                StoreError::NoDescriptors(err)
            }
            _ => StoreError::Io(err),
        }
    }
}

/// A stream of an upload's bytes, for downloads.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>;

/// Where upload bytes live. Small on purpose so an object store can follow.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Make an empty blob for `id`.
    async fn create(&self, id: &UploadId) -> Result<(), StoreError>;
    /// Open `id` for positional writes.
    async fn writer(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// Stream `len` bytes of `id` starting at `start`.
    async fn read(&self, id: &UploadId, start: u64, len: u64) -> Result<ByteStream, StoreError>;
    /// Bytes currently stored for `id`.
    async fn len(&self, id: &UploadId) -> Result<u64, StoreError>;
    /// Cut `id` back to `len` bytes (discarding a failed chunk, start-up reconciliation).
    async fn truncate(&self, id: &UploadId, len: u64) -> Result<(), StoreError>;
    /// Delete `id`; deleting a missing blob is not an error.
    async fn remove(&self, id: &UploadId) -> Result<(), StoreError>;
    /// Write the bytes of `parts`, in order, as `target` (which must exist and be empty);
    /// returns the total length, durably stored.
    async fn concat(&self, target: &UploadId, parts: &[UploadId]) -> Result<u64, StoreError>;
    /// Every id that has a blob (start-up reconciliation finds orphans with it).
    async fn ids(&self) -> Result<Vec<UploadId>, StoreError>;
    /// Keep a copy of a new upload's record beside its bytes, called once right after
    /// [`create`](Self::create). A store shared by several instances uses it to size its parts
    /// and to rebuild a record the session store lost; a local store needs nothing.
    async fn describe(&self, _info: &UploadInfo) -> Result<(), StoreError> {
        Ok(())
    }
    /// Keep a copy of `info`, the record of an upload, beside its bytes once the record itself
    /// is durable: if the session store ever loses it, start-up notices (bytes and a copy but
    /// no record) and `tusk recover` rebuilds it. Stores that keep a copy through
    /// [`describe`](Self::describe) need nothing here.
    async fn keep_record_copy(&self, _info: &UploadInfo) -> Result<(), StoreError> {
        Ok(())
    }
    /// Remove the copy [`keep_record_copy`](Self::keep_record_copy) made, durably, before the
    /// record itself is removed: bytes without a copy are then known to be unwanted.
    async fn drop_record_copy(&self, _id: &UploadId) -> Result<(), StoreError> {
        Ok(())
    }
    /// The copy of `id`'s record that [`keep_record_copy`](Self::keep_record_copy) keeps, as it
    /// was written; `None` when there is none (or the store keeps none).
    async fn record_copy(&self, _id: &UploadId) -> Result<Option<UploadInfo>, StoreError> {
        Ok(None)
    }
    /// Set aside the bytes of `id`, which have no record: kept for a while in case they are
    /// wanted after all, then deleted by [`expire_quarantine`](Self::expire_quarantine).
    /// Stores without a quarantine delete them at once.
    async fn quarantine(&self, id: &UploadId) -> Result<(), StoreError> {
        self.remove(id).await
    }
    /// Delete what has been in quarantine longer than `keep`; returns how many files.
    async fn expire_quarantine(&self, _keep: std::time::Duration) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Rebuild the record of `id` from what this store holds (the copy [`describe`] kept, its
    /// offset re-derived from the bytes durably stored), for when the session store lost it.
    /// `None` when the store keeps no such copy or has nothing for `id`.
    ///
    /// [`describe`]: Self::describe
    async fn recover(&self, _id: &UploadId) -> Result<Option<UploadInfo>, StoreError> {
        Ok(None)
    }
    /// The upload is whole at `length` bytes, all of them synced (or, on a store that
    /// [`can_sync_all`](Self::can_sync_all), held by the small-commit journal): seal it (an object store
    /// completes its multipart upload here). Called before the record says finished; calling
    /// it again on a sealed upload is not an error.
    async fn complete(&self, _id: &UploadId, _length: u64) -> Result<(), StoreError> {
        Ok(())
    }
    /// Whether this store's state is shared with other tusk instances (an object store):
    /// then start-up reconciliation must not cut or delete what another instance is writing.
    fn is_shared(&self) -> bool {
        false
    }
    /// Whether [`sync_all`](Self::sync_all) works here: the small-commit journal needs it.
    fn can_sync_all(&self) -> bool {
        false
    }
    /// Make every byte written so far to any blob durable, in one go.
    async fn sync_all(&self) -> Result<(), StoreError> {
        Err(StoreError::Io(io::ErrorKind::Unsupported.into()))
    }
}

/// Positional writes into one blob.
#[async_trait]
pub trait BlobWriter: Send + fmt::Debug {
    /// Write all of `buf` at `offset`; the buffer comes back for reuse whatever happened.
    async fn write_at(&mut self, buf: BytesMut, offset: u64) -> (BytesMut, Result<(), StoreError>);
    /// Write `head` then `tail` contiguously at `offset`; `head` comes back for reuse.
    ///
    /// The PATCH path hands a large body frame over as `tail` where it lies, instead of
    /// copying it into `head` first. Stores that cannot write both in one go get this default:
    /// two writes, the second through a copy.
    async fn write_pair_at(
        &mut self,
        head: BytesMut,
        tail: Bytes,
        offset: u64,
    ) -> (BytesMut, Result<(), StoreError>) {
        let head_len = head.len() as u64;
        let (head, result) = self.write_at(head, offset).await;
        if result.is_err() || tail.is_empty() {
            return (head, result);
        }
        let (_, result) = self
            .write_at(BytesMut::from(&tail[..]), offset + head_len)
            .await;
        (head, result)
    }
    /// Make every byte written so far durable.
    async fn sync(&mut self) -> Result<(), StoreError>;

    /// The `len` bytes at `offset` as written so far, durable or not (the small-commit journal
    /// keeps a copy of them); stores whose [`BlobStore::can_sync_all`] is false need not.
    async fn read_back(&mut self, _offset: u64, _len: usize) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Io(io::ErrorKind::Unsupported.into()))
    }

    /// A sync of every byte written so far that runs on its own while writing goes on, for
    /// checkpoints in the middle of a long body; `None` when the store cannot do that (the
    /// caller then syncs in line).
    fn background_sync(&self) -> Option<BackgroundSync> {
        None
    }
}

/// A sync running apart from its writer; see [`BlobWriter::background_sync`].
pub type BackgroundSync =
    Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send + 'static>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_file_descriptors_is_its_own_error() {
        for code in OUT_OF_DESCRIPTORS {
            let err = StoreError::from(io::Error::from_raw_os_error(code));
            assert!(
                matches!(err, StoreError::NoDescriptors(_)),
                "{code}: {err:?}"
            );
        }
        let other = StoreError::from(io::Error::from_raw_os_error(5)); // EIO
        assert!(matches!(other, StoreError::Io(_)), "{other:?}");
    }
}
