//! GET `{base}{id}`: download an upload (not part of tus 1.0.0; tusd and browsers expect it).
//!
//! Finished uploads are immutable, so they get a strong ETag, `Accept-Ranges: bytes`, Range
//! (206/416) and If-Range. An unfinished upload serves its committed bytes with
//! `Cache-Control: no-store` and no ETag. Uploaded content is never trusted: only passive types
//! are shown inline, everything else is an `attachment` of `application/octet-stream`, and
//! `X-Content-Type-Options: nosniff` is always set. Statuses: 200, 206, 304, 404, 410, 416.

use http::header::{
    HeaderName, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH,
    CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, IF_RANGE, RANGE,
};
use http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};

use super::headers::{self, ByteRange, Metadata};
use super::{concatenation, header_str, set_header, RequestParts};
use crate::error::{Result, TusError};
use crate::state::AppState;
use crate::upload::{UploadId, UploadInfo};

/// GET `{base}{id}`.
pub async fn download(state: &AppState, id: UploadId, parts: &RequestParts) -> Result<Response> {
    let request = &parts.headers;
    // As for HEAD: bytes held by a stalled PATCH are committed before we serve the prefix.
    state.release_stalled(&id).await;
    let info = concatenation::settle(state, state.load(&id).await?, parts).await?;
    let length = info.offset;
    let etag = info
        .is_finished()
        .then(|| format!("\"{}-{}\"", info.id, length));

    if let (Some(tag), Some(wanted)) = (&etag, header_str(request, &IF_NONE_MATCH)) {
        if wanted
            .split(',')
            .any(|t| t.trim() == tag || t.trim() == "*")
        {
            let mut response = super::empty(StatusCode::NOT_MODIFIED);
            set_header(&mut response, ETAG, tag);
            return Ok(response);
        }
    }
    let range = match header_str(request, &RANGE) {
        Some(value) if range_still_valid(request, etag.as_deref()) => {
            headers::parse_range(value, length)
        }
        _ => ByteRange::Full,
    };
    let (status, start, end) = match range {
        ByteRange::Full => (StatusCode::OK, 0, length),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        ByteRange::Unsatisfiable => return Err(TusError::RangeNotSatisfiable { length }),
    };

    let stream = state.blobs.read(&info.id, start, end - start).await?;
    state.metrics.sent(end - start);
    let mut response = warp::reply::stream(stream).into_response();
    *response.status_mut() = status;
    set_header(&mut response, CONTENT_LENGTH, end - start);
    if status == StatusCode::PARTIAL_CONTENT {
        set_header(
            &mut response,
            CONTENT_RANGE,
            format!("bytes {start}-{}/{length}", end - 1),
        );
    }
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    match &etag {
        Some(tag) => {
            headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            set_header(&mut response, ETAG, tag);
        }
        None => {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    describe_content(&info, &mut response);
    Ok(response)
}

/// If-Range: honour Range only when the validator still matches (a strong ETag compare).
fn range_still_valid(request: &HeaderMap, etag: Option<&str>) -> bool {
    match header_str(request, &IF_RANGE) {
        None => true,
        Some(condition) => etag.is_some_and(|tag| condition.trim() == tag),
    }
}

/// Content-Type and Content-Disposition from the metadata, where that is safe.
fn describe_content(info: &UploadInfo, response: &mut Response) {
    let metadata = Metadata::parse(&info.metadata, usize::MAX).unwrap_or_default();
    let declared = metadata
        .get_str("filetype")
        .or_else(|| metadata.get_str("type"));
    let filename = metadata
        .get_str("filename")
        .or_else(|| metadata.get_str("name"));
    let inline_type = declared.and_then(headers::inline_content_type);
    let content_type = inline_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    set_header(response, CONTENT_TYPE, content_type);
    set_header(
        response,
        CONTENT_DISPOSITION,
        headers::content_disposition(inline_type.is_some(), filename),
    );
}
