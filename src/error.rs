//! The one error type at the HTTP edge.
//!
//! Every handler returns `Result<Response, TusError>`. Layer errors (`SessionError`, `StoreError`,
//! `HeaderError`) convert into it, and [`TusError::status`] maps each variant to a status code in
//! one exhaustive match, so that adding a variant forces a decision about its status.

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;
use warp::reply::Response;

use crate::protocol::headers::HeaderError;
use crate::session::lock::LockError;
use crate::session::SessionError;
use crate::storage::StoreError;

/// Shorthand for results at the HTTP edge.
pub type Result<T, E = TusError> = std::result::Result<T, E>;

/// Everything a request can fail with, as a client sees it.
#[derive(Debug, thiserror::Error)]
pub enum TusError {
    /// Tus-Resumable missing or naming a version we do not speak.
    #[error("Tus-Resumable must be 1.0.0")]
    UnsupportedVersion,
    /// A header value could not be parsed.
    #[error("{0}")]
    InvalidHeader(#[from] HeaderError),
    /// The request is well-formed but contradicts the protocol (both lengths, no length, ...).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The body is sent in a transfer coding other than `chunked`.
    #[error("Transfer-Encoding other than chunked is not supported")]
    TransferCodingNotImplemented,
    /// PATCH bodies must be `application/offset+octet-stream`.
    #[error("Content-Type must be application/offset+octet-stream")]
    UnsupportedMediaType,
    /// No upload with this id (or the id is not one we could have made).
    #[error("upload not found")]
    NotFound,
    /// The path is not the tus endpoint nor an upload URL.
    #[error("no such resource")]
    RouteNotFound,
    /// The upload existed but has expired.
    #[error("upload expired")]
    Gone,
    /// The server lost bytes of this upload that it had acknowledged; it cannot be resumed.
    #[error("the server lost this upload's data; start a new upload")]
    Lost,
    /// The resource exists but does not answer this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The client's Upload-Offset is not where the upload stands.
    #[error("Upload-Offset mismatch: upload is at {current}, request says {requested}")]
    OffsetMismatch {
        /// The committed offset.
        current: u64,
        /// The offset the client sent.
        requested: u64,
    },
    /// Another request holds this upload.
    #[error("upload is locked by another request")]
    Locked,
    /// Final uploads of the concatenation extension cannot be patched.
    #[error("final uploads cannot be patched")]
    FinalUploadPatch,
    /// The upload (or this request's body) would exceed a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The body did not match its Upload-Checksum; nothing was kept.
    #[error("checksum mismatch: the chunk was discarded")]
    ChecksumMismatch,
    /// The Range header cannot be satisfied.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// Length of the resource, for `Content-Range: bytes */len`.
        length: u64,
    },
    /// The body stopped arriving for longer than the idle timeout; received bytes were kept.
    #[error("no body data received for {0} seconds; received bytes were kept")]
    BodyTimeout(u64),
    /// The client's body broke off; received bytes were kept unless a checksum was announced.
    #[error("request body interrupted: {0}")]
    BodyInterrupted(std::io::Error),
    /// The body's HTTP framing was malformed (a client error); received bytes were kept.
    #[error("{0}; received bytes were kept")]
    MalformedBody(std::io::Error),
    /// The body arrived slower than `limits.min_body_rate`; received bytes were kept.
    #[error("the body arrived slower than {min_rate} bytes/s over {window_secs} s; received bytes were kept, resume from Upload-Offset")]
    BodyTooSlow {
        /// The minimum rate, bytes per second.
        min_rate: u64,
        /// The window it is averaged over, seconds.
        window_secs: u64,
    },
    /// The request ran past `timeouts.request_max`; received bytes were kept.
    #[error("the request ran longer than {0} seconds; received bytes were kept")]
    RequestDeadline(u64),
    /// The server ran out of file descriptors; passing, so the client should retry.
    #[error("the server is out of file descriptors, retry shortly")]
    OutOfDescriptors,
    /// The server is shutting down; bytes received so far were kept.
    #[error("the server is shutting down; received bytes were kept, retry shortly")]
    ShuttingDown,
    /// Too many uploads are in flight; try again shortly.
    #[error("server busy: too many uploads in flight, retry shortly")]
    Overloaded,
    /// A hook refused the request (a 4xx status and a cleaned, length-capped message).
    #[error("{message}")]
    HookRejected {
        /// The hook's 4xx status.
        status: u16,
        /// The hook's message for the client.
        message: String,
    },
    /// A pre-* hook was down, slow or answered nonsense: fail closed.
    #[error("{0}")]
    HookUnavailable(String),
    /// The data directory is full.
    #[error("insufficient storage")]
    InsufficientStorage,
    /// The request carries no token and needs one.
    #[error("a bearer token is required (Authorization: Bearer ...)")]
    TokenRequired,
    /// The token is not valid (malformed, expired, wrongly signed ...).
    #[error("{0}")]
    Unauthorized(String),
    /// The token is valid but does not open this upload, or the action is not allowed to it.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The owner created too many uploads in the last hour.
    #[error("too many uploads created in the last hour; retry in {retry_after} seconds")]
    RateLimited {
        /// Seconds until one more creation is allowed.
        retry_after: u64,
    },
    /// This client address created uploads faster than `limits.creation_rate` allows.
    #[error("too many uploads created from this address; retry in {retry_after} seconds")]
    CreationRateLimited {
        /// Seconds until one more creation is allowed.
        retry_after: u64,
    },
    /// The owner's unfinished uploads would announce more bytes than allowed.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The upload is not in a state that allows this request.
    #[error("{0}")]
    Conflict(&'static str),
    /// Resumable-upload draft: the lengths a request indicates disagree with each other or
    /// with the upload's.
    #[error("{0}")]
    InconsistentLength(String),
    /// Resumable-upload draft: the upload is complete, nothing can be appended.
    #[error("the upload is already complete")]
    UploadCompleted,
    /// The session store failed.
    #[error("session store failure")]
    Session(SessionError),
    /// The blob store failed.
    #[error("storage failure")]
    Storage(#[source] StoreError),
    /// A shared backend (object store, Redis) could not be reached; the client should retry.
    #[error("{0} is unavailable, retry shortly")]
    BackendUnavailable(&'static str),
}

impl From<SessionError> for TusError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::Unavailable(reason) => {
                tracing::warn!(%reason, "session store unavailable");
                TusError::BackendUnavailable("the session store")
            }
            SessionError::Full(reason) => {
                tracing::error!(%reason, "no space left for the session database");
                TusError::InsufficientStorage
            }
            other => TusError::Session(other),
        }
    }
}

