//! The copy loop of a PATCH: body frames -> one buffer -> checksum tee -> positional writes.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use super::buffer_pool::{BufferPool, PooledBuffer, SizeClass};
use super::policy::Adapter;
use crate::checksum::Hasher;
use crate::storage::{BlobWriter, StoreError};

/// Frames at least this large are written without being gathered, whatever the buffer size:
/// a syscall per 64 KiB is already cheap next to copying the bytes (a 1 MiB buffer would
/// otherwise copy hyper's frames, which are rarely over 512 KiB).
const DIRECT_WRITE_FRAME: usize = 64 * 1024;

/// Gathered bytes older than this are written even though the buffer is not full, so that a
/// slow body's buffer is measured (and shrunk) within a second or two instead of pinning its
/// starting size until it fills: at 16 KiB/s a 64 KiB buffer took 4 s per fill, and a
/// thousand such uploads held 64 MiB. A fast body fills its buffer long before this.
const STALE_GATHER: Duration = Duration::from_millis(500);

/// A request's pooled buffer and the adapter that re-sizes it as the body's rate is measured.
#[derive(Debug)]
pub struct AdaptiveBuffer {
    pool: BufferPool,
    buffer: PooledBuffer,
    adapter: Adapter,
    /// When the previous write ended: rates are measured from write to write, so they cover
    /// both receiving and writing.
    last_write: Instant,
    /// Whose share of the budget the buffer counts against.
    client: Option<IpAddr>,
    /// The minimum body rate, if one applies.
    floor: Option<RateFloor>,
}

/// A body must bring at least `min_rate` bytes per second, averaged over each `window`
/// (`limits.min_body_rate`): a trickle of a byte every few seconds passes the idle timeout
/// forever, holding a connection, a buffer and the upload's lock.
#[derive(Debug, Clone, Copy)]
pub struct RateFloor {
    min_rate: u64,
    window: Duration,
    since: Instant,
    bytes: u64,
}

impl RateFloor {
    /// At least `min_rate` bytes per second over every `window`, from now.
    pub fn new(min_rate: u64, window: Duration) -> RateFloor {
        RateFloor {
            min_rate,
            window,
            since: Instant::now(),
            bytes: 0,
        }
    }

    fn window_end(&self) -> Instant {
        self.since + self.window
    }

    /// At the end of a window: whether the body fell short; if not, a new window starts.
    fn fell_short(&mut self) -> bool {
        let wanted = (self.min_rate as f64 * self.window.as_secs_f64()) as u64;
        if self.bytes < wanted {
            return true;
        }
        self.since = Instant::now();
        self.bytes = 0;
        false
    }
}

impl AdaptiveBuffer {
    /// Take a buffer of `class` from `pool`, waiting up to `wait` for budget; `adaptive`
    /// false keeps that size for the whole request.
    pub async fn acquire(
        pool: &BufferPool,
        class: SizeClass,
        adaptive: bool,
        wait: Duration,
    ) -> Option<Self> {
        Self::acquire_for(pool, None, class, adaptive, wait).await
    }

    /// Like [`acquire`](Self::acquire), counted against `client`'s share of the budget (the
    /// class may come out smaller to fit it).
    pub async fn acquire_for(
        pool: &BufferPool,
        client: Option<IpAddr>,
        class: SizeClass,
        adaptive: bool,
        wait: Duration,
    ) -> Option<Self> {
        let buffer = pool.acquire_for(client, class, wait).await?;
        let adapter = if adaptive {
            Adapter::new(buffer.class())
        } else {
            Adapter::fixed(buffer.class())
        };
        Some(AdaptiveBuffer {
            pool: pool.clone(),
            adapter,
            buffer,
            last_write: Instant::now(),
            client,
            floor: None,
        })
    }

    /// Hold the body to a minimum rate from now on (for the whole request, checkpoints
    /// included).
    pub fn set_rate_floor(&mut self, floor: RateFloor) {
        self.floor = Some(floor);
    }

    /// The measurements so far.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// Current buffer size.
    pub fn size(&self) -> usize {
        self.buffer.size()
    }

    /// After a write of `bytes`: re-size if the policy says so and the budget allows (growing
    /// never waits; shrinking always works).
    async fn after_write(&mut self, bytes: u64) {
        let now = Instant::now();
        let elapsed = now - self.last_write;
        self.last_write = now;
        let Some(class) = self.adapter.observe(bytes, elapsed) else {
            return;
        };
        // The old buffer is empty here (it was just written), so nothing is lost either way.
        if class < self.buffer.class() {
            self.buffer.shrink_to(class);
        } else if let Some(resized) = self.pool.try_acquire_for(self.client, class).await {
            // The client's share may allow less than asked: only a larger buffer is worth it.
            if resized.class() > self.buffer.class() {
                self.buffer = resized;
            }
        }
    }
}

