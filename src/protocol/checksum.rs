//! §Checksum and §Checksum Trailer: verify a chunk before it is committed.
//!
//! An `Upload-Checksum` header names the algorithm up front, so the body is hashed while it is
//! copied (a tee in the pipeline, nothing buffered whole). A checksum sent as a trailer names
//! its algorithm only after the body, so then the chunk, already written past the committed
//! offset, is read back and hashed. Either way a mismatch answers 460 and the chunk is cut off
//! again: the offset is not updated. An unknown algorithm is 400.

use futures_util::StreamExt;
use http::HeaderMap;

use super::{header_str, headers, UPLOAD_CHECKSUM};
use crate::checksum::{Algorithm, Hasher};
use crate::error::{Result, TusError};
use crate::state::AppState;
use crate::transfer::body::TrailerSlot;
use crate::upload::UploadInfo;

/// The checksum a request announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumRequest {
    /// `Upload-Checksum` was a header: verify while copying.
    Header {
        /// The algorithm.
        algorithm: Algorithm,
        /// The expected digest.
        digest: Vec<u8>,
    },
    /// `Trailer: Upload-Checksum`: the value comes after the body.
    Trailer,
    /// RFC 9530 digests (resumable-upload draft): `Content-Digest` of this body, verified while
    /// copying, and `Repr-Digest` of the whole upload, read back once the body is in.
    Digests {
        /// Algorithm and digest of this request's content.
        content: Option<(Algorithm, Vec<u8>)>,
        /// Algorithm and digest of the whole representation (bytes 0 to the new offset).
        representation: Option<(Algorithm, Vec<u8>)>,
    },
}

impl ChecksumRequest {
    /// A streaming hasher when the algorithm is known up front; for a trailer, one over every
    /// algorithm when the stored bytes cannot be read back afterwards (`can_read_back` false).
    pub fn hasher(&self, can_read_back: bool) -> Option<Hasher> {
        match self {
            ChecksumRequest::Header { algorithm, .. } => Some(algorithm.hasher()),
            ChecksumRequest::Trailer => (!can_read_back).then(Hasher::every),
            ChecksumRequest::Digests { content, .. } => {
                content.as_ref().map(|(algorithm, _)| algorithm.hasher())
            }
        }
    }
}

/// What checksum, if any, this request carries.
///
/// # Errors
/// 400 for an unknown algorithm or a malformed value.
pub fn requested(request_headers: &HeaderMap) -> Result<Option<ChecksumRequest>> {
    if let Some(value) = request_headers.get(UPLOAD_CHECKSUM) {
        let text = value
            .to_str()
            .map_err(|_| TusError::BadRequest("Upload-Checksum must be ASCII"))?;
        let (algorithm, digest) = headers::parse_checksum(text)?;
        return Ok(Some(ChecksumRequest::Header { algorithm, digest }));
    }
    let announced = header_str(request_headers, &http::header::TRAILER).is_some_and(|names| {
        names
            .split(',')
            .any(|name| name.trim().eq_ignore_ascii_case(UPLOAD_CHECKSUM.as_str()))
    });
    Ok(announced.then_some(ChecksumRequest::Trailer))
}

/// Check a completely received chunk of `written` bytes at `info.offset`.
///
/// # Errors
/// 460 on mismatch; 400 when an announced trailer is missing or malformed.
pub async fn verify(
    state: &AppState,
    info: &UploadInfo,
    written: u64,
    request: ChecksumRequest,
    hasher: Option<Hasher>,
    trailers: &TrailerSlot,
) -> Result<()> {
    let (expected, actual) = match (request, hasher) {
        (ChecksumRequest::Header { digest, .. }, Some(hasher)) => (digest, hasher.finalize()),
        (ChecksumRequest::Header { algorithm, digest }, None) => {
            (digest, read_back(state, info, written, algorithm).await?)
        }
        (ChecksumRequest::Trailer, hasher) => {
            let trailer_map = trailers.take().unwrap_or_default();
            let value = header_str(&trailer_map, &UPLOAD_CHECKSUM).ok_or(TusError::BadRequest(
                "Upload-Checksum was announced as a trailer but not sent",
            ))?;
            let (algorithm, digest) = headers::parse_checksum(value)?;
            match hasher.and_then(|h| h.finalize_as(algorithm)) {
                Some(actual) => (digest, actual),
                None => (digest, read_back(state, info, written, algorithm).await?),
            }
        }
        (
            ChecksumRequest::Digests {
                content,
                representation,
            },
            hasher,
        ) => {
            if let Some((algorithm, digest)) = content {
                let actual = match hasher {
                    Some(hasher) => hasher.finalize(),
                    None => read_back(state, info, written, algorithm).await?,
                };
                if actual != digest {
                    return Err(TusError::ChecksumMismatch);
                }
            }
            match representation {
                Some((algorithm, digest)) => {
                    let whole = read_range(state, info, 0, info.offset + written, algorithm);
                    (digest, whole.await?)
                }
                None => return Ok(()),
            }
        }
    };
    if expected == actual {
        Ok(())
    } else {
        Err(TusError::ChecksumMismatch)
    }
}

/// Hash the `written` bytes just stored after the committed offset.
async fn read_back(
    state: &AppState,
    info: &UploadInfo,
    written: u64,
    algorithm: Algorithm,
) -> Result<Vec<u8>> {
    read_range(state, info, info.offset, written, algorithm).await
}

/// Hash `len` stored bytes of `info`'s blob from `from`.
async fn read_range(
    state: &AppState,
    info: &UploadInfo,
    from: u64,
    len: u64,
    algorithm: Algorithm,
) -> Result<Vec<u8>> {
    let mut hasher = algorithm.hasher();
    let mut stream = state.blobs.read(&info.id, from, len).await?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| TusError::Storage(e.into()))?;
        hasher.update(&chunk);
    }
    Ok(hasher.finalize())
}
