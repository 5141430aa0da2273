//! Graceful shutdown with a PATCH in flight: stuck on a half-open connection, or still sending.

use std::time::{Duration, Instant};

use protocol_tests::proxy::FaultProxy;
use protocol_tests::*;

use crate::{
    assert_complete, assert_prefix, deliver_then_freeze, open_patch, resume_to_end, server_addr,
};

/// "SIGTERM while a PATCH is in flight on a frozen connection: the server exits within
/// timeouts.shutdown_grace (3s) plus a margin, and after restart HEAD shows the bytes
/// that PATCH had delivered."
#[test]
fn sigterm_with_a_frozen_patch_exits_in_grace_and_keeps_its_bytes() {
    needs_spawned_server!();
    let mut server = TestServer::spawn_with_config("[timeouts]\nshutdown_grace = \"3s\"\n");
    let proxy = FaultProxy::start(server_addr(&server));
    const LEN: usize = 1024 * 1024;
    const SENT: usize = 400_009;
    let source = pattern(41, LEN);
    let url = create(&server, LEN as u64);

    let (mut conn, handle, head) = open_patch(&proxy, &url, 0, LEN as u64);
    deliver_then_freeze(&mut conn, &handle, head, &source[..SENT]);

    let term = Instant::now();
    server.terminate();
    let took = term.elapsed();
    println!("tusk exited {took:?} after SIGTERM with a frozen PATCH");
    assert!(
        took <= Duration::from_secs(3) + Duration::from_millis(1500),
        "exit took {took:?}, shutdown_grace is 3s"
    );

    server.start();
    let url = server.url(&url);
    let offset = head_offset(&url);
    assert_eq!(
        offset, SENT as u64,
        "after restart HEAD must show the bytes the frozen PATCH delivered"
    );
    assert_eq!(assert_prefix(&url, &source, "after SIGTERM"), SENT);
    resume_to_end(&url, &source, LEN, Duration::from_secs(20));
    assert_complete(&url, &source, "after SIGTERM and resume");
    drop(conn);
}

/// "SIGTERM while a PATCH is still sending: that PATCH is answered 503 with Retry-After
/// (ERR_SERVER_SHUTDOWN), not 423 'locked', and the bytes it had delivered are committed."
#[test]
fn sigterm_answers_the_inflight_patch_503_and_keeps_its_bytes() {
    needs_spawned_server!();
    local_backend_only!("watches the upload's file to know the body is being written");
    let mut server = TestServer::spawn_with_config("[timeouts]\nshutdown_grace = \"5s\"\n");
    const LEN: usize = 4 << 20;
    const SENT: usize = 3 << 20;
    let source = pattern(43, LEN);
    let url = create(&server, LEN as u64);
    let file = server.upload_file(&upload_id(&url));
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", &LEN.to_string())
        .open();
    conn.write_all(&source[..SENT])
        .expect("sending part of the body");
    let writing = wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 0)
    });
    assert!(writing, "the PATCH body never reached the upload's file");

    let reader = std::thread::spawn(move || conn.read_response());
    server.terminate();
    let answer = reader
        .join()
        .expect("the reader thread")
        .expect("an answer to the in-flight PATCH");
    assert_status(&answer, &[503], "PATCH in flight at SIGTERM");
    assert!(answer.has("Retry-After"), "{}", answer.describe());
    assert!(
        answer.text().contains("ERR_SERVER_SHUTDOWN"),
        "{}",
        answer.describe()
    );

    server.start();
    let url = server.url(&url);
    let offset = head_offset(&url) as usize;
    assert!(
        offset > 0 && offset <= SENT,
        "after restart the offset {offset} must cover what the PATCH delivered (at most {SENT})"
    );
    assert_eq!(assert_prefix(&url, &source, "after SIGTERM"), offset);
    resume_to_end(&url, &source, LEN, Duration::from_secs(20));
    assert_complete(&url, &source, "after SIGTERM and resume");
}
