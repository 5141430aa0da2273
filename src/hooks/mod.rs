//! HTTP hooks: tusk tells an operator's HTTP server about upload events and asks it before
//! creating, finishing, terminating, or serving an upload (pre-access, on every HEAD, PATCH and
//! GET of an upload).
//!
//! Each event is a `POST` of a JSON [`Payload`] (the event, the upload record, its decoded
//! metadata and the request) to the configured endpoint. The hook server answers 2xx with an
//! empty body or a JSON [`Answer`]: `{"reject": {"status": 403, "message": "..."}}` refuses a
//! pre-* event (4xx statuses only), `{"metadata": {...}}` replaces a new upload's metadata
//! (pre-create only).
//!
//! The rule when the hook server is down, slow (past `hooks.timeout`), answers non-2xx,
//! malformed JSON or more than 64 KiB: a pre-* event fails closed (the client gets 503 and
//! nothing changes); a post-* event is sent again `hooks.retries` times with doubling backoff,
//! then logged. post-finish and post-terminate are delivered at least once: they wait in a
//! durable [`outbox`] until a 2xx, are tried again every `hooks.redeliver_interval` after
//! their retries, and at every start. Every payload carries an `event_id` (the same on every
//! attempt of one event) for receivers to deduplicate on. post-receive (progress) is best effort: at most once per
//! `hooks.progress_interval` per upload, through a bounded queue that drops it when full and
//! never retries it (the next one supersedes it), so it never slows the data path.

pub mod client;
mod delivery;
pub mod outbox;

use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Uri};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::client::{CallError, HookClient};
use self::delivery::{redeliver, spawn_delivery, Outgoing};
use self::outbox::{new_event_id, Outbox};
use crate::config::HookSettings;
use crate::error::{Result, TusError};
use crate::metrics::Metrics;
use crate::protocol::headers::Metadata;
use crate::protocol::RequestParts;
use crate::session::SessionStore;
use crate::upload::{UploadId, UploadInfo};

/// Progress events waiting to be sent; beyond this they are dropped.
const PROGRESS_QUEUE: usize = 256;
/// Uploads whose last progress time is remembered (for the per-upload throttle).
const PROGRESS_MEMORY: usize = 16 * 1024;
/// Longest reject message passed on to a client, in characters.
const MAX_MESSAGE: usize = 256;

/// The events a hook can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookEvent {
    /// Before an upload is created; may reject it or replace its metadata.
    PreCreate,
    /// After an upload was created.
    PostCreate,
    /// Progress while a body arrives (throttled).
    PostReceive,
    /// When the last byte is in, before it is committed and the client hears of it; a
    /// rejection discards the upload.
    PreFinish,
    /// After an upload finished.
    PostFinish,
    /// Before DELETE removes an upload; may reject it.
    PreTerminate,
    /// After DELETE removed an upload.
    PostTerminate,
    /// Before every HEAD, PATCH and GET of an upload; may reject it.
    PreAccess,
}

impl HookEvent {
    /// Every event, in lifecycle order (the default of `hooks.events`).
    pub const ALL: [HookEvent; 8] = [
        HookEvent::PreCreate,
        HookEvent::PostCreate,
        HookEvent::PostReceive,
        HookEvent::PreFinish,
        HookEvent::PostFinish,
        HookEvent::PreTerminate,
        HookEvent::PostTerminate,
        HookEvent::PreAccess,
    ];

    /// The event's name as in the configuration and the payload.
    pub fn name(self) -> &'static str {
        match self {
            HookEvent::PreCreate => "pre-create",
            HookEvent::PostCreate => "post-create",
            HookEvent::PostReceive => "post-receive",
            HookEvent::PreFinish => "pre-finish",
            HookEvent::PostFinish => "post-finish",
            HookEvent::PreTerminate => "pre-terminate",
            HookEvent::PostTerminate => "post-terminate",
            HookEvent::PreAccess => "pre-access",
        }
    }
}

