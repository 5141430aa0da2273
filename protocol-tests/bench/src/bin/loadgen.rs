//! `loadgen`: tusk against the bare hyper sink, in one invocation, on loopback.
//!
//! ```text
//! cargo run --release -p tusk-bench --bin loadgen -- [--quick] [--runs N] [--tusk PATH]
//!                                                    [--no-build] [--scratch DIR]
//! ```
//!
//! Each run starts, one after another and each on a fresh data dir: sink-fsync, tusk-fsync,
//! sink-nofsync, tusk-relaxed, (tusk-relaxed with a fixed 32 KiB buffer, when tusk has a key
//! for it) and sink-discard (the client's ceiling), runs every scenario against it and stops
//! it. The report (stdout, Markdown) gives the median of the runs; progress goes to stderr.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tusk_bench::disk;
use tusk_bench::procfs::{self, RssSampler};
use tusk_bench::report::{
    self, Metric, Results, Titles, SINK_DISCARD, SINK_FSYNC, SINK_NOFSYNC, TUSK_FSYNC,
    TUSK_RELAXED, TUSK_RELAXED_FIXED,
};
use tusk_bench::scenarios::{self, SlowPlan, Tally, Target};
use tusk_bench::servers::{self, Kind, Programs, Running, Spec};
use tusk_bench::sink::{self, SinkMode};

/// First argument that turns this binary into the sink (so the sink is its own process
/// without a second build step).
const SINK_ARG: &str = "__sink";

/// The config key asked for to compare the adaptive buffer with a fixed one.
const BUFFER_KEY: &str = "[transfer] buffer";

const RELAXED_CONFIG: &str = "[storage]\ndurability = \"relaxed\"\n";
/// tusk-fsync without the small-commit journal (every commit fdatasyncs its file).
const UNJOURNALED_CONFIG: &str = "[storage]\njournal_max_write = \"0\"\n";
const TUSK_FSYNC_UNJOURNALED: &str = "tusk-fsync-unjournaled";
const RELAXED_FIXED_CONFIG: &str =
    "[storage]\ndurability = \"relaxed\"\n\n[transfer]\nbuffer = \"32KiB\"\n";

#[derive(Debug)]
struct Options {
    quick: bool,
    runs: usize,
    tusk: Option<PathBuf>,
    build: bool,
    scratch: Option<PathBuf>,
    /// Scenarios to run (all when empty).
    only: Vec<Step>,
    /// Server labels to run (all when empty).
    servers: Vec<String>,
}

