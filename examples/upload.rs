//! `upload`: a resilient tus 1.0.0 command-line client for tusk (or any tus server).
//!
//! ```sh
//! cargo run --release                     # terminal 1: tusk on http://127.0.0.1:1080/files/
//! cargo run --example upload -- FILE http://127.0.0.1:1080/files/
//! cargo run --example upload -- FILE http://127.0.0.1:1080/files/ --chunk-size 16MiB --checksum sha256
//! cargo run --example upload -- FILE http://127.0.0.1:1080/files/ --parallel 4
//! ```
//!
//! Flags: `--chunk-size SIZE` (bytes per PATCH; `8MiB` by default; takes `512KiB`, `16MiB`, `1GiB`,
//! `10MB` or a plain number), `--checksum sha256|sha1` (an `Upload-Checksum` header on every PATCH),
//! `--parallel N` (N partial uploads sent concurrently, then joined with `Upload-Concat: final;…`),
//! `--state-dir DIR` (where resume state is kept, see below), `--token TOKEN` (or `TUSK_TOKEN`: a
//! bearer token for a server in token mode, from `tusk token`).
//!
//! What it does:
//!
//! * Streams the file from disk in 256 KiB reads; it never holds more than that (plus one read
//!   for the checksum pass, also streamed) in memory, whatever the file size.
//! * Prints `created URL` on stdout once the server has created the upload, `resuming URL from
//!   offset N` when it picks up an earlier upload, and `uploaded URL` at the end (exit status 0).
//!   Retries and notes go to stderr; a progress bar (bytes, rate, ETA) is drawn on stderr when it
//!   is a terminal.
//! * **Resume across runs.** The upload URL (or the part URLs and the final URL with
//!   `--parallel`) is kept in a state file named after a fingerprint of the file: sha256 of its
//!   canonical path, size, modification time and the endpoint URL. The file lives in
//!   `$XDG_STATE_HOME/tusk-upload/<fingerprint>.json`, or `~/.local/state/tusk-upload/` when
//!   `XDG_STATE_HOME` is unset (`--state-dir` overrides both). A second run on the same, unchanged
//!   file `HEAD`s the stored URL and continues from its `Upload-Offset`; if the server answers
//!   404 or 410 (or the upload's length no longer matches) it starts a new upload. The state file
//!   is removed after a successful upload. A run with a different `--parallel` ignores (and
//!   replaces) the stored state; the old uploads are left to expire on the server.
//! * **Retries.** Every request that fails with a connection error, a timeout or stall (no byte
//!   moved for 60 s), 5xx, 408, 409, 423, 429 or 460 (checksum mismatch) is retried after an
//!   exponential backoff with full jitter (base 200 ms, cap 10 s; at least 50 ms, so that the
//!   HEAD after a broken PATCH does not overtake the server's commit of that PATCH). Before a
//!   PATCH is retried the client `HEAD`s the upload and continues from the server's offset (tusk
//!   keeps the bytes of a PATCH that broke off). Up to 20 tries in a row without progress;
//!   the counter resets whenever the offset advanced. An upload that disappears (404/410)
//!   mid-way is started anew. Each retry is reported on stderr.
//! * Any other answer (400, 403, 412, 413, 415, …) ends the run with exit status 1 and the
//!   server's reason; so does running out of tries. The state file is kept for the next run.
//!
//! Plain `http://` only: the client has no TLS stack (put tusk behind a local proxy for HTTPS).
#![deny(warnings)]

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::StreamExt as _;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::task::JoinSet;
use tokio_util::io::ReaderStream;

/// Size of one read from the file, for the request body and for the checksum pass.
const READ_BUF: usize = 256 * 1024;
/// First backoff ceiling; doubled per failed try.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Largest backoff ceiling.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Shortest sleep between tries (see the header: lets the server commit a broken PATCH first).
const BACKOFF_FLOOR: Duration = Duration::from_millis(50);
/// Tries in a row without the offset advancing before the client gives up.
const MAX_TRIES: u32 = 20;
/// A PATCH is abandoned when no body byte moved (and no answer came) for this long.
const PATCH_STALL: Duration = Duration::from_secs(60);
/// Limit for HEAD and POST requests, and for reading any response body.
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// The protocol version sent on every request.
const TUS_VERSION: &str = "1.0.0";

