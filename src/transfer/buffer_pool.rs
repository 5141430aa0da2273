//! Reusable request buffers in size classes from 16 KiB to 1 MiB, under the global budget.
//!
//! A PATCH takes a buffer of the class its [`policy`](super::policy) picks, fills it with body
//! frames and writes it whole. When the request ends the buffer goes back to its class's free
//! list, so in the steady state no PATCH allocates. Free lists are bounded, so memory a burst
//! needed is returned. Every buffer in use is covered by a [`Reservation`] of the shared
//! [`BufferBudget`]: that is the one cap on all PATCH buffering together. Within it, the
//! bodies from one client address may hold at most their share (`limits.max_buffer_share_percent`),
//! so that one address with hundreds of slow connections cannot starve everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use super::budget::{BufferBudget, Reservation};

/// Buffer sizes, smallest first.
pub const SIZE_CLASSES: [usize; 7] = [
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
];

/// Index of a size class in [`SIZE_CLASSES`].
pub type SizeClass = usize;

/// Idle buffers kept per class, at most this many bytes' worth (or one buffer, for the
/// largest classes).
const FREE_BYTES_PER_CLASS: usize = 2 << 20;

/// Hit/miss figures, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers handed out from a free list.
    pub hits: u64,
    /// Buffers that had to be allocated.
    pub misses: u64,
    /// Bytes idle in free lists now.
    pub idle_bytes: u64,
    /// Bytes reserved by buffers in use now.
    pub in_use_bytes: u64,
}

#[derive(Debug)]
struct Shared {
    free: Vec<Mutex<Vec<BytesMut>>>,
    budget: BufferBudget,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Bytes of buffers each client address holds now (addresses holding none are absent).
    held: Mutex<HashMap<IpAddr, usize>>,
    /// Most bytes one address may hold.
    share: usize,
}

/// The pool; cheap to clone.
#[derive(Debug, Clone)]
pub struct BufferPool {
    shared: Arc<Shared>,
}

impl BufferPool {
    /// A pool whose buffers in use never exceed `budget`.
    pub fn new(budget: BufferBudget) -> BufferPool {
        BufferPool::with_client_share(budget, usize::MAX)
    }

    /// Like [`new`](Self::new), where one client address holds at most `share` bytes.
    pub fn with_client_share(budget: BufferBudget, share: usize) -> BufferPool {
        BufferPool {
            shared: Arc::new(Shared {
                free: SIZE_CLASSES
                    .iter()
                    .map(|_| Mutex::new(Vec::new()))
                    .collect(),
                budget,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                held: Mutex::new(HashMap::new()),
                share: share.max(SIZE_CLASSES[0]),
            }),
        }
    }

    /// A buffer of `class`, waiting up to `wait` for budget; `None` when the budget stayed
    /// spent (the caller answers 503).
    pub async fn acquire(&self, class: SizeClass, wait: Duration) -> Option<PooledBuffer> {
        self.acquire_for(None, class, wait).await
    }

    /// A buffer of at most `class` for a body from `client`: the largest class that still
    /// fits in the address's share. `None` at once when not even the smallest does, or after
    /// `wait` when the budget stayed spent.
    pub async fn acquire_for(
        &self,
        client: Option<IpAddr>,
        class: SizeClass,
        wait: Duration,
    ) -> Option<PooledBuffer> {
        let mut class = class.min(SIZE_CLASSES.len() - 1);
        let hold = match client {
            None => None,
            Some(ip) => {
                let (fit, hold) = self.hold(ip, class)?;
                class = fit;
                Some(hold)
            }
        };
        let reservation = self
            .shared
            .budget
            .reserve(SIZE_CLASSES[class], wait)
            .await?;
        Some(self.take(class, reservation, hold))
    }

    /// Like [`acquire`](Self::acquire) without waiting.
    pub async fn try_acquire(&self, class: SizeClass) -> Option<PooledBuffer> {
        self.acquire(class, Duration::ZERO).await
    }

    /// Like [`acquire_for`](Self::acquire_for) without waiting: for growing a buffer
    /// mid-request, which simply keeps the smaller one when the budget is tight.
    pub async fn try_acquire_for(
        &self,
        client: Option<IpAddr>,
        class: SizeClass,
    ) -> Option<PooledBuffer> {
        self.acquire_for(client, class, Duration::ZERO).await
    }

