//! Harness for the black-box tus 1.0.0 conformance suite.
//!
//! The suite talks to a server over plain TCP with a small hand-written HTTP/1.1
//! client, so that tests can control exactly what goes on the wire: chunked bodies,
//! trailers, bodies that stop half-way, connections held open, custom methods.
//!
//! Servers are either spawned per test ([`TestServer::spawn`]) from the `tusk`
//! binary, or, when `TUSK_URL` is set, an externally running server is used.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod backends;
pub mod lazyfs;
pub mod proxy;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Read/write timeout applied to every socket the suite opens.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a spawned server has to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server has to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// The protocol version every request of the suite speaks.
pub const TUS_VERSION: &str = "1.0.0";

// ---------------------------------------------------------------------------
// Server harness
// ---------------------------------------------------------------------------

/// The endpoint of an external server under test, from `TUSK_URL`.
pub fn external_url() -> Option<String> {
    std::env::var("TUSK_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// True when the suite runs against an external server (`TUSK_URL`).
pub fn is_external() -> bool {
    external_url().is_some()
}

/// Skips (returns from) the current test when it runs against an external server,
/// because it needs a restart, a special configuration or the data directory.
#[macro_export]
macro_rules! needs_spawned_server {
    () => {
        if $crate::is_external() {
            println!("skipped: needs a spawned server");
            return;
        }
    };
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("protocol-tests lives inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Path of the server binary: `TUSK_BIN`, or `tusk` built once per test process.
pub fn tusk_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("TUSK_BIN") {
            return PathBuf::from(bin);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut build = Command::new(cargo);
        // What `cargo test` sets for this test process must not reach the build: some build
        // scripts (ring's) rerun when CARGO_MANIFEST_DIR changes, so every test run and every
        // `cargo build` after it would rebuild ring, rustls and tusk.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&name.as_ref())
            {
                build.env_remove(name.as_ref());
            }
        }
        let out = build
            .args(["build", "-p", "tusk", "--bin", "tusk"])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .expect("running cargo build for tusk");
        if !out.status.success() {
            panic!(
                "cargo build -p tusk failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bin = target_dir()
            .join("debug")
            .join(format!("tusk{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "built tusk but {} is missing", bin.display());
        bin
    })
    .clone()
}

/// A tus server under test: a spawned `tusk` child process, or an external server.
pub struct TestServer {
    endpoint: String,
    child: Option<Child>,
    data_dir: Option<tempfile::TempDir>,
    /// A data directory chosen by the test (e.g. on a [`lazyfs::LazyFs`]) instead of `data_dir`.
    data_at: Option<PathBuf>,
    config: Option<tempfile::NamedTempFile>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    env: Vec<(String, String)>,
}

/// With `TUSK_TEST_BACKEND=s3`, every server this harness spawns runs on one shared backend
/// (Redis + an S3 server) started for the test process: the protocol suite against the s3
/// backend. Unset (or `local`), servers use the local backend.
pub fn suite_backend_env() -> Vec<(String, String)> {
    static SHARED: OnceLock<Option<Mutex<backends::SharedBackend>>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| match std::env::var("TUSK_TEST_BACKEND").as_deref() {
        Ok("s3") => {
            if let Some(why) = backends::missing() {
                panic!("TUSK_TEST_BACKEND=s3: {why}");
            }
            Some(Mutex::new(backends::SharedBackend::start()))
        }
        Ok("local") | Err(_) => None,
        Ok(other) => panic!("TUSK_TEST_BACKEND={other}: expected s3 or local"),
    });
    shared
        .as_ref()
        .map(|b| b.lock().unwrap_or_else(|p| p.into_inner()).env())
        .unwrap_or_default()
}

/// Whether the suite runs against the shared (s3) backend.
pub fn suite_on_shared_backend() -> bool {
    matches!(std::env::var("TUSK_TEST_BACKEND").as_deref(), Ok("s3"))
}

/// Skip a test that checks something only the local backend has (files in the data
/// directory, sled, relaxed durability) when the suite runs on the shared backend.
#[macro_export]
macro_rules! local_backend_only {
    ($why:expr) => {
        if $crate::suite_on_shared_backend() {
            println!("skipped on the s3 backend: {}", $why);
            return;
        }
    };
}

impl TestServer {
    /// Starts a server with the default configuration (or uses `TUSK_URL`).
    pub fn spawn() -> TestServer {
        if let Some(url) = external_url() {
            return TestServer {
                endpoint: url,
                child: None,
                data_dir: None,
                data_at: None,
                config: None,
                stderr: Arc::default(),
                stdout: Arc::default(),
                env: Vec::new(),
            };
        }
        Self::spawn_inner(None, suite_backend_env())
    }

    /// Starts a server with the given TOML configuration file contents.
    ///
    /// Panics in external mode; guard the test with [`needs_spawned_server!`].
    pub fn spawn_with_config(toml: &str) -> TestServer {
        assert!(
            !is_external(),
            "spawn_with_config needs a spawned server; guard the test with needs_spawned_server!()"
        );
        Self::spawn_inner(Some(toml), suite_backend_env())
    }

    /// Starts a server with a configuration file and extra environment (e.g. a
    /// [`backends::SharedBackend::env`]); several can share one backend.
    pub fn spawn_with_env(toml: &str, env: Vec<(String, String)>) -> TestServer {
        Self::spawn_inner(Some(toml), env)
    }

    /// Starts a server with the given configuration on the data directory `dir` (which the
    /// test owns, e.g. one on a [`lazyfs::LazyFs`]).
    pub fn spawn_in(toml: &str, dir: &Path) -> TestServer {
        Self::build(Some(toml), suite_backend_env(), Some(dir.to_path_buf()))
    }

    fn spawn_inner(toml: Option<&str>, env: Vec<(String, String)>) -> TestServer {
        Self::build(toml, env, None)
    }

    fn build(
        toml: Option<&str>,
        env: Vec<(String, String)>,
        data_at: Option<PathBuf>,
    ) -> TestServer {
        let data_dir = tempfile::Builder::new()
            .prefix("tusk-data-")
            .tempdir()
            .expect("creating a data dir");
        let config = toml.map(|text| {
            let mut file = tempfile::Builder::new()
                .prefix("tusk-config-")
                .suffix(".toml")
                .tempfile()
                .expect("creating a config file");
            file.write_all(text.as_bytes()).expect("writing the config");
            file.flush().expect("flushing the config");
            file
        });
        let mut server = TestServer {
            endpoint: String::new(),
            child: None,
            data_dir: Some(data_dir),
            data_at,
            config,
            stderr: Arc::default(),
            stdout: Arc::default(),
            env,
        };
        server.start();
        server
    }

    /// True when this server was spawned by the harness.
    pub fn is_spawned(&self) -> bool {
        self.data_dir.is_some()
    }

    /// Starts the child process (again) on the same data dir and configuration.
    /// The port changes on every start; use [`TestServer::url`] to re-resolve paths.
    pub fn start(&mut self) {
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    /// Like [`TestServer::start`], but a server that does not come up (it exits, or does
    /// not say where it listens within `STARTUP_TIMEOUT`) is an error with its output.
    pub fn try_start(&mut self) -> Result<(), String> {
        assert!(self.is_spawned(), "start() needs a spawned server");
        assert!(self.child.is_none(), "server already running");
        let mut cmd = Command::new(tusk_bin());
        cmd.arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg("0")
            .arg("--data-dir")
            .arg(self.data_dir());
        if let Some(cfg) = &self.config {
            cmd.arg("--config").arg(cfg.path());
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawning {}: {e}", tusk_bin().display());
        });
        let stdout = child.stdout.take().expect("child stdout");
        let stderr = child.stderr.take().expect("child stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let out_buf = Arc::clone(&self.stdout);
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            let mut tx = Some(tx);
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                if let Some(pos) = text.find("listening on ") {
                    let rest = &text[pos + "listening on ".len()..];
                    if let Some(token) = rest.split_whitespace().next() {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(token.to_string());
                        }
                    }
                }
                out_buf.lock().unwrap().push_str(&text);
            }
        });
        let err_buf = Arc::clone(&self.stderr);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => err_buf
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line)),
                }
            }
        });
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(endpoint) => {
                self.endpoint = endpoint;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // Give the drain threads a moment to collect the last output.
                thread::sleep(Duration::from_millis(200));
                Err(format!(
                    "tusk did not print `listening on <url>` within {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    STARTUP_TIMEOUT,
                    self.stdout.lock().unwrap_or_else(|p| p.into_inner()),
                    self.stderr.lock().unwrap_or_else(|p| p.into_inner())
                ))
            }
        }
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("running kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            match child.try_wait().expect("waiting for tusk") {
                Some(_) => return,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tusk did not exit within {:?} of SIGTERM\n--- stderr ---\n{}",
                        SHUTDOWN_TIMEOUT,
                        self.stderr()
                    );
                }
                None => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// SIGTERM, wait for exit, then start again on the same data dir.
    pub fn restart(&mut self) {
        assert!(self.is_spawned(), "restart() needs a spawned server");
        self.terminate();
        self.start();
    }

    /// Kills the server with SIGKILL (no graceful shutdown). Call [`TestServer::start`]
    /// to bring it back on the same data dir.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The data directory of a spawned server.
    pub fn data_dir(&self) -> &Path {
        if let Some(dir) = &self.data_at {
            return dir;
        }
        self.data_dir
            .as_ref()
            .expect("data_dir() needs a spawned server")
            .path()
    }

    /// Path of the bytes of upload `id` (`<data_dir>/uploads/<first two hex digits>/<id>`).
    pub fn upload_file(&self, id: &str) -> PathBuf {
        self.data_dir().join("uploads").join(&id[..2]).join(id)
    }

    /// The upload creation URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Resolves an absolute URL, an absolute path or a relative reference against
    /// the creation endpoint. An absolute URL of a spawned server is re-rooted onto
    /// the current origin (so URLs stay valid across restarts).
    pub fn url(&self, path: &str) -> String {
        if self.is_spawned() && (path.starts_with("http://") || path.starts_with("https://")) {
            let p = path_of(path);
            return resolve(&self.endpoint, &p);
        }
        resolve(&self.endpoint, path)
    }

    /// Process id of a running spawned server (to send it signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Host and port of the current endpoint.
    pub fn authority(&self) -> String {
        Url::parse(&self.endpoint).authority()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() && self.is_spawned() {
            // Show what the server said, to help explain the failed assertion.
            thread::sleep(Duration::from_millis(100));
            let mut log = self.stdout.lock().unwrap().clone();
            log.push_str(&self.stderr.lock().unwrap());
            let tail: String = {
                let chars: Vec<char> = log.chars().collect();
                chars[chars.len().saturating_sub(4000)..].iter().collect()
            };
            eprintln!("--- tusk output (last 4000 chars) ---\n{tail}");
        }
    }
}