const USAGE: &str = "usage: loadgen [--quick] [--runs N] [--tusk PATH] [--no-build] [--scratch DIR]
  --quick      small sizes, a smoke run of about two minutes
  --runs N     repeat N times and report medians (default 1)
  --tusk PATH  the tusk binary (default: build it with cargo, then target/release/tusk)
  --no-build   use target/release/tusk as it is
  --scratch D  where the servers' data dirs go (default: the system temp dir)
  --only LIST  run only these scenarios: creations,heads,small,large,chunked,slow (for iterating;
               a partial table)
  --servers L  run only these servers, e.g. sink-fsync,tusk-fsync";

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        runs: 1,
        tusk: None,
        build: true,
        scratch: None,
        only: Vec::new(),
        servers: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--runs" => {
                options.runs = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n: &usize| n >= 1)
                    .ok_or("--runs needs a number >= 1")?;
            }
            "--tusk" => {
                options.tusk = Some(iter.next().ok_or("--tusk needs a path")?.into());
                options.build = false;
            }
            "--no-build" => options.build = false,
            "--scratch" => {
                options.scratch = Some(iter.next().ok_or("--scratch needs a dir")?.into())
            }
            "--only" => {
                let list = iter.next().ok_or("--only needs a list")?;
                options.only = list
                    .split(',')
                    .map(|name| Step::parse(name).ok_or(format!("unknown scenario {name}")))
                    .collect::<Result<_, _>>()?;
            }
            "--servers" => {
                let list = iter.next().ok_or("--servers needs a list")?;
                options.servers = list.split(',').map(str::to_owned).collect();
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
struct Plan {
    clients: usize,
    creation_time: Duration,
    head_time: Duration,
    head_uploads: usize,
    large: u64,
    parallel_uploads: usize,
    parallel_size: u64,
    chunked_size: u64,
    chunked_chunk: usize,
    small_count: u64,
    small_size: u64,
    small_clients: usize,
    slow: SlowPlan,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        let slow = SlowPlan {
            uploads: if quick { 200 } else { 1000 },
            rate: 16 << 10,
            duration: Duration::from_secs(if quick { 5 } else { 10 }),
            ramp: Duration::from_secs(if quick { 1 } else { 2 }),
        };
        Plan {
            clients: 32,
            creation_time: Duration::from_secs(if quick { 1 } else { 3 }),
            head_time: Duration::from_secs(if quick { 1 } else { 3 }),
            head_uploads: 64,
            large: if quick { 256 << 20 } else { 2 << 30 },
            parallel_uploads: 64,
            parallel_size: if quick { 4 << 20 } else { 16 << 20 },
            chunked_size: if quick { 64 << 20 } else { 512 << 20 },
            chunked_chunk: 4 << 10,
            small_count: if quick { 1000 } else { 5000 },
            small_size: 4 << 10,
            small_clients: 64,
            slow,
        }
    }

    fn large_title(&self) -> String {
        format!("1 × {}", size_name(self.large))
    }

    fn parallel_title(&self) -> String {
        format!(
            "{} × {}",
            self.parallel_uploads,
            size_name(self.parallel_size)
        )
    }

    fn titles(&self) -> Titles {
        let secs = |d: Duration| d.as_secs_f64();
        Titles {
            rows: vec![
                (
                    Metric::Creations,
                    format!(
                        "creations/s (POST, {} clients, {} s)",
                        self.clients,
                        secs(self.creation_time)
                    ),
                ),
                (
                    Metric::Heads,
                    format!(
                        "HEAD/s ({} clients, {} s)",
                        self.clients,
                        secs(self.head_time)
                    ),
                ),
                (
                    Metric::Large,
                    format!("{} in one PATCH (MiB/s)", self.large_title()),
                ),
                (
                    Metric::Parallel,
                    format!("{} in parallel (MiB/s, aggregate)", self.parallel_title()),
                ),
                (
                    Metric::Chunked,
                    format!(
                        "1 × {} in one chunked PATCH, {} chunks (MiB/s)",
                        size_name(self.chunked_size),
                        size_name(self.chunked_chunk as u64)
                    ),
                ),
                (
                    Metric::Small,
                    format!(
                        "{} × {} uploads, {} clients (uploads/s)",
                        report::thousands(self.small_count),
                        size_name(self.small_size),
                        self.small_clients
                    ),
                ),
                (
                    Metric::SlowCompleted,
                    format!(
                        "{} slow uploads ({} KiB/s for {} s each): completed",
                        report::thousands(self.slow.uploads as u64),
                        self.slow.rate >> 10,
                        self.slow.duration.as_secs()
                    ),
                ),
                (
                    Metric::RssSlow,
                    "peak RSS during the slow uploads (MiB)".to_owned(),
                ),
                (
                    Metric::RssFast,
                    "peak RSS during the other scenarios (MiB)".to_owned(),
                ),
                (
                    Metric::ServerCpu,
                    "server CPU s per GiB uploaded (large + parallel)".to_owned(),
                ),
                (
                    Metric::CpuPerCreation,
                    "server CPU µs per creation".to_owned(),
                ),
                (Metric::CpuPerHead, "server CPU µs per HEAD".to_owned()),
                (
                    Metric::CpuChunked,
                    "server CPU s per GiB of the chunked upload".to_owned(),
                ),
                (
                    Metric::CpuPerSmall,
                    "server CPU µs per small upload".to_owned(),
                ),
                (
                    Metric::ClientCpu,
                    "loadgen CPU s per GiB (same scenarios)".to_owned(),
                ),
            ],
            slow_total: self.slow.uploads,
        }
    }
}

fn size_name(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b.is_multiple_of(1 << 30) => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Build the tusk release binary (a no-op when it is up to date).
fn build_tusk(root: &Path) -> io::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building tusk: cargo build --release -p tusk --bin tusk");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "tusk", "--bin", "tusk"])
        .current_dir(root)
        .stdout(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("cargo build failed ({status})")))
    }
}

