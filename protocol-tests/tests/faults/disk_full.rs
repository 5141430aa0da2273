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
