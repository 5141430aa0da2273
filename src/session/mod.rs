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

use std::fmt;
use std::path::Path;

use async_trait::async_trait;

use crate::config::Durability;
use crate::upload::{UploadId, UploadInfo};

/// Why the session store failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The database itself failed.
    #[error("database error: {0}")]
    Database(String),
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
    /// Forget `id`.
    async fn remove(&self, id: &UploadId) -> Result<(), SessionError>;
    /// Every record (start-up reconciliation and the expiry sweep).
    async fn all(&self) -> Result<Vec<UploadInfo>, SessionError>;
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
            // sled's background flusher also runs; our own flush is what makes a PATCH durable.
            .flush_every_ms(Some(500))
            .open()?;
        let uploads = db.open_tree("uploads")?;
        Ok(SledSessionStore {
            db,
            uploads,
            durability,
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
        self.uploads
            .get(id.as_str())?
            .map(|bytes| Self::decode(id.as_str().as_bytes(), &bytes))
            .transpose()
    }

    async fn put(&self, info: &UploadInfo) -> Result<(), SessionError> {
        self.uploads.insert(info.id.as_str(), Self::encode(info)?)?;
        if self.durability == Durability::Fsync {
            self.flush().await?;
        }
        Ok(())
    }

    async fn remove(&self, id: &UploadId) -> Result<(), SessionError> {
        self.uploads.remove(id.as_str())?;
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
        // Concurrent callers share sled's flush: each waits for one that covers its write,
        // which is what makes many small uploads share one fsync (group commit).
        self.db.flush_async().await?;
        Ok(())
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
}