impl From<LockError> for TusError {
    fn from(err: LockError) -> Self {
        match err {
            LockError::Busy(_) => TusError::Locked,
            LockError::Unavailable(err) => err.into(),
        }
    }
}

impl From<StoreError> for TusError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => TusError::NotFound,
            StoreError::Full => TusError::InsufficientStorage,
            StoreError::NoDescriptors(err) => {
                tracing::warn!(error = %err, "out of file descriptors");
                TusError::OutOfDescriptors
            }
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "object store unavailable");
                TusError::BackendUnavailable("the object store")
            }
            other => TusError::Storage(other),
        }
    }
}

/// 460 is tus's own status; `http` has no constant for it.
fn checksum_mismatch_status() -> StatusCode {
    StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST)
}

impl TusError {
    /// The HTTP status for this error. Exhaustive on purpose: no catch-all arm.
    pub fn status(&self) -> StatusCode {
        match self {
            TusError::UnsupportedVersion => StatusCode::PRECONDITION_FAILED,
            TusError::InvalidHeader(_)
            | TusError::BadRequest(_)
            | TusError::InconsistentLength(_)
            | TusError::MalformedBody(_)
            | TusError::UploadCompleted => StatusCode::BAD_REQUEST,
            TusError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TusError::TransferCodingNotImplemented => StatusCode::NOT_IMPLEMENTED,
            TusError::NotFound | TusError::RouteNotFound => StatusCode::NOT_FOUND,
            TusError::Gone | TusError::Lost => StatusCode::GONE,
            TusError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            TusError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            TusError::Locked => StatusCode::LOCKED,
            TusError::FinalUploadPatch => StatusCode::FORBIDDEN,
            TusError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            TusError::ChecksumMismatch => checksum_mismatch_status(),
            TusError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            // Like tusd: clients (tus-js-client) retry only on 5xx, and the client that
            // stalled or broke off should retry from the committed offset.
            TusError::BodyTimeout(_)
            | TusError::BodyTooSlow { .. }
            | TusError::BodyInterrupted(_)
            | TusError::RequestDeadline(_) => StatusCode::INTERNAL_SERVER_ERROR,
            TusError::TokenRequired | TusError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            TusError::Forbidden(_) => StatusCode::FORBIDDEN,
            TusError::RateLimited { .. }
            | TusError::CreationRateLimited { .. }
            | TusError::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            TusError::Conflict(_) => StatusCode::CONFLICT,
            TusError::Overloaded
            | TusError::ShuttingDown
            | TusError::OutOfDescriptors
            | TusError::HookUnavailable(_)
            | TusError::BackendUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Only 4xx reach here (the hook answer is checked); FORBIDDEN is a safe fallback.
            TusError::HookRejected { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN)
            }
            TusError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            TusError::Session(_) | TusError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code, shown before the message.
    pub fn code(&self) -> &'static str {
        match self {
            TusError::UnsupportedVersion => "ERR_UNSUPPORTED_VERSION",
            TusError::InvalidHeader(_) => "ERR_INVALID_HEADER",
            TusError::BadRequest(_) => "ERR_BAD_REQUEST",
            TusError::UnsupportedMediaType => "ERR_INVALID_CONTENT_TYPE",
            TusError::TransferCodingNotImplemented => "ERR_TRANSFER_CODING_NOT_IMPLEMENTED",
            TusError::NotFound => "ERR_UPLOAD_NOT_FOUND",
            TusError::RouteNotFound => "ERR_NOT_FOUND",
            TusError::Gone => "ERR_UPLOAD_EXPIRED",
            TusError::Lost => "ERR_UPLOAD_LOST",
            TusError::MethodNotAllowed => "ERR_METHOD_NOT_ALLOWED",
            TusError::OffsetMismatch { .. } => "ERR_MISMATCHED_OFFSET",
            TusError::Locked => "ERR_UPLOAD_LOCKED",
            TusError::FinalUploadPatch => "ERR_MODIFY_FINAL",
            TusError::TooLarge(_) => "ERR_UPLOAD_SIZE_EXCEEDED",
            TusError::ChecksumMismatch => "ERR_CHECKSUM_MISMATCH",
            TusError::RangeNotSatisfiable { .. } => "ERR_RANGE_NOT_SATISFIABLE",
            TusError::BodyTimeout(_) => "ERR_BODY_TIMEOUT",
            TusError::BodyTooSlow { .. } => "ERR_BODY_TOO_SLOW",
            TusError::BodyInterrupted(_) => "ERR_BODY_INTERRUPTED",
            TusError::MalformedBody(_) => "ERR_MALFORMED_BODY",
            TusError::RequestDeadline(_) => "ERR_REQUEST_DEADLINE",
            TusError::Overloaded => "ERR_SERVER_BUSY",
            TusError::ShuttingDown => "ERR_SERVER_SHUTDOWN",
            TusError::OutOfDescriptors => "ERR_OUT_OF_FILE_DESCRIPTORS",
            TusError::TokenRequired => "ERR_TOKEN_REQUIRED",
            TusError::Unauthorized(_) => "ERR_INVALID_TOKEN",
            TusError::Forbidden(_) => "ERR_FORBIDDEN",
            TusError::RateLimited { .. } | TusError::CreationRateLimited { .. } => {
                "ERR_RATE_LIMITED"
            }
            TusError::QuotaExceeded(_) => "ERR_QUOTA_EXCEEDED",
            TusError::Conflict(_) => "ERR_CONFLICT",
            TusError::HookRejected { .. } => "ERR_HOOK_REJECTED",
            TusError::HookUnavailable(_) => "ERR_HOOK_UNAVAILABLE",
            TusError::InsufficientStorage => "ERR_INSUFFICIENT_STORAGE",
            TusError::InconsistentLength(_) => "ERR_INCONSISTENT_LENGTH",
            TusError::UploadCompleted => "ERR_UPLOAD_COMPLETED",
            TusError::Session(_) => "ERR_SESSION_STORE",
            TusError::Storage(_) => "ERR_STORAGE",
            TusError::BackendUnavailable(_) => "ERR_BACKEND_UNAVAILABLE",
        }
    }