// ---------------------------------------------------------------------------
// URLs
// ---------------------------------------------------------------------------

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Request target: path plus query, starting with `/`.
    pub target: String,
}

impl Url {
    /// Parses an `http://` URL. Panics on anything else.
    pub fn parse(url: &str) -> Url {
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("only http:// URLs are supported, got {url:?}"));
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority.ends_with(']') => (
                &authority[..i],
                authority[i + 1..]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad port in {url:?}")),
            ),
            _ => (authority, 80),
        };
        Url {
            host: host.to_string(),
            port,
            target: target.to_string(),
        }
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Resolves `reference` (absolute URL, absolute path or relative path) against `base`.
pub fn resolve(base: &str, reference: &str) -> String {
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    if let Some(rest) = reference.strip_prefix("//") {
        return format!("{}{}", &base[..scheme_end], rest);
    }
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let origin = &base[..path_start];
    if reference.starts_with('/') {
        return format!("{origin}{reference}");
    }
    let base_path = &base[path_start..];
    let dir = match base_path.rfind('/') {
        Some(i) => &base_path[..=i],
        None => "/",
    };
    format!("{origin}{dir}{reference}")
}

/// The path (and query) of an absolute URL, or the input if it is already a path.
pub fn path_of(url: &str) -> String {
    if let Some(i) = url.find("://") {
        let rest = &url[i + 3..];
        match rest.find('/') {
            Some(j) => rest[j..].to_string(),
            None => "/".to_string(),
        }
    } else {
        url.to_string()
    }
}

