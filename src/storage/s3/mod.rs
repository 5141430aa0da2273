//! [`BlobStore`] in an S3-compatible object store, shared by every tusk instance.
//!
//! An upload is one multipart upload. Objects, under `s3.prefix`:
//!
//! - `{id}.info`: the record at creation, the multipart upload id and the part size
//!   (written by [`describe`](BlobStore::describe)).
//! - `{id}.tail`: the bytes after the last uploaded part (less than one part), with metadata
//!   `x-amz-meta-tusk-parts: n`, the number of parts (1..=n, each exactly the part size)
//!   before them. Absent means no part and no byte. It alone says which parts count: a part
//!   uploaded beyond `n` by a request whose bytes were later discarded is ignored, and
//!   overwritten when the upload goes on. So the durable length of an unfinished upload is
//!   `n × part size + tail length`, and PUTting the tail is what a sync is.
//! - `{id}`: the finished object, once the multipart upload is completed.
//!
//! S3 wants parts of at least 5 MiB (but the last), at most 10,000 of them; every part but
//! the last is exactly the part size here, chosen at creation from Upload-Length. A writer
//! holds at most about one part in memory: as soon as a part is whole it is uploaded.
//!
//! The object store serves an upload's bytes only once it is complete (the multipart parts
//! cannot be read back), which is all downloads and concatenation need.

mod client;
mod sigv4;
mod xml;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use self::client::{Call, S3Client, S3Error};
use self::sigv4::Signer;
use super::{BlobStore, BlobWriter, ByteStream, StoreError};
use crate::config::S3Settings;
use crate::upload::{Concat, UploadId, UploadInfo, UploadState};

const MIB: u64 = 1 << 20;
/// S3's limit on the parts of one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3's floor for every part but the last.
const MIN_PART: u64 = 5 * MIB;
/// S3's ceiling for one part.
const MAX_PART: u64 = 5 * 1024 * MIB;
/// User metadata of `.tail`: how many parts precede its bytes.
const PARTS_META: &str = "x-amz-meta-tusk-parts";

/// Upload bytes as multipart uploads in an S3-compatible bucket (path-style requests).
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Arc<S3Client>,
    endpoint: String,
    bucket: String,
    prefix: String,
    /// `s3.part_size`: the smallest part size of a new upload.
    part_size: u64,
}

/// The content of `{id}.info`.
#[derive(Debug, Serialize, Deserialize)]
struct InfoDoc {
    /// The upload's record as [`describe`](BlobStore::describe) saw it.
    record: UploadInfo,
    /// The multipart upload holding the bytes.
    upload_id: String,
    /// Size of every part but the last.
    part_size: u64,
}

/// What `{id}.tail` says.
#[derive(Debug, Default)]
struct Tail {
    /// Parts before the bytes.
    parts: u64,
    /// The bytes after them.
    bytes: Bytes,
}

impl From<S3Error> for StoreError {
    fn from(err: S3Error) -> Self {
        match err {
            S3Error::Unavailable(reason) | S3Error::Transport(reason) => {
                StoreError::Unavailable(reason)
            }
            S3Error::Status {
                status: 404, code, ..
            } if code == "NoSuchKey" => StoreError::NotFound,
            other => StoreError::Io(io::Error::other(other.to_string())),
        }
    }
}

/// A [`StoreError::Io`] carrying `message`.
fn io_error(message: impl Into<String>) -> StoreError {
    StoreError::Io(io::Error::other(message.into()))
}

/// The part size of an upload of `length` bytes: at least `floor`, enough for 10,000 parts to
/// hold the whole length, in whole MiB.
fn part_size_for(floor: u64, length: Option<u64>) -> Result<u64, StoreError> {
    let needed = length.map_or(0, |len| len.div_ceil(MAX_PARTS));
    let size = floor.max(needed).div_ceil(MIB) * MIB;
    if size > MAX_PART {
        return Err(io_error(format!(
            "an upload of {} bytes needs parts of {size} bytes; S3 allows at most {MAX_PART}",
            length.unwrap_or(0)
        )));
    }
    Ok(size)
}

impl S3BlobStore {
    /// A store for the bucket in `settings`; no request is made (see [`check`](Self::check)).
    ///
    /// # Errors
    /// When the settings cannot work: not an `http://` endpoint, no bucket, a part size
    /// outside S3's limits, a zero timeout.
    pub fn new(settings: &S3Settings) -> Result<S3BlobStore, StoreError> {
        let invalid =
            |message: String| StoreError::Io(io::Error::new(io::ErrorKind::InvalidInput, message));
        let part_size = settings.part_size.0;
        if !(MIN_PART..=MAX_PART).contains(&part_size) {
            return Err(invalid(format!(
                "s3.part_size must be between 5 MiB and 5 GiB, not {part_size} bytes"
            )));
        }
        let timeout: Duration = settings.request_timeout.0;
        if timeout.is_zero() {
            return Err(invalid("s3.request_timeout must not be zero".to_owned()));
        }
        let signer = Signer::new(&settings.access_key, &settings.secret_key, &settings.region);
        let client = S3Client::new(&settings.endpoint, &settings.bucket, signer, timeout)
            .map_err(invalid)?;
        Ok(S3BlobStore {
            client: Arc::new(client),
            endpoint: settings.endpoint.clone(),
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            part_size,
        })
    }

    /// Whether the bucket is there and these credentials may use it (HeadBucket), so that a
    /// misconfiguration fails at start-up with a clear message rather than on the first upload.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store cannot be reached; [`StoreError::Io`] naming
    /// the problem when the bucket is missing or access is denied.
    pub async fn check(&self) -> Result<(), StoreError> {
        match self.client.send(Call::new(Method::HEAD, None)).await {
            Ok(_) => Ok(()),
            Err(S3Error::Status { status: 404, .. }) => Err(io_error(format!(
                "bucket {:?} does not exist at {}",
                self.bucket, self.endpoint
            ))),
            Err(S3Error::Status {
                status: 401 | 403, ..
            }) => Err(io_error(format!(
                "access to bucket {:?} at {} denied: check s3.access_key, s3.secret_key and \
                 s3.region",
                self.bucket, self.endpoint
            ))),
            Err(err) => Err(err.into()),
        }
    }

    fn key(&self, id: &UploadId) -> String {
        format!("{}{id}", self.prefix)
    }

    fn info_key(&self, id: &UploadId) -> String {
        format!("{}{id}.info", self.prefix)
    }

    fn tail_key(&self, id: &UploadId) -> String {
        format!("{}{id}.tail", self.prefix)
    }

