//! Starting and stopping the servers under test, each a child process on a fresh data dir.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sink::SinkMode;

/// What is listening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// The baseline sink, in one of its modes.
    Sink(SinkMode),
    /// tusk, with this config file text (`None` = built-in defaults).
    Tusk(Option<String>),
}

/// One server to start for a run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Column name in the report (`sink-fsync`, `tusk-relaxed`...).
    pub label: String,
    /// What to start.
    pub kind: Kind,
}

impl Spec {
    /// Whether POST may carry the first chunk (creation-with-upload).
    pub fn creation_with_upload(&self) -> bool {
        matches!(self.kind, Kind::Tusk(_))
    }
}

/// Paths to the two server programs.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The tusk release binary.
    pub tusk: PathBuf,
    /// A program that runs the sink when given `sink-args` (this very binary, re-executed).
    pub sink: PathBuf,
    /// Arguments that put [`Programs::sink`] in sink mode, before the sink's own.
    pub sink_prefix: Vec<String>,
}

/// A running server; stopped (and its data removed) on [`Running::stop`] or drop.
#[derive(Debug)]
pub struct Running {
    /// Its spec.
    pub spec: Spec,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its creation endpoint.
    pub base_path: String,
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
}

/// How long a server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `... listening on http://127.0.0.1:PORT/files/` -> (address, "/files/").
fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    let url = line.split("listening on ").nth(1)?.trim();
    let rest = url.strip_prefix("http://")?;
    let slash = rest.find('/')?;
    let addr: SocketAddr = rest[..slash].parse().ok()?;
    Some((addr, rest[slash..].to_owned()))
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Running {
    /// Start `spec` with its data under `scratch` (a directory of its own is made there).
    ///
    /// # Errors
    /// When the process cannot start or does not announce its address in time.
    pub fn start(spec: &Spec, programs: &Programs, scratch: &Path) -> io::Result<Running> {
        // A directory of its own each time: deleting the previous one's files here would
        // slow this server down (see `retire`).
        let data_dir = scratch.join(format!(
            "{}-data-{}",
            spec.label,
            NEXT_DATA_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&data_dir)?;
        let log = scratch.join(format!("{}.log", spec.label));
        let mut command = match &spec.kind {
            Kind::Sink(mode) => {
                let mut command = Command::new(&programs.sink);
                command
                    .args(&programs.sink_prefix)
                    .args(["--port", "0", "--mode", mode.name(), "--dir"])
                    .arg(&data_dir);
                command
            }
            Kind::Tusk(config) => {
                let mut command = Command::new(&programs.tusk);
                command
                    .args(["--port", "0", "--host", "127.0.0.1", "--data-dir"])
                    .arg(&data_dir);
                if let Some(text) = config {
                    let path = scratch.join(format!("{}.toml", spec.label));
                    std::fs::write(&path, text)?;
                    command.arg("--config").arg(path);
                }
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(&log)?));
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Forward the listening line, then keep draining so the child never blocks on stdout.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(found) = parse_listening(&line) {
                    let _ = tx.send(found);
                }
            }
        });
        let mut running = Running {
            spec: spec.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_path: String::new(),
            child: Some(child),
            data_dir,
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok((addr, base_path)) => {
                running.addr = addr;
                running.base_path = base_path;
                Ok(running)
            }
            Err(_) => {
                let tail = log_tail(&running.log, 20);
                running.kill();
                Err(io::Error::other(format!(
                    "{} did not announce its address within {START_TIMEOUT:?}; its log ends:\n{tail}",
                    spec.label
                )))
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, wait up to 20 s (tusk commits and flushes), then SIGKILL; remove its data.
    /// Returns whether it exited cleanly (status 0) on SIGTERM.
    pub fn stop(mut self) -> bool {
        let mut clean = false;
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        // The sink has no signal handler; dying of SIGTERM is its clean exit.
                        clean = status.success() || matches!(self.spec.kind, Kind::Sink(_));
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        retire(&self.data_dir);
        clean
    }

    /// SIGKILL (for a server that stopped answering); remove its data.
    pub fn abort(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        retire(&self.data_dir);
    }
}

/// Numbers the servers' data directories.
static NEXT_DATA_DIR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Files at least this large are deleted when their server stops; smaller ones stay until
/// the whole scratch directory is removed at the end.
const RETIRE_AT_ONCE: u64 = 1 << 20;

/// Free a stopped server's large files now and leave its small ones for the end. On this kind
/// of machine (ext4 with `discard`) deleting thousands of small files slowed the next
/// minute's file creation five- to tenfold (Python, create + 4 KiB + fdatasync, 64 threads:
/// 12,600/s, then 1,600/s 10 s and still 50 s after deleting 6,000 such files), so whichever
/// server ran next paid for its predecessor's cleanup; deleting one 3 GiB file did not
/// (11,600/s 10 s after). Small files are a few hundred MiB over a whole run.
fn retire(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => retire(&path),
            Ok(meta) if meta.len() >= RETIRE_AT_ONCE => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_address_and_path() {
        let (addr, path) =
            parse_listening("tusk listening on http://127.0.0.1:41234/files/").unwrap();
        assert_eq!(addr, "127.0.0.1:41234".parse().unwrap());
        assert_eq!(path, "/files/");
        assert!(parse_listening("something else").is_none());
    }
}
