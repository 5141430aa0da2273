//! One writer per upload, and a way to ask that writer to stop.
//!
//! A PATCH holds its upload's lock for the whole request. A phone that switched from Wi-Fi to
//! LTE leaves a half-open connection whose PATCH still holds the lock; the phone's new request
//! must not wait for a TCP timeout. So a holder carries a [`CancellationToken`]: a newer request
//! cancels it, the holder commits the bytes it has and drops its guard, and the newer request
//! proceeds (tusd's `requestUnlock` idea).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::upload::UploadId;

/// The upload is held by another request that did not let go in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upload is locked by another request")]
pub struct Busy;

#[derive(Debug)]
struct Holder {
    /// Tells this holder's guard from a later holder's when it drops.
    generation: u64,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct Table {
    holders: HashMap<UploadId, Holder>,
    next_generation: u64,
}

/// The lock table of one process.
#[derive(Debug, Clone, Default)]
pub struct UploadLocks {
    table: Arc<Mutex<Table>>,
    released: Arc<Notify>,
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
        table.holders.insert(
            id.clone(),
            Holder {
                generation,
                stop: stop.clone(),
            },
        );
        Ok(UploadGuard {
            locks: self.clone(),
            id: id.clone(),
            generation,
            stop,
        })
    }

    /// Take the lock, asking a current holder to stop and waiting up to `wait` for it to
    /// commit and let go.
    ///
    /// # Errors
    /// [`Busy`] when the holder did not let go within `wait`.
    pub async fn lock_with_takeover(
        &self,
        id: &UploadId,
        wait: Duration,
    ) -> Result<UploadGuard, Busy> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before checking, so a release between check and wait is seen.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            match self.try_lock(id) {
                Ok(guard) => return Ok(guard),
                Err(Busy) => self.request_stop(id),
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.try_lock(id);
            }
        }
    }

    /// Ask the current holder of `id`, if any, to stop.
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
}

impl UploadGuard {
    /// Cancelled when a newer request (or shutdown) asks this holder to stop.
    pub fn stop_requested(&self) -> CancellationToken {
        self.stop.clone()
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
