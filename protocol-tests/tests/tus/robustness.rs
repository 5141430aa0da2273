//! Robustness: hostile ids, restarts, crashes, interrupted and concurrent PATCHes,
//! and gigabyte uploads.

use std::time::{Duration, Instant};

use protocol_tests::*;
use sha2::{Digest, Sha256};

/// "This specification does not describe the structure of URLs": whatever tusk's ids
/// look like, ids with path tricks must resolve to no upload (404), never to a server
/// error and never to a file outside the data dir.
#[test]
fn path_traversal_ids_are_not_found() {
    let s = TestServer::spawn();
    // Make sure there is something in the data dir to find.
    let url = create(&s, 3);
    patch_ok(&url, 0, b"abc");
    let long = "a".repeat(1000);
    let tricks = [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "abc%00",
        "..",
        long.as_str(),
        "../../etc/passwd",
        "..%5C..%5Cetc%5Cpasswd",
    ];
    for t in tricks {
        let target = s.url(t);
        let r = head(&target);
        assert_status(&r, &[404], &format!("HEAD {t}"));
        assert!(!r.has("Upload-Offset"), "{}", r.describe());
        let r = get(&target);
        assert_status(&r, &[404], &format!("GET {t}"));
        let r = patch(&target, 0, b"x");
        assert!(
            (400..500).contains(&r.status),
            "PATCH {t}: expected a 4xx, got {}",
            r.describe()
        );
        let r = tus("DELETE", &target).send();
        assert!(
            (400..500).contains(&r.status),
            "DELETE {t}: expected a 4xx, got {}",
            r.describe()
        );
    }
    assert_eq!(get_bytes(&url), b"abc", "the real upload was disturbed");
}

/// "Both Client and Server, SHOULD attempt to detect and handle network errors
/// predictably." tusk: after a graceful restart (SIGTERM) an upload resumes at the
/// same offset and finishes with the right bytes.
#[test]
fn restart_preserves_upload_offset() {
    needs_spawned_server!();
    let mut s = TestServer::spawn();
    let data = pattern(70, 50_000);
    let url = create(&s, data.len() as u64);
    patch_ok(&url, 0, &data[..20_000]);
    let path = path_of(&url);
    s.restart();
    let url = s.url(&path);
    assert_eq!(head_offset(&url), 20_000, "offset after restart");
    patch_ok(&url, 20_000, &data[20_000..]);
    assert_eq!(get_bytes(&url), data);
}

/// The same with `durability = "relaxed"`: a graceful shutdown still keeps every
/// acknowledged byte.
#[test]
fn restart_preserves_upload_offset_with_relaxed_durability() {
    needs_spawned_server!();
    local_backend_only!("relaxed durability exists only on the local backend");
    let mut s = TestServer::spawn_with_config("[storage]\ndurability = \"relaxed\"\n");
    let data = pattern(71, 30_000);
    let url = create(&s, data.len() as u64);
    patch_ok(&url, 0, &data[..12_345]);
    let path = path_of(&url);
    s.restart();
    let url = s.url(&path);
    assert_eq!(head_offset(&url), 12_345, "offset after restart");
    patch_ok(&url, 12_345, &data[12_345..]);
    assert_eq!(get_bytes(&url), data);
}

/// tusk (durability = "fsync"): bytes acknowledged with 204 survive a SIGKILL; the
/// upload can be resumed from the acknowledged offset and metadata is intact.
#[test]
fn acknowledged_bytes_survive_kill9() {
    needs_spawned_server!();
    let mut s = TestServer::spawn();
    let data = pattern(72, 40_000);
    let meta = metadata(&[("filename", b"crash.bin")]);
    let (url, _) = create_with(
        &s,
        &[("Upload-Length", "40000"), ("Upload-Metadata", &meta)],
    );
    patch_ok(&url, 0, &data[..25_000]);
    let path = path_of(&url);
    s.kill9();
    s.start();
    let url = s.url(&path);
    let h = head(&url);
    assert_status(&h, &[200], "HEAD after kill -9");
    assert_eq!(h.header_u64("Upload-Offset"), 25_000, "{}", h.describe());
    assert_eq!(
        parse_metadata(h.header("Upload-Metadata").unwrap_or("")),
        parse_metadata(&meta)
    );
    patch_ok(&url, 25_000, &data[25_000..]);
    assert_eq!(get_bytes(&url), data);
}

