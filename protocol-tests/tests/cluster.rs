//! Several tusk instances over one shared backend (`storage.backend = "s3"`): upload bytes in a
//! real S3-compatible server (s3s-fs), records and upload leases in a real Redis, both started
//! per test by `protocol_tests::backends`. Two tusk processes on different ports share them;
//! the tests are what a load balancer in front of them would make a client live through.

use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::backends::SharedBackend;
use protocol_tests::*;

const MIB: usize = 1 << 20;

/// Two instances (A and B) on one fresh backend.
fn cluster() -> (SharedBackend, TestServer, TestServer) {
    let backend = SharedBackend::start();
    let a = TestServer::spawn_with_env("", backend.env());
    let b = TestServer::spawn_with_env("", backend.env());
    (backend, a, b)
}

/// The same upload URL on the other instance.
fn on(server: &TestServer, url: &str) -> String {
    server.url(&path_of(url))
}

#[track_caller]
fn assert_bytes(url: &str, source: &[u8], what: &str) {
    let (resp, len, digest) = get_sha256(url);
    assert_status(&resp, &[200], what);
    assert_eq!(len, source.len() as u64, "{what}: length");
    assert_eq!(digest, sha256_hex(source), "{what}: content differs");
}

#[test]
fn a_client_alternating_instances_between_patches_finishes_byte_exact() {
    needs_shared_backend!();
    let (_backend, a, b) = cluster();
    // 13 MiB in 1.5 MiB chunks: parts of 5 MiB are filled across requests and instances.
    let source = pattern(1, 13 * MIB);
    let url = create(&a, source.len() as u64);
    let mut offset = 0;
    for (i, chunk) in source.chunks(3 * MIB / 2).enumerate() {
        let server = if i % 2 == 0 { &b } else { &a };
        let target = on(server, &url);
        assert_eq!(head_offset(&target), offset as u64, "HEAD before chunk {i}");
        patch_ok(&target, offset as u64, chunk);
        offset += chunk.len();
    }
    assert_bytes(&on(&a, &url), &source, "GET from A");
    assert_bytes(&on(&b, &url), &source, "GET from B");
}

#[test]
fn a_stalled_patch_on_one_instance_is_taken_over_from_the_other() {
    needs_shared_backend!();
    let (_backend, a, b) = cluster();
    let source = pattern(2, 4 * MIB);
    let url = create(&a, source.len() as u64);
    // A phone on A: the head and 1 MiB, then silence (a half-open connection).
    let mut stalled = tus("PATCH", &on(&a, &url))
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", &source.len().to_string())
        .open();
    stalled.write_all(&source[..MIB]).expect("the first MiB");
    thread::sleep(Duration::from_millis(300));
    // The same phone, now on another network, reaches B.
    let began = Instant::now();
    let offset = head_offset(&on(&b, &url));
    let head_took = began.elapsed();
    let resp = patch(&on(&b, &url), offset, &source[offset as usize..]);
    let took = began.elapsed();
    assert_status(&resp, &[204], "PATCH on B after the takeover");
    assert_eq!(
        offset, MIB as u64,
        "B's HEAD reports every byte A received (after {head_took:?})"
    );
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");
    println!("takeover: HEAD on B answered in {head_took:?}, PATCH done {took:?} after it began");
    assert_bytes(&on(&b, &url), &source, "GET after the takeover");
    drop(stalled);
}

#[test]
fn simultaneous_patches_on_two_instances_never_interleave_bytes() {
    needs_shared_backend!();
    let (_backend, a, b) = cluster();
    let len = 6 * MIB;
    let url = create(&a, len as u64);
    let (url_a, url_b) = (on(&a, &url), on(&b, &url));
    let (ones, twos) = (vec![b'a'; len], vec![b'b'; len]);
    let from_a = thread::spawn(move || patch(&url_a, 0, &ones).status);
    let from_b = thread::spawn(move || patch(&url_b, 0, &twos).status);
    let statuses = [from_a.join().unwrap(), from_b.join().unwrap()];
    assert!(
        statuses.iter().filter(|s| **s == 204).count() >= 1,
        "one PATCH wins: {statuses:?}"
    );
    for status in statuses {
        assert!([204, 409, 423].contains(&status), "statuses {statuses:?}");
    }
    let bytes = get_bytes(&on(&b, &url));
    assert_eq!(bytes.len(), len, "the winner completed the upload");
    let first = bytes[0];
    assert!(
        bytes.iter().all(|b| *b == first),
        "bytes of both requests interleaved in the upload"
    );
}

