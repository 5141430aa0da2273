//! Memory pressure: `limits.max_buffer_memory` turns extra PATCHes away with 503.

use std::time::{Duration, Instant};

use protocol_tests::*;

use crate::{assert_complete, assert_prefix, resume_to_end};

/// "With max_buffer_memory = 512KiB and buffers fixed at 256 KiB (so two PATCHes take it
/// all, whatever the adaptive policy would pick), hold two PATCHes open
/// on two uploads; a third PATCH on a third upload gets 503 with Retry-After within ~3 s;
/// after the first two are aborted, a PATCH works again."
#[test]
fn third_patch_gets_503_when_buffer_memory_is_used_up() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(
        "[limits]\nmax_buffer_memory = \"512KiB\"\n[transfer]\nbuffer = \"256KiB\"\n",
    );
    const LEN: usize = 1024 * 1024;
    const SENT: usize = 300 * 1024;
    let sources: Vec<Vec<u8>> = (0..3).map(|i| pattern(60 + i, LEN)).collect();
    let urls: Vec<String> = (0..3).map(|_| create(&server, LEN as u64)).collect();

    // Two slow clients: a PATCH head and 300 KiB of a 1 MiB body, then silence.
    let mut held: Vec<RawConn> = (0..2)
        .map(|i| {
            let mut conn = tus("PATCH", &urls[i])
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "0")
                .header("Content-Length", &LEN.to_string())
                .open();
            conn.write_all(&sources[i][..SENT]).unwrap();
            conn
        })
        .collect();
    // Let the server take both bodies in (and their buffers).
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let resp = patch(&urls[2], 0, &sources[2][..64 * 1024]);
    let took = started.elapsed();
    println!("third PATCH: {} after {took:?}", resp.status);
    assert_status(&resp, &[503], "PATCH beyond max_buffer_memory");
    assert!(
        resp.has("Retry-After"),
        "503 without Retry-After: {}",
        resp.describe()
    );
    assert!(
        took < Duration::from_secs(3),
        "the 503 took {took:?} (want < 3 s)"
    );

    // The two slow clients give up.
    for conn in held.drain(..) {
        conn.abort();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = patch(&urls[2], 0, &sources[2][..64 * 1024]);
        if resp.status == 204 {
            break;
        }
        assert!(
            Instant::now() < deadline && matches!(resp.status, 503 | 423),
            "PATCH after the slow clients left: {}",
            resp.describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (url, src) in urls.iter().zip(&sources) {
        let kept = assert_prefix(url, src, "after overload");
        assert!(kept <= SENT.max(64 * 1024));
        resume_to_end(url, src, LEN, Duration::from_secs(20));
        assert_complete(url, src, "after overload");
    }
}
