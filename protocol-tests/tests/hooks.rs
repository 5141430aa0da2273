//! HTTP hooks against the real binary and a real hook receiver.
//!
//! Each test starts a [`HookReceiver`]: a small HTTP/1.1 server on a real socket that records
//! the JSON body of every hook call and answers as the test's responder says (accept, reject,
//! change metadata, answer slowly, hugely, malformed, or fail). One test per rule of the hook
//! contract; every wait is a poll with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::*;
use serde_json::{json, Value};

/// How a receiver answers one hook call.
enum Reply {
    /// 200 with this JSON body (`Value::Null` = empty body).
    Ok(Value),
    /// This status, empty body.
    Status(u16),
    /// 200 with this raw body.
    Raw(Vec<u8>),
    /// Wait this long before answering 200.
    Slow(Duration),
}

type Responder = dyn Fn(&Value) -> Reply + Send + Sync;

/// A real HTTP server that records hook calls.
struct HookReceiver {
    port: u16,
    calls: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl HookReceiver {
    fn start(responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> HookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the hook receiver");
        let port = listener.local_addr().unwrap().port();
        let calls: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let responder: Arc<Responder> = Arc::new(responder);
        let recorded = Arc::clone(&calls);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (responder, recorded) = (Arc::clone(&responder), Arc::clone(&recorded));
                thread::spawn(move || serve(stream, &*responder, &recorded));
            }
        });
        HookReceiver { port, calls }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The calls of one event so far.
    fn events(&self, event: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, v)| v["event"] == event)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Wait (at most 5 s) until `count` calls of `event` arrived.
    #[track_caller]
    fn wait_for(&self, event: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.events(event);
            if seen.len() >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} {event} calls, got {}: {seen:?}",
                seen.len()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Poll `done` every 20 ms until it holds; panics after `limit` with `what`.
#[track_caller]
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// One connection: read one request, record its JSON, answer, close.
fn serve(stream: TcpStream, responder: &Responder, recorded: &Mutex<Vec<(Instant, Value)>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    recorded
        .lock()
        .unwrap()
        .push((Instant::now(), value.clone()));
    let (status, body) = match responder(&value) {
        Reply::Ok(Value::Null) => (200, Vec::new()),
        Reply::Ok(json) => (200, json.to_string().into_bytes()),
        Reply::Status(status) => (status, Vec::new()),
        Reply::Raw(bytes) => (200, bytes),
        Reply::Slow(wait) => {
            thread::sleep(wait);
            (200, Vec::new())
        }
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// A URL on a port nobody listens on.
fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hook")
}

/// A server whose `[hooks]` section is `extra` plus `url`.
fn server_with_hooks(url: &str, extra: &str) -> TestServer {
    TestServer::spawn_with_config(&format!("[hooks]\nurl = \"{url}\"\n{extra}\n"))
}

fn accept_all() -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    |_: &Value| Reply::Ok(Value::Null)
}

/// `event` answered by `reply`, every other event accepted.
fn on(
    event: &'static str,
    reply: impl Fn(&Value) -> Reply + Send + Sync + 'static,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |v: &Value| {
        if v["event"] == event {
            reply(v)
        } else {
            Reply::Ok(Value::Null)
        }
    }
}

fn reject(status: u16, message: &str) -> Reply {
    Reply::Ok(json!({"reject": {"status": status, "message": message}}))
}

#[test]
fn pre_create_rejection_shows_the_hook_status_and_message_to_the_client() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-create", |_| reject(403, "no PDFs\r\nplease")));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-create\"]");
    let resp = tus("POST", server.endpoint())
        .header("Upload-Length", "5")
        .header("Upload-Metadata", &metadata(&[("filename", b"a.pdf")]))
        .send();
    assert_status(&resp, &[403], "POST refused by pre-create");
    assert!(resp.text().contains("no PDFsplease"), "{}", resp.describe());
    assert!(!resp.has("Location"), "{}", resp.describe());
    let call = &hooks.wait_for("pre-create", 1)[0];
    assert_eq!(call["metadata"]["filename"], "a.pdf");
    assert_eq!(call["upload"]["length"], 5);
}

