//! A damaged session database, a vanished data file: tusk never turns either into deleted or
//! silently restarted uploads. It refuses to start when records were lost, `tusk check` says
//! so, and `tusk recover` rebuilds the records from the copies kept beside the bytes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use protocol_tests::*;

/// An upload made before the damage: what its client was told.
struct Acknowledged {
    id: String,
    source: Vec<u8>,
    offset: u64,
}

/// Twelve uploads, every other one finished, the rest half way.
fn make_uploads(server: &TestServer) -> Vec<Acknowledged> {
    (0..12u64)
        .map(|i| {
            let len = 20_000 + i as usize * 3_001;
            let source = pattern(700 + i, len);
            let url = create(server, len as u64);
            let offset = if i % 2 == 0 { len } else { len / 2 };
            patch_ok(&url, 0, &source[..offset]);
            Acknowledged {
                id: upload_id(&url),
                source,
                offset: offset as u64,
            }
        })
        .collect()
}

/// `tusk ARGS --data-dir DIR`, bounded in time.
fn tusk_command(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(tusk_bin())
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning tusk");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("waiting for tusk").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tusk {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("collecting tusk's output")
}

/// Starting the server on `dir` must fail (before it listens) with a message naming `hint`.
fn assert_start_refused(dir: &Path, hint: &str) {
    let out = tusk_command(dir, &["--host", "127.0.0.1", "--port", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && !stdout.contains("listening on"),
        "tusk started on a database that lost records:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(hint),
        "the refusal must say `{hint}`:\n{stderr}"
    );
}

/// Every upload answers its acknowledged offset, serves exactly those bytes, and the
/// unfinished ones complete.
fn assert_all_intact(server: &TestServer, uploads: &[Acknowledged]) {
    for upload in uploads {
        let url = server.url(&format!("/files/{}", upload.id));
        let offset = head_offset(&url);
        assert_eq!(
            offset, upload.offset,
            "upload {} lost acknowledged bytes",
            upload.id
        );
        if offset < upload.source.len() as u64 {
            patch_ok(&url, offset, &upload.source[offset as usize..]);
        }
        assert_eq!(
            sha256_hex(&get_bytes(&url)),
            sha256_hex(&upload.source),
            "upload {} came back different",
            upload.id
        );
    }
}

fn upload_files_present(server: &TestServer, uploads: &[Acknowledged]) -> usize {
    uploads
        .iter()
        .filter(|u| server.upload_file(&u.id).exists())
        .count()
}

/// Issue 23 item 1: with `db/db` truncated to zero sled opens an empty database. tusk used to
/// delete every upload file as "data without a record"; now it refuses to start, changes
/// nothing, `tusk check` fails, and `tusk recover` brings every upload back.
#[test]
fn a_truncated_session_database_stops_start_up_and_recover_rebuilds_every_upload() {
    needs_spawned_server!();
    local_backend_only!("reads and damages the sled database");
    let mut server = TestServer::spawn();
    let uploads = make_uploads(&server);
    server.terminate();

    std::fs::File::create(server.data_dir().join("db").join("db")).expect("truncating db/db");
    assert_start_refused(server.data_dir(), "tusk recover");
    assert_eq!(
        upload_files_present(&server, &uploads),
        uploads.len(),
        "a refused start must not touch the upload files"
    );
    let check = tusk_command(server.data_dir(), &["check"]);
    assert!(
        !check.status.success(),
        "tusk check must fail on a database that lost records: {}",
        String::from_utf8_lossy(&check.stdout)
    );

    let recover = tusk_command(server.data_dir(), &["recover"]);
    let report = String::from_utf8_lossy(&recover.stdout);
    assert!(
        recover.status.success(),
        "tusk recover failed: {report}{}",
        String::from_utf8_lossy(&recover.stderr)
    );
    assert!(
        report.contains(&format!("rebuilt {} record(s)", uploads.len())),
        "{report}"
    );
    server.start();
    assert_all_intact(&server, &uploads);
}

/// Issue 23 item 1: bytes flipped in the middle of sled's file. Whatever sled makes of it
/// (an error, or an older or partial database), no upload is lost: tusk refuses or starts,
/// and after `tusk recover` where it refused every acknowledged byte is served.
#[test]
fn flipped_bytes_in_the_session_database_never_cost_an_upload() {
    needs_spawned_server!();
    local_backend_only!("reads and damages the sled database");
    let mut server = TestServer::spawn();
    let uploads = make_uploads(&server);
    server.terminate();

    let log = server.data_dir().join("db").join("db");
    let mut bytes = std::fs::read(&log).expect("reading db/db");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    std::fs::write(&log, &bytes).expect("writing db/db");

    let first = tusk_command(server.data_dir(), &["check"]);
    println!(
        "tusk check on the damaged database: {}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr)
    );
    if !first.status.success() {
        let recover = tusk_command(server.data_dir(), &["recover"]);
        println!(
            "tusk recover: {}{}",
            String::from_utf8_lossy(&recover.stdout),
            String::from_utf8_lossy(&recover.stderr)
        );
    }
    assert_eq!(upload_files_present(&server, &uploads), uploads.len());
    server.start();
    for upload in &uploads {
        let url = server.url(&format!("/files/{}", upload.id));
        let resp = head(&url);
        assert_status(&resp, &[200], "HEAD after a damaged database");
        let offset = resp.header_u64("Upload-Offset");
        let finished = upload.offset == upload.source.len() as u64;
        if finished {
            assert_eq!(offset, upload.offset, "a finished upload lost bytes");
        } else {
            assert!(offset <= upload.offset);
        }
        if offset < upload.source.len() as u64 {
            patch_ok(&url, offset, &upload.source[offset as usize..]);
        }
        assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&upload.source));
    }
}

