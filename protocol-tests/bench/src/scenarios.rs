//! The workloads. Each takes a [`Target`] and returns a [`Tally`]: how many operations (or
//! bytes) succeeded, in how long, and what failed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{Body, Failure, TusClient};

/// The server a scenario runs against.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its creation endpoint (`/files/`).
    pub base_path: String,
    /// Whether a POST may carry the upload (tusk); otherwise POST then PATCH (the sink).
    pub creation_with_upload: bool,
}

impl Target {
    fn client(&self) -> TusClient {
        TusClient::new(self.addr, &self.base_path, None)
    }
}

/// What a scenario achieved.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Operations that succeeded (creations, HEADs, uploads).
    pub ok: u64,
    /// Upload bytes acknowledged by the server.
    pub bytes: u64,
    /// Wall-clock time the figure is over, seconds.
    pub secs: f64,
    /// Failures by kind (`status 503`, `io: connection reset`...).
    pub failures: BTreeMap<String, u64>,
    /// Some request got no answer in time (the server may be stuck).
    pub timed_out: bool,
}

impl Tally {
    fn fail(&mut self, failure: &Failure) {
        if failure.is_timeout() {
            self.timed_out = true;
        }
        let key = match failure {
            Failure::Status(status) => format!("status {status}"),
            Failure::Protocol(what) => what.clone(),
            Failure::Io(err) => format!("io: {err}"),
        };
        *self.failures.entry(key).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.bytes += other.bytes;
        self.timed_out |= other.timed_out;
        for (key, count) in other.failures {
            *self.failures.entry(key).or_default() += count;
        }
    }

    /// Failures in all.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Operations per second.
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }

    /// MiB per second.
    pub fn mib_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / (1 << 20) as f64 / self.secs
        } else {
            0.0
        }
    }

    /// `status 503 ×12, io: ... ×1`, for the report.
    pub fn describe_failures(&self) -> String {
        self.failures
            .iter()
            .map(|(kind, n)| format!("{kind} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// After a failure, wait a little so a dead server does not make a worker spin.
async fn back_off() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(err) => {
                *total.failures.entry(format!("task: {err}")).or_default() += 1;
            }
        }
    }
    total
}

/// Whether the server still answers a POST within `limit` (after a scenario timed out).
pub async fn responsive(target: &Target, limit: Duration) -> bool {
    let mut client = target.client();
    matches!(
        tokio::time::timeout(limit, client.create(1)).await,
        Ok(Ok(_))
    )
}

