//! Prometheus metrics, in the text exposition format, without a metrics crate.
//!
//! Counters live where their events happen: request and upload counters here in [`Metrics`],
//! lock waits and takeovers in the lock table, buffer figures in the pool, interface changes
//! in the monitor. [`render`] reads them all when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::AppState;

/// Upper bounds of the PATCH duration histogram, seconds.
const DURATION_BUCKETS: [f64; 10] = [0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0];

/// Upper bounds of the PATCH throughput histogram, bytes per second.
const THROUGHPUT_BUCKETS: [f64; 8] = [16e3, 64e3, 256e3, 1e6, 4e6, 16e6, 64e6, 256e6];

/// A cumulative histogram with fixed buckets.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        // Kept in millionths so an integer atomic can hold the sum.
        let micros = (value * 1e6).clamp(0.0, u64::MAX as f64) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Upload lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadEvent {
    /// POST created an upload.
    Created,
    /// The last byte arrived (or a final upload was joined).
    Finished,
    /// DELETE removed it.
    Terminated,
    /// The sweeper removed it.
    Expired,
    /// A PATCH broke off (connection lost, idle, taken over, address vanished).
    Interrupted,
}

#[derive(Debug)]
struct Counters {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    received: AtomicU64,
    sent: AtomicU64,
    created: AtomicU64,
    finished: AtomicU64,
    terminated: AtomicU64,
    expired: AtomicU64,
    interrupted: AtomicU64,
    patch_seconds: Histogram,
    patch_throughput: Histogram,
    hook_calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

/// The request and upload counters; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    counters: Arc<Counters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Arc::new(Counters {
                requests: Mutex::new(BTreeMap::new()),
                received: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                created: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                terminated: AtomicU64::new(0),
                expired: AtomicU64::new(0),
                interrupted: AtomicU64::new(0),
                patch_seconds: Histogram::new(&DURATION_BUCKETS),
                patch_throughput: Histogram::new(&THROUGHPUT_BUCKETS),
                hook_calls: Mutex::new(BTreeMap::new()),
            }),
        }
    }
}

impl Metrics {
    /// Count a finished request.
    pub fn request(&self, method: &str, status: u16) {
        // Unknown methods share one label, so a client cannot grow the map without bound.
        let method = match method {
            "OPTIONS" => "OPTIONS",
            "POST" => "POST",
            "HEAD" => "HEAD",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "GET" => "GET",
            _ => "OTHER",
        };
        *self
            .counters
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((method, status))
            .or_default() += 1;
    }

