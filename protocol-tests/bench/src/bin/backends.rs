//! `backends`: tusk on the s3 backend (S3 + Redis) against tusk on the local backend (files +
//! sled), in one invocation, on loopback.
//!
//! ```text
//! cargo run --release -p tusk-bench --bin backends -- [--runs N] [--quick] [--no-build]
//! ```
//!
//! Starts a Redis and an S3 server (see `protocol-tests/backends/install.sh`; s3s-fs, or moto
//! with `TUSK_TEST_S3=moto`, as in the tests) on free ports, then
//! per run tusk-local and tusk-s3 one after another, each on a fresh data dir / key prefix,
//! and reports medians with the ratio s3 / local. Both tusk processes use fsync durability
//! (the default, and the only mode of the s3 backend). s3s-fs is itself a process writing
//! files on the same disk, so the ratio is the cost of the protocol round trips and the
//! extra copy through a second server, not of a network.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use protocol_tests::backends::{self, SharedBackend};
use tusk_bench::report::median;
use tusk_bench::scenarios::{self, Tally, Target};
use tusk_bench::servers::{Kind, Programs, Running, Spec};

const MIB: u64 = 1 << 20;

struct Plan {
    runs: usize,
    large: u64,
    parallel: (usize, u64),
    window: Duration,
}

/// Per scenario: its unit, then the local, s3 and S3-store-alone figures of every run.
type Row = (&'static str, &'static str, Vec<f64>, Vec<f64>, Vec<f64>);

/// One figure per scenario and backend, per run.
#[derive(Default)]
struct Figures {
    rows: Vec<Row>,
}

impl Figures {
    fn record(&mut self, name: &'static str, unit: &'static str, local: bool, value: f64) {
        let index = match self.rows.iter().position(|r| r.0 == name) {
            Some(i) => i,
            None => {
                self.rows
                    .push((name, unit, Vec::new(), Vec::new(), Vec::new()));
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[index];
        if local {
            row.2.push(value);
        } else {
            row.3.push(value);
        }
    }

    fn record_baseline(&mut self, name: &'static str, value: f64) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.0 == name) {
            row.4.push(value);
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the bench crate lives in protocol-tests/bench")
        .to_path_buf()
}

fn tusk_binary(build: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "tusk", "--bin", "tusk"])
            .current_dir(&root)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("cargo build failed ({status})"));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root.join(d) })
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("tusk");
    bin.exists()
        .then_some(bin)
        .ok_or_else(|| "no target/release/tusk".to_owned())
}