/// Whether tusk's reference config has the key for a fixed buffer (`[transfer] buffer`).
fn has_buffer_key(config: &str) -> bool {
    let mut section = String::new();
    for line in config.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
        } else if section == "transfer" {
            if let Some((key, _)) = line.split_once('=') {
                if key.trim() == "buffer" {
                    return true;
                }
            }
        }
    }
    false
}

/// The server being measured, so Ctrl-C can stop it.
static LIVE_PID: Mutex<Option<u32>> = Mutex::new(None);

fn set_live(pid: Option<u32>) {
    if let Ok(mut live) = LIVE_PID.lock() {
        *live = pid;
    }
}

/// Flush dirty pages between servers, so one server's writeback does not slow the next.
fn sync_disks() {
    let _ = Command::new("sync").status();
}

/// How long to wait at most for the disk to settle after a server's data is deleted.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

/// The disk's state between servers (see [`disk`]).
struct DiskWatch {
    dir: PathBuf,
    baseline: Duration,
    waited: Duration,
    longest: Duration,
    unsettled: usize,
}

impl DiskWatch {
    /// Measure the baseline: the best of three probes, before any server ran.
    fn new(scratch: &Path) -> io::Result<DiskWatch> {
        let dir = scratch.join("disk-probe");
        let mut baseline = Duration::MAX;
        for _ in 0..3 {
            baseline = baseline.min(disk::probe(&dir)?);
        }
        Ok(DiskWatch {
            dir,
            baseline,
            waited: Duration::ZERO,
            longest: Duration::ZERO,
            unsettled: 0,
        })
    }

    /// After a server stopped (and its data was deleted): wait until file creation is back
    /// to its baseline speed.
    fn settle(&mut self) {
        let (waited, last) = disk::settle(&self.dir, self.baseline, SETTLE_LIMIT);
        self.waited += waited;
        self.longest = self.longest.max(waited);
        if waited >= SETTLE_LIMIT {
            self.unsettled += 1;
        }
        eprintln!(
            "  disk settled in {:.1} s (create+fsync {} µs, baseline {} µs)",
            waited.as_secs_f64(),
            last.as_micros(),
            self.baseline.as_micros()
        );
    }

    fn describe(&self) -> String {
        format!(
            "Between servers loadgen waited {:.0} s in all (longest {:.0} s{}) for creating and \
             fsyncing a 4 KiB file to be back within 1.5× of its speed before the first server \
             ({} µs): deleting a server's data slows the next one's file creation for seconds.",
            self.waited.as_secs_f64(),
            self.longest.as_secs_f64(),
            if self.unsettled > 0 {
                format!(
                    "; {} times not settled within {} s",
                    self.unsettled,
                    SETTLE_LIMIT.as_secs()
                )
            } else {
                String::new()
            },
            self.baseline.as_micros()
        )
    }
}

fn note_failures(
    results: &mut Results,
    run: usize,
    label: &str,
    scenario: &str,
    metric: Metric,
    tally: &Tally,
) {
    if tally.failed() > 0 {
        results.flag(label, metric);
        results.problems.push(format!(
            "run {run}, {label}, {scenario}: {} failed ({})",
            tally.failed(),
            tally.describe_failures()
        ));
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// What a run needs to start servers and drive them.
struct Bench<'a> {
    runtime: &'a tokio::runtime::Runtime,
    programs: &'a Programs,
    scratch: &'a Path,
    plan: &'a Plan,
}

/// A server process and the sampler watching it.
struct Instance {
    server: Running,
    sampler: RssSampler,
    pid: String,
}

impl Instance {
    fn start(bench: &Bench<'_>, spec: &Spec) -> io::Result<Instance> {
        let server = Running::start(spec, bench.programs, bench.scratch)?;
        set_live(Some(server.pid()));
        Ok(Instance {
            sampler: RssSampler::start(server.pid()),
            pid: server.pid().to_string(),
            server,
        })
    }

    fn target(&self) -> Target {
        Target {
            addr: self.server.addr,
            base_path: self.server.base_path.clone(),
            creation_with_upload: self.server.spec.creation_with_upload(),
        }
    }

    /// Peak RSS so far, KiB (VmHWM, or the sampled maximum if larger).
    fn peak_kib(&self) -> u64 {
        procfs::status_kib(&self.pid, "VmHWM")
            .unwrap_or(0)
            .max(self.sampler.take_max_kib())
    }
}

/// The scenarios, in the order they run against each server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Creations,
    Heads,
    Small,
    /// The large single upload and the parallel ones, with CPU measured over both.
    Large,
    /// One upload in small chunks (chunked transfer encoding).
    Chunked,
    Slow,
}

