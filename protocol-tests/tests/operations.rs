//! Operations: what an operator sees and uses around the tus API.
//!
//! `/metrics` moving during a real upload, `/healthz` and `/readyz` (also below the free-space
//! floor), the per-request log line (human and JSON), the admin API, the maintenance
//! subcommands on a stopped server's data directory, the built-in demo page, and the nginx
//! example of `config/nginx.conf` in front of tusk (skipped only when nginx is not installed).
//!
//! Every test starts its own server(s) and bounds its own waits.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A URL on the server's origin (`/metrics`, `/admin/...`).
fn at(s: &TestServer, path: &str) -> String {
    s.url(path)
}

/// Scrapes `/metrics`, checks every line of the exposition, and returns the samples keyed by
/// `name{labels}` exactly as written (or just `name` without labels).
#[track_caller]
fn scrape(s: &TestServer) -> BTreeMap<String, f64> {
    let r = Request::new("GET", &at(s, "/metrics")).send();
    assert_status(&r, &[200], "GET /metrics");
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(
        ct.starts_with("text/plain"),
        "/metrics Content-Type {ct:?}, want text/plain"
    );
    parse_exposition(&r.text())
}

/// Parses the Prometheus text format strictly enough to catch a malformed line: every line is
/// a `# HELP`/`# TYPE` comment, empty, or `name{label="value",...} number`.
#[track_caller]
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let where_ = || format!("line {} of /metrics: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("HELP") => {
                    assert!(words.next().is_some_and(valid_metric_name), "{}", where_());
                }
                Some("TYPE") => {
                    let name = words.next().unwrap_or("");
                    let kind = words.next().unwrap_or("");
                    assert!(valid_metric_name(name), "{}", where_());
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "unknown metric type in {}",
                        where_()
                    );
                    typed.insert(name.to_owned(), kind.to_owned());
                }
                _ => {}
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {}", where_()));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(valid_metric_name(name), "bad metric name in {}", where_());
        if name_end < series.len() {
            let labels = series[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("unbalanced braces in {}", where_()));
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("label without '=' in {}", where_()));
                assert!(valid_label_name(k), "bad label name in {}", where_());
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "unquoted label value in {}",
                    where_()
                );
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value is not a number in {}", where_())),
        };
        // A sample belongs to a family declared by # TYPE (histograms add suffixes).
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "sample without a # TYPE line before it: {}",
            where_()
        );
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate series in {}",
            where_()
        );
    }
    out
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample that must be present.
#[track_caller]
fn sample(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("/metrics lacks {series}; it has {:?}", m.keys()))
}

/// A minimal JSON value and parser, enough to read the admin API and JSON log lines without
/// a JSON dependency. Numbers are kept as f64.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut p = JsonParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing characters at byte {}", p.i));
        }
        Ok(v)
    }

    #[track_caller]
    fn must(text: &str) -> Json {
        Json::parse(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str_of(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Json::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn num_of(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Json::Num(n)) => Some(*n),
            _ => None,
        }
    }

    #[track_caller]
    fn items(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            other => panic!("expected a JSON array, got {other:?}"),
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", b as char, self.i))
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at byte {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            None => Err("unexpected end".to_owned()),
            Some(b'{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    let v = self.value()?;
                    fields.push((key, v));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return Err(format!("expected , or }} at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(format!("expected , or ] at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    self.i += 1;
                }
                std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .map(Json::Num)
                    .ok_or_else(|| format!("bad number at byte {start}"))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            self.i += 4;
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.to_string().as_bytes());
                        }
                        _ => return Err(format!("bad escape at byte {}", self.i)),
                    }
                }
                c if c < 0x20 => return Err(format!("control character in string at {}", self.i)),
                c => out.push(c),
            }
        }
    }
}

/// Runs the tusk binary with `args` in `cwd`, bounded by `limit`; returns (status, stdout,
/// stderr). A run that outlives the limit is killed and fails the test.
#[track_caller]
fn run_tusk(args: &[&str], cwd: &Path, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(tusk_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("TUSK_CONFIG")
        .env_remove("TUSK_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", tusk_bin().display()));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for tusk") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`tusk {}` still running after {limit:?}", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        out_thread.join().unwrap_or_default(),
        err_thread.join().unwrap_or_default(),
    )
}

/// `tusk --data-dir DIR <args>`, which must succeed; returns stdout.
#[track_caller]
fn subcommand_ok(data_dir: &Path, args: &[&str]) -> String {
    let dir = data_dir.to_str().unwrap();
    let mut all = vec!["--data-dir", dir];
    all.extend_from_slice(args);
    let (status, out, err) = run_tusk(&all, data_dir, Duration::from_secs(30));
    assert!(
        status.success(),
        "`tusk {}` failed ({status}):\n--- stdout\n{out}\n--- stderr\n{err}",
        all.join(" ")
    );
    out
}

