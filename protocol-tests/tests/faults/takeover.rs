//! Lock takeover: a PATCH stuck on a half-open (frozen) connection must not keep the
//! upload from the client's next request on its new connection.

use std::time::{Duration, Instant};

use protocol_tests::proxy::FaultProxy;
use protocol_tests::*;

use crate::{assert_complete, assert_prefix, deliver_then_freeze, open_patch, server_addr};

const LEN: usize = 1024 * 1024;
/// Deliberately not a multiple of the server's 256 KiB write buffer.
const DELIVERED: usize = 300_007;

/// "A HEAD for that upload over a NEW connection asks the old PATCH to stop; the old PATCH
/// commits every byte the server received; the HEAD answers within ~2 s with that offset."
#[test]
fn head_takes_over_a_frozen_patch_and_sees_every_received_byte() {
    needs_spawned_server!();
    let server = TestServer::spawn();
    let proxy = FaultProxy::start(server_addr(&server));
    let source = pattern(11, LEN);
    let url = create(&server, LEN as u64);

    let (mut conn, old, head_len) = open_patch(&proxy, &url, 0, LEN as u64);
    deliver_then_freeze(&mut conn, &old, head_len, &source[..DELIVERED]);
    let frozen_at = Instant::now();

    // The client's new network: a fresh connection through the proxy.
    proxy.next_epoch();
    let resp = head(&proxy.url(&url));
    let took = frozen_at.elapsed();
    assert_status(&resp, &[200], "HEAD while the old PATCH is frozen");
    let offset = resp.header_u64("Upload-Offset");
    println!("HEAD answered in {took:?} with Upload-Offset {offset}");
    assert_eq!(
        offset, DELIVERED as u64,
        "HEAD must show every byte the frozen PATCH delivered"
    );
    assert!(
        took < Duration::from_millis(2500),
        "HEAD took {took:?} (want ~2 s at most)"
    );
    assert_eq!(assert_prefix(&url, &source, "after takeover"), DELIVERED);

    // Finish from there on a new connection.
    let resp = patch(&proxy.url(&url), offset, &source[DELIVERED..]);
    assert_status(&resp, &[204], "PATCH after the takeover");
    assert_eq!(resp.header_u64("Upload-Offset"), LEN as u64);
    assert_complete(&url, &source, "after takeover");
    assert_eq!(old.epoch(), 0);
    drop(conn);
}

/// "A new PATCH arriving while the old one is frozen also takes over: it either proceeds
/// or gets 409 (then HEAD + PATCH succeeds); its first response arrives within ~3 s."
#[test]
fn new_patch_takes_over_a_frozen_patch() {
    needs_spawned_server!();
    let server = TestServer::spawn();
    let proxy = FaultProxy::start(server_addr(&server));
    let source = pattern(12, LEN);
    let url = create(&server, LEN as u64);

    let (mut conn, old, head_len) = open_patch(&proxy, &url, 0, LEN as u64);
    deliver_then_freeze(&mut conn, &old, head_len, &source[..DELIVERED]);
    let frozen_at = Instant::now();
    proxy.next_epoch();

    // The client believes what it sent got through and continues from there.
    let resp = patch(&proxy.url(&url), DELIVERED as u64, &source[DELIVERED..]);
    let took = frozen_at.elapsed();
    println!("new PATCH answered {} in {took:?}", resp.status);
    assert!(
        took < Duration::from_secs(3),
        "the new PATCH's first response took {took:?} (want < 3 s): {}",
        resp.describe()
    );
    match resp.status {
        204 => assert_eq!(resp.header_u64("Upload-Offset"), LEN as u64),
        409 => {
            let offset = head_offset(&proxy.url(&url));
            assert_eq!(
                offset, DELIVERED as u64,
                "after the takeover HEAD must show every byte the frozen PATCH delivered"
            );
            patch_ok(&proxy.url(&url), offset, &source[offset as usize..]);
        }
        _ => panic!(
            "new PATCH during a frozen one: want 204 or 409, got {}",
            resp.describe()
        ),
    }
    assert_complete(&url, &source, "after PATCH takeover");
    drop(conn);
}
