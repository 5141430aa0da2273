//! Black-box conformance suite for tus 1.0.0 servers.
//!
//! One module per section of the tus specification (plus tusk's own download,
//! CORS and robustness rules). Each test starts its own server through
//! [`protocol_tests::TestServer`], or talks to `TUSK_URL` when it is set.

mod checksum;
mod checksum_trailer;
mod concatenation;
mod core;
mod cors;
mod creation;
mod creation_defer_length;
mod creation_with_upload;
mod download;
mod expiration;
mod robustness;
mod termination;