/// Command line (see the crate documentation above).
#[derive(Parser, Debug)]
#[command(about = "Upload a file to a tus server (tusk), resuming across failures and runs")]
struct Args {
    /// The file to upload.
    file: PathBuf,
    /// The creation endpoint, e.g. http://127.0.0.1:1080/files/
    url: String,
    /// Bytes per PATCH request: 8MiB, 512KiB, 1GiB, 10MB or a plain number.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Send `Upload-Checksum` with this algorithm on every PATCH.
    #[arg(long, value_enum)]
    checksum: Option<Algorithm>,
    /// Split the file into N partial uploads sent concurrently, then join them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Where resume state is kept (default: $XDG_STATE_HOME/tusk-upload or ~/.local/state/tusk-upload).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Bearer token for a server in token mode (see `tusk token`).
    #[arg(long, env = "TUSK_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Checksum algorithms the client can send (tus checksum extension names).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Algorithm {
    /// SHA-256.
    Sha256,
    /// SHA-1 (the one every tus server with the checksum extension must support).
    Sha1,
}

impl Algorithm {
    /// The name used in `Upload-Checksum`.
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha1 => "sha1",
        }
    }
}

/// Parses `8MiB`, `512KiB`, `1GiB`, `10MB`, `64KB`, `1000` into bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 8MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    match number.checked_mul(factor) {
        Some(0) => Err("the size must be at least 1 byte".into()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{text:?} is too large")),
    }
}

/// What is remembered between runs, as JSON in the state file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct State {
    /// The file, as given (for people reading the state file).
    file: String,
    /// The creation endpoint the uploads were created at.
    endpoint: String,
    /// The file size when the uploads were created.
    size: u64,
    /// How many parts (1: a plain upload, no concatenation).
    parallel: u16,
    /// Upload URL of each part, once created (one entry without `--parallel`).
    parts: Vec<Option<String>>,
    /// With `--parallel`: the final (concatenated) upload, once created.
    final_url: Option<String>,
}

/// The request body type: empty, or a stream of file bytes.
type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Why a request did not succeed, and what to do about it.
#[derive(Debug)]
enum Failure {
    /// Transient: try again after a backoff (connection error, timeout, 5xx, 409, 423, 460, …).
    Retry(String),
    /// The upload is no longer there (404, 410) or is not the one we expect: start it anew.
    Gone(String),
    /// Give up now.
    Fatal(String),
}

/// What a HEAD tells about an upload.
struct UploadStatus {
    /// `Upload-Offset`.
    offset: u64,
    /// `Upload-Length`, if the server announced it.
    length: Option<u64>,
}

/// Progress shared by all parts: one counter per part, drawn as one bar.
struct Progress {
    /// The bar (hidden when stderr is not a terminal).
    bar: ProgressBar,
    /// Bytes of each part that are acknowledged or on their way (the request bodies count
    /// what they send, a server answer sets the acknowledged offset).
    parts: Arc<Vec<AtomicU64>>,
}

impl Progress {
    /// Sets part `index` to what the server acknowledged.
    fn set(&self, index: usize, offset: u64) {
        self.parts[index].store(offset, Ordering::Relaxed);
        let total = self.parts.iter().map(|p| p.load(Ordering::Relaxed)).sum();
        self.bar.set_position(total);
    }

    /// Prints a line on stderr without tearing the bar.
    fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Prints a line on stdout without tearing the bar.
    fn say(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }
}

/// Everything the upload tasks share.
struct Ctx {
    /// hyper's pooled HTTP/1.1 client.
    client: Client<HttpConnector, Body>,
    /// The creation endpoint.
    endpoint: String,
    /// The file being uploaded.
    file: PathBuf,
    /// `Upload-Metadata` for the plain or final upload (`filename <base64>`).
    metadata: String,
    /// Bytes per PATCH.
    chunk_size: u64,
    /// Checksum sent with each PATCH, if any.
    checksum: Option<Algorithm>,
    /// `Authorization: Bearer ...` for every request, if given.
    authorization: Option<http::HeaderValue>,
    /// `(start, length)` of each part within the file.
    ranges: Vec<(u64, u64)>,
    /// The remembered state, written to `state_path` on every change.
    state: Mutex<State>,
    /// The state file.
    state_path: PathBuf,
    /// The progress bar.
    progress: Progress,
}

