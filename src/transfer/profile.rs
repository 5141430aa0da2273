//! Per-client history: how fast a client's PATCHes arrive, how often they break, how often it
//! comes back. It picks the starting buffer size of the client's next PATCH and is shown in
//! metrics and the admin API.
//!
//! Keyed by the authenticated owner when there is one, else the remote IP address. Bounded:
//! at most [`MAX_CLIENTS`] entries, least recently seen evicted first.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde::Serialize;

/// Most clients remembered (a few hundred bytes each).
pub const MAX_CLIENTS: usize = 10_000;

/// Weight of the newest measurement in the moving average.
const EWMA_ALPHA: f64 = 0.3;

/// Who a client is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ClientKey {
    /// An authenticated owner.
    Owner(String),
    /// A remote address (no authentication).
    Address(IpAddr),
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientKey::Owner(owner) => write!(f, "owner:{owner}"),
            ClientKey::Address(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// What we remember of one client.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientProfile {
    /// Moving average of PATCH throughput, bytes per second.
    pub throughput: Option<f64>,
    /// PATCHes seen.
    pub patches: u64,
    /// PATCHes that broke off (connection lost, idle, taken over).
    pub interrupted: u64,
    /// PATCHes that came after an interrupted one (the client resumed).
    pub resumes: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Whether the last PATCH was interrupted (to count the next one as a resume).
    #[serde(skip)]
    last_interrupted: bool,
}

/// How a PATCH went, for its client's profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchReport {
    /// Bytes received.
    pub bytes: u64,
    /// Mean rate while receiving, if measured.
    pub rate: Option<f64>,
    /// Whether it broke off.
    pub interrupted: bool,
}

/// All profiles; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientProfiles {
    cache: Arc<Mutex<LruCache<ClientKey, ClientProfile>>>,
}

impl Default for ClientProfiles {
    fn default() -> Self {
        ClientProfiles::with_capacity(MAX_CLIENTS)
    }
}

impl ClientProfiles {
    /// Remember at most `capacity` clients.
    pub fn with_capacity(capacity: usize) -> ClientProfiles {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        ClientProfiles {
            cache: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LruCache<ClientKey, ClientProfile>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's measured throughput, if any.
    pub fn throughput(&self, client: &ClientKey) -> Option<f64> {
        self.cache().get(client).and_then(|p| p.throughput)
    }

    /// Fold one finished PATCH into the client's profile.
    pub fn record(&self, client: &ClientKey, report: PatchReport) {
        let mut cache = self.cache();
        let profile = cache.get_or_insert_mut(client.clone(), ClientProfile::default);
        profile.patches += 1;
        profile.bytes += report.bytes;
        if profile.last_interrupted {
            profile.resumes += 1;
        }
        profile.last_interrupted = report.interrupted;
        if report.interrupted {
            profile.interrupted += 1;
        }
        if let Some(rate) = report.rate.filter(|r| r.is_finite() && *r > 0.0) {
            profile.throughput = Some(match profile.throughput {
                Some(old) => old + EWMA_ALPHA * (rate - old),
                None => rate,
            });
        }
    }

    /// A copy of every profile, most recently seen first.
    pub fn snapshot(&self) -> Vec<(ClientKey, ClientProfile)> {
        self.cache()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.cache().len()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> ClientKey {
        ClientKey::Address(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn throughput_is_a_moving_average_and_resumes_follow_interruptions() {
        let profiles = ClientProfiles::default();
        let client = ip(1);
        profiles.record(
            &client,
            PatchReport {
                bytes: 100,
                rate: Some(1000.0),
                interrupted: true,
            },
        );
        profiles.record(
            &client,
            PatchReport {
                bytes: 100,
                rate: Some(2000.0),
                interrupted: false,
            },
        );
        let (_, profile) = profiles.snapshot().remove(0);
        assert_eq!(profile.patches, 2);
        assert_eq!(profile.interrupted, 1);
        assert_eq!(profile.resumes, 1);
        assert_eq!(profile.bytes, 200);
        assert!((profile.throughput.unwrap() - 1300.0).abs() < 1e-6);
    }

    #[test]
    fn the_least_recently_seen_client_is_forgotten_first() {
        let profiles = ClientProfiles::with_capacity(2);
        let report = PatchReport {
            bytes: 1,
            rate: Some(1.0),
            interrupted: false,
        };
        profiles.record(&ip(1), report);
        profiles.record(&ip(2), report);
        assert!(profiles.throughput(&ip(1)).is_some()); // touch 1
        profiles.record(&ip(3), report);
        assert_eq!(profiles.len(), 2);
        assert!(profiles.throughput(&ip(2)).is_none());
        assert!(profiles.throughput(&ip(1)).is_some());
    }
}