/// The last path segment of an upload URL (the upload id).
pub fn upload_id(url: &str) -> String {
    let path = path_of(url);
    let path = path.split('?').next().unwrap_or("");
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// What a [`Request`] carries as body.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body (a `Content-Length: 0` is sent for methods that usually carry one).
    Empty,
    /// A body sent with `Content-Length`.
    Bytes(Vec<u8>),
    /// A body sent with `Transfer-Encoding: chunked`, chunk by chunk, then trailers.
    Chunked {
        /// Chunks as sent; empty chunks are skipped (they would end the body).
        chunks: Vec<Vec<u8>>,
        /// Trailer fields after the last chunk.
        trailers: Vec<(String, String)>,
    },
}

/// A raw HTTP/1.1 request. Only `Host` and (when needed) `Content-Length`,
/// `Transfer-Encoding` and `Connection: close` are added automatically.
#[derive(Debug, Clone)]
pub struct Request {
    /// Request method, sent verbatim.
    pub method: String,
    /// Absolute `http://` URL.
    pub url: String,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
}

/// A request with the `Tus-Resumable: 1.0.0` header already set.
pub fn tus(method: &str, url: &str) -> Request {
    Request::new(method, url).header("Tus-Resumable", TUS_VERSION)
}

impl Request {
    /// A request without any header (not even `Tus-Resumable`).
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Removes every header field with this name.
    pub fn without_header(mut self, name: &str) -> Request {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Sets a `Content-Length` body.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Request {
        self.body = Body::Bytes(bytes.into());
        self
    }

    /// Sets a chunked body with trailers.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>, trailers: Vec<(String, String)>) -> Request {
        self.body = Body::Chunked { chunks, trailers };
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn head_bytes(&self) -> Vec<u8> {
        let url = Url::parse(&self.url);
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, url.target);
        if !self.has_header("Host") {
            head.push_str(&format!("Host: {}\r\n", url.authority()));
        }
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        match &self.body {
            Body::Empty => {
                let bodyless = matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS");
                if !bodyless
                    && !self.has_header("Content-Length")
                    && !self.has_header("Transfer-Encoding")
                {
                    head.push_str("Content-Length: 0\r\n");
                }
            }
            Body::Bytes(b) => {
                if !self.has_header("Content-Length") {
                    head.push_str(&format!("Content-Length: {}\r\n", b.len()));
                }
            }
            Body::Chunked { .. } => {
                if !self.has_header("Transfer-Encoding") {
                    head.push_str("Transfer-Encoding: chunked\r\n");
                }
            }
        }
        if !self.has_header("Connection") {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Connects and sends only the request head; the body is left to the caller
    /// (or never sent, to hold the connection open).
    pub fn open(&self) -> RawConn {
        let url = Url::parse(&self.url);
        let stream = connect(&url);
        let mut conn = RawConn {
            stream,
            buf: Vec::new(),
            method: self.method.clone(),
            interim: Vec::new(),
        };
        conn.write_all(&self.head_bytes())
            .unwrap_or_else(|e| panic!("writing request head to {}: {e}", self.url));
        conn
    }

    /// Sends the whole request and reads the whole response.
    pub fn send(&self) -> Response {
        self.try_send()
            .unwrap_or_else(|e| panic!("{} {} failed: {e}", self.method, self.url))
    }

    /// Like [`Request::send`] but returns I/O errors.
    pub fn try_send(&self) -> std::io::Result<Response> {
        let url = Url::parse(&self.url);
        let stream = try_connect(&url)?;
        let mut conn = RawConn {
            stream,
            buf: Vec::new(),
            method: self.method.clone(),
            interim: Vec::new(),
        };
        let mut out = self.head_bytes();
        match &self.body {
            Body::Empty => {}
            Body::Bytes(b) => out.extend_from_slice(b),
            Body::Chunked { chunks, trailers } => {
                for c in chunks.iter().filter(|c| !c.is_empty()) {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (n, v) in trailers {
                    out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        // A server may answer early (e.g. 413) and close; still try to read its answer.
        let write_result = conn.write_all(&out);
        match conn.read_response() {
            Ok(r) => Ok(r),
            Err(e) => match write_result {
                Err(we) => Err(std::io::Error::new(
                    we.kind(),
                    format!("write failed ({we}); then read failed ({e})"),
                )),
                Ok(()) => Err(e),
            },
        }
    }
}

fn connect(url: &Url) -> TcpStream {
    try_connect(url).unwrap_or_else(|e| panic!("connecting to {}: {e}", url.authority()))
}

/// Like [`connect`], but a refused or reset connection is an error, not a panic: a server
/// killed on purpose (the crash loop) may die while a client is connecting.
fn try_connect(url: &Url) -> std::io::Result<TcpStream> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolving {}: {e}", url.authority()))
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
}

/// An open connection on which a request head has been sent.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    method: String,
    /// 1xx interim responses read so far (see [`RawConn::take_interim`]).
    interim: Vec<Response>,
}

impl RawConn {
    /// Writes raw bytes (part of a body, chunk framing, ...).
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes one chunk of a chunked body (skips empty chunks).
    pub fn write_chunk(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream
            .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
        self.stream.write_all(bytes)?;
        self.stream.write_all(b"\r\n")
    }

    /// Ends a chunked body with the given trailers.
    pub fn finish_chunked(&mut self, trailers: &[(&str, &str)]) -> std::io::Result<()> {
        let mut out = b"0\r\n".to_vec();
        for (n, v) in trailers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        self.stream.write_all(&out)
    }

    /// The 1xx interim responses the reads so far skipped, in arrival order.
    pub fn take_interim(&mut self) -> Vec<Response> {
        std::mem::take(&mut self.interim)
    }

    /// Sets the read timeout of this connection.
    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Closes the connection at once, without finishing the request.
    pub fn abort(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads a full response (skipping 1xx interim responses).
    pub fn read_response(&mut self) -> std::io::Result<Response> {
        let mut body = Vec::new();
        let mut r = self.read_response_with(|chunk| body.extend_from_slice(chunk))?;
        r.body = body;
        Ok(r)
    }

    /// Reads a response, handing the body to `sink` piece by piece (the returned
    /// `Response` has an empty `body`).
    pub fn read_response_with(&mut self, mut sink: impl FnMut(&[u8])) -> std::io::Result<Response> {
        loop {
            let head = self.read_head()?;
            let mut resp = parse_head(&head)?;
            if (100..200).contains(&resp.status) && resp.status != 101 {
                self.interim.push(resp);
                continue;
            }
            let no_body = self.method == "HEAD" || resp.status == 204 || resp.status == 304;
            if !no_body {
                let te = resp.header("Transfer-Encoding").unwrap_or("").to_string();
                if te.to_ascii_lowercase().contains("chunked") {
                    self.read_chunked_body(&mut sink, &mut resp)?;
                } else if let Some(cl) = resp.header("Content-Length") {
                    let n: u64 = cl.trim().parse().map_err(|_| bad("bad Content-Length"))?;
                    self.read_exact_into(n, &mut sink)?;
                } else {
                    self.read_to_end_into(&mut sink)?;
                }
            }
            return Ok(resp);
        }
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn read_head(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let head = self.buf[..i + 4].to_vec();
                self.buf.drain(..i + 4);
                return Ok(head);
            }
            if self.buf.len() > 1 << 20 {
                return Err(bad("response head too large"));
            }
            if self.fill()? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full response head (got {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(bad("connection closed inside chunk framing"));
            }
        }
    }

    fn read_exact_into(&mut self, mut n: u64, sink: &mut impl FnMut(&[u8])) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed with {n} body bytes missing"),
                ));
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    fn read_to_end_into(&mut self, sink: &mut impl FnMut(&[u8])) -> std::io::Result<()> {
        loop {
            if !self.buf.is_empty() {
                sink(&self.buf);
                self.buf.clear();
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    fn read_chunked_body(
        &mut self,
        sink: &mut impl FnMut(&[u8]),
        resp: &mut Response,
    ) -> std::io::Result<()> {
        loop {
            let line = self.read_line()?;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size_str = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_str, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                loop {
                    let t = self.read_line()?;
                    if t.is_empty() {
                        return Ok(());
                    }
                    let t = String::from_utf8_lossy(&t).into_owned();
                    if let Some((n, v)) = t.split_once(':') {
                        resp.trailers
                            .push((n.trim().to_string(), v.trim().to_string()));
                    }
                }
            }
            self.read_exact_into(size, sink)?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(bad("missing CRLF after chunk"));
            }
        }
    }
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> std::io::Result<Response> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(&format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .unwrap_or("")
        .parse()
        .map_err(|_| bad(&format!("bad status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Response {
        status,
        reason,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    })
}

/// A received HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order as received.
    pub headers: Vec<(String, String)>,
    /// The body (empty for HEAD / 204 / streamed reads).
    pub body: Vec<u8>,
    /// Trailer fields of a chunked response.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// First value of a header, case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header joined with `", "`, case-insensitive.
    pub fn header_joined(&self, name: &str) -> Option<String> {
        let all: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        if all.is_empty() {
            None
        } else {
            Some(all.join(", "))
        }
    }

    /// True if a header is present.
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Comma-separated header values, trimmed and lower-cased.
    pub fn header_list(&self, name: &str) -> Vec<String> {
        self.header_joined(name)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// A header parsed as u64; panics with context when missing or malformed.
    pub fn header_u64(&self, name: &str) -> u64 {
        let v = self
            .header(name)
            .unwrap_or_else(|| panic!("response lacks {name}: {}", self.describe()));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not an integer: {v:?}"))
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A one-paragraph description for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.status, self.reason);
        for (n, v) in &self.headers {
            s.push_str(&format!("\n  {n}: {v}"));
        }
        if !self.body.is_empty() {
            let shown: String = self.text().chars().take(300).collect();
            s.push_str(&format!("\n  body: {shown:?}"));
        }
        s
    }
}

/// Asserts the status is one of `expected`, with the response in the message.
#[track_caller]
pub fn assert_status(resp: &Response, expected: &[u16], what: &str) {
    assert!(
        expected.contains(&resp.status),
        "{what}: expected status {expected:?}, got {}",
        resp.describe()
    );
}

/// Asserts the response carries `Tus-Resumable: 1.0.0`.
#[track_caller]
pub fn assert_tus_resumable(resp: &Response, what: &str) {
    assert_eq!(
        resp.header("Tus-Resumable"),
        Some(TUS_VERSION),
        "{what}: Tus-Resumable missing or wrong in {}",
        resp.describe()
    );
}

// ---------------------------------------------------------------------------
// tus helpers
// ---------------------------------------------------------------------------

/// POSTs to the creation endpoint with the given extra headers; asserts 201 and
/// returns the absolute upload URL together with the response.
#[track_caller]
pub fn create_with(server: &TestServer, headers: &[(&str, &str)]) -> (String, Response) {
    let mut req = tus("POST", server.endpoint());
    for (n, v) in headers {
        req = req.header(n, v);
    }
    let resp = req.send();
    assert_status(&resp, &[201], "creating an upload");
    let loc = resp
        .header("Location")
        .unwrap_or_else(|| panic!("201 without Location: {}", resp.describe()))
        .to_string();
    (server.url(&loc), resp)
}

/// Creates an upload of `len` bytes and returns its URL.
#[track_caller]
pub fn create(server: &TestServer, len: u64) -> String {
    create_with(server, &[("Upload-Length", &len.to_string())]).0
}

/// A PATCH request with the usual headers and a `Content-Length` body.
pub fn patch_req(url: &str, offset: u64, data: &[u8]) -> Request {
    tus("PATCH", url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", &offset.to_string())
        .body(data.to_vec())
}

/// Sends a PATCH and returns the response.
pub fn patch(url: &str, offset: u64, data: &[u8]) -> Response {
    patch_req(url, offset, data).send()
}

/// Sends a PATCH and asserts `204` with the expected new offset.
#[track_caller]
pub fn patch_ok(url: &str, offset: u64, data: &[u8]) -> Response {
    let resp = patch(url, offset, data);
    assert_status(&resp, &[204], "PATCH");
    assert_eq!(
        resp.header_u64("Upload-Offset"),
        offset + data.len() as u64,
        "PATCH Upload-Offset: {}",
        resp.describe()
    );
    resp
}

/// HEAD of an upload.
pub fn head(url: &str) -> Response {
    tus("HEAD", url).send()
}

/// HEAD of an upload, asserting 200, returning the Upload-Offset.
#[track_caller]
pub fn head_offset(url: &str) -> u64 {
    let r = head(url);
    assert_status(&r, &[200, 204], "HEAD");
    r.header_u64("Upload-Offset")
}

/// GET (download) of an upload, without `Tus-Resumable`.
pub fn get(url: &str) -> Response {
    Request::new("GET", url).send()
}

/// GET an upload, assert 200, and return its bytes.
#[track_caller]
pub fn get_bytes(url: &str) -> Vec<u8> {
    let r = get(url);
    assert_status(&r, &[200], "GET");
    r.body
}

/// Streams a GET body through sha256: returns (response, byte count, hex digest).
pub fn get_sha256(url: &str) -> (Response, u64, String) {
    let req = Request::new("GET", url);
    let mut conn = req.open();
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let resp = conn
        .read_response_with(|c| {
            hasher.update(c);
            count += c.len() as u64;
        })
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp, count, hex(&hasher.finalize()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Standard base64 (with padding).
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// Decodes standard base64.
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim()).ok()
}

/// Builds an `Upload-Metadata` value from (key, value) pairs.
pub fn metadata(pairs: &[(&str, &[u8])]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.to_string()
            } else {
                format!("{k} {}", b64(v))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses an `Upload-Metadata` value into decoded pairs (panics on malformed input).
pub fn parse_metadata(value: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for pair in value.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let mut it = pair.splitn(2, ' ');
        let key = it.next().unwrap().to_string();
        let val = it.next().map(str::trim).unwrap_or("");
        let decoded = if val.is_empty() {
            Vec::new()
        } else {
            unb64(val).unwrap_or_else(|| panic!("metadata value for {key} is not base64: {val:?}"))
        };
        out.insert(key, decoded);
    }
    out
}

/// Deterministic test bytes (`len` bytes of the PRNG stream for `seed`).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Prng::new(seed).fill_at(0, &mut v);
    v
}

/// A fast deterministic, seekable byte generator (SplitMix64 over 8-byte words).
#[derive(Debug, Clone, Copy)]
pub struct Prng {
    seed: u64,
}

impl Prng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Prng {
        Prng { seed }
    }

    fn word(&self, index: u64) -> [u8; 8] {
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// Fills `buf` with the stream bytes starting at absolute position `pos`.
    pub fn fill_at(&self, pos: u64, buf: &mut [u8]) {
        let mut i = 0usize;
        // Unaligned head.
        while i < buf.len() && (pos + i as u64) & 7 != 0 {
            let p = pos + i as u64;
            buf[i] = self.word(p / 8)[(p % 8) as usize];
            i += 1;
        }
        let first = (pos + i as u64) / 8;
        let aligned_end = i + (buf.len() - i) / 8 * 8;
        for (index, chunk) in (first..).zip(buf[i..aligned_end].chunks_exact_mut(8)) {
            chunk.copy_from_slice(&self.word(index));
        }
        i = aligned_end;
        while i < buf.len() {
            let p = pos + i as u64;
            buf[i] = self.word(p / 8)[(p % 8) as usize];
            i += 1;
        }
    }
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds since the Unix epoch now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses an RFC 9110 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let wd = parts[0].strip_suffix(',')?;
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let wd_index = DAYS.iter().position(|d| *d == wd)? as i64;
    if parts[1].len() != 2 {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == parts[2])? as i64 + 1;
    if parts[3].len() != 4 {
        return None;
    }
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<&str> = parts[4].split(':').collect();
    if hms.len() != 3 || hms.iter().any(|p| p.len() != 2) {
        return None;
    }
    let (h, m, sec): (i64, i64, i64) = (
        hms[0].parse().ok()?,
        hms[1].parse().ok()?,
        hms[2].parse().ok()?,
    );
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    if (days + 3).rem_euclid(7) != wd_index {
        return None;
    }
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// Skip a test whose prerequisite this machine lacks, saying why; under CI (`CI` set) a
/// missing prerequisite is a failure instead, so CI never passes by skipping.
pub fn skip_unless_ci(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason}; CI must be able to run this test (see .ci/run)");
    }
    println!("skipped: {reason}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_references() {
        let base = "http://127.0.0.1:8080/files/";
        assert_eq!(
            resolve(base, "http://x:1/files/a"),
            "http://x:1/files/a".to_string()
        );
        assert_eq!(resolve(base, "/files/a"), "http://127.0.0.1:8080/files/a");
        assert_eq!(resolve(base, "a"), "http://127.0.0.1:8080/files/a");
        assert_eq!(upload_id("http://h/files/abc"), "abc");
        assert_eq!(path_of("http://h:1/files/abc"), "/files/abc");
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Mon, 06 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn prng_is_seekable() {
        let p = Prng::new(7);
        let mut all = vec![0u8; 100];
        p.fill_at(0, &mut all);
        let mut part = vec![0u8; 37];
        p.fill_at(13, &mut part);
        assert_eq!(&all[13..50], &part[..]);
    }

    #[test]
    fn metadata_round_trips() {
        let v = metadata(&[("a", b"hello"), ("b", b"")]);
        let m = parse_metadata(&v);
        assert_eq!(m["a"], b"hello");
        assert_eq!(m["b"], b"");
    }
}
