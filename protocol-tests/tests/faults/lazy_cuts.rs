//! Power cuts, proven (issue 20): tusk's data directory on a [`LazyFs`], many clients at
//! once, then SIGKILL, a power cut (everything no fsync covered is dropped, or a random part
//! of it with a torn write) and a restart on what survived. After each restart every
//! acknowledged fact is checked: every acknowledged offset is there, a finished upload
//! serves exactly the bytes sent, an acknowledged DELETE stays deleted, and tusk starts.
//!
//! `TUSK_POWER_CUTS` sets the number of cuts (default 50; `TUSK_POWER_CUTS=1000` for the
//! long run), `TUSK_POWER_BUDGET_SECS` the time budget (default 300), `TUSK_POWER_CUT` the
//! kind of cut: `everything` (drop all that is pending), `random` (a random part, with torn
//! writes), or `mixed` (either at random). `TUSK_POWER_DURABILITY=relaxed` runs tusk with
//! `durability = "relaxed"`, which may lose acknowledged bytes: the loop reports, not fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::lazyfs::{self, Cut, LazyFs};
use protocol_tests::*;

use crate::Rng;

/// One upload as the clients know it: only what tusk acknowledged.
#[derive(Debug, Clone, Default)]
struct Fact {
    /// The upload's path (`/files/<id>`), from an acknowledged creation.
    path: String,
    seed: u64,
    len: u64,
    /// The largest offset tusk answered (PATCH 204, creation-with-upload, or HEAD).
    acked: u64,
    /// Created with Upload-Defer-Length and its length not yet acknowledged.
    deferred: bool,
    /// A DELETE answered 204.
    deleted: bool,
    /// A client works on it (claimed), or its state is unknown (a DELETE with no answer).
    busy: bool,
    retired: bool,
    /// Its bytes were checked once complete.
    verified: bool,
    /// Checked after at least one cut.
    checked: bool,
}

type Facts = Arc<Mutex<Vec<Fact>>>;

fn source(seed: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) >> 7) as u8)
        .collect()
}

fn lock(facts: &Facts) -> std::sync::MutexGuard<'_, Vec<Fact>> {
    facts.lock().unwrap_or_else(|p| p.into_inner())
}

/// POST; the new upload's path on 201.
fn create(endpoint: &str, headers: &[(&str, String)], body: &[u8]) -> Option<(String, Response)> {
    let mut req = tus("POST", endpoint);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    if !body.is_empty() {
        req = req
            .header("Content-Type", "application/offset+octet-stream")
            .body(body.to_vec());
    }
    let resp = req.try_send().ok()?;
    let path = path_of(&resolve(endpoint, resp.header("Location")?));
    (resp.status == 201).then_some((path, resp))
}

/// PATCHes `fact` from `from` in chunks; records every acknowledged offset. Stops at the
/// first failure (the server was killed) or at the end.
fn drive(facts: &Facts, i: usize, base: &str, from: u64, chunk: u64, stop: &AtomicBool) {
    let fact = lock(facts)[i].clone();
    let bytes = source(fact.seed, fact.len);
    let url = resolve(base, &fact.path);
    let mut offset = from;
    while offset < fact.len && !stop.load(Ordering::Relaxed) {
        let end = (offset + chunk).min(fact.len);
        let mut req = patch_req(&url, offset, &bytes[offset as usize..end as usize]);
        let deferred = lock(facts)[i].deferred;
        if deferred && end == fact.len {
            req = req.header("Upload-Length", &fact.len.to_string());
        }
        match req.try_send() {
            Ok(resp) if resp.status == 204 => {
                offset = resp.header_u64("Upload-Offset");
                let mut all = lock(facts);
                all[i].acked = all[i].acked.max(offset);
                if deferred && end == fact.len {
                    all[i].deferred = false;
                }
            }
            _ => break,
        }
    }
    lock(facts)[i].busy = false;
}