/// What one append should do.
#[derive(Debug)]
pub struct AppendPlan {
    /// Offset of the first byte of the body in the blob.
    pub start: u64,
    /// Most bytes the body may carry; one more and the append ends with [`AppendEnd::TooLarge`].
    pub max_bytes: u64,
    /// A body that sends nothing for this long ends with [`AppendEnd::IdleTimeout`].
    pub idle_timeout: Duration,
    /// Cancelled when a newer request (or shutdown) wants this upload.
    pub stop: CancellationToken,
    /// When to hand control back so the caller can make progress durable mid-body
    /// ([`AppendEnd::Checkpoint`]); `None` for all-or-nothing appends (checksums).
    pub checkpoint: Option<CheckpointPolicy>,
    /// An optional cap on the whole request's duration.
    pub deadline: Option<Instant>,
}

/// How often a long body is committed while it is still arriving, so a crash or a cut
/// loses at most this much progress.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    /// Commit after this many bytes...
    pub bytes: u64,
    /// ...or after this long with at least one new byte.
    pub interval: Duration,
}

impl CheckpointPolicy {
    /// 64 MiB or 5 s: a few fsyncs per GiB for fast clients, a bounded loss for slow ones.
    pub const DEFAULT: CheckpointPolicy = CheckpointPolicy {
        bytes: 64 << 20,
        interval: Duration::from_secs(5),
    };
}

/// How an append ended.
#[derive(Debug)]
pub enum AppendEnd {
    /// The body ended normally.
    Complete,
    /// The body carried more than `max_bytes`.
    TooLarge,
    /// The client's connection broke.
    Interrupted(io::Error),
    /// No body byte arrived within the idle timeout.
    IdleTimeout,
    /// A newer request asked this one to stop.
    Stopped,
    /// Writing to storage failed.
    WriteFailed(StoreError),
    /// The checkpoint policy says: commit what was written, then call again to go on.
    Checkpoint,
    /// The request's deadline passed.
    DeadlineReached,
    /// The body arrived slower than its [`RateFloor`] over a whole window.
    TooSlow,
}

/// The result of an append: how far it got, and why it ended.
#[derive(Debug)]
pub struct AppendOutcome {
    /// Bytes written to storage at `start..start + written` (not yet synced).
    pub written: u64,
    /// Why it ended.
    pub end: AppendEnd,
}

