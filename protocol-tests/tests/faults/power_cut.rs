//! A power cut after small commits: their files may lack bytes that were acknowledged, and
//! the database may lack their records, whose durable copy is the commit journal.
//!
//! A SIGKILL keeps the page cache, so to stand for a power cut the test takes from the
//! files what the page cache alone held: with `journal_sync_interval` long, nothing has
//! synced them yet, and the only durable copy of their bytes is the journal. (The records,
//! put without a flush, die with the process.)

use protocol_tests::*;

/// Small commits only, and no drain before the kill.
const JOURNAL_CONFIG: &str =
    "[storage]\njournal_max_write = \"64KiB\"\njournal_sync_interval = \"1h\"\n";

fn source(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// "The Server MUST acknowledge successful PATCH requests with the 204 No Content status
/// [and] the new offset" (tus core, PATCH): an acknowledged offset is a promise that holds
/// through a power cut, even when the file never saw an fdatasync.
#[test]
fn core_patch_acknowledged_small_commits_survive_a_power_cut() {
    needs_spawned_server!();
    local_backend_only!("the journal is the sled store's, the files the local store's");
    let mut server = TestServer::spawn_with_config(JOURNAL_CONFIG);

    // One upload created with its first bytes (creation-with-upload), then one more PATCH:
    // its file will be cut short. Another's file will be gone altogether.
    let cut = source(12_288, 1);
    let (cut_url, resp) = create_with_body(&server, &cut[..4096], cut.len());
    assert_eq!(
        resp.header_u64("Upload-Offset"),
        4096,
        "{}",
        resp.describe()
    );
    patch_ok(&cut_url, 4096, &cut[4096..8192]);
    let deleted = source(3000, 3);
    let (deleted_url, _) = create_with_body(&server, &deleted, deleted.len());
    let resp = tus("DELETE", &deleted_url).send();
    assert_status(&resp, &[204], "DELETE of a journaled upload");
    let gone = source(5000, 2);
    let (gone_url, resp) = create_with_body(&server, &gone, gone.len());
    assert_eq!(
        resp.header_u64("Upload-Offset"),
        5000,
        "{}",
        resp.describe()
    );

    server.kill9();
    let cut_file = server.upload_file(&upload_id(&cut_url));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut_file)
        .and_then(|file| file.set_len(1000))
        .expect("cutting the first upload's file short");
    std::fs::remove_file(server.upload_file(&upload_id(&gone_url)))
        .expect("removing the second upload's file");
    server.start();

    let cut_url = server.url(&path_of(&cut_url));
    let gone_url = server.url(&path_of(&gone_url));
    assert_eq!(
        head_offset(&cut_url),
        8192,
        "the cut upload's offset after restart"
    );
    assert_eq!(
        head_offset(&gone_url),
        5000,
        "the lost file's offset after restart"
    );
    assert_eq!(
        get_bytes(&gone_url),
        gone,
        "the lost file's bytes after restart"
    );
    // §Termination: "the Server SHOULD free associated resources": a replay must not undo it.
    let resp = tus("HEAD", &server.url(&path_of(&deleted_url))).send();
    assert_status(
        &resp,
        &[404, 410],
        "HEAD of the upload deleted before the cut",
    );
    // The cut upload resumes where it was acknowledged and ends whole.
    patch_ok(&cut_url, 8192, &cut[8192..]);
    assert_eq!(get_bytes(&cut_url), cut, "the cut upload after resuming");
}

/// A creation-with-upload POST of `body`; asserts 201 and returns the upload's URL.
#[track_caller]
fn create_with_body(server: &TestServer, body: &[u8], len: usize) -> (String, Response) {
    let resp = tus("POST", server.endpoint())
        .header("Upload-Length", &len.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body.to_vec())
        .send();
    assert_status(&resp, &[201], "creation-with-upload");
    let location = resp
        .header("Location")
        .unwrap_or_else(|| panic!("201 without Location: {}", resp.describe()))
        .to_string();
    (server.url(&location), resp)
}