/// One variable of the environment that points tusk at `backend`.
fn env_value(backend: &SharedBackend, key: &str) -> String {
    backend
        .env()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// tusk's config for the s3 backend, from the backend's environment, under `prefix`.
fn s3_config(backend: &SharedBackend, prefix: &str) -> String {
    let get = |key: &str| env_value(backend, key);
    format!(
        "[storage]\nbackend = \"s3\"\n\n[s3]\nendpoint = \"{}\"\nbucket = \"{}\"\naccess_key = \"{}\"\nsecret_key = \"{}\"\nprefix = \"{prefix}/\"\n\n[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}:\"\n",
        get("TUSK_S3__ENDPOINT"),
        get("TUSK_S3__BUCKET"),
        get("TUSK_S3__ACCESS_KEY"),
        get("TUSK_S3__SECRET_KEY"),
        get("TUSK_REDIS__URL"),
    )
}

fn run_scenarios(
    runtime: &tokio::runtime::Runtime,
    target: &Target,
    plan: &Plan,
    local: bool,
    figures: &mut Figures,
    problems: &mut Vec<String>,
) {
    let mut note = |name: &str, tally: &Tally| {
        if tally.failed() > 0 {
            problems.push(format!(
                "{} {name}: {}",
                if local { "local" } else { "s3" },
                tally.describe_failures()
            ));
        }
    };
    let tally = runtime.block_on(scenarios::creations(target, 8, plan.window));
    note("creations", &tally);
    figures.record("creations", "/s", local, tally.per_sec());
    let tally = runtime.block_on(scenarios::heads(target, 8, 64, plan.window));
    note("HEAD", &tally);
    figures.record("HEAD", "/s", local, tally.per_sec());
    let tally = runtime.block_on(scenarios::large(target, plan.large));
    note("large", &tally);
    figures.record(
        "one large upload, one PATCH",
        "MiB/s",
        local,
        tally.mib_per_sec(),
    );
    let (count, size) = plan.parallel;
    let tally = runtime.block_on(scenarios::parallel(target, count, size));
    note("parallel", &tally);
    figures.record("parallel uploads", "MiB/s", local, tally.mib_per_sec());
}

/// The baseline for the s3 column: tusk's S3 store alone, in this process (no HTTP, no tus,
/// no Redis), writing `size` bytes in 1 MiB writes and completing, as `uploads` concurrent
/// uploads. MiB/s over the wall time.
async fn store_alone(backend: &SharedBackend, prefix: &str, uploads: usize, size: u64) -> f64 {
    use tusk::storage::BlobStore;
    let get = |key: &str| env_value(backend, key);
    let settings = tusk::config::S3Settings {
        endpoint: get("TUSK_S3__ENDPOINT"),
        bucket: get("TUSK_S3__BUCKET"),
        access_key: get("TUSK_S3__ACCESS_KEY"),
        secret_key: get("TUSK_S3__SECRET_KEY"),
        prefix: format!("{prefix}/"),
        ..tusk::config::S3Settings::default()
    };
    let store = std::sync::Arc::new(tusk::storage::s3::S3BlobStore::new(&settings).expect("store"));
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..uploads)
        .map(|_| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let info = tusk::upload::UploadInfo {
                    id: tusk::upload::UploadId::random(),
                    length: Some(size),
                    offset: 0,
                    metadata: String::new(),
                    created_at: 0,
                    expires_at: None,
                    concat: tusk::upload::Concat::None,
                    state: tusk::upload::UploadState::Initiated,
                    owner: None,
                };
                store.create(&info.id).await.expect("create");
                store.describe(&info).await.expect("describe");
                let mut writer = store.writer(&info.id).await.expect("writer");
                let mut buffer = bytes::BytesMut::new();
                let mut offset = 0;
                while offset < size {
                    let len = MIB.min(size - offset);
                    buffer.clear();
                    buffer.resize(len as usize, 0x5a);
                    let (back, result) = writer.write_at(buffer, offset).await;
                    result.expect("write");
                    buffer = back;
                    offset += len;
                }
                writer.sync().await.expect("sync");
                store.complete(&info.id, size).await.expect("complete");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("an upload task");
    }
    (uploads as u64 * size) as f64 / MIB as f64 / started.elapsed().as_secs_f64()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let build = !args.iter().any(|a| a == "--no-build");
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    if let Some(why) = backends::missing() {
        eprintln!("backends: {why}");
        return ExitCode::FAILURE;
    }
    let plan = if quick {
        Plan {
            runs: 1,
            large: 64 * MIB,
            parallel: (8, 8 * MIB),
            window: Duration::from_secs(2),
        }
    } else {
        Plan {
            runs,
            large: 512 * MIB,
            parallel: (16, 16 * MIB),
            window: Duration::from_secs(5),
        }
    };
    let tusk = match tusk_binary(build) {
        Ok(bin) => bin,
        Err(err) => {
            eprintln!("backends: {err}");
            return ExitCode::FAILURE;
        }
    };
    let scratch = tempfile_dir();
    let programs = Programs {
        tusk,
        sink: PathBuf::new(),
        sink_prefix: Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let backend = SharedBackend::start();
    let mut figures = Figures::default();
    let mut problems = Vec::new();
    for run in 1..=plan.runs {
        for local in [true, false] {
            let label = if local { "tusk-local" } else { "tusk-s3" };
            eprintln!("run {run}/{}: {label}", plan.runs);
            let config = (!local).then(|| s3_config(&backend, &format!("bench{run}")));
            let spec = Spec {
                label: format!("{label}-{run}"),
                kind: Kind::Tusk(config),
            };
            let server = match Running::start(&spec, &programs, &scratch) {
                Ok(server) => server,
                Err(err) => {
                    eprintln!("backends: {err}");
                    return ExitCode::FAILURE;
                }
            };
            let target = Target {
                addr: server.addr,
                base_path: server.base_path.clone(),
                creation_with_upload: true,
            };
            run_scenarios(&runtime, &target, &plan, local, &mut figures, &mut problems);
            server.stop();
            let _ = Command::new("sync").status();
        }
        let prefix = format!("alone{run}");
        let large = runtime.block_on(store_alone(&backend, &prefix, 1, plan.large));
        figures.record_baseline("one large upload, one PATCH", large);
        let (count, size) = plan.parallel;
        let parallel = runtime.block_on(store_alone(&backend, &prefix, count, size));
        figures.record_baseline("parallel uploads", parallel);
        let _ = Command::new("sync").status();
    }
    println!(
        "| scenario | tusk local (files + sled) | tusk s3 ({} + Redis) | s3 / local | S3 store alone | tusk s3 / store alone |\n|---|---|---|---|---|---|",
        backend.s3_server().name()
    );
    for (name, unit, local, s3, alone) in &figures.rows {
        let (l, s) = (median(local).unwrap_or(0.0), median(s3).unwrap_or(0.0));
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}x", a / b)
            } else {
                "-".to_owned()
            }
        };
        let (alone_text, alone_ratio) = match median(alone) {
            Some(a) => (format!("{a:.1} {unit}"), ratio(s, a)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {name} | {l:.1} {unit} | {s:.1} {unit} | {} | {alone_text} | {alone_ratio} |",
            ratio(s, l)
        );
    }
    println!(
        "\nmedian of {} run(s); large = {} MiB in one PATCH, parallel = {} x {} MiB",
        plan.runs,
        plan.large / MIB,
        plan.parallel.0,
        plan.parallel.1 / MIB
    );
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            eprintln!("failures: {problem}");
        }
        ExitCode::FAILURE
    }
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tusk-backends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}
