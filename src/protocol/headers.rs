//! Parsing and formatting of tus request/response header values.
//!
//! Everything here is pure: functions take the header value as `&str` and never touch I/O or HTTP
//! types, so the rules can be tested exhaustively in isolation. Every parser bounds its work and
//! allocation by the length of its input (and `Upload-Metadata` by an explicit cap checked first),
//! because header values come straight from untrusted clients.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::checksum::Algorithm;

/// Why a header value was refused; the Display text is shown to clients, so keep it one short line
/// naming the header, e.g. "Upload-Length must be a non-negative integer".
///
/// Client-supplied text is deliberately kept out of the messages so responses never reflect
/// arbitrary input back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// An integer header (named by the payload) was empty or not plain ASCII digits.
    #[error("{0} must be a non-negative integer")]
    InvalidInteger(&'static str),
    /// An integer header (named by the payload) does not fit in 64 bits.
    #[error("{0} is too large")]
    IntegerOverflow(&'static str),
    /// `Upload-Defer-Length` was something other than `1`.
    #[error("Upload-Defer-Length must be 1")]
    InvalidDeferLength,
    /// `Upload-Metadata` is longer than the configured maximum (the payload), in bytes.
    #[error("Upload-Metadata is longer than {0} bytes")]
    MetadataTooLarge(usize),
    /// An `Upload-Metadata` key is not printable ASCII (or is otherwise malformed).
    #[error("Upload-Metadata keys must be printable ASCII without spaces or commas")]
    InvalidMetadataKey,
    /// An `Upload-Metadata` key appears more than once.
    #[error("Upload-Metadata contains a duplicate key")]
    DuplicateMetadataKey,
    /// An `Upload-Metadata` pair has more than a key and one value.
    #[error("Upload-Metadata pairs must be a key optionally followed by one base64 value")]
    MalformedMetadataPair,
    /// An `Upload-Metadata` value is not standard base64.
    #[error("Upload-Metadata values must be standard base64")]
    InvalidMetadataValue,
    /// `Upload-Concat` is neither `partial` nor `final;<urls>`.
    #[error("Upload-Concat must be \"partial\" or \"final;<url> <url> ...\"")]
    InvalidConcat,
    /// `Upload-Concat: final;` listed no uploads.
    #[error("Upload-Concat final must list at least one upload")]
    ConcatWithoutUploads,
    /// `Upload-Concat: final;` listed more than [`MAX_CONCAT_URLS`] uploads.
    #[error("Upload-Concat lists too many uploads")]
    TooManyConcatUploads,
    /// `Upload-Checksum` names an algorithm this server does not support (the payload, truncated
    /// to at most 64 bytes, is kept for logs but not shown to the client).
    #[error("Upload-Checksum algorithm is not supported")]
    UnsupportedChecksumAlgorithm(String),
    /// `Upload-Checksum` is not `<algorithm> <base64 digest>`.
    #[error("Upload-Checksum must be \"<algorithm> <base64 digest>\"")]
    MalformedChecksum,
    /// `Upload-Checksum` digest decoded to the wrong number of bytes for its algorithm.
    #[error("Upload-Checksum digest has the wrong length for {}", .0.name())]
    ChecksumLength(Algorithm),
    /// A single-value header (named by the payload) was sent more than once: intermediaries
    /// disagree on which copy counts (first or last), so neither is believed.
    #[error("{0} must be sent only once")]
    Duplicated(&'static str),
    /// `Host` is not `host[:port]` (RFC 9112 §3.2, RFC 3986 §3.2.2).
    #[error("Host must be a host name or address, optionally with :port")]
    InvalidHost,
}

/// The most uploads an `Upload-Concat: final;...` value may list; bounds the work a single
/// concatenation request can demand.
pub const MAX_CONCAT_URLS: usize = 1_000;

/// The tus protocol version this server speaks.
pub const TUS_VERSION: &str = "1.0.0";

/// Standard-alphabet base64 without padding, for values that carry none.
const BASE64_UNPADDED: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Standard-alphabet base64, padded or not; but padding, when present, must be complete
/// ("YQ==" or "YQ", never "YQ="), and non-canonical trailing bits are rejected, so every
/// accepted value has exactly one meaning.
fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.contains('=') {
        STANDARD.decode(text)
    } else {
        BASE64_UNPADDED.decode(text)
    }
}

/// Trims the optional whitespace (OWS: spaces and tabs) HTTP allows around field values.
fn trim_ows(value: &str) -> &str {
    value.trim_matches([' ', '\t'])
}

/// Parses a run of ASCII digits; `None` for anything else, `Some(Err(()))` on overflow.
fn parse_digits(s: &str) -> Option<Result<u64, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for b in s.bytes() {
        let digit = u64::from(b - b'0');
        match n.checked_mul(10).and_then(|n| n.checked_add(digit)) {
            Some(next) => n = next,
            None => return Some(Err(())),
        }
    }
    Some(Ok(n))
}

/// Upload-Length / Upload-Offset: ASCII digits only (no sign, no spaces inside, no hex, no empty), optional
/// surrounding spaces/tabs trimmed, value must fit u64 (overflow is an error, not a wrap). `name` is the
/// header name used in the error message.
///
/// ```
/// use tusk::protocol::headers::parse_u64;
/// assert_eq!(parse_u64("Upload-Length", "100"), Ok(100));
/// assert!(parse_u64("Upload-Offset", "-1").is_err());
/// ```
pub fn parse_u64(name: &'static str, value: &str) -> Result<u64, HeaderError> {
    match parse_digits(trim_ows(value)) {
        Some(Ok(n)) => Ok(n),
        Some(Err(())) => Err(HeaderError::IntegerOverflow(name)),
        None => Err(HeaderError::InvalidInteger(name)),
    }
}

/// Upload-Defer-Length: only the exact value "1" (after trimming) is valid.
pub fn parse_defer_length(value: &str) -> Result<(), HeaderError> {
    if trim_ows(value) == "1" {
        Ok(())
    } else {
        Err(HeaderError::InvalidDeferLength)
    }
}

