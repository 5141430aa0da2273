//! Memory pressure: `limits.max_buffer_memory` turns extra PATCHes away with 503; one
//! address's slow bodies cannot take it all; `server.max_connections` closes the excess.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    // Every client here is 127.0.0.1: its share is the whole budget, to test the budget.
    let server = TestServer::spawn_with_config(
        "[limits]\nmax_buffer_memory = \"512KiB\"\nmax_buffer_share_percent = 100\n\
         [transfer]\nbuffer = \"256KiB\"\n",
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

/// Issue 23, item 9: connections from one address trickling a byte every 0.3 s, after a fast
/// upload from that address sized its buffers up, must not pin the whole (small) buffer
/// budget: a PATCH from another address still gets through while they stay open.
#[test]
fn trickling_connections_from_one_address_leave_room_for_others() {
    needs_spawned_server!();
    // Clients are told apart by X-Forwarded-For from the trusted loopback "proxy".
    let server = TestServer::spawn_with_config(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[limits]\nmax_buffer_memory = \"1MiB\"\n",
    );
    const ATTACKER: &str = "203.0.113.7";
    const LEN: usize = 1 << 20;
    let fast = pattern(90, 16 << 20);
    let url = create(&server, fast.len() as u64);
    let r = patch_req(&url, 0, &fast)
        .header("X-Forwarded-For", ATTACKER)
        .send();
    assert_status(&r, &[204], "the attacker's fast upload");

    let urls: Vec<String> = (0..20).map(|_| create(&server, LEN as u64)).collect();
    let mut conns: Vec<RawConn> = urls
        .iter()
        .map(|url| {
            let mut conn = tus("PATCH", url)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", "0")
                .header("Content-Length", &LEN.to_string())
                .header("X-Forwarded-For", ATTACKER)
                .open();
            let _ = conn.write_all(b"t");
            conn
        })
        .collect();
    let trickling = Arc::new(AtomicBool::new(true));
    let trickler = {
        let trickling = Arc::clone(&trickling);
        std::thread::spawn(move || {
            while trickling.load(Ordering::Relaxed) {
                for conn in &mut conns {
                    // Those refused (503) are closed by now; the rest keep trickling.
                    let _ = conn.write_all(b"t");
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            conns
        })
    };
    // Let the server take all twenty bodies in (and hand out what buffers it will).
    std::thread::sleep(Duration::from_millis(1500));

    let legit = pattern(91, 256 << 10);
    let url = create(&server, legit.len() as u64);
    let r = patch_req(&url, 0, &legit)
        .header("X-Forwarded-For", "198.51.100.9")
        .send();
    trickling.store(false, Ordering::Relaxed);
    for conn in trickler.join().unwrap() {
        conn.abort();
    }
    assert_status(
        &r,
        &[204],
        "a PATCH from another address while the trickles are open",
    );
    assert_complete(&url, &legit, "the other address's upload");
}

/// Issue 23, item 9: a body slower than `limits.min_body_rate` over its window is ended; the
/// client hears why (a 5xx it retries on) and its bytes are kept to resume from.
#[test]
fn a_body_below_the_minimum_rate_is_ended_with_its_bytes_kept() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config(
        "[limits]\nmin_body_rate = \"1KiB\"\nmin_body_rate_window = \"2s\"\n",
    );
    const LEN: usize = 64 << 10;
    let source = pattern(92, LEN);
    let url = create(&server, LEN as u64);
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Content-Length", &LEN.to_string())
        .open();
    let started = Instant::now();
    let mut sent = 0;
    // A byte every 0.3 s until the server answers (it reads nothing more after that).
    conn.set_read_timeout(Duration::from_millis(300));
    let response = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a 3 B/s body still open after 10 s with a 1 KiB/s minimum over 2 s"
        );
        if conn.write_all(&source[sent..sent + 1]).is_ok() {
            sent += 1;
        }
        match conn.read_response() {
            Ok(response) => break response,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the connection ended without an answer: {e}"),
        }
    };
    assert_status(&response, &[500], "a body below the minimum rate");
    assert!(
        response.text().contains("ERR_BODY_TOO_SLOW"),
        "{}",
        response.describe()
    );
    assert!(response.has("Retry-After"), "{}", response.describe());
    let kept = assert_prefix(&url, &source, "after the slow body");
    assert!(kept > 0 && kept <= sent, "kept {kept} of {sent}");
    resume_to_end(&url, &source, LEN, Duration::from_secs(10));
    assert_complete(&url, &source, "resumed after the slow body");
}