#[test]
fn pre_create_can_replace_the_metadata() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-create", |_| {
        Reply::Ok(json!({"metadata": {"filename": "renamed.txt", "checked": null}}))
    }));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-create\"]");
    let (url, _) = create_with(
        &server,
        &[
            ("Upload-Length", "5"),
            ("Upload-Metadata", &metadata(&[("filename", b"a.pdf")])),
        ],
    );
    let resp = head(&url);
    assert_status(&resp, &[200], "HEAD");
    let seen = parse_metadata(resp.header("Upload-Metadata").unwrap_or(""));
    assert_eq!(
        seen.get("filename").map(Vec::as_slice),
        Some(&b"renamed.txt"[..])
    );
    assert!(seen.contains_key("checked"), "{}", resp.describe());
}

#[test]
fn post_create_carries_the_upload_and_only_safe_request_headers() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(accept_all());
    let server = server_with_hooks(
        &hooks.url(),
        "events = [\"post-create\"]\nforward_headers = [\"x-tenant\"]",
    );
    let (url, _) = create_with(
        &server,
        &[
            ("Upload-Length", "5"),
            ("Authorization", "Bearer secret"),
            ("Cookie", "session=1"),
            ("X-Tenant", "acme"),
        ],
    );
    let call = &hooks.wait_for("post-create", 1)[0];
    assert_eq!(call["upload"]["id"], upload_id(&url).as_str());
    assert_eq!(call["upload"]["offset"], 0);
    let request = &call["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["uri"], path_of(server.endpoint()).as_str());
    assert!(request["remote_addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let headers = &request["headers"];
    assert_eq!(headers["upload-length"], "5");
    assert_eq!(headers["tus-resumable"], "1.0.0");
    assert_eq!(headers["x-tenant"], "acme");
    assert!(headers.get("authorization").is_none(), "{call}");
    assert!(headers.get("cookie").is_none(), "{call}");
}

#[test]
fn post_receive_is_throttled_to_the_progress_interval() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(accept_all());
    let server = server_with_hooks(
        &hooks.url(),
        "events = [\"post-receive\"]\nprogress_interval = \"500ms\"",
    );
    let url = create(&server, 1 << 20);
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Transfer-Encoding", "chunked")
        .open();
    let started = Instant::now();
    // ~2 s of 1 KiB every 50 ms.
    for _ in 0..40 {
        conn.write_chunk(&[7u8; 1024]).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    conn.finish_chunked(&[]).unwrap();
    let resp = conn.read_response().unwrap();
    assert_status(&resp, &[204], "slow PATCH");
    let elapsed = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let events = hooks.events("post-receive");
    let most = (elapsed.as_millis() / 500) as usize + 1;
    assert!(
        (2..=most).contains(&events.len()),
        "{} progress events in {elapsed:?} (at most {most})",
        events.len()
    );
    let offsets: Vec<u64> = events
        .iter()
        .map(|e| e["upload"]["offset"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(
        offsets.iter().all(|&o| o > 0 && o <= 40 * 1024),
        "{offsets:?}"
    );
}

#[test]
fn pre_finish_rejection_discards_the_upload() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-finish", |_| reject(422, "virus found")));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-finish\", \"post-finish\"]");
    let url = create(&server, 10);
    patch_ok(&url, 0, b"hello");
    let resp = patch(&url, 5, b"world");
    assert_status(&resp, &[422], "last PATCH refused by pre-finish");
    assert!(resp.text().contains("virus found"), "{}", resp.describe());
    let call = &hooks.wait_for("pre-finish", 1)[0];
    assert_eq!(call["upload"]["offset"], 10);
    assert_status(&head(&url), &[404], "HEAD of a discarded upload");
    assert!(!server.upload_file(&upload_id(&url)).exists());
    thread::sleep(Duration::from_millis(200));
    assert!(hooks.events("post-finish").is_empty());
}

#[test]
fn post_finish_carries_the_full_length() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(accept_all());
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-finish\", \"post-finish\"]");
    let url = create(&server, 10);
    patch_ok(&url, 0, b"hello");
    thread::sleep(Duration::from_millis(100));
    assert!(hooks.events("post-finish").is_empty(), "not finished yet");
    patch_ok(&url, 5, b"world");
    let call = &hooks.wait_for("post-finish", 1)[0];
    assert_eq!(call["upload"]["offset"], 10);
    assert_eq!(call["upload"]["length"], 10);
    assert_eq!(call["upload"]["state"], "completed");
    assert_eq!(hooks.events("pre-finish").len(), 1);
    assert_eq!(get_bytes(&url), b"helloworld");
}