/// The request an event came from, as a hook sees it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    /// The effective method (after X-HTTP-Method-Override).
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The client's address, `ip:port`.
    pub remote_addr: Option<String>,
    /// The allowed headers (lowercase names; repeated headers joined with ", ").
    pub headers: BTreeMap<String, String>,
}

/// What a hook receives.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    /// The event.
    pub event: HookEvent,
    /// Unique per event, the same on every attempt to deliver it (also after a restart):
    /// what a receiver deduplicates on.
    pub event_id: &'a str,
    /// The upload record (for post-receive, `offset` is what has arrived so far).
    pub upload: &'a UploadInfo,
    /// The upload's metadata decoded (valueless keys are `null`; values as UTF-8, lossily).
    pub metadata: BTreeMap<String, Option<String>>,
    /// The request.
    pub request: &'a RequestSummary,
}

/// What a hook may answer (an empty 2xx body means "go ahead").
#[derive(Debug, Default, Deserialize)]
pub struct Answer {
    /// Refuse a pre-* event.
    pub reject: Option<Rejection>,
    /// pre-create only: the new upload's metadata, replacing what the client sent.
    pub metadata: Option<BTreeMap<String, Option<String>>>,
}

/// A refusal, passed on to the client.
#[derive(Debug, Deserialize)]
pub struct Rejection {
    /// A 4xx status.
    pub status: u16,
    /// Plain text for the client.
    #[serde(default)]
    pub message: String,
}

/// The hook service, held in `AppState`; cheap to clone. Off when no endpoint is configured.
#[derive(Clone, Default)]
pub struct Hooks {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let events: Vec<&str> = self
            .inner
            .iter()
            .flat_map(|i| i.endpoints.keys().map(|e| e.name()))
            .collect();
        f.debug_struct("Hooks").field("events", &events).finish()
    }
}

struct Inner {
    settings: HookSettings,
    endpoints: BTreeMap<HookEvent, Uri>,
    forward: Vec<HeaderName>,
    client: HookClient,
    metrics: Metrics,
    sessions: Arc<dyn SessionStore>,
    progress: mpsc::Sender<(Uri, Bytes)>,
    last_progress: Mutex<LruCache<UploadId, Instant>>,
    /// Where post-finish and post-terminate wait for their 2xx (`None` when both are off).
    outbox: Option<Outbox>,
    /// Outbox events a task is sending right now: the redelivery sweep leaves them alone.
    in_flight: Mutex<HashSet<String>>,
}

/// The events that go through the outbox (at-least-once); other post-* events are sent at
/// most once.
const DURABLE: [HookEvent; 2] = [HookEvent::PostFinish, HookEvent::PostTerminate];

/// Headers every hook sees (besides `Upload-*` and `hooks.forward_headers`).
const SAFE_HEADERS: [&str; 6] = [
    "content-length",
    "content-type",
    "origin",
    "user-agent",
    "x-request-id",
    "tus-resumable",
];