/// `clients` workers POST (creation only, `Upload-Length: 1024`) for `duration`.
pub async fn creations(target: &Target, clients: usize, duration: Duration) -> Tally {
    let deadline = Instant::now() + duration;
    let tasks = (0..clients)
        .map(|_| {
            let mut client = target.client();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    match client.create(1024).await {
                        Ok(_) if Instant::now() <= deadline => tally.ok += 1,
                        Ok(_) => {}
                        Err(failure) => {
                            tally.fail(&failure);
                            if failure.is_timeout() {
                                // The server is stuck; the caller checks it and moves on.
                                break;
                            }
                            back_off().await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = join_all(tasks).await;
    tally.secs = duration.as_secs_f64();
    tally
}

/// `clients` workers HEAD `uploads` existing uploads in turn for `duration`.
pub async fn heads(target: &Target, clients: usize, uploads: usize, duration: Duration) -> Tally {
    let mut setup = target.client();
    let mut paths = Vec::with_capacity(uploads);
    for _ in 0..uploads {
        match setup.create(1 << 20).await {
            Ok(path) => paths.push(path),
            Err(failure) => {
                let mut tally = Tally::default();
                tally.fail(&failure);
                return tally;
            }
        }
    }
    let paths = Arc::new(paths);
    let deadline = Instant::now() + duration;
    let tasks = (0..clients)
        .map(|worker| {
            let mut client = target.client();
            let paths = Arc::clone(&paths);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut next = worker;
                while Instant::now() < deadline {
                    let path = &paths[next % paths.len()];
                    next += 1;
                    match client.head(path).await {
                        Ok(_) if Instant::now() <= deadline => tally.ok += 1,
                        Ok(_) => {}
                        Err(failure) => {
                            tally.fail(&failure);
                            if failure.is_timeout() {
                                // The server is stuck; the caller checks it and moves on.
                                break;
                            }
                            back_off().await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = join_all(tasks).await;
    tally.secs = duration.as_secs_f64();
    tally
}

/// One upload of `size` bytes in one PATCH; the time is the PATCH's, to its 204.
pub async fn large(target: &Target, size: u64) -> Tally {
    one_patch(target, size, Body::Data(size)).await
}

/// One upload of `size` bytes in one PATCH sent with chunked transfer encoding in chunks of
/// `chunk` bytes (small frames on the server side: what its buffer gathers).
pub async fn chunked(target: &Target, size: u64, chunk: usize) -> Tally {
    one_patch(target, size, Body::Chunked { len: size, chunk }).await
}

async fn one_patch(target: &Target, size: u64, body: Body) -> Tally {
    let mut tally = Tally::default();
    let mut client = target.client();
    let path = match client.create(size).await {
        Ok(path) => path,
        Err(failure) => {
            tally.fail(&failure);
            return tally;
        }
    };
    let started = Instant::now();
    match client.patch(&path, 0, body).await {
        Ok(()) => {
            tally.ok = 1;
            tally.bytes = size;
        }
        Err(failure) => tally.fail(&failure),
    }
    tally.secs = started.elapsed().as_secs_f64();
    tally
}

/// `uploads` clients at once, each POST then one PATCH of `size`; aggregate over the wall time.
pub async fn parallel(target: &Target, uploads: usize, size: u64) -> Tally {
    let started = Instant::now();
    let tasks = (0..uploads)
        .map(|_| {
            let mut client = target.client();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let result = match client.create(size).await {
                    Ok(path) => client.patch(&path, 0, Body::Data(size)).await,
                    Err(failure) => Err(failure),
                };
                match result {
                    Ok(()) => {
                        tally.ok = 1;
                        tally.bytes = size;
                    }
                    Err(failure) => tally.fail(&failure),
                }
                tally
            })
        })
        .collect();
    let mut tally = join_all(tasks).await;
    tally.secs = started.elapsed().as_secs_f64();
    tally
}

/// `count` uploads of `size` bytes by `clients` workers: creation-with-upload where the
/// server has it, else POST then PATCH.
pub async fn small(target: &Target, count: u64, clients: usize, size: u64) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks = (0..clients)
        .map(|_| {
            let mut client = target.client();
            let next = Arc::clone(&next);
            let with_upload = target.creation_with_upload;
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let result = if with_upload {
                        client.create_with_upload(size).await.map(drop)
                    } else {
                        match client.create(size).await {
                            Ok(path) => client.patch(&path, 0, Body::Data(size)).await,
                            Err(failure) => Err(failure),
                        }
                    };
                    match result {
                        Ok(()) => {
                            tally.ok += 1;
                            tally.bytes += size;
                        }
                        Err(failure) => {
                            tally.fail(&failure);
                            if failure.is_timeout() {
                                // The server is stuck; the caller checks it and moves on.
                                break;
                            }
                            back_off().await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = join_all(tasks).await;
    tally.secs = started.elapsed().as_secs_f64();
    tally
}

/// How the slow-upload scenario paces its clients.
#[derive(Debug, Clone, Copy)]
pub struct SlowPlan {
    /// Concurrent uploads (each its own connection and source address).
    pub uploads: usize,
    /// Body rate of each, bytes per second.
    pub rate: u64,
    /// How long each body takes.
    pub duration: Duration,
    /// Starts are spread over this long.
    pub ramp: Duration,
}

/// Source address of slow client `i`: 127.1.x.y, so each looks like a client of its own
/// (tusk keeps per-client throughput profiles keyed by address).
fn slow_source(i: usize) -> IpAddr {
    let i = u32::try_from(i).unwrap_or(u32::MAX) % (250 * 250);
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// `plan.uploads` connections, each POST then one PATCH whose body trickles at `plan.rate`.
/// `ok` counts uploads that completed with the right offset.
pub async fn slow(target: &Target, plan: SlowPlan) -> Tally {
    const WRITES_PER_SEC: u64 = 4;
    let len = plan.rate * plan.duration.as_secs().max(1);
    let chunk = usize::try_from((plan.rate / WRITES_PER_SEC).max(1)).unwrap_or(usize::MAX);
    let every = Duration::from_millis(1000 / WRITES_PER_SEC);
    let limit = plan.duration * 4 + plan.ramp + Duration::from_secs(60);
    let started = Instant::now();
    let tasks = (0..plan.uploads)
        .map(|i| {
            let mut client = TusClient::new(target.addr, &target.base_path, Some(slow_source(i)));
            let delay = plan.ramp.mul_f64(i as f64 / plan.uploads.max(1) as f64);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                tokio::time::sleep(delay).await;
                let upload = async {
                    let path = client.create(len).await?;
                    client
                        .patch(&path, 0, Body::Paced { len, chunk, every })
                        .await
                };
                match tokio::time::timeout(limit, upload).await {
                    Ok(Ok(())) => {
                        tally.ok = 1;
                        tally.bytes = len;
                    }
                    Ok(Err(failure)) => tally.fail(&failure),
                    Err(_) => {
                        tally.timed_out = true;
                        *tally.failures.entry("timed out".to_owned()).or_default() += 1;
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = join_all(tasks).await;
    tally.secs = started.elapsed().as_secs_f64();
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_clients_get_distinct_loopback_addresses() {
        assert_eq!(slow_source(0), IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(slow_source(999), IpAddr::V4(Ipv4Addr::new(127, 1, 3, 250)));
        let all: std::collections::HashSet<_> = (0..1000).map(slow_source).collect();
        assert_eq!(all.len(), 1000);
    }
}