/// tusk: a long PATCH is committed along the way (every 64 MiB, or 5 s), so a client still
/// sending sees the offset grow, and a SIGKILL mid-body keeps every checkpointed byte.
#[test]
fn long_patch_is_checkpointed_while_it_runs_and_survives_kill9() {
    needs_spawned_server!();
    local_backend_only!("reads the upload's file after the kill");
    let mut s = TestServer::spawn();
    let total = 80usize << 20;
    let data = pattern(74, total);
    let url = create(&s, total as u64);
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", &total.to_string())
        .open();
    let fast = 70usize << 20;
    conn.write_all(&data[..fast]).expect("sending 70 MiB");
    // Trickle on, so the PATCH stays a live holder, until a HEAD reports the checkpoint.
    let mut sent = fast;
    let mut offset = 0;
    let reached = wait_until(Duration::from_secs(20), || {
        conn.write_all(&data[sent..sent + 16]).expect("trickling");
        sent += 16;
        offset = head(&url).header_u64("Upload-Offset");
        offset >= 64 << 20
    });
    assert!(
        reached,
        "no checkpoint seen while the body was arriving (offset {offset})"
    );
    assert!(
        offset as usize <= sent,
        "offset {offset} beyond the {sent} bytes sent"
    );
    let path = path_of(&url);
    s.kill9();
    drop(conn);
    s.start();
    let url = s.url(&path);
    let kept = head(&url).header_u64("Upload-Offset");
    assert!(
        kept >= offset,
        "SIGKILL lost checkpointed bytes: {kept} < {offset}"
    );
    let stored = std::fs::read(s.upload_file(&upload_id(&url))).expect("reading the upload");
    assert!(stored.len() as u64 >= kept);
    assert!(
        stored[..kept as usize] == data[..kept as usize],
        "checkpointed bytes differ"
    );
    patch_ok(&url, kept, &data[kept as usize..]);
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}

/// tusk: a concatenated final upload survives a restart.
#[test]
fn restart_preserves_final_upload() {
    needs_spawned_server!();
    let mut s = TestServer::spawn();
    let (a, _) = create_with(&s, &[("Upload-Concat", "partial"), ("Upload-Length", "3")]);
    patch_ok(&a, 0, b"abc");
    let r = tus("POST", s.endpoint())
        .header("Upload-Concat", &format!("final;{}", path_of(&a)))
        .send();
    assert_status(&r, &[201], "POST final");
    let fin = path_of(&s.url(r.header("Location").unwrap()));
    s.restart();
    assert_eq!(get_bytes(&s.url(&fin)), b"abc");
}

/// "The Server SHOULD always attempt to store as much of the received data as
/// possible." tusk: a PATCH whose connection drops after N of its Content-Length
/// bytes leaves the upload at exactly offset N, and a PATCH from N finishes it.
#[test]
fn interrupted_patch_keeps_received_bytes() {
    let s = TestServer::spawn();
    let data = pattern(73, 200_000);
    let url = create(&s, data.len() as u64);
    patch_ok(&url, 0, &data[..1000]);
    let sent = 1000 + 77_777;
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "1000")
        .header("Content-Length", &(data.len() - 1000).to_string())
        .open();
    conn.write_all(&data[1000..sent])
        .expect("sending part of the body");
    std::thread::sleep(Duration::from_millis(200));
    conn.abort();
    let mut last = 0;
    wait_until(Duration::from_secs(5), || {
        let r = head(&url);
        last = r
            .header("Upload-Offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        last == sent as u64
    });
    assert_eq!(last, sent as u64, "offset after an interrupted PATCH");
    patch_ok(&url, sent as u64, &data[sent..]);
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}