/// Offers the body of `url` half, then drops the connection; waits until HEAD reports the same
/// offset twice in a row and returns it.
#[track_caller]
fn interrupted_upload(url: &str, data: &[u8]) -> u64 {
    let half = data.len() / 2;
    let mut conn = patch_req(url, 0, data).open();
    conn.write_all(&data[..half]).expect("writing half a body");
    thread::sleep(Duration::from_millis(100));
    conn.abort();
    let mut last = None;
    let settled = wait_until(Duration::from_secs(15), || {
        thread::sleep(Duration::from_millis(100));
        let now = head_offset(url);
        let same = last == Some(now);
        last = Some(now);
        same && now > 0
    });
    assert!(
        settled,
        "HEAD offset of {url} never settled (last {last:?})"
    );
    let offset = last.unwrap();
    assert_eq!(
        offset, half as u64,
        "after half a body and a dropped connection, HEAD should say {half}"
    );
    offset
}

fn token_config(token_path: &Path) -> String {
    format!(
        "[admin]\nenabled = true\ntoken_file = '{}'\n",
        token_path.display()
    )
}

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

#[test]
fn metrics_move_during_an_upload() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    let before = scrape(&s);
    for series in [
        "tusk_received_bytes_total",
        "tusk_uploads_created_total",
        "tusk_uploads_finished_total",
        "tusk_uploads_active",
        "tusk_offset_mismatches_total",
    ] {
        sample(&before, series);
    }
    assert_eq!(sample(&before, "tusk_uploads_active"), 0.0);

    const LEN: usize = 4 << 20;
    const PIECE: usize = 256 << 10;
    let data = pattern(101, LEN);
    let url = create(&s, LEN as u64);
    let created = scrape(&s);
    assert_eq!(
        sample(&created, "tusk_uploads_created_total"),
        sample(&before, "tusk_uploads_created_total") + 1.0,
        "tusk_uploads_created_total must count the POST"
    );
    assert_eq!(
        sample(
            &created,
            "tusk_requests_total{method=\"POST\",status=\"201\"}"
        ),
        1.0
    );

    // One PATCH of 4 MiB, written in 16 pieces with pauses; /metrics is read half-way.
    let mut conn = patch_req(&url, 0, &data).open();
    let mut during = None;
    for (i, piece) in data.chunks(PIECE).enumerate() {
        conn.write_all(piece)
            .expect("writing a piece of the PATCH body");
        thread::sleep(Duration::from_millis(15));
        if i == LEN / PIECE / 2 {
            let mut seen = BTreeMap::new();
            let active = wait_until(Duration::from_secs(3), || {
                seen = scrape(&s);
                sample(&seen, "tusk_uploads_active") == 1.0
            });
            assert!(
                active,
                "tusk_uploads_active should be 1 while the PATCH is open, scrape said {}",
                sample(&seen, "tusk_uploads_active")
            );
            during = Some(seen);
        }
    }
    let during = during.expect("scraped during the PATCH");
    let resp = conn.read_response().expect("PATCH response");
    assert_status(&resp, &[204], "the 4 MiB PATCH");
    assert_eq!(resp.header_u64("Upload-Offset"), LEN as u64);

    let mut after = BTreeMap::new();
    let idle = wait_until(Duration::from_secs(3), || {
        after = scrape(&s);
        sample(&after, "tusk_uploads_active") == 0.0
    });
    assert!(
        idle,
        "tusk_uploads_active should be 0 once the PATCH answered, scrape said {}",
        sample(&after, "tusk_uploads_active")
    );
    let received = |m: &BTreeMap<String, f64>| sample(m, "tusk_received_bytes_total");
    assert!(received(&during) >= received(&before));
    assert_eq!(
        received(&after) - received(&before),
        LEN as f64,
        "tusk_received_bytes_total must grow by the upload's length (during the PATCH: {})",
        received(&during)
    );
    assert_eq!(
        sample(&after, "tusk_uploads_finished_total"),
        sample(&before, "tusk_uploads_finished_total") + 1.0
    );
    assert_eq!(
        sample(
            &after,
            "tusk_requests_total{method=\"PATCH\",status=\"204\"}"
        ),
        1.0
    );
    let histogram = "tusk_patch_duration_seconds_count";
    assert_eq!(sample(&after, histogram), sample(&before, histogram) + 1.0);

    // A stale offset: 409, counted.
    let stale = patch(&url, 0, b"again");
    assert_status(&stale, &[409], "PATCH at a stale offset");
    let last = scrape(&s);
    assert_eq!(
        sample(&last, "tusk_offset_mismatches_total"),
        sample(&before, "tusk_offset_mismatches_total") + 1.0
    );
    assert_eq!(
        sample(
            &last,
            "tusk_requests_total{method=\"PATCH\",status=\"409\"}"
        ),
        1.0
    );
    // Counters never go down.
    for (series, v) in &after {
        if series.contains("_total") {
            assert!(
                last.get(series).is_some_and(|w| w >= v),
                "{series} went from {v} to {:?}",
                last.get(series)
            );
        }
    }
    assert_eq!(get_bytes(&url), data);
}