#[test]
fn pre_terminate_rejection_keeps_the_upload() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-terminate", |_| reject(409, "legal hold")));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-terminate\"]");
    let url = create(&server, 10);
    patch_ok(&url, 0, b"hello");
    let resp = tus("DELETE", &url).send();
    assert_status(&resp, &[409], "DELETE refused by pre-terminate");
    assert!(resp.text().contains("legal hold"), "{}", resp.describe());
    assert_eq!(head_offset(&url), 5);
}

#[test]
fn post_terminate_follows_a_delete() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(accept_all());
    let server = server_with_hooks(
        &hooks.url(),
        "events = [\"pre-terminate\", \"post-terminate\"]",
    );
    let url = create(&server, 10);
    assert_status(&tus("DELETE", &url).send(), &[204], "DELETE");
    let call = &hooks.wait_for("post-terminate", 1)[0];
    assert_eq!(call["upload"]["id"], upload_id(&url).as_str());
    assert_eq!(call["request"]["method"], "DELETE");
    assert_eq!(hooks.events("pre-terminate").len(), 1);
    assert_status(&head(&url), &[404], "HEAD after DELETE");
}

#[test]
fn pre_access_decides_every_head_patch_and_get() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-access", |v| {
        if v["request"]["headers"]["x-request-id"] == "deny" {
            reject(401, "who are you")
        } else {
            Reply::Ok(Value::Null)
        }
    }));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-access\"]");
    let url = create(&server, 5);
    let denied = |req: Request| {
        let has_body = req.method != "HEAD";
        let resp = req.header("X-Request-ID", "deny").send();
        assert_status(&resp, &[401], "refused by pre-access");
        assert!(
            !has_body || resp.text().contains("who are you"),
            "{}",
            resp.describe()
        );
    };
    denied(tus("HEAD", &url));
    denied(patch_req(&url, 0, b"hello"));
    denied(tus("GET", &url));
    assert_eq!(head_offset(&url), 0, "the refused PATCH wrote nothing");
    patch_ok(&url, 0, b"hello");
    assert_eq!(get_bytes(&url), b"hello");
    let calls = hooks.events("pre-access");
    let methods: Vec<&str> = calls
        .iter()
        .map(|c| c["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["HEAD", "PATCH", "GET", "HEAD", "PATCH", "GET"]);
    assert!(calls
        .iter()
        .all(|c| c["upload"]["id"] == upload_id(&url).as_str()));
}

#[test]
fn pre_hooks_fail_closed_with_503_when_the_hook_server_is_down() {
    needs_spawned_server!();
    let down = closed_url();
    let started = Instant::now();

    let server = server_with_hooks(&down, "events = [\"pre-create\"]");
    let resp = tus("POST", server.endpoint())
        .header("Upload-Length", "5")
        .send();
    assert_status(&resp, &[503], "POST with pre-create down");
    assert!(resp.text().contains("pre-create"), "{}", resp.describe());

    let server = server_with_hooks(&down, "events = [\"pre-finish\", \"pre-terminate\"]");
    let url = create(&server, 10);
    patch_ok(&url, 0, b"hello");
    assert_status(
        &patch(&url, 5, b"world"),
        &[503],
        "last PATCH with pre-finish down",
    );
    assert_eq!(
        head_offset(&url),
        5,
        "the refused last chunk left the upload as it was"
    );
    assert_status(
        &tus("DELETE", &url).send(),
        &[503],
        "DELETE with pre-terminate down",
    );
    assert_eq!(head_offset(&url), 5, "the upload is still there");

    // Only pre-access is down: a per-event endpoint replaces `url` for it.
    let hooks = HookReceiver::start(accept_all());
    let server = server_with_hooks(
        &hooks.url(),
        &format!(
            "events = [\"pre-access\", \"post-create\"]\nurls = {{ pre-access = \"{down}\" }}"
        ),
    );
    let url = create(&server, 10);
    assert_status(&head(&url), &[503], "HEAD with pre-access down");
    assert_status(
        &patch(&url, 0, b"hello"),
        &[503],
        "PATCH with pre-access down",
    );
    hooks.wait_for("post-create", 1);
    assert!(hooks.events("pre-access").is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn post_hooks_are_retried_with_backoff_then_given_up() {
    needs_spawned_server!();
    let create_attempts = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::clone(&create_attempts);
    let hooks = HookReceiver::start(move |v| match v["event"].as_str() {
        // Flaky: fails twice, then succeeds.
        Some("post-create") if attempts.fetch_add(1, Ordering::SeqCst) < 2 => Reply::Status(500),
        Some("post-finish") => Reply::Status(502),
        _ => Reply::Ok(Value::Null),
    });
    let server = server_with_hooks(
        &hooks.url(),
        "events = [\"post-create\", \"post-finish\"]\nretries = 2\nbackoff = \"100ms\"",
    );
    let started = Instant::now();
    let url = create(&server, 5);
    patch_ok(&url, 0, b"hello");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "post-* hooks must not delay the client: {:?}",
        started.elapsed()
    );
    assert_eq!(hooks.wait_for("post-create", 3).len(), 3);
    assert_eq!(hooks.wait_for("post-finish", 3).len(), 3);
    // Backoff 100 ms then 200 ms, then no more attempts.
    thread::sleep(Duration::from_millis(800));
    assert_eq!(hooks.events("post-create").len(), 3);
    assert_eq!(hooks.events("post-finish").len(), 3);
    let metrics = tus("GET", &server.url("/metrics")).send().text();
    assert!(
        metrics.contains("tusk_hook_calls_total{event=\"post-finish\",outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tusk_hook_calls_total{event=\"post-create\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[test]
fn slow_hook_fails_closed_within_the_timeout() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-create", |_| Reply::Slow(Duration::from_secs(3))));
    let server = server_with_hooks(
        &hooks.url(),
        "events = [\"pre-create\"]\ntimeout = \"500ms\"",
    );
    let started = Instant::now();
    let resp = tus("POST", server.endpoint())
        .header("Upload-Length", "5")
        .send();
    let elapsed = started.elapsed();
    assert_status(&resp, &[503], "POST with a slow pre-create hook");
    assert!(resp.text().contains("timed out"), "{}", resp.describe());
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
}

#[test]
fn huge_or_malformed_hook_answers_fail_closed() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-create", |v| {
        match v["metadata"]["case"].as_str().unwrap_or("") {
            "huge" => Reply::Raw(vec![b' '; 1 << 20]),
            "malformed" => Reply::Raw(b"{\"reject\": ".to_vec()),
            "server-error" => Reply::Status(500),
            "reject-with-5xx" => reject(500, "make the server look broken"),
            "reject-with-2xx" => reject(200, "fake success"),
            _ => Reply::Ok(Value::Null),
        }
    }));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-create\"]");
    for case in [
        "huge",
        "malformed",
        "server-error",
        "reject-with-5xx",
        "reject-with-2xx",
    ] {
        let started = Instant::now();
        let resp = tus("POST", server.endpoint())
            .header("Upload-Length", "5")
            .header("Upload-Metadata", &metadata(&[("case", case.as_bytes())]))
            .send();
        assert_status(&resp, &[503], case);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{case}: {:?}",
            started.elapsed()
        );
    }
    create_with(
        &server,
        &[
            ("Upload-Length", "5"),
            ("Upload-Metadata", &metadata(&[("case", b"fine")])),
        ],
    );
}