    /// Count body bytes received into uploads.
    pub fn received(&self, bytes: u64) {
        self.counters.received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count bytes served by downloads.
    pub fn sent(&self, bytes: u64) {
        self.counters.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count an upload lifecycle event.
    pub fn upload(&self, event: UploadEvent) {
        let counter = match event {
            UploadEvent::Created => &self.counters.created,
            UploadEvent::Finished => &self.counters.finished,
            UploadEvent::Terminated => &self.counters.terminated,
            UploadEvent::Expired => &self.counters.expired,
            UploadEvent::Interrupted => &self.counters.interrupted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Record one PATCH body: how long it took and how many bytes it carried.
    pub fn patch(&self, elapsed: Duration, bytes: u64) {
        let secs = elapsed.as_secs_f64();
        self.counters.patch_seconds.observe(secs);
        if secs > 0.0 && bytes > 0 {
            self.counters.patch_throughput.observe(bytes as f64 / secs);
        }
    }

    /// Count one hook call by event and outcome (ok, rejected, retried, failed, dropped).
    pub fn hook_call(&self, event: &'static str, outcome: &'static str) {
        *self
            .counters
            .hook_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((event, outcome))
            .or_default() += 1;
    }

    fn requests_with_status(&self, status: u16) -> u64 {
        self.counters
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((_, s), _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Append one metric with its help and type lines.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The whole exposition for `/metrics`.
pub async fn render(state: &AppState) -> String {
    let m = &state.metrics.counters;
    let mut out = String::with_capacity(8 * 1024);
    let _ = writeln!(
        out,
        "# HELP tusk_requests_total Requests answered, by method and status.\n# TYPE tusk_requests_total counter"
    );
    for ((method, status), n) in m.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(
            out,
            "tusk_requests_total{{method=\"{method}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP tusk_hook_calls_total Hook calls, by event and outcome.\n# TYPE tusk_hook_calls_total counter"
    );
    for ((event, outcome), n) in m
        .hook_calls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        let _ = writeln!(
            out,
            "tusk_hook_calls_total{{event=\"{event}\",outcome=\"{outcome}\"}} {n}"
        );
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric(
        &mut out,
        "tusk_received_bytes_total",
        "counter",
        "Upload bytes received and committed or kept.",
        load(&m.received),
    );
    metric(
        &mut out,
        "tusk_sent_bytes_total",
        "counter",
        "Bytes served by downloads.",
        load(&m.sent),
    );
    metric(
        &mut out,
        "tusk_uploads_created_total",
        "counter",
        "Uploads created.",
        load(&m.created),
    );
    metric(
        &mut out,
        "tusk_uploads_finished_total",
        "counter",
        "Uploads whose last byte arrived.",
        load(&m.finished),
    );
    metric(
        &mut out,
        "tusk_uploads_terminated_total",
        "counter",
        "Uploads deleted by clients.",
        load(&m.terminated),
    );
    metric(
        &mut out,
        "tusk_uploads_expired_total",
        "counter",
        "Uploads deleted by the expiry sweeper.",
        load(&m.expired),
    );
    metric(
        &mut out,
        "tusk_patches_interrupted_total",
        "counter",
        "PATCHes that broke off (bytes kept).",
        load(&m.interrupted),
    );
    metric(
        &mut out,
        "tusk_offset_mismatches_total",
        "counter",
        "Requests answered 409 (stale Upload-Offset).",
        state.metrics.requests_with_status(409),
    );
    metric(
        &mut out,
        "tusk_checksum_failures_total",
        "counter",
        "Requests answered 460 (checksum mismatch).",
        state.metrics.requests_with_status(460),
    );
    let profiles = state.profiles.snapshot();
    let resumes: u64 = profiles.iter().map(|(_, p)| p.resumes).sum();
    metric(
        &mut out,
        "tusk_resumes_total",
        "counter",
        "PATCHes that followed an interrupted one, by remembered clients.",
        resumes,
    );
    metric(
        &mut out,
        "tusk_client_profiles",
        "gauge",
        "Clients remembered.",
        profiles.len(),
    );
    m.patch_seconds.render(
        &mut out,
        "tusk_patch_duration_seconds",
        "Time to receive one PATCH body.",
    );
    m.patch_throughput.render(
        &mut out,
        "tusk_patch_throughput_bytes_per_second",
        "Rate of PATCH bodies.",
    );

    let locks = state.locks.stats();
    metric(
        &mut out,
        "tusk_uploads_active",
        "gauge",
        "Uploads with a request writing to them now.",
        locks.held,
    );
    metric(
        &mut out,
        "tusk_lock_waits_total",
        "counter",
        "Requests that waited for another request's lock.",
        locks.waits,
    );
    metric(
        &mut out,
        "tusk_lock_takeovers_total",
        "counter",
        "Stalled PATCHes asked to stop by a newer request.",
        locks.takeovers,
    );

    let pool = state.pool.stats();
    metric(
        &mut out,
        "tusk_buffer_pool_in_use_bytes",
        "gauge",
        "Request buffer memory reserved now.",
        pool.in_use_bytes,
    );
    metric(
        &mut out,
        "tusk_buffer_pool_idle_bytes",
        "gauge",
        "Request buffer memory idle in the pool.",
        pool.idle_bytes,
    );
    metric(
        &mut out,
        "tusk_buffer_pool_hits_total",
        "counter",
        "Buffers reused from the pool.",
        pool.hits,
    );
    metric(
        &mut out,
        "tusk_buffer_pool_misses_total",
        "counter",
        "Buffers that had to be allocated.",
        pool.misses,
    );

    let interfaces = state.interfaces.stats();
    metric(
        &mut out,
        "tusk_interface_changes_total",
        "counter",
        "Local addresses that appeared or vanished.",
        interfaces.changes,
    );
    metric(
        &mut out,
        "tusk_interface_releases_total",
        "counter",
        "PATCHes released because their local address vanished.",
        interfaces.released,
    );

    if let Ok(bytes) = state.sessions.size_on_disk().await {
        metric(
            &mut out,
            "tusk_session_store_bytes",
            "gauge",
            "Size of the session database on disk.",
            bytes,
        );
    }
    if let Ok(free) = fs4::available_space(&state.settings.storage.data_dir) {
        metric(
            &mut out,
            "tusk_disk_free_bytes",
            "gauge",
            "Free space on the data volume.",
            free,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 55.5\n"), "{out}");
    }

    #[test]
    fn unknown_methods_share_a_label() {
        let metrics = Metrics::default();
        metrics.request("BREW", 405);
        metrics.request("COFFEE", 405);
        metrics.request("PATCH", 409);
        let other = metrics
            .counters
            .requests
            .lock()
            .unwrap()
            .get(&("OTHER", 405))
            .copied();
        assert_eq!(other, Some(2));
        assert_eq!(metrics.requests_with_status(409), 1);
    }
}