    /// `{id}.info`, or `None` when there is none.
    async fn info_doc(&self, id: &UploadId) -> Result<Option<InfoDoc>, StoreError> {
        let key = self.info_key(id);
        match self.client.send(Call::new(Method::GET, Some(&key))).await {
            Ok(answer) => serde_json::from_slice(&answer.body)
                .map(Some)
                .map_err(|err| io_error(format!("{key} is not a tusk record: {err}"))),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// `{id}.tail`; an absent one is no part and no byte.
    async fn tail(&self, id: &UploadId) -> Result<Tail, StoreError> {
        let key = self.tail_key(id);
        match self.client.send(Call::new(Method::GET, Some(&key))).await {
            Ok(answer) => Ok(Tail {
                parts: parse_parts(&key, answer.header(PARTS_META))?,
                bytes: answer.body,
            }),
            Err(err) if err.is_not_found() => Ok(Tail::default()),
            Err(err) => Err(err.into()),
        }
    }

    /// Parts and byte count of `{id}.tail`, without fetching its bytes.
    async fn tail_len(&self, id: &UploadId) -> Result<(u64, u64), StoreError> {
        let key = self.tail_key(id);
        match self.client.send(Call::new(Method::HEAD, Some(&key))).await {
            Ok(answer) => Ok((
                parse_parts(&key, answer.header(PARTS_META))?,
                content_length(&key, answer.header("content-length"))?,
            )),
            Err(err) if err.is_not_found() => Ok((0, 0)),
            Err(err) => Err(err.into()),
        }
    }

    /// Store the tail of `id`: `bytes` after `parts` parts.
    async fn put_tail(&self, id: &UploadId, parts: u64, bytes: Bytes) -> Result<(), StoreError> {
        let call = Call::new(Method::PUT, Some(&self.tail_key(id)))
            .header("content-type", "application/octet-stream")
            .header(PARTS_META, parts.to_string())
            .body(bytes);
        self.client.send(call).await?;
        Ok(())
    }

    /// Size of the object `key`, `None` when there is none.
    async fn head_object(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.client.send(Call::new(Method::HEAD, Some(key))).await {
            Ok(answer) => Ok(Some(content_length(key, answer.header("content-length"))?)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Delete `key`; a missing object is fine.
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.client.send(Call::new(Method::DELETE, Some(key))).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Abort the multipart upload `upload_id` of `key`; one already gone is fine.
    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let call = Call::new(Method::DELETE, Some(key)).query("uploadId", upload_id);
        match self.client.send(call).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            // s3s-fs answers AccessDenied, not NoSuchUpload, for an upload it no longer knows
            // (say, aborted by a removal that failed before deleting `.info`). Wrong
            // credentials would fail the deletions that follow anyway, so going on hides
            // nothing but a leaked multipart upload, which is logged.
            Err(err @ S3Error::Status { status: 403, .. }) => {
                tracing::warn!(key, upload_id, error = %err, "cannot abort a multipart upload");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// UploadPart `number` of `key` with `body`.
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u64,
        body: Bytes,
    ) -> Result<(), StoreError> {
        if number > MAX_PARTS {
            return Err(io_error(format!(
                "the upload needs more than {MAX_PARTS} parts of {} bytes (S3's limit); \
                 raise s3.part_size for uploads of unknown length this large",
                body.len()
            )));
        }
        let call = Call::new(Method::PUT, Some(key))
            .query("partNumber", number.to_string())
            .query("uploadId", upload_id)
            .body(body);
        self.client.send(call).await?;
        Ok(())
    }

    /// Every part S3 holds for `upload_id`: number → (ETag, size), following the paging.
    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<BTreeMap<u64, (Option<String>, Option<u64>)>, StoreError> {
        self.list_parts_paged(key, upload_id, None).await
    }

    /// [`list_parts`](Self::list_parts) asking for pages of `page` parts (the server's
    /// default, 1,000 on S3, when `None`): tests use small pages to exercise the paging.
    async fn list_parts_paged(
        &self,
        key: &str,
        upload_id: &str,
        page: Option<u32>,
    ) -> Result<BTreeMap<u64, (Option<String>, Option<u64>)>, StoreError> {
        let mut parts = BTreeMap::new();
        let mut marker: Option<String> = None;
        loop {
            let mut call = Call::new(Method::GET, Some(key)).query("uploadId", upload_id);
            if let Some(page) = page {
                call = call.query("max-parts", page.to_string());
            }
            if let Some(marker) = &marker {
                call = call.query("part-number-marker", marker.clone());
            }
            let answer = self.client.send(call).await?;
            let text = answer.text()?;
            for part in xml::elements(text, "Part") {
                let number = xml::text(part, "PartNumber")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .ok_or_else(|| io_error(format!("ListParts of {key}: a part has no number")))?;
                let etag = xml::text(part, "ETag").filter(|e| !e.is_empty());
                let size = xml::text(part, "Size").and_then(|s| s.trim().parse::<u64>().ok());
                parts.insert(number, (etag, size));
            }
            if xml::text(text, "IsTruncated").as_deref() != Some("true") {
                return Ok(parts);
            }
            marker = Some(
                xml::text(text, "NextPartNumberMarker")
                    .filter(|m| !m.is_empty())
                    .ok_or_else(|| {
                        io_error(format!(
                            "ListParts of {key} is truncated without NextPartNumberMarker"
                        ))
                    })?,
            );
        }
    }

    /// Every key under `prefix`, following ListObjectsV2's continuation tokens.
    async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.list_keys_paged(prefix, None).await
    }

    /// [`list_keys`](Self::list_keys) asking for pages of `page` keys (the server's default,
    /// 1,000 on S3, when `None`): tests use small pages to exercise the paging.
    async fn list_keys_paged(
        &self,
        prefix: &str,
        page: Option<u32>,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut call = Call::new(Method::GET, None)
                .query("list-type", "2")
                .query("prefix", prefix);
            if let Some(page) = page {
                call = call.query("max-keys", page.to_string());
            }
            if let Some(token) = &token {
                call = call.query("continuation-token", token.clone());
            }
            let answer = self.client.send(call).await?;
            let text = answer.text()?;
            keys.extend(
                xml::elements(text, "Contents")
                    .into_iter()
                    .filter_map(|c| xml::text(c, "Key")),
            );
            if xml::text(text, "IsTruncated").as_deref() != Some("true") {
                return Ok(keys);
            }
            token = Some(
                xml::text(text, "NextContinuationToken")
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        io_error("ListObjectsV2 is truncated without NextContinuationToken")
                    })?,
            );
        }
    }

    /// The error for bytes asked of `id` when its finished object is missing.
    async fn not_readable(&self, id: &UploadId) -> StoreError {
        match self.info_doc(id).await {
            Ok(Some(_)) => io_error(format!(
                "upload {id} is not complete: the object store serves an upload's bytes only \
                 once the upload is complete"
            )),
            Ok(None) => StoreError::NotFound,
            Err(err) => err,
        }
    }

    /// A writer positioned after the durable bytes of `id`.
    async fn open_writer(&self, id: &UploadId) -> Result<S3BlobWriter, StoreError> {
        let doc = self.info_doc(id).await?.ok_or(StoreError::NotFound)?;
        let tail = self.tail(id).await?;
        if tail.bytes.len() as u64 >= doc.part_size {
            return Err(io_error(format!(
                "{} holds {} bytes, not less than one part ({})",
                self.tail_key(id),
                tail.bytes.len(),
                doc.part_size
            )));
        }
        Ok(self.writer_at(id, doc, tail.parts, BytesMut::from(&tail.bytes[..])))
    }

    /// A writer of `id` after `parts` parts and the bytes of `spool`.
    fn writer_at(&self, id: &UploadId, doc: InfoDoc, parts: u64, spool: BytesMut) -> S3BlobWriter {
        S3BlobWriter {
            store: self.clone(),
            id: id.clone(),
            key: self.key(id),
            upload_id: doc.upload_id,
            part_size: doc.part_size,
            parts,
            spool,
            broken: None,
        }
    }

    /// Store `{id}.info`.
    async fn put_info(&self, id: &UploadId, doc: &InfoDoc) -> Result<(), StoreError> {
        let json = serde_json::to_vec(doc).map_err(io::Error::other)?;
        let call = Call::new(Method::PUT, Some(&self.info_key(id)))
            .header("content-type", "application/json")
            .body(json.into());
        self.client.send(call).await?;
        Ok(())
    }
}

/// The part count in a tail's metadata.
fn parse_parts(key: &str, value: Option<&str>) -> Result<u64, StoreError> {
    value
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io_error(format!("{key} lacks a valid {PARTS_META}")))
}