#[test]
fn pre_finish_also_decides_the_join_of_a_final_upload() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-finish", |v| {
        if v["upload"]["concat"].get("Final").is_some() {
            reject(422, "joined file refused")
        } else {
            Reply::Ok(Value::Null)
        }
    }));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-finish\", \"post-finish\"]");
    let mut parts = Vec::new();
    for data in [&b"abc"[..], b"def"] {
        let (url, _) = create_with(
            &server,
            &[("Upload-Length", "3"), ("Upload-Concat", "partial")],
        );
        patch_ok(&url, 0, data);
        parts.push(path_of(&url));
    }
    let resp = tus("POST", server.endpoint())
        .header("Upload-Concat", &format!("final;{}", parts.join(" ")))
        .send();
    assert_status(&resp, &[422], "final upload refused by pre-finish");
    assert!(
        resp.text().contains("joined file refused"),
        "{}",
        resp.describe()
    );
    let finals: Vec<Value> = hooks
        .wait_for("pre-finish", 3)
        .into_iter()
        .filter(|v| v["upload"]["concat"].get("Final").is_some())
        .collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0]["upload"]["offset"], 6);
    let final_id = finals[0]["upload"]["id"].as_str().unwrap().to_owned();
    assert_status(
        &head(&server.url(&format!("{}{final_id}", path_of(server.endpoint())))),
        &[404],
        "HEAD of the discarded final upload",
    );
    for part in &parts {
        assert_eq!(head_offset(&server.url(part)), 3, "parts are kept");
    }
    assert_eq!(
        hooks.wait_for("post-finish", 2).len(),
        2,
        "only the parts finished"
    );
}