/// Whether a `Host` value is `uri-host [":" port]` (RFC 9112 §3.2): an IP literal in
/// brackets, or a registered name / IPv4 address of unreserved characters, sub-delimiters and
/// percent-escapes (possibly empty, RFC 3986 §3.2.2), then optionally `:` and digits.
pub fn is_valid_host(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let literal_ok = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.vV".contains(&b));
        if !literal_ok {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        value.rsplit_once(':').unwrap_or((value, ""))
    };
    let mut bytes = host.bytes();
    while let Some(b) = bytes.next() {
        let ok = match b {
            b'%' => {
                bytes.next().is_some_and(|h| h.is_ascii_hexdigit())
                    && bytes.next().is_some_and(|l| l.is_ascii_hexdigit())
            }
            _ => b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b),
        };
        if !ok {
            return false;
        }
    }
    port.bytes().all(|b| b.is_ascii_digit())
}

/// Tus-Resumable / version check helper: true only for "1.0.0" (after trimming).
pub fn is_supported_version(value: &str) -> bool {
    trim_ows(value) == TUS_VERSION
}

/// Upload-Metadata: ordered key/value pairs.
///
/// Parsing rules:
/// * Pairs are separated by `,` with optional spaces/tabs around them; empty list elements (e.g.
///   a trailing comma) are skipped, as RFC 9110 §5.6.1 asks recipients to do. An empty or
///   all-whitespace header value means no metadata.
/// * Within a pair, the key and value are separated by one or more spaces. Keys must be non-empty
///   printable ASCII (`!`..=`~`) without commas, and unique (case-sensitive).
/// * Values are standard base64 (`+` and `/`), padded or unpadded.
///
/// **Empty values:** a key alone (`key`), and a key followed only by spaces (`key `), both parse
/// to a valueless entry (`None`). Parsing never produces `Some(vec![])`, because an empty base64
/// string and no value are indistinguishable on the wire once surrounding spaces are trimmed;
/// [`Metadata::to_header`] writes a valueless entry as the bare key, so
/// `parse(to_header(m)) == m` for every parsed `m`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pairs: Vec<(String, Option<Vec<u8>>)>,
}

impl Metadata {
    /// Parses an `Upload-Metadata` value no longer than `max_len` bytes (checked before any other
    /// work, so a hostile header cannot make us allocate more than about `max_len`).
    ///
    /// ```
    /// use tusk::protocol::headers::Metadata;
    /// let m = Metadata::parse(
    ///     "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
    ///     4096,
    /// )
    /// .expect("the spec's example is valid");
    /// assert_eq!(m.get_str("filename"), Some("world_domination_plan.pdf"));
    /// assert_eq!(m.get("is_confidential"), None);
    /// assert!(m.pairs().any(|(k, v)| k == "is_confidential" && v.is_none()));
    /// ```
    pub fn parse(value: &str, max_len: usize) -> Result<Self, HeaderError> {
        if value.len() > max_len {
            return Err(HeaderError::MetadataTooLarge(max_len));
        }
        let mut pairs = Vec::new();
        let mut seen = HashSet::new();
        for element in value.split(',') {
            let element = trim_ows(element);
            if element.is_empty() {
                continue;
            }
            let mut parts = element.split(' ').filter(|p| !p.is_empty());
            // `element` is non-empty after trimming, so it has a first token; the fallback is
            // only there to avoid an unwrap.
            let key = parts.next().unwrap_or_default();
            let encoded = parts.next();
            if parts.next().is_some() {
                return Err(HeaderError::MalformedMetadataPair);
            }
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(HeaderError::InvalidMetadataKey);
            }
            if !seen.insert(key) {
                return Err(HeaderError::DuplicateMetadataKey);
            }
            let decoded = match encoded {
                None => None,
                Some(encoded) => {
                    Some(decode_base64(encoded).map_err(|_| HeaderError::InvalidMetadataValue)?)
                }
            };
            pairs.push((key.to_owned(), decoded));
        }
        Ok(Metadata { pairs })
    }

    /// The decoded value for `key`; `None` if the key is absent or has no value.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The value for `key` if present and valid UTF-8 (e.g. a filename to display).
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// True when there are no pairs at all.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// All pairs in the order the client sent them.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// Header form: "key base64,key2" with standard padded base64, keys in original order.
    /// Valueless (and empty) values are written as the bare key.
    pub fn to_header(&self) -> String {
        let mut out = String::new();
        for (i, (key, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                out.push(' ');
                STANDARD.encode_string(value, &mut out);
            }
        }
        out
    }
}

/// Upload-Concat request value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConcatRequest {
    /// `partial`: this upload will be concatenated into a final upload later.
    Partial,
    /// `final;<url> ...`: concatenate these partial uploads (raw URLs, in order).
    Final(Vec<String>),
}

/// `partial` or `final;<url> <url> ...` (URLs separated by one or more spaces; at least one URL;
/// "final;" with none is an error; anything else is an error). Bound: at most
/// [`MAX_CONCAT_URLS`] URLs. URLs are returned raw; resolving them is the caller's job.
///
/// ```
/// use tusk::protocol::headers::{parse_concat, ConcatRequest};
/// assert_eq!(parse_concat("partial"), Ok(ConcatRequest::Partial));
/// assert_eq!(
///     parse_concat("final;/files/a /files/b"),
///     Ok(ConcatRequest::Final(vec!["/files/a".into(), "/files/b".into()])),
/// );
/// ```
pub fn parse_concat(value: &str) -> Result<ConcatRequest, HeaderError> {
    let value = trim_ows(value);
    if value == "partial" {
        return Ok(ConcatRequest::Partial);
    }
    let Some(list) = value.strip_prefix("final;") else {
        return Err(HeaderError::InvalidConcat);
    };
    let mut urls = Vec::new();
    for url in list.split(' ').filter(|u| !u.is_empty()) {
        // Checked before pushing so a hostile list costs at most MAX_CONCAT_URLS allocations.
        if urls.len() == MAX_CONCAT_URLS {
            return Err(HeaderError::TooManyConcatUploads);
        }
        urls.push(url.to_owned());
    }
    if urls.is_empty() {
        return Err(HeaderError::ConcatWithoutUploads);
    }
    Ok(ConcatRequest::Final(urls))
}