    /// Render as a `text/plain` response `CODE: message`, logging server faults once.
    pub fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            TusError::Session(_) | TusError::Storage(_) | TusError::InsufficientStorage => {
                tracing::error!(code = self.code(), error = %error_chain(&self), "request failed");
            }
            _ => tracing::debug!(code = self.code(), error = %self, "request refused"),
        }
        let mut response = Response::new(format!("{}: {}\n", self.code(), self).into());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match &self {
            TusError::RangeNotSatisfiable { length } => {
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                    headers.insert(http::header::CONTENT_RANGE, value);
                }
            }
            TusError::UnsupportedVersion => {
                headers.insert(
                    crate::protocol::TUS_VERSION_HEADER,
                    HeaderValue::from_static(crate::protocol::TUS_VERSION),
                );
            }
            TusError::Locked
            | TusError::BodyTimeout(_)
            | TusError::BodyTooSlow { .. }
            | TusError::RequestDeadline(_)
            | TusError::BackendUnavailable(_)
            | TusError::OutOfDescriptors
            | TusError::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            // A restart takes a few seconds; sooner would only meet a closed port.
            TusError::ShuttingDown => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            TusError::QuotaExceeded(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("60"));
            }
            TusError::RateLimited { retry_after }
            | TusError::CreationRateLimited { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            TusError::TokenRequired => {
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tusk\""),
                );
            }
            TusError::Unauthorized(reason) => {
                // RFC 6750 §3: say which scheme, and why the token was refused.
                let challenge = format!(
                    "Bearer realm=\"tusk\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.replace(['"', '\\'], "'")
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(http::header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// `error: cause: cause` for logs.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
