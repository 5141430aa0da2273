//! `tusk-bench`: measures tusk against a bare hyper "sink" in one run, on loopback.
//!
//! * [`sink`] is the baseline server: POST creates an empty file, HEAD reports its length,
//!   PATCH appends the body (optionally fsyncing before it answers). No protocol checks, no
//!   database: the upper bound for a server that stores bytes in files.
//! * [`client`] is a small HTTP/1.1 client over one `TcpStream` per worker, sending bodies
//!   from one pre-generated random buffer ([`data`]), so the client costs little per byte.
//! * [`scenarios`] are the workloads, [`servers`] starts and stops the processes under test,
//!   [`procfs`] reads their memory and CPU figures, [`report`] prints the Markdown tables,
//!   [`disk`] waits for the disk to settle between servers.

pub mod client;
pub mod data;
pub mod disk;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod servers;
pub mod sink;