    /// Count the largest class up to `class` that fits in `ip`'s share against it.
    fn hold(&self, ip: IpAddr, class: SizeClass) -> Option<(SizeClass, ClientHold)> {
        let mut held = self.shared.held.lock().unwrap_or_else(|p| p.into_inner());
        let now = held.get(&ip).copied().unwrap_or(0);
        let room = self.shared.share.saturating_sub(now);
        let fit = (0..=class).rev().find(|&c| SIZE_CLASSES[c] <= room)?;
        *held.entry(ip).or_default() += SIZE_CLASSES[fit];
        Some((
            fit,
            ClientHold {
                pool: self.clone(),
                ip,
                bytes: SIZE_CLASSES[fit],
            },
        ))
    }

    /// Bytes that `ip`'s buffers hold now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let held = self.shared.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&ip).copied().unwrap_or(0)
    }

    fn release(&self, ip: IpAddr, bytes: usize) {
        let mut held = self.shared.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(now) = held.get_mut(&ip) {
            *now = now.saturating_sub(bytes);
            if *now == 0 {
                held.remove(&ip);
            }
        }
    }

    fn take(
        &self,
        class: SizeClass,
        reservation: Reservation,
        hold: Option<ClientHold>,
    ) -> PooledBuffer {
        PooledBuffer {
            buffer: Some(self.fresh(class)),
            class,
            pool: self.clone(),
            reservation,
            hold,
        }
    }

    /// An empty buffer of `class`: from the free list if one is there.
    fn fresh(&self, class: SizeClass) -> BytesMut {
        let reused = self.shared.free[class]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match reused {
            Some(buffer) => {
                self.shared.hits.fetch_add(1, Ordering::Relaxed);
                buffer
            }
            None => {
                self.shared.misses.fetch_add(1, Ordering::Relaxed);
                BytesMut::with_capacity(SIZE_CLASSES[class])
            }
        }
    }

    fn give_back(&self, class: SizeClass, mut buffer: BytesMut) {
        // A buffer that lost capacity (split off, or never got it back from a failed write)
        // is not worth keeping.
        if buffer.capacity() < SIZE_CLASSES[class] {
            return;
        }
        buffer.clear();
        let mut free = self.shared.free[class]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if free.is_empty() || (free.len() + 1) * SIZE_CLASSES[class] <= FREE_BYTES_PER_CLASS {
            free.push(buffer);
        }
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        let idle_bytes = self
            .shared
            .free
            .iter()
            .zip(SIZE_CLASSES)
            .map(|(free, size)| {
                (free.lock().unwrap_or_else(|p| p.into_inner()).len() * size) as u64
            })
            .sum();
        PoolStats {
            hits: self.shared.hits.load(Ordering::Relaxed),
            misses: self.shared.misses.load(Ordering::Relaxed),
            idle_bytes,
            in_use_bytes: self.shared.budget.in_use(),
        }
    }
}

/// What one buffer counts against its client's share; given back when dropped.
#[derive(Debug)]
struct ClientHold {
    pool: BufferPool,
    ip: IpAddr,
    bytes: usize,
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        self.pool.release(self.ip, self.bytes);
    }
}

/// A buffer on loan from the pool; it returns there when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    /// `None` only while the bytes are out at a write (see [`PooledBuffer::lend`]).
    buffer: Option<BytesMut>,
    class: SizeClass,
    pool: BufferPool,
    reservation: Reservation,
    hold: Option<ClientHold>,
}

impl PooledBuffer {
    /// This buffer's size class.
    pub fn class(&self) -> SizeClass {
        self.class
    }

    /// Its size in bytes.
    pub fn size(&self) -> usize {
        SIZE_CLASSES[self.class]
    }

    /// Become a buffer of the smaller `class`, giving the difference back to the budget and
    /// the client's share at once; never waits and never fails. Only for an empty buffer
    /// (between writes): gathered bytes would be dropped.
    pub fn shrink_to(&mut self, class: SizeClass) {
        if class >= self.class {
            return;
        }
        if let Some(old) = self.buffer.take() {
            self.pool.give_back(self.class, old);
        }
        self.class = class;
        self.buffer = Some(self.pool.fresh(class));
        self.reservation.shrink_to(SIZE_CLASSES[class]);
        if let Some(hold) = &mut self.hold {
            let excess = hold.bytes.saturating_sub(SIZE_CLASSES[class]);
            hold.bytes -= excess;
            self.pool.release(hold.ip, excess);
        }
    }

