//! The shared backend for multi-instance tests: a real `redis-server` (Debian's package) and a
//! real S3-compatible server, each started on a free loopback port, and stopped when dropped.
//!
//! The S3 server is chosen by `TUSK_TEST_S3` (see [`S3Server`]): `s3s-fs` (the default, from
//! crates.io, over a temporary directory) or `moto` (moto's server mode, from PyPI, in
//! memory), a stricter one that checks ETags and part sizes in CompleteMultipartUpload, pages
//! ListParts and answers NoSuchUpload as AWS does. Both check every request's signature (moto
//! once [`SharedBackend::start`] has turned its authentication on).
//!
//! `bash protocol-tests/backends/install.sh` installs all three (CI runs it). Without them the
//! tests that need them say so and pass, except under CI (`CI` set), where a missing server is
//! a failure: CI must prove the shared backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proxy::FaultProxy;

/// Access key s3s-fs is started with (moto makes its own: see [`SharedBackend::env`]).
pub const S3_ACCESS_KEY: &str = "tusk-test-access";
/// Secret key s3s-fs is started with.
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

/// The S3 server a shared backend runs, chosen by `TUSK_TEST_S3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Server {
    /// `s3s-fs` 0.14.1 (crates.io): objects and parts as files in a directory. The default.
    S3sFs,
    /// moto's server mode (PyPI, `protocol-tests/backends/.venv`): everything in memory,
    /// closer to AWS in what it refuses.
    Moto,
}

impl S3Server {
    /// The server `TUSK_TEST_S3` names (`s3s-fs` when unset).
    ///
    /// # Panics
    /// On any other value, so that a typo does not quietly test the default.
    pub fn chosen() -> S3Server {
        match std::env::var("TUSK_TEST_S3").as_deref() {
            Err(_) | Ok("") | Ok("s3s-fs") => S3Server::S3sFs,
            Ok("moto") => S3Server::Moto,
            Ok(other) => panic!("TUSK_TEST_S3={other}: expected s3s-fs or moto"),
        }
    }

    /// Its name, as `TUSK_TEST_S3` spells it.
    pub fn name(self) -> &'static str {
        match self {
            S3Server::S3sFs => "s3s-fs",
            S3Server::Moto => "moto",
        }
    }

    /// The installed program, if any: moto from the venv install.sh makes beside this
    /// crate, else a `moto_server` in PATH.
    fn binary(self) -> Option<PathBuf> {
        match self {
            S3Server::S3sFs => find_binary("s3s-fs"),
            S3Server::Moto => {
                Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("backends/.venv/bin/moto_server"))
                    .filter(|p| p.is_file())
                    .or_else(|| find_binary("moto_server"))
            }
        }
    }
}

/// Why the shared backend cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    let s3 = S3Server::chosen();
    let mut absent = Vec::new();
    if find_binary("redis-server").is_none() {
        absent.push("redis-server");
    }
    if s3.binary().is_none() {
        absent.push(s3.name());
    }
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

/// What answers on the S3 port while the S3 server is up.
enum Serving {
    /// s3s-fs itself.
    S3sFs(Tied),
    /// A forwarder to moto (see [`SharedBackend::stop_s3`]).
    Moto(FaultProxy),
}

/// Redis and an S3 server for one test.
pub struct SharedBackend {
    redis: Option<Tied>,
    redis_port: u16,
    kind: S3Server,
    s3: Option<Serving>,
    /// The port tusk is given for S3.
    s3_port: u16,
    /// s3s-fs's directory (unused with moto).
    s3_root: tempfile::TempDir,
    /// moto's process and its own port, behind `s3_port`: it lives as long as the backend.
    moto: Option<(Tied, u16)>,
    /// The credentials tusk signs with: the constants for s3s-fs, an IAM user's for moto.
    keys: Keys,
    _redis_dir: tempfile::TempDir,
}