#[test]
fn kill9_of_an_instance_mid_patch_resumes_on_the_other() {
    needs_shared_backend!();
    let (_backend, mut a, b) = cluster();
    let source = pattern(3, 12 * MIB);
    let url = create(&a, source.len() as u64);
    patch_ok(&on(&a, &url), 0, &source[..6 * MIB]);
    // A dies while receiving the next chunk: its lease stays in Redis until it expires.
    let mut dying = tus("PATCH", &on(&a, &url))
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", &(6 * MIB).to_string())
        .header("Content-Length", &(6 * MIB).to_string())
        .open();
    dying.write_all(&source[6 * MIB..7 * MIB]).expect("a MiB");
    thread::sleep(Duration::from_millis(200));
    a.kill9();
    let began = Instant::now();
    let offset = head_offset(&on(&b, &url));
    assert!(
        offset >= 6 * MIB as u64,
        "acknowledged bytes survive: offset {offset}"
    );
    let mut resp = patch(&on(&b, &url), offset, &source[offset as usize..]);
    // The dead instance's lease (2 s in these tests) may outlive one takeover wait.
    while resp.status == 423 && began.elapsed() < Duration::from_secs(15) {
        resp = patch(&on(&b, &url), offset, &source[offset as usize..]);
    }
    assert_status(&resp, &[204], "PATCH on B after A was killed");
    println!("resumed on B {:?} after kill -9 of A", began.elapsed());
    assert_bytes(&on(&b, &url), &source, "GET after kill -9");
}

#[test]
fn an_upload_completes_after_redis_is_flushed_mid_upload() {
    needs_shared_backend!();
    let (backend, a, b) = cluster();
    let source = pattern(4, 9 * MIB);
    let url = create(&a, source.len() as u64);
    patch_ok(&on(&a, &url), 0, &source[..7 * MIB]);
    assert!(backend.redis(&["FLUSHALL"]).starts_with("+OK"));
    // Every record and lease is gone; the object store still has the upload.
    let offset = head_offset(&on(&b, &url));
    assert_eq!(
        offset,
        7 * MIB as u64,
        "offset re-derived from the object store"
    );
    patch_ok(&on(&b, &url), offset, &source[offset as usize..]);
    assert_bytes(&on(&a, &url), &source, "GET after FLUSHALL");
}

#[test]
fn an_object_store_restart_gives_5xx_then_the_upload_resumes() {
    needs_shared_backend!();
    let (mut backend, a, _b) = cluster();
    let source = pattern(5, 8 * MIB);
    let url = on(&a, &url_of(&a, source.len()));
    patch_ok(&url, 0, &source[..3 * MIB]);
    backend.stop_s3();
    let resp = patch(&url, 3 * MIB as u64, &source[3 * MIB..6 * MIB]);
    assert_eq!(resp.status, 503, "object store down: {}", resp.describe());
    assert!(resp.has("Retry-After"), "503 says when to retry");
    backend.start_s3();
    let offset = head_offset(&url);
    assert_eq!(offset, 3 * MIB as u64, "nothing acknowledged was lost");
    patch_ok(&url, offset, &source[offset as usize..]);
    assert_bytes(&url, &source, "GET after the object store came back");
}

fn url_of(server: &TestServer, len: usize) -> String {
    create(server, len as u64)
}

#[test]
fn terminating_an_upload_removes_its_objects_and_record() {
    needs_shared_backend!();
    let (backend, a, b) = cluster();
    let source = pattern(6, 6 * MIB);
    let url = create(&a, source.len() as u64);
    patch_ok(&on(&a, &url), 0, &source[..5 * MIB + 17]);
    assert!(!backend.object_keys().is_empty(), "the upload has objects");
    let resp = tus("DELETE", &on(&b, &url)).send();
    assert_status(&resp, &[204], "DELETE on B");
    assert_status(&head(&on(&a, &url)), &[404], "HEAD on A after DELETE on B");
    assert!(
        wait_until(Duration::from_secs(5), || backend.object_keys().is_empty()),
        "objects left behind: {:?}",
        backend.object_keys()
    );
}

#[test]
fn an_expired_upload_loses_its_objects_and_its_multipart_parts() {
    needs_shared_backend!();
    let backend = SharedBackend::start();
    let fast_expiry = "[expiration]\nexpire_after = \"2s\"\nsweep_interval = \"1s\"\n";
    let a = TestServer::spawn_with_env(fast_expiry, backend.env());
    let source = pattern(7, 10 * MIB);
    let url = create(&a, source.len() as u64);
    // One 5 MiB part uploaded, 1 MiB in the tail object, then the client goes away.
    patch_ok(&url, 0, &source[..6 * MIB]);
    assert!(backend.multipart_leftovers() > 0, "a part is stored");
    assert!(
        wait_until(Duration::from_secs(10), || [404, 410]
            .contains(&head(&url).status)),
        "the upload never expired"
    );
    assert!(
        wait_until(Duration::from_secs(5), || backend.object_keys().is_empty()
            && backend.multipart_leftovers() == 0),
        "left behind: objects {:?}, {} multipart files",
        backend.object_keys(),
        backend.multipart_leftovers()
    );
}

#[test]
fn a_wrong_secret_key_is_refused_at_start_up() {
    needs_shared_backend!();
    let backend = SharedBackend::start();
    let data = tempfile::tempdir().expect("a data directory");
    let env = backend.env().into_iter().map(|(k, v)| {
        let v = if k == "TUSK_S3__SECRET_KEY" {
            format!("{v}-wrong")
        } else {
            v
        };
        (k, v)
    });
    // The S3 server must check every signature: with a secret it does not know, HeadBucket
    // is refused and tusk stops before it listens.
    let mut child = std::process::Command::new(tusk_bin())
        .args(["--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(data.path())
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting tusk");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for tusk") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tusk started with a wrong S3 secret key");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "tusk exited {status}: {stderr}");
    assert!(
        stderr.contains("denied"),
        "the error names the refusal: {stderr}"
    );
}
