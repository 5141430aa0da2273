//! Letting the disk settle between servers.
//!
//! Each server's data (thousands of small files and gigabytes of large ones) is deleted when
//! it stops. On this kind of machine (ext4 mounted with `discard`, on a virtual disk) the
//! hours after a mass deletion are not the issue, the seconds are: creating and fsyncing files
//! right after one ran up to ten times slower than before it (measured with a Python loop of
//! create + write 4 KiB + fdatasync: 229 µs each before, 1,162 µs right after deleting 6,000
//! such files). Whichever server came next paid for the previous one's cleanup, so the small-
//! upload figures said more about the order of the servers than about the servers.
//!
//! [`settle`] waits, after the deletion, until a probe of exactly that operation is back
//! near the figure measured before the first server ran, and stays there.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Names the probe files (they are never deleted while loadgen runs).
static NEXT_PROBE: AtomicU64 = AtomicU64::new(0);

/// Files created per probe.
const PROBE_FILES: usize = 20;

/// Median time to create a file, write 4 KiB and fdatasync it, in `dir` (which is left with
/// the probe files in it: deleting them would itself disturb the disk).
///
/// # Errors
/// When the files cannot be written.
pub fn probe(dir: &Path) -> io::Result<Duration> {
    std::fs::create_dir_all(dir)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(PROBE_FILES);
    for _ in 0..PROBE_FILES {
        let path = dir.join(format!(
            "probe-{}",
            NEXT_PROBE.fetch_add(1, Ordering::Relaxed)
        ));
        let started = Instant::now();
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Deletions slow file creation only once the journal commits them, a few seconds later
/// (ext4 commits every 5 s), and then for up to a minute: measured with create + 4 KiB +
/// fdatasync every 2 s after deleting 6,000 such files: 341 µs at once, then 1,100-1,800 µs
/// for 45 s (with the odd fast sample), then back to 210-360 µs. So [`settle`] first waits out
/// one commit, then wants several good probes in a row.
const FIRST_COMMIT: Duration = Duration::from_secs(6);

/// Good probes in a row that count as settled, and the pause between probes.
const GOOD_IN_A_ROW: u32 = 3;
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// `sync`, wait for the journal to commit what was deleted, then probe until the median is
/// within 1.5× of `baseline` (plus 100 µs, so a very fast baseline is not held to noise)
/// [`GOOD_IN_A_ROW`] times in a row, for at most `limit`. Returns how long it waited and the
/// last probe.
pub fn settle(dir: &Path, baseline: Duration, limit: Duration) -> (Duration, Duration) {
    let started = Instant::now();
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(FIRST_COMMIT);
    let good = baseline.mul_f64(1.5) + Duration::from_micros(100);
    let mut in_a_row = 0;
    loop {
        let last = probe(dir).unwrap_or(Duration::MAX);
        in_a_row = if last <= good { in_a_row + 1 } else { 0 };
        if in_a_row >= GOOD_IN_A_ROW || started.elapsed() >= limit {
            return (started.elapsed(), last);
        }
        std::thread::sleep(PROBE_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_measures_real_files_and_leaves_them() {
        let dir = tempfile::tempdir().unwrap();
        let median = probe(dir.path()).unwrap();
        assert!(median > Duration::ZERO);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), PROBE_FILES);
    }
}
