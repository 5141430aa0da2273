//! Crash loop: SIGKILL the server at random moments during concurrent uploads and check
//! that nothing acknowledged is lost and nothing unacknowledged is claimed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::proxy::FaultProxy;
use protocol_tests::*;

use crate::{assert_complete, resume_to_end, server_addr, Rng};

/// Total time the loop may take; no new iteration starts after `BUDGET - MARGIN`.
const BUDGET: Duration = Duration::from_secs(60);
const MARGIN: Duration = Duration::from_secs(8);

struct Upload {
    source: Arc<Vec<u8>>,
    chunk: usize,
    /// The upload's path, once its creation was acknowledged (201).
    path: Mutex<Option<String>>,
    /// The largest offset acknowledged by a 204.
    acked: AtomicU64,
}

/// One client: create, then PATCH chunk after chunk until done, stopped or failed.
fn client(proxy_endpoint: String, proxy_base: String, up: Arc<Upload>, stop: Arc<AtomicBool>) {
    let len = up.source.len();
    let Ok(resp) = tus("POST", &proxy_endpoint)
        .header("Upload-Length", &len.to_string())
        .try_send()
    else {
        return;
    };
    if resp.status != 201 {
        return;
    }
    let Some(loc) = resp.header("Location") else {
        return;
    };
    let path = path_of(loc);
    *up.path.lock().unwrap() = Some(path.clone());
    let url = format!("{proxy_base}{path}");
    let mut offset = 0usize;
    while offset < len && !stop.load(Ordering::SeqCst) {
        let end = (offset + up.chunk).min(len);
        match patch_req(&url, offset as u64, &up.source[offset..end]).try_send() {
            Ok(r) if r.status == 204 => {
                let Some(new) = r
                    .header("Upload-Offset")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                else {
                    return;
                };
                up.acked.fetch_max(new, Ordering::SeqCst);
                offset = new as usize;
            }
            _ => return,
        }
    }
}

/// "Start the server, run several uploads concurrently, SIGKILL it at a random moment,
/// start it again on the same data dir, and for every upload check: HEAD Upload-Offset ==
/// size on disk, GET == the same-length prefix of the source, offset >= the largest
/// offset acknowledged before the kill. Then resume every upload and check sha256."
#[test]
fn crash_loop_keeps_every_acknowledged_byte() {
    needs_spawned_server!();
    let iterations: usize = std::env::var("TUSK_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(20);
    let mut rng = Rng::from_env("crash loop");
    let mut server = TestServer::spawn();
    let proxy = FaultProxy::start(server_addr(&server));
    let started = Instant::now();
    let mut mismatches: Vec<String> = Vec::new();
    let mut finished: Vec<(String, Arc<Vec<u8>>)> = Vec::new();
    let mut ran = 0usize;
    let mut checked = 0usize;
    let mut interrupted = 0usize;

    for iteration in 0..iterations {
        if iteration > 0 && started.elapsed() + MARGIN > BUDGET {
            println!("crash loop: time budget reached after {iteration} iterations");
            break;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let uploads: Vec<Arc<Upload>> = (0..rng.range(3, 6))
            .map(|i| {
                let len = rng.range(64 << 10, 8 << 20) as usize;
                // Some uploads go in a single PATCH, the others in chunks of 32 KiB..1 MiB.
                let chunk = if i == 0 || rng.chance(1, 4) {
                    len
                } else {
                    rng.range(32 << 10, 1 << 20) as usize
                };
                Arc::new(Upload {
                    source: Arc::new(pattern(rng.next_u64(), len)),
                    chunk,
                    path: Mutex::new(None),
                    acked: AtomicU64::new(0),
                })
            })
            .collect();
        let threads: Vec<_> = uploads
            .iter()
            .map(|up| {
                let (endpoint, base) = (proxy.url(server.endpoint()), proxy.url(""));
                let base = base.trim_end_matches('/').to_string();
                let (up, stop) = (Arc::clone(up), Arc::clone(&stop));
                thread::spawn(move || client(endpoint, base, up, stop))
            })
            .collect();
        thread::sleep(Duration::from_millis(rng.range(2, 200)));
        stop.store(true, Ordering::SeqCst);
        server.kill9();
        for t in threads {
            t.join().expect("client thread");
        }
        server.start();
        proxy.set_upstream(server_addr(&server));
        ran += 1;

        for up in &uploads {
            let Some(path) = up.path.lock().unwrap().clone() else {
                continue;
            };
            checked += 1;
            let url = server.url(&path);
            let len = up.source.len() as u64;
            let acked = up.acked.load(Ordering::SeqCst);
            let tag = format!("iteration {iteration}, upload {path} (len {len}, acked {acked})");
            let head = tus("HEAD", &url).send();
            if head.status != 200 {
                mismatches.push(format!("{tag}: HEAD after restart: {}", head.describe()));
                continue;
            }
            let offset = head.header_u64("Upload-Offset");
            if offset < len {
                interrupted += 1;
            }
            let on_disk = std::fs::metadata(server.upload_file(&upload_id(&path)))
                .map(|m| m.len())
                .unwrap_or(u64::MAX);
            if on_disk != offset {
                mismatches.push(format!(
                    "{tag}: HEAD offset {offset} but {on_disk} bytes on disk"
                ));
            }
            if offset < acked {
                mismatches.push(format!(
                    "{tag}: offset {offset} below the acknowledged {acked}"
                ));
            }
            let body = get(&url);
            if body.status != 200 {
                mismatches.push(format!("{tag}: GET: {}", body.describe()));
            } else if body.body.len() as u64 != offset
                || body.body[..] != up.source[..body.body.len().min(up.source.len())]
            {
                mismatches.push(format!(
                    "{tag}: GET returned {} bytes that are not the source's prefix of {offset}",
                    body.body.len()
                ));
            }
        }
        // Resume everything to the end on the restarted server.
        for up in &uploads {
            let Some(path) = up.path.lock().unwrap().clone() else {
                continue;
            };
            let url = server.url(&path);
            resume_to_end(&url, &up.source, up.chunk, Duration::from_secs(30));
            assert_complete(&url, &up.source, "crash loop upload after resume");
            finished.push((path, Arc::clone(&up.source)));
        }
    }
    // Earlier, finished uploads survived every later crash.
    for (path, source) in &finished {
        assert_complete(
            &server.url(path),
            source,
            "finished upload after later crashes",
        );
    }
    println!(
        "crash loop: {ran} iterations, {checked} uploads checked after SIGKILL \
         ({interrupted} caught mid-upload), {} mismatches, {:?}",
        mismatches.len(),
        started.elapsed()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
