//! The PATCH data path, from socket to disk.
//!
//! ```text
//! hyper body ──TrailerCapture──▶ warp body stream ──▶ pipeline::append
//!   (frames; trailers are                               │  gather frames into one buffer
//!    kept aside for the                                 │  ├─ checksum tee (hash in order)
//!    checksum-trailer ext.)                             │  └─ BlobWriter::write_at(offset)
//!                                                       ▼
//!                                   AppendOutcome { written, end }  ──▶ protocol: sync, commit offset
//! ```
//!
//! The pipeline never holds more than one buffer per request, writes whole buffers, stops at
//! the byte limit the protocol layer gives it, and ends cleanly (reporting what it wrote) when
//! the client breaks off, goes idle, or a newer request asks it to stop.

pub mod body;
pub mod budget;
pub mod pipeline;
