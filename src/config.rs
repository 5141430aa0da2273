//! Settings: built-in defaults < `--config FILE` < `TUSK_SECTION__KEY` environment < flags.
//!
//! `config/tusk.toml` documents every key with its default; a test keeps it equal to
//! [`Settings::default`]. Unknown keys and invalid values stop start-up with a message that names
//! the key (serde_path_to_error gives us the path).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::hooks::HookEvent;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a value of the wrong type or form, or is unknown.
    #[error("invalid configuration at `{key}`: {message}")]
    Invalid {
        /// The dotted key, e.g. `limits.max_size`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// All settings of a tusk server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Listener and URL layout.
    pub server: ServerSettings,
    /// TLS served directly (instead of behind a reverse proxy).
    pub tls: TlsSettings,
    /// Where and how upload bytes and records are kept.
    pub storage: StorageSettings,
    /// Size limits.
    pub limits: LimitSettings,
    /// Expiration of unfinished uploads.
    pub expiration: ExpirationSettings,
    /// Timeouts fit for mobile networks.
    pub timeouts: TimeoutSettings,
    /// The PATCH data path.
    pub transfer: TransferSettings,
    /// Cross-origin access for browser clients.
    pub cors: CorsSettings,
    /// Logging.
    pub log: LogSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
    /// The admin API.
    pub admin: AdminSettings,
    /// The browser demo page.
    pub demo: DemoSettings,
    /// Who may do what: tokens, ownership, per-owner limits.
    pub auth: AuthSettings,
    /// HTTP hooks on upload events and on every request to an upload.
    pub hooks: HookSettings,
    /// The IETF resumable-upload draft beside tus 1.0.0.
    pub draft: DraftSettings,
    /// The S3-compatible object store (`storage.backend = "s3"`).
    pub s3: S3Settings,
    /// The Redis server shared by instances (`storage.backend = "s3"`).
    pub redis: RedisSettings,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed at start-up).
    pub port: u16,
    /// URL path of the creation endpoint; upload URLs are `{base_path}{id}`.
    pub base_path: String,
    /// Peers (IP addresses or networks) whose `Forwarded` / `X-Forwarded-*` headers are
    /// believed, for Location URLs and the client address. From anyone else those headers are
    /// ignored, or clients could steer Location elsewhere and pose as other clients.
    pub trusted_proxies: Vec<IpNetwork>,
    /// The origin clients reach tusk at (`"https://uploads.example.com"`): when set, Location
    /// and signed download links are built from it, never from the request's `Host` or
    /// forwarded headers. Empty: from `Host` (or a trusted proxy's forwarded headers).
    pub public_url: String,
    /// Open connections at most; beyond it new connections are closed at once. 0 = no cap.
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 1080,
            base_path: "/files/".to_owned(),
            trusted_proxies: Vec::new(),
            public_url: String::new(),
            max_connections: 4096,
        }
    }
}

/// `server.public_url` in the form Location URLs start with (`scheme://host[:port]`, the
/// scheme lower-cased, no trailing slash); `None` when it is not such an origin.
fn public_origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let host_chars = |c: char| c.is_ascii_alphanumeric() || ".-:[]_".contains(c);
    let valid = matches!(scheme.as_str(), "http" | "https")
        && !authority.is_empty()
        && !authority.starts_with(':')
        && authority.chars().all(host_chars);
    valid.then(|| format!("{scheme}://{authority}"))
}

/// An IP network written as CIDR (`"10.0.0.0/8"`, `"::1/128"`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork(pub ipnet::IpNet);

impl IpNetwork {
    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl Serialize for IpNetwork {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IpNetwork {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(IpNetwork)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an IP address or network like \"10.0.0.0/8\""
                ))
            })
    }
}

/// `[tls]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the certificate chain, leaf first; empty = plain HTTP.
    pub cert_file: PathBuf,
    /// PEM file with the private key of the leaf certificate; empty = plain HTTP.
    pub key_file: PathBuf,
}

