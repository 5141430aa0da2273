//! A small S3 REST client: signed path-style requests over hyper's pooled HTTP/1.1 client.
//!
//! Only plain `http://` endpoints (the client half of the stack tusk already has, as in
//! `hooks/client.rs`); every exchange is bounded by one timeout. Failures are sorted the way
//! the store needs them: the object store unreachable or failing on its side (connection
//! refused or reset: [`S3Error::Transport`]; timeout, 5xx: [`S3Error::Unavailable`]) is worth
//! a retry; an answer refusing the request is [`S3Error::Status`] with S3's error code.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, HOST, USER_AGENT};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::sigv4::{self, Canonical, Signer};
use super::xml;

/// Why a request to the object store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// Timed out, or failing on its side (5xx): worth a retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The connection failed (refused, reset, closed early): worth a retry later too. The
    /// client already retried once unless the request was a POST (see [`S3Client::send`]).
    #[error("{0}")]
    Transport(String),
    /// The store answered with a refusal (4xx, or an error document).
    #[error("{code}{}{message} (HTTP {status})", if .message.is_empty() { "" } else { ": " })]
    Status {
        /// HTTP status.
        status: u16,
        /// S3's error code (`NoSuchKey`, …), or the status reason when the answer had no body.
        code: String,
        /// S3's message, possibly empty.
        message: String,
    },
    /// An answer this client cannot make sense of.
    #[error("unexpected answer from the object store: {0}")]
    Protocol(String),
}

impl S3Error {
    /// Whether the answer was 404 for a key or an upload. A missing bucket is not "not
    /// found" for the objects in it: that is a misconfiguration to report.
    pub fn is_not_found(&self) -> bool {
        matches!(self, S3Error::Status { status: 404, code, .. } if code != "NoSuchBucket")
    }

