//! The tus protocol 1.0.0, one file per section of the spec.
//!
//! - [`access`] — bearer tokens, ownership, download links, per-owner limits.
//! - [`headers`] — pure parsing and formatting of header values.
//! - [`core`] — OPTIONS, HEAD, PATCH.
//! - [`creation`] — POST, creation-with-upload, creation-defer-length.
//! - [`expiration`] — Upload-Expires.
//! - [`checksum`] — Upload-Checksum in headers and trailers.
//! - [`termination`] — DELETE.
//! - [`concatenation`] — partial and final uploads, concatenation-unfinished.
//! - [`download`] — GET of an upload (tusk's own, with Range).
//! - [`draft`] — the IETF draft "Resumable Uploads for HTTP" on the same upload resources.
//!
//! Handlers take the [`AppState`] and the parts of the request they need, and return
//! `Result<Response, TusError>`; [`crate::routes`] picks the handler and decorates every response.

pub mod access;
pub mod checksum;
pub mod concatenation;
pub mod core;
pub mod creation;
pub mod download;
pub mod draft;
pub mod expiration;
pub mod headers;
pub mod termination;

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use warp::reply::Response;

use crate::config::ServerSettings;
use crate::error::{Result, TusError};
use crate::state::AppState;
use crate::transfer::body::TrailerSlot;
use crate::transfer::interim::InterimSender;
use crate::transfer::ConnInfo;
use crate::upload::UploadId;

pub use headers::TUS_VERSION;

/// `Tus-Resumable`
pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
/// `Tus-Version`
pub const TUS_VERSION_HEADER: HeaderName = HeaderName::from_static("tus-version");
/// `Tus-Extension`
pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
/// `Tus-Max-Size`
pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
/// `Tus-Checksum-Algorithm`
pub const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
/// `Upload-Offset`
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
/// `Upload-Length`
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
/// `Upload-Defer-Length`
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
/// `Upload-Metadata`
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
/// `Upload-Expires`
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
/// `Upload-Checksum`
pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
/// `Upload-Concat`
pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
/// `Upload-Limit` (IETF resumable-upload draft), advertising the largest body we accept.
pub const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");
/// `X-HTTP-Method-Override`, for clients behind proxies that drop PATCH and DELETE.
pub const METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");

/// The content type of PATCH bodies.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Extensions tusk implements, in the order advertised by `Tus-Extension`.
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,expiration,\
checksum,checksum-trailer,termination,concatenation,concatenation-unfinished";

/// A request body as the transfer layer consumes it.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What a handler may need of a request besides its body.
#[derive(Debug, Clone)]
pub struct RequestParts {
    /// The effective method (after X-HTTP-Method-Override).
    pub method: http::Method,
    /// Path and query, as requested.
    pub uri: String,
    /// The HTTP version it came in (absent when served outside [`crate::server`]).
    pub version: Option<http::Version>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Trailers, filled once the body has ended (checksum-trailer).
    pub trailers: TrailerSlot,
    /// The connection it arrived on (absent when served outside [`crate::server`]).
    pub conn: Option<ConnInfo>,
    /// Who sent it, once authenticated (`None` in open mode).
    pub principal: Option<crate::auth::Principal>,
    /// Interim (1xx) responses on that connection; HTTP/1.1 requests served by
    /// [`crate::server`] only.
    pub interim: Option<InterimSender>,
    /// Who wants to hear of committed progress while the body runs (the draft's 104s).
    pub progress: Option<ProgressReport>,
}

/// Progress reports during a long body: commit at least every `interval`, and tell `report`
/// each committed offset.
#[derive(Clone)]
pub struct ProgressReport {
    /// Longest time between commits.
    pub interval: Duration,
    /// Called with the new offset after each commit made while the body still runs.
    pub report: Arc<dyn Fn(u64) + Send + Sync>,
}

impl std::fmt::Debug for ProgressReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressReport")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Headers by which proxies describe the client's request; believed only from trusted proxies.
const FORWARDING_HEADERS: [HeaderName; 4] = [
    http::header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-for"),
];

