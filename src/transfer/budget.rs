//! One global cap on the memory that PATCH buffers take together.
//!
//! Every append reserves its buffer's size before it allocates. When the budget is spent, a
//! new append waits a bounded time and is then refused (503 with Retry-After) instead of
//! queueing without bound or letting a flood of uploads exhaust memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Budget accounting unit: permits count KiB, so a u32-sized semaphore covers terabytes.
const UNIT: u64 = 1024;

/// The shared budget.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    permits: Arc<Semaphore>,
    total_units: u32,
}

/// A reservation; dropping it returns the memory to the budget.
#[derive(Debug)]
pub struct Reservation(#[allow(dead_code)] OwnedSemaphorePermit);

impl Reservation {
    /// Give back all but `bytes` (rounded up to whole units) at once. Shrinking never waits:
    /// a slow body must be able to let go of a large buffer even when the budget is spent,
    /// which is exactly when it matters.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = u32::try_from((bytes as u64).div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let held = u32::try_from(self.0.num_permits()).unwrap_or(u32::MAX);
        if held > keep {
            if let Some(excess) = self.0.split((held - keep) as usize) {
                drop(excess);
            }
        }
    }
}

impl BufferBudget {
    /// A budget of `total_bytes` (at least one unit).
    pub fn new(total_bytes: u64) -> BufferBudget {
        let units = (total_bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        let total_units = u32::try_from(units).unwrap_or(u32::MAX);
        BufferBudget {
            permits: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// Reserve `bytes`, waiting up to `wait`; `None` if the budget stayed spent.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Option<Reservation> {
        let wanted = (bytes as u64)
            .div_ceil(UNIT)
            .clamp(1, u64::from(self.total_units));
        let wanted = u32::try_from(wanted).unwrap_or(self.total_units);
        let acquire = Arc::clone(&self.permits).acquire_many_owned(wanted);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Some(Reservation(permit)),
            _ => None,
        }
    }

    /// Bytes currently reserved.
    pub fn in_use(&self) -> u64 {
        let free = self.permits.available_permits() as u64;
        (u64::from(self.total_units) - free) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_refuses_after_the_wait_and_recovers_on_release() {
        let budget = BufferBudget::new(512 * 1024);
        let a = budget.reserve(256 * 1024, Duration::ZERO).await.unwrap();
        let _b = budget.reserve(256 * 1024, Duration::ZERO).await.unwrap();
        assert_eq!(budget.in_use(), 512 * 1024);
        assert!(budget
            .reserve(256 * 1024, Duration::from_millis(20))
            .await
            .is_none());
        drop(a);
        assert!(budget.reserve(256 * 1024, Duration::ZERO).await.is_some());
    }

    #[tokio::test]
    async fn a_reservation_shrinks_even_when_the_budget_is_spent() {
        let budget = BufferBudget::new(1 << 20);
        let mut whole = budget.reserve(1 << 20, Duration::ZERO).await.unwrap();
        assert!(budget.reserve(16 << 10, Duration::ZERO).await.is_none());
        whole.shrink_to(16 << 10);
        assert_eq!(budget.in_use(), 16 << 10);
        assert!(budget.reserve(1008 << 10, Duration::ZERO).await.is_some());
    }
}