    /// The S3 error code, when the store answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// One request, before signing.
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    key: Option<String>,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Call {
    /// A request on the object `key` of the bucket, or on the bucket itself when `None`.
    pub fn new(method: Method, key: Option<&str>) -> Call {
        Call {
            method,
            key: key.map(str::to_owned),
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Add a query parameter (`""` for a bare flag such as `uploads`).
    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.query.push((name, value.into()));
        self
    }

    /// Add a header (lowercase name); every added header is signed.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: Bytes) -> Call {
        self.body = body;
        self
    }
}

/// A buffered answer with a 2xx status.
#[derive(Debug)]
pub struct Answer {
    /// Answer headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as UTF-8 text (S3's XML documents).
    pub fn text(&self) -> Result<&str, S3Error> {
        std::str::from_utf8(&self.body)
            .map_err(|_| S3Error::Protocol("answer body is not UTF-8".to_owned()))
    }
}

/// Signed requests to one bucket.
#[derive(Debug, Clone)]
pub struct S3Client {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`, no trailing slash.
    origin: String,
    /// The `host` header: `host[:port]` exactly as in the endpoint.
    host: String,
    /// Path of the endpoint (S3 behind a path prefix), no trailing slash.
    base_path: String,
    bucket: String,
    signer: Signer,
    timeout: Duration,
}

impl S3Client {
    /// A client of `bucket` at `endpoint` (`http://host[:port][/path]`).
    ///
    /// # Errors
    /// When the endpoint is not a plain-HTTP URL or the bucket is empty.
    pub fn new(
        endpoint: &str,
        bucket: &str,
        signer: Signer,
        timeout: Duration,
    ) -> Result<S3Client, String> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|err| format!("s3.endpoint {endpoint:?} is not a URL: {err}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "s3.endpoint {endpoint:?}: https is not supported by tusk's S3 client yet; \
                     use an http endpoint (or a local TLS-terminating proxy)"
                ))
            }
            _ => return Err(format!("s3.endpoint {endpoint:?} must start with http://")),
        }
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("s3.endpoint {endpoint:?} has no host"))?;
        if host.contains('@') {
            return Err("s3.endpoint must not carry credentials; use s3.access_key".to_owned());
        }
        if bucket.is_empty() || bucket.contains('/') {
            return Err(format!("s3.bucket {bucket:?} is not a bucket name"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(S3Client {
            http,
            origin: format!("http://{host}"),
            host,
            base_path,
            bucket: bucket.to_owned(),
            signer,
            timeout,
        })
    }

    /// The time allowed for one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `call` and read the whole answer, all within the timeout.
    ///
    /// A connection failure is retried once at once, except for POST (CreateMultipartUpload,
    /// CompleteMultipartUpload), which is not idempotent: a pooled keep-alive connection the
    /// store closed just as it was reused fails a request that never reached the store, and
    /// that should not turn into a 503 for the tus client. Every other request tusk sends
    /// (GET, HEAD, PUT of an object or a part, DELETE) may be repeated.
    ///
    /// # Errors
    /// See [`S3Error`]; a non-2xx answer is an error.
    pub async fn send(&self, call: Call) -> Result<Answer, S3Error> {
        if call.method == Method::POST {
            return self.send_once(call).await;
        }
        match self.send_once(call.clone()).await {
            Err(S3Error::Transport(_)) => self.send_once(call).await,
            other => other,
        }
    }

    async fn send_once(&self, call: Call) -> Result<Answer, S3Error> {
        let exchange = async {
            let response = self.exchange(call).await?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|err| self.broken("reading an answer", &err))?
                .to_bytes();
            Ok(Answer {
                headers: parts.headers,
                body,
            })
        };
        self.bounded(exchange).await
    }

    /// Send `call` and return the answer as soon as its head is in (within the timeout), the
    /// body left to stream: for downloads, which may rightly take longer than one timeout.
    ///
    /// # Errors
    /// See [`S3Error`]; a non-2xx answer is an error.
    pub async fn send_streaming(&self, call: Call) -> Result<Response<Incoming>, S3Error> {
        // Retried like `send` (only GETs stream).
        match self.bounded(self.exchange(call.clone())).await {
            Err(S3Error::Transport(_)) => self.bounded(self.exchange(call)).await,
            other => other,
        }
    }

    /// Run `exchange` within the timeout.
    async fn bounded<T>(
        &self,
        exchange: impl std::future::Future<Output = Result<T, S3Error>>,
    ) -> Result<T, S3Error> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(S3Error::Unavailable(format!(
                "no answer from {} within {:?}",
                self.origin, self.timeout
            ))),
        }
    }

    /// Sign and send `call`; the answer when 2xx, else the error it carries.
    async fn exchange(&self, call: Call) -> Result<Response<Incoming>, S3Error> {
        let method = call.method.clone();
        let request = self.build(call)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|err| self.broken("sending a request", &err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // An error answer is small; a body that does not arrive in time is caught by the
        // caller's timeout.
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(status_error(&method, status, &body))
    }

    /// The signed hyper request for `call`.
    fn build(&self, call: Call) -> Result<Request<Full<Bytes>>, S3Error> {
        let mut path = format!("{}/{}", self.base_path, self.bucket);
        if let Some(key) = &call.key {
            path.push('/');
            path.push_str(key);
        }
        let path = sigv4::encode_path(&path);
        let query: Vec<(&str, &str)> = call.query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let headers: Vec<(&str, &str)> =
            call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Bodies are not hashed (see sigv4::UNSIGNED_PAYLOAD); empty ones get the real hash,
        // which costs nothing.
        let payload_hash = if call.body.is_empty() {
            sigv4::EMPTY_SHA256
        } else {
            sigv4::UNSIGNED_PAYLOAD
        };
        let signed = self.signer.sign(&Canonical {
            method: call.method.as_str(),
            path: &path,
            query: &query,
            headers: &headers,
            host: &self.host,
            payload_hash,
        });

        let mut uri = format!("{}{}", self.origin, path);
        for (i, (name, value)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(&sigv4::encode(name, true));
            uri.push('=');
            uri.push_str(&sigv4::encode(value, true));
        }
        let mut builder = Request::builder()
            .method(call.method)
            .uri(uri)
            .header(HOST, &self.host)
            .header(USER_AGENT, concat!("tusk/", env!("CARGO_PKG_VERSION")))
            .header("x-amz-date", signed.amz_date)
            .header("x-amz-content-sha256", payload_hash)
            .header(AUTHORIZATION, signed.authorization);
        for (name, value) in &call.headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| S3Error::Protocol(format!("header {name} is not valid")))?;
            builder = builder.header(HeaderName::from_static(name), value);
        }
        builder
            .body(Full::new(call.body))
            .map_err(|err| S3Error::Protocol(format!("cannot build a request: {err}")))
    }

    /// An I/O failure talking to the store, with its causes (hyper's top-level error alone
    /// says little).
    fn broken(&self, doing: &str, err: &(dyn std::error::Error + 'static)) -> S3Error {
        let mut reason = format!("{doing} to {} failed: {err}", self.origin);
        let mut source = err.source();
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        S3Error::Transport(reason)
    }
}