/// Issue 23, item 10: beyond `server.max_connections` open connections, new ones are closed
/// at once (and that is logged); once one closes, a new one is served again.
#[test]
fn connections_beyond_max_connections_are_closed() {
    needs_spawned_server!();
    let server = TestServer::spawn_with_config("[server]\nmax_connections = 3\n");
    let addr = crate::server_addr(&server);
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let served = |what: &str| -> bool {
        let mut extra = TcpStream::connect(addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!(
            "OPTIONS {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            path_of(server.endpoint()),
            server.authority()
        );
        let _ = extra.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = extra.read_to_end(&mut answer);
        println!(
            "{what}: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
        answer.starts_with(b"HTTP/1.1 204")
    };
    assert!(
        !served("a fourth connection"),
        "served beyond max_connections = 3"
    );
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stderr()
            .contains("server.max_connections")),
        "the refusal was not logged:\n{}",
        server.stderr()
    );
    drop(idle);
    assert!(
        wait_until(Duration::from_secs(5), || served(
            "after the idle ones closed"
        )),
        "no connection served after the idle ones closed"
    );
}

/// The soft and hard `RLIMIT_NOFILE` of process `pid`, through util-linux's `prlimit`.
fn nofile_limits(pid: u32) -> (String, String) {
    let out = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--raw",
            "--noheadings",
        ])
        .args(["--output", "SOFT,HARD"])
        .output()
        .expect("running prlimit");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fields = text.split_whitespace().map(str::to_owned);
    match (fields.next(), fields.next()) {
        (Some(soft), Some(hard)) => (soft, hard),
        _ => panic!("prlimit said {text:?}"),
    }
}

fn set_nofile(pid: u32, soft: &str, hard: &str) {
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .expect("running prlimit");
    assert!(status.success(), "prlimit --nofile={soft}:{hard} failed");
}

/// The lowest descriptor number `pid` does not use: a soft limit there lets it open nothing.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("listing the server's descriptors")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or_default()
}

/// "Out of file descriptors when a PATCH opens its upload's file (EMFILE): 503 with
/// Retry-After, not 500; with descriptors back, the upload goes on."
#[test]
fn patch_gets_503_when_out_of_file_descriptors() {
    needs_spawned_server!();
    local_backend_only!("the local backend opens a file per PATCH");
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        skip_unless_ci("prlimit (util-linux) is not installed");
        return;
    }
    let server = TestServer::spawn();
    let pid = server.pid().expect("a spawned server");
    let source = pattern(64, 100);
    let url = create(&server, source.len() as u64);
    let path = path_of(&url);
    let (soft, hard) = nofile_limits(pid);
    let mut offset = 0;
    let mut refused = None;
    // A descriptor the server closes between our look and the limit (a connection ending)
    // lets one open through; then try again from the new offset.
    for _ in 0..5 {
        // The connection is accepted (a HEAD answered on it) before descriptors run out.
        let mut conn = tus("HEAD", &url).header("Connection", "keep-alive").open();
        let r = conn.read_response().expect("HEAD");
        assert_status(&r, &[200], "HEAD before the limit");
        set_nofile(pid, &lowest_free_fd(pid).to_string(), &hard);
        let head = format!(
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n\
             Content-Length: 10\r\nConnection: close\r\n\r\n",
            server.authority()
        );
        conn.write_all(head.as_bytes()).expect("PATCH head");
        conn.write_all(&source[offset..offset + 10])
            .expect("PATCH body");
        let r = conn.read_response().expect("an answer to the PATCH");
        set_nofile(pid, &soft, &hard);
        match r.status {
            204 => offset += 10,
            _ => {
                refused = Some(r);
                break;
            }
        }
    }
    let r = refused.expect("no PATCH met the descriptor limit in 5 tries");
    assert_status(&r, &[503], "PATCH when out of file descriptors");
    assert!(r.has("Retry-After"), "{}", r.describe());
    // (The connection was opened for a HEAD, so the harness reads no body: the log says why.)
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stderr()
            .contains("out of file descriptors")),
        "the 503 is the descriptor shortage:\n{}",
        server.stderr()
    );
    assert_eq!(
        head_offset(&url),
        offset as u64,
        "the refused PATCH wrote nothing"
    );
    patch_ok(&url, offset as u64, &source[offset..]);
    assert_complete(&url, &source, "after descriptors came back");
}