impl TlsSettings {
    /// Whether tusk serves TLS itself.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Directory for upload bytes (`uploads/`) and the sled database (`db/`).
    pub data_dir: PathBuf,
    /// When bytes and offsets reach the disk.
    pub durability: Durability,
    /// New uploads are refused with 507, and `/readyz` fails, below this much free space on
    /// the data volume; 0 = no floor.
    pub min_free_space: ByteSize,
    /// With fsync durability, a PATCH body up to this size is made durable together with its
    /// record in the commit journal under `{data_dir}/journal` (one fdatasync shared by many
    /// uploads) instead of by an fdatasync of its file and a database flush; 0 = never. Local
    /// backend only.
    pub journal_max_write: ByteSize,
    /// How often the upload files and records behind journal entries are synced, after which
    /// the journal deletes those entries (sooner when 64 MiB are waiting).
    pub journal_sync_interval: HumanDuration,
    /// How long files found at start-up without a record stay in `uploads/.quarantine/`
    /// before they are deleted (local backend).
    pub quarantine_for: HumanDuration,
    /// Where bytes and records live: one machine, or shared by several instances.
    pub backend: Backend,
}

/// `storage.backend`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files under `data_dir/uploads`, records in sled under `data_dir/db`: one instance.
    Local,
    /// Bytes in an S3-compatible object store (`[s3]`), records and locks in Redis
    /// (`[redis]`): any number of instances behind a load balancer.
    S3,
}

/// `[s3]`
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// Base URL of the S3 API, e.g. `http://127.0.0.1:9000` (path-style requests).
    pub endpoint: String,
    /// Bucket holding the uploads (must exist).
    pub bucket: String,
    /// Region for request signing.
    pub region: String,
    /// Key prefix of every object tusk writes.
    pub prefix: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key (better given as `TUSK_S3__SECRET_KEY`).
    pub secret_key: String,
    /// Smallest part of a multipart upload (S3's floor is 5 MiB); larger when Upload-Length
    /// needs it to stay within 10,000 parts.
    pub part_size: ByteSize,
    /// Time allowed for one request to the object store.
    pub request_timeout: HumanDuration,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .field("part_size", &self.part_size)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".to_owned(),
            prefix: String::new(),
            access_key: String::new(),
            secret_key: String::new(),
            part_size: ByteSize(8 << 20),
            request_timeout: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Connection URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Prefix of every key (and pub/sub channel) tusk uses, so instances of different
    /// deployments can share one Redis.
    pub key_prefix: String,
    /// Lifetime of an upload lock; its holder renews it every third of this, so a crashed
    /// instance's locks free themselves within it.
    pub lock_ttl: HumanDuration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379/0".to_owned(),
            key_prefix: "tusk:".to_owned(),
            lock_ttl: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            backend: Backend::Local,
            data_dir: PathBuf::from("./data"),
            durability: Durability::Fsync,
            min_free_space: ByteSize(0),
            journal_max_write: ByteSize(64 << 10),
            journal_sync_interval: HumanDuration(Duration::from_secs(1)),
            quarantine_for: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// How hard tusk works to make acknowledged bytes survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync the upload's data, then the record, before answering a PATCH.
    Fsync,
    /// Leave flushing to the OS (and sled's 500 ms flusher): faster, but a power cut can lose
    /// the last acknowledged chunks. A crashed process (not machine) still loses nothing.
    Relaxed,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest Upload-Length accepted (advertised as Tus-Max-Size); 0 = unlimited.
    pub max_size: ByteSize,
    /// Largest body of one PATCH or creation-with-upload POST; 0 = no limit beyond max_size.
    pub max_append_size: ByteSize,
    /// Largest Upload-Metadata header accepted.
    pub max_metadata_size: ByteSize,
    /// Memory all request buffers may take together; beyond it new PATCHes get 503.
    pub max_buffer_memory: ByteSize,
    /// Percent of `max_buffer_memory` the bodies of one client address may hold together.
    pub max_buffer_share_percent: u8,
    /// A body slower than this many bytes per second, averaged over `min_body_rate_window`,
    /// ends with its bytes kept; 0 = no minimum.
    pub min_body_rate: ByteSize,
    /// The window over which `min_body_rate` is averaged.
    pub min_body_rate_window: HumanDuration,
    /// Most parts one `Upload-Concat: final;...` may name.
    pub max_concat_parts: usize,
    /// Most keys one Upload-Metadata header may carry.
    pub max_metadata_keys: usize,
    /// Creations per second one client address may make, on average; 0 = unlimited.
    pub creation_rate: u32,
    /// Creations one client address may make at once before `creation_rate` applies.
    pub creation_burst: u32,
    /// Client addresses (IPs or CIDRs) the creation rate does not apply to.
    pub creation_rate_exempt: Vec<IpNetwork>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_size: ByteSize(0),
            max_append_size: ByteSize(0),
            max_metadata_size: ByteSize(16 * 1024),
            max_buffer_memory: ByteSize(256 << 20),
            max_buffer_share_percent: 25,
            min_body_rate: ByteSize(1024),
            min_body_rate_window: HumanDuration(Duration::from_secs(60)),
            max_concat_parts: 128,
            max_metadata_keys: 64,
            creation_rate: 50,
            creation_burst: 500,
            creation_rate_exempt: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|net| net.parse().ok().map(IpNetwork))
                .collect(),
        }
    }
}