/// The error a non-2xx answer stands for.
fn status_error(method: &Method, status: StatusCode, body: &[u8]) -> S3Error {
    let text = std::str::from_utf8(body).unwrap_or("");
    let code = xml::text(text, "Code").unwrap_or_else(|| {
        // HEAD answers have no body: name the usual cause.
        match (method, status.as_u16()) {
            (&Method::HEAD, 404) => "NotFound".to_owned(),
            _ => status.canonical_reason().unwrap_or("Error").to_owned(),
        }
    });
    let message = xml::text(text, "Message").unwrap_or_default();
    let server_side = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
    if server_side {
        let message = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        S3Error::Unavailable(format!(
            "object store answered {} {code}{message}",
            status.as_u16()
        ))
    } else {
        S3Error::Status {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// An error document in a 200 answer: S3 may answer CompleteMultipartUpload so, having sent
/// the status before it knew the outcome.
pub fn embedded_error(body: &str) -> Option<S3Error> {
    let error = xml::elements(body, "Error").into_iter().next()?;
    let code = xml::text(error, "Code").unwrap_or_else(|| "Error".to_owned());
    let message = xml::text(error, "Message").unwrap_or_default();
    Some(
        if matches!(
            code.as_str(),
            "InternalError" | "SlowDown" | "ServiceUnavailable"
        ) {
            S3Error::Unavailable(format!("object store answered {code}: {message}"))
        } else {
            S3Error::Status {
                status: 200,
                code,
                message,
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        let signer = Signer::new("a", "b", "us-east-1");
        let timeout = Duration::from_secs(1);
        assert!(S3Client::new("https://s3.example", "b", signer.clone(), timeout).is_err());
        assert!(S3Client::new("ftp://x", "b", signer.clone(), timeout).is_err());
        assert!(S3Client::new("http://127.0.0.1:9000", "", signer.clone(), timeout).is_err());
        let client = S3Client::new("http://127.0.0.1:9000/s3/", "b", signer, timeout).unwrap();
        assert_eq!(client.host, "127.0.0.1:9000");
        assert_eq!(client.base_path, "/s3");
    }

    #[test]
    fn statuses_are_sorted() {
        let body = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>";
        let err = status_error(&Method::GET, StatusCode::NOT_FOUND, body);
        assert!(err.is_not_found());
        assert_eq!(err.code(), Some("NoSuchKey"));
        assert_eq!(err.to_string(), "NoSuchKey: gone (HTTP 404)");
        let err = status_error(&Method::HEAD, StatusCode::NOT_FOUND, b"");
        assert_eq!(err.code(), Some("NotFound"));
        assert_eq!(err.to_string(), "NotFound (HTTP 404)");
        let err = status_error(&Method::PUT, StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(matches!(err, S3Error::Unavailable(_)));
        let err = embedded_error("<Error><Code>InternalError</Code></Error>").unwrap();
        assert!(matches!(err, S3Error::Unavailable(_)));
        assert!(embedded_error("<CompleteMultipartUploadResult/>").is_none());
    }
}
