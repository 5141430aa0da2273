//! A full data volume: the PATCH that hits it fails cleanly, everything else stands.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use protocol_tests::*;

use crate::{assert_complete, assert_prefix, resume_to_end};

/// Size of the tmpfs the data dir lives on.
const VOLUME: &str = "4m";

/// Unmounts the tmpfs when dropped, even when the test panics.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let plain = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
        if !matches!(plain, Ok(s) if s.success()) {
            // Still busy (the server may still be running during a panic): detach lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// "The PATCH that hits the limit gets 507 (or 500) with a text/plain reason; HEAD still
/// works, its offset is <= the bytes sent and GET returns exactly that prefix; a finished
/// upload on the same disk is untouched; the server keeps serving; after DELETE of the
/// finished upload frees space, the first upload resumes and completes byte-exact."
#[test]
fn full_disk_fails_one_patch_and_nothing_else() {
    needs_spawned_server!();
    let mut server = TestServer::spawn();
    // Put the data dir on a small tmpfs: stop the server, mount over its (temporary)
    // data dir, start it again on the empty volume.
    server.kill9();
    let Some(mount) = Mount::tmpfs(server.data_dir(), VOLUME) else {
        skip_unless_ci("the disk-full test needs root to mount a tmpfs");
        return;
    };
    server.start();

    // A finished upload that fills about half of the volume.
    const DONE_LEN: usize = 1536 * 1024;
    let done_src = pattern(51, DONE_LEN);
    let done = create(&server, DONE_LEN as u64);
    patch_ok(&done, 0, &done_src);

    // An upload that does not fit next to it (but fits alone).
    const BIG_LEN: usize = 3 * 1024 * 1024;
    let big_src = pattern(52, BIG_LEN);
    let big = create(&server, BIG_LEN as u64);
    let resp = patch(&big, 0, &big_src);
    println!("PATCH on a full disk: {}", resp.describe());
    assert_status(&resp, &[507, 500], "PATCH that fills the disk");
    let ctype = resp.header("Content-Type").unwrap_or("");
    assert!(
        ctype.starts_with("text/plain") && !resp.body.is_empty(),
        "the failure needs a text/plain reason: {}",
        resp.describe()
    );

    let offset = head_offset(&big);
    assert!(offset <= BIG_LEN as u64);
    assert!(offset < BIG_LEN as u64, "the big upload cannot have fit");
    assert_eq!(
        assert_prefix(&big, &big_src, "upload that hit the full disk") as u64,
        offset,
        "GET must return exactly the HEAD offset's prefix"
    );
    assert_complete(&done, &done_src, "finished upload on the full disk");
    let opts = Request::new("OPTIONS", server.endpoint()).send();
    assert_status(&opts, &[204], "OPTIONS on a full disk");

    // Free the space and finish.
    let del = tus("DELETE", &done).send();
    assert_status(&del, &[204], "DELETE of the finished upload");
    resume_to_end(&big, &big_src, BIG_LEN, Duration::from_secs(20));
    assert_complete(&big, &big_src, "big upload after space was freed");

    server.kill9();
    drop(mount);
}

/// Fill the volume mounted at `dir` with a file, leaving (about) nothing free.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).expect("creating the filler");
    let block = vec![0x42u8; 64 * 1024];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    let mut small = vec![0x42u8; 4096];
    while !small.is_empty() {
        if std::io::Write::write_all(&mut file, &small).is_err() {
            small.truncate(small.len() / 2);
        }
    }
    filler
}

/// Issue 23 items 2 and 3: the session database's volume fills up. The PATCH whose record
/// cannot be stored fails (507: the disk is full) and HEAD never shows the offset that was
/// not stored (it used to, and a restart then took it back); new uploads get 507 while the
/// disk is full; once space is freed everything works again without a restart (it used to
/// answer 500 to every write, and /readyz 503, until restarted).
#[test]
fn a_full_database_volume_shows_only_stored_offsets_and_recovers_without_restart() {
    needs_spawned_server!();
    local_backend_only!("mounts a small volume under the sled database");
    // The journal would take small commits without touching sled at once: large PATCHes
    // take the ordinary path, file fdatasync then record flush.
    let mut server = TestServer::spawn_with_config("[storage]\njournal_max_write = 0\n");
    server.terminate();
    let db = server.data_dir().join("db");
    let saved = server.data_dir().join("db-saved");
    std::fs::rename(&db, &saved).unwrap();
    std::fs::create_dir(&db).unwrap();
    let Some(mount) = Mount::tmpfs(&db, "8m") else {
        skip_unless_ci("the database-volume test needs root to mount a tmpfs");
        return;
    };
    for entry in std::fs::read_dir(&saved).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), db.join(entry.file_name())).unwrap();
        }
    }
    server.start();

    const LEN: usize = 3 * 1024 * 1024;
    let source = pattern(61, LEN);
    let url = create(&server, LEN as u64);
    patch_ok(&url, 0, &source[..256 * 1024]);
    let filler = fill(&db);

    let mut refused = None;
    let mut offset = 256 * 1024;
    // sled still has room in its current segment for some records: small PATCHes, each
    // one record, until one finds none.
    for _ in 0..20_000 {
        let end = offset + 1;
        let resp = patch(&url, offset as u64, &source[offset..end]);
        if resp.status == 204 {
            offset = end;
            continue;
        }
        refused = Some(resp);
        break;
    }
    let refused = refused.expect("some PATCH must fail once the database's disk is full");
    println!("PATCH with a full database volume: {}", refused.describe());
    assert_status(&refused, &[507], "PATCH whose record cannot be stored");
    let head = head(&url);
    if head.status == 200 {
        assert_eq!(
            head.header_u64("Upload-Offset"),
            offset as u64,
            "HEAD must show the last stored offset, not the refused one"
        );
    } else {
        assert_status(&head, &[503, 507], "HEAD while the database is closed");
    }
    let post = tus("POST", server.endpoint())
        .header("Upload-Length", "10")
        .send();
    assert_status(
        &post,
        &[507],
        "a new upload while the database's disk is full",
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            get(&server.url("/readyz")).status == 200
        }),
        "/readyz must recover once space is freed"
    );
    let offset = head_offset(&url);
    resume_to_end(&url, &source, LEN, Duration::from_secs(20));
    assert!(offset as usize <= LEN);
    assert_complete(
        &url,
        &source,
        "upload after the database's disk had space again",
    );
    server.terminate();
    server.start();
    assert_complete(&server.url(&url), &source, "upload after a restart");
    server.kill9();
    drop(mount);
}
