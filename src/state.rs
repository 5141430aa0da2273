//! Everything a request handler can reach: settings, stores, locks. Cheap to clone.

use std::sync::Arc;
use std::time::Duration;

use crate::admission::{Admission, CreationLimiter};
use crate::auth::{AuthSetupError, Authority, SECRET_ENV};
use crate::config::{Backend, Durability, Settings};
use crate::error::{Result, TusError};
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::session::lock::{UploadGuard, UploadLocks};
use crate::session::{SessionError, SessionStore, SledSessionStore};
use crate::storage::fs::FsBlobStore;
use crate::storage::s3::S3BlobStore;
use crate::storage::{BlobStore, StoreError};
use crate::transfer::budget::BufferBudget;
use crate::transfer::buffer_pool::BufferPool;
use crate::transfer::journal::{self, CommitJournal, JournaledSessions};
use crate::transfer::monitor::InterfaceMonitor;
use crate::transfer::profile::ClientProfiles;
use crate::upload::{unix_now, UploadId, UploadInfo, UploadState};

/// How long a request waits for an in-flight PATCH it asked to stop to commit and let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Why the server could not start on its data directory.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The session store would not open.
    #[error("cannot open the session database: {0}")]
    Session(#[from] SessionError),
    /// The upload directory would not open.
    #[error("cannot open the upload directory: {0}")]
    Storage(#[from] StoreError),
    /// Bytes and records disagree in a way only an operator can settle.
    #[error("{0}")]
    Recovery(#[from] crate::recovery::RecoveryError),
    /// The commit journal could not be replayed or started.
    #[error("commit journal: {0}")]
    Journal(String),
    /// The hook outbox directory would not open.
    #[error("cannot open the hook outbox: {0}")]
    HookOutbox(std::io::Error),
    /// Token mode without usable keys.
    #[error("{0}")]
    Auth(#[from] AuthSetupError),
    /// The admin token file is missing or empty.
    #[error("cannot read admin.token_file {path}: {reason}")]
    AdminToken {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// The secret itself, for comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The admin API's token, read from `admin.token_file` when the admin API is enabled.
///
/// # Errors
/// When the file cannot be read or holds fewer than 16 characters.
pub fn read_admin_token(settings: &Settings) -> Result<Option<Secret>, StartError> {
    if !settings.admin.enabled {
        return Ok(None);
    }
    let path = &settings.admin.token_file;
    let failed = |reason: String| StartError::AdminToken {
        path: path.display().to_string(),
        reason,
    };
    let token = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    let token = token.trim();
    if token.len() < 16 {
        return Err(failed(
            "the token must be at least 16 characters".to_owned(),
        ));
    }
    Ok(Some(Secret(Arc::from(token))))
}

/// The stores and the lock table of one backend.
type Stores = (Arc<dyn SessionStore>, Arc<dyn BlobStore>, UploadLocks);

/// sled under `data_dir/db`, files under `data_dir/uploads`, a per-process lock table.
fn open_local(settings: &Settings) -> Result<Stores, StartError> {
    let data_dir = &settings.storage.data_dir;
    let blobs = FsBlobStore::open(&data_dir.join("uploads"))?
        .syncing_directories(settings.storage.durability == Durability::Fsync);
    let sessions = SledSessionStore::open(&data_dir.join("db"), settings.storage.durability)?;
    Ok((Arc::new(sessions), Arc::new(blobs), UploadLocks::new()))
}

/// Replay what a crash left in the commit journal (before anything reads the files), then
/// start it where it applies, its removals going through the returned session store.
async fn open_journal(
    settings: &Settings,
    sessions: Arc<dyn SessionStore>,
    blobs: &Arc<dyn BlobStore>,
) -> Result<(Arc<dyn SessionStore>, Option<CommitJournal>), StartError> {
    if settings.storage.backend != Backend::Local {
        return Ok((sessions, None));
    }
    let failed = |err: &dyn std::fmt::Display| StartError::Journal(err.to_string());
    let replayed = journal::replay(
        &journal::journal_dir(settings),
        sessions.as_ref(),
        blobs.as_ref(),
    )
    .await
    .map_err(|err| failed(&err))?;
    if replayed > 0 {
        tracing::info!(
            entries = replayed,
            "commit journal replayed into the upload files and records"
        );
    }
    let Some(journal) =
        CommitJournal::open(settings, &sessions, blobs).map_err(|err| failed(&err))?
    else {
        return Ok((sessions, None));
    };
    let wrapped: Arc<dyn SessionStore> =
        Arc::new(JournaledSessions::new(sessions, journal.clone()));
    Ok((wrapped, Some(journal)))
}

/// Bytes in the object store, records and leases in Redis: shared by every instance.
async fn open_shared(settings: &Settings) -> Result<Stores, StartError> {
    let blobs = S3BlobStore::new(&settings.s3)?;
    blobs.check().await?;
    let (sessions, shared_locks) = crate::session::redis::connect(&settings.redis).await?;
    let locks = UploadLocks::with_shared(Arc::new(shared_locks.clone()));
    // Lives as long as the process: stop requests from other instances reach this table.
    shared_locks.listen(locks.clone(), tokio_util::sync::CancellationToken::new());
    tracing::info!(endpoint = %settings.s3.endpoint, bucket = %settings.s3.bucket, redis = %redact_url(&settings.redis.url), "shared backend: S3 + Redis");
    Ok((Arc::new(sessions), Arc::new(blobs), locks))
}

/// A Redis URL without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Shared server state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Effective settings.
    pub settings: Arc<Settings>,
    /// Upload records.
    pub sessions: Arc<dyn SessionStore>,
    /// Upload bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// One writer per upload.
    pub locks: UploadLocks,
    /// Request buffers, under the global memory budget.
    pub pool: BufferPool,
    /// Per-client throughput and interruption history.
    pub profiles: ClientProfiles,
    /// Local interfaces and the PATCHes bound to their addresses.
    pub interfaces: InterfaceMonitor,
    /// Request and upload counters.
    pub metrics: Metrics,
    /// The admin API's bearer token, when the admin API is enabled.
    pub admin_token: Option<Secret>,
    /// Token verification, link signing and per-owner accounting.
    pub auth: Arc<Authority>,
    /// HTTP hooks (off unless `[hooks]` names an endpoint).
    pub hooks: Hooks,
    /// Small fsync commits share one fdatasync here (local backend); `None` where that does
    /// not apply.
    pub journal: Option<CommitJournal>,
    /// Limits on creations per address and on connections, in every auth mode.
    pub admission: Arc<Admission>,
}

impl AppState {
    /// Open the configured backend and, for the local one, reconcile it after whatever stopped
    /// the last run.
    ///
    /// # Errors
    /// When either store cannot be opened or read.
    pub async fn open(settings: Settings) -> Result<AppState, StartError> {
        let (sessions, blobs, locks) = match settings.storage.backend {
            Backend::Local => open_local(&settings)?,
            Backend::S3 => open_shared(&settings).await?,
        };
        let (sessions, journal) = open_journal(&settings, sessions, &blobs).await?;
        let budget = settings.limits.max_buffer_memory.0;
        // Multiplied first: 100% must be the whole budget, not a rounded-down part of it.
        let share = u128::from(budget) * u128::from(settings.limits.max_buffer_share_percent) / 100;
        let pool = BufferPool::with_client_share(
            BufferBudget::new(budget),
            usize::try_from(share).unwrap_or(usize::MAX),
        );
        let admin_token = read_admin_token(&settings)?;
        let auth = Authority::new(&settings.auth, std::env::var(SECRET_ENV).ok())?;
        if !auth.requires_token() {
            tracing::warn!("auth.mode = \"open\": anyone who can reach this server may create, read and delete uploads; set auth.mode = \"token\" (or --auth-secret-file) for anything but a trusted network");
        }
        let metrics = Metrics::default();
        // A local directory on either backend: each instance delivers the events it queued.
        let hooks = Hooks::new(
            &settings.hooks,
            &settings.storage.data_dir.join("hooks-outbox"),
            settings.storage.durability == Durability::Fsync,
            metrics.clone(),
            Arc::clone(&sessions),
        )
        .map_err(StartError::HookOutbox)?;
        let state = AppState {
            admission: Arc::new(Admission::new(CreationLimiter::new(
                settings.limits.creation_rate,
                settings.limits.creation_burst,
                settings
                    .limits
                    .creation_rate_exempt
                    .iter()
                    .map(|n| n.0)
                    .collect(),
            ))),
            journal,
            auth: Arc::new(auth),
            hooks,
            admin_token,
            pool,
            profiles: ClientProfiles::default(),
            interfaces: InterfaceMonitor::new(),
            metrics,
            settings: Arc::new(settings),
            sessions,
            blobs,
            locks,
        };
        state.reconcile().await?;
        Ok(state)
    }

    /// Make bytes and records agree after whatever stopped the last run (see
    /// [`crate::recovery`]); the auth ledger learns every owner's uploads on the way.
    async fn reconcile(&self) -> Result<(), StartError> {
        if self.blobs.is_shared() {
            // Other instances are writing into a shared store now: nothing here is orphaned.
            return Ok(());
        }
        let now = unix_now();
        for info in self.sessions.all().await? {
            if let Some(owner) = &info.owner {
                let finished = info.is_finished();
                self.auth
                    .ledger
                    .restore(owner, info.id.clone(), info.created_at, finished, now);
            }
        }
        let storage = &self.settings.storage;
        crate::recovery::reconcile(
            self.sessions.as_ref(),
            self.blobs.as_ref(),
            storage.durability,
            storage.quarantine_for.0,
        )
        .await?;
        Ok(())
    }

    /// 507 when free space on the data volume is below `storage.min_free_space`.
    pub fn check_free_space(&self) -> Result<()> {
        let floor = self.settings.storage.min_free_space.0;
        if floor == 0 {
            return Ok(());
        }
        match fs4::available_space(&self.settings.storage.data_dir) {
            Ok(free) if free < floor => Err(TusError::InsufficientStorage),
            _ => Ok(()),
        }
    }

    /// The record of `id`: 404 if unknown, 410 if expired.
    pub async fn load(&self, id: &UploadId) -> Result<UploadInfo> {
        let record = match self.sessions.get(id).await? {
            Some(info) => Some(info),
            None => self.recover(id).await?,
        };
        match record {
            None => Err(TusError::NotFound),
            Some(info) if info.is_expired(unix_now()) => Err(TusError::Gone),
            Some(info) if info.state == UploadState::Lost => Err(TusError::Lost),
            Some(info) => Ok(info),
        }
    }

    /// A record the session store does not have, rebuilt from the blob store (a shared session
    /// store that was flushed or lost: the object store still knows every upload) and stored.
    async fn recover(&self, id: &UploadId) -> Result<Option<UploadInfo>> {
        let Some(mut info) = self.blobs.recover(id).await? else {
            return Ok(None);
        };
        // Its clock restarts now: the record was lost, not the client's interest in it.
        crate::protocol::expiration::renew(self, &mut info);
        tracing::warn!(upload = %id, offset = info.offset, "record rebuilt from the blob store");
        self.sessions.put(&info).await?;
        Ok(Some(info))
    }

    /// The write lock of `id`, asking an in-flight holder to stop first (423 if it won't).
    pub async fn lock_for_write(&self, id: &UploadId) -> Result<UploadGuard> {
        self.locks
            .lock_with_takeover(id, TAKEOVER_WAIT)
            .await
            .map_err(TusError::from)
    }

    /// Let a stalled PATCH on `id` (a half-open connection) commit and go, so a reader sees
    /// every byte it received. A live PATCH is left alone.
    pub async fn release_stalled(&self, id: &UploadId) {
        self.locks.release_stalled(id, TAKEOVER_WAIT).await;
    }

    /// Store a new upload: bytes first, so a record never points at nothing.
    ///
    /// `durable_now` false skips the flush for a record that a later commit in the same request
    /// flushes before the client hears of it (creation-with-upload: one fsync, not two).
    pub async fn create_upload(&self, info: UploadInfo, durable_now: bool) -> Result<UploadInfo> {
        self.blobs.create(&info.id).await?;
        let described = match self.blobs.describe(&info).await {
            // An empty upload is complete at creation: nothing will seal it later.
            Ok(()) if info.length == Some(0) => self.blobs.complete(&info.id, 0).await,
            other => other,
        };
        if let Err(err) = described {
            let _ = self.blobs.remove(&info.id).await;
            return Err(err.into());
        }
        let stored = if durable_now {
            self.sessions.put(&info).await
        } else {
            self.sessions.put_lazy(&info).await
        };
        if let Err(err) = stored {
            let _ = self.blobs.remove(&info.id).await;
            return Err(err.into());
        }
        if durable_now {
            self.keep_record_copy(&info).await;
        }
        Ok(info)
    }

    /// Keep a copy of `info` beside its bytes, now that the record is durable (see
    /// [`BlobStore::keep_record_copy`]). A failure costs only the chance to rebuild the
    /// record should the database lose it (start-up writes missing copies): logged, not fatal.
    pub async fn keep_record_copy(&self, info: &UploadInfo) {
        if let Err(err) = self.blobs.keep_record_copy(info).await {
            tracing::warn!(upload = %info.id, error = %err, "could not keep a copy of the record beside the bytes");
        }
    }

    /// Delete an upload: the record's copy first (bytes without a copy are known unwanted),
    /// then the record, so nobody is served bytes that are going away, then the bytes.
    pub async fn remove_upload(&self, id: &UploadId) -> Result<()> {
        self.blobs.drop_record_copy(id).await?;
        self.sessions.remove(id).await?;
        self.blobs.remove(id).await?;
        Ok(())
    }
}