/// An interrupted chunked PATCH (connection closed mid-chunk) keeps at most what was
/// received, and the upload can be completed from the reported offset.
#[test]
fn interrupted_chunked_patch_can_be_resumed() {
    let s = TestServer::spawn();
    let data = pattern(74, 100_000);
    let url = create(&s, data.len() as u64);
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Transfer-Encoding", "chunked")
        .open();
    conn.write_chunk(&data[..30_000]).expect("chunk");
    // Announce a chunk of 20000 bytes and send only half of it.
    conn.write_all(format!("{:x}\r\n", 20_000).as_bytes())
        .unwrap();
    conn.write_all(&data[30_000..40_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    conn.abort();
    std::thread::sleep(Duration::from_millis(500));
    let mut off = 0;
    wait_until(Duration::from_secs(5), || {
        let r = head(&url);
        off = r.header_u64("Upload-Offset");
        off >= 30_000
    });
    assert!(off <= 40_000, "offset {off} beyond what was sent");
    println!("offset after the interrupted chunked PATCH: {off}");
    patch_ok(&url, off, &data[off as usize..]);
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}

/// Runs one concurrency scenario: a first PATCH is held open after sending
/// `first_sent` of its bytes; a second PATCH of the same bytes is sent meanwhile.
fn concurrent_patch_scenario(first_sent: usize) {
    let s = TestServer::spawn();
    let data = pattern(75, 64 * 1024);
    let len = data.len();
    let url = create(&s, len as u64);
    let mut first = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", &len.to_string())
        .open();
    first
        .write_all(&data[..first_sent])
        .expect("first PATCH, first half");
    std::thread::sleep(Duration::from_millis(300));

    let mut second = patch_req(&url, 0, &data).open();
    let _ = second.write_all(&data);
    second.set_read_timeout(Duration::from_secs(10));
    let started = Instant::now();
    let r2 = second.read_response().unwrap_or_else(|e| {
        panic!(
            "second PATCH got no answer within {:?} while the first was in flight: {e}",
            started.elapsed()
        )
    });
    assert_status(
        &r2,
        &[204, 409, 423],
        "second PATCH while the first is in flight",
    );
    println!("second PATCH answered {}", r2.status);

    // Finish (or try to finish) the first PATCH.
    let _ = first.write_all(&data[first_sent..]);
    let r1 = first.read_response();
    // The first PATCH either kept the upload (204 at `len`) or was cut short when the
    // second took over (then its answer, if any, reports what it committed).
    if let Ok(r1) = &r1 {
        if r1.status == 204 {
            let o1 = r1.header_u64("Upload-Offset");
            assert!(o1 <= len as u64, "first PATCH reports offset {o1} > {len}");
        }
    }
    let off = head_offset(&url);
    assert!(off <= len as u64, "offset {off} beyond Upload-Length {len}");
    if off < len as u64 {
        patch_ok(&url, off, &data[off as usize..]);
    }
    let got = get_bytes(&url);
    assert_eq!(
        got.len(),
        len,
        "stored length differs: bytes committed twice?"
    );
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    if s.is_spawned() && !suite_on_shared_backend() {
        let file = s.upload_file(&upload_id(&url));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size, len as u64, "{} has the wrong size", file.display());
    }
}

/// "If the offsets do not match, the Server MUST respond with the `409 Conflict`
/// status without modifying the upload resource." tusk: while one PATCH is in
/// flight (half its body sent), another PATCH on the same upload gets 409/423 (or
/// takes over), and no byte range is ever committed twice.
#[test]
fn concurrent_patch_is_refused_or_takes_over_without_duplicates() {
    concurrent_patch_scenario(32 * 1024);
}

/// The same while the first PATCH has sent its headers but no body byte yet (a
/// connection held open without sending).
#[test]
fn concurrent_patch_against_idle_holder_never_duplicates() {
    concurrent_patch_scenario(0);
}

fn big_mib() -> u64 {
    std::env::var("TUSK_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

fn verify_download(url: &str, len: u64, expected_sha: &str) {
    let (r, count, sha) = get_sha256(url);
    assert_status(&r, &[200], "GET of the big upload");
    assert_eq!(count, len, "downloaded length");
    assert_eq!(sha, expected_sha, "sha256 of the download");
}

/// "the Client MAY also use multiple small requests successively": a big upload in
/// 8 MiB PATCHes (size from TUSK_BIG_MIB, default 1024 MiB) round-trips exactly.
#[test]
fn big_upload_in_8_mib_patches() {
    let s = TestServer::spawn();
    let len = big_mib() * 1024 * 1024;
    let prng = Prng::new(0xB16);
    let url = create(&s, len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 8 * 1024 * 1024];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        prng.fill_at(off, &mut buf[..n]);
        hasher.update(&buf[..n]);
        patch_ok(&url, off, &buf[..n]);
        off += n as u64;
    }
    let expected = hex(&hasher.finalize());
    assert_eq!(head_offset(&url), len);
    verify_download(&url, len, &expected);
}

/// "The Client SHOULD send all the remaining bytes of an upload in a single `PATCH`
/// request": a big upload in one streamed PATCH round-trips exactly.
#[test]
fn big_upload_in_a_single_patch() {
    let s = TestServer::spawn();
    let len = big_mib() * 1024 * 1024;
    let prng = Prng::new(0x0514_E61E);
    let url = create(&s, len);
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", &len.to_string())
        .open();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        prng.fill_at(off, &mut buf[..n]);
        hasher.update(&buf[..n]);
        conn.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("streaming the body failed at offset {off}: {e}"));
        off += n as u64;
    }
    // Allow the server time to make the last bytes durable.
    conn.set_read_timeout(Duration::from_secs(120));
    let r = conn.read_response().expect("response to the big PATCH");
    assert_status(&r, &[204], "single big PATCH");
    assert_eq!(r.header_u64("Upload-Offset"), len);
    let expected = hex(&hasher.finalize());
    verify_download(&url, len, &expected);
}

