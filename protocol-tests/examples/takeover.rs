//! Takeover benchmark: how long a client that changed networks waits before its new
//! connection is writing again, while its old PATCH hangs on a half-open connection.
//!
//! ```sh
//! cargo run --release -p protocol-tests --example takeover -- [RUNS]   # default 30
//! ```
//!
//! Uses `$TUSK_BIN`, or builds `tusk` in release mode. Each run: create a 1 MiB upload,
//! PATCH 300 000 bytes of it through a [`FaultProxy`], let the server read them, then
//! switch paths (the old connection freezes, half-open) and, on a new connection, HEAD +
//! PATCH 64 KiB from the offset HEAD reports (HEAD + PATCH again after a 409). Measured
//! from the freeze: the HEAD's answer, and the 204 of the new PATCH (from then on HEAD
//! shows the new bytes). Prints min / median / p90 / max in milliseconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::proxy::{socket_addr_of, FaultProxy};
use protocol_tests::*;

const LEN: usize = 1024 * 1024;
const FIRST: usize = 300_000;
const SECOND: usize = 64 * 1024;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RUNS must be a number"))
        .unwrap_or(30);
    if std::env::var_os("TUSK_BIN").is_none() {
        let bin = build_release();
        std::env::set_var("TUSK_BIN", &bin);
    }
    println!("tusk binary: {}", tusk_bin().display());
    let server = TestServer::spawn();
    let proxy = FaultProxy::start(socket_addr_of(server.endpoint()));
    let source = pattern(99, LEN);

    let mut head_ms = Vec::with_capacity(runs);
    let mut patch_ms = Vec::with_capacity(runs);
    let mut retries = 0usize;
    for run in 0..runs {
        let url = create(&server, LEN as u64);
        // The old network: a PATCH whose body stops after FIRST bytes.
        let index = proxy.connection_count();
        let mut old = tus("PATCH", &proxy.url(&url))
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", "0")
            .header("Content-Length", &LEN.to_string())
            .open();
        let conn = proxy
            .wait_connection(index, Duration::from_secs(5))
            .expect("proxy accepted the PATCH");
        assert!(conn.wait_up_bytes(1, Duration::from_secs(5)));
        let head_len = conn.wait_up_quiet(Duration::from_millis(50), Duration::from_secs(5));
        old.write_all(&source[..FIRST])
            .expect("writing the first part");
        assert!(conn.wait_up_bytes(head_len + FIRST as u64, Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(200));

        // The phone leaves Wi-Fi: the old connection freezes, new ones flow.
        let frozen = Instant::now();
        proxy.switch_path();
        let via = proxy.url(&url);
        let mut first_head = None;
        loop {
            let offset = head_offset(&via);
            first_head.get_or_insert(frozen.elapsed());
            let off = offset as usize;
            let end = (off + SECOND).min(LEN);
            let resp = patch(&via, offset, &source[off..end]);
            match resp.status {
                204 => break,
                409 | 423 => retries += 1,
                _ => panic!("run {run}: new PATCH: {}", resp.describe()),
            }
            assert!(
                frozen.elapsed() < Duration::from_secs(30),
                "run {run}: no progress within 30 s"
            );
        }
        let took = frozen.elapsed();
        head_ms.push(ms(first_head.unwrap()));
        patch_ms.push(ms(took));
        old.abort();
        let del = tus("DELETE", &url).send();
        assert_status(&del, &[204], "DELETE");
    }

    println!("runs: {runs}  (HEAD/PATCH retries after 409/423: {retries})");
    report("freeze -> HEAD answered      ", &mut head_ms);
    report("freeze -> new PATCH's 204    ", &mut patch_ms);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(what: &str, values: &mut [f64]) {
    values.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what} ms: min {:.1}  median {:.1}  p90 {:.1}  max {:.1}",
        pick(0.0),
        pick(0.5),
        pick(0.9),
        pick(1.0)
    );
}

/// `cargo build --release -p tusk`; returns the binary's path.
fn build_release() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("building tusk (release)...");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "tusk", "--bin", "tusk"])
        .current_dir(&root)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build --release -p tusk failed");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    target
        .join("release")
        .join(format!("tusk{}", std::env::consts::EXE_SUFFIX))
}