/// `[expiration]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpirationSettings {
    /// An unfinished upload expires this long after its creation or last PATCH.
    pub expire_after: HumanDuration,
    /// How often the sweeper deletes expired uploads.
    pub sweep_interval: HumanDuration,
    /// An upload cut off because a server address vanished lives at least this long more.
    pub network_change_grace: HumanDuration,
}

impl Default for ExpirationSettings {
    fn default() -> Self {
        ExpirationSettings {
            expire_after: HumanDuration(Duration::from_secs(24 * 3600)),
            sweep_interval: HumanDuration(Duration::from_secs(60)),
            network_change_grace: HumanDuration(Duration::from_secs(3600)),
        }
    }
}

/// `[timeouts]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutSettings {
    /// Time allowed to receive a request's headers. hyper starts this clock when a connection
    /// is ready for its next request, so it is also the keep-alive idle timeout.
    pub header_read: HumanDuration,
    /// A PATCH whose body sends no byte for this long ends, keeping what it received.
    pub body_idle: HumanDuration,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace: HumanDuration,
    /// Cap on one PATCH's total duration (bytes received are kept); 0 = none.
    pub request_max: HumanDuration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            header_read: HumanDuration(Duration::from_secs(30)),
            body_idle: HumanDuration(Duration::from_secs(60)),
            shutdown_grace: HumanDuration(Duration::from_secs(10)),
            request_max: HumanDuration(Duration::ZERO),
        }
    }
}

/// `[transfer]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferSettings {
    /// `"adaptive"` (sized per client and interface, re-sized as the rate is measured) or a
    /// fixed size such as `"32KiB"` (rounded up to a pool class, 16KiB..1MiB).
    pub buffer: BufferSetting,
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            buffer: BufferSetting::Adaptive,
        }
    }
}

/// How PATCH buffers are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferSetting {
    /// Per client and interface, adapting to the measured rate.
    Adaptive,
    /// Always this size.
    Fixed(ByteSize),
}

impl Serialize for BufferSetting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BufferSetting::Adaptive => serializer.serialize_str("adaptive"),
            BufferSetting::Fixed(size) => size.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for BufferSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected \"adaptive\" or a size like \"32KiB\"")
        })?;
        if text.trim().eq_ignore_ascii_case("adaptive") {
            return Ok(BufferSetting::Adaptive);
        }
        ByteSize::parse(&text)
            .map(BufferSetting::Fixed)
            .map_err(|e| serde::de::Error::custom(format!("expected \"adaptive\" or a size: {e}")))
    }
}

