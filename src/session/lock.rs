//! One writer per upload, and a way to ask that writer to stop.
//!
//! A PATCH holds its upload's lock for the whole request. A phone that switched from Wi-Fi to
//! LTE leaves a half-open connection whose PATCH still holds the lock; the phone's new request
//! must not wait for a TCP timeout. So a holder carries a [`CancellationToken`]: a newer request
//! cancels it, the holder commits the bytes it has and drops its guard, and the newer request
//! proceeds (tusd's `requestUnlock` idea).
//!
//! Only a *stalled* holder is asked to stop: one whose body has delivered no byte for
//! [`STALL_THRESHOLD`]. A PATCH that is still receiving is a live client, and a HEAD from a
//! progress monitor must not cut it off; a newer request then waits for it (bounded) instead.
//!
//! Several instances sharing a backend add a [`SharedLocks`] layer (Redis) under the local
//! table: a request first holds the upload in its own process, then takes a lease in the shared
//! store under a random holder token, renewed while it works. A request on another instance
//! that finds the lease taken asks its holder to stop over the store's messaging (pub/sub);
//! the holder's instance applies the same stall rule as for a local request.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::SessionError;
use crate::upload::UploadId;

/// The upload is held by another request that did not let go in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upload is locked by another request")]
pub struct Busy;

/// Why a lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another request holds it and did not let go in time.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The shared lock store could not be reached.
    #[error(transparent)]
    Unavailable(#[from] SessionError),
}

/// What a request on another instance asks the holder of an upload to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// Stop only if stalled (the rule for tus requests).
    IfStalled,
    /// Stop, stalled or not (the IETF draft's rule: a new request ends the one in flight).
    Always,
}

/// Upload leases shared by every instance (implemented on Redis). Holder tokens are random
/// per acquisition, so only the holder can renew or release its lease.
#[async_trait]
pub trait SharedLocks: Send + Sync + fmt::Debug + 'static {
    /// Take the lease of `id` for `holder` if nobody has it; whether it was taken.
    async fn acquire(&self, id: &UploadId, holder: &str) -> Result<bool, SessionError>;
    /// Extend `holder`'s lease (or take it again if it vanished, e.g. the store was
    /// flushed); false when someone else has it now.
    async fn renew(&self, id: &UploadId, holder: &str) -> Result<bool, SessionError>;
    /// Give the lease up, only if `holder` still has it.
    async fn release(&self, id: &UploadId, holder: &str) -> Result<(), SessionError>;
    /// Whether anyone holds `id`.
    async fn is_held(&self, id: &UploadId) -> Result<bool, SessionError>;
    /// Tell the instance holding `id` what a request elsewhere wants.
    async fn ask_holder(&self, id: &UploadId, request: StopRequest) -> Result<(), SessionError>;
    /// How long a lease lives without renewal.
    fn lease(&self) -> Duration;
}

/// A holder whose body delivered nothing for this long is presumed dead (a half-open
/// connection) and is asked to stop when another request wants the upload.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(500);

/// How often a waiting request re-checks whether a live holder has stalled meanwhile.
const RECHECK: Duration = Duration::from_millis(100);

/// How long a reader waits on a holder that keeps receiving before answering without it.
pub const LIVE_PATIENCE: Duration = Duration::from_secs(1);

/// A holder as a reader sees it.
enum HolderState {
    /// Nobody holds the upload.
    None,
    /// Asked to stop (by us or earlier): it is committing.
    Stopping,
    /// Holding, silent for this long (less than the stall threshold).
    Quiet(Duration),
}

/// When a holder last made progress, readable without the table lock.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    epoch: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new(epoch: Instant) -> Heartbeat {
        let beat = Heartbeat {
            epoch,
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        beat.beat();
        beat
    }

    /// Record progress now (the pipeline calls this for every body frame).
    pub fn beat(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Debug)]
struct Holder {
    /// Tells this holder's guard from a later holder's when it drops.
    generation: u64,
    stop: CancellationToken,
    heartbeat: Heartbeat,
}