/// Copy `body` into `writer` at `plan.start`, hashing into `hasher` in order and calling
/// `on_frame` with the offset received so far for every frame (the lock's heartbeat, progress).
///
/// Every byte received before the body ended is written before this returns (except after
/// [`AppendEnd::TooLarge`] and [`AppendEnd::WriteFailed`], which the caller discards anyway),
/// so the caller can commit `written` bytes. After [`AppendEnd::Checkpoint`] the body is
/// intact: commit, then call again with the new start.
pub async fn append<S>(
    body: &mut S,
    writer: &mut dyn BlobWriter,
    plan: AppendPlan,
    buffer: &mut AdaptiveBuffer,
    mut hasher: Option<&mut Hasher>,
    on_frame: &(dyn Fn(u64) + Send + Sync),
) -> AppendOutcome
where
    S: Stream<Item = io::Result<Bytes>> + Unpin + ?Sized,
{
    let mut received: u64 = 0;
    let mut written: u64 = 0;
    let started = Instant::now();
    let deadline = plan.deadline;

    let end = loop {
        // No checkpoint once the body may carry nothing more: its end is next, and the end's
        // commit is the one that finishes the upload (and asks the pre-finish hook).
        if let Some(policy) = plan.checkpoint.filter(|_| received < plan.max_bytes) {
            // Gathered bytes count too: a slow body may not fill a buffer within the interval,
            // and its bytes are written on the way out anyway.
            let taken = written + buffer.buffer.bytes().len() as u64;
            if taken >= policy.bytes || (taken > 0 && started.elapsed() >= policy.interval) {
                break AppendEnd::Checkpoint;
            }
        }
        let window_end = buffer.floor.as_ref().map(RateFloor::window_end);
        let next = tokio::select! {
            biased;
            () = plan.stop.cancelled() => break AppendEnd::Stopped,
            () = sleep_until_deadline(deadline) => break AppendEnd::DeadlineReached,
            () = sleep_until_deadline(window_end) => {
                if buffer.floor.as_mut().is_some_and(RateFloor::fell_short) {
                    break AppendEnd::TooSlow;
                }
                continue;
            }
            next = tokio::time::timeout(plan.idle_timeout, body.next()) => next,
        };
        let frame = match next {
            Err(_elapsed) => break AppendEnd::IdleTimeout,
            Ok(None) => break AppendEnd::Complete,
            Ok(Some(Err(err))) => break AppendEnd::Interrupted(err),
            Ok(Some(Ok(frame))) => frame,
        };
        received += frame.len() as u64;
        if let Some(floor) = &mut buffer.floor {
            floor.bytes += frame.len() as u64;
        }
        on_frame(plan.start + received);
        if received > plan.max_bytes {
            return AppendOutcome {
                written,
                end: AppendEnd::TooLarge,
            };
        }
        if let Some(hasher) = hasher.as_deref_mut() {
            hasher.update(&frame);
        }
        if frame.len() >= (buffer.size() / 2).min(DIRECT_WRITE_FRAME) {
            // A large frame (fast clients deliver them) is written where it lies, behind what
            // was gathered, in one call: copying it into the buffer first would cost a memcpy
            // of every byte, which is most of this loop's CPU on a fast link.
            match flush_with(writer, buffer, frame, plan.start + written).await {
                Ok(n) => written += n,
                Err(err) => {
                    return AppendOutcome {
                        written,
                        end: AppendEnd::WriteFailed(err),
                    }
                }
            }
            continue;
        }
        let mut frame = &frame[..];
        while !frame.is_empty() {
            let size = buffer.size();
            let gathered = buffer.buffer.bytes();
            let take = (size - gathered.len().min(size)).min(frame.len());
            gathered.extend_from_slice(&frame[..take]);
            frame = &frame[take..];
            let stale = frame.is_empty() && buffer.last_write.elapsed() >= STALE_GATHER;
            if gathered.len() >= size || stale {
                match flush(writer, buffer, plan.start + written).await {
                    Ok(n) => written += n,
                    Err(err) => {
                        return AppendOutcome {
                            written,
                            end: AppendEnd::WriteFailed(err),
                        }
                    }
                }
            }
        }
    };

    // Whatever ended the body, the bytes already received are written so they can be kept.
    if !buffer.buffer.bytes().is_empty() {
        match flush(writer, buffer, plan.start + written).await {
            Ok(n) => written += n,
            Err(err) => {
                return AppendOutcome {
                    written,
                    end: AppendEnd::WriteFailed(err),
                }
            }
        }
    }
    AppendOutcome { written, end }
}

/// Write the gathered bytes at `offset`, then let the buffer adapt; returns the count written.
async fn flush(
    writer: &mut dyn BlobWriter,
    buffer: &mut AdaptiveBuffer,
    offset: u64,
) -> Result<u64, StoreError> {
    let bytes = buffer.buffer.lend();
    let len = bytes.len() as u64;
    let (bytes, result) = writer.write_at(bytes, offset).await;
    buffer.buffer.restore(bytes);
    result?;
    buffer.after_write(len).await;
    Ok(len)
}

/// Write the gathered bytes and then `tail` at `offset`, then let the buffer adapt; returns
/// the count written.
async fn flush_with(
    writer: &mut dyn BlobWriter,
    buffer: &mut AdaptiveBuffer,
    tail: Bytes,
    offset: u64,
) -> Result<u64, StoreError> {
    let head = buffer.buffer.lend();
    let len = (head.len() + tail.len()) as u64;
    let (head, result) = writer.write_pair_at(head, tail, offset).await;
    buffer.buffer.restore(head);
    result?;
    buffer.after_write(len).await;
    Ok(len)
}

