//! Checksum extension, trailer form (`checksum-trailer`).

use protocol_tests::*;

const SHA1_HELLO_WORLD: &str = "Kq5sNclPz7QV2+lfQIuc6R7oRu0=";
const SHA1_QUICK_FOX: &str = "L9ThxnotKPzthJ7hu3bnORuT6xI=";

fn trailer_patch(url: &str, offset: u64, chunks: Vec<Vec<u8>>, checksum: &str) -> Response {
    tus("PATCH", url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", &offset.to_string())
        .header("Trailer", "Upload-Checksum")
        .chunked(
            chunks,
            vec![("Upload-Checksum".to_string(), checksum.to_string())],
        )
        .send()
}

/// "If the hash cannot be calculated at the beginning of the upload, it MAY be
/// included as a trailer. ... they MUST be announced using the `Trailer` header and
/// are only allowed in chunked transfers." A correct trailer checksum -> 204.
#[test]
fn matching_trailer_checksum_is_accepted() {
    let s = TestServer::spawn();
    let url = create(&s, 11);
    let r = trailer_patch(
        &url,
        0,
        vec![b"hello".to_vec(), b" ".to_vec(), b"world".to_vec()],
        &format!("sha1 {SHA1_HELLO_WORLD}"),
    );
    assert_status(&r, &[204], "chunked PATCH with a correct trailer checksum");
    assert_eq!(r.header_u64("Upload-Offset"), 11);
    assert_eq!(get_bytes(&url), b"hello world");
}

/// A wrong trailer checksum -> 460 and "the upload and its offset MUST NOT be
/// updated".
#[test]
fn mismatching_trailer_checksum_is_460_and_discarded() {
    let s = TestServer::spawn();
    let url = create(&s, 11);
    let r = trailer_patch(
        &url,
        0,
        vec![b"hello ".to_vec(), b"world".to_vec()],
        &format!("sha1 {SHA1_QUICK_FOX}"),
    );
    assert_status(&r, &[460], "chunked PATCH with a wrong trailer checksum");
    assert_eq!(head_offset(&url), 0, "the offset moved after a 460");
    let r = trailer_patch(
        &url,
        0,
        vec![b"hello world".to_vec()],
        &format!("sha1 {SHA1_HELLO_WORLD}"),
    );
    assert_status(&r, &[204], "retry with the right trailer checksum");
    assert_eq!(get_bytes(&url), b"hello world");
}

/// The trailer is checked after the whole body arrived, even when the body is sent
/// slowly in many chunks.
#[test]
fn trailer_checksum_over_many_chunks() {
    use sha2::{Digest, Sha256};
    let s = TestServer::spawn();
    let data = pattern(30, 200_000);
    let url = create(&s, data.len() as u64);
    let digest = b64(Sha256::digest(&data));
    let mut conn = tus("PATCH", &url)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Trailer", "Upload-Checksum")
        .header("Transfer-Encoding", "chunked")
        .open();
    for piece in data.chunks(7919) {
        conn.write_chunk(piece).expect("writing a chunk");
    }
    let value = format!("sha256 {digest}");
    conn.finish_chunked(&[("Upload-Checksum", &value)])
        .expect("writing the trailer");
    let r = conn.read_response().expect("reading the response");
    assert_status(&r, &[204], "chunked PATCH of 200 kB with a sha256 trailer");
    assert_eq!(sha256_hex(&get_bytes(&url)), sha256_hex(&data));
}