#[derive(Debug)]
struct Table {
    holders: HashMap<UploadId, Holder>,
    next_generation: u64,
    epoch: Instant,
    waits: u64,
    takeovers: u64,
    /// Set by [`UploadLocks::stop_all`]: the server is shutting down.
    closing: bool,
}

/// Lock figures, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LockStats {
    /// Uploads held by a request now.
    pub held: u64,
    /// Requests that found the lock taken and waited.
    pub waits: u64,
    /// Stalled holders asked to stop by a newer request.
    pub takeovers: u64,
}

/// The lock table of one process, over the shared leases when there are several instances.
#[derive(Debug, Clone)]
pub struct UploadLocks {
    table: Arc<Mutex<Table>>,
    released: Arc<Notify>,
    shared: Option<Arc<dyn SharedLocks>>,
}

impl Default for UploadLocks {
    fn default() -> Self {
        UploadLocks {
            table: Arc::new(Mutex::new(Table {
                holders: HashMap::new(),
                next_generation: 0,
                epoch: Instant::now(),
                waits: 0,
                takeovers: 0,
                closing: false,
            })),
            released: Arc::new(Notify::new()),
            shared: None,
        }
    }
}

impl UploadLocks {
    /// An empty table.
    pub fn new() -> UploadLocks {
        UploadLocks::default()
    }

    /// An empty table whose holders also take a lease in `shared`.
    pub fn with_shared(shared: Arc<dyn SharedLocks>) -> UploadLocks {
        UploadLocks {
            shared: Some(shared),
            ..UploadLocks::default()
        }
    }