/// Upload-Checksum: `<algorithm> <base64 digest>`. Unknown algorithm -> HeaderError::UnsupportedChecksumAlgorithm
/// (the server maps that to 400); malformed -> another variant (also 400). Digest must be valid
/// base64 (padded or not) and its decoded length must equal the algorithm's digest length.
/// The algorithm name is matched case-insensitively.
///
/// ```
/// use tusk::checksum::Algorithm;
/// use tusk::protocol::headers::parse_checksum;
/// let (alg, digest) = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
///     .expect("the spec's example is valid");
/// assert_eq!(alg, Algorithm::Sha1);
/// assert_eq!(digest.len(), 20);
/// ```
pub fn parse_checksum(value: &str) -> Result<(Algorithm, Vec<u8>), HeaderError> {
    let value = trim_ows(value);
    let (name, digest) = value
        .split_once(' ')
        .ok_or(HeaderError::MalformedChecksum)?;
    let digest = digest.trim_start_matches(' ');
    if name.is_empty() || digest.is_empty() {
        return Err(HeaderError::MalformedChecksum);
    }
    let algorithm = Algorithm::from_name(name).ok_or_else(|| {
        HeaderError::UnsupportedChecksumAlgorithm(truncate_on_char(name, 64).to_owned())
    })?;
    // Checked before decoding so an absurdly long digest is rejected without allocating for it.
    if digest.len() > algorithm.digest_len().div_ceil(3) * 4 {
        return Err(HeaderError::ChecksumLength(algorithm));
    }
    let bytes = decode_base64(digest).map_err(|_| HeaderError::MalformedChecksum)?;
    if bytes.len() != algorithm.digest_len() {
        return Err(HeaderError::ChecksumLength(algorithm));
    }
    Ok((algorithm, bytes))
}

/// The longest prefix of `s` that is at most `max` bytes and ends on a char boundary.
fn truncate_on_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Range for GET downloads (RFC 9110 §14): a single "bytes=a-b", "bytes=a-" or "bytes=-n" against a resource of
/// `len` bytes. Returns Full when the header should be ignored (not "bytes=", malformed, or several ranges —
/// serving the whole file is allowed), Partial{start, end} with `end` inclusive and clamped to len-1, or
/// Unsatisfiable (start >= len, or suffix length 0, or len == 0 with a range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// Ignore the Range header and serve the whole representation with 200.
    Full,
    /// Serve bytes `start..=end` with 206.
    Partial {
        /// First byte offset, inclusive.
        start: u64,
        /// Last byte offset, inclusive (always `< len`).
        end: u64,
    },
    /// Answer 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Parses a `Range` header value against a resource of `len` bytes; see [`ByteRange`].
///
/// The `bytes` unit is matched case-insensitively (RFC 9110 §14.1). Numbers too large for u64
/// saturate, which gives the right answer: a huge start is unsatisfiable, a huge end or suffix
/// means "to the end".
pub fn parse_range(value: &str, len: u64) -> ByteRange {
    let value = trim_ows(value);
    let spec = match value.get(..6) {
        Some(unit) if unit.eq_ignore_ascii_case("bytes=") => trim_ows(&value[6..]),
        _ => return ByteRange::Full,
    };
    // Multiple ranges are legal, but serving the whole file is too and is far simpler.
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let saturating = |s: &str| parse_digits(s).map(|r| r.unwrap_or(u64::MAX));
    if first.is_empty() {
        let Some(suffix) = saturating(last) else {
            return ByteRange::Full;
        };
        if suffix == 0 || len == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Partial {
            start: len - suffix.min(len),
            end: len - 1,
        };
    }
    let Some(start) = saturating(first) else {
        return ByteRange::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match saturating(last) {
            // last < first makes the spec invalid, and invalid ranges are ignored (§14.1.1).
            Some(end) if end >= start => end,
            _ => return ByteRange::Full,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start,
        end: end.min(len - 1),
    }
}

/// The host and scheme a proxy says the client used: from `Forwarded` (RFC 7239; first element's host= and
/// proto=, quotes removed) if present, else X-Forwarded-Host (first comma-separated value) and
/// X-Forwarded-Proto (first comma-separated value). Only "http"/"https" (any case, returned
/// lowercase) are accepted as proto; hosts containing anything other than ASCII letters, digits,
/// `.`, `-`, `:`, `[` and `]` are ignored (return None for that part).
///
/// The fallback is per part: when the first `Forwarded` element carries `host=` it decides the
/// host (even if invalid, which yields None), otherwise `X-Forwarded-Host` is consulted; likewise
/// for `proto=`. A syntactically broken `Forwarded` header is ignored entirely. Callers must only
/// use this behind a proxy they trust, since clients can send these headers themselves.
pub fn forwarded_origin(
    forwarded: Option<&str>,
    x_forwarded_host: Option<&str>,
    x_forwarded_proto: Option<&str>,
) -> (Option<String>, Option<String>) {
    let (fwd_host, fwd_proto) = forwarded
        .and_then(parse_forwarded_first)
        .unwrap_or_default();
    let host = match fwd_host {
        Some(h) => valid_host(&h),
        None => x_forwarded_host.and_then(|v| valid_host(first_list_item(v))),
    };
    let proto = match fwd_proto {
        Some(p) => valid_proto(&p),
        None => x_forwarded_proto.and_then(|v| valid_proto(first_list_item(v))),
    };
    (host, proto)
}

/// First comma-separated element of a simple list header, trimmed.
fn first_list_item(value: &str) -> &str {
    trim_ows(value.split(',').next().unwrap_or_default())
}

/// Longest host we will echo back; a DNS name is at most 253 bytes, plus brackets and a port.
const MAX_HOST_LEN: usize = 300;

fn valid_host(host: &str) -> Option<String> {
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| host.to_owned())
}