impl RequestParts {
    /// Whether the request came straight from one of `server.trusted_proxies`.
    pub fn from_trusted_proxy(&self, server: &ServerSettings) -> bool {
        self.conn
            .is_some_and(|conn| is_trusted(server, conn.remote.ip()))
    }

    /// Remove `Forwarded` / `X-Forwarded-*` unless a trusted proxy sent them, so that nothing
    /// downstream (Location URLs, the client address) can be steered by a client.
    pub fn drop_untrusted_forwarding(&mut self, server: &ServerSettings) {
        if !self.from_trusted_proxy(server) {
            for name in &FORWARDING_HEADERS {
                self.headers.remove(name);
            }
        }
    }

    /// The client's address, for logs, client profiles and per-client limits: the TCP peer,
    /// or, when that peer is a trusted proxy, the right-most address of `Forwarded: for=` /
    /// `X-Forwarded-For` that is not itself a trusted proxy (addresses left of it were written
    /// by the client and prove nothing). If that hop's address is unknown, the peer's.
    pub fn client_ip(&self, server: &ServerSettings) -> Option<IpAddr> {
        let peer = self.conn?.remote.ip().to_canonical();
        if !is_trusted(server, peer) {
            return Some(peer);
        }
        let join = |name: &HeaderName| {
            let values: Vec<&str> = self
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        let chain = headers::forwarded_for(
            join(&http::header::FORWARDED).as_deref(),
            join(&FORWARDING_HEADERS[3]).as_deref(),
        );
        let mut client = peer;
        for hop in chain.into_iter().rev() {
            match hop.map(|ip| ip.to_canonical()) {
                Some(ip) if is_trusted(server, ip) => client = ip,
                Some(ip) => return Some(ip),
                None => return Some(peer),
            }
        }
        // Every hop was a trusted proxy: the left-most is as close to the client as we know.
        Some(client)
    }
}

fn is_trusted(server: &ServerSettings, ip: IpAddr) -> bool {
    server.trusted_proxies.iter().any(|net| net.contains(ip))
}

/// Refuse requests without `Tus-Resumable: 1.0.0` (§Core "Tus-Resumable": 412).
pub fn require_tus_resumable(headers: &HeaderMap) -> Result<()> {
    match header_str(headers, &TUS_RESUMABLE) {
        Some(version) if headers::is_supported_version(version) => Ok(()),
        _ => Err(TusError::UnsupportedVersion),
    }
}

/// Header fields that carry one value, by the name a client is told about: tus's and the
/// resumable-upload draft's (where they coincide, once). Sent twice, a proxy that believes the
/// last copy and tusk that read the first would see different requests.
const SINGLE_VALUE_FIELDS: [(HeaderName, &str); 10] = [
    (UPLOAD_OFFSET, "Upload-Offset"),
    (UPLOAD_LENGTH, "Upload-Length"),
    (TUS_RESUMABLE, "Tus-Resumable"),
    (UPLOAD_CONCAT, "Upload-Concat"),
    (UPLOAD_CHECKSUM, "Upload-Checksum"),
    (UPLOAD_DEFER_LENGTH, "Upload-Defer-Length"),
    (METHOD_OVERRIDE, "X-HTTP-Method-Override"),
    (draft::UPLOAD_COMPLETE, "Upload-Complete"),
    (draft::UPLOAD_INCOMPLETE, "Upload-Incomplete"),
    (
        draft::UPLOAD_DRAFT_INTEROP_VERSION,
        "Upload-Draft-Interop-Version",
    ),
];

/// Refuse a request that repeats a single-value field (400 naming it). Checked once, where a
/// request for the upload resources comes in, so that every later [`header_str`] reads the
/// only value there is.
pub fn require_single_values(headers: &HeaderMap) -> Result<()> {
    for (name, shown) in &SINGLE_VALUE_FIELDS {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            return Err(headers::HeaderError::Duplicated(shown).into());
        }
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, any request with two, or with one
/// that is not `host[:port]`, is refused (400). Checked for every request, before routing.
pub fn require_valid_host(request: &RequestParts) -> Result<()> {
    let mut hosts = request.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if request.version == Some(http::Version::HTTP_10) => Ok(()),
        (None, _) => Err(TusError::BadRequest(
            "an HTTP/1.1 request must carry a Host header",
        )),
        (Some(_), Some(_)) => Err(headers::HeaderError::Duplicated("Host").into()),
        (Some(host), None) => match host.to_str() {
            Ok(host) if headers::is_valid_host(host) => Ok(()),
            _ => Err(headers::HeaderError::InvalidHost.into()),
        },
    }
}

/// RFC 9112 §6.1: a transfer coding other than `chunked` (which hyper decodes) is one we do
/// not understand: 501, rather than storing still-coded bytes as the upload's content.
pub fn require_known_transfer_coding(headers: &HeaderMap) -> Result<()> {
    let understood = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .all(|value| {
            value.to_str().is_ok_and(|codings| {
                codings
                    .split(',')
                    .map(|coding| coding.trim_matches([' ', '\t']))
                    .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("chunked"))
            })
        });
    if understood {
        Ok(())
    } else {
        Err(TusError::TransferCodingNotImplemented)
    }
}

