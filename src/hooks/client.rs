//! The HTTP side of hooks: one bounded POST of a JSON body, one capped answer.
//!
//! hyper's pooled HTTP/1.1 client (the client half of the stack tusk already serves with), plain
//! `http://` only. Every call is bounded by one timeout covering connect, answer and body, and
//! the answer body is read up to [`MAX_ANSWER`]: a hook server that is slow, down, or answers
//! with something huge costs the request at most the timeout.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The largest answer body read from a hook server; a larger one is malformed.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Why a hook call produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No complete answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// Connecting or talking to the hook server failed.
    #[error("unreachable")]
    Unreachable,
    /// The hook server answered with a status that is not 2xx.
    #[error("answered status {0}")]
    Status(u16),
    /// The answer body was larger than [`MAX_ANSWER`].
    #[error("answer too large")]
    TooLarge,
    /// The answer was not the JSON the contract describes.
    #[error("malformed answer")]
    Malformed,
}

/// A pooled client for hook endpoints.
#[derive(Debug, Clone)]
pub struct HookClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HookClient {
    /// A client whose every call ends within `timeout`.
    pub fn new(timeout: Duration) -> HookClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HookClient { client, timeout }
    }

    /// POST `body` (JSON) to `url`; the 2xx answer's body, at most [`MAX_ANSWER`] bytes.
    ///
    /// # Errors
    /// Timeout, connection failure, a non-2xx status, or an oversized answer.
    pub async fn post(&self, url: &Uri, body: Bytes) -> Result<Bytes, CallError> {
        tokio::time::timeout(self.timeout, self.exchange(url, body))
            .await
            .unwrap_or(Err(CallError::Timeout))
    }

    async fn exchange(&self, url: &Uri, body: Bytes) -> Result<Bytes, CallError> {
        let request = Request::post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("tusk/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|_| CallError::Unreachable)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|_| CallError::Unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(CallError::Status(status.as_u16()));
        }
        let collected = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    CallError::TooLarge
                } else {
                    CallError::Unreachable
                }
            })?;
        Ok(collected.to_bytes())
    }
}