/// One client of a random kind per round, until the server dies or `stop`.
fn client(facts: Facts, endpoint: String, base: String, seed: u64, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let kind = rng.range(0, 10);
        let seed = rng.next_u64();
        match kind {
            // Small creation-with-upload: the commit journal's case.
            0..=3 => {
                let len = rng.range(200, 6000);
                let body = source(seed, len);
                let headers = [("Upload-Length", len.to_string())];
                let Some((path, resp)) = create(&endpoint, &headers, &body) else {
                    return;
                };
                let acked = resp.header("Upload-Offset").and_then(|v| v.parse().ok());
                let fact = Fact {
                    path,
                    seed,
                    len,
                    acked: acked.unwrap_or(0),
                    ..Fact::default()
                };
                lock(&facts).push(fact);
            }
            // A larger upload in PATCHes below and above the journal's limit, or a resumed one.
            4..=6 => {
                let claimed = {
                    let mut all = lock(&facts);
                    let open = all
                        .iter()
                        .position(|f| !f.busy && !f.retired && !f.deleted && f.acked < f.len);
                    open.map(|i| {
                        all[i].busy = true;
                        (i, all[i].acked)
                    })
                };
                let (i, from) = match claimed {
                    Some(found) => found,
                    None => {
                        let len = rng.range(20_000, 400_000);
                        let headers = [("Upload-Length", len.to_string())];
                        let Some((path, _)) = create(&endpoint, &headers, &[]) else {
                            return;
                        };
                        let fact = Fact {
                            path,
                            seed,
                            len,
                            busy: true,
                            ..Fact::default()
                        };
                        let mut all = lock(&facts);
                        all.push(fact);
                        (all.len() - 1, 0)
                    }
                };
                drive(&facts, i, &base, from, rng.range(8_000, 140_000), &stop);
            }
            // Deferred length: the length comes with the last PATCH.
            7 => {
                let len = rng.range(1000, 200_000);
                let headers = [("Upload-Defer-Length", "1".to_string())];
                let Some((path, _)) = create(&endpoint, &headers, &[]) else {
                    return;
                };
                let fact = Fact {
                    path,
                    seed,
                    len,
                    deferred: true,
                    busy: true,
                    ..Fact::default()
                };
                let i = {
                    let mut all = lock(&facts);
                    all.push(fact);
                    all.len() - 1
                };
                drive(&facts, i, &base, 0, rng.range(4_000, 100_000), &stop);
            }
            // DELETE of a finished upload.
            _ => {
                let claimed = {
                    let mut all = lock(&facts);
                    let done = all
                        .iter()
                        .position(|f| !f.busy && !f.retired && !f.deleted && f.acked == f.len);
                    done.inspect(|&i| all[i].busy = true)
                };
                let Some(i) = claimed else { continue };
                let url = resolve(&base, &lock(&facts)[i].path);
                match tus("DELETE", &url).try_send() {
                    Ok(resp) if resp.status == 204 => {
                        let mut all = lock(&facts);
                        all[i].deleted = true;
                        all[i].busy = false;
                    }
                    // No answer: deleted or not, nothing was promised; stop checking it.
                    _ => {
                        lock(&facts)[i].retired = true;
                        return;
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    cuts: u64,
    /// HEADs (and GETs) after the cuts, all uploads together.
    checks: u64,
    bytes_lost: u64,
    corrupt: u64,
    resurrected: u64,
    failed_starts: u64,
    problems: Vec<String>,
}

/// Checks every fact against the restarted server.
fn check(facts: &Facts, base: &str, tally: &mut Tally) {
    let mut all = lock(facts);
    for fact in all.iter_mut().filter(|f| !f.retired) {
        fact.busy = false;
        let url = resolve(base, &fact.path);
        let Ok(resp) = tus("HEAD", &url).try_send() else {
            tally.problems.push(format!("HEAD {} failed", fact.path));
            continue;
        };
        tally.checks += 1;
        fact.checked = true;
        let exists = resp.status == 200 || resp.status == 204;
        if fact.deleted {
            if exists {
                tally.resurrected += 1;
                tally.problems.push(format!(
                    "{} answers {} after its DELETE",
                    fact.path, resp.status
                ));
                fact.retired = true;
            }
            continue;
        }
        let offset = if exists {
            resp.header_u64("Upload-Offset")
        } else {
            0
        };
        if !exists || offset < fact.acked {
            tally.bytes_lost += fact.acked - offset.min(fact.acked);
            tally.problems.push(format!(
                "{}: {} Upload-Offset {offset}, {} acknowledged",
                fact.path, resp.status, fact.acked
            ));
            fact.retired = true;
            continue;
        }
        fact.acked = offset;
        if offset > fact.len {
            tally.corrupt += 1;
            tally
                .problems
                .push(format!("{}: offset {offset} past its length", fact.path));
            fact.retired = true;
        } else if offset == fact.len && !fact.verified && !fact.deferred {
            let (got, count, sha) = get_sha256(&url);
            let want = sha256_hex(&source(fact.seed, fact.len));
            if got.status != 200 || count != fact.len || sha != want {
                tally.corrupt += 1;
                tally.problems.push(format!(
                    "{}: GET {} {count} bytes, not the bytes sent",
                    fact.path, got.status
                ));
                fact.retired = true;
            }
            fact.verified = true;
        }
    }
}

/// Power cuts that drop everything no sync covered: the strict Linux rules (XFS, btrfs).
#[test]
fn power_cuts_lose_no_acknowledged_upload() {
    power_cut_loop("power_cuts_lose_no_acknowledged_upload", "everything");
}

/// Power cuts in the middle of writeback: a random part of the unsynced writes reaches the
/// disk, out of order, one maybe torn.
#[test]
fn power_cuts_mid_writeback_lose_no_acknowledged_upload() {
    power_cut_loop(
        "power_cuts_mid_writeback_lose_no_acknowledged_upload",
        "random",
    );
}

/// The loop; `TUSK_POWER_CUT` (`everything`, `random`, `mixed`) overrides `default_cut`.
fn power_cut_loop(name: &str, default_cut: &str) {
    needs_spawned_server!();
    local_backend_only!("the data directory is on a local LazyFs");
    if let Some(reason) = lazyfs::unavailable() {
        skip_unless_ci(&reason);
        return;
    }
    let env_u64 = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let cuts = env_u64("TUSK_POWER_CUTS", 50);
    let budget = Duration::from_secs(env_u64("TUSK_POWER_BUDGET_SECS", 300));
    let mode = std::env::var("TUSK_POWER_CUT").unwrap_or_else(|_| default_cut.to_owned());
    let started = Instant::now();
    let mut rng = Rng::from_env(name);
    let base_dir = tempfile::tempdir().expect("temp dir");
    let mut lazy = LazyFs::mount(base_dir.path()).expect("mounting LazyFs");
    let data = lazy.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    lazy.syncfs().expect("sync");
    // `relaxed` may lose acknowledged bytes by design: the loop then measures, not judges.
    let relaxed = std::env::var("TUSK_POWER_DURABILITY").is_ok_and(|d| d == "relaxed");
    let config = if relaxed {
        "[storage]\ndurability = \"relaxed\"\n"
    } else {
        ""
    };
    let mut server = TestServer::spawn_in(config, &data);
    let facts: Facts = Arc::default();
    let mut tally = Tally::default();
    while tally.cuts < cuts && started.elapsed() < budget {
        let stop = Arc::new(AtomicBool::new(false));
        let base = server.endpoint().to_string();
        let clients: Vec<_> = (0..6)
            .map(|_| {
                let (facts, stop) = (Arc::clone(&facts), Arc::clone(&stop));
                let (endpoint, base, seed) =
                    (server.endpoint().to_string(), base.clone(), rng.next_u64());
                thread::spawn(move || client(facts, endpoint, base, seed, stop))
            })
            .collect();
        // The random moment of the cut.
        thread::sleep(Duration::from_millis(rng.range(100, 700)));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client thread");
        }
        let cut = match mode.as_str() {
            "everything" => Cut::Everything,
            "random" => Cut::Random {
                seed: rng.next_u64(),
            },
            _ if rng.chance(1, 2) => Cut::Everything,
            _ => Cut::Random {
                seed: rng.next_u64(),
            },
        };
        lazy.cut_power(cut).expect("cutting the power");
        tally.cuts += 1;
        if let Err(why) = server.try_start() {
            tally.failed_starts += 1;
            let tail: Vec<char> = why.chars().collect();
            let tail: String = tail[tail.len().saturating_sub(1500)..].iter().collect();
            tally
                .problems
                .push(format!("cut {}: tusk did not start: ...{tail}", tally.cuts));
            break;
        }
        check(&facts, server.endpoint(), &mut tally);
    }
    server.kill9();
    for problem in tally.problems.iter().take(40) {
        println!("{problem}");
    }
    let checked = lock(&facts).iter().filter(|f| f.checked).count();
    println!("checks after the cuts: {} (seed above)", tally.checks);
    println!(
        "power cuts: {}, acknowledged uploads checked: {checked}, bytes lost: {}, corrupt: {}, resurrected: {}, failed starts: {}",
        tally.cuts, tally.bytes_lost, tally.corrupt, tally.resurrected, tally.failed_starts
    );
    let clean = tally.bytes_lost == 0
        && tally.corrupt == 0
        && tally.resurrected == 0
        && tally.failed_starts == 0;
    assert!(
        clean || relaxed,
        "acknowledged facts did not survive the power cuts (above)"
    );
    assert!(
        tally.cuts >= cuts.min(10),
        "only {} cuts within {budget:?}",
        tally.cuts
    );
}
