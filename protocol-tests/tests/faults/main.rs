//! Fault-injection suite: tusk under half-open connections, cut connections, slow
//! links, SIGKILL, SIGTERM, a full disk and memory pressure.
//!
//! Network faults go through [`protocol_tests::proxy::FaultProxy`]; process faults use
//! the harness's `kill9` / `terminate` / `start`. Every wait is a poll with a deadline.
//! Random choices come from a xorshift generator seeded from the clock (or from
//! `TUSK_FAULT_SEED`); each test prints its seed.

mod crash;
mod cuts;
mod damaged_db;
mod disk_full;
mod idle;
mod lazy_cuts;
mod overload;
mod power_cut;
mod shutdown;
mod takeover;

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::proxy::{ConnHandle, FaultProxy};
use protocol_tests::*;

/// A tiny xorshift64* generator: enough randomness for fault schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `TUSK_FAULT_SEED` or the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("TUSK_FAULT_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("{test}: TUSK_FAULT_SEED={seed}");
        Rng::new(seed)
    }

    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.range(0, den) < num
    }
}

/// The socket address of the server's current endpoint.
pub fn server_addr(server: &TestServer) -> SocketAddr {
    protocol_tests::proxy::socket_addr_of(server.endpoint())
}

/// A PATCH whose head is sent through `proxy` with `Content-Length: content_length`
/// and no body yet. Returns the connection, the proxy's handle on it and the number of
/// head bytes the proxy forwarded (so that body bytes delivered = up_bytes - head).
pub fn open_patch(
    proxy: &FaultProxy,
    url: &str,
    offset: u64,
    content_length: u64,
) -> (RawConn, ConnHandle, u64) {
    let index = proxy.connection_count();
    let conn = tus("PATCH", &proxy.url(url))
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", &offset.to_string())
        .header("Content-Length", &content_length.to_string())
        .open();
    let handle = proxy
        .wait_connection(index, Duration::from_secs(5))
        .expect("the proxy accepted the PATCH connection");
    assert!(
        handle.wait_up_bytes(1, Duration::from_secs(5)),
        "the PATCH head never went through the proxy"
    );
    let head = handle.wait_up_quiet(Duration::from_millis(50), Duration::from_secs(5));
    (conn, handle, head)
}

/// Writes `body` on `conn`, waits until the proxy delivered all of it to the server,
/// gives the server 200 ms to read it, then freezes the connection (both directions).
pub fn deliver_then_freeze(conn: &mut RawConn, handle: &ConnHandle, head: u64, body: &[u8]) {
    conn.write_all(body).expect("writing the PATCH body");
    assert!(
        handle.wait_up_bytes(head + body.len() as u64, Duration::from_secs(10)),
        "the proxy delivered {} of {} bytes",
        handle.up_bytes(),
        head + body.len() as u64
    );
    thread::sleep(Duration::from_millis(200));
    handle.freeze();
}

/// GETs an upload and asserts its bytes are a prefix of `source`; returns their count.
#[track_caller]
pub fn assert_prefix(url: &str, source: &[u8], what: &str) -> usize {
    let bytes = get_bytes(url);
    assert!(
        bytes.len() <= source.len(),
        "{what}: GET returned {} bytes, the source has {}",
        bytes.len(),
        source.len()
    );
    if let Some(i) = bytes.iter().zip(source).position(|(a, b)| a != b) {
        panic!(
            "{what}: upload corrupted: GET differs from the source at byte {i} of {}",
            bytes.len()
        );
    }
    bytes.len()
}

/// Asserts the upload is complete and byte-exact (sha256 of GET equals the source's).
#[track_caller]
pub fn assert_complete(url: &str, source: &[u8], what: &str) {
    let (resp, count, digest) = get_sha256(url);
    assert_status(&resp, &[200], what);
    assert_eq!(count, source.len() as u64, "{what}: GET length");
    assert_eq!(digest, sha256_hex(source), "{what}: sha256 of GET");
}

/// HEAD without panicking on I/O errors: `Some(offset)` on 200.
pub fn try_head_offset(url: &str) -> Option<u64> {
    let r = tus("HEAD", url).try_send().ok()?;
    if r.status == 200 || r.status == 204 {
        r.header("Upload-Offset")?.trim().parse().ok()
    } else {
        None
    }
}

/// Resumes an upload to its end with HEAD + PATCH of the rest (in `chunk`-sized PATCHes),
/// retrying with a short backoff on any failure until `timeout`. `url` may go through a
/// proxy. Returns the number of failed attempts.
#[track_caller]
pub fn resume_to_end(url: &str, source: &[u8], chunk: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut failures = 0;
    let mut backoff = Duration::from_millis(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "upload {url} not finished within {timeout:?} ({failures} failed attempts)"
        );
        let Some(offset) = try_head_offset(url) else {
            failures += 1;
            thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
            continue;
        };
        let offset = offset as usize;
        assert!(
            offset <= source.len(),
            "HEAD offset {offset} past the length {}",
            source.len()
        );
        if offset == source.len() {
            return failures;
        }
        let end = (offset + chunk).min(source.len());
        match patch_req(url, offset as u64, &source[offset..end]).try_send() {
            Ok(r) if r.status == 204 => {
                backoff = Duration::from_millis(20);
            }
            _ => {
                failures += 1;
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }
}