#[test]
fn metrics_can_be_disabled() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[metrics]\nenabled = false\n");
    let r = Request::new("GET", &at(&s, "/metrics")).send();
    assert_status(&r, &[404], "GET /metrics with metrics disabled");
}

// ---------------------------------------------------------------------------
// /healthz, /readyz
// ---------------------------------------------------------------------------

#[test]
fn health_and_readiness() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    let h = Request::new("GET", &at(&s, "/healthz")).send();
    assert_status(&h, &[200], "GET /healthz");
    assert_eq!(h.text().trim(), "ok");
    let r = Request::new("GET", &at(&s, "/readyz")).send();
    assert_status(&r, &[200], "GET /readyz");
    // Probes need no tus header and do not leave files behind.
    let leftovers: Vec<_> = std::fs::read_dir(s.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("readyz"))
        .collect();
    assert!(leftovers.is_empty(), "probe files left: {leftovers:?}");
}

#[test]
fn below_the_free_space_floor_not_ready_and_creation_gets_507() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[storage]\nmin_free_space = \"1000TiB\"\n");
    let h = Request::new("GET", &at(&s, "/healthz")).send();
    assert_status(&h, &[200], "GET /healthz (liveness ignores disk space)");
    let r = Request::new("GET", &at(&s, "/readyz")).send();
    assert_status(&r, &[503], "GET /readyz below min_free_space");
    let body = r.text();
    let reason = body.trim().strip_prefix("not ready:").unwrap_or("").trim();
    assert!(
        !reason.is_empty(),
        "/readyz 503 should give a reason: {body:?}"
    );
    let p = tus("POST", s.endpoint())
        .header("Upload-Length", "10")
        .send();
    assert_status(&p, &[507], "POST below min_free_space");
    assert_tus_resumable(&p, "507");
    assert!(!p.text().trim().is_empty(), "507 without a reason");
}

// ---------------------------------------------------------------------------
// The request log
// ---------------------------------------------------------------------------

/// The request lines (one per request) of a human-format log.
fn human_request_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(": request ") && l.contains(" status="))
        .collect()
}

#[test]
fn request_log_has_one_line_per_request() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    let url = create(&s, 11);
    patch_ok(&url, 0, b"hello world");
    assert_eq!(head_offset(&url), 11);
    let stale = patch(&url, 0, b"x");
    assert_status(&stale, &[409], "stale PATCH");
    let mut log = String::new();
    let all_there = wait_until(Duration::from_secs(5), || {
        log = s.stderr();
        human_request_lines(&log).len() >= 4
    });
    assert!(all_there, "expected 4 request lines in the log:\n{log}");
    let lines = human_request_lines(&log);
    assert_eq!(lines.len(), 4, "one line per request:\n{log}");
    let patch_204: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("method=PATCH") && l.contains("status=204"))
        .collect();
    assert_eq!(patch_204.len(), 1, "one PATCH 204 line:\n{log}");
    let line = patch_204[0];
    assert!(
        line.contains("bytes=11"),
        "PATCH line lacks bytes=11: {line}"
    );
    assert!(
        line.contains(&format!("path={}", path_of(&url))),
        "PATCH line lacks the path: {line}"
    );
    assert!(
        line.contains(" ms="),
        "PATCH line lacks the duration: {line}"
    );
    assert!(lines
        .iter()
        .any(|l| l.contains("method=POST") && l.contains("status=201")));
    assert!(lines
        .iter()
        .any(|l| l.contains("method=HEAD") && l.contains("status=200")));
    assert!(lines
        .iter()
        .any(|l| l.contains("method=PATCH") && l.contains("status=409")));
    // Logs piped to a file carry no colour codes.
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a piped log");
}

#[test]
fn json_request_log_lines_are_objects() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[log]\nformat = \"json\"\n");
    let url = create(&s, 11);
    patch_ok(&url, 0, b"hello world");
    let mut log = String::new();
    let found = wait_until(Duration::from_secs(5), || {
        log = s.stderr();
        log.contains("\"status\":204")
    });
    assert!(found, "no \"status\":204 in the JSON log:\n{log}");
    let mut requests = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with('{') && line.ends_with('}'),
            "log line is not a JSON object: {line}"
        );
        let v = Json::must(line);
        assert!(v.str_of("level").is_some(), "no level in {line}");
        assert!(v.str_of("timestamp").is_some(), "no timestamp in {line}");
        if v.get("fields").and_then(|f| f.str_of("message")) == Some("request") {
            requests.push(v);
        }
    }
    assert_eq!(requests.len(), 2, "one request line per request:\n{log}");
    let patch_line = requests
        .iter()
        .find(|v| v.get("span").and_then(|s| s.str_of("method")) == Some("PATCH"))
        .unwrap_or_else(|| panic!("no PATCH request line:\n{log}"));
    let fields = patch_line.get("fields").unwrap();
    assert_eq!(fields.num_of("status"), Some(204.0), "{patch_line:?}");
    assert_eq!(
        patch_line.get("span").and_then(|s| s.num_of("bytes")),
        Some(11.0),
        "{patch_line:?}"
    );
}