/// An object's size from `content-length`.
fn content_length(key: &str, value: Option<&str>) -> Result<u64, StoreError> {
    value
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io_error(format!("HEAD {key}: no valid content-length")))
}

/// Stream `body`, which must be exactly `expected` bytes; waiting for any one chunk longer
/// than `idle` fails the stream.
///
/// A task moves the chunks through a channel: the stream must be `Sync`, which hyper's body
/// is not, and a dropped stream drops the task's connection as soon as its next send fails.
fn body_stream(body: Incoming, expected: u64, idle: Duration) -> ByteStream {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        loop {
            let item = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the object store sent nothing for {idle:?}"),
                )),
                Ok(None) if seen == expected => return,
                Ok(None) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the object store sent {seen} of {expected} bytes"),
                )),
                Ok(Some(Err(err))) => Err(io::Error::other(err)),
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        seen += data.len() as u64;
                        if seen > expected {
                            Err(io::Error::other(format!(
                                "the object store sent more than the {expected} bytes asked"
                            )))
                        } else {
                            Ok(data)
                        }
                    }
                    // Trailers: nothing to pass on.
                    Err(_) => continue,
                },
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn create(&self, _id: &UploadId) -> Result<(), StoreError> {
        // Nothing to make yet: `describe` follows at once and starts the multipart upload,
        // which needs the length to size its parts.
        Ok(())
    }

    async fn writer(&self, id: &UploadId) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(self.open_writer(id).await?))
    }

    async fn read(&self, id: &UploadId, start: u64, len: u64) -> Result<ByteStream, StoreError> {
        let key = self.key(id);
        if len == 0 {
            // No Range header can ask for nothing; the object must still be there.
            return match self.head_object(&key).await? {
                Some(_) => Ok(Box::pin(futures_util::stream::empty())),
                None => Err(self.not_readable(id).await),
            };
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        let call = Call::new(Method::GET, Some(&key)).header("range", range);
        let response = match self.client.send_streaming(call).await {
            Ok(response) => response,
            Err(err) if err.is_not_found() => return Err(self.not_readable(id).await),
            Err(err) => return Err(err.into()),
        };
        // A server ignoring Range answers 200 with the whole object: usable only when that is
        // exactly what was asked.
        let whole = response.status() == StatusCode::OK
            && start == 0
            && response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                == Some(len);
        if response.status() != StatusCode::PARTIAL_CONTENT && !whole {
            return Err(io_error(format!(
                "GET {key} with a range answered {}",
                response.status()
            )));
        }
        Ok(body_stream(
            response.into_body(),
            len,
            self.client.timeout(),
        ))
    }

    async fn len(&self, id: &UploadId) -> Result<u64, StoreError> {
        if let Some(size) = self.head_object(&self.key(id)).await? {
            return Ok(size);
        }
        let doc = self.info_doc(id).await?.ok_or(StoreError::NotFound)?;
        let (parts, tail_len) = self.tail_len(id).await?;
        Ok(parts * doc.part_size + tail_len)
    }

    async fn truncate(&self, id: &UploadId, len: u64) -> Result<(), StoreError> {
        let doc = self.info_doc(id).await?.ok_or(StoreError::NotFound)?;
        if let Some(size) = self.head_object(&self.key(id)).await? {
            return if size == len {
                Ok(())
            } else {
                Err(io_error(format!(
                    "upload {id} is complete at {size} bytes; it cannot be cut to {len}"
                )))
            };
        }
        let tail = self.tail(id).await?;
        let base = tail.parts * doc.part_size;
        let durable = base + tail.bytes.len() as u64;
        if len < base {
            return Err(io_error(format!(
                "cannot cut upload {id} to {len} bytes: that would cut into an uploaded part \
                 ({} parts of {} bytes are final)",
                tail.parts, doc.part_size
            )));
        }
        if len > durable {
            return Err(io_error(format!(
                "cannot extend upload {id} to {len} bytes: only {durable} are stored"
            )));
        }
        if len == durable {
            return Ok(());
        }
        let keep = (len - base) as usize;
        self.put_tail(id, tail.parts, tail.bytes.slice(..keep))
            .await
    }

    async fn remove(&self, id: &UploadId) -> Result<(), StoreError> {
        let key = self.key(id);
        // A completed multipart upload cannot be aborted (s3s-fs even refuses with
        // AccessDenied): abort only while the object is unfinished.
        let finished = self.head_object(&key).await?.is_some();
        if let Some(doc) = self.info_doc(id).await? {
            if !finished {
                self.abort(&key, &doc.upload_id).await?;
            }
        }
        self.delete(&self.tail_key(id)).await?;
        self.delete(&key).await?;
        // Last: while `.info` exists, `ids` still finds the upload, so a removal cut short is
        // found again.
        self.delete(&self.info_key(id)).await
    }

    async fn concat(&self, target: &UploadId, parts: &[UploadId]) -> Result<u64, StoreError> {
        let mut sizes = Vec::with_capacity(parts.len());
        for part in parts {
            let size = self
                .head_object(&self.key(part))
                .await?
                .ok_or_else(|| io_error(format!("part {part} is not a complete upload")))?;
            sizes.push(size);
        }
        let total: u64 = sizes.iter().sum();
        if self.head_object(&self.key(target)).await? == Some(total) {
            // Joined before (a retry): only make sure it is sealed.
            self.complete(target, total).await?;
            return Ok(total);
        }
        let mut doc = self.info_doc(target).await?.ok_or(StoreError::NotFound)?;
        let needed = part_size_for(self.part_size, Some(total))?;
        if doc.part_size < needed {
            // A final upload's length is often unknown when it is described; now that it is
            // known, parts must be large enough for 10,000 of them to hold it. Safe because
            // the target is written from its first byte (below).
            doc.part_size = needed;
            self.put_info(target, &doc).await?;
        }
        // The target is written from its first byte whatever an attempt cut short left: its
        // parts are overwritten in order and the tail's count rewritten at the sync.
        let mut writer = self.writer_at(target, doc, 0, BytesMut::new());
        for (part, size) in parts.iter().zip(sizes) {
            let mut stream = self.read(part, 0, size).await?;
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk.map_err(|err| match err.kind() {
                    io::ErrorKind::TimedOut => StoreError::Unavailable(err.to_string()),
                    _ => StoreError::Io(err),
                })?;
                writer.append(&chunk).await?;
            }
        }
        writer.sync().await?;
        self.complete(target, total).await?;
        Ok(total)
    }

    async fn ids(&self) -> Result<Vec<UploadId>, StoreError> {
        Ok(self
            .list_keys(&self.prefix)
            .await?
            .iter()
            .filter_map(|key| {
                key.strip_prefix(&self.prefix)?
                    .strip_suffix(".info")
                    .and_then(UploadId::parse)
            })
            .collect())
    }

    async fn describe(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let part_size = part_size_for(self.part_size, info.length)?;
        let key = self.key(&info.id);
        let call = Call::new(Method::POST, Some(&key))
            .query("uploads", "")
            .header("content-type", "application/octet-stream");
        let answer = self.client.send(call).await?;
        let upload_id = xml::text(answer.text()?, "UploadId")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| io_error(format!("CreateMultipartUpload of {key}: no UploadId")))?;
        let doc = InfoDoc {
            record: info.clone(),
            upload_id,
            part_size,
        };
        if let Err(err) = self.put_info(&info.id, &doc).await {
            // Without `.info` nothing would ever find the multipart upload again.
            let _ = self.abort(&key, &doc.upload_id).await;
            return Err(err);
        }
        Ok(())
    }

    async fn recover(&self, id: &UploadId) -> Result<Option<UploadInfo>, StoreError> {
        let Some(doc) = self.info_doc(id).await? else {
            return Ok(None);
        };
        let mut record = doc.record;
        if let Some(size) = self.head_object(&self.key(id)).await? {
            record.offset = size;
            record.length = Some(size);
            record.state = UploadState::Completed;
            if let Concat::Final { joined, .. } = &mut record.concat {
                *joined = true;
            }
        } else {
            let (parts, tail_len) = self.tail_len(id).await?;
            record.offset = parts * doc.part_size + tail_len;
            if record.offset > 0 {
                // Whatever its last request did, it did not finish the upload.
                record.state = UploadState::Interrupted;
            }
        }
        Ok(Some(record))
    }

    async fn complete(&self, id: &UploadId, length: u64) -> Result<(), StoreError> {
        let key = self.key(id);
        if let Some(size) = self.head_object(&key).await? {
            if size != length {
                return Err(io_error(format!(
                    "upload {id} is complete at {size} bytes, not {length}"
                )));
            }
            // Sealed before; a completion cut short may have left the tail.
            return self.delete(&self.tail_key(id)).await;
        }
        let doc = self.info_doc(id).await?.ok_or(StoreError::NotFound)?;
        let tail = self.tail(id).await?;
        let durable = tail.parts * doc.part_size + tail.bytes.len() as u64;
        if durable != length {
            return Err(io_error(format!(
                "cannot complete upload {id} at {length} bytes: {durable} are stored"
            )));
        }
        if length == 0 {
            // S3 completes no multipart upload without a part: store an empty object instead.
            let call = Call::new(Method::PUT, Some(&key))
                .header("content-type", "application/octet-stream");
            self.client.send(call).await?;
            self.abort(&key, &doc.upload_id).await?;
            return self.delete(&self.tail_key(id)).await;
        }

        let mut last = tail.parts;
        let tail_len = tail.bytes.len() as u64;
        if tail_len > 0 {
            last += 1;
            self.upload_part(&key, &doc.upload_id, last, tail.bytes)
                .await?;
        }
        let listed = self.list_parts(&key, &doc.upload_id).await?;
        let mut body = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for number in 1..=last {
            let (etag, size) = listed.get(&number).ok_or_else(|| {
                io_error(format!(
                    "cannot complete upload {id}: part {number} of {last} is missing"
                ))
            })?;
            let expected = if number == last && tail_len > 0 {
                tail_len
            } else {
                doc.part_size
            };
            if size.is_some_and(|size| size != expected) {
                return Err(io_error(format!(
                    "cannot complete upload {id}: part {number} holds {} bytes, not {expected}",
                    size.unwrap_or(0)
                )));
            }
            let _ = write!(body, "<Part><PartNumber>{number}</PartNumber>");
            // Parts beyond `last` (from discarded requests) are left out, which S3 discards.
            // Without an ETag in the listing (s3s-fs gives none) the element is omitted: the
            // ETag of an UploadPart answer is not at hand across instances.
            if let Some(etag) = etag {
                let _ = write!(body, "<ETag>{}</ETag>", xml::escape(etag));
            }
            body.push_str("</Part>");
        }
        body.push_str("</CompleteMultipartUpload>");
        let call = Call::new(Method::POST, Some(&key))
            .query("uploadId", doc.upload_id.clone())
            .header("content-type", "application/xml")
            .body(body.into());
        let answer = self.client.send(call).await?;
        // S3 may answer 200 and report a failure in the body.
        if let Some(err) = client::embedded_error(answer.text().unwrap_or("")) {
            return Err(err.into());
        }
        self.delete(&self.tail_key(id)).await
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// Sequential writes into one upload: bytes gather in a spool (the tail) and leave it one whole
/// part at a time.
#[derive(Debug)]
struct S3BlobWriter {
    store: S3BlobStore,
    id: UploadId,
    key: String,
    upload_id: String,
    part_size: u64,
    /// Parts uploaded, counting those the tail object already counted.
    parts: u64,
    /// The bytes after the last part; always less than one part between calls.
    spool: BytesMut,
    /// Why the writer can no longer tell what is stored, after a failed write it could not
    /// roll back.
    broken: Option<String>,
}

impl S3BlobWriter {
    /// Offset of the spool's first byte.
    fn spool_start(&self) -> u64 {
        self.parts * self.part_size
    }

    /// Offset after the last byte written.
    fn end(&self) -> u64 {
        self.spool_start() + self.spool.len() as u64
    }

    /// Make `offset` the end of the written bytes: the spool is cut back when a retried chunk
    /// starts before its end; an uploaded part cannot be rewritten.
    fn seek(&mut self, offset: u64) -> Result<(), StoreError> {
        if let Some(why) = &self.broken {
            return Err(io_error(why.clone()));
        }
        let start = self.spool_start();
        let end = self.end();
        if offset == end {
            Ok(())
        } else if (start..end).contains(&offset) {
            self.spool.truncate((offset - start) as usize);
            Ok(())
        } else if offset < start {
            Err(io_error(format!(
                "cannot write upload {} at {offset}: the bytes before {start} are in uploaded parts",
                self.id
            )))
        } else {
            Err(io_error(format!(
                "cannot write upload {} at {offset}: its bytes end at {end}",
                self.id
            )))
        }
    }

    /// Add `bytes` at the end, uploading each part as soon as it is whole, so the spool never
    /// holds more than one part.
    async fn append(&mut self, mut bytes: &[u8]) -> Result<(), StoreError> {
        let part_size = self.part_size as usize;
        loop {
            while self.spool.len() >= part_size {
                self.upload_next().await?;
            }
            if bytes.is_empty() {
                return Ok(());
            }
            let take = (part_size - self.spool.len()).min(bytes.len());
            self.spool.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    /// Upload the spool's first part-size bytes as the next part.
    async fn upload_next(&mut self) -> Result<(), StoreError> {
        // Split, not copied: the part goes out as a view of the spool's memory.
        let part = self.spool.split_to(self.part_size as usize).freeze();
        let number = self.parts + 1;
        let result = self
            .store
            .upload_part(&self.key, &self.upload_id, number, part.clone())
            .await;
        match result {
            Ok(()) => {
                self.parts = number;
                Ok(())
            }
            Err(err) => {
                // Put the part back in front (a copy, on this rare path only) so the writer
                // still knows every byte after the last uploaded part.
                let mut spool = BytesMut::with_capacity(part.len() + self.spool.len());
                spool.extend_from_slice(&part);
                spool.extend_from_slice(&self.spool);
                self.spool = spool;
                Err(err)
            }
        }
    }

    /// Write `pieces` contiguously at `offset`; after a failure the writer ends at `offset`
    /// again, as the caller assumes (it counts the failed call's bytes as not written).
    async fn write_pieces(&mut self, offset: u64, pieces: &[&[u8]]) -> Result<(), StoreError> {
        self.seek(offset)?;
        for piece in pieces {
            if let Err(err) = self.append(piece).await {
                if offset >= self.spool_start() {
                    self.spool.truncate((offset - self.spool_start()) as usize);
                } else {
                    // A part holding bytes from before `offset` went out and a later one
                    // failed: the parts count can only move forward, and a sync now would
                    // record bytes the caller does not count. Refuse everything from here; a
                    // new writer starts again from the stored tail.
                    self.broken = Some(format!(
                        "an earlier write to upload {} failed midway ({err}); reopen it",
                        self.id
                    ));
                }
                return Err(err);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for S3BlobWriter {
    async fn write_at(
        &mut self,
        mut buf: BytesMut,
        offset: u64,
    ) -> (BytesMut, Result<(), StoreError>) {
        let result = self.write_pieces(offset, &[&buf[..]]).await;
        buf.clear();
        (buf, result)
    }

    async fn write_pair_at(
        &mut self,
        mut head: BytesMut,
        tail: Bytes,
        offset: u64,
    ) -> (BytesMut, Result<(), StoreError>) {
        // Both go straight into the spool: no temporary copy of `tail`.
        let result = self.write_pieces(offset, &[&head[..], &tail[..]]).await;
        head.clear();
        (head, result)
    }

    async fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(why) = &self.broken {
            return Err(io_error(why.clone()));
        }
        // A copy (less than one part): the spool keeps growing while the PUT may still hold
        // its body.
        let bytes = Bytes::copy_from_slice(&self.spool);
        self.store.put_tail(&self.id, self.parts, bytes).await
    }
}

#[cfg(test)]
mod tests {
    //! Against a real S3 server, one per test on a free port: s3s-fs (`cargo install
    //! s3s-fs@0.14.1 --features binary --locked`) over a temporary directory, or with
    //! `TUSK_TEST_S3=moto` moto's server mode (`bash protocol-tests/backends/install.sh`), which
    //! is stricter (ETags and part sizes checked on completion, ListParts paged, NoSuchUpload).

    use std::io::{Read as _, Write as _};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    use futures_util::StreamExt;

    use super::*;
    use crate::config::{ByteSize, HumanDuration};

    const PART: u64 = 5 * MIB;

    /// Which server, from `TUSK_TEST_S3` (as in protocol-tests/src/backends.rs).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        S3sFs,
        Moto,
    }

    fn kind() -> Kind {
        match std::env::var("TUSK_TEST_S3").as_deref() {
            Err(_) | Ok("") | Ok("s3s-fs") => Kind::S3sFs,
            Ok("moto") => Kind::Moto,
            Ok(other) => panic!("TUSK_TEST_S3={other}: expected s3s-fs or moto"),
        }
    }

    /// A running S3 server, killed on drop.
    struct Server {
        kind: Kind,
        child: Child,
        binary: PathBuf,
        /// The port the store is given.
        port: u16,
        /// moto: its own port, behind a forwarder on `port` (moto keeps everything in memory,
        /// so it is never restarted: closing the forwarder is the outage).
        moto_port: u16,
        forwarder: Option<tokio::task::JoinHandle<()>>,
        root: tempfile::TempDir,
        settings: S3Settings,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(forwarder) = self.forwarder.take() {
                forwarder.abort();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Server {
        fn store(&self) -> S3BlobStore {
            S3BlobStore::new(&self.settings).unwrap()
        }

        /// The server goes away: s3s-fs is killed, moto's forwarder closed (its port then
        /// refuses connections, and the connections through it are dropped).
        async fn stop(&mut self) {
            match self.kind {
                Kind::S3sFs => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                }
                Kind::Moto => {
                    if let Some(forwarder) = self.forwarder.take() {
                        forwarder.abort();
                        let _ = forwarder.await;
                    }
                }
            }
        }

        /// The server comes back on the same port with what it held (multipart uploads
        /// survive): s3s-fs started again on its files, moto's forwarder opened again.
        async fn restart(&mut self) {
            self.stop().await;
            match self.kind {
                Kind::S3sFs => self.child = spawn(&self.binary, self.port, self.root.path()),
                Kind::Moto => self.forwarder = Some(forward(self.port, self.moto_port).await),
            }
            assert!(self.ready().await, "the S3 server did not come back");
        }

        /// Wait until this server answers for its bucket; false when it exited or another
        /// server answers on its port.
        async fn ready(&mut self) -> bool {
            let store = self.store();
            for _ in 0..200 {
                if self.child.try_wait().unwrap().is_some() {
                    return false;
                }
                match store.check().await {
                    Ok(()) => return true,
                    Err(StoreError::Unavailable(_)) => {}
                    Err(_) => return false,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the S3 server did not listen on port {}", self.port);
        }

        /// Multipart uploads the server still keeps: s3s-fs's leftovers beside the buckets,
        /// moto's ListMultipartUploads.
        async fn pending_parts(&self) -> Vec<String> {
            match self.kind {
                Kind::S3sFs => std::fs::read_dir(self.root.path())
                    .unwrap()
                    .filter_map(|e| e.unwrap().file_name().into_string().ok())
                    .filter(|name| name.starts_with(".upload_id-"))
                    .collect(),
                Kind::Moto => {
                    let call = Call::new(Method::GET, None).query("uploads", "");
                    let answer = self.store().client.send(call).await.unwrap();
                    let text = answer.text().unwrap();
                    assert_eq!(xml::text(text, "IsTruncated").as_deref(), Some("false"));
                    xml::elements(text, "Upload")
                        .into_iter()
                        .filter_map(|u| xml::text(u, "UploadId"))
                        .collect()
                }
            }
        }
    }

    fn binary(kind: Kind) -> Option<PathBuf> {
        let (env, name) = match kind {
            Kind::S3sFs => ("S3S_FS", "s3s-fs"),
            Kind::Moto => ("MOTO_SERVER", "moto_server"),
        };
        if let Some(path) = std::env::var_os(env) {
            return Some(path.into());
        }
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("protocol-tests/backends/.venv/bin")
            .join(name);
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::iter::once(venv)
            .filter(|_| kind == Kind::Moto)
            .chain(std::env::split_paths(&path).map(|dir| dir.join(name)))
            .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin").join(name)))
            .find(|p| p.is_file())
    }

    /// A fresh server with an empty bucket `bucket`, or `None` (test skipped) without the
    /// server; in CI a missing server fails the test instead.
    async fn server() -> Option<Server> {
        let kind = kind();
        let Some(binary) = binary(kind) else {
            let install = match kind {
                Kind::S3sFs => "cargo install s3s-fs@0.14.1 --features binary --locked",
                Kind::Moto => "bash protocol-tests/backends/install.sh",
            };
            if std::env::var_os("CI").is_some() {
                panic!("{kind:?} not installed (CI is set): {install}");
            }
            eprintln!("skipped: {kind:?} not installed ({install})");
            return None;
        };
        for _ in 0..5 {
            if let Some(server) = start(kind, &binary).await {
                return Some(server);
            }
        }
        panic!("{kind:?} did not start (5 attempts)");
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// One attempt at starting a server on a port that was free a moment ago; `None` when that
    /// port was taken meanwhile (another test's server): it then exits, or serves a root
    /// without this server's bucket, whose name is unique for that reason.
    async fn start(kind: Kind, binary: &std::path::Path) -> Option<Server> {
        let root = tempfile::tempdir().unwrap();
        let bucket = format!("b{}", UploadId::random());
        let port = free_port();
        let mut settings = S3Settings {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.clone(),
            region: "us-east-1".to_owned(),
            prefix: "uploads/".to_owned(),
            access_key: "AK".to_owned(),
            secret_key: "SK".to_owned(),
            part_size: ByteSize(PART),
            request_timeout: HumanDuration(Duration::from_secs(10)),
        };
        let (child, moto_port, forwarder) = match kind {
            Kind::S3sFs => {
                std::fs::create_dir(root.path().join(&bucket)).unwrap();
                (spawn(binary, port, root.path()), 0, None)
            }
            Kind::Moto => {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .ok()?;
                let moto_port = free_port();
                let child = Command::new(binary)
                    .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("moto_server starts");
                let forwarder = forward_from(listener, moto_port);
                let Some((access, secret)) = setup_moto(moto_port, &bucket).await else {
                    forwarder.abort();
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                };
                (settings.access_key, settings.secret_key) = (access, secret);
                (child, moto_port, Some(forwarder))
            }
        };
        let mut server = Server {
            kind,
            child,
            binary: binary.to_owned(),
            port,
            moto_port,
            forwarder,
            root,
            settings,
        };
        server.ready().await.then_some(server)
    }

    fn spawn(binary: &std::path::Path, port: u16, root: &std::path::Path) -> Child {
        Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "AK", "--secret-key", "SK"])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts")
    }

    /// Forward every connection to `port` on to moto's port, until aborted.
    async fn forward(port: u16, moto_port: u16) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the forwarder's port is free again");
        forward_from(listener, moto_port)
    }

    fn forward_from(
        listener: tokio::net::TcpListener,
        moto_port: u16,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection's task.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", moto_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        })
    }

    /// One plain HTTP/1.1 exchange with moto before its authentication is on: status and body.
    fn moto_call(
        port: u16,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> Option<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    /// Make moto check signatures, as protocol-tests/src/backends.rs does: an IAM user allowed
    /// `s3:*`, its access key (returned) and the bucket, then authentication turned on for
    /// every later request. `None` when moto does not answer in time.
    async fn setup_moto(port: u16, bucket: &str) -> Option<(String, String)> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let iam = |form: &str| {
            let headers = "Authorization: AWS4-HMAC-SHA256 \
                 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, \
                 Signature=0\r\nContent-Type: application/x-www-form-urlencoded\r\n";
            let body = format!("Version=2010-05-08&UserName=tusk&{form}");
            moto_call(port, "POST", "/", headers, &body).filter(|(status, _)| *status == 200)
        };
        iam("Action=CreateUser")?;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        let policy: String = policy
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        iam(&format!(
            "Action=PutUserPolicy&PolicyName=s3&PolicyDocument={policy}"
        ))?;
        let (_, key) = iam("Action=CreateAccessKey")?;
        let access = xml::text(&key, "AccessKeyId")?;
        let secret = xml::text(&key, "SecretAccessKey")?;
        let (status, _) = moto_call(port, "PUT", &format!("/{bucket}"), "", "")?;
        assert_eq!(status, 200, "creating the bucket in moto");
        let (status, _) = moto_call(
            port,
            "POST",
            "/moto-api/reset-auth",
            "Content-Type: text/plain\r\n",
            "0",
        )?;
        assert_eq!(status, 200, "turning moto's authentication on");
        Some((access, secret))
    }

    /// Bytes that differ at every offset of interest (no short period to hide a misplaced part).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A created and described upload.
    async fn new_upload(store: &S3BlobStore, length: Option<u64>) -> UploadInfo {
        let info = UploadInfo {
            id: UploadId::random(),
            length,
            offset: 0,
            metadata: "filename d29ybGQ=".to_owned(),
            created_at: 1_700_000_000,
            expires_at: None,
            concat: Concat::None,
            state: UploadState::Initiated,
            owner: Some("alice".to_owned()),
        };
        store.create(&info.id).await.unwrap();
        store.describe(&info).await.unwrap();
        info
    }

    /// Write `bytes` at `offset` through `writer` in chunks of `chunk`, alternating plain and
    /// paired writes.
    async fn write_chunks(writer: &mut dyn BlobWriter, bytes: &[u8], offset: u64, chunk: usize) {
        for (i, piece) in bytes.chunks(chunk).enumerate() {
            let at = offset + (i * chunk) as u64;
            let result = if i % 2 == 0 {
                writer.write_at(BytesMut::from(piece), at).await.1
            } else {
                let half = piece.len() / 3;
                let (head, tail) = piece.split_at(half);
                writer
                    .write_pair_at(BytesMut::from(head), Bytes::copy_from_slice(tail), at)
                    .await
                    .1
            };
            result.unwrap();
        }
    }

    async fn read_all(store: &S3BlobStore, id: &UploadId, start: u64, len: u64) -> Vec<u8> {
        let mut stream = store.read(id, start, len).await.unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    /// A complete upload of `bytes`.
    async fn finished_upload(store: &S3BlobStore, bytes: &[u8]) -> UploadId {
        let info = new_upload(store, Some(bytes.len() as u64)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), bytes, 0, 1 << 20).await;
        writer.sync().await.unwrap();
        store.complete(&info.id, bytes.len() as u64).await.unwrap();
        info.id
    }

    #[tokio::test]
    async fn three_parts_in_odd_chunks_across_two_writers() {
        let Some(server) = server().await else { return };
        let store = server.store();
        store.check().await.unwrap();
        let length = 2 * PART + 1_234_567;
        let bytes = data(length as usize, 1);
        let info = new_upload(&store, Some(length)).await;
        assert_eq!(store.len(&info.id).await.unwrap(), 0);

        let first = 7 * MIB as usize + 12_345;
        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes[..first], 0, 777_777).await;
        writer.sync().await.unwrap();
        drop(writer);
        assert_eq!(store.len(&info.id).await.unwrap(), first as u64);

        // Another instance goes on from what the first one synced.
        let other = server.store();
        let mut writer = other.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes[first..], first as u64, 333_333).await;
        writer.sync().await.unwrap();
        assert_eq!(other.len(&info.id).await.unwrap(), length);
        other.complete(&info.id, length).await.unwrap();
        // Sealing again is not an error.
        store.complete(&info.id, length).await.unwrap();

        assert_eq!(store.len(&info.id).await.unwrap(), length);
        assert!(read_all(&store, &info.id, 0, length).await == bytes);
        assert_eq!(store.ids().await.unwrap(), vec![info.id.clone()]);
        let keys = store.list_keys("").await.unwrap();
        assert!(!keys.iter().any(|k| k.ends_with(".tail")), "{keys:?}");
        assert!(server.pending_parts().await.is_empty());
    }

    #[tokio::test]
    async fn tail_survives_a_new_writer() {
        let Some(server) = server().await else { return };
        let (one, two) = (server.store(), server.store());
        let info = new_upload(&one, None).await;
        let bytes = data(300, 2);

        let mut writer = one.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes[..100], 0, 7).await;
        writer.sync().await.unwrap();
        // Unsynced bytes are not durable.
        write_chunks(writer.as_mut(), &bytes[100..150], 100, 50).await;
        drop(writer);
        assert_eq!(two.len(&info.id).await.unwrap(), 100);

        let mut writer = two.writer(&info.id).await.unwrap();
        // A retried chunk starting inside the tail overwrites it.
        write_chunks(writer.as_mut(), &bytes[90..300], 90, 64).await;
        writer.sync().await.unwrap();
        assert_eq!(one.len(&info.id).await.unwrap(), 300);
        let (_, result) = writer.write_at(BytesMut::from(&b"x"[..]), 400).await;
        assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");

        one.complete(&info.id, 300).await.unwrap();
        assert!(read_all(&two, &info.id, 0, 300).await == bytes);
    }

    #[tokio::test]
    async fn parts_beyond_the_tail_are_ignored_after_truncate() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let length = 2 * PART + 4096;
        let bytes = data(length as usize, 3);
        let info = new_upload(&store, Some(length)).await;

        let synced = PART + 100;
        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes[..synced as usize], 0, 1 << 20).await;
        writer.sync().await.unwrap();
        // A request that goes on past the next part boundary (part 2 is uploaded) and whose
        // bytes are then discarded.
        let garbage = data(PART as usize, 99);
        write_chunks(writer.as_mut(), &garbage, synced, 1 << 20).await;
        drop(writer);

        let cut = PART + 50;
        store.truncate(&info.id, cut).await.unwrap();
        assert_eq!(store.len(&info.id).await.unwrap(), cut);
        let err = store.truncate(&info.id, PART - 1).await.unwrap_err();
        assert!(err.to_string().contains("uploaded part"), "{err}");
        let err = store.truncate(&info.id, cut + 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
        // Uploaded parts cannot be rewritten.
        let mut writer = store.writer(&info.id).await.unwrap();
        let (_, result) = writer.write_at(BytesMut::from(&b"x"[..]), 10).await;
        assert!(matches!(result, Err(StoreError::Io(_))), "{result:?}");

        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes[cut as usize..], cut, 999_999).await;
        writer.sync().await.unwrap();
        store.complete(&info.id, length).await.unwrap();
        assert!(read_all(&store, &info.id, 0, length).await == bytes);
    }

    #[tokio::test]
    async fn recover_derives_the_offset() {
        let Some(server) = server().await else { return };
        let store = server.store();
        assert_eq!(store.recover(&UploadId::random()).await.unwrap(), None);
        let length = PART + 20;
        let bytes = data(length as usize, 4);
        let info = new_upload(&store, Some(length)).await;
        assert_eq!(store.recover(&info.id).await.unwrap(), Some(info.clone()));

        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes[..PART as usize + 10], 0, 1 << 20).await;
        writer.sync().await.unwrap();
        let recovered = store.recover(&info.id).await.unwrap().unwrap();
        assert_eq!(recovered.offset, PART + 10);
        assert_eq!(recovered.state, UploadState::Interrupted);
        assert_eq!(recovered.metadata, info.metadata);
        assert_eq!(recovered.owner, info.owner);

        write_chunks(writer.as_mut(), &bytes[PART as usize + 10..], PART + 10, 3).await;
        writer.sync().await.unwrap();
        store.complete(&info.id, length).await.unwrap();
        let recovered = store.recover(&info.id).await.unwrap().unwrap();
        assert_eq!(recovered.offset, length);
        assert_eq!(recovered.state, UploadState::Completed);
        assert!(recovered.is_finished());
    }

    #[tokio::test]
    async fn remove_cleans_everything() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let done = finished_upload(&store, &data(100, 5)).await;
        // Unfinished, with one part uploaded and a tail.
        let info = new_upload(&store, Some(3 * PART)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &data(PART as usize + 5, 6), 0, 1 << 20).await;
        writer.sync().await.unwrap();
        drop(writer);
        assert!(!server.pending_parts().await.is_empty());
        let mut ids = store.ids().await.unwrap();
        ids.sort();
        let mut expected = vec![done.clone(), info.id.clone()];
        expected.sort();
        assert_eq!(ids, expected);

        store.remove(&done).await.unwrap();
        store.remove(&info.id).await.unwrap();
        store.remove(&info.id).await.unwrap();
        store.remove(&UploadId::random()).await.unwrap();
        assert_eq!(store.list_keys("").await.unwrap(), Vec::<String>::new());
        assert!(
            server.pending_parts().await.is_empty(),
            "{:?}",
            server.pending_parts().await
        );
        assert!(matches!(store.len(&done).await, Err(StoreError::NotFound)));
        assert!(matches!(
            store.writer(&info.id).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn list_parts_follows_part_number_markers() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let length = 3 * PART + 10;
        let bytes = data(length as usize, 11);
        let info = new_upload(&store, Some(length)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &bytes, 0, 1 << 20).await;
        writer.sync().await.unwrap();
        let doc = store.info_doc(&info.id).await.unwrap().unwrap();
        let key = store.key(&info.id);
        // Pages of two parts: moto answers IsTruncated and NextPartNumberMarker as S3 does
        // (s3s-fs ignores max-parts and lists all three at once).
        let listed = store
            .list_parts_paged(&key, &doc.upload_id, Some(2))
            .await
            .unwrap();
        assert_eq!(listed.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        for (number, (etag, size)) in &listed {
            assert!(
                size.is_none_or(|size| size == PART),
                "part {number}: {size:?}"
            );
            if server.kind == Kind::Moto {
                assert!(etag.is_some(), "moto lists the ETag of part {number}");
            }
        }
        assert_eq!(
            store.list_parts(&key, &doc.upload_id).await.unwrap(),
            listed
        );
        store.complete(&info.id, length).await.unwrap();
        assert!(read_all(&store, &info.id, 0, length).await == bytes);
    }

    #[tokio::test]
    async fn a_removal_cut_short_after_its_abort_finishes() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let info = new_upload(&store, Some(3 * PART)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        write_chunks(writer.as_mut(), &data(PART as usize + 5, 12), 0, 1 << 20).await;
        writer.sync().await.unwrap();
        drop(writer);
        // A removal that aborted the multipart upload and stopped there: `.info` still names
        // an upload the store no longer knows (moto: NoSuchUpload 404, as S3; s3s-fs: 403).
        let doc = store.info_doc(&info.id).await.unwrap().unwrap();
        store
            .abort(&store.key(&info.id), &doc.upload_id)
            .await
            .unwrap();
        assert_eq!(store.ids().await.unwrap(), vec![info.id.clone()]);
        store.remove(&info.id).await.unwrap();
        assert_eq!(store.list_keys("").await.unwrap(), Vec::<String>::new());
        assert!(server.pending_parts().await.is_empty());
    }

    #[tokio::test]
    async fn listing_follows_continuation_tokens() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let mut made = Vec::new();
        for _ in 0..5 {
            made.push(new_upload(&store, Some(1)).await.id);
        }
        made.sort();
        let keys = store.list_keys_paged("uploads/", Some(2)).await.unwrap();
        let mut listed: Vec<UploadId> = keys
            .iter()
            .filter_map(|k| k.strip_prefix("uploads/")?.strip_suffix(".info"))
            .filter_map(UploadId::parse)
            .collect();
        listed.sort();
        assert_eq!(listed, made);
        let mut ids = store.ids().await.unwrap();
        ids.sort();
        assert_eq!(ids, made);
    }

    #[tokio::test]
    async fn concat_joins_finished_uploads() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let (a, b) = (data(3 * MIB as usize + 7, 7), data(4 * MIB as usize + 1, 8));
        let parts = [
            finished_upload(&store, &a).await,
            finished_upload(&store, &b).await,
        ];
        let mut target = new_upload(&store, None).await;
        target.concat = Concat::Final {
            parts: parts.to_vec(),
            joined: false,
        };
        let total = (a.len() + b.len()) as u64;
        assert_eq!(store.concat(&target.id, &parts).await.unwrap(), total);
        // Again (a retry) is harmless.
        assert_eq!(store.concat(&target.id, &parts).await.unwrap(), total);
        let joined = read_all(&store, &target.id, 0, total).await;
        assert!(joined[..a.len()] == a[..] && joined[a.len()..] == b[..]);

        let unfinished = new_upload(&store, Some(10)).await;
        let err = store
            .concat(&target.id, std::slice::from_ref(&unfinished.id))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
    }

    #[tokio::test]
    async fn range_read() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let bytes = data(PART as usize + 300, 9);
        let id = finished_upload(&store, &bytes).await;
        let start = PART - 10;
        assert!(read_all(&store, &id, start, 100).await[..] == bytes[start as usize..][..100]);
        assert!(read_all(&store, &id, 0, 1).await[..] == bytes[..1]);
        assert!(read_all(&store, &id, 7, 0).await.is_empty());

        let info = new_upload(&store, Some(10)).await;
        let err = store.read(&info.id, 0, 1).await.err().unwrap();
        assert!(
            err.to_string().contains("once the upload is complete"),
            "{err}"
        );
        assert!(matches!(
            store.read(&UploadId::random(), 0, 1).await.err().unwrap(),
            StoreError::NotFound
        ));
    }

    #[tokio::test]
    async fn zero_length_upload() {
        let Some(server) = server().await else { return };
        let store = server.store();
        let info = new_upload(&store, Some(0)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        writer.sync().await.unwrap();
        store.complete(&info.id, 0).await.unwrap();
        store.complete(&info.id, 0).await.unwrap();
        assert_eq!(store.len(&info.id).await.unwrap(), 0);
        assert!(read_all(&store, &info.id, 0, 0).await.is_empty());
        let recovered = store.recover(&info.id).await.unwrap().unwrap();
        assert_eq!(
            (recovered.offset, recovered.state),
            (0, UploadState::Completed)
        );
        assert!(server.pending_parts().await.is_empty());
        let keys = store.list_keys("").await.unwrap();
        assert_eq!(keys.len(), 2, "{keys:?}");
    }

    #[tokio::test]
    async fn a_stopped_server_is_unavailable() {
        let Some(mut server) = server().await else {
            return;
        };
        let store = server.store();
        let info = new_upload(&store, Some(10)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        server.stop().await;
        let err = store.len(&info.id).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        let err = writer.sync().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        let err = store.check().await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_failed_part_upload_rolls_the_writer_back() {
        let Some(mut server) = server().await else {
            return;
        };
        let store = server.store();
        let length = 2 * PART;
        let bytes = data(length as usize, 10);
        let info = new_upload(&store, Some(length)).await;
        let mut writer = store.writer(&info.id).await.unwrap();
        let before = 3 * MIB as usize;
        write_chunks(writer.as_mut(), &bytes[..before], 0, 1 << 20).await;

        // This write completes part 1, whose upload fails: the writer must end where the
        // caller believes it does, before this write.
        server.stop().await;
        let (_, result) = writer
            .write_at(
                BytesMut::from(&bytes[before..4 * MIB as usize + before]),
                before as u64,
            )
            .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        server.restart().await;
        writer.sync().await.unwrap();
        assert_eq!(store.len(&info.id).await.unwrap(), before as u64);

        // And it goes on from there.
        write_chunks(writer.as_mut(), &bytes[before..], before as u64, 1 << 20).await;
        writer.sync().await.unwrap();
        store.complete(&info.id, length).await.unwrap();
        assert!(read_all(&store, &info.id, 0, length).await == bytes);
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let store = S3BlobStore::new(&S3Settings {
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: "b".to_owned(),
            part_size: ByteSize(PART),
            request_timeout: HumanDuration(Duration::from_millis(200)),
            ..S3Settings::default()
        })
        .unwrap();
        let began = std::time::Instant::now();
        let err = store.len(&UploadId::random()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
        assert!(began.elapsed() < Duration::from_secs(2));
        hold.abort();
    }

    #[tokio::test]
    async fn check_names_a_missing_bucket() {
        let Some(server) = server().await else { return };
        let mut settings = server.settings.clone();
        settings.bucket = "nope".to_owned();
        let err = S3BlobStore::new(&settings)
            .unwrap()
            .check()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        settings.bucket = server.settings.bucket.clone();
        settings.secret_key = "wrong".to_owned();
        let err = S3BlobStore::new(&settings)
            .unwrap()
            .check()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("denied"), "{err}");
    }

    #[test]
    fn part_sizes_fit_ten_thousand_parts() {
        assert_eq!(part_size_for(8 * MIB, None).unwrap(), 8 * MIB);
        assert_eq!(part_size_for(8 * MIB, Some(1)).unwrap(), 8 * MIB);
        assert_eq!(part_size_for(5 * MIB, Some(100 << 30)).unwrap(), 11 * MIB);
        assert_eq!(part_size_for(5 * MIB + 1, None).unwrap(), 6 * MIB);
        assert!(part_size_for(5 * MIB, Some(60 << 40)).is_err());
        let settings = S3Settings {
            endpoint: "http://127.0.0.1:1".to_owned(),
            bucket: "b".to_owned(),
            part_size: ByteSize(MIB),
            ..S3Settings::default()
        };
        assert!(S3BlobStore::new(&settings).is_err());
    }
}