/// `[cors]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSettings {
    /// Answer cross-origin requests at all.
    pub enabled: bool,
    /// Origins allowed (`"*"` for any).
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight.
    pub max_age: HumanDuration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        CorsSettings {
            enabled: true,
            allowed_origins: vec!["*".to_owned()],
            max_age: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter (`info`, `tusk=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
    /// `human` (one readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text.
    Human,
    /// One JSON object per line, for collectors.
    Json,
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve Prometheus metrics at `/metrics` on the main listener.
    pub enabled: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { enabled: true }
    }
}

/// `[demo]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Serve an Uppy Dashboard page at `/demo/` that uploads to this server.
    pub enabled: bool,
}

/// `[draft]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DraftSettings {
    /// Serve requests carrying `Upload-Draft-Interop-Version` (3 to 8) by the IETF draft
    /// "Resumable Uploads for HTTP"; when false they are tus requests like any other.
    pub enabled: bool,
    /// While a draft request's body runs, commit and send a `104` with `Upload-Offset` this
    /// often (interop version 5 and later); 0 = no progress reports.
    pub progress_interval: HumanDuration,
}

impl Default for DraftSettings {
    fn default() -> Self {
        DraftSettings {
            enabled: true,
            progress_interval: HumanDuration(Duration::from_secs(1)),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Serve the admin API under `/admin/`.
    pub enabled: bool,
    /// File holding the bearer token the admin API requires (the token itself never appears
    /// in the configuration, logs or `--print-config`).
    pub token_file: PathBuf,
}

/// Whether requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone who reaches the server may upload (logged loudly at start-up).
    #[default]
    Open,
    /// Every upload request needs an HS256 bearer token; uploads belong to its `sub`.
    Token,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `open` or `token`.
    pub mode: AuthMode,
    /// File of HMAC keys, one per line: `SECRET` or `KID SECRET` (the first one signs).
    /// Empty: the keys come from the `TUSK_AUTH_SECRET` environment variable, if set.
    pub secret_file: PathBuf,
    /// Query parameter a token may also arrive in, for clients that cannot set headers;
    /// empty = header only.
    pub query_param: String,
    /// Clock difference tolerated when checking `exp` and `nbf`.
    pub clock_skew: HumanDuration,
    /// Largest upload per owner unless the token says otherwise; 0 = only `limits.max_size`.
    pub max_upload_size: ByteSize,
    /// Bytes an owner's unfinished uploads may still announce together; 0 = unlimited.
    pub max_bytes_in_flight: ByteSize,
    /// Uploads an owner may create per hour unless the token says otherwise; 0 = unlimited.
    pub max_uploads_per_hour: u32,
    /// Longest lifetime of a signed download link.
    pub link_max_ttl: HumanDuration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: AuthMode::Open,
            secret_file: PathBuf::new(),
            query_param: "token".to_owned(),
            clock_skew: HumanDuration(Duration::from_secs(30)),
            max_upload_size: ByteSize(0),
            max_bytes_in_flight: ByteSize(0),
            max_uploads_per_hour: 0,
            link_max_ttl: HumanDuration(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

/// `[hooks]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookSettings {
    /// The `http://` endpoint every event is POSTed to; empty = hooks off (unless `urls` names one).
    pub url: String,
    /// Per-event endpoints that replace `url` for their event.
    pub urls: std::collections::BTreeMap<HookEvent, String>,
    /// The events that are sent.
    pub events: Vec<HookEvent>,
    /// Bound on one hook call: connect, send, answer and body.
    pub timeout: HumanDuration,
    /// How often a failed post-* event is sent again (pre-* events are never retried).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: HumanDuration,
    /// How often post-finish and post-terminate events still in the outbox (their retries
    /// spent) are sent again; they are also sent again at every start.
    pub redeliver_interval: HumanDuration,
    /// post-receive is sent at most once per this interval per upload.
    pub progress_interval: HumanDuration,
    /// Request headers passed to hooks besides the built-in safe list (e.g. "authorization").
    pub forward_headers: Vec<String>,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            url: String::new(),
            urls: std::collections::BTreeMap::new(),
            events: HookEvent::ALL.to_vec(),
            timeout: HumanDuration(Duration::from_secs(3)),
            retries: 3,
            backoff: HumanDuration(Duration::from_millis(200)),
            redeliver_interval: HumanDuration(Duration::from_secs(60)),
            progress_interval: HumanDuration(Duration::from_secs(1)),
            forward_headers: Vec::new(),
        }
    }
}