/// A token for `sub` from `tusk token`, signed with the key in `keys`.
fn mint(keys: &std::path::Path, sub: &str) -> String {
    let out = std::process::Command::new(tusk_bin())
        .args(["token", "--secret-file"])
        .arg(keys)
        .args(["--sub", sub])
        .output()
        .expect("running tusk token");
    assert!(out.status.success(), "tusk token: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn hooks_see_the_owner_and_pre_access_runs_only_for_the_owner() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "0123456789abcdef0123456789abcdef\n").unwrap();
    let hooks = HookReceiver::start(accept_all());
    let server = TestServer::spawn_with_config(&format!(
        "[auth]\nmode = \"token\"\nsecret_file = \"{}\"\n[hooks]\nurl = \"{}\"\nevents = [\"post-create\", \"pre-access\"]\n",
        keys.display(),
        hooks.url()
    ));
    let (alice, bob) = (mint(&keys, "alice"), mint(&keys, "bob"));
    let resp = tus("POST", server.endpoint())
        .header("Authorization", &format!("Bearer {alice}"))
        .header("Upload-Length", "5")
        .send();
    assert_status(&resp, &[201], "POST as alice");
    let url = resolve(server.endpoint(), resp.header("Location").unwrap());
    let created = &hooks.wait_for("post-create", 1)[0];
    assert_eq!(created["upload"]["owner"], "alice", "{created}");

    let foreign = tus("HEAD", &url)
        .header("Authorization", &format!("Bearer {bob}"))
        .send();
    assert_status(&foreign, &[403], "HEAD as bob");
    let own = tus("HEAD", &url)
        .header("Authorization", &format!("Bearer {alice}"))
        .send();
    assert_status(&own, &[200], "HEAD as alice");
    let accesses = hooks.wait_for("pre-access", 1);
    std::thread::sleep(Duration::from_millis(200));
    let accesses = hooks.events("pre-access").len().max(accesses.len());
    assert_eq!(accesses, 1, "pre-access must run for the owner's HEAD only");
}

#[test]
fn post_finish_pending_at_a_crash_is_delivered_after_restart_with_the_same_event_id() {
    needs_spawned_server!();
    let accepting = Arc::new(AtomicBool::new(false));
    let delivered: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (open, answered) = (Arc::clone(&accepting), Arc::clone(&delivered));
    let hooks = HookReceiver::start(move |v| {
        if v["event"] != "post-finish" {
            return Reply::Ok(Value::Null);
        }
        if !open.load(Ordering::SeqCst) {
            return Reply::Status(503);
        }
        answered.lock().unwrap().push(v.clone());
        Reply::Ok(Value::Null)
    });
    // Retries far into the future: when the server dies, every event is waiting for one.
    let mut server = server_with_hooks(
        &hooks.url(),
        "events = [\"post-finish\"]\nretries = 10\nbackoff = \"2s\"",
    );
    let mut uploads = Vec::new();
    for data in [&b"one"[..], b"two", b"six"] {
        let url = create(&server, 3);
        patch_ok(&url, 0, data);
        uploads.push(upload_id(&url));
    }
    let attempted = |calls: &[Value]| {
        let mut ids: Vec<String> = calls
            .iter()
            .filter_map(|c| c["upload"]["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    wait_until(
        "a refused attempt of every post-finish",
        Duration::from_secs(5),
        || attempted(&hooks.events("post-finish")) == uploads.len(),
    );
    let before_crash = hooks.events("post-finish");
    server.kill9();
    accepting.store(true, Ordering::SeqCst);
    server.start();

    wait_until(
        "every post-finish delivered after the restart",
        Duration::from_secs(10),
        || attempted(&delivered.lock().unwrap()) == uploads.len(),
    );
    for id in &uploads {
        let ids_of = |calls: &[Value]| {
            let mut ids: Vec<String> = calls
                .iter()
                .filter(|c| c["upload"]["id"] == id.as_str())
                .map(|c| c["event_id"].as_str().expect("an event_id").to_owned())
                .collect();
            ids.dedup();
            ids
        };
        let first = ids_of(&before_crash);
        assert_eq!(first.len(), 1, "one event_id per event: {first:?}");
        let all = ids_of(&hooks.events("post-finish"));
        assert_eq!(
            all, first,
            "the redelivery carries the event_id of the attempts before"
        );
        let got = delivered.lock().unwrap().clone();
        assert_eq!(ids_of(&got), first);
        let delivered_one = got
            .iter()
            .find(|c| c["upload"]["id"] == id.as_str())
            .unwrap();
        assert_eq!(delivered_one["upload"]["offset"], 3);
    }
    // Delivered events leave the outbox: nothing is sent again at the next start.
    let outbox = server.data_dir().join("hooks-outbox");
    wait_until("an empty outbox", Duration::from_secs(5), || {
        std::fs::read_dir(&outbox).is_ok_and(|d| d.count() == 0)
    });
}

#[test]
fn draft_delete_asks_pre_terminate_and_sends_post_terminate() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-terminate", |v| {
        if v["request"]["headers"]["x-request-id"] == "hold" {
            reject(409, "legal hold")
        } else {
            Reply::Ok(Value::Null)
        }
    }));
    let server = server_with_hooks(
        &hooks.url(),
        "events = [\"pre-terminate\", \"post-terminate\"]",
    );
    let url = create(&server, 10);
    patch_ok(&url, 0, b"hello");
    let draft_delete = || Request::new("DELETE", &url).header("Upload-Draft-Interop-Version", "8");
    let refused = draft_delete().header("X-Request-ID", "hold").send();
    assert_status(&refused, &[409], "draft DELETE refused by pre-terminate");
    assert_eq!(head_offset(&url), 5, "the refused DELETE kept the upload");
    assert_status(&draft_delete().send(), &[204], "draft DELETE");
    let call = &hooks.wait_for("post-terminate", 1)[0];
    assert_eq!(call["upload"]["id"], upload_id(&url).as_str());
    assert_eq!(call["request"]["method"], "DELETE");
    assert_eq!(hooks.events("pre-terminate").len(), 2);
    assert_status(&head(&url), &[404], "HEAD after the draft DELETE");
}