impl Hooks {
    /// The hooks `settings` configure, their outbox in `outbox_dir` (`sync`: fsync'd); must
    /// run inside the tokio runtime (it starts the progress sender and the outbox's
    /// redelivery, which first sends what the last run left).
    ///
    /// # Errors
    /// When post-finish or post-terminate is on and the outbox directory cannot be opened.
    pub fn new(
        settings: &HookSettings,
        outbox_dir: &Path,
        sync: bool,
        metrics: Metrics,
        sessions: Arc<dyn SessionStore>,
    ) -> std::io::Result<Hooks> {
        let endpoints: BTreeMap<HookEvent, Uri> = settings
            .events
            .iter()
            .filter_map(|&event| {
                let url = settings.urls.get(&event).unwrap_or(&settings.url);
                url.parse::<Uri>().ok().map(|uri| (event, uri))
            })
            .filter(|(_, uri)| uri.host().is_some())
            .collect();
        if endpoints.is_empty() {
            return Ok(Hooks::default());
        }
        let outbox = if DURABLE.iter().any(|e| endpoints.contains_key(e)) {
            Some(Outbox::open(outbox_dir, sync)?)
        } else {
            None
        };
        let (progress, queue) = mpsc::channel(PROGRESS_QUEUE);
        let inner = Arc::new(Inner {
            settings: settings.clone(),
            endpoints,
            forward: settings
                .forward_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            client: HookClient::new(settings.timeout.0),
            metrics,
            sessions,
            progress,
            last_progress: Mutex::new(LruCache::new(
                NonZeroUsize::new(PROGRESS_MEMORY).unwrap_or(NonZeroUsize::MIN),
            )),
            outbox,
            in_flight: Mutex::default(),
        });
        tokio::spawn(send_progress(Arc::downgrade(&inner), queue));
        if inner.outbox.is_some() {
            tokio::spawn(redeliver(Arc::downgrade(&inner)));
        }
        Ok(Hooks { inner: Some(inner) })
    }

    /// The service with `event` enabled, if it is.
    fn enabled(&self, event: HookEvent) -> Option<&Arc<Inner>> {
        self.inner
            .as_ref()
            .filter(|inner| inner.endpoints.contains_key(&event))
    }

    /// pre-create: may refuse the upload or replace `info.metadata`.
    ///
    /// # Errors
    /// The hook's rejection, or 503 when it fails.
    pub async fn pre_create(&self, info: &mut UploadInfo, request: &RequestParts) -> Result<()> {
        let Some(inner) = self.enabled(HookEvent::PreCreate) else {
            return Ok(());
        };
        let answer = inner.ask(HookEvent::PreCreate, info, request).await?;
        if let Some(metadata) = answer.metadata {
            info.metadata = encode_metadata(&metadata).ok_or_else(|| {
                inner.failed(HookEvent::PreCreate, &info.id, CallError::Malformed)
            })?;
        }
        Ok(())
    }

    /// pre-access: may refuse a HEAD, PATCH or GET of upload `id` (other methods pass). An
    /// unknown upload is not asked about: the handler answers 404 or 410.
    ///
    /// # Errors
    /// The hook's rejection, or 503 when it fails.
    pub async fn pre_access(
        &self,
        method: &Method,
        id: &UploadId,
        request: &RequestParts,
    ) -> Result<()> {
        let Some(inner) = self.enabled(HookEvent::PreAccess) else {
            return Ok(());
        };
        if ![Method::HEAD, Method::PATCH, Method::GET].contains(method) {
            return Ok(());
        }
        let Some(info) = inner.sessions.get(id).await? else {
            return Ok(());
        };
        inner.ask(HookEvent::PreAccess, &info, request).await?;
        Ok(())
    }

    /// pre-access for upload `info` read on behalf of another request, whatever its method
    /// (a partial upload joined into the final upload a POST creates).
    ///
    /// # Errors
    /// The hook's rejection, or 503 when it fails.
    pub async fn pre_access_to(&self, info: &UploadInfo, request: &RequestParts) -> Result<()> {
        self.gate(HookEvent::PreAccess, info, request).await
    }

    /// pre-finish: `info` is complete; may refuse it.
    ///
    /// # Errors
    /// The hook's rejection, or 503 when it fails.
    pub async fn pre_finish(&self, info: &UploadInfo, request: &RequestParts) -> Result<()> {
        self.gate(HookEvent::PreFinish, info, request).await
    }

    /// pre-terminate: may refuse a DELETE.
    ///
    /// # Errors
    /// The hook's rejection, or 503 when it fails.
    pub async fn pre_terminate(&self, info: &UploadInfo, request: &RequestParts) -> Result<()> {
        self.gate(HookEvent::PreTerminate, info, request).await
    }

    async fn gate(
        &self,
        event: HookEvent,
        info: &UploadInfo,
        request: &RequestParts,
    ) -> Result<()> {
        match self.enabled(event) {
            Some(inner) => inner.ask(event, info, request).await.map(drop),
            None => Ok(()),
        }
    }

