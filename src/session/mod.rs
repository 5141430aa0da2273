//! Upload records and who may write them.
//!
//! The record of an upload (its [`UploadInfo`]) lives behind the [`SessionStore`] trait; the
//! default implementation is [`SledSessionStore`]. This is the only module that imports sled.
//! The per-upload write lock lives in [`lock`], the expiry sweeper in [`expiry`].
//!
//! Invariant: a record's `offset` never exceeds the bytes durably written for that upload. The
//! PATCH path syncs bytes first and stores the offset second; [`SessionStore::put`] with
//! fsync durability flushes sled before it returns, and until it has, readers see the record
//! as it was: a value is visible only once it is durable.

pub mod expiry;
pub mod lock;
pub mod redis;
mod sled_store;

pub use sled_store::SledSessionStore;

use std::fmt;

use async_trait::async_trait;

use crate::upload::{UploadId, UploadInfo};

/// Why the session store failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The database itself failed.
    #[error("database error: {0}")]
    Database(String),
    /// The disk under the database is full: nothing could be stored.
    #[error("no space left for the session database: {0}")]
    Full(String),
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