#[test]
fn draft_uploads_finish_through_pre_finish_and_post_finish() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(accept_all());
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-finish\", \"post-finish\"]");
    let draft_post = || {
        Request::new("POST", server.endpoint())
            .header("Upload-Draft-Interop-Version", "8")
            .header("Upload-Complete", "?1")
    };
    // Empty: finished as it is created.
    assert_status(&draft_post().send(), &[201], "empty draft upload");
    let empty = &hooks.wait_for("post-finish", 1)[0];
    assert_eq!(empty["upload"]["length"], 0);
    // Chunked: its length is only known when the body ends.
    let chunked = draft_post()
        .chunked(vec![b"hel".to_vec(), b"lo".to_vec()], Vec::new())
        .send();
    assert_status(&chunked, &[201], "chunked draft upload");
    let calls = hooks.wait_for("post-finish", 2);
    assert_eq!(calls[1]["upload"]["length"], 5);
    assert_eq!(calls[1]["upload"]["offset"], 5);
    assert_eq!(calls[1]["upload"]["state"], "completed");
    assert_eq!(hooks.events("pre-finish").len(), 2);
}

#[test]
fn pre_access_decides_whether_a_partial_may_be_joined_into_a_final() {
    needs_spawned_server!();
    let hooks = HookReceiver::start(on("pre-access", |v| {
        if v["request"]["headers"]["x-request-id"] == "mallory" {
            reject(403, "not yours")
        } else {
            Reply::Ok(Value::Null)
        }
    }));
    let server = server_with_hooks(&hooks.url(), "events = [\"pre-access\"]");
    let mut parts = Vec::new();
    for data in [&b"abc"[..], b"def"] {
        let (url, _) = create_with(
            &server,
            &[("Upload-Length", "3"), ("Upload-Concat", "partial")],
        );
        patch_ok(&url, 0, data);
        parts.push(path_of(&url));
    }
    let join = || {
        tus("POST", server.endpoint())
            .header("Upload-Concat", &format!("final;{}", parts.join(" ")))
    };
    let asked_before = hooks.events("pre-access").len();
    let refused = join().header("X-Request-ID", "mallory").send();
    assert_status(&refused, &[403], "a final joining parts pre-access refuses");
    assert!(
        refused.text().contains("not yours"),
        "{}",
        refused.describe()
    );
    assert!(!refused.has("Location"), "{}", refused.describe());
    let asked = hooks.events("pre-access");
    let call = &asked[asked_before];
    assert_eq!(call["upload"]["concat"], "Partial", "{call}");
    assert_eq!(call["request"]["method"], "POST");
    let joined = join().send();
    assert_status(&joined, &[201], "a final joining parts pre-access allows");
    let final_url = resolve(server.endpoint(), joined.header("Location").unwrap());
    assert_eq!(get_bytes(&final_url), b"abcdef");
}

