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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::upload::UploadId;

/// The upload is held by another request that did not let go in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upload is locked by another request")]
pub struct Busy;

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

/// The lock table of one process.
#[derive(Debug, Clone)]
pub struct UploadLocks {
    table: Arc<Mutex<Table>>,
    released: Arc<Notify>,
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
            })),
            released: Arc::new(Notify::new()),
        }
    }
}

impl UploadLocks {
    /// An empty table.
    pub fn new() -> UploadLocks {
        UploadLocks::default()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding this mutex cannot leave the map inconsistent (single
        // insert/remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the lock if nobody holds it.
    ///
    /// # Errors
    /// [`Busy`] when another request holds it.
    pub fn try_lock(&self, id: &UploadId) -> Result<UploadGuard, Busy> {
        let mut table = self.table();
        if table.holders.contains_key(id) {
            return Err(Busy);
        }
        table.next_generation += 1;
        let generation = table.next_generation;
        let stop = CancellationToken::new();
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
        })
    }

    /// Take the lock within `wait`: a stalled holder is asked to stop (it commits and lets
    /// go), a live one is waited for.
    ///
    /// # Errors
    /// [`Busy`] when the lock could not be had within `wait`.
    pub async fn lock_with_takeover(
        &self,
        id: &UploadId,
        wait: Duration,
    ) -> Result<UploadGuard, Busy> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut counted = false;
        loop {
            // Register interest before checking, so a release between check and wait is seen.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_lock(id) {
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
                return self.try_lock(id);
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

    /// Ask the current holder of `id`, if any, to stop, stalled or not.
    pub fn request_stop(&self, id: &UploadId) {
        if let Some(holder) = self.table().holders.get(id) {
            holder.stop.cancel();
        }
    }

    /// Whether some request holds `id`.
    pub fn is_locked(&self, id: &UploadId) -> bool {
        self.table().holders.contains_key(id)
    }

    /// Ask every holder to stop (graceful shutdown).
    pub fn stop_all(&self) {
        for holder in self.table().holders.values() {
            holder.stop.cancel();
        }
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

/// Proof of holding an upload's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct UploadGuard {
    locks: UploadLocks,
    id: UploadId,
    generation: u64,
    stop: CancellationToken,
    heartbeat: Heartbeat,
}

impl UploadGuard {
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
        let first = locks.try_lock(&id).unwrap();
        assert_eq!(locks.try_lock(&id).unwrap_err(), Busy);
        drop(first);
        assert!(locks.try_lock(&id).is_ok());
    }

    #[tokio::test]
    async fn takeover_asks_the_holder_to_stop_and_gets_the_lock() {
        let locks = UploadLocks::new();
        let id = UploadId::random();
        let holder = locks.try_lock(&id).unwrap();
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
        let holder = locks.try_lock(&id).unwrap();
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
        let holder = locks.try_lock(&id).unwrap();
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
        let holder = locks.try_lock(&id).unwrap();
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
        let _stubborn = locks.try_lock(&id).unwrap();
        let result = locks
            .lock_with_takeover(&id, Duration::from_millis(50))
            .await;
        assert_eq!(result.unwrap_err(), Busy);
    }
}