/// tusk: `[server] base_path` moves the creation endpoint; uploads live under it.
#[test]
fn custom_base_path_is_served() {
    needs_spawned_server!();
    let s = TestServer::spawn_with_config("[server]\nbase_path = \"/api/uploads/\"\n");
    assert!(
        path_of(s.endpoint()).starts_with("/api/uploads"),
        "endpoint {} ignores base_path",
        s.endpoint()
    );
    let url = create(&s, 2);
    assert!(path_of(&url).starts_with("/api/uploads/"), "{url}");
    patch_ok(&url, 0, b"ok");
    assert_eq!(get_bytes(&url), b"ok");
}

/// §Core: "If the offsets do not match, the Server MUST respond with the 409 Conflict status
/// without modifying the upload resource." A client like Node's `http` reports a broken pipe
/// instead of the status when the server closes while it is still sending; tusk keeps reading
/// (lingers) after refusing early, so the whole body goes out and the status is read.
#[test]
fn early_refusal_of_a_large_body_reaches_the_client() {
    let s = TestServer::spawn();
    let size = 16 << 20;
    let url = create(&s, size as u64);
    patch_ok(&url, 0, &pattern(5, 1024));
    for (offset, len, status) in [(0u64, size, 409u16), (1024, size, 413)] {
        let body = pattern(6, len);
        let mut conn = tus("PATCH", &url)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", &offset.to_string())
            .header("Content-Length", &len.to_string())
            .open();
        let written = conn.write_all(&body);
        assert!(
            written.is_ok(),
            "the server reset the connection while the client was sending: {written:?}"
        );
        let r = conn.read_response().expect("reading the early answer");
        assert_status(
            &r,
            &[status],
            &format!("PATCH at {offset} with {len} bytes"),
        );
    }
    assert_eq!(head_offset(&url), 1024);
}