impl SharedBackend {
    /// Start both servers, the S3 one chosen by `TUSK_TEST_S3` (panics if they are not
    /// installed: guard with [`needs_shared_backend!`]).
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
        let kind = S3Server::chosen();
        let s3_root = tempfile::tempdir().expect("an S3 root");
        let (moto, keys) = match kind {
            S3Server::S3sFs => {
                std::fs::create_dir(s3_root.path().join(S3_BUCKET)).expect("the bucket directory");
                let keys = Keys {
                    access: S3_ACCESS_KEY.to_owned(),
                    secret: S3_SECRET_KEY.to_owned(),
                };
                (None, keys)
            }
            S3Server::Moto => {
                let (server, port, keys) = start_moto();
                (Some((server, port)), keys)
            }
        };
        let mut backend = SharedBackend {
            redis: Some(redis),
            redis_port,
            kind,
            s3: None,
            s3_port: free_port(),
            s3_root,
            moto,
            keys,
            _redis_dir: redis_dir,
        };
        backend.start_s3();
        backend
    }

    /// Which S3 server this backend runs.
    pub fn s3_server(&self) -> S3Server {
        self.kind
    }

    /// Start the S3 server (again, on the same port, with what it held).
    pub fn start_s3(&mut self) {
        assert!(self.s3.is_none(), "the S3 server is running");
        self.s3 = Some(match &self.moto {
            None => {
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
                let server = Tied::spawn(&find_binary("s3s-fs").expect("s3s-fs"), &args);
                wait_for_port(self.s3_port, "s3s-fs");
                Serving::S3sFs(server)
            }
            Some((_, moto_port)) => Serving::Moto(FaultProxy::start_on(
                ([127, 0, 0, 1], self.s3_port).into(),
                ([127, 0, 0, 1], *moto_port).into(),
            )),
        });
    }

    /// Stop the S3 server: what a crash or a node restart looks like to tusk.
    ///
    /// s3s-fs is killed with SIGKILL and [`start_s3`](Self::start_s3) starts it again over
    /// its directory. moto keeps everything in memory, so a restarted moto would have lost
    /// every upload, which is not the outage these tests are about: moto keeps running and
    /// the forwarder on the S3 port is closed instead (every connection through it reset,
    /// new ones refused) until `start_s3` opens it again.
    pub fn stop_s3(&mut self) {
        match self.s3.take() {
            Some(Serving::S3sFs(server)) => server.kill(),
            Some(Serving::Moto(proxy)) => drop(proxy),
            None => {}
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
            ("TUSK_S3__ACCESS_KEY", self.keys.access.clone()),
            ("TUSK_S3__SECRET_KEY", self.keys.secret.clone()),
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

    /// Multipart uploads the S3 server still keeps, which an aborted or completed multipart
    /// upload must not leave behind: s3s-fs's files `.upload_id-*` in its root (one per
    /// uploaded part), moto's open uploads (ListMultipartUploads, from the first part on).
    pub fn multipart_leftovers(&self) -> usize {
        match &self.moto {
            None => std::fs::read_dir(self.s3_root.path())
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload"))
                        .count()
                })
                .unwrap_or(0),
            Some((_, port)) => {
                xml_texts(&moto_list(*port, &self.keys, "uploads"), "UploadId").len()
            }
        }
    }

    /// Every object key the S3 server holds in the bucket (s3s-fs: from its directory; moto:
    /// ListObjectsV2).
    pub fn object_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match &self.moto {
            None => walk(&self.s3_root.path().join(S3_BUCKET))
                .into_iter()
                .filter_map(|p| {
                    p.strip_prefix(self.s3_root.path().join(S3_BUCKET))
                        .ok()
                        .map(|k| k.to_string_lossy().into_owned())
                })
                .filter(|k| !k.starts_with('.'))
                .collect(),
            Some((_, port)) => xml_texts(&moto_list(*port, &self.keys, "list-type"), "Key"),
        };
        keys.sort();
        keys
    }
}

/// Access key and secret key.
#[derive(Debug, Clone)]
struct Keys {
    access: String,
    secret: String,
}