/// Issue 23 item 1: a file without a record is not deleted at start-up but set aside in
/// `uploads/.quarantine/`.
#[test]
fn data_without_a_record_goes_to_quarantine_not_away() {
    needs_spawned_server!();
    local_backend_only!("reads the data directory");
    let mut server = TestServer::spawn();
    server.terminate();
    let stray = "0123456789abcdef0123456789abcdef";
    let path = server.upload_file(stray);
    std::fs::write(&path, b"never acknowledged").unwrap();
    server.start();
    assert!(
        !path.exists(),
        "the stray file must leave the upload directory"
    );
    let kept = server
        .data_dir()
        .join("uploads")
        .join(".quarantine")
        .join(stray);
    assert_eq!(std::fs::read(&kept).unwrap(), b"never acknowledged");
    let resp = head(&server.url(&format!("/files/{stray}")));
    assert_status(&resp, &[404], "HEAD of a quarantined file");
}

/// Issue 23 item 4: a finished upload whose data file vanished used to come back as a new,
/// empty upload (HEAD 200 at offset 0). It is reported lost: 410 for HEAD, PATCH and GET.
#[test]
fn an_upload_whose_data_vanished_is_reported_lost_not_restarted() {
    needs_spawned_server!();
    local_backend_only!("removes a file from the data directory");
    let mut server = TestServer::spawn();
    let source = pattern(91, 50_000);
    let url = create(&server, source.len() as u64);
    patch_ok(&url, 0, &source);
    let id = upload_id(&url);
    server.terminate();
    std::fs::remove_file(server.upload_file(&id)).unwrap();
    server.start();
    let url = server.url(&format!("/files/{id}"));
    for (what, resp) in [
        ("HEAD", head(&url)),
        ("GET", get(&url)),
        ("PATCH", patch(&url, 0, b"x")),
    ] {
        assert_status(&resp, &[410], &format!("{what} of a lost upload"));
        if what != "HEAD" {
            assert!(
                resp.text().contains("ERR_UPLOAD_LOST"),
                "{}",
                resp.describe()
            );
        }
    }
    assert!(
        server.stderr().contains("marked lost"),
        "the loss must be logged"
    );
    let resp = tus("DELETE", &url).send();
    assert_status(&resp, &[204], "DELETE of a lost upload");
}

/// Issue 23 item 14: `tusk check` on a data directory a running server holds must fail
/// (sled allows one process), not say "data directory opens".
#[test]
fn tusk_check_fails_while_a_server_holds_the_data_directory() {
    needs_spawned_server!();
    local_backend_only!("opens the sled database");
    let server = TestServer::spawn();
    let check = tusk_command(server.data_dir(), &["check"]);
    assert!(
        !check.status.success(),
        "tusk check passed on a database held by a running server: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("server running"), "{stderr}");
}