    /// post-create, in the background (at most once: it is not in the outbox).
    pub fn post_create(&self, info: &UploadInfo, request: &RequestParts) {
        if let Some((inner, outgoing)) = self.outgoing(HookEvent::PostCreate, info, request) {
            spawn_delivery(inner, outgoing, false);
        }
    }

    /// post-finish: queued durably (call it right after the commit that finished `info`,
    /// before answering), then sent in the background until a 2xx.
    pub async fn post_finish(&self, info: &UploadInfo, request: &RequestParts) {
        self.notify_durably(HookEvent::PostFinish, info, request)
            .await;
    }

    /// post-terminate: queued durably (call it right after the removal, before answering),
    /// then sent in the background until a 2xx.
    pub async fn post_terminate(&self, info: &UploadInfo, request: &RequestParts) {
        self.notify_durably(HookEvent::PostTerminate, info, request)
            .await;
    }

    /// Store an outbox event, then send it from a task of its own.
    async fn notify_durably(&self, event: HookEvent, info: &UploadInfo, request: &RequestParts) {
        let Some((inner, outgoing)) = self.outgoing(event, info, request) else {
            return;
        };
        let queued =
            inner.outbox.is_some() && inner.enqueue(&outgoing.event_id, &outgoing.body).await;
        spawn_delivery(inner, outgoing, queued);
    }

    /// A post-* event ready to send, with a new event id; `None` when the event is off.
    fn outgoing(
        &self,
        event: HookEvent,
        info: &UploadInfo,
        request: &RequestParts,
    ) -> Option<(Arc<Inner>, Outgoing)> {
        let inner = self.enabled(event)?;
        let event_id = new_event_id();
        let body = inner.payload(event, &event_id, info, &inner.summarize(request))?;
        let url = inner.endpoints.get(&event)?.clone();
        let outgoing = Outgoing {
            event,
            url,
            event_id,
            body,
            upload: info.id.clone(),
        };
        Some((Arc::clone(inner), outgoing))
    }

    /// A progress reporter for one body into `info` (`None` when post-receive is off).
    pub fn progress(&self, info: &UploadInfo, request: &RequestParts) -> Option<Progress> {
        let inner = self.enabled(HookEvent::PostReceive)?;
        Some(Progress {
            inner: Arc::clone(inner),
            info: info.clone(),
            request: inner.summarize(request),
            next_due: Mutex::new(Instant::now()),
        })
    }
}

/// Reports the progress of one body: cheap enough to call for every frame.
pub struct Progress {
    inner: Arc<Inner>,
    info: UploadInfo,
    request: RequestSummary,
    next_due: Mutex<Instant>,
}

impl Progress {
    /// `offset` bytes of the upload have arrived: queue a post-receive if the upload's
    /// interval has passed. Never waits: a full queue drops the event.
    pub fn tick(&self, offset: u64) {
        let now = Instant::now();
        let interval = self.inner.settings.progress_interval.0;
        {
            let mut due = self.next_due.lock().unwrap_or_else(|p| p.into_inner());
            if now < *due {
                return;
            }
            *due = now + interval;
        }
        {
            // Per upload, not per request: a client sending many small PATCHes is throttled too.
            let mut last = self
                .inner
                .last_progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last
                .get(&self.info.id)
                .is_some_and(|&sent| now.duration_since(sent) < interval)
            {
                return;
            }
            last.put(self.info.id.clone(), now);
        }
        let mut info = self.info.clone();
        info.offset = offset;
        let Some(url) = self.inner.endpoints.get(&HookEvent::PostReceive) else {
            return;
        };
        let Some(body) = self.inner.payload(
            HookEvent::PostReceive,
            &new_event_id(),
            &info,
            &self.request,
        ) else {
            return;
        };
        if self.inner.progress.try_send((url.clone(), body)).is_err() {
            self.inner.count(HookEvent::PostReceive, "dropped");
        }
    }
}

