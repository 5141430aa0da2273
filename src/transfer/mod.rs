//! The PATCH data path, from socket to disk.
//!
//! ```text
//! hyper body ──TrailerCapture──▶ warp body stream ──▶ pipeline::append
//!   (frames; trailers are                               │  gather frames into a pooled buffer
//!    kept aside for the                                 │  ├─ checksum tee (hash in order)
//!    checksum-trailer ext.)                             │  ├─ BlobWriter::write_at(offset), whole buffers
//!                                                       │  └─ policy::Adapter re-sizes the buffer
//!                                                       ▼
//!                 AppendOutcome { written, end }  ──▶ protocol: sync, commit offset (also at checkpoints)
//!                                                       │  a small body: journal appends bytes + record
//!                                                       │  to a shared segment (one fdatasync for many);
//!                                                       ▼  a drain syncs files and records, then deletes it
//!
//! buffer_pool (size classes 16 KiB..1 MiB) ◀── budget (one global memory cap, 503 beyond)
//! policy::initial_class ◀── profile (client's EWMA throughput) or monitor (interface kind)
//! monitor (rtnetlink) ──address vanished──▶ cancels the PATCHes bound to it
//! ```
//!
//! The pipeline never holds more than one buffer per request, writes whole buffers, stops at
//! the byte limit the protocol layer gives it, and ends cleanly (reporting what it wrote) when
//! the client breaks off, goes idle, or a newer request asks it to stop.

use std::net::SocketAddr;

pub mod body;
pub mod budget;
pub mod buffer_pool;
pub mod interim;
pub mod journal;
pub mod monitor;
pub mod pipeline;
pub mod policy;
pub mod profile;

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address the connection arrived at (its interface sizes buffers and, if it
    /// vanishes, releases the connection's PATCH).
    pub local: SocketAddr,
}