/// Resolves at the deadline, or never.
async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::FsBlobStore;
    use crate::storage::BlobStore;
    use crate::transfer::budget::BufferBudget;
    use crate::upload::UploadId;
    use bytes::BytesMut;

    fn plan(start: u64, max_bytes: u64) -> AppendPlan {
        AppendPlan {
            start,
            max_bytes,
            idle_timeout: Duration::from_secs(5),
            stop: CancellationToken::new(),
            checkpoint: None,
            deadline: None,
        }
    }

    fn no_heartbeat(_received_to: u64) {}

    /// The smallest pooled buffer (16 KiB), so frames straddle buffer boundaries.
    async fn small_buffer() -> AdaptiveBuffer {
        let pool = BufferPool::new(BufferBudget::new(16 << 20));
        AdaptiveBuffer::acquire(&pool, 0, true, Duration::ZERO)
            .await
            .unwrap()
    }

    async fn store_with_upload() -> (tempfile::TempDir, FsBlobStore, UploadId) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let id = UploadId::random();
        store.create(&id).await.unwrap();
        (dir, store, id)
    }

    async fn contents(store: &FsBlobStore, id: &UploadId) -> Vec<u8> {
        std::fs::read(store.path(id)).unwrap()
    }

    #[tokio::test]
    async fn frames_of_any_size_land_in_order_at_the_start_offset() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        writer
            .write_at(BytesMut::from(&b"ab"[..]), 0)
            .await
            .1
            .unwrap();
        let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        // Small frames are gathered; frames of half the buffer (8 KiB here) and more are
        // written where they lie, behind what was gathered: mix both, around the threshold.
        let sizes = [777, 20_000, 3, 8_191, 8_192, 100_000, 16_384, 1, 9_000];
        let mut frames: Vec<io::Result<Bytes>> = Vec::new();
        let mut rest = &data[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (frame, tail) = rest.split_at((*size).min(rest.len()));
            frames.push(Ok(Bytes::copy_from_slice(frame)));
            rest = tail;
        }
        let outcome = append(
            &mut futures_util::stream::iter(frames),
            writer.as_mut(),
            plan(2, 400_000),
            &mut small_buffer().await,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(matches!(outcome.end, AppendEnd::Complete));
        assert_eq!(outcome.written, 400_000);
        let stored = contents(&store, &id).await;
        assert_eq!(&stored[..2], b"ab");
        assert_eq!(&stored[2..], &data[..]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_is_written_before_its_buffer_fills_and_the_buffer_shrinks() {
        // 4 KiB every 250 ms (16 KiB/s, the bench's slow phones) into a 64 KiB buffer.
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let pool = BufferPool::new(BufferBudget::new(16 << 20));
        let start = crate::transfer::policy::class_of(64 << 10);
        let mut buffer = AdaptiveBuffer::acquire(&pool, start, true, Duration::ZERO)
            .await
            .unwrap();
        let frames = futures_util::stream::unfold(0u8, |i| async move {
            if i == 16 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            Some((Ok::<_, io::Error>(Bytes::from(vec![i; 4096])), i + 1))
        });
        let mut body = Box::pin(frames);
        let outcome = append(
            &mut body,
            writer.as_mut(),
            plan(0, 16 * 4096),
            &mut buffer,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(matches!(outcome.end, AppendEnd::Complete));
        assert_eq!(outcome.written, 16 * 4096);
        assert!(
            buffer.size() < 64 << 10,
            "after 4 s at 16 KiB/s the buffer is still {} bytes",
            buffer.size()
        );
        let expected: Vec<u8> = (0..16u8).flat_map(|i| vec![i; 4096]).collect();
        assert_eq!(contents(&store, &id).await, expected);
    }

    /// A body of `frames` one-byte frames, one every 300 ms (issue 23's trickle).
    fn trickle(frames: u32) -> impl Stream<Item = io::Result<Bytes>> {
        futures_util::stream::unfold(0u32, move |i| async move {
            if i == frames {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Some((Ok::<_, io::Error>(Bytes::from_static(b"t")), i + 1))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_lets_go_of_a_large_buffer_even_when_the_budget_is_spent() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        // One 1 MiB buffer takes the whole budget (sized up by an earlier fast upload).
        let pool = BufferPool::new(BufferBudget::new(1 << 20));
        let top = crate::transfer::buffer_pool::SIZE_CLASSES.len() - 1;
        let mut buffer = AdaptiveBuffer::acquire(&pool, top, true, Duration::ZERO)
            .await
            .unwrap();
        assert!(pool.try_acquire(0).await.is_none(), "budget spent");
        let began = Instant::now();
        let mut body = Box::pin(trickle(10));
        let outcome = append(
            &mut body,
            writer.as_mut(),
            plan(0, 100),
            &mut buffer,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(matches!(outcome.end, AppendEnd::Complete));
        assert_eq!(outcome.written, 10);
        assert!(began.elapsed() <= Duration::from_secs(4));
        assert_eq!(buffer.size(), 16 << 10, "still holding a large buffer");
        assert_eq!(pool.stats().in_use_bytes, 16 << 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_below_the_rate_floor_ends_with_its_bytes_written() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let mut buffer = small_buffer().await;
        buffer.set_rate_floor(RateFloor::new(1024, Duration::from_secs(60)));
        let began = Instant::now();
        // Far more frames than a minute holds: the floor, not the body, ends it.
        let mut body = Box::pin(trickle(1000));
        let outcome = append(
            &mut body,
            writer.as_mut(),
            plan(0, 10_000),
            &mut buffer,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(
            matches!(outcome.end, AppendEnd::TooSlow),
            "{:?}",
            outcome.end
        );
        let took = began.elapsed();
        assert!(
            (Duration::from_secs(60)..Duration::from_secs(61)).contains(&took),
            "{took:?}"
        );
        // 200 frames arrived in the minute (the last perhaps at its very end).
        assert!(
            (199..=200).contains(&outcome.written),
            "{}",
            outcome.written
        );
        assert_eq!(
            contents(&store, &id).await,
            vec![b't'; outcome.written as usize]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_above_the_rate_floor_runs_past_many_windows() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let mut buffer = small_buffer().await;
        buffer.set_rate_floor(RateFloor::new(1024, Duration::from_secs(10)));
        // 2 KiB every second for 35 s: 3 windows passed, the 4th cut short by the end.
        let frames = futures_util::stream::unfold(0u32, |i| async move {
            if i == 35 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, io::Error>(Bytes::from(vec![7u8; 2048])), i + 1))
        });
        let mut body = Box::pin(frames);
        let outcome = append(
            &mut body,
            writer.as_mut(),
            plan(0, 1 << 20),
            &mut buffer,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(
            matches!(outcome.end, AppendEnd::Complete),
            "{:?}",
            outcome.end
        );
        assert_eq!(outcome.written, 35 * 2048);
    }

    #[tokio::test]
    async fn an_interrupted_body_keeps_what_arrived() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let frames: Vec<io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"wor")),
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")),
        ];
        let outcome = append(
            &mut futures_util::stream::iter(frames),
            writer.as_mut(),
            plan(0, 100),
            &mut small_buffer().await,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(matches!(outcome.end, AppendEnd::Interrupted(_)));
        assert_eq!(outcome.written, 9);
        assert_eq!(contents(&store, &id).await, b"hello wor");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let frames: Vec<io::Result<Bytes>> = vec![Ok(Bytes::from_static(b"0123456789"))];
        let outcome = append(
            &mut futures_util::stream::iter(frames),
            writer.as_mut(),
            plan(0, 9),
            &mut small_buffer().await,
            None,
            &no_heartbeat,
        )
        .await;
        assert!(matches!(outcome.end, AppendEnd::TooLarge));
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_append_with_its_bytes_written() {
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let p = plan(0, 100);
        let stop = p.stop.clone();
        // One frame, then a body that never ends (a half-open connection).
        let mut body = futures_util::stream::iter(vec![Ok(Bytes::from_static(b"kept"))])
            .chain(futures_util::stream::pending());
        let mut buffer = small_buffer().await;
        let task = async {
            append(
                &mut body,
                writer.as_mut(),
                p,
                &mut buffer,
                None,
                &no_heartbeat,
            )
            .await
        };
        let canceller = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        };
        let (outcome, ()) = tokio::join!(task, canceller);
        assert!(matches!(outcome.end, AppendEnd::Stopped));
        assert_eq!(outcome.written, 4);
        assert_eq!(contents(&store, &id).await, b"kept");
    }

    #[tokio::test]
    async fn checkpoints_hand_back_control_and_the_body_continues() {
        const FRAME: usize = 16 << 10;
        let (_dir, store, id) = store_with_upload().await;
        let mut writer = store.writer(&id).await.unwrap();
        let frames: Vec<io::Result<Bytes>> =
            (0..10u8).map(|i| Ok(Bytes::from(vec![i; FRAME]))).collect();
        let total = (10 * FRAME) as u64;
        let mut body = futures_util::stream::iter(frames);
        let mut buffer = small_buffer().await;
        let mut start = 0;
        let mut rounds = 0;
        loop {
            let mut p = plan(start, total - start);
            p.checkpoint = Some(CheckpointPolicy {
                bytes: 3 * FRAME as u64,
                interval: Duration::from_secs(60),
            });
            let outcome = append(
                &mut body,
                writer.as_mut(),
                p,
                &mut buffer,
                None,
                &no_heartbeat,
            )
            .await;
            start += outcome.written;
            rounds += 1;
            match outcome.end {
                AppendEnd::Checkpoint => assert_eq!(outcome.written, 3 * FRAME as u64),
                AppendEnd::Complete => break,
                other => panic!("unexpected end {other:?}"),
            }
        }
        assert_eq!(start, total);
        assert_eq!(rounds, 4);
        let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![i; FRAME]).collect();
        assert_eq!(contents(&store, &id).await, expected);
    }
}