impl Step {
    fn parse(name: &str) -> Option<Step> {
        match name {
            "creations" => Some(Step::Creations),
            "heads" => Some(Step::Heads),
            "small" => Some(Step::Small),
            "large" => Some(Step::Large),
            "chunked" => Some(Step::Chunked),
            "slow" => Some(Step::Slow),
            _ => None,
        }
    }
}

/// Run every scenario against a fresh server of `spec`; record its figures. A server that
/// stops answering is killed and a fresh one started for the next scenario. Returns whether
/// nothing broke (the server started every time and never died or hung).
fn measure(
    bench: &Bench<'_>,
    spec: &Spec,
    only: &[Step],
    results: &mut Results,
    run: usize,
) -> bool {
    let label = spec.label.clone();
    let plan = bench.plan;
    let runtime = bench.runtime;
    let hz = procfs::ticks_per_second();
    let say = |what: &str| eprintln!("  [run {run}] {label:<18} {what}");
    let mut intact = true;
    let mut instance: Option<Instance> = None;
    let mut fast_peak_kib: u64 = 0;
    let mut steps = vec![
        Step::Creations,
        Step::Heads,
        Step::Small,
        Step::Large,
        Step::Chunked,
    ];
    if spec.kind != Kind::Sink(SinkMode::Discard) {
        steps.push(Step::Slow);
    }
    if !only.is_empty() {
        steps.retain(|step| only.contains(step));
    }
    for step in steps {
        if instance.is_none() {
            match Instance::start(bench, spec) {
                Ok(started) => instance = Some(started),
                Err(err) => {
                    results
                        .problems
                        .push(format!("run {run}, {label}: did not start: {err}"));
                    return false;
                }
            }
        }
        let current = instance.as_ref().expect("started above");
        let target = current.target();
        let server_before = procfs::cpu_ticks(&current.pid);
        let per_op_cpu = |results: &mut Results, metric: Metric, tally: &Tally| {
            let after = procfs::cpu_ticks(&current.pid);
            if let (Some(a), Some(b), true) = (server_before, after, tally.ok > 0) {
                let micros = (b - a) as f64 / hz * 1e6 / tally.ok as f64;
                results.record(&label, metric, micros);
                say(&format!("  server CPU {micros:.0} µs per request"));
            }
        };
        let tally = match step {
            Step::Creations => {
                let tally = runtime.block_on(scenarios::creations(
                    &target,
                    plan.clients,
                    plan.creation_time,
                ));
                say(&format!("creations: {:.0}/s", tally.per_sec()));
                results.record(&label, Metric::Creations, tally.per_sec());
                per_op_cpu(results, Metric::CpuPerCreation, &tally);
                note_failures(results, run, &label, "creations", Metric::Creations, &tally);
                tally
            }
            Step::Heads => {
                let tally = runtime.block_on(scenarios::heads(
                    &target,
                    plan.clients,
                    plan.head_uploads,
                    plan.head_time,
                ));
                say(&format!("HEAD: {:.0}/s", tally.per_sec()));
                results.record(&label, Metric::Heads, tally.per_sec());
                per_op_cpu(results, Metric::CpuPerHead, &tally);
                note_failures(results, run, &label, "HEAD", Metric::Heads, &tally);
                tally
            }
            Step::Small => {
                let tally = runtime.block_on(scenarios::small(
                    &target,
                    plan.small_count,
                    plan.small_clients,
                    plan.small_size,
                ));
                say(&format!(
                    "small uploads: {:.0}/s ({} ok)",
                    tally.per_sec(),
                    tally.ok
                ));
                results.record(&label, Metric::Small, tally.per_sec());
                per_op_cpu(results, Metric::CpuPerSmall, &tally);
                note_failures(results, run, &label, "small uploads", Metric::Small, &tally);
                tally
            }
            Step::Large => {
                let server_before = procfs::cpu_ticks(&current.pid);
                let client_before = procfs::cpu_ticks("self");
                let large = runtime.block_on(scenarios::large(&target, plan.large));
                say(&format!(
                    "{}: {:.0} MiB/s",
                    plan.large_title(),
                    large.mib_per_sec()
                ));
                results.record(&label, Metric::Large, large.mib_per_sec());
                note_failures(results, run, &label, "large upload", Metric::Large, &large);
                let parallel = if large.timed_out {
                    large.clone()
                } else {
                    let parallel = runtime.block_on(scenarios::parallel(
                        &target,
                        plan.parallel_uploads,
                        plan.parallel_size,
                    ));
                    say(&format!(
                        "{}: {:.0} MiB/s",
                        plan.parallel_title(),
                        parallel.mib_per_sec()
                    ));
                    results.record(&label, Metric::Parallel, parallel.mib_per_sec());
                    note_failures(
                        results,
                        run,
                        &label,
                        "parallel uploads",
                        Metric::Parallel,
                        &parallel,
                    );
                    let server_after = procfs::cpu_ticks(&current.pid);
                    let client_after = procfs::cpu_ticks("self");
                    let gib = (large.bytes + parallel.bytes) as f64 / GIB;
                    if gib > 0.0 && !parallel.timed_out {
                        if let (Some(a), Some(b)) = (server_before, server_after) {
                            results.record(&label, Metric::ServerCpu, (b - a) as f64 / hz / gib);
                        }
                        if let (Some(a), Some(b)) = (client_before, client_after) {
                            results.record(&label, Metric::ClientCpu, (b - a) as f64 / hz / gib);
                        }
                    }
                    parallel
                };
                fast_peak_kib = fast_peak_kib.max(current.peak_kib());
                parallel
            }
            Step::Chunked => {
                let tally = runtime.block_on(scenarios::chunked(
                    &target,
                    plan.chunked_size,
                    plan.chunked_chunk,
                ));
                say(&format!(
                    "1 × {} in {} chunks: {:.0} MiB/s",
                    size_name(plan.chunked_size),
                    size_name(plan.chunked_chunk as u64),
                    tally.mib_per_sec()
                ));
                results.record(&label, Metric::Chunked, tally.mib_per_sec());
                if let (Some(a), Some(b), true) = (
                    server_before,
                    procfs::cpu_ticks(&current.pid),
                    tally.bytes > 0,
                ) {
                    let per_gib = (b - a) as f64 / hz / (tally.bytes as f64 / GIB);
                    results.record(&label, Metric::CpuChunked, per_gib);
                    say(&format!("  server CPU {per_gib:.2} s per GiB"));
                }
                note_failures(
                    results,
                    run,
                    &label,
                    "chunked upload",
                    Metric::Chunked,
                    &tally,
                );
                tally
            }
            Step::Slow => {
                fast_peak_kib = fast_peak_kib.max(current.peak_kib());
                let reset = procfs::reset_peak_rss(&current.pid);
                let tally = runtime.block_on(scenarios::slow(&target, plan.slow));
                let sampled = current.sampler.take_max_kib();
                let hwm = if reset {
                    procfs::status_kib(&current.pid, "VmHWM").unwrap_or(0)
                } else {
                    0
                };
                let peak = sampled.max(hwm) as f64 / 1024.0;
                say(&format!(
                    "slow uploads: {}/{} completed in {:.1} s, peak RSS {peak:.1} MiB{}",
                    tally.ok,
                    plan.slow.uploads,
                    tally.secs,
                    if reset {
                        ""
                    } else {
                        " (sampled; VmHWM reset refused)"
                    }
                ));
                results.record(&label, Metric::SlowCompleted, tally.ok as f64);
                results.record(&label, Metric::RssSlow, peak);
                note_failures(
                    results,
                    run,
                    &label,
                    "slow uploads",
                    Metric::SlowCompleted,
                    &tally,
                );
                tally
            }
        };
        let mut current = instance.take().expect("running");
        if step != Step::Slow {
            fast_peak_kib = fast_peak_kib.max(current.peak_kib());
        }
        let died = !current.server.alive();
        let stuck = !died
            && tally.timed_out
            && !runtime.block_on(scenarios::responsive(
                &current.target(),
                Duration::from_secs(5),
            ));
        if died || stuck {
            intact = false;
            let what = if died {
                "died"
            } else {
                "stopped answering (no answer to a POST within 5 s)"
            };
            results.problems.push(format!(
                "run {run}, {label}: the server {what} during {step:?}; killed, and a fresh one \
                 started for the next scenario. Its log ends:\n```\n{}\n```",
                servers::log_tail(current.server.log_path(), 5)
            ));
            say(&format!("server {what}; restarting it"));
            set_live(None);
            drop(current.sampler);
            current.server.abort();
            sync_disks();
        } else {
            instance = Some(current);
        }
    }
    if fast_peak_kib > 0 {
        results.record(&label, Metric::RssFast, fast_peak_kib as f64 / 1024.0);
    }
    if let Some(last) = instance {
        set_live(None);
        drop(last.sampler);
        if !last.server.stop() {
            results.problems.push(format!(
                "run {run}, {label}: did not exit cleanly on SIGTERM"
            ));
        }
    }
    intact
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SINK_ARG) {
        return match sink::main_with_args(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("sink: {err}");
                ExitCode::from(2)
            }
        };
    }
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("loadgen: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if message.is_empty() { 0 } else { 2 });
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Everything; returns whether nothing broke (servers started, stayed up and stopped).
fn run(options: &Options) -> io::Result<bool> {
    let root = workspace_root();
    let mut build_note = String::new();
    if options.build {
        if let Err(err) = build_tusk(&root) {
            eprintln!("loadgen: {err}; using the existing binary");
            build_note = format!(" (the build failed: {err}; an older binary was used)");
        }
    }
    let tusk = options
        .tusk
        .clone()
        .unwrap_or_else(|| target_dir(&root).join("release").join("tusk"));
    if !tusk.is_file() {
        return Err(io::Error::other(format!(
            "no tusk binary at {}; run `cargo build --release -p tusk`",
            tusk.display()
        )));
    }
    let programs = Programs {
        tusk: tusk.clone(),
        sink: std::env::current_exe()?,
        sink_prefix: vec![SINK_ARG.to_owned()],
    };
    let scratch = options
        .scratch
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("tusk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    let config_text = std::fs::read_to_string(root.join("config/tusk.toml")).unwrap_or_default();
    let fixed_buffer = has_buffer_key(&config_text);
    let mut specs = vec![
        Spec {
            label: SINK_FSYNC.to_owned(),
            kind: Kind::Sink(SinkMode::Fsync),
        },
        Spec {
            label: TUSK_FSYNC.to_owned(),
            kind: Kind::Tusk(None),
        },
        Spec {
            label: SINK_NOFSYNC.to_owned(),
            kind: Kind::Sink(SinkMode::NoFsync),
        },
        Spec {
            label: TUSK_RELAXED.to_owned(),
            kind: Kind::Tusk(Some(RELAXED_CONFIG.to_owned())),
        },
    ];
    if fixed_buffer {
        specs.push(Spec {
            label: TUSK_RELAXED_FIXED.to_owned(),
            kind: Kind::Tusk(Some(RELAXED_FIXED_CONFIG.to_owned())),
        });
    }
    if options
        .servers
        .iter()
        .any(|label| label == TUSK_FSYNC_UNJOURNALED)
    {
        // Only on request: an A/B of the small-commit journal, in the per-run lines.
        specs.push(Spec {
            label: TUSK_FSYNC_UNJOURNALED.to_owned(),
            kind: Kind::Tusk(Some(UNJOURNALED_CONFIG.to_owned())),
        });
    }
    specs.push(Spec {
        label: SINK_DISCARD.to_owned(),
        kind: Kind::Sink(SinkMode::Discard),
    });
    if !options.servers.is_empty() {
        specs.retain(|spec| options.servers.contains(&spec.label));
    }

    let plan = Plan::new(options.quick);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    {
        let scratch = scratch.clone();
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                if let Ok(Some(pid)) = LIVE_PID.lock().map(|p| *p) {
                    let _ = Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                }
                let _ = std::fs::remove_dir_all(&scratch);
                eprintln!("loadgen: interrupted");
                std::process::exit(130);
            }
        });
    }

    let mut disk_watch = DiskWatch::new(&scratch)?;
    let load_before = procfs::load_average();
    let started = Instant::now();
    let mut results = Results::default();
    let mut intact = true;
    for run in 1..=options.runs {
        eprintln!("run {run}/{}", options.runs);
        for spec in &specs {
            let bench = Bench {
                runtime: &runtime,
                programs: &programs,
                scratch: &scratch,
                plan: &plan,
            };
            intact &= measure(&bench, spec, &options.only, &mut results, run);
            disk_watch.settle();
        }
    }
    let elapsed = started.elapsed();
    let load_after = procfs::load_average();
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!(
        "loadgen: deleted its scratch files; on a disk mounted with discard, wait a minute before \
         the next invocation (deleting many small files slows file creation for about that long)"
    );

    let titles = plan.titles();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mode = if options.quick { "--quick" } else { "full" };
    println!(
        "### tusk vs a bare hyper sink ({mode}, median of {} run(s))\n",
        options.runs
    );
    println!(
        "{cpus} CPUs; load average {load_before} before, {load_after} after; {:.0} s in all; \
         tusk binary {}{build_note}. Every server ran alone, on loopback, on a fresh data dir \
         under {}; the client is loadgen itself, on the same cores.\n",
        elapsed.as_secs_f64(),
        tusk.display(),
        scratch.parent().unwrap_or(&scratch).display()
    );
    println!("{}\n", disk_watch.describe());
    println!("{}", report::main_table(&results, &titles));
    println!(
        "Ratios are tusk ÷ sink of the medians (above 1 means tusk is faster, or for RSS and CPU, \
         uses more). The sink answers POST/HEAD/PATCH with no checks and no database, fsyncing \
         each PATCH (sink-fsync) or not (sink-nofsync); for the small uploads it takes POST then \
         PATCH, tusk one creation-with-upload POST. Slow uploads come from 127.1.x.y, one \
         address each.\n"
    );
    println!("#### Targets\n");
    let verdicts = report::verdicts(
        &results,
        &titles,
        &plan.large_title(),
        &plan.parallel_title(),
    );
    println!("{}", report::verdict_table(&verdicts));
    println!("#### Client ceiling\n");
    println!("{}", report::ceiling_table(&results, &titles));
    if let Some(cpu) = results.median(SINK_DISCARD, Metric::ClientCpu) {
        println!(
            "Against sink-discard (reads and drops bodies, no files) the client sends at the rate \
             above using {cpu:.2} CPU s per GiB. A ratio near 1 in the last column means that \
             scenario is bound by the client and loopback, not by the server.\n"
        );
    }
    println!("#### Adaptive buffer vs fixed 32 KiB\n");
    if fixed_buffer {
        println!("{}", report::buffer_table(&results, &titles));
    } else {
        println!(
            "Not measured: config/tusk.toml has no `{BUFFER_KEY}` key yet. Wanted: \
             `[transfer] buffer = \"adaptive\" | \"32KiB\"` (any size; default \"adaptive\"). \
             When it exists, loadgen adds a tusk-relaxed server with `buffer = \"32KiB\"` and \
             prints this comparison.\n"
        );
    }
    if options.runs > 1 {
        println!("#### Spread\n");
        let mut labels = vec![SINK_FSYNC, TUSK_FSYNC, SINK_NOFSYNC, TUSK_RELAXED];
        if fixed_buffer {
            labels.push(TUSK_RELAXED_FIXED);
        }
        labels.push(SINK_DISCARD);
        println!("{}", report::spread_table(&results, &titles, &labels));
    }
    if results.any_flagged() {
        println!(
            "† some requests failed or the server stopped answering in at least one run (see \
         Problems); the figure counts only what succeeded.\n"
        );
    }
    if results.problems.is_empty() {
        println!("No request failed.");
    } else {
        println!("#### Problems\n");
        for problem in &results.problems {
            println!("- {problem}");
        }
    }
    Ok(intact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_key_is_found_only_in_its_section() {
        assert!(has_buffer_key("[transfer]\nbuffer = \"adaptive\" # x\n"));
        assert!(!has_buffer_key("[storage]\nbuffer = 1\n"));
        assert!(!has_buffer_key("[transfer]\n# buffer = \"32KiB\"\n"));
        assert!(!has_buffer_key("[transfer]\nbuffer_size = 1\n"));
    }

    #[test]
    fn sizes_are_named_in_binary_units() {
        assert_eq!(size_name(2 << 30), "2 GiB");
        assert_eq!(size_name(16 << 20), "16 MiB");
        assert_eq!(size_name(4096), "4 KiB");
    }
}
