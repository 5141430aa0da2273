//! `sink`: the baseline server on its own, for manual comparisons.
//!
//! ```text
//! sink --dir DIR [--port N] [--mode fsync|nofsync|discard]   (or --fsync)
//! ```
//!
//! `loadgen` runs the same server by re-executing itself, so it needs no separate build.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match tusk_bench::sink::main_with_args(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sink: {err}");
            eprintln!("usage: sink --dir DIR [--port N] [--mode fsync|nofsync|discard]");
            ExitCode::from(2)
        }
    }
}