// ---------------------------------------------------------------------------
// The admin API
// ---------------------------------------------------------------------------

fn admin(method: &str, s: &TestServer, path: &str, token: Option<&str>) -> Response {
    let mut req = Request::new(method, &at(s, path));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    req.send()
}

#[track_caller]
fn admin_json(s: &TestServer, path: &str, token: &str) -> Json {
    let r = admin("GET", s, path, Some(token));
    assert_status(&r, &[200], &format!("GET {path}"));
    assert_eq!(
        r.header("Content-Type"),
        Some("application/json"),
        "GET {path}"
    );
    Json::must(&r.text())
}

#[test]
fn admin_api_is_off_by_default() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    for token in [None, Some("0123456789abcdef0123456789abcdef")] {
        let r = admin("GET", &s, "/admin/uploads", token);
        assert_status(&r, &[404], "GET /admin/uploads with the admin API off");
    }
}

/// RFC 9110 §11.1: the scheme is case-insensitive; the admin API takes `bearer` and `BEARER`
/// as the upload API does, and still refuses a wrong token so written.
#[test]
fn admin_api_accepts_the_bearer_scheme_in_any_case() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let token = sha256_hex(b"tusk admin scheme")[..32].to_owned();
    let token_path = dir.path().join("admin.token");
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let s = TestServer::spawn_with_config(&token_config(&token_path));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = Request::new("GET", &at(&s, "/admin/uploads"))
            .header("Authorization", &format!("{scheme} {token}"))
            .send();
        assert_status(&r, &[200], &format!("admin API with scheme {scheme}"));
    }
    let wrong = Request::new("GET", &at(&s, "/admin/uploads"))
        .header("Authorization", &format!("bearer {}", &token[..31]))
        .send();
    assert_status(&wrong, &[401], "admin API with a wrong token");
}

#[test]
fn admin_api_lists_shows_expires_and_deletes() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let token = sha256_hex(b"tusk admin token")[..32].to_owned();
    let token_path = dir.path().join("admin.token");
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let s = TestServer::spawn_with_config(&token_config(&token_path));

    // Unauthorized: no token, a wrong one, another scheme.
    for auth in [
        None,
        Some("Bearer 0123456789abcdef0123456789abcdef".to_owned()),
        Some(format!("Bearer {}", &token[..31])),
        Some(format!("Basic {}", b64(format!("admin:{token}")))),
    ] {
        let mut req = Request::new("GET", &at(&s, "/admin/uploads"));
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let r = req.send();
        assert_status(&r, &[401], &format!("admin with Authorization {auth:?}"));
        let challenge = r.header("WWW-Authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer"),
            "401 needs WWW-Authenticate: Bearer ..., got {}",
            r.describe()
        );
    }
    // Wrong tokens may not act either.
    let wrong = admin(
        "DELETE",
        &s,
        "/admin/uploads/0123456789abcdef0123456789abcdef",
        Some("nope"),
    );
    assert_status(&wrong, &[401], "DELETE with a wrong token");

    let data = pattern(7, 64 << 10);
    let finished = create(&s, data.len() as u64);
    patch_ok(&finished, 0, &data);
    let unfinished = create(&s, data.len() as u64);
    patch_ok(&unfinished, 0, &data[..1000]);
    let interrupted = create(&s, data.len() as u64);
    interrupted_upload(&interrupted, &data);
    let (fid, uid, iid) = (
        upload_id(&finished),
        upload_id(&unfinished),
        upload_id(&interrupted),
    );

    let list = admin_json(&s, "/admin/uploads", &token);
    let lifecycle_of = |list: &Json, id: &str| -> Option<String> {
        list.items()
            .iter()
            .find(|u| u.str_of("id") == Some(id))
            .map(|u| u.str_of("lifecycle").unwrap_or("<none>").to_owned())
    };
    assert_eq!(list.items().len(), 3, "{list:?}");
    assert_eq!(lifecycle_of(&list, &fid).as_deref(), Some("completed"));
    assert_eq!(lifecycle_of(&list, &uid).as_deref(), Some("uploading"));
    assert_eq!(lifecycle_of(&list, &iid).as_deref(), Some("interrupted"));

    let only = admin_json(&s, "/admin/uploads?state=interrupted", &token);
    assert_eq!(only.items().len(), 1, "?state=interrupted: {only:?}");
    assert_eq!(only.items()[0].str_of("id"), Some(iid.as_str()));
    assert_eq!(
        admin_json(&s, "/admin/uploads?state=completed", &token)
            .items()
            .len(),
        1
    );
    let bad_filter = admin("GET", &s, "/admin/uploads?colour=blue", Some(&token));
    assert_status(&bad_filter, &[400], "an unknown filter");

    let one = admin_json(&s, &format!("/admin/uploads/{iid}"), &token);
    assert_eq!(one.str_of("id"), Some(iid.as_str()));
    assert_eq!(one.str_of("lifecycle"), Some("interrupted"));
    assert_eq!(one.num_of("offset"), Some((data.len() / 2) as f64));
    assert_eq!(one.num_of("length"), Some(data.len() as f64));
    let missing = admin(
        "GET",
        &s,
        "/admin/uploads/0123456789abcdef0123456789abcdef",
        Some(&token),
    );
    assert_status(&missing, &[404], "GET of an unknown upload");

    // Expire the unfinished one: tus then says 410 (or 404 once swept).
    let r = admin(
        "POST",
        &s,
        &format!("/admin/uploads/{uid}/expire"),
        Some(&token),
    );
    assert_status(&r, &[204], "POST .../expire");
    assert_status(&head(&unfinished), &[410, 404], "HEAD of an expired upload");
    let resumed = patch(&unfinished, 1000, &data[1000..2000]);
    assert_status(&resumed, &[410, 404], "PATCH of an expired upload");
    let shown = admin("GET", &s, &format!("/admin/uploads/{uid}"), Some(&token));
    if shown.status == 200 {
        assert_eq!(
            Json::must(&shown.text()).str_of("lifecycle"),
            Some("expired")
        );
    }

    // Delete the interrupted one: gone for tus and on disk.
    let r = admin("DELETE", &s, &format!("/admin/uploads/{iid}"), Some(&token));
    assert_status(&r, &[204], "DELETE /admin/uploads/{id}");
    assert_status(&head(&interrupted), &[404], "HEAD after an admin DELETE");
    assert!(
        !s.upload_file(&iid).exists(),
        "the data file of a deleted upload is still there"
    );
    let r = admin("DELETE", &s, &format!("/admin/uploads/{iid}"), Some(&token));
    assert_status(&r, &[404], "DELETE again");

    // The finished upload was not touched.
    assert_eq!(get_bytes(&finished), data);

    let clients = admin_json(&s, "/admin/clients", &token);
    assert!(
        clients
            .items()
            .iter()
            .any(|c| c.str_of("client").is_some() && c.get("profile").is_some()),
        "/admin/clients after uploads from this client: {clients:?}"
    );
    let interfaces = admin_json(&s, "/admin/interfaces", &token);
    let addresses = interfaces
        .get("addresses")
        .unwrap_or_else(|| panic!("/admin/interfaces lacks addresses: {interfaces:?}"));
    assert!(
        addresses
            .items()
            .iter()
            .any(|a| a.str_of("address") == Some("127.0.0.1")),
        "/admin/interfaces should list 127.0.0.1: {interfaces:?}"
    );
    assert!(interfaces.get("stats").is_some(), "{interfaces:?}");
}