    /// Apply a request that came from another instance to this instance's holder of `id`.
    pub fn on_remote_request(&self, id: &UploadId, request: StopRequest) {
        match request {
            StopRequest::IfStalled => {
                self.stop_if_stalled(id);
            }
            StopRequest::Always => self.stop_local(id),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this mutex cannot leave the map inconsistent (single
        // insert/remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the lock if nobody holds it, here or (with shared leases) on another instance.
    ///
    /// # Errors
    /// [`LockError::Busy`] when another request holds it.
    pub async fn try_lock(&self, id: &UploadId) -> Result<UploadGuard, LockError> {
        let mut guard = self.try_lock_local(id)?;
        if let Some(shared) = &self.shared {
            if !shared.acquire(id, guard.holder()).await? {
                return Err(Busy.into());
            }
            guard.attach_lease(Arc::clone(shared));
        }
        Ok(guard)
    }

    fn try_lock_local(&self, id: &UploadId) -> Result<UploadGuard, Busy> {
        let mut table = self.table();
        if table.holders.contains_key(id) {
            return Err(Busy);
        }
        table.next_generation += 1;
        let generation = table.next_generation;
        let stop = CancellationToken::new();
        if table.closing {
            // A request that slipped in during shutdown commits what it has and goes too.
            stop.cancel();
        }
        let heartbeat = Heartbeat::new(table.epoch);
        table.holders.insert(
            id.clone(),
            Holder {
                generation,
                stop: stop.clone(),
                heartbeat: heartbeat.clone(),
            },
        );
        Ok(UploadGuard {
            locks: self.clone(),
            id: id.clone(),
            generation,
            stop,
            heartbeat,
            holder: random_holder_token(),
            lease: None,
        })
    }

    /// Take the lock within `wait`: a stalled holder is asked to stop (it commits and lets
    /// go), a live one is waited for.
    ///
    /// # Errors
    /// [`LockError::Busy`] when the lock could not be had within `wait`.
    pub async fn lock_with_takeover(
        &self,
        id: &UploadId,
        wait: Duration,
    ) -> Result<UploadGuard, LockError> {
        let deadline = tokio::time::Instant::now() + wait;
        let guard = self.local_with_takeover(id, deadline).await?;
        match &self.shared {
            None => Ok(guard),
            Some(shared) => self.lease_with_takeover(shared, guard, deadline).await,
        }
    }

    /// With the local lock held: take the shared lease, asking its holder on another instance
    /// to stop if stalled, until `deadline`.
    async fn lease_with_takeover(
        &self,
        shared: &Arc<dyn SharedLocks>,
        mut guard: UploadGuard,
        deadline: tokio::time::Instant,
    ) -> Result<UploadGuard, LockError> {
        let mut asked = false;
        loop {
            if shared.acquire(&guard.id, guard.holder()).await? {
                guard.attach_lease(Arc::clone(shared));
                return Ok(guard);
            }
            if !asked {
                asked = true;
                self.table().waits += 1;
            }
            // Asked again on every look: the holder may stall only after the first ask.
            shared.ask_holder(&guard.id, StopRequest::IfStalled).await?;
            if tokio::time::Instant::now() >= deadline {
                return Err(Busy.into());
            }
            tokio::time::sleep_until((tokio::time::Instant::now() + RECHECK).min(deadline)).await;
        }
    }

    async fn local_with_takeover(
        &self,
        id: &UploadId,
        deadline: tokio::time::Instant,
    ) -> Result<UploadGuard, Busy> {
        let mut counted = false;
        loop {
            // Register interest before checking, so a release between check and wait is seen.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_lock_local(id) {
                Ok(guard) => return Ok(guard),
                Err(Busy) => {
                    if !counted {
                        counted = true;
                        self.table().waits += 1;
                    }
                    self.stop_if_stalled(id);
                }
            }
            let recheck = (tokio::time::Instant::now() + RECHECK).min(deadline);
            let _ = tokio::time::timeout_at(recheck, released).await;
            if tokio::time::Instant::now() >= deadline {
                return self.try_lock_local(id);
            }
        }
    }

    /// Let a stalled (or already stopping) holder of `id` commit and go, waiting up to `wait`
    /// for it. A holder that has gone quiet but not yet for [`STALL_THRESHOLD`] is watched
    /// until it either crosses it (then stopped) or sends again; a holder still receiving after
    /// [`LIVE_PATIENCE`] is a live client and is left alone. For readers (HEAD) that want a
    /// fresh offset but no lock: a phone that just switched networks gets every byte its old
    /// connection delivered, within about the stall threshold.
    pub async fn release_stalled(&self, id: &UploadId, wait: Duration) {
        self.release_stalled_local(id, wait).await;
        if let Some(shared) = &self.shared {
            if !self.is_locked(id) {
                // Bounded like the local wait for a live holder: a reader never waits long.
                let patience = wait.min(LIVE_PATIENCE + STALL_THRESHOLD);
                if let Err(err) = remote_release_stalled(shared.as_ref(), id, patience).await {
                    tracing::debug!(upload = %id, error = %err, "shared lock store unreachable");
                }
            }
        }
    }

    async fn release_stalled_local(&self, id: &UploadId, wait: Duration) {
        let start = tokio::time::Instant::now();
        let deadline = start + wait;
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let next_look = match self.holder_state(id) {
                HolderState::None => return,
                HolderState::Stopping => deadline,
                HolderState::Quiet(silent) => {
                    if tokio::time::Instant::now() >= start + LIVE_PATIENCE {
                        return;
                    }
                    // Look again when it would cross the threshold.
                    tokio::time::Instant::now()
                        + STALL_THRESHOLD.saturating_sub(silent)
                        + RECHECK / 10
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(next_look.min(deadline), released).await;
        }
    }

    /// Where the holder of `id` stands, stopping a stalled one.
    fn holder_state(&self, id: &UploadId) -> HolderState {
        if !self.is_locked(id) {
            return HolderState::None;
        }
        if self.stop_if_stalled(id) {
            return HolderState::Stopping;
        }
        match self.table().holders.get(id) {
            Some(holder) => HolderState::Quiet(holder.heartbeat.silent_for()),
            None => HolderState::None,
        }
    }

    /// Ask the holder of `id` to stop if it has been silent for [`STALL_THRESHOLD`]; returns
    /// whether it is stopping (asked now, or already by someone else: it is committing).
    fn stop_if_stalled(&self, id: &UploadId) -> bool {
        let mut table = self.table();
        match table.holders.get(id) {
            Some(holder) if holder.stop.is_cancelled() => true,
            Some(holder) if holder.heartbeat.silent_for() >= STALL_THRESHOLD => {
                holder.stop.cancel();
                table.takeovers += 1;
                true
            }
            _ => false,
        }
    }

    /// Current figures.
    pub fn stats(&self) -> LockStats {
        let table = self.table();
        LockStats {
            held: table.holders.len() as u64,
            waits: table.waits,
            takeovers: table.takeovers,
        }
    }

    /// Ask the current holder of `id`, if any and wherever it is, to stop, stalled or not.
    pub async fn request_stop(&self, id: &UploadId) {
        self.stop_local(id);
        if let Some(shared) = &self.shared {
            if let Err(err) = shared.ask_holder(id, StopRequest::Always).await {
                tracing::debug!(upload = %id, error = %err, "shared lock store unreachable");
            }
        }
    }

    fn stop_local(&self, id: &UploadId) {
        if let Some(holder) = self.table().holders.get(id) {
            holder.stop.cancel();
        }
    }

    /// Whether some request holds `id`.
    pub fn is_locked(&self, id: &UploadId) -> bool {
        self.table().holders.contains_key(id)
    }

    /// Ask every holder to stop, now and from now on (graceful shutdown).
    pub fn stop_all(&self) {
        let mut table = self.table();
        table.closing = true;
        for holder in table.holders.values() {
            holder.stop.cancel();
        }
    }

    /// Whether [`UploadLocks::stop_all`] was called: a stopped holder was stopped by the
    /// shutdown, not by a newer request for its upload.
    pub fn is_closing(&self) -> bool {
        self.table().closing
    }

    fn release(&self, id: &UploadId, generation: u64) {
        {
            let mut table = self.table();
            if table.holders.get(id).map(|h| h.generation) == Some(generation) {
                table.holders.remove(id);
            }
        }
        self.released.notify_waiters();
    }
}

/// Until a stalled holder elsewhere has let go of the shared lease: asks it, then watches.
async fn remote_release_stalled(
    shared: &dyn SharedLocks,
    id: &UploadId,
    patience: Duration,
) -> Result<(), SessionError> {
    let deadline = tokio::time::Instant::now() + patience;
    while shared.is_held(id).await? {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        shared.ask_holder(id, StopRequest::IfStalled).await?;
        tokio::time::sleep(RECHECK).await;
    }
    Ok(())
}

/// A random token naming one holder of one lease.
fn random_holder_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    crate::upload::lower_hex(&bytes)
}

/// A shared lease held by a guard, renewed in the background while it lives.
#[derive(Debug)]
struct Lease {
    shared: Arc<dyn SharedLocks>,
    renewer: tokio::task::JoinHandle<()>,
}

/// Proof of holding an upload's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct UploadGuard {
    locks: UploadLocks,
    id: UploadId,
    generation: u64,
    stop: CancellationToken,
    heartbeat: Heartbeat,
    holder: String,
    lease: Option<Lease>,
}

impl UploadGuard {
    fn holder(&self) -> &str {
        &self.holder
    }

