//! Checksum extension: `Upload-Checksum` on PATCH.

use protocol_tests::*;

/// Payload whose digests below were computed independently.
const PAYLOAD: &[u8] = b"hello world";
const SHA1: &str = "Kq5sNclPz7QV2+lfQIuc6R7oRu0=";
const MD5: &str = "XrY7u+Ae7tCTyyK7j1rNww==";
const SHA256: &str = "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=";
const SHA512: &str =
    "MJ7MSJwS1utMxA9QyQLytNDtd+5RGnx6m808qG1M2G+YndNbxf9JlnDaNCVbRbDP2DDoH2Bdz33FVC6TrpzXbw==";
/// sha1 of "The quick brown fox jumps over the lazy dog": valid base64, wrong digest.
const OTHER_SHA1: &str = "L9ThxnotKPzthJ7hu3bnORuT6xI=";
/// sha256 of the same sentence: right length for sha256, wrong digest for PAYLOAD.
const OTHER_SHA256: &str = "16j7swfXgJRpypq8sAguT41WUeRtPNt2LQLQvzfJ5ZI=";

fn checked_patch(url: &str, offset: u64, data: &[u8], checksum: &str) -> Response {
    patch_req(url, offset, data)
        .header("Upload-Checksum", checksum)
        .send()
}

fn assert_accepted(algo: &str, digest: &str) {
    let s = TestServer::spawn();
    let url = create(&s, PAYLOAD.len() as u64);
    let r = checked_patch(&url, 0, PAYLOAD, &format!("{algo} {digest}"));
    assert_status(&r, &[204], &format!("PATCH with a correct {algo} checksum"));
    assert_eq!(r.header_u64("Upload-Offset"), PAYLOAD.len() as u64);
    assert_eq!(get_bytes(&url), PAYLOAD);
}

/// "The `Tus-Checksum-Algorithm` header MUST be included in the response to an
/// `OPTIONS` request." "The Server MUST support at least the SHA1 checksum algorithm
/// identified by `sha1`."
#[test]
fn options_lists_checksum_algorithms_including_sha1() {
    let s = TestServer::spawn();
    let r = Request::new("OPTIONS", s.endpoint()).send();
    let algos = r.header_list("Tus-Checksum-Algorithm");
    assert!(algos.iter().any(|a| a == "sha1"), "{}", r.describe());
    for a in &algos {
        assert!(
            !a.bytes().any(|b| b.is_ascii_uppercase()),
            "algorithm names must be lowercase: {a}"
        );
    }
}

/// "204 No Content if the checksums match and the processing of the data
/// succeeded" (sha1).
#[test]
fn matching_sha1_checksum_is_accepted() {
    assert_accepted("sha1", SHA1);
}

/// Same for sha256 (tusk supports it).
#[test]
fn matching_sha256_checksum_is_accepted() {
    assert_accepted("sha256", SHA256);
}

/// Same for sha512 (tusk supports it).
#[test]
fn matching_sha512_checksum_is_accepted() {
    assert_accepted("sha512", SHA512);
}

/// Same for md5 (tusk supports it).
#[test]
fn matching_md5_checksum_is_accepted() {
    assert_accepted("md5", MD5);
}

/// Checksums computed at run time over a larger body, in several chunks, each
/// verified on its own ("verify data integrity of each `PATCH` request").
#[test]
fn each_patch_is_verified_against_its_own_checksum() {
    use sha2::{Digest, Sha256};
    let s = TestServer::spawn();
    let data = pattern(20, 300_000);
    let url = create(&s, data.len() as u64);
    for (start, end) in [
        (0usize, 100_000usize),
        (100_000, 299_999),
        (299_999, 300_000),
    ] {
        let digest = b64(Sha256::digest(&data[start..end]));
        let r = checked_patch(
            &url,
            start as u64,
            &data[start..end],
            &format!("sha256 {digest}"),
        );
        assert_status(&r, &[204], &format!("checked PATCH {start}..{end}"));
    }
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}

/// "460 Checksum Mismatch if the checksums mismatch ... the uploaded chunk MUST be
/// discarded, and the upload and its offset MUST NOT be updated."
#[test]
fn mismatching_checksum_is_460_and_discarded() {
    let s = TestServer::spawn();
    let url = create(&s, 20);
    patch_ok(&url, 0, b"123456789");
    let r = checked_patch(&url, 9, PAYLOAD, &format!("sha1 {OTHER_SHA1}"));
    assert_status(&r, &[460], "PATCH with a wrong sha1 checksum");
    assert_eq!(head_offset(&url), 9, "the offset moved after a 460");
    let r = checked_patch(&url, 9, PAYLOAD, &format!("sha256 {OTHER_SHA256}"));
    assert_status(&r, &[460], "PATCH with a wrong sha256 checksum");
    assert_eq!(head_offset(&url), 9);
    let r = checked_patch(&url, 9, PAYLOAD, &format!("sha1 {SHA1}"));
    assert_status(&r, &[204], "retry with the right checksum");
    assert_eq!(get_bytes(&url), b"123456789hello world");
}

/// "400 Bad Request if the checksum algorithm is not supported by the server ... the
/// uploaded chunk MUST be discarded".
#[test]
fn unsupported_checksum_algorithm_is_400() {
    let s = TestServer::spawn();
    let url = create(&s, PAYLOAD.len() as u64);
    for value in [format!("whirlpool {SHA1}"), format!("SHA-1 {SHA1}")] {
        let r = checked_patch(&url, 0, PAYLOAD, &value);
        assert_status(&r, &[400], &format!("Upload-Checksum {value:?}"));
    }
    assert_eq!(head_offset(&url), 0, "the offset moved after a 400");
}