#[test]
fn admin_enabled_without_its_token_file_refuses_to_start() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let config = dir.path().join("tusk.toml");
    std::fs::write(&config, token_config(&missing)).unwrap();
    let data = dir.path().join("data");
    let (status, out, err) = run_tusk(
        &[
            "--config",
            config.to_str().unwrap(),
            "--port",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(
        !status.success(),
        "tusk started without its admin token file:\n{out}\n{err}"
    );
    assert!(
        err.contains("admin.token_file"),
        "the message should name admin.token_file: {err}"
    );
    assert!(!out.contains("listening on"), "it listened: {out}");

    // A token that is too short is refused the same way.
    let short = dir.path().join("short-token");
    std::fs::write(&short, "tiny\n").unwrap();
    std::fs::write(&config, token_config(&short)).unwrap();
    let (status, _, err) = run_tusk(
        &[
            "--config",
            config.to_str().unwrap(),
            "--port",
            "0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(!status.success(), "tusk started with a 4-character token");
    assert!(err.contains("admin.token_file"), "{err}");
}

/// `tusk check` should refuse what `tusk` refuses to start with (the systemd unit in
/// config/tusk.service runs it as ExecStartPre).
#[test]
fn check_refuses_a_missing_admin_token_file() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tusk.toml");
    std::fs::write(&config, token_config(&dir.path().join("no-such-token"))).unwrap();
    let (status, out, err) = run_tusk(
        &["check", "--config", config.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(
        !status.success() && err.contains("admin.token_file"),
        "`tusk check` accepted a config tusk cannot start with ({status}):\n{out}{err}"
    );
}

// ---------------------------------------------------------------------------
// Subcommands
// ---------------------------------------------------------------------------

/// The `uploads list` table row of `id`: (state, offset, length).
fn table_row(table: &str, id: &str) -> Option<(String, String, String)> {
    table.lines().find(|l| l.starts_with(id)).map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (
            cols.get(1).unwrap_or(&"").to_string(),
            cols.get(2).unwrap_or(&"").to_string(),
            cols.get(3).unwrap_or(&"").to_string(),
        )
    })
}

#[test]
fn uploads_list_and_purge_on_a_stopped_server() {
    needs_spawned_server!();
    let mut s = TestServer::spawn();
    let data = pattern(11, 5000);
    let done = create(&s, 5000);
    patch_ok(&done, 0, &data);
    let partial = create(&s, 5000);
    patch_ok(&partial, 0, &data[..1234]);
    let fresh = create_with(&s, &[("Upload-Defer-Length", "1")]).0;
    let (did, pid, fid) = (upload_id(&done), upload_id(&partial), upload_id(&fresh));
    let dir = s.data_dir().to_path_buf();
    let d = dir.to_str().unwrap();

    // sled is single-process: with the server running, the subcommands refuse and say why.
    let (status, out, err) = run_tusk(
        &["--data-dir", d, "uploads", "list"],
        &dir,
        Duration::from_secs(30),
    );
    assert!(
        !status.success(),
        "`uploads list` succeeded while a server holds the data dir:\n{out}"
    );
    assert!(
        err.contains("stop it"),
        "the refusal should say to stop the server: {err}"
    );
    // ... and the server is unharmed.
    assert_eq!(head_offset(&partial), 1234);
    s.terminate();

    let table = subcommand_ok(&dir, &["uploads", "list"]);
    let header = table.lines().next().unwrap_or("");
    assert!(
        header.contains("ID") && header.contains("STATE"),
        "no table header: {table}"
    );
    assert_eq!(
        table_row(&table, &did),
        Some(("completed".into(), "5000".into(), "5000".into())),
        "{table}"
    );
    assert_eq!(
        table_row(&table, &pid),
        Some(("uploading".into(), "1234".into(), "5000".into())),
        "{table}"
    );
    assert_eq!(
        table_row(&table, &fid),
        Some(("initiated".into(), "0".into(), "deferred".into())),
        "{table}"
    );
    assert!(table.contains("3 upload(s)"), "{table}");

    let json = Json::must(&subcommand_ok(&dir, &["uploads", "list", "--json"]));
    assert_eq!(json.items().len(), 3, "{json:?}");
    let entry = json
        .items()
        .iter()
        .find(|e| e.get("upload").and_then(|u| u.str_of("id")) == Some(did.as_str()))
        .unwrap_or_else(|| panic!("{did} missing from --json: {json:?}"));
    assert_eq!(entry.str_of("lifecycle"), Some("completed"));

    let filtered = subcommand_ok(&dir, &["uploads", "list", "--state", "uploading"]);
    assert!(
        filtered.contains(&pid) && !filtered.contains(&did),
        "{filtered}"
    );

    // purge needs a filter.
    let (status, _, err) = run_tusk(
        &["--data-dir", d, "uploads", "purge"],
        &dir,
        Duration::from_secs(30),
    );
    assert!(!status.success(), "purge without a filter succeeded");
    assert!(
        err.contains("--expired") || err.contains("--state"),
        "purge without a filter should say what to pass: {err}"
    );
    assert!(s.upload_file(&did).exists());

    let (status, _, err) = run_tusk(
        &["--data-dir", d, "uploads", "list", "--older-than", "soon"],
        &dir,
        Duration::from_secs(30),
    );
    assert!(!status.success(), "--older-than soon was accepted");
    assert!(err.contains("--older-than"), "{err}");

    let out = subcommand_ok(&dir, &["uploads", "purge", "--state", "completed"]);
    assert!(
        out.contains("purged 1 upload(s)") && out.contains("5000 bytes"),
        "{out}"
    );
    assert!(
        !s.upload_file(&did).exists(),
        "the purged upload's file is still there"
    );
    assert!(s.upload_file(&pid).exists());
    let table = subcommand_ok(&dir, &["uploads", "list"]);
    assert!(!table.contains(&did), "purged upload still listed: {table}");
    assert!(table.contains(&pid) && table.contains(&fid), "{table}");

    // The server starts on the purged directory and agrees.
    s.start();
    assert_status(&head(&s.url(&done)), &[404], "HEAD of a purged upload");
    assert_eq!(head_offset(&s.url(&partial)), 1234);
}

#[test]
fn uploads_purge_expired() {
    needs_spawned_server!();
    let mut s = TestServer::spawn_with_config(
        "[expiration]\nexpire_after = \"1s\"\nsweep_interval = \"1h\"\n",
    );
    let data = pattern(12, 3000);
    let done = create(&s, 3000);
    patch_ok(&done, 0, &data);
    let stale = create(&s, 3000);
    patch_ok(&stale, 0, &data[..100]);
    let (did, sid) = (upload_id(&done), upload_id(&stale));
    thread::sleep(Duration::from_secs(2));
    assert_status(&head(&stale), &[410], "HEAD after expire_after");
    s.terminate();
    let dir = s.data_dir().to_path_buf();

    let table = subcommand_ok(&dir, &["uploads", "list"]);
    assert_eq!(
        table_row(&table, &sid).map(|r| r.0).as_deref(),
        Some("expired"),
        "{table}"
    );
    assert_eq!(
        table_row(&table, &did).map(|r| r.0).as_deref(),
        Some("completed"),
        "finished uploads do not expire: {table}"
    );
    let out = subcommand_ok(&dir, &["uploads", "purge", "--expired"]);
    assert!(out.contains("purged 1 upload(s)"), "{out}");
    assert!(!s.upload_file(&sid).exists());
    assert!(s.upload_file(&did).exists());
    let table = subcommand_ok(&dir, &["uploads", "list"]);
    assert!(!table.contains(&sid) && table.contains(&did), "{table}");
}

#[test]
fn check_and_print_config() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nport = 8080\n[limits]\nmax_size = \"10GiB\"\n",
    )
    .unwrap();
    let (status, out, err) = run_tusk(
        &["check", "--config", good.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(status.success(), "check of a valid file failed: {out}{err}");
    assert!(out.contains("configuration ok"), "{out}");
    assert!(out.contains("8080"), "check should show the port: {out}");

    // The shipped example is valid too.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tusk.toml");
    let (status, out, err) = run_tusk(
        &["check", "--config", shipped.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(status.success(), "config/tusk.toml fails check: {out}{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_size = \"12 parsecs\"\n").unwrap();
    let (status, out, err) = run_tusk(
        &["check", "--config", bad.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(!status.success(), "check accepted 12 parsecs: {out}");
    assert!(
        err.contains("limits.max_size"),
        "the error should name limits.max_size: {err}"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[server]\nprot = 1\n").unwrap();
    let (status, _, err) = run_tusk(
        &["check", "--config", unknown.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(!status.success(), "check accepted an unknown key");
    assert!(err.contains("prot"), "the error should name the key: {err}");

    let (status, out, err) = run_tusk(&["--print-config"], dir.path(), Duration::from_secs(20));
    assert!(status.success(), "--print-config failed: {err}");
    for section in ["[server]", "[storage]", "[limits]", "[admin]"] {
        assert!(
            out.contains(section),
            "--print-config lacks {section}:\n{out}"
        );
    }
    // What it prints is itself a valid configuration.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &out).unwrap();
    let (status, _, err) = run_tusk(
        &["check", "--config", printed.to_str().unwrap()],
        dir.path(),
        Duration::from_secs(20),
    );
    assert!(status.success(), "--print-config output fails check: {err}");
    assert!(
        !dir.path().join("data").exists(),
        "check/--print-config created a data dir"
    );
}

// ---------------------------------------------------------------------------
// The demo page
// ---------------------------------------------------------------------------

#[test]
fn demo_is_off_by_default() {
    needs_spawned_server!();
    let s = TestServer::spawn();
    for path in ["/demo/", "/demo", "/demo/demo.js"] {
        let r = Request::new("GET", &at(&s, path)).send();
        assert_status(&r, &[404], &format!("GET {path} with the demo off"));
    }
}

#[test]
fn demo_page_when_enabled() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[demo]\nenabled = true\n");
    let r = Request::new("GET", &at(&s, "/demo")).send();
    assert_status(&r, &[308], "GET /demo");
    assert_eq!(r.header("Location"), Some("/demo/"));

    let page = Request::new("GET", &at(&s, "/demo/")).send();
    assert_status(&page, &[200], "GET /demo/");
    assert!(
        page.header("Content-Type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{}",
        page.describe()
    );
    let html = page.text();
    assert!(html.contains("<html") && html.contains("demo.js"), "{html}");

    let js = Request::new("GET", &at(&s, "/demo/demo.js")).send();
    assert_status(&js, &[200], "GET /demo/demo.js");
    assert!(
        js.header("Content-Type")
            .is_some_and(|c| c.starts_with("text/javascript")),
        "{}",
        js.describe()
    );
    assert!(
        js.body.len() > 10_000,
        "demo.js is only {} bytes",
        js.body.len()
    );

    let css = Request::new("GET", &at(&s, "/demo/demo.css")).send();
    assert_status(&css, &[200], "GET /demo/demo.css");
    let nothing = Request::new("GET", &at(&s, "/demo/../Cargo.toml")).send();
    assert_status(&nothing, &[404, 400], "GET /demo/../Cargo.toml");
    let nothing = Request::new("GET", &at(&s, "/demo/other.html")).send();
    assert_status(&nothing, &[404], "GET /demo/other.html");
}

// ---------------------------------------------------------------------------
// nginx in front (config/nginx.conf)
// ---------------------------------------------------------------------------

fn find_nginx() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// An nginx master started in the foreground; stopped (SIGTERM, then SIGKILL) on drop.
struct Nginx {
    child: Option<Child>,
    prefix: tempfile::TempDir,
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Replaces `from` with `to` in `text`, insisting that `from` occurs (so a changed example
/// fails here instead of silently testing something else).
#[track_caller]
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "config/nginx.conf no longer contains {from:?}; update the nginx test"
    );
    text.replace(from, to)
}

#[test]
fn behind_nginx_with_the_example_config() {
    needs_spawned_server!();
    let Some(nginx) = find_nginx() else {
        skip_unless_ci("nginx is not installed (apt-get install -y nginx-light)");
        return;
    };
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/nginx.conf");
    let example = std::fs::read_to_string(&example_path).expect("reading config/nginx.conf");
    for directive in [
        "client_max_body_size 0;",
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    ] {
        assert!(
            example.contains(directive),
            "config/nginx.conf lacks {directive}"
        );
    }

    let s = TestServer::spawn_with_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n",
    );
    let tusk_port = Url::parse(s.endpoint()).port;
    let port = free_port();
    let prefix = tempfile::Builder::new()
        .prefix("tusk-nginx-")
        .tempdir()
        .unwrap();
    // Workers may run as another user when the test runs as root.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(prefix.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let p = prefix.path().display().to_string();

    // The example's server block, pointed at this tusk and this port, inside a minimal
    // top-level configuration that keeps every file in the prefix.
    let site = substitute(
        &example,
        "server 127.0.0.1:1080;",
        &format!("server 127.0.0.1:{tusk_port};"),
    );
    let site = substitute(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
    let site = site.replace("listen [::]:80;", "");
    let conf = format!(
        "worker_processes 1;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log {p}/access.log;\n\
           client_body_temp_path {p}/client_body;\n\
           proxy_temp_path {p}/proxy;\n\
         {site}\n\
         }}\n"
    );
    let conf_path = prefix.path().join("nginx.conf");
    std::fs::write(&conf_path, &conf).unwrap();

    let test = Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(prefix.path())
        .arg("-e")
        .arg(prefix.path().join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .output()
        .expect("running nginx -t");
    assert!(
        test.status.success(),
        "nginx -t rejects the generated configuration:\n{}\n--- config\n{conf}",
        String::from_utf8_lossy(&test.stderr)
    );
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(prefix.path())
        .arg("-e")
        .arg(prefix.path().join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .arg("-g")
        .arg("daemon off;")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx");
    let mut proxy = Nginx {
        child: Some(child),
        prefix,
    };
    let up = wait_until(Duration::from_secs(10), || {
        if let Some(Ok(Some(status))) = proxy.child.as_mut().map(|c| c.try_wait()) {
            panic!("nginx exited ({status}):\n{}", proxy.error_log());
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "nginx did not listen on {port}:\n{}", proxy.error_log());

    let front = format!("http://127.0.0.1:{port}/files/");
    let origin = format!("http://127.0.0.1:{port}/");

    // OPTIONS and a POST through nginx; a client cannot spoof the forwarded origin, nginx
    // replaces what it sent.
    let opts = tus("OPTIONS", &front).send();
    assert_status(&opts, &[204, 200], "OPTIONS through nginx");
    assert_eq!(opts.header("Tus-Version"), Some("1.0.0"));

    const LEN: usize = (3 << 20) + 17;
    let data = pattern(202, LEN);
    let post = tus("POST", &front)
        .header("Upload-Length", &LEN.to_string())
        .header("X-Forwarded-Host", "spoofed.example:9")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "host=spoofed.example;proto=https")
        .send();
    assert_status(&post, &[201], "POST through nginx");
    let location = post.header("Location").unwrap_or("").to_string();
    assert!(
        location.starts_with(&format!("{origin}files/")),
        "Location should be on nginx's host:port ({origin}), got {location:?}\n{}",
        proxy.error_log()
    );

    // First half chunked (as a streaming client sends it), second half with Content-Length.
    let half = LEN / 2;
    let chunks: Vec<Vec<u8>> = data[..half].chunks(64 << 10).map(|c| c.to_vec()).collect();
    let r = patch_req(&location, 0, b"")
        .without_header("Content-Length")
        .chunked(chunks, vec![])
        .send();
    assert_status(&r, &[204], "chunked PATCH through nginx");
    assert_eq!(r.header_u64("Upload-Offset"), half as u64);

    let h = head(&location);
    assert_status(&h, &[200], "HEAD through nginx");
    assert_eq!(h.header_u64("Upload-Offset"), half as u64);
    assert_eq!(h.header_u64("Upload-Length"), LEN as u64);
    assert_eq!(h.header("Cache-Control"), Some("no-store"));

    let r = patch(&location, half as u64, &data[half..]);
    assert_status(&r, &[204], "Content-Length PATCH through nginx");
    assert_eq!(r.header_u64("Upload-Offset"), LEN as u64);

    let stale = patch(&location, 0, b"late");
    assert_status(&stale, &[409], "stale PATCH through nginx");

    let got = get_bytes(&location);
    assert_eq!(got.len(), LEN, "GET through nginx: wrong length");
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&data),
        "GET through nginx: bytes differ"
    );
    assert_eq!(head_offset(&location), LEN as u64);

    // tusk saw the proxy's forwarded headers and the whole body as two PATCHes.
    let log = s.stderr();
    assert!(
        log.lines()
            .filter(|l| l.contains("method=PATCH") && l.contains("status=204"))
            .count()
            == 2,
        "tusk should have logged two PATCH 204:\n{log}"
    );
    let del = tus("DELETE", &location).send();
    assert_status(&del, &[204], "DELETE through nginx");
    assert_status(&head(&location), &[404], "HEAD after DELETE through nginx");
    drop(proxy);
}