    /// Keep the shared lease alive every third of its life. A lease that cannot be renewed
    /// (another holder has it, or the store was unreachable for two thirds of its life)
    /// stops this holder, so it commits nothing more under a lease it may have lost.
    fn attach_lease(&mut self, shared: Arc<dyn SharedLocks>) {
        let (id, holder, stop) = (self.id.clone(), self.holder.clone(), self.stop.clone());
        let store = Arc::clone(&shared);
        let renewer = tokio::spawn(async move {
            let every = store.lease() / 3;
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match store.renew(&id, &holder).await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::warn!(upload = %id, "upload lease taken by another holder; stopping");
                        stop.cancel();
                        return;
                    }
                    Err(err) if renewed.elapsed() >= every * 2 => {
                        tracing::warn!(upload = %id, error = %err, "upload lease could not be renewed; stopping");
                        stop.cancel();
                        return;
                    }
                    Err(_) => {}
                }
            }
        });
        self.lease = Some(Lease { shared, renewer });
    }

    /// Make sure the shared lease is still this holder's, and good for a full lease from
    /// now, before storing anything that depends on holding it (a commit).
    ///
    /// # Errors
    /// [`LockError::Busy`] when another holder has the lease now.
    pub async fn confirm(&self) -> Result<(), LockError> {
        match &self.lease {
            None => Ok(()),
            Some(lease) => match lease.shared.renew(&self.id, &self.holder).await? {
                true => Ok(()),
                false => Err(Busy.into()),
            },
        }
    }

    /// Cancelled when a newer request (or shutdown) asks this holder to stop.
    pub fn stop_requested(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Where the holder records progress, so it is not mistaken for a stalled one.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.renewer.abort();
            let (id, holder) = (self.id.clone(), std::mem::take(&mut self.holder));
            let locks = self.locks.clone();
            let generation = self.generation;
            // The local lock goes only once the lease is released, so a request waiting here
            // does not race the release to the shared store.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = lease.shared.release(&id, &holder).await {
                        tracing::debug!(upload = %id, error = %err, "lease left to expire");
                    }
                    locks.release(&id, generation);
                });
                return;
            }
        }
        self.locks.release(&self.id, self.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let first = locks.try_lock_local(&id).unwrap();
        assert_eq!(locks.try_lock_local(&id).unwrap_err(), Busy);
        drop(first);
        assert!(locks.try_lock_local(&id).is_ok());
    }

    #[tokio::test]
    async fn takeover_asks_the_holder_to_stop_and_gets_the_lock() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let holder = locks.try_lock_local(&id).unwrap();
        // Let the holder go silent, as a half-open connection does.
        std::thread::sleep(STALL_THRESHOLD);
        let stop = holder.stop_requested();
        let task = tokio::spawn(async move {
            stop.cancelled().await;
            drop(holder);
        });
        let guard = locks
            .lock_with_takeover(&id, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(locks.is_locked(&id));
        task.await.unwrap();
        drop(guard);
        assert!(!locks.is_locked(&id));
    }

    #[tokio::test]
    async fn a_live_holder_is_not_stopped_but_waited_for() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let holder = locks.try_lock_local(&id).unwrap();
        let stop = holder.stop_requested();
        let beating = holder.heartbeat().clone();
        let task = tokio::spawn(async move {
            // Keep receiving for a while, then finish on its own.
            for _ in 0..8 {
                beating.beat();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            drop(holder);
        });
        let guard = locks
            .lock_with_takeover(&id, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!stop.is_cancelled(), "a live holder was cut off");
        task.await.unwrap();
        drop(guard);
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_quiet_holder_to_stall_and_commit() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let holder = locks.try_lock_local(&id).unwrap();
        let stop = holder.stop_requested();
        // The holder commits and lets go once asked, as a PATCH does.
        let task = tokio::spawn(async move {
            stop.cancelled().await;
            drop(holder);
        });
        let started = std::time::Instant::now();
        locks.release_stalled(&id, Duration::from_secs(5)).await;
        assert!(!locks.is_locked(&id), "the quiet holder was not released");
        assert!(started.elapsed() >= STALL_THRESHOLD - Duration::from_millis(50));
        assert!(started.elapsed() < STALL_THRESHOLD + Duration::from_millis(400));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_reader_leaves_a_receiving_holder_alone() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let holder = locks.try_lock_local(&id).unwrap();
        let beating = holder.heartbeat().clone();
        let keep_beating = tokio::spawn(async move {
            for _ in 0..40 {
                beating.beat();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        locks.release_stalled(&id, Duration::from_secs(5)).await;
        assert!(
            !holder.stop_requested().is_cancelled(),
            "a live holder was cut off"
        );
        assert!(locks.is_locked(&id));
        keep_beating.abort();
    }

    #[tokio::test]
    async fn takeover_gives_up_on_a_holder_that_never_lets_go() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let _stubborn = locks.try_lock_local(&id).unwrap();
        let result = locks
            .lock_with_takeover(&id, Duration::from_millis(50))
            .await;
        assert!(matches!(result, Err(LockError::Busy(Busy))));
    }
}