/// tusk: a single-value header sent twice is refused with 400 naming it, whatever the two
/// copies say (a proxy believing the last copy and a server believing the first would see
/// different requests); nothing is written or created.
#[test]
fn duplicated_single_value_headers_are_refused() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abc");
    // Each case: the header sent twice, and the usual headers of the request without it.
    let patch_headers = [
        ("Tus-Resumable", "1.0.0"),
        ("Content-Type", "application/offset+octet-stream"),
        ("Upload-Offset", "3"),
    ];
    let sha1_def = "sha1 WJwiM1o4HxItEpIl9cC6MFbtWBE=";
    for (name, first, second) in [
        ("Upload-Offset", "3", "0"),
        ("Upload-Length", "10", "20"),
        ("Tus-Resumable", "1.0.0", "1.0.0"),
        ("Upload-Checksum", sha1_def, sha1_def),
    ] {
        let mut request = Request::new("PATCH", &url);
        for (n, v) in patch_headers.iter().filter(|(n, _)| *n != name) {
            request = request.header(n, v);
        }
        let r = request
            .header(name, first)
            .header(name, second)
            .body(b"def".to_vec())
            .send();
        assert_status(&r, &[400], &format!("PATCH with two {name}"));
        assert!(
            r.text().contains(name),
            "the reason names {name}: {}",
            r.describe()
        );
    }
    assert_eq!(head_offset(&url), 3, "a refused PATCH wrote nothing");
    for (name, first, second) in [
        ("Upload-Length", "5", "6"),
        ("Upload-Concat", "partial", "partial"),
    ] {
        let mut request = tus("POST", s.endpoint());
        if name != "Upload-Length" {
            request = request.header("Upload-Length", "5");
        }
        let r = request.header(name, first).header(name, second).send();
        assert_status(&r, &[400], &format!("POST with two {name}"));
        assert!(
            r.text().contains(name),
            "the reason names {name}: {}",
            r.describe()
        );
        assert!(!r.has("Location"), "{}", r.describe());
    }
}

/// RFC 9112 §7.1: a chunked PATCH whose framing breaks (a chunk-size line that is no
/// number, chunk extensions past the server's limit) is the client's error: 400, not a
/// server error; the chunks that arrived whole before the fault are committed.
#[test]
fn malformed_chunked_framing_is_a_400_and_keeps_what_arrived() {
    let s = TestServer::spawn();
    let data = pattern(76, 60_000);
    let url = create(&s, data.len() as u64);
    let long_extension = format!("10;ext={}\r\n", "x".repeat(64 * 1024));
    let faults: [(&str, &[u8]); 2] = [
        ("a chunk size that is no number", b"zz\r\n"),
        ("chunk extensions past the limit", long_extension.as_bytes()),
    ];
    let mut offset = 0;
    for (what, fault) in faults {
        let mut conn = tus("PATCH", &url)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", &offset.to_string())
            .header("Transfer-Encoding", "chunked")
            .open();
        conn.write_chunk(&data[offset..offset + 20_000])
            .expect("a good chunk");
        // The server may answer and close before it has read all of a long fault.
        let _ = conn.write_all(fault);
        let r = conn.read_response().expect("an answer to the broken body");
        assert_status(&r, &[400], what);
        assert!(
            r.text().contains("ERR_MALFORMED_BODY"),
            "{what}: {}",
            r.describe()
        );
        offset += 20_000;
        assert_eq!(
            head_offset(&url),
            offset as u64,
            "{what}: the good chunk is kept"
        );
    }
    patch_ok(&url, offset as u64, &data[offset..]);
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}

/// RFC 9112 §6.1: a transfer coding tusk does not implement (`gzip` before `chunked`) gets
/// 501, and none of the still-coded bytes are stored as the upload's content.
#[test]
fn unknown_transfer_coding_is_not_implemented() {
    let s = TestServer::spawn();
    let url = create(&s, 100);
    let r = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Transfer-Encoding", "gzip, chunked")
        .chunked(vec![b"\x1f\x8b\x08\x00coded".to_vec()], Vec::new())
        .send();
    assert_status(&r, &[501], "PATCH with Transfer-Encoding: gzip, chunked");
    assert_eq!(head_offset(&url), 0, "nothing of the coded body was stored");
    let r = tus("POST", s.endpoint())
        .header("Upload-Length", "5")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Transfer-Encoding", "gzip, chunked")
        .chunked(vec![b"coded".to_vec()], Vec::new())
        .send();
    assert_status(&r, &[501], "creation-with-upload with gzip");
    assert!(!r.has("Location"), "{}", r.describe());
}
