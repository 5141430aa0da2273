//! Termination extension: DELETE.

use std::time::Duration;

use protocol_tests::*;

/// "When receiving a `DELETE` request for an existing upload the Server ... MUST
/// respond with the `204 No Content` status confirming that the upload was
/// terminated. For all future requests to this URL, the Server SHOULD respond with
/// the `404 Not Found` or `410 Gone` status."
#[test]
fn delete_terminates_unfinished_upload() {
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abc");
    let r = tus("DELETE", &url).send();
    assert_status(&r, &[204], "DELETE");
    assert_tus_resumable(&r, "DELETE");
    assert_status(&head(&url), &[404, 410], "HEAD after DELETE");
    assert_status(&patch(&url, 3, b"def"), &[404, 410], "PATCH after DELETE");
    assert_status(&tus("DELETE", &url).send(), &[404, 410], "second DELETE");
}

/// "terminate completed and unfinished uploads": a finished upload can be deleted
/// and is no longer downloadable.
#[test]
fn delete_terminates_finished_upload() {
    let s = TestServer::spawn();
    let url = create(&s, 3);
    patch_ok(&url, 0, b"abc");
    assert_status(&tus("DELETE", &url).send(), &[204], "DELETE");
    assert_status(&head(&url), &[404, 410], "HEAD after DELETE");
    assert_status(&get(&url), &[404, 410], "GET after DELETE");
}

/// tusk: DELETE of an unknown upload -> 404.
#[test]
fn delete_of_unknown_upload_is_404() {
    let s = TestServer::spawn();
    let r = tus("DELETE", &s.url("0123456789abcdef0123456789abcdef")).send();
    assert_status(&r, &[404], "DELETE unknown upload");
}

/// "the Server SHOULD free associated resources": the upload's file is removed.
#[test]
fn delete_frees_stored_bytes() {
    needs_spawned_server!();
    local_backend_only!("looks for the upload's file (tests/cluster.rs checks the objects)");
    let s = TestServer::spawn();
    let url = create(&s, 10);
    patch_ok(&url, 0, b"abc");
    let file = s.upload_file(&upload_id(&url));
    assert!(file.exists(), "{} missing before DELETE", file.display());
    assert_status(&tus("DELETE", &url).send(), &[204], "DELETE");
    assert!(
        wait_until(Duration::from_secs(5), || !file.exists()),
        "{} still exists after DELETE",
        file.display()
    );
}