    /// The bytes gathered so far.
    pub fn bytes(&mut self) -> &mut BytesMut {
        self.buffer.get_or_insert_with(BytesMut::new)
    }

    /// Hand the bytes to a write that needs to own them; put them back with [`restore`].
    ///
    /// [`restore`]: PooledBuffer::restore
    pub fn lend(&mut self) -> BytesMut {
        self.buffer.take().unwrap_or_default()
    }

    /// Take back the bytes lent out, emptied for the next fill.
    pub fn restore(&mut self, mut bytes: BytesMut) {
        bytes.clear();
        self.buffer = Some(bytes);
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(self.class, buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_are_reused_in_the_steady_state() {
        let pool = BufferPool::new(BufferBudget::new(4 << 20));
        for _ in 0..10 {
            let mut buffer = pool.acquire(4, Duration::ZERO).await.unwrap();
            assert_eq!(buffer.size(), 256 << 10);
            buffer.bytes().extend_from_slice(b"data");
        }
        let stats = pool.stats();
        assert_eq!(stats.misses, 1, "{stats:?}");
        assert_eq!(stats.hits, 9, "{stats:?}");
        assert_eq!(stats.in_use_bytes, 0);
        assert_eq!(stats.idle_bytes, 256 << 10);
    }

    #[tokio::test]
    async fn the_budget_bounds_buffers_in_use() {
        let pool = BufferPool::new(BufferBudget::new(2 << 20));
        let a = pool.acquire(6, Duration::ZERO).await.unwrap();
        let b = pool.acquire(6, Duration::ZERO).await.unwrap();
        assert!(pool.try_acquire(0).await.is_none(), "budget exceeded");
        drop(a);
        assert!(pool.try_acquire(6).await.is_some());
        drop(b);
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        let pool = BufferPool::with_client_share(BufferBudget::new(4 << 20), 1 << 20);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let big = pool.acquire_for(Some(a), 6, Duration::ZERO).await.unwrap();
        assert_eq!(big.size(), 1 << 20);
        assert!(
            pool.acquire_for(Some(a), 0, Duration::ZERO).await.is_none(),
            "the share is spent"
        );
        // Another address is not affected.
        let other = pool.acquire_for(Some(b), 6, Duration::ZERO).await.unwrap();
        assert_eq!(other.size(), 1 << 20);
        drop(big);
        assert_eq!(pool.held_by(a), 0);
        // Asking for more than is left gives the largest class that fits.
        let _quarter = pool.acquire_for(Some(a), 4, Duration::ZERO).await.unwrap();
        let rest = pool.acquire_for(Some(a), 6, Duration::ZERO).await.unwrap();
        assert_eq!(rest.size(), 512 << 10);
        assert_eq!(pool.held_by(a), (256 << 10) + (512 << 10));
    }

    #[tokio::test]
    async fn shrinking_returns_budget_and_share_at_once() {
        let pool = BufferPool::with_client_share(BufferBudget::new(1 << 20), 1 << 20);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut buffer = pool.acquire_for(Some(a), 6, Duration::ZERO).await.unwrap();
        assert!(pool.try_acquire(0).await.is_none(), "budget spent");
        buffer.shrink_to(0);
        assert_eq!(buffer.size(), 16 << 10);
        assert!(buffer.bytes().capacity() >= 16 << 10);
        assert_eq!(pool.stats().in_use_bytes, 16 << 10);
        assert_eq!(pool.held_by(a), 16 << 10);
        drop(buffer);
        assert_eq!(pool.held_by(a), 0);
        assert_eq!(pool.stats().in_use_bytes, 0);
    }

    #[tokio::test]
    async fn lent_bytes_come_back_empty() {
        let pool = BufferPool::new(BufferBudget::new(1 << 20));
        let mut buffer = pool.acquire(0, Duration::ZERO).await.unwrap();
        buffer.bytes().extend_from_slice(&[7; 100]);
        let lent = buffer.lend();
        assert_eq!(lent.len(), 100);
        buffer.restore(lent);
        assert!(buffer.bytes().is_empty());
        assert!(buffer.bytes().capacity() >= 16 << 10);
    }
}
