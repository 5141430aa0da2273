//! Per-owner accounting: creations in the last hour, and which uploads each owner still has
//! unfinished (their outstanding bytes are the owner's bytes in flight).
//!
//! The ledger keeps ids, not byte counts: whoever asks for the bytes in flight reads the
//! current records, so a PATCH, a DELETE or the expiry sweeper never has to keep a counter in
//! step, and an id whose record is gone or finished simply drops out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::upload::UploadId;

/// The rate window: "uploads per hour".
pub const WINDOW_SECS: u64 = 3600;

#[derive(Debug, Default)]
struct OwnerUsage {
    /// Unix seconds of creations within the window, oldest first.
    creations: VecDeque<u64>,
    /// Uploads that may still be unfinished.
    unfinished: HashSet<UploadId>,
}

/// What every owner has been doing.
#[derive(Debug, Default)]
pub struct OwnerLedger {
    owners: Mutex<HashMap<String, OwnerUsage>>,
}

impl OwnerLedger {
    /// An empty ledger.
    pub fn new() -> OwnerLedger {
        OwnerLedger::default()
    }

    /// Note an existing upload (at start-up, from the stored records).
    pub fn restore(&self, owner: &str, id: UploadId, created_at: u64, finished: bool, now: u64) {
        let mut owners = self.lock();
        let usage = owners.entry(owner.to_owned()).or_default();
        if now.saturating_sub(created_at) < WINDOW_SECS {
            let at = usage.creations.partition_point(|&t| t <= created_at);
            usage.creations.insert(at, created_at);
        }
        if !finished {
            usage.unfinished.insert(id);
        }
    }

    /// Count one creation at `now` if fewer than `per_hour` happened in the last hour.
    ///
    /// # Errors
    /// The seconds until the oldest creation in the window leaves it (at least 1).
    pub fn admit_creation(&self, owner: &str, per_hour: u32, now: u64) -> Result<(), u64> {
        let mut owners = self.lock();
        let usage = owners.entry(owner.to_owned()).or_default();
        while usage
            .creations
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= WINDOW_SECS)
        {
            usage.creations.pop_front();
        }
        if usage.creations.len() >= per_hour as usize {
            let oldest = usage.creations.front().copied().unwrap_or(now);
            return Err((oldest + WINDOW_SECS).saturating_sub(now).max(1));
        }
        usage.creations.push_back(now);
        Ok(())
    }

    /// Remember that `owner` has a new unfinished upload.
    pub fn started(&self, owner: &str, id: UploadId) {
        self.lock()
            .entry(owner.to_owned())
            .or_default()
            .unfinished
            .insert(id);
    }

    /// The uploads of `owner` that may still be unfinished.
    pub fn unfinished(&self, owner: &str) -> Vec<UploadId> {
        self.lock()
            .get(owner)
            .map(|usage| usage.unfinished.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drop ids found finished or gone; owners with nothing left are forgotten.
    pub fn settled(&self, owner: &str, ids: &[UploadId]) {
        let mut owners = self.lock();
        if let Some(usage) = owners.get_mut(owner) {
            for id in ids {
                usage.unfinished.remove(id);
            }
            if usage.unfinished.is_empty() && usage.creations.is_empty() {
                owners.remove(owner);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnerUsage>> {
        // A panic elsewhere cannot leave these sets half-updated in a harmful way.
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hourly_window_admits_then_refuses_then_slides() {
        let ledger = OwnerLedger::new();
        assert_eq!(ledger.admit_creation("a", 2, 1000), Ok(()));
        assert_eq!(ledger.admit_creation("a", 2, 1100), Ok(()));
        assert_eq!(ledger.admit_creation("a", 2, 1200), Err(3400));
        assert_eq!(ledger.admit_creation("b", 2, 1200), Ok(()));
        assert_eq!(ledger.admit_creation("a", 2, 4600), Ok(()));
    }

    #[test]
    fn restored_creations_count_against_the_window() {
        let ledger = OwnerLedger::new();
        ledger.restore("a", UploadId::random(), 900, true, 1000);
        ledger.restore("a", UploadId::random(), 10, false, 5000);
        assert_eq!(ledger.admit_creation("a", 1, 1000), Err(3500));
        assert_eq!(ledger.unfinished("a").len(), 1);
    }

    #[test]
    fn settled_uploads_leave_the_unfinished_set() {
        let ledger = OwnerLedger::new();
        let id = UploadId::random();
        ledger.started("a", id.clone());
        assert_eq!(ledger.unfinished("a"), vec![id.clone()]);
        ledger.settled("a", &[id]);
        assert!(ledger.unfinished("a").is_empty());
    }
}