impl HookSettings {
    /// Check endpoints, bounds and header names.
    fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        let plain_http = |url: &String| {
            url.is_empty()
                || (url.starts_with("http://")
                    && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some()))
        };
        if !plain_http(&self.url) || !self.urls.values().all(plain_http) {
            return Err(("hooks.url", "hook endpoints must be http:// URLs"));
        }
        if self.timeout.0.is_zero() {
            return Err(("hooks.timeout", "must be greater than 0"));
        }
        if self.progress_interval.0.is_zero() {
            return Err(("hooks.progress_interval", "must be greater than 0"));
        }
        if self.redeliver_interval.0.is_zero() {
            return Err(("hooks.redeliver_interval", "must be greater than 0"));
        }
        if self.retries > 10 {
            return Err(("hooks.retries", "must be at most 10"));
        }
        if !self
            .forward_headers
            .iter()
            .all(|h| http::HeaderName::from_bytes(h.as_bytes()).is_ok())
        {
            return Err(("hooks.forward_headers", "must be valid header names"));
        }
        Ok(())
    }
}

/// Overrides given on the command line (None = not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--host`
    pub host: Option<IpAddr>,
    /// `--port`
    pub port: Option<u16>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--base-path`
    pub base_path: Option<String>,
    /// `--auth-secret-file` (also turns token mode on)
    pub auth_secret_file: Option<PathBuf>,
}

/// Environment variables of this form override config keys: `TUSK_LIMITS__MAX_SIZE=1GiB`.
const ENV_PREFIX: &str = "TUSK_";

impl Settings {
    /// Load: defaults, then `file` (if any), then `TUSK_SECTION__KEY` from `env`, then `overrides`.
    ///
    /// # Errors
    /// A message naming the file or key at fault.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut tree = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.message().to_owned(),
                    })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(key) = name.strip_prefix(ENV_PREFIX) {
                if let Some((section, field)) = key.split_once("__") {
                    set_from_env(&mut tree, section, field, &value);
                }
            }
        }
        let mut settings = Settings::from_table(tree)?;
        settings.apply(overrides);
        settings.validate()?;
        Ok(settings)
    }

    /// Deserialize a TOML table, naming the offending key on error.
    fn from_table(tree: toml::Table) -> Result<Settings, ConfigError> {
        serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|err| {
            ConfigError::Invalid {
                key: err.path().to_string(),
                message: err.inner().message().to_owned(),
            }
        })
    }

    fn apply(&mut self, overrides: &Overrides) {
        if let Some(host) = overrides.host {
            self.server.host = host;
        }
        if let Some(port) = overrides.port {
            self.server.port = port;
        }
        if let Some(dir) = &overrides.data_dir {
            self.storage.data_dir.clone_from(dir);
        }
        if let Some(base) = &overrides.base_path {
            self.server.base_path.clone_from(base);
        }
        if let Some(file) = &overrides.auth_secret_file {
            self.auth.secret_file.clone_from(file);
            self.auth.mode = AuthMode::Token;
        }
    }

    /// Check what serde cannot: relations and forms.
    fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let base = &self.server.base_path;
        if !base.starts_with('/')
            || base.contains("//")
            || !base
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
        {
            return Err(invalid(
                "server.base_path",
                "must start with '/' and contain only letters, digits and / - _ . ~",
            ));
        }
        if !base.ends_with('/') {
            self.server.base_path.push('/');
        }
        if !self.server.public_url.is_empty() {
            let Some(origin) = public_origin(&self.server.public_url) else {
                return Err(invalid(
                    "server.public_url",
                    "must be an origin like \"https://uploads.example.com\" (http or https, a \
                     host and optional port, no path, query or fragment)",
                ));
            };
            self.server.public_url = origin;
        }
        if self.expiration.expire_after.0.is_zero() {
            return Err(invalid("expiration.expire_after", "must be greater than 0"));
        }
        if self.expiration.sweep_interval.0.is_zero() {
            return Err(invalid(
                "expiration.sweep_interval",
                "must be greater than 0",
            ));
        }
        if self.timeouts.body_idle.0.is_zero() || self.timeouts.header_read.0.is_zero() {
            return Err(invalid("timeouts", "timeouts must be greater than 0"));
        }
        if self.limits.max_buffer_memory.0 < 64 * 1024 {
            return Err(invalid(
                "limits.max_buffer_memory",
                "must be at least 64KiB",
            ));
        }
        if !(1..=100).contains(&self.limits.max_buffer_share_percent) {
            return Err(invalid(
                "limits.max_buffer_share_percent",
                "must be from 1 to 100",
            ));
        }
        if self.limits.min_body_rate_window.0.is_zero() {
            return Err(invalid(
                "limits.min_body_rate_window",
                "must be greater than 0",
            ));
        }
        if self.limits.max_concat_parts == 0 {
            return Err(invalid("limits.max_concat_parts", "must be greater than 0"));
        }
        if self.limits.max_metadata_keys == 0 {
            return Err(invalid(
                "limits.max_metadata_keys",
                "must be greater than 0",
            ));
        }
        if self.admin.enabled && self.admin.token_file.as_os_str().is_empty() {
            return Err(invalid(
                "admin.token_file",
                "the admin API needs a token file when enabled",
            ));
        }
        if self.tls.cert_file.as_os_str().is_empty() != self.tls.key_file.as_os_str().is_empty() {
            return Err(invalid(
                "tls",
                "set both cert_file and key_file (TLS), or neither (plain HTTP)",
            ));
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        // A journaled body is read back into memory and written twice: past a buffer's
        // largest size it is a large write, which its own fdatasync suits better.
        if self.storage.journal_max_write.0 > 1 << 20 {
            return Err(invalid("storage.journal_max_write", "must be at most 1MiB"));
        }
        if self.storage.journal_sync_interval.0.is_zero() {
            return Err(invalid(
                "storage.journal_sync_interval",
                "must be greater than 0",
            ));
        }
        if self.storage.backend == Backend::S3 {
            self.validate_shared_backend()?;
        }
        self.hooks
            .validate()
            .map_err(|(key, message)| invalid(key, message))
    }

    fn validate_shared_backend(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let s3 = &self.s3;
        if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://"))
            || s3.endpoint.parse::<http::Uri>().is_err()
        {
            return Err(invalid("s3.endpoint", "must be an http:// or https:// URL"));
        }
        if s3.bucket.is_empty() {
            return Err(invalid("s3.bucket", "must name a bucket"));
        }
        if s3.access_key.is_empty() || s3.secret_key.is_empty() {
            return Err(invalid(
                "s3.secret_key",
                "set s3.access_key and s3.secret_key (or TUSK_S3__SECRET_KEY)",
            ));
        }
        if s3.part_size.0 < 5 << 20 || s3.part_size.0 > 5 << 30 {
            return Err(invalid("s3.part_size", "must be between 5MiB and 5GiB"));
        }
        if s3.request_timeout.0.is_zero() {
            return Err(invalid("s3.request_timeout", "must be greater than 0"));
        }
        if !self.redis.url.starts_with("redis://") && !self.redis.url.starts_with("rediss://") {
            return Err(invalid("redis.url", "must be a redis:// URL"));
        }
        if self.redis.lock_ttl.0 < Duration::from_secs(1) {
            return Err(invalid("redis.lock_ttl", "must be at least 1s"));
        }
        if self.storage.durability != Durability::Fsync {
            // Bytes another instance must see are only in the object store after a sync.
            return Err(invalid(
                "storage.durability",
                "must be \"fsync\" with the s3 backend (other instances read only what was stored)",
            ));
        }
        Ok(())
    }

    /// The effective Tus-Max-Size, if any.
    pub fn max_size(&self) -> Option<u64> {
        non_zero(self.limits.max_size.0)
    }

    /// The largest body one request may carry, if limited.
    pub fn max_append_size(&self) -> Option<u64> {
        match (non_zero(self.limits.max_append_size.0), self.max_size()) {
            (Some(append), Some(total)) => Some(append.min(total)),
            (append, total) => append.or(total),
        }
    }
}

fn non_zero(value: u64) -> Option<u64> {
    (value != 0).then_some(value)
}

/// Put an environment value into the table: TOML syntax if it parses (numbers, booleans,
/// arrays), else a plain string.
fn set_from_env(tree: &mut toml::Table, section: &str, field: &str, raw: &str) {
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let section = tree
        .entry(section.to_ascii_lowercase())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(table) = section {
        table.insert(field.to_ascii_lowercase(), value);
    }
}

/// A byte count: an integer, or a string with a unit ("16KiB", "5MiB", "1GB", "100").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse "512", "16KiB", "1.5 GiB", "10MB".
    ///
    /// # Errors
    /// A message saying what form is expected.
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size like \"16KiB\" or 1048576"))?;
        let bytes = value * multiplier as f64;
        // `u64::MAX as f64` rounds up to 2^64, which no u64 holds: refuse it too.
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
            return Err(format!("{text:?} is out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A size or duration as written in TOML: a bare integer, or text with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(u64),
    Text(String),
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match IntOrText::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: an integer of bytes or a string like \"16KiB\"",
            )
        })? {
            IntOrText::Int(n) => Ok(ByteSize(n)),
            IntOrText::Text(text) => ByteSize::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration: an integer of seconds, or a string with a unit ("500ms", "30s", "5m", "24h", "7d").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parse "500ms", "30s", "5m", "24h", "7d" or "90" (seconds).
    ///
    /// # Errors
    /// A message saying what form is expected.
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like \"30s\", \"5m\" or \"24h\""))?;
        let millis_per: u64 = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} (use ms, s, m, h, d)"
                ))
            }
        };
        value
            .checked_mul(millis_per)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{text:?} is out of range"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        const UNITS: [(u128, &str); 4] = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ];
        for (size, unit) in UNITS {
            if ms >= size && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match IntOrText::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("expected a duration: seconds or a string like \"30s\"")
        })? {
            IntOrText::Int(n) => Ok(HumanDuration(Duration::from_secs(n))),
            IntOrText::Text(text) => HumanDuration::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load(Some(&path), env, &Overrides::default())
    }

    #[test]
    fn documented_config_file_equals_built_in_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tusk.toml");
        let loaded = Settings::load(Some(&path), [], &Overrides::default()).unwrap();
        assert_eq!(loaded, Settings::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("[limits]\nmax_sise = 5\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_sise"), "{err}");
    }

    #[test]
    fn invalid_value_names_its_key() {
        let err = load_str("[limits]\nmax_size = \"12 parsecs\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("limits.max_size"), "{err}");
        let err = load_str("[server]\nport = 70000\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.port"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let settings = load_str(
            "[limits]\nmax_size = \"1MiB\"\n",
            &[
                ("TUSK_LIMITS__MAX_SIZE", "2MiB"),
                ("TUSK_SERVER__PORT", "9000"),
            ],
        )
        .unwrap();
        assert_eq!(settings.limits.max_size, ByteSize(2 << 20));
        assert_eq!(settings.server.port, 9000);
        let overrides = Overrides {
            port: Some(7),
            ..Overrides::default()
        };
        let env = [("TUSK_SERVER__PORT".to_string(), "9000".to_string())];
        let settings = Settings::load(None, env, &overrides).unwrap();
        assert_eq!(settings.server.port, 7);
    }

    #[test]
    fn sizes_and_durations_parse_human_units() {
        assert_eq!(ByteSize::parse("16KiB").unwrap(), ByteSize(16384));
        assert_eq!(ByteSize::parse("1.5 GiB").unwrap(), ByteSize(3 << 29));
        assert_eq!(ByteSize::parse("10MB").unwrap(), ByteSize(10_000_000));
        assert!(ByteSize::parse("-1").is_err());
        assert!(ByteSize::parse("5 furlongs").is_err());
        assert!(
            ByteSize::parse("16777216TiB").is_err(),
            "2^64 bytes is out of range"
        );
        assert_eq!(
            HumanDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            HumanDuration::parse("24h").unwrap().0,
            Duration::from_secs(86400)
        );
        assert!(HumanDuration::parse("1.5h").is_err());
        assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(ByteSize(16384).to_string(), "16KiB");
    }

    #[test]
    fn hook_endpoints_and_events_are_checked() {
        let settings = load_str(
            "[hooks]\nurl = \"http://127.0.0.1:9000/h\"\nevents = [\"pre-access\"]\nurls = { pre-access = \"http://hooks/authz\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(settings.hooks.events, [HookEvent::PreAccess]);
        let err = load_str("[hooks]\nurl = \"https://hooks/\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("hooks.url"), "{err}");
        let err = load_str("[hooks]\nevents = [\"pre-upload\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("hooks.events"), "{err}");
        let err = load_str("[hooks]\nforward_headers = [\"bad header\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("hooks.forward_headers"), "{err}");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let settings = load_str(
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1/128\"]\n",
            &[],
        )
        .unwrap();
        let proxies = &settings.server.trusted_proxies;
        assert!(proxies[0].contains("127.0.0.1".parse().unwrap()));
        assert!(proxies[0].contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!proxies[0].contains("127.0.0.2".parse().unwrap()));
        assert!(proxies[1].contains("10.200.3.4".parse().unwrap()));
        assert!(proxies[2].contains("::1".parse().unwrap()));
        let err = load_str("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("server.trusted_proxies"), "{err}");
        let settings = load_str("", &[("TUSK_SERVER__TRUSTED_PROXIES", "[\"::1\"]")]).unwrap();
        assert_eq!(settings.server.trusted_proxies.len(), 1);
    }

    #[test]
    fn tls_needs_both_files() {
        let err = load_str("[tls]\ncert_file = \"c.pem\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("tls"), "{err}");
        assert!(load_str("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", &[]).is_ok());
    }

    #[test]
    fn public_url_must_be_an_origin() {
        let load = |url: &str| load_str(&format!("[server]\npublic_url = \"{url}\"\n"), &[]);
        let settings = load("HTTPS://uploads.example.com:8443/").unwrap();
        assert_eq!(
            settings.server.public_url,
            "https://uploads.example.com:8443"
        );
        assert_eq!(load("").unwrap().server.public_url, "");
        for bad in [
            "uploads.example.com",
            "ftp://uploads.example.com",
            "https://",
            "https://example.com/files/",
            "https://example.com?x=1",
            "https://user@example.com",
        ] {
            assert!(load(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn base_path_gets_trailing_slash_and_rejects_odd_characters() {
        let settings = load_str("[server]\nbase_path = \"/up\"\n", &[]).unwrap();
        assert_eq!(settings.server.base_path, "/up/");
        assert!(load_str("[server]\nbase_path = \"files\"\n", &[]).is_err());
        assert!(load_str("[server]\nbase_path = \"/a b/\"\n", &[]).is_err());
    }
}