impl Ctx {
    /// Whether this is a concatenation (`--parallel` > 1) upload.
    fn concatenated(&self) -> bool {
        self.ranges.len() > 1
    }

    /// Label for messages about part `index`.
    fn label(&self, index: usize) -> String {
        if self.concatenated() {
            format!("part {}/{}: ", index + 1, self.ranges.len())
        } else {
            String::new()
        }
    }

    /// Changes the state and writes it to disk (atomically: temporary file, then rename).
    fn update_state(&self, change: impl FnOnce(&mut State)) -> Result<(), String> {
        let json = {
            let mut state = self.state.lock().map_err(|_| "state lock poisoned")?;
            change(&mut state);
            serde_json::to_vec_pretty(&*state).map_err(|e| e.to_string())?
        };
        let tmp = self.state_path.with_extension("json.tmp");
        fs::write(&tmp, json)
            .and_then(|()| fs::rename(&tmp, &self.state_path))
            .map_err(|e| format!("cannot write {}: {e}", self.state_path.display()))
    }

    /// A copy of the current state.
    fn snapshot(&self) -> State {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

/// Counts tries without progress and sleeps between them.
struct Retrier {
    /// Failed tries since the offset last advanced.
    failures: u32,
}

impl Retrier {
    /// A fresh counter.
    fn new() -> Self {
        Retrier { failures: 0 }
    }

    /// The offset advanced: start counting again.
    fn progressed(&mut self) {
        self.failures = 0;
    }

    /// Records a failed try; sleeps with backoff, or returns why it gives up.
    async fn again(&mut self, progress: &Progress, what: &str, why: &str) -> Result<(), String> {
        self.failures += 1;
        if self.failures >= MAX_TRIES {
            return Err(format!(
                "{what} failed {MAX_TRIES} times in a row without progress; last error: {why}"
            ));
        }
        let delay = backoff(self.failures);
        progress.note(&format!(
            "retry {}/{}: {what} failed ({why}); next try in {} ms",
            self.failures,
            MAX_TRIES - 1,
            delay.as_millis()
        ));
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^(try-1))]`, at least
/// the floor.
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let jitter = rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(jitter).max(BACKOFF_FLOOR)
}

/// A request with the tus version header and an empty body.
fn request(method: Method, url: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(url)
        .header("Tus-Resumable", TUS_VERSION)
}

/// An empty request body.
fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Sends one request; fails when the answer does not start within `stall` of the last byte
/// counted by `moved` (the request body bumps it). Returns status, headers and the body text.
async fn exchange(
    ctx: &Ctx,
    mut req: Request<Body>,
    moved: &AtomicU64,
    stall: Duration,
) -> Result<(StatusCode, HeaderMap, String), Failure> {
    if let Some(value) = &ctx.authorization {
        req.headers_mut()
            .insert(http::header::AUTHORIZATION, value.clone());
    }
    let response = ctx.client.request(req);
    tokio::pin!(response);
    let mut seen = moved.load(Ordering::Relaxed);
    let mut since = Instant::now();
    let response = loop {
        tokio::select! {
            r = &mut response => break r,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                let now = moved.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    since = Instant::now();
                } else if since.elapsed() >= stall {
                    return Err(Failure::Retry(format!("no progress for {} s", stall.as_secs())));
                }
            }
        }
    };
    let response = response.map_err(|e| Failure::Retry(connection_error(&e)))?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(SHORT_TIMEOUT, body.collect())
        .await
        .map_err(|_| Failure::Retry("timed out reading the response".into()))?
        .map_err(|e| Failure::Retry(format!("reading the response: {e}")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    Ok((parts.status, parts.headers, text))
}

/// The message of a client error with its causes (hyper's top-level message is terse).
fn connection_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sorts an unexpected answer into retry, gone or fatal.
fn classify(status: StatusCode, body: &str, on_upload: bool) -> Failure {
    let status_text = match (status.canonical_reason(), status.as_u16()) {
        (Some(_), _) => status.to_string(),
        (None, 460) => "460 Checksum Mismatch".to_string(),
        (None, code) => code.to_string(),
    };
    let text = if body.is_empty() {
        status_text
    } else {
        format!("{status_text}: {body}")
    };
    match status.as_u16() {
        404 | 410 if on_upload => Failure::Gone(text),
        408 | 409 | 423 | 429 | 460 | 500..=599 => Failure::Retry(text),
        _ => Failure::Fatal(text),
    }
}

/// A numeric header, if present and well-formed.
fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Resolves a `Location` against the endpoint (tusk sends absolute URLs; others may not).
fn resolve(endpoint: &str, location: &str) -> Result<String, String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Ok(location.to_string());
    }
    let base: Uri = endpoint.parse().map_err(|e| format!("bad endpoint: {e}"))?;
    let origin = format!(
        "{}://{}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map(|a| a.as_str()).unwrap_or_default()
    );
    if location.starts_with('/') {
        Ok(format!("{origin}{location}"))
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        Ok(format!("{origin}{dir}{location}"))
    }
}

/// HEAD an upload.
async fn head(ctx: &Ctx, url: &str) -> Result<UploadStatus, Failure> {
    let req = request(Method::HEAD, url)
        .body(empty())
        .map_err(|e| Failure::Fatal(e.to_string()))?;
    let (status, headers, body) = exchange(ctx, req, &AtomicU64::new(0), SHORT_TIMEOUT).await?;
    if !status.is_success() {
        return Err(classify(status, &body, true));
    }
    let offset = number(&headers, "upload-offset")
        .ok_or_else(|| Failure::Retry("HEAD answer without a valid Upload-Offset".into()))?;
    Ok(UploadStatus {
        offset,
        length: number(&headers, "upload-length"),
    })
}

/// POST to the endpoint; returns the new upload's URL. `concat` is the `Upload-Concat` value.
async fn create(ctx: &Ctx, length: Option<u64>, concat: Option<&str>) -> Result<String, Failure> {
    let mut req = request(Method::POST, &ctx.endpoint);
    if let Some(length) = length {
        req = req.header("Upload-Length", length);
    }
    if let Some(concat) = concat {
        req = req.header("Upload-Concat", concat);
    }
    if concat != Some("partial") {
        req = req.header("Upload-Metadata", &ctx.metadata);
    }
    let req = req
        .body(empty())
        .map_err(|e| Failure::Fatal(e.to_string()))?;
    let (status, headers, body) = exchange(ctx, req, &AtomicU64::new(0), SHORT_TIMEOUT).await?;
    if status != StatusCode::CREATED {
        return Err(classify(status, &body, false));
    }
    let location = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Failure::Fatal("201 Created without a Location header".into()))?;
    resolve(&ctx.endpoint, location).map_err(Failure::Fatal)
}

/// `base64(digest)` of `len` bytes of `path` from `start`, read in 256 KiB pieces.
fn digest(path: &Path, start: u64, len: u64, algorithm: Algorithm) -> io::Result<String> {
    enum Hasher {
        Sha256(Sha256),
        Sha1(Sha1),
    }
    let mut hasher = match algorithm {
        Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
        Algorithm::Sha1 => Hasher::Sha1(Sha1::new()),
    };
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut reader = file.take(len);
    let mut buf = vec![0; READ_BUF];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        match &mut hasher {
            Hasher::Sha256(h) => h.update(&buf[..n]),
            Hasher::Sha1(h) => h.update(&buf[..n]),
        }
    }
    if total != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file got shorter while uploading",
        ));
    }
    let sum = match hasher {
        Hasher::Sha256(h) => h.finalize().to_vec(),
        Hasher::Sha1(h) => h.finalize().to_vec(),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(sum))
}

/// PATCH `len` bytes of part `index` at part offset `offset`, streamed from the file; returns
/// the server's new offset.
async fn patch(ctx: &Ctx, index: usize, url: &str, offset: u64, len: u64) -> Result<u64, Failure> {
    let (start, _) = ctx.ranges[index];
    let position = start + offset;
    let mut req = request(Method::PATCH, url)
        .header("Upload-Offset", offset)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Content-Length", len);
    if let Some(algorithm) = ctx.checksum {
        let path = ctx.file.clone();
        let sum = tokio::task::spawn_blocking(move || digest(&path, position, len, algorithm))
            .await
            .map_err(|e| Failure::Fatal(format!("checksum task: {e}")))?
            .map_err(|e| Failure::Fatal(format!("reading {}: {e}", ctx.file.display())))?;
        req = req.header("Upload-Checksum", format!("{} {sum}", algorithm.name()));
    }

    let mut file = tokio::fs::File::open(&ctx.file)
        .await
        .map_err(|e| Failure::Fatal(format!("opening {}: {e}", ctx.file.display())))?;
    file.seek(SeekFrom::Start(position))
        .await
        .map_err(|e| Failure::Fatal(format!("seeking in {}: {e}", ctx.file.display())))?;
    let moved = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&moved);
    let (bar, parts) = (ctx.progress.bar.clone(), Arc::clone(&ctx.progress.parts));
    let sink = move |n: u64| {
        counter.fetch_add(n, Ordering::Relaxed);
        parts[index].fetch_add(n, Ordering::Relaxed);
        bar.inc(n);
    };
    let stream = ReaderStream::with_capacity(file.take(len), READ_BUF).map(move |piece| {
        piece.map(|bytes| {
            sink(bytes.len() as u64);
            Frame::data(bytes)
        })
    });
    let req = req
        .body(StreamBody::new(stream).boxed_unsync())
        .map_err(|e| Failure::Fatal(e.to_string()))?;

    let (status, headers, body) = exchange(ctx, req, &moved, PATCH_STALL).await?;
    if status != StatusCode::NO_CONTENT && !status.is_success() {
        return Err(classify(status, &body, true));
    }
    number(&headers, "upload-offset")
        .ok_or_else(|| Failure::Retry("PATCH answer without a valid Upload-Offset".into()))
}

/// Brings part `index` to completion: creates it (or finds the stored upload with HEAD),
/// then PATCHes chunk after chunk, re-syncing with HEAD after every failure.
async fn drive_part(ctx: Arc<Ctx>, index: usize) -> Result<String, String> {
    let (_, len) = ctx.ranges[index];
    let label = ctx.label(index);
    let concat = ctx.concatenated().then_some("partial");
    let mut retry = Retrier::new();

    // Find out where we stand: a stored upload that still exists, or a new one.
    let stored = ctx.snapshot().parts[index].clone();
    let (url, mut offset) = 'found: {
        if let Some(url) = stored {
            loop {
                match head(&ctx, &url).await {
                    Ok(s) if s.length.is_none_or(|l| l == len) && s.offset <= len => {
                        ctx.progress
                            .say(&format!("{label}resuming {url} from offset {}", s.offset));
                        break 'found (url, s.offset);
                    }
                    Ok(s) => {
                        ctx.progress.note(&format!(
                            "{label}stored upload {url} has length {:?}, expected {len}: starting anew",
                            s.length
                        ));
                        break;
                    }
                    Err(Failure::Gone(why)) => {
                        ctx.progress.note(&format!(
                            "{label}stored upload {url} is gone ({why}): starting anew"
                        ));
                        break;
                    }
                    Err(Failure::Retry(why)) => retry.again(&ctx.progress, "HEAD", &why).await?,
                    Err(Failure::Fatal(why)) => return Err(format!("{label}HEAD {url}: {why}")),
                }
            }
        }
        (new_upload(&ctx, index, len, concat, &mut retry).await?, 0)
    };
    let mut url = url;
    ctx.progress.set(index, offset);

    while offset < len {
        let n = ctx.chunk_size.min(len - offset);
        let failure = match patch(&ctx, index, &url, offset, n).await {
            Ok(new) if new > offset && new <= len => {
                offset = new;
                retry.progressed();
                ctx.progress.set(index, offset);
                continue;
            }
            Ok(new) => Failure::Retry(format!(
                "server answered Upload-Offset {new} after a PATCH at {offset}"
            )),
            Err(failure) => failure,
        };
        ctx.progress.set(index, offset);
        match failure {
            Failure::Fatal(why) => return Err(format!("{label}PATCH {url}: {why}")),
            Failure::Gone(why) => {
                retry
                    .again(
                        &ctx.progress,
                        &format!("{label}PATCH"),
                        &format!("upload gone: {why}"),
                    )
                    .await?;
                ctx.progress.note(&format!(
                    "{label}upload {url} disappeared: starting it anew"
                ));
                url = new_upload(&ctx, index, len, concat, &mut retry).await?;
                offset = 0;
                ctx.progress.set(index, 0);
            }
            Failure::Retry(why) => {
                retry
                    .again(&ctx.progress, &format!("{label}PATCH"), &why)
                    .await?;
                // Ask where the server stands (it keeps what it received of a broken PATCH).
                loop {
                    match head(&ctx, &url).await {
                        Ok(s) if s.offset <= len => {
                            if s.offset > offset {
                                retry.progressed();
                            }
                            ctx.progress.note(&format!(
                                "{label}server holds {} bytes: continuing from offset {}",
                                s.offset, s.offset
                            ));
                            offset = s.offset;
                            ctx.progress.set(index, offset);
                            break;
                        }
                        Ok(s) => {
                            return Err(format!(
                                "{label}HEAD {url}: offset {} beyond the length {len}",
                                s.offset
                            ))
                        }
                        Err(Failure::Gone(why)) => {
                            ctx.progress.note(&format!(
                                "{label}upload {url} is gone ({why}): starting anew"
                            ));
                            url = new_upload(&ctx, index, len, concat, &mut retry).await?;
                            offset = 0;
                            ctx.progress.set(index, 0);
                            break;
                        }
                        Err(Failure::Retry(why)) => {
                            retry
                                .again(&ctx.progress, &format!("{label}HEAD"), &why)
                                .await?
                        }
                        Err(Failure::Fatal(why)) => {
                            return Err(format!("{label}HEAD {url}: {why}"))
                        }
                    }
                }
            }
        }
    }
    Ok(url)
}

/// Creates the upload for part `index` (with retries), remembers it and announces it.
async fn new_upload(
    ctx: &Ctx,
    index: usize,
    len: u64,
    concat: Option<&str>,
    retry: &mut Retrier,
) -> Result<String, String> {
    let label = ctx.label(index);
    loop {
        match create(ctx, Some(len), concat).await {
            Ok(url) => {
                ctx.update_state(|s| s.parts[index] = Some(url.clone()))?;
                ctx.progress.say(&format!("{label}created {url}"));
                return Ok(url);
            }
            Err(Failure::Retry(why)) => {
                retry
                    .again(&ctx.progress, &format!("{label}POST"), &why)
                    .await?
            }
            Err(Failure::Gone(why) | Failure::Fatal(why)) => {
                return Err(format!("{label}POST {}: {why}", ctx.endpoint))
            }
        }
    }
}

/// With `--parallel`: the final upload joining all parts (a stored one if it is complete).
async fn finish_concat(ctx: &Ctx, urls: &[String]) -> Result<String, String> {
    let mut retry = Retrier::new();
    if let Some(url) = ctx.snapshot().final_url {
        loop {
            match head(ctx, &url).await {
                Ok(s) if s.length == Some(s.offset) && s.offset == total_len(ctx) => {
                    return Ok(url)
                }
                Ok(_) | Err(Failure::Gone(_) | Failure::Fatal(_)) => break,
                Err(Failure::Retry(why)) => retry.again(&ctx.progress, "HEAD final", &why).await?,
            }
        }
    }
    let concat = format!("final;{}", urls.join(" "));
    loop {
        match create(ctx, None, Some(&concat)).await {
            Ok(url) => {
                ctx.update_state(|s| s.final_url = Some(url.clone()))?;
                ctx.progress.say(&format!("created final {url}"));
                return Ok(url);
            }
            Err(Failure::Retry(why)) => retry.again(&ctx.progress, "POST final", &why).await?,
            Err(Failure::Gone(why) | Failure::Fatal(why)) => {
                return Err(format!("POST final {}: {why}", ctx.endpoint))
            }
        }
    }
}

/// The file size (sum of the parts).
fn total_len(ctx: &Ctx) -> u64 {
    ctx.ranges.iter().map(|(_, len)| len).sum()
}

/// `(start, length)` of `n` parts covering `size` bytes, as even as possible.
fn split(size: u64, n: u64) -> Vec<(u64, u64)> {
    let n = n.clamp(1, size.max(1));
    let (base, extra) = (size / n, size % n);
    let mut start = 0;
    (0..n)
        .map(|i| {
            let len = base + u64::from(i < extra);
            let range = (start, len);
            start += len;
            range
        })
        .collect()
}

/// The state directory: `--state-dir`, `$XDG_STATE_HOME/tusk-upload` or
/// `~/.local/state/tusk-upload`.
fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = flag {
        return dir;
    }
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    match (env("XDG_STATE_HOME"), env("HOME")) {
        (Some(state), _) => state.join("tusk-upload"),
        (None, Some(home)) => home.join(".local/state/tusk-upload"),
        (None, None) => std::env::temp_dir().join("tusk-upload"),
    }
}

/// sha256 (hex) of the canonical path, size, modification time and endpoint.
fn fingerprint(path: &Path, size: u64, mtime: SystemTime, endpoint: &str) -> String {
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut hasher = Sha256::new();
    for part in [
        path.to_string_lossy().as_bytes(),
        size.to_string().as_bytes(),
        format!("{}.{:09}", since.as_secs(), since.subsec_nanos()).as_bytes(),
        endpoint.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs the whole upload; returns the final URL.
async fn run(args: Args) -> Result<String, String> {
    let path = fs::canonicalize(&args.file)
        .map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let meta = fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let size = meta.len();
    let endpoint: Uri = args
        .url
        .parse()
        .map_err(|e| format!("bad URL {:?}: {e}", args.url))?;
    match endpoint.scheme_str() {
        Some("http") => {}
        Some(other) => return Err(format!("only http:// URLs are supported, not {other}://")),
        None => return Err(format!("{:?} is not an absolute http:// URL", args.url)),
    }
    let endpoint = args.url.clone();

    let dir = state_dir(args.state_dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let state_path = dir.join(format!(
        "{}.json",
        fingerprint(&path, size, mtime, &endpoint)
    ));

    let ranges = split(size, u64::from(args.parallel));
    let parallel = ranges.len() as u16;
    let fresh = State {
        file: path.display().to_string(),
        endpoint: endpoint.clone(),
        size,
        parallel,
        parts: vec![None; ranges.len()],
        final_url: None,
    };
    let stored = fs::read(&state_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<State>(&bytes).ok());
    let state = match stored {
        Some(s) if s.parallel == parallel && s.size == size && s.parts.len() == ranges.len() => s,
        Some(_) => {
            eprintln!(
                "note: {} was for another --parallel; starting over",
                state_path.display()
            );
            fresh
        }
        None => fresh,
    };

    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(20))
        .build(connector);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let authorization = match args
        .token
        .as_deref()
        .map(|t| format!("Bearer {}", t.trim()))
    {
        Some(value) => match http::HeaderValue::from_str(&value) {
            Ok(value) => Some(value),
            Err(_) => return Err("--token is not a valid header value".to_owned()),
        },
        None => None,
    };
    let ctx = Arc::new(Ctx {
        client,
        endpoint,
        metadata: format!(
            "filename {}",
            base64::engine::general_purpose::STANDARD.encode(name)
        ),
        file: path,
        chunk_size: args.chunk_size,
        checksum: args.checksum,
        authorization,
        progress: Progress {
            bar,
            parts: Arc::new(ranges.iter().map(|_| AtomicU64::new(0)).collect()),
        },
        ranges,
        state: Mutex::new(state),
        state_path,
    });
    ctx.update_state(|_| {})?;

    // Every part concurrently (one part without --parallel).
    let mut tasks = JoinSet::new();
    for index in 0..ctx.ranges.len() {
        let ctx = Arc::clone(&ctx);
        tasks.spawn(async move { (index, drive_part(ctx, index).await) });
    }
    let mut urls: HashMap<usize, String> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.map_err(|e| format!("upload task failed: {e}"))?;
        // The first failure ends the run; dropping `tasks` aborts the other parts.
        urls.insert(index, result?);
    }
    let mut urls: Vec<(usize, String)> = urls.into_iter().collect();
    urls.sort();
    let urls: Vec<String> = urls.into_iter().map(|(_, url)| url).collect();

    let url = if ctx.concatenated() {
        finish_concat(&ctx, &urls).await?
    } else {
        urls.into_iter().next().ok_or("no upload")?
    };
    ctx.progress.bar.finish();
    let _ = fs::remove_file(&ctx.state_path);
    Ok(url)
}

/// Entry point: runs the upload and maps the outcome to the exit status.
#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    match run(args).await {
        Ok(url) => {
            println!("uploaded {url}");
            eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("upload: giving up: {reason}");
            ExitCode::FAILURE
        }
    }
}