/// A header's value as text; `None` when absent or not visible ASCII. For the single-value
/// fields, [`require_single_values`] has made sure there is only one.
pub fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether the body is `application/offset+octet-stream` (parameters ignored).
pub fn has_offset_content_type(headers: &HeaderMap) -> bool {
    header_str(headers, &http::header::CONTENT_TYPE).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
    })
}

/// The request's Content-Length, if declared and valid.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, &http::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// An empty response with `status`.
pub fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Bytes::new().into());
    *response.status_mut() = status;
    response
}

/// Set a header to a number: no string is formatted and re-validated on the way (offsets and
/// lengths are in every HEAD and PATCH answer).
pub fn set_u64(response: &mut Response, name: HeaderName, value: u64) {
    response
        .headers_mut()
        .insert(name, HeaderValue::from(value));
}

/// Set a header from any displayable value (numbers, dates, ids).
pub fn set_header(response: &mut Response, name: HeaderName, value: impl ToString) {
    if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, value);
    }
}

/// The absolute URL of an upload, as clients should see it: from `server.public_url` when set,
/// else from `Host` (or `Forwarded` / `X-Forwarded-*`, which only trusted proxies get through
/// to here; see [`RequestParts::drop_untrusted_forwarding`]). Without a usable host, a
/// path-only URL, which clients resolve against the creation URL.
pub fn upload_url(state: &AppState, headers: &HeaderMap, id: &UploadId) -> String {
    let base = &state.settings.server.base_path;
    match request_origin(state, headers) {
        Some((proto, host)) => format!("{proto}://{host}{base}{id}"),
        None => format!("{base}{id}"),
    }
}

/// The scheme and host this request was addressed to: the configured public origin if there
/// is one (then the request cannot steer it), else what the request says.
pub fn request_origin(state: &AppState, headers: &HeaderMap) -> Option<(String, String)> {
    let public = &state.settings.server.public_url;
    if let Some((scheme, host)) = public.split_once("://") {
        return Some((scheme.to_owned(), host.to_owned()));
    }
    let (forwarded_host, forwarded_proto) = headers::forwarded_origin(
        header_str(headers, &FORWARDING_HEADERS[0]),
        header_str(headers, &FORWARDING_HEADERS[1]),
        header_str(headers, &FORWARDING_HEADERS[2]),
    );
    let own_scheme = if state.settings.tls.enabled() {
        "https"
    } else {
        "http"
    };
    let host = forwarded_host.or_else(|| {
        header_str(headers, &http::header::HOST)
            .filter(|h| is_plausible_host(h))
            .map(str::to_owned)
    })?;
    Some((
        forwarded_proto.unwrap_or_else(|| own_scheme.to_owned()),
        host,
    ))
}

/// Host header values we are willing to echo into a Location URL.
fn is_plausible_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}