/// Start moto on a free port of its own, with signatures checked: an IAM user allowed `s3:*`
/// and its access key, the bucket (moto starts with none), then authentication turned on for
/// every request after these (moto's `/moto-api/reset-auth`). Without that step moto checks
/// no signature at all and would accept any credentials.
fn start_moto() -> (Tied, u16, Keys) {
    let port = free_port();
    let binary = S3Server::Moto.binary().expect("moto_server");
    let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(str::to_owned);
    let server = Tied::spawn(&binary, &args);
    wait_for_port(port, "moto_server");
    let origin = format!("http://127.0.0.1:{port}");
    // Until authentication is on, moto reads only the service from a credential scope.
    let iam = |form: &str| {
        let resp = crate::Request::new("POST", &format!("{origin}/"))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("Version=2010-05-08&UserName=tusk&{form}"))
            .send();
        assert_eq!(resp.status, 200, "moto IAM {form}: {}", resp.describe());
        resp.text()
    };
    iam("Action=CreateUser");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    iam(&format!(
        "Action=PutUserPolicy&PolicyName=s3&PolicyDocument={}",
        encode(policy)
    ));
    let key = iam("Action=CreateAccessKey");
    let text = |name| {
        xml_texts(&key, name)
            .pop()
            .unwrap_or_else(|| panic!("no {name} in {key}"))
    };
    let keys = Keys {
        access: text("AccessKeyId"),
        secret: text("SecretAccessKey"),
    };
    let resp = crate::Request::new("PUT", &format!("{origin}/{S3_BUCKET}")).send();
    assert_eq!(
        resp.status,
        200,
        "creating the bucket in moto: {}",
        resp.describe()
    );
    let resp = crate::Request::new("POST", &format!("{origin}/moto-api/reset-auth"))
        .header("Content-Type", "text/plain")
        .body("0")
        .send();
    assert_eq!(
        resp.status,
        200,
        "turning moto's auth on: {}",
        resp.describe()
    );
    (server, port, keys)
}

/// A bucket listing from moto (`query`: `uploads` or `list-type`, which gets `=2`), whole:
/// these tests keep far fewer than a page of 1,000.
fn moto_list(port: u16, keys: &Keys, query: &str) -> String {
    let value = if query == "list-type" { "2" } else { "" };
    let resp = signed_get(port, keys, &format!("/{S3_BUCKET}"), query, value).send();
    assert_eq!(
        resp.status,
        200,
        "listing moto's bucket: {}",
        resp.describe()
    );
    let text = resp.text();
    assert!(
        text.contains("<IsTruncated>false</IsTruncated>"),
        "moto's listing ?{query} is paged: {text}"
    );
    text
}

/// A GET of `path?name=value` on `127.0.0.1:port` signed with AWS Signature Version 4 (written
/// here from AWS's description, independently of tusk's signer).
fn signed_get(port: u16, keys: &Keys, path: &str, name: &str, value: &str) -> crate::Request {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mac = |key: &[u8], data: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let (date, time) = utc_now();
    let stamp = format!("{date}T{time}Z");
    let host = format!("127.0.0.1:{port}");
    let empty = crate::hex(&Sha256::digest(b""));
    let query = format!("{}={}", encode(name), encode(value));
    let canonical = format!(
        "GET\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{empty}\nx-amz-date:{stamp}\n\n\
         host;x-amz-content-sha256;x-amz-date\n{empty}"
    );
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        crate::hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = mac(format!("AWS4{}", keys.secret).as_bytes(), &date);
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = mac(&key, part);
    }
    let signature = crate::hex(&mac(&key, &to_sign));
    crate::Request::new("GET", &format!("http://{host}{path}?{query}"))
        .header("x-amz-date", &stamp)
        .header("x-amz-content-sha256", &empty)
        .header(
            "Authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-content-sha256;\
                 x-amz-date, Signature={signature}",
                keys.access
            ),
        )
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Today's date (`YYYYMMDD`) and the time (`HHMMSS`) in UTC.
fn utc_now() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!(
            "{:02}{:02}{:02}",
            rest / 3_600,
            rest % 3_600 / 60,
            rest % 60
        ),
    )
}

/// The text of every `<name>` element of a flat XML document (the keys and upload ids these
/// tests make need no unescaping).
fn xml_texts(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(text, _)| text.to_owned()))
        .collect()
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
        if let Some((moto, _)) = self.moto.take() {
            moto.kill();
        }
        if let Some(redis) = self.redis.take() {
            redis.kill();
        }
    }
}