/// Send queued progress events one at a time until the service is gone.
async fn send_progress(inner: std::sync::Weak<Inner>, mut queue: mpsc::Receiver<(Uri, Bytes)>) {
    while let Some((url, body)) = queue.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.call(&url, body).await {
            Ok(_) => inner.count(HookEvent::PostReceive, "ok"),
            Err(err) => {
                inner.count(HookEvent::PostReceive, "failed");
                tracing::debug!(error = %err, "post-receive hook failed");
            }
        }
    }
}

impl Inner {
    /// Ask a pre-* hook; a rejection or failure becomes the client's error.
    async fn ask(
        &self,
        event: HookEvent,
        info: &UploadInfo,
        request: &RequestParts,
    ) -> Result<Answer> {
        let Some((url, body)) = self.prepare(event, info, request) else {
            return Err(self.failed(event, &info.id, CallError::Malformed));
        };
        let answer = self
            .call(&url, body)
            .await
            .and_then(|bytes| parse_answer(&bytes))
            .map_err(|err| self.failed(event, &info.id, err))?;
        match answer.reject {
            Some(rejection) => {
                self.count(event, "rejected");
                tracing::info!(event = event.name(), upload = %info.id, status = rejection.status, "hook rejected the request");
                Err(TusError::HookRejected {
                    status: rejection.status,
                    message: clean_message(&rejection.message),
                })
            }
            None => {
                self.count(event, "ok");
                Ok(answer)
            }
        }
    }

    /// Count and log a failed pre-* call; the client's 503.
    fn failed(&self, event: HookEvent, id: &UploadId, err: CallError) -> TusError {
        self.count(event, "failed");
        tracing::warn!(event = event.name(), upload = %id, error = %err, "hook failed; request refused");
        TusError::HookUnavailable(format!("the {} hook {err}", event.name()))
    }

    async fn call(&self, url: &Uri, body: Bytes) -> Result<Bytes, CallError> {
        self.client.post(url, body).await
    }

    fn count(&self, event: HookEvent, outcome: &'static str) {
        self.metrics.hook_call(event.name(), outcome);
    }

    fn prepare(
        &self,
        event: HookEvent,
        info: &UploadInfo,
        request: &RequestParts,
    ) -> Option<(Uri, Bytes)> {
        let url = self.endpoints.get(&event)?.clone();
        let body = self.payload(event, &new_event_id(), info, &self.summarize(request))?;
        Some((url, body))
    }

    fn payload(
        &self,
        event: HookEvent,
        event_id: &str,
        info: &UploadInfo,
        request: &RequestSummary,
    ) -> Option<Bytes> {
        let payload = Payload {
            event,
            event_id,
            upload: info,
            metadata: decode_metadata(&info.metadata),
            request,
        };
        serde_json::to_vec(&payload).ok().map(Bytes::from)
    }

    /// The request as hooks see it: only the safe headers and those the operator listed.
    fn summarize(&self, request: &RequestParts) -> RequestSummary {
        RequestSummary {
            method: request.method.to_string(),
            uri: request.uri.clone(),
            remote_addr: request.conn.map(|c| c.remote.to_string()),
            headers: allowed_headers(&request.headers, &self.forward),
        }
    }
}

/// The headers a hook may see.
fn allowed_headers(headers: &HeaderMap, forward: &[HeaderName]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let allowed = name.starts_with("upload-")
            || SAFE_HEADERS.contains(&name)
            || forward.iter().any(|f| f.as_str() == name);
        if !allowed {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// An answer body: empty (go ahead) or the JSON [`Answer`], with a 4xx reject status.
fn parse_answer(body: &[u8]) -> Result<Answer, CallError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Answer::default());
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|_| CallError::Malformed)?;
    match &answer.reject {
        Some(r) if !(400..500).contains(&r.status) => Err(CallError::Malformed),
        _ => Ok(answer),
    }
}

