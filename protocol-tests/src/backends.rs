//! The shared backend for multi-instance tests: a real `redis-server` (Debian's package) and a
//! real S3-compatible server (`s3s-fs`, from crates.io), each started on a free loopback port
//! with its own temporary directory, and stopped when dropped.
//!
//! `bash protocol-tests/backends/install.sh` installs both (CI runs it). Without them the
//! tests that need them say so and pass, except under CI (`CI` set), where a missing server is
//! a failure: CI must prove the shared backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key the test S3 server accepts.
pub const S3_ACCESS_KEY: &str = "tusk-test-access";
/// Secret key the test S3 server accepts.
pub const S3_SECRET_KEY: &str = "tusk-test-secret-key-0123456789";
/// The bucket tusk writes into.
pub const S3_BUCKET: &str = "uploads";

/// Where an installed server binary is, looking in PATH and cargo's bin directory.
fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.extend(["/usr/bin", "/usr/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Why the shared backend cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = ["redis-server", "s3s-fs"]
        .into_iter()
        .filter(|b| find_binary(b).is_none())
        .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not installed (bash protocol-tests/backends/install.sh)",
            absent.join(" and ")
        )
    })
}

/// Skip the test (with a message) when the shared backend's servers are not installed;
/// under CI that is a failure instead.
#[macro_export]
macro_rules! needs_shared_backend {
    () => {
        if let Some(why) = $crate::backends::missing() {
            if std::env::var_os("CI").is_some() {
                panic!("the shared-backend tests must run in CI: {why}");
            }
            println!("skipped: {why}");
            return;
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server process that cannot outlive the test process: it runs under a small `sh` that
/// kills it when its stdin (a pipe from this process) closes, which the kernel does however
/// this process ends. (The suite-wide backend lives in a static, whose `Drop` never runs.)
struct Tied {
    wrapper: Child,
    pid: u32,
    _lifeline: ChildStdin,
}

impl Tied {
    fn spawn(program: &Path, args: &[String]) -> Tied {
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$@" >/dev/null 2>&1 & child=$!; echo "$child"; read -r _; kill -9 "$child""#)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let lifeline = wrapper.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(wrapper.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the server's pid");
        let pid = line.trim().parse().expect("a pid");
        Tied {
            wrapper,
            pid,
            _lifeline: lifeline,
        }
    }

    /// SIGKILL the server (what a crash looks like) and reap its wrapper.
    fn kill(mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
        drop(self._lifeline);
        let _ = self.wrapper.wait();
    }
}

/// Redis and an S3 server for one test.
pub struct SharedBackend {
    redis: Option<Tied>,
    redis_port: u16,
    s3: Option<Tied>,
    s3_port: u16,
    s3_root: tempfile::TempDir,
    _redis_dir: tempfile::TempDir,
}

impl SharedBackend {
    /// Start both servers (panics if they are not installed: guard with
    /// [`needs_shared_backend!`]).
    pub fn start() -> SharedBackend {
        let redis_dir = tempfile::tempdir().expect("a Redis directory");
        let redis_port = free_port();
        let args = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--port",
            &redis_port.to_string(),
            "--dir",
            &redis_dir.path().to_string_lossy(),
        ]
        .map(str::to_owned);
        let redis = Tied::spawn(&find_binary("redis-server").expect("redis-server"), &args);
        wait_for_port(redis_port, "redis-server");
        let s3_root = tempfile::tempdir().expect("an S3 root");
        std::fs::create_dir(s3_root.path().join(S3_BUCKET)).expect("the bucket directory");
        let mut backend = SharedBackend {
            redis: Some(redis),
            redis_port,
            s3: None,
            s3_port: free_port(),
            s3_root,
            _redis_dir: redis_dir,
        };
        backend.start_s3();
        backend
    }

    /// Start the S3 server (again, on the same port and directory).
    pub fn start_s3(&mut self) {
        assert!(self.s3.is_none(), "the S3 server is running");
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &self.s3_port.to_string(),
            "--access-key",
            S3_ACCESS_KEY,
            "--secret-key",
            S3_SECRET_KEY,
            &self.s3_root.path().to_string_lossy(),
        ]
        .map(str::to_owned);
        self.s3 = Some(Tied::spawn(&find_binary("s3s-fs").expect("s3s-fs"), &args));
        wait_for_port(self.s3_port, "s3s-fs");
    }

    /// Stop the S3 server (SIGKILL: what a crash or a node restart looks like to tusk).
    pub fn stop_s3(&mut self) {
        if let Some(server) = self.s3.take() {
            server.kill();
        }
    }

    /// The environment that points a tusk instance at this backend.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("TUSK_STORAGE__BACKEND", "s3".to_owned()),
            (
                "TUSK_S3__ENDPOINT",
                format!("http://127.0.0.1:{}", self.s3_port),
            ),
            ("TUSK_S3__BUCKET", S3_BUCKET.to_owned()),
            ("TUSK_S3__ACCESS_KEY", S3_ACCESS_KEY.to_owned()),
            ("TUSK_S3__SECRET_KEY", S3_SECRET_KEY.to_owned()),
            ("TUSK_S3__PART_SIZE", "5MiB".to_owned()),
            (
                "TUSK_REDIS__URL",
                format!("redis://127.0.0.1:{}/0", self.redis_port),
            ),
            ("TUSK_REDIS__LOCK_TTL", "2s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Send one command to Redis and return its raw answer (RESP, as text).
    pub fn redis(&self, args: &[&str]) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.redis_port)).expect("connecting to Redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .write_all(command.as_bytes())
            .expect("writing to Redis");
        let mut answer = vec![0u8; 64 * 1024];
        let n = stream.read(&mut answer).expect("reading from Redis");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }

    /// Parts of multipart uploads s3s-fs still keeps (files `.upload_id-*` in its root):
    /// what an aborted or completed multipart upload must not leave behind.
    pub fn multipart_leftovers(&self) -> usize {
        std::fs::read_dir(self.s3_root.path())
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Every object key the S3 server holds in the bucket (from its directory).
    pub fn object_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = walk(&self.s3_root.path().join(S3_BUCKET))
            .into_iter()
            .filter_map(|p| {
                p.strip_prefix(self.s3_root.path().join(S3_BUCKET))
                    .ok()
                    .map(|k| k.to_string_lossy().into_owned())
            })
            .filter(|k| !k.starts_with('.'))
            .collect();
        keys.sort();
        keys
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}

impl Drop for SharedBackend {
    fn drop(&mut self) {
        self.stop_s3();
        if let Some(redis) = self.redis.take() {
            redis.kill();
        }
    }
}
