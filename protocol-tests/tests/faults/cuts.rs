//! Connections cut mid-body, again and again: the client resumes with HEAD + PATCH.

use std::thread;
use std::time::{Duration, Instant};

use protocol_tests::proxy::{FaultProxy, Faults};
use protocol_tests::*;

use crate::{assert_complete, assert_prefix, server_addr, Rng};

/// "Upload a 4-8 MiB file through the proxy with cuts after random byte counts on several
/// successive connections, the client resuming each time with HEAD + PATCH."
#[test]
fn upload_survives_repeated_connection_cuts() {
    needs_spawned_server!();
    let mut rng = Rng::from_env("cuts");
    let server = TestServer::spawn();
    let proxy = FaultProxy::start(server_addr(&server));
    let len = rng.range(4 << 20, (8 << 20) + 1) as usize;
    let source = pattern(rng.next_u64(), len);
    let url = create(&server, len as u64);
    let planned_cuts = rng.range(4, 7);

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cuts = 0u64;
    let mut attempts = 0u64;
    let mut offsets = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "upload not finished after {attempts} attempts and {cuts} cuts"
        );
        attempts += 1;
        let offset = head_offset(&url) as usize;
        offsets.push(offset);
        if offset == len {
            break;
        }
        let cut_after = (cuts < planned_cuts).then(|| rng.range(64 << 10, 1 << 20));
        proxy.set_new_faults(Faults {
            cut_after,
            ..Faults::default()
        });
        let index = proxy.connection_count();
        let result = patch_req(&proxy.url(&url), offset as u64, &source[offset..]).try_send();
        let conn = proxy
            .wait_connection(index, Duration::from_secs(5))
            .expect("the PATCH went through the proxy");
        match result {
            Ok(r) if r.status == 204 => {
                assert_eq!(r.header_u64("Upload-Offset"), len as u64);
            }
            // The previous PATCH may still be committing: try again.
            Ok(r) if (r.status == 409 || r.status == 423) && !conn.was_cut() => {
                thread::sleep(Duration::from_millis(20));
            }
            other => {
                assert!(
                    conn.was_cut(),
                    "PATCH failed without a cut ({} bytes through): {:?}",
                    conn.up_bytes(),
                    other.map(|r| r.describe())
                );
                cuts += 1;
                // Whatever the server kept is a prefix and no more than went through.
                let now = head_offset(&url) as usize;
                assert!(
                    now <= offset + conn.up_bytes() as usize,
                    "offset {now} after a cut at {} bytes from {offset}",
                    conn.up_bytes()
                );
                let kept = assert_prefix(&url, &source, "after a cut");
                assert!(
                    kept >= now && kept <= offset + conn.up_bytes() as usize,
                    "GET returned {kept} bytes, HEAD said {now}"
                );
                thread::sleep(Duration::from_millis(rng.range(10, 80)));
            }
        }
    }
    println!(
        "{} bytes in {attempts} attempts with {cuts} cuts; offsets seen: {offsets:?}",
        len
    );
    assert!(
        cuts >= 3,
        "only {cuts} cuts happened (planned {planned_cuts})"
    );
    assert_complete(&url, &source, "after repeated cuts");
}
