//! `timeouts.body_idle`: a silent PATCH ends on its own and keeps its bytes; a slow but
//! steady one is never cut.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use protocol_tests::proxy::{FaultProxy, Faults};
use protocol_tests::*;

use crate::{assert_complete, assert_prefix, open_patch, resume_to_end, server_addr};

const IDLE_2S: &str = "[timeouts]\nbody_idle = \"2s\"\n";

/// "With body_idle = 2s, a frozen PATCH with nobody taking over ends on its own; after
/// ~2-4 s HEAD shows the bytes received."
#[test]
fn frozen_patch_ends_after_body_idle_and_keeps_its_bytes() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(IDLE_2S);
    let proxy = FaultProxy::start(server_addr(&server));
    const LEN: usize = 1024 * 1024;
    const SENT: usize = 200_003;
    let source = pattern(21, LEN);
    let url = create(&server, LEN as u64);

    let (mut conn, handle, head) = open_patch(&proxy, &url, 0, LEN as u64);
    conn.write_all(&source[..SENT]).unwrap();
    assert!(handle.wait_up_bytes(head + SENT as u64, Duration::from_secs(10)));
    let last_byte = Instant::now();
    // Freeze what the client sends, but let the server's answer through so the test can
    // see when the server gives up on the body (a HEAD would take the PATCH over).
    handle.freeze_upload();
    conn.set_read_timeout(Duration::from_millis(4500));
    let outcome = conn.read_response();
    let took = last_byte.elapsed();
    match &outcome {
        Ok(resp) => println!("idle PATCH answered {} after {took:?}", resp.status),
        Err(e) => println!("idle PATCH connection ended ({e}) after {took:?}"),
    }
    if let Err(e) = &outcome {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the silent PATCH was still open {took:?} after its last byte (body_idle = 2s)"
        );
    }
    assert!(
        took >= Duration::from_millis(1500),
        "the PATCH ended {took:?} after its last byte, before body_idle = 2s"
    );
    if let Ok(resp) = &outcome {
        assert!(
            resp.status == 500 || resp.status == 408 || resp.status == 400,
            "an idle PATCH body should end in an error status, got {}",
            resp.describe()
        );
    }

    let offset = head_offset(&url);
    assert_eq!(
        offset, SENT as u64,
        "HEAD after body_idle must show every byte received"
    );
    assert_eq!(assert_prefix(&url, &source, "after body_idle"), SENT);
    resume_to_end(&url, &source, LEN, Duration::from_secs(20));
    assert_complete(&url, &source, "after body_idle and resume");
}

/// "A 2 MiB upload throttled to 256 KiB/s completes byte-exact (slow but alive is never
/// cut by body_idle = 2s)."
#[test]
fn throttled_upload_completes_without_idle_cut() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(IDLE_2S);
    let proxy = FaultProxy::start(server_addr(&server));
    const LEN: usize = 2 * 1024 * 1024;
    const RATE: u64 = 256 * 1024;
    let source = pattern(22, LEN);
    let url = create(&server, LEN as u64);

    proxy.set_new_faults(Faults {
        throttle: Some(RATE),
        ..Faults::default()
    });
    let started = Instant::now();
    let resp = patch(&proxy.url(&url), 0, &source);
    let took = started.elapsed();
    println!(
        "2 MiB at {} KiB/s: {} after {took:?}",
        RATE / 1024,
        resp.status
    );
    assert_status(&resp, &[204], "throttled PATCH");
    assert_eq!(resp.header_u64("Upload-Offset"), LEN as u64);
    // The throttle really was in effect (8 s at the nominal rate).
    assert!(
        took >= Duration::from_secs(6),
        "2 MiB at 256 KiB/s took only {took:?}: the throttle did not work"
    );
    assert_complete(&url, &source, "throttled upload");
}