/// A reject message fit for a plain-text response: no control characters, length-capped.
fn clean_message(message: &str) -> String {
    let cleaned: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "refused by a hook".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// Upload-Metadata (header form) as a map of text values.
fn decode_metadata(header: &str) -> BTreeMap<String, Option<String>> {
    Metadata::parse(header, usize::MAX)
        .map(|m| {
            m.pairs()
                .map(|(k, v)| {
                    (
                        k.to_owned(),
                        v.map(|v| String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A hook's metadata in header form; `None` when a key is not a valid metadata key.
fn encode_metadata(pairs: &BTreeMap<String, Option<String>>) -> Option<String> {
    use base64::Engine as _;
    let valid_key =
        |key: &String| !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if !pairs.keys().all(valid_key) {
        return None;
    }
    let header = pairs
        .iter()
        .map(
            |(key, value)| match value.as_deref().filter(|v| !v.is_empty()) {
                Some(value) => format!(
                    "{key} {}",
                    base64::engine::general_purpose::STANDARD.encode(value)
                ),
                None => key.clone(),
            },
        )
        .collect::<Vec<_>>()
        .join(",");
    // Parsing back checks the keys (non-empty, no spaces or commas).
    let parsed = Metadata::parse(&header, usize::MAX).ok()?;
    (parsed.pairs().count() == pairs.len()).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_by_the_contract() {
        assert!(parse_answer(b"").unwrap().reject.is_none());
        assert!(parse_answer(b" \n").unwrap().reject.is_none());
        assert!(parse_answer(b"{}").unwrap().reject.is_none());
        let answer = parse_answer(br#"{"reject":{"status":403,"message":"no"}}"#).unwrap();
        assert_eq!(answer.reject.unwrap().status, 403);
        assert_eq!(
            parse_answer(br#"{"reject":{"status":500}}"#).unwrap_err(),
            CallError::Malformed
        );
        assert_eq!(
            parse_answer(br#"{"reject":{"status":204}}"#).unwrap_err(),
            CallError::Malformed
        );
        assert_eq!(
            parse_answer(b"{not json").unwrap_err(),
            CallError::Malformed
        );
    }

    #[test]
    fn messages_lose_control_characters_and_length() {
        assert_eq!(clean_message("no\r\nPDFs\u{7}"), "noPDFs");
        assert_eq!(clean_message(&"x".repeat(1000)).len(), MAX_MESSAGE);
        assert_eq!(clean_message(" \n"), "refused by a hook");
    }

    #[test]
    fn metadata_round_trips_and_bad_keys_are_refused() {
        let mut pairs = BTreeMap::new();
        pairs.insert("name".to_owned(), Some("a b.pdf".to_owned()));
        pairs.insert("flag".to_owned(), None);
        let header = encode_metadata(&pairs).unwrap();
        assert_eq!(decode_metadata(&header), pairs);
        let mut bad = BTreeMap::new();
        bad.insert("two words".to_owned(), None);
        assert_eq!(encode_metadata(&bad), None);
        let mut bad = BTreeMap::new();
        bad.insert(String::new(), None);
        assert_eq!(encode_metadata(&bad), None);
        let mut bad = BTreeMap::new();
        bad.insert("ab cd".to_owned(), None);
        assert_eq!(encode_metadata(&bad), None);
    }

    #[test]
    fn only_safe_and_listed_headers_are_passed() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer secret".parse().unwrap());
        headers.insert("cookie", "a=b".parse().unwrap());
        headers.insert("upload-length", "5".parse().unwrap());
        headers.insert("user-agent", "t".parse().unwrap());
        let seen = allowed_headers(&headers, &[]);
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            ["upload-length", "user-agent"]
        );
        let seen = allowed_headers(&headers, &[HeaderName::from_static("authorization")]);
        assert!(seen.contains_key("authorization"));
        assert!(!seen.contains_key("cookie"));
    }
}