#[test]
fn hooks_never_see_a_query_token_or_a_link_signature() {
    needs_spawned_server!();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "0123456789abcdef0123456789abcdef\n").unwrap();
    let hooks = HookReceiver::start(accept_all());
    let server = TestServer::spawn_with_config(&format!(
        "[auth]\nmode = \"token\"\nsecret_file = \"{}\"\n[hooks]\nurl = \"{}\"\nevents = [\"post-create\", \"pre-access\"]\n",
        keys.display(),
        hooks.url()
    ));
    let alice = mint(&keys, "alice");
    let resp = tus("POST", &format!("{}?x=1&token={alice}", server.endpoint()))
        .header("Upload-Length", "2")
        .send();
    assert_status(&resp, &[201], "POST with ?token=");
    let url = resolve(server.endpoint(), resp.header("Location").unwrap());
    let created = &hooks.wait_for("post-create", 1)[0];
    let uri = created["request"]["uri"].as_str().unwrap();
    assert_eq!(
        uri,
        format!("{}?x=1", path_of(server.endpoint())),
        "{created}"
    );
    patch_ok(&format!("{url}?token={alice}"), 0, b"ok");
    let linked = tus("POST", &format!("{url}/link?token={alice}")).send();
    assert_status(&linked, &[201], "a download link");
    let body = linked.text();
    let link = body
        .split("\"url\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no url in {body}"))
        .to_owned();
    assert!(link.contains("signature="), "{link}");
    assert_eq!(get_bytes(&link), b"ok");
    let calls = hooks.events("pre-access");
    assert!(calls.len() >= 2, "{calls:?}");
    for call in &calls {
        let uri = call["request"]["uri"].as_str().unwrap();
        assert!(!uri.contains(&alice) && !uri.contains("token="), "{uri}");
        assert!(!uri.contains("signature"), "{uri}");
    }
    assert!(calls
        .iter()
        .any(|c| c["request"]["uri"].as_str().unwrap().contains("expires=")));
}
