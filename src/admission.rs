//! Admission limits that hold in every auth mode: creations per client address (a token
//! bucket), open connections, and logs of refusals that cannot themselves flood the log.
//!
//! Per-owner limits (token mode) live in [`crate::auth::limits`]; these are the floor that
//! also protects an open server (issue 23: 100k creations in 22 s, 9,000 idle connections).

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A refusal is logged at most once per this interval (per kind), with the count suppressed.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Addresses whose buckets are remembered; the least recently seen are forgotten first (a
/// forgotten address starts again with a full burst, which is all it could lose).
const TRACKED_ADDRESSES: usize = 65_536;

/// Logs one kind of refusal at most once per [`LOG_INTERVAL`]: a flood of refusals is what
/// these limits are for, and each must not cost a log line.
#[derive(Debug)]
pub struct LogThrottle {
    started: Instant,
    /// Milliseconds after `started` of the last line written, plus one (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle {
            started: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogThrottle {
    /// Whether to log now; when it is, also how many refusals went unlogged since the last
    /// line.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let interval = LOG_INTERVAL.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < interval {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Only one of several racing callers wins the line.
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// Call `log` (given the count of refusals not logged since the last line) if `throttle`
/// allows a line now.
pub fn note_refusal(throttle: &LogThrottle, log: impl FnOnce(u64)) {
    if let Some(suppressed) = throttle.allow() {
        log(suppressed);
    }
}

/// One address's token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Creations per client address: `rate` per second on average, `burst` at once.
#[derive(Debug)]
pub struct CreationLimiter {
    rate: f64,
    burst: f64,
    exempt: Vec<IpNet>,
    buckets: Mutex<LruCache<IpAddr, Bucket>>,
}

impl CreationLimiter {
    /// `rate` creations per second and `burst` at once per address, except from `exempt`
    /// networks; `None` when `rate` is 0 (unlimited).
    pub fn new(rate: u32, burst: u32, exempt: Vec<IpNet>) -> Option<CreationLimiter> {
        (rate > 0).then(|| CreationLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            exempt,
            buckets: Mutex::new(LruCache::new(
                NonZeroUsize::new(TRACKED_ADDRESSES).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// Take one creation for `ip` at `now`.
    ///
    /// # Errors
    /// The whole seconds until one is available again (at least 1), for Retry-After.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let ip = ip.to_canonical();
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        let key = bucket_key(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let full = Bucket {
            tokens: self.burst,
            at: now,
        };
        let bucket = buckets.get_or_insert_mut(key, || full);
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.rate;
        Err((wait.ceil() as u64).max(1))
    }
}

/// IPv6 clients get a /64 each (one subscriber's usual share), so that an address per request
/// does not mean a fresh bucket per request.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Caps the open connections (`server.max_connections`).
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    slots: Option<Arc<Semaphore>>,
}

impl ConnectionLimit {
    /// At most `max` connections; 0 = no cap.
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            slots: (max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)))),
        }
    }

    /// A slot for one more connection, held as long as it is open: `Err` when all are taken.
    #[allow(clippy::result_unit_err)]
    pub fn try_open(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        match &self.slots {
            None => Ok(None),
            Some(slots) => Arc::clone(slots)
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| ()),
        }
    }
}

/// The limits of one server, and the throttles of their refusal logs.
#[derive(Debug)]
pub struct Admission {
    /// Per-address creation rate; `None` = unlimited.
    pub creations: Option<CreationLimiter>,
    /// Refused creations.
    pub creation_log: LogThrottle,
    /// Refused metadata.
    pub metadata_log: LogThrottle,
    /// Refused connections.
    pub connection_log: LogThrottle,
}

impl Admission {
    /// With `creations` as the per-address creation limit (`None` = unlimited).
    pub fn new(creations: Option<CreationLimiter>) -> Admission {
        Admission {
            creations,
            creation_log: LogThrottle::default(),
            metadata_log: LogThrottle::default(),
            connection_log: LogThrottle::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: u32, burst: u32, exempt: &[&str]) -> CreationLimiter {
        let exempt = exempt.iter().map(|n| n.parse().unwrap()).collect();
        CreationLimiter::new(rate, burst, exempt).unwrap()
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_refills_it() {
        let l = limiter(2, 3, &[]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit(ip, t0), Ok(()));
        }
        assert_eq!(l.admit(ip, t0), Err(1));
        // Another address has its own bucket.
        assert_eq!(l.admit("192.0.2.2".parse().unwrap(), t0), Ok(()));
        // Half a second at 2/s is one creation.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.admit(ip, t1), Ok(()));
        assert_eq!(l.admit(ip, t1), Err(1));
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.admit(ip, t2), Ok(()));
        }
        assert!(l.admit(ip, t2).is_err());
    }

    #[test]
    fn exempt_networks_and_ipv6_prefixes() {
        let l = limiter(1, 1, &["10.0.0.0/8"]);
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.admit("10.1.2.3".parse().unwrap(), t), Ok(()));
        }
        assert_eq!(l.admit("2001:db8::1".parse().unwrap(), t), Ok(()));
        assert!(
            l.admit("2001:db8::2".parse().unwrap(), t).is_err(),
            "the same /64 shares one bucket"
        );
        assert_eq!(l.admit("2001:db8:0:1::1".parse().unwrap(), t), Ok(()));
    }

    #[test]
    fn the_refusal_log_speaks_once_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::default();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.suppressed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn connection_slots_are_given_back_when_a_connection_closes() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_open().unwrap();
        let _b = limit.try_open().unwrap();
        assert!(limit.try_open().is_err());
        drop(a);
        assert!(limit.try_open().is_ok());
        assert!(ConnectionLimit::new(0).try_open().unwrap().is_none());
    }
}
