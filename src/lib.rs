//! tusk: a resumable upload server speaking the tus protocol 1.0.0.
//!
//! # Layout
//! - [`config`] — settings from defaults, file, environment and flags.
//! - [`commands`] — `tusk check`, `tusk uploads list|purge` on a stopped server's data.
//! - [`server`] — accepts connections, runs the routes, shuts down gracefully.
//! - [`tls`] — TLS served directly, its certificate re-read on SIGHUP.
//! - [`routes`] — routes requests to handlers; adds Tus-Resumable and CORS to every response.
//! - [`protocol`] — one module per section of the tus spec, plus pure header parsing.
//! - [`transfer`] — the PATCH data path from socket to disk.
//! - [`session`] — upload records in sled, per-upload locks, the expiry sweeper (only this
//!   module imports sled).
//! - [`storage`] — upload bytes, one file per upload.
//! - [`recovery`] — start-up reconciliation of bytes and records; `tusk recover`.
//! - [`admission`] — per-address creation rate, connection cap, throttled refusal logs.
//! - [`auth`] — HS256 tokens, key rotation, signed download links, per-owner limits.
//! - [`checksum`] — hash algorithms of the checksum extension.
//! - [`upload`] — upload ids and records.
//! - [`error`] — the one error type at the HTTP edge.
//! - [`hooks`] — HTTP hooks on upload events and on every request to an upload.
//! - [`metrics`] — Prometheus counters and the `/metrics` exposition.
//! - [`ops`] — `/healthz`, `/readyz`, `/metrics` and the admin API.
//!
//! Invariant: the offset stored for an upload never exceeds the bytes durably written for it.

pub mod admission;
pub mod auth;
pub mod checksum;
pub mod commands;
pub mod config;
pub mod error;
pub mod hooks;
pub mod metrics;
pub mod ops;
pub mod protocol;
pub mod recovery;
pub mod routes;
pub mod server;
pub mod session;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod transfer;
pub mod upload;

pub use config::Settings;
pub use error::TusError;
pub use state::AppState;