fn valid_proto(proto: &str) -> Option<String> {
    let proto = proto.to_ascii_lowercase();
    matches!(proto.as_str(), "http" | "https").then_some(proto)
}

/// Parses the first element of a `Forwarded` header (RFC 7239 §4) and returns its `host` and
/// `proto` parameters, unquoted. `None` if the element is malformed, so a broken header cannot
/// half-apply.
fn parse_forwarded_first(value: &str) -> Option<(Option<String>, Option<String>)> {
    let mut host = None;
    let mut proto = None;
    // Empty list elements (",,") are allowed before the first real element.
    let mut rest = value.trim_start_matches([',', ' ', '\t']);
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let (name, param, after_value) = forwarded_pair(rest)?;
        if name.eq_ignore_ascii_case("host") {
            host.get_or_insert(param);
        } else if name.eq_ignore_ascii_case("proto") {
            proto.get_or_insert(param);
        }
        match after_value.as_bytes().first() {
            None | Some(b',') => break,
            Some(b';') => rest = &after_value[1..],
            Some(_) => return None,
        }
    }
    Some((host, proto))
}

/// The addresses a request passed through, client first, as proxies reported them: every
/// `for=` of a `Forwarded` header (RFC 7239) if it has any, else the `X-Forwarded-For` list.
/// Nodes are `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`;
/// anything else (`unknown`, obfuscated `_names`, garbage) is `None`, a hop whose address is
/// not known. A syntactically broken `Forwarded` header yields an empty chain.
///
/// Who may be believed is the caller's decision: anyone can send these headers.
pub fn forwarded_for(
    forwarded: Option<&str>,
    x_forwarded_for: Option<&str>,
) -> Vec<Option<IpAddr>> {
    let from_forwarded = forwarded.map(|value| {
        parse_forwarded_elements(value)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|element| {
                element
                    .into_iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case("for"))
                    .map(|(_, node)| parse_node(&node))
            })
            .collect::<Vec<_>>()
    });
    match from_forwarded {
        Some(chain) if !chain.is_empty() => chain,
        _ => x_forwarded_for
            .map(|list| {
                list.split(',')
                    .map(|node| parse_node(trim_ows(node)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// One node of a `Forwarded: for=` or `X-Forwarded-For` list: an address, optionally with a
/// port (IPv6 then in brackets).
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = node.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// Every element of a `Forwarded` header (RFC 7239 §4), each as its (name, unquoted value)
/// pairs; `None` if any element is malformed.
fn parse_forwarded_elements(value: &str) -> Option<Vec<Vec<(String, String)>>> {
    let mut elements = Vec::new();
    let mut current = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            // Empty list elements (",,") are allowed.
            if !current.is_empty() {
                elements.push(std::mem::take(&mut current));
            }
            rest = after;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let (name, param, after_value) = forwarded_pair(rest)?;
        current.push((name.to_owned(), param));
        match after_value.as_bytes().first() {
            None | Some(b',') => rest = after_value,
            Some(b';') => rest = &after_value[1..],
            Some(_) => return None,
        }
    }
    if !current.is_empty() {
        elements.push(current);
    }
    Some(elements)
}

/// One `name=value` pair of a `Forwarded` element (RFC 7239 §4): the name, the unquoted value,
/// and the text after it with leading whitespace trimmed; `None` when malformed.
fn forwarded_pair(rest: &str) -> Option<(&str, String, &str)> {
    let (name, after_eq) = rest.split_once('=')?;
    let name = trim_ows(name);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return None;
    }
    let (param, after_value) = if let Some(quoted) = after_eq.strip_prefix('"') {
        parse_quoted(quoted)?
    } else {
        let end = after_eq
            .find([';', ',', ' ', '\t'])
            .unwrap_or(after_eq.len());
        let token = &after_eq[..end];
        if token.is_empty() || !token.bytes().all(is_tchar) {
            return None;
        }
        (token.to_owned(), &after_eq[end..])
    };
    Some((name, param, after_value.trim_start_matches([' ', '\t'])))
}

/// Reads a quoted-string body (after the opening quote); returns the unescaped content and the
/// text after the closing quote, or `None` if it is unterminated.
fn parse_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a download may be shown inline by a browser, and with which Content-Type. Only an allow-list
/// of passive types is served inline: image/png, image/jpeg, image/gif, image/webp, image/avif, image/bmp,
/// audio/*, video/*, application/pdf, text/plain. Never text/html, image/svg+xml, application/xhtml+xml,
/// text/xml, application/xml, application/javascript, text/javascript or anything else. Compare on the
/// essence (type/subtype lowercased, parameters dropped); returns the lowercased essence for allowed types.
///
/// The returned value carries no parameters (so `text/plain` has no charset); callers should also
/// send `X-Content-Type-Options: nosniff` so browsers do not second-guess it.
pub fn inline_content_type(declared: &str) -> Option<String> {
    const EXACT: [&str; 8] = [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "application/pdf",
        "text/plain",
    ];
    let essence = trim_ows(declared.split(';').next().unwrap_or_default()).to_ascii_lowercase();
    let (kind, subtype) = essence.split_once('/')?;
    // Both halves must be real tokens: the result is echoed as Content-Type, and "*" wildcards
    // are not media types.
    if kind.is_empty()
        || subtype.is_empty()
        || subtype == "*"
        || !kind.bytes().all(is_tchar)
        || !subtype.bytes().all(is_tchar)
    {
        return None;
    }
    let allowed = EXACT.contains(&essence.as_str()) || kind == "audio" || kind == "video";
    allowed.then_some(essence)
}

/// Longest filename we put in Content-Disposition, in bytes (the common filesystem limit).
const MAX_FILENAME_BYTES: usize = 255;

/// Content-Disposition value: `inline` or `attachment`, plus the filename if given: an ASCII fallback
/// `filename="..."` where quotes, backslashes, control characters, '/', and non-ASCII are replaced by '_'
/// (and the name is cut to 255 bytes), plus `filename*=UTF-8''<percent-encoded>` when the name has non-ASCII
/// (RFC 8187 attr-char set unescaped, everything else %XX). Control characters are removed from the UTF-8 form
/// too. An empty name after cleaning means no filename parameters.
///
/// The UTF-8 form is also cut to 255 bytes (on a character boundary) before encoding.
pub fn content_disposition(inline: bool, filename: Option<&str>) -> String {
    let mut out = String::from(if inline { "inline" } else { "attachment" });
    let Some(name) = filename else {
        return out;
    };
    let cleaned: String = name.chars().filter(|c| !c.is_control()).collect();
    if cleaned.is_empty() {
        return out;
    }
    out.push_str("; filename=\"");
    for c in name.chars().take(MAX_FILENAME_BYTES) {
        let safe = c.is_ascii() && !c.is_ascii_control() && !matches!(c, '"' | '\\' | '/');
        out.push(if safe { c } else { '_' });
    }
    out.push('"');
    if !cleaned.is_ascii() {
        out.push_str("; filename*=UTF-8''");
        for b in truncate_on_char(&cleaned, MAX_FILENAME_BYTES).bytes() {
            if is_attr_char(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 8187 `attr-char`: the bytes that may appear unescaped in an ext-value.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b)
}

/// Latest instant `httpdate` can format (9999-12-31T23:59:59Z); later values would panic there.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// Upload-Expires / Date formatting: RFC 9110 IMF-fixdate for a unix time in seconds.
/// Times after year 9999 are clamped to its last second rather than panicking.
pub fn http_date(unix_secs: u64) -> String {
    let secs = unix_secs.min(MAX_HTTP_DATE_SECS);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Algorithm;

    // ---- Host ------------------------------------------------------------------------------

    #[test]
    fn host_values_follow_rfc_3986() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:1080",
            "[::1]",
            "[::1]:1080",
            "my_host.local",
            "xn--bcher-kva.example",
            "a%20b",
            "",
            "example.com:",
        ] {
            assert!(is_valid_host(good), "{good:?} refused");
        }
        for bad in [
            "example.com:80a",
            "exa mple.com",
            "example.com/path",
            "user@example.com",
            "[::1",
            "[::1]x",
            "[]",
            "[::1]:8x",
            "a%2",
            "a%zz",
            "host\"",
            "a:1:2",
        ] {
            assert!(!is_valid_host(bad), "{bad:?} accepted");
        }
    }

    // ---- integers -------------------------------------------------------------------------

    #[test]
    fn parse_u64_accepts_digits_with_surrounding_whitespace() {
        assert_eq!(parse_u64("Upload-Length", "0"), Ok(0));
        assert_eq!(parse_u64("Upload-Length", "100"), Ok(100));
        assert_eq!(parse_u64("Upload-Length", " 12 "), Ok(12));
        assert_eq!(parse_u64("Upload-Length", "\t7\t"), Ok(7));
        assert_eq!(parse_u64("Upload-Length", "007"), Ok(7));
        assert_eq!(
            parse_u64("Upload-Offset", "18446744073709551615"),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn parse_u64_rejects_hostile_values() {
        for bad in [
            "", " ", "-1", "+5", "1e3", "0x10", "1 2", "12a", "١٢", "1.0", "1_000", "\n1",
        ] {
            assert_eq!(
                parse_u64("Upload-Offset", bad),
                Err(HeaderError::InvalidInteger("Upload-Offset")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parse_u64_overflow_is_an_error() {
        for big in [
            "18446744073709551616",
            "123456789012345678901",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_u64("Upload-Length", big),
                Err(HeaderError::IntegerOverflow("Upload-Length")),
                "{big}"
            );
        }
        assert_eq!(
            parse_u64("Upload-Length", "-1").unwrap_err().to_string(),
            "Upload-Length must be a non-negative integer"
        );
    }

    #[test]
    fn defer_length_only_one() {
        assert_eq!(parse_defer_length("1"), Ok(()));
        assert_eq!(parse_defer_length(" 1\t"), Ok(()));
        for bad in ["", "0", "01", "true", "2", "1 1"] {
            assert_eq!(
                parse_defer_length(bad),
                Err(HeaderError::InvalidDeferLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn version_check() {
        assert!(is_supported_version("1.0.0"));
        assert!(is_supported_version(" 1.0.0 "));
        for bad in ["", "1.0", "0.2.2", "1.0.0,0.2.2", "1.0.00", "v1.0.0"] {
            assert!(!is_supported_version(bad), "{bad:?}");
        }
    }

    // ---- metadata -------------------------------------------------------------------------

    #[test]
    fn metadata_spec_example() {
        let m = Metadata::parse(
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential",
            4096,
        )
        .expect("valid");
        assert_eq!(m.get_str("filename"), Some("world_domination_plan.pdf"));
        assert_eq!(m.get("is_confidential"), None);
        assert_eq!(m.get("missing"), None);
        let pairs: Vec<_> = m.pairs().collect();
        assert_eq!(
            pairs,
            vec![
                ("filename", Some(&b"world_domination_plan.pdf"[..])),
                ("is_confidential", None)
            ]
        );
        assert_eq!(
            m.to_header(),
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
        );
    }

    #[test]
    fn metadata_empty_header_means_none() {
        for empty in ["", "  ", ",", " , ,"] {
            let m = Metadata::parse(empty, 10).expect("valid");
            assert!(m.is_empty(), "{empty:?}");
            assert_eq!(m.to_header(), "");
        }
    }

    #[test]
    fn metadata_whitespace_and_padding_variants() {
        let m = Metadata::parse(" a YQ== , b  YmM ,c,d ", 100).expect("valid");
        assert_eq!(m.get("a"), Some(&b"a"[..]));
        assert_eq!(m.get("b"), Some(&b"bc"[..]));
        assert_eq!(m.get("c"), None);
        assert_eq!(m.get("d"), None);
        // Unpadded input is re-emitted padded.
        assert_eq!(m.to_header(), "a YQ==,b YmM=,c,d");
    }

    #[test]
    fn metadata_empty_value_choice() {
        // A key alone and a key followed only by spaces are both valueless, never Some(empty).
        for v in ["key", "key ", "key   ", " key"] {
            let m = Metadata::parse(v, 100).expect("valid");
            assert_eq!(m.pairs().collect::<Vec<_>>(), vec![("key", None)], "{v:?}");
            assert_eq!(m.to_header(), "key");
            assert_eq!(Metadata::parse(&m.to_header(), 100), Ok(m));
        }
    }

    #[test]
    fn metadata_round_trips() {
        let values: [&[u8]; 6] = [
            "résumé 😀.txt".as_bytes(),
            b"with spaces  inside ",
            b"\x00\xff\xfe binary \r\n\x80",
            b"a,b c",
            b"x",
            b"xy",
        ];
        let mut header = String::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!("k{i} {}", STANDARD.encode(v)));
        }
        header.push_str(",flag");
        let m = Metadata::parse(&header, 10_000).expect("valid");
        for (i, v) in values.iter().enumerate() {
            assert_eq!(m.get(&format!("k{i}")), Some(*v));
        }
        assert_eq!(m.get_str("k0"), Some("résumé 😀.txt"));
        assert_eq!(m.get_str("k2"), None, "binary is not UTF-8");
        assert_eq!(m.to_header(), header);
        assert_eq!(Metadata::parse(&m.to_header(), 10_000), Ok(m));
    }

    #[test]
    fn metadata_rejects_bad_base64() {
        for bad in [
            "k not*base64",
            "k YQ===",
            "k YQ=", // padding, when present, must be complete
            "k Y",
            "k YR==", // non-canonical trailing bits
            "k YQ-_", // URL-safe alphabet
            "k =",
            "k Y Q", // extra token, not base64 with spaces
        ] {
            let err = Metadata::parse(bad, 100).unwrap_err();
            assert!(
                matches!(
                    err,
                    HeaderError::InvalidMetadataValue | HeaderError::MalformedMetadataPair
                ),
                "{bad:?}: {err:?}"
            );
        }
        assert_eq!(
            Metadata::parse("k a$b=", 100),
            Err(HeaderError::InvalidMetadataValue)
        );
    }

    #[test]
    fn metadata_rejects_bad_keys() {
        assert_eq!(
            Metadata::parse("a YQ==,a YQ==", 100),
            Err(HeaderError::DuplicateMetadataKey)
        );
        assert_eq!(
            Metadata::parse("a,a", 100),
            Err(HeaderError::DuplicateMetadataKey)
        );
        // Case-sensitive: these are different keys.
        assert!(Metadata::parse("a,A", 100).is_ok());
        for bad in ["ké YQ==", "k\tv", "k\u{7f}", "k\u{1} YQ=="] {
            assert_eq!(
                Metadata::parse(bad, 100),
                Err(HeaderError::InvalidMetadataKey),
                "{bad:?}"
            );
        }
        // A comma always separates pairs, so "ke,y YQ==" is two pairs: "ke" and "y".
        let m = Metadata::parse("ke,y YQ==", 100).expect("valid");
        assert_eq!(m.pairs().count(), 2);
        assert_eq!(
            Metadata::parse("a b c", 100),
            Err(HeaderError::MalformedMetadataPair)
        );
    }

    #[test]
    fn metadata_size_limit_checked_first() {
        let huge = "k ".to_owned() + &"!".repeat(1_000_000);
        assert_eq!(
            Metadata::parse(&huge, 4096),
            Err(HeaderError::MetadataTooLarge(4096))
        );
        assert_eq!(
            Metadata::parse("abc", 2),
            Err(HeaderError::MetadataTooLarge(2))
        );
        assert!(Metadata::parse("abc", 3).is_ok());
        assert_eq!(
            HeaderError::MetadataTooLarge(4096).to_string(),
            "Upload-Metadata is longer than 4096 bytes"
        );
    }

    // ---- concat ---------------------------------------------------------------------------

    #[test]
    fn concat_valid() {
        assert_eq!(parse_concat("partial"), Ok(ConcatRequest::Partial));
        assert_eq!(parse_concat(" partial "), Ok(ConcatRequest::Partial));
        assert_eq!(
            parse_concat("final;/files/a /files/b"),
            Ok(ConcatRequest::Final(vec![
                "/files/a".into(),
                "/files/b".into()
            ]))
        );
        assert_eq!(
            parse_concat("final; http://x/files/a   /files/b "),
            Ok(ConcatRequest::Final(vec![
                "http://x/files/a".into(),
                "/files/b".into()
            ]))
        );
    }

    #[test]
    fn concat_invalid() {
        assert_eq!(
            parse_concat("final;"),
            Err(HeaderError::ConcatWithoutUploads)
        );
        assert_eq!(
            parse_concat("final;   "),
            Err(HeaderError::ConcatWithoutUploads)
        );
        for bad in [
            "", "Partial", "partial;", "final", "final /a", "FINAL;/a", "merge;/a",
        ] {
            assert_eq!(
                parse_concat(bad),
                Err(HeaderError::InvalidConcat),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn concat_url_limit() {
        let ok = format!("final;{}", vec!["/f"; MAX_CONCAT_URLS].join(" "));
        match parse_concat(&ok) {
            Ok(ConcatRequest::Final(urls)) => assert_eq!(urls.len(), MAX_CONCAT_URLS),
            other => panic!("unexpected {other:?}"),
        }
        let too_many = format!("final;{}", vec!["/f"; MAX_CONCAT_URLS + 1].join(" "));
        assert_eq!(
            parse_concat(&too_many),
            Err(HeaderError::TooManyConcatUploads)
        );
    }

    // ---- checksum -------------------------------------------------------------------------

    #[test]
    fn checksum_spec_example() {
        let (alg, digest) = parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").expect("valid");
        assert_eq!(alg, Algorithm::Sha1);
        let mut h = Algorithm::Sha1.hasher();
        h.update(b"hello world");
        assert_eq!(digest, h.finalize());
        // Unpadded and differently-cased names are accepted too.
        assert_eq!(
            parse_checksum("SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0").map(|(_, d)| d),
            Ok(digest)
        );
    }

    #[test]
    fn checksum_all_algorithms() {
        for alg in Algorithm::ALL {
            let mut h = alg.hasher();
            h.update(b"abc");
            let digest = h.finalize();
            let header = format!("{} {}", alg.name(), STANDARD.encode(&digest));
            assert_eq!(parse_checksum(&header), Ok((alg, digest)), "{header}");
        }
    }

    #[test]
    fn checksum_errors() {
        assert_eq!(
            parse_checksum("whirlpool AAAA"),
            Err(HeaderError::UnsupportedChecksumAlgorithm(
                "whirlpool".into()
            ))
        );
        let long = "x".repeat(500) + " AAAA";
        match parse_checksum(&long) {
            Err(HeaderError::UnsupportedChecksumAlgorithm(name)) => assert_eq!(name.len(), 64),
            other => panic!("unexpected {other:?}"),
        }
        // crc32 wants 4 bytes; "AAAAAA==" is 4 bytes, "AAA=" is 2.
        assert!(parse_checksum("crc32 AAAAAA==").is_ok());
        assert_eq!(
            parse_checksum("crc32 AAA="),
            Err(HeaderError::ChecksumLength(Algorithm::Crc32))
        );
        assert_eq!(
            parse_checksum("sha1 AAAA"),
            Err(HeaderError::ChecksumLength(Algorithm::Sha1))
        );
        assert_eq!(
            parse_checksum(&format!("md5 {}", "A".repeat(100_000))),
            Err(HeaderError::ChecksumLength(Algorithm::Md5))
        );
        for bad in [
            "",
            "sha1",
            "sha1 ",
            " AAAA",
            "sha1 not*base64!!!!",
            "sha1 Kq5s Nclp",
        ] {
            assert_eq!(
                parse_checksum(bad),
                Err(HeaderError::MalformedChecksum),
                "{bad:?}"
            );
        }
        assert_eq!(
            HeaderError::ChecksumLength(Algorithm::Sha256).to_string(),
            "Upload-Checksum digest has the wrong length for sha256"
        );
    }

    // ---- range ----------------------------------------------------------------------------

    #[test]
    fn range_basic() {
        use ByteRange::*;
        assert_eq!(parse_range("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(parse_range("bytes=2-5", 10), Partial { start: 2, end: 5 });
        assert_eq!(parse_range("bytes=3-", 10), Partial { start: 3, end: 9 });
        assert_eq!(parse_range("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(parse_range("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("bytes=0-999", 10), Partial { start: 0, end: 9 });
        assert_eq!(parse_range("Bytes=1-1", 10), Partial { start: 1, end: 1 });
        assert_eq!(
            parse_range(" bytes= 9-9 ", 10),
            Partial { start: 9, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=0-99999999999999999999999", 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=-99999999999999999999999", 10),
            Partial { start: 0, end: 9 }
        );
    }

    #[test]
    fn range_unsatisfiable() {
        use ByteRange::*;
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-", 5), Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 10),
            Unsatisfiable
        );
    }

    #[test]
    fn range_ignored() {
        for v in [
            "",
            "bytes=1-2,4-5",
            "bytes=0-1,",
            "items=0-1",
            "bytes 0-1",
            "bytes=",
            "bytes=-",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-+1",
            "bytes=+1-2",
            "bytes=1 - 2",
            "bytes=0x1-2",
            "bytes=1-2-3",
            "byteś=1-2",
            "é",
        ] {
            assert_eq!(parse_range(v, 10), ByteRange::Full, "{v:?}");
        }
    }

    // ---- forwarded-for ----------------------------------------------------------------------

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn forwarded_for_lists_every_hop_client_first() {
        assert_eq!(
            forwarded_for(
                Some(
                    r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#
                ),
                None
            ),
            vec![ip("192.0.2.60"), ip("2001:db8:cafe::17")]
        );
        assert_eq!(
            forwarded_for(Some("for=unknown, for=_hidden, for=\"10.0.0.1:80\""), None),
            vec![None, None, ip("10.0.0.1")]
        );
        assert_eq!(
            forwarded_for(Some("For=\"1.2.3.4\""), Some("5.6.7.8")),
            vec![ip("1.2.3.4")],
            "Forwarded wins over X-Forwarded-For"
        );
    }

    #[test]
    fn x_forwarded_for_is_the_fallback() {
        assert_eq!(
            forwarded_for(None, Some(" 203.0.113.7 , 2001:db8::1,[::1]:8080, junk")),
            vec![ip("203.0.113.7"), ip("2001:db8::1"), ip("::1"), None]
        );
        assert_eq!(
            forwarded_for(Some("proto=https"), Some("9.9.9.9")),
            vec![ip("9.9.9.9")],
            "a Forwarded header without for= leaves the address to X-Forwarded-For"
        );
        assert_eq!(forwarded_for(None, None), vec![]);
    }

    #[test]
    fn forwarded_for_malformed_is_empty() {
        // A port makes the node a quoted-string (RFC 7239 §6): ':' is not a token character.
        for bad in [
            "for=1.2.3.4:80",
            "for",
            "for=\"1.2.3.4",
            "for=1.2.3.4 x",
            "=1.2.3.4",
            "for=a b",
        ] {
            assert_eq!(forwarded_for(Some(bad), None), vec![], "{bad:?}");
        }
    }

    // ---- forwarded ------------------------------------------------------------------------

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn forwarded_header_wins() {
        assert_eq!(
            forwarded_origin(
                Some("for=192.0.2.60;proto=https;host=example.com, host=evil.com;proto=http"),
                Some("other.com"),
                Some("http"),
            ),
            (some("example.com"), some("https"))
        );
        assert_eq!(
            forwarded_origin(
                Some(r#"Host="[2001:db8::1]:8443"; Proto=HTTPS; for="[::1]:1,2""#),
                None,
                None
            ),
            (some("[2001:db8::1]:8443"), some("https"))
        );
        assert_eq!(
            forwarded_origin(Some(r#"host="ex\ample.com""#), None, None),
            (some("example.com"), None)
        );
    }

    #[test]
    fn forwarded_falls_back_per_part() {
        // Forwarded has no host=: X-Forwarded-Host is used; proto comes from Forwarded.
        assert_eq!(
            forwarded_origin(Some("for=1.2.3.4;proto=http"), Some("x.com"), Some("https")),
            (some("x.com"), some("http"))
        );
        // An invalid Forwarded host decides the host (None) rather than falling back.
        assert_eq!(
            forwarded_origin(Some(r#"host="a b""#), Some("x.com"), None),
            (None, None)
        );
    }

    #[test]
    fn forwarded_malformed_is_ignored() {
        for bad in [
            "host",
            "host=\"unterminated",
            "host=a b",
            "=x",
            "host=x;;",
            "host=<script>",
            "for=x;,host=y",
        ] {
            assert_eq!(
                forwarded_origin(Some(bad), Some("x.com"), Some("https")),
                (some("x.com"), some("https")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn x_forwarded_headers() {
        assert_eq!(
            forwarded_origin(
                None,
                Some(" a.example.com:8080 , b.com"),
                Some("HTTPS, http")
            ),
            (some("a.example.com:8080"), some("https"))
        );
        assert_eq!(forwarded_origin(None, None, None), (None, None));
        assert_eq!(
            forwarded_origin(None, Some("evil.com/path"), Some("ftp")),
            (None, None)
        );
        assert_eq!(
            forwarded_origin(None, Some("a@b"), Some("javascript")),
            (None, None)
        );
        assert_eq!(forwarded_origin(None, Some(""), Some("")), (None, None));
        assert_eq!(
            forwarded_origin(None, Some(&"a".repeat(1000)), None),
            (None, None)
        );
        assert_eq!(
            forwarded_origin(Some(""), Some("h.com"), None),
            (some("h.com"), None)
        );
    }

    // ---- content type / disposition -------------------------------------------------------

    #[test]
    fn inline_types_allowed() {
        assert_eq!(inline_content_type("image/png"), some("image/png"));
        assert_eq!(inline_content_type("IMAGE/JPEG"), some("image/jpeg"));
        assert_eq!(
            inline_content_type("text/plain; charset=utf-8"),
            some("text/plain")
        );
        assert_eq!(inline_content_type(" video/mp4 "), some("video/mp4"));
        assert_eq!(
            inline_content_type("audio/ogg;codecs=opus"),
            some("audio/ogg")
        );
        assert_eq!(
            inline_content_type("application/pdf"),
            some("application/pdf")
        );
    }

    #[test]
    fn inline_types_refused() {
        for bad in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/xml",
            "application/javascript",
            "text/javascript",
            "application/octet-stream",
            "",
            "image",
            "video/",
            "/mp4",
            "video/*",
            "audio/x y",
            "video/mp4\r\nx: y",
            "text/plainx",
            "image/png/x",
        ] {
            assert_eq!(inline_content_type(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn disposition_basic() {
        assert_eq!(content_disposition(true, None), "inline");
        assert_eq!(content_disposition(false, None), "attachment");
        assert_eq!(
            content_disposition(false, Some("report.pdf")),
            "attachment; filename=\"report.pdf\""
        );
        assert_eq!(content_disposition(true, Some("")), "inline");
        assert_eq!(content_disposition(true, Some("\r\n\u{7}")), "inline");
    }

    #[test]
    fn disposition_hostile_ascii() {
        assert_eq!(
            content_disposition(false, Some("a\"b\\c/d.txt")),
            "attachment; filename=\"a_b_c_d.txt\""
        );
        assert_eq!(
            content_disposition(false, Some("evil\r\nSet-Cookie: x=1.txt")),
            "attachment; filename=\"evil__Set-Cookie: x=1.txt\""
        );
    }

    #[test]
    fn disposition_non_ascii() {
        assert_eq!(
            content_disposition(false, Some("résumé 😀.txt")),
            "attachment; filename=\"r_sum_ _.txt\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20%F0%9F%98%80.txt"
        );
        // Control characters are dropped from the UTF-8 form, replaced in the fallback.
        assert_eq!(
            content_disposition(true, Some("é\n\"x\".txt")),
            "inline; filename=\"___x_.txt\"; filename*=UTF-8''%C3%A9%22x%22.txt"
        );
    }

    #[test]
    fn disposition_length_cut() {
        let long = "a".repeat(1000);
        let v = content_disposition(false, Some(&long));
        assert_eq!(v, format!("attachment; filename=\"{}\"", "a".repeat(255)));
        let long_utf8 = "é".repeat(200); // 400 bytes
        let v = content_disposition(false, Some(&long_utf8));
        let star = v.split("filename*=UTF-8''").nth(1).expect("has filename*");
        assert_eq!(star, "%C3%A9".repeat(127)); // 254 bytes: 255 would split a char
        assert!(v.contains(&format!("filename=\"{}\"", "_".repeat(200))));
        // No header-breaking bytes ever appear.
        assert!(!v.bytes().any(|b| b.is_ascii_control()));
    }

    // ---- dates ----------------------------------------------------------------------------

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        assert_eq!(
            http_date(MAX_HTTP_DATE_SECS + 1),
            http_date(MAX_HTTP_DATE_SECS)
        );
    }

    #[test]
    fn error_messages_are_single_lines_naming_the_header() {
        let errors = [
            HeaderError::InvalidInteger("Upload-Offset"),
            HeaderError::IntegerOverflow("Upload-Length"),
            HeaderError::InvalidDeferLength,
            HeaderError::MetadataTooLarge(1),
            HeaderError::InvalidMetadataKey,
            HeaderError::DuplicateMetadataKey,
            HeaderError::MalformedMetadataPair,
            HeaderError::InvalidMetadataValue,
            HeaderError::InvalidConcat,
            HeaderError::ConcatWithoutUploads,
            HeaderError::TooManyConcatUploads,
            HeaderError::UnsupportedChecksumAlgorithm("x\ny".into()),
            HeaderError::MalformedChecksum,
            HeaderError::ChecksumLength(Algorithm::Md5),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.starts_with("Upload-"), "{s}");
            assert!(!s.contains('\n') && s.len() < 100, "{s}");
        }
    }
}
