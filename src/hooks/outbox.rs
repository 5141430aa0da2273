//! The durable outbox of post-finish and post-terminate events: at-least-once delivery.
//!
//! An event is written here (the exact JSON body a hook receives, its `event_id` included)
//! right after the commit that makes it true and before the client hears of it; it is removed
//! only after a 2xx from the hook server. What a crash leaves here is sent again at the next
//! start, so a receiver may see an event more than once (same `event_id`), never not at all.
//!
//! One file per event in `data_dir/hooks-outbox/`, named `{event_id}.json`: written to a
//! temporary name, synced, renamed, then the directory synced, so a file either holds a whole
//! event or is not there. Files, not a sled tree: session/ stays the only sled user, and the
//! outbox works unchanged on the S3 backend (each instance keeps its own local outbox).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Suffix of a complete event file.
const EVENT: &str = ".json";
/// Suffix of an event still being written (a crash may leave one behind; it is discarded).
const PARTIAL: &str = ".tmp";

/// A directory of events waiting for their hook server's 2xx.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    /// fsync files and the directory (`storage.durability = "fsync"`): the outbox is as durable
    /// as the records whose commits make its events true.
    sync: bool,
}

impl Outbox {
    /// The outbox in `dir` (created if missing); half-written events of a crash are removed.
    ///
    /// # Errors
    /// When the directory cannot be created or read.
    pub fn open(dir: &Path, sync: bool) -> io::Result<Outbox> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(PARTIAL) {
                fs::remove_file(&path)?;
            }
        }
        Ok(Outbox {
            dir: dir.to_owned(),
            sync,
        })
    }

    /// Store `body` as event `event_id`, durably before returning.
    ///
    /// # Errors
    /// When writing, syncing or renaming fails (nothing is left under the event's name then).
    pub fn put(&self, event_id: &str, body: &[u8]) -> io::Result<()> {
        let partial = self.dir.join(format!("{event_id}{PARTIAL}"));
        let written = (|| {
            let mut file = File::create(&partial)?;
            file.write_all(body)?;
            if self.sync {
                file.sync_all()?;
            }
            fs::rename(&partial, self.path(event_id))
        })();
        if let Err(err) = written {
            let _ = fs::remove_file(&partial);
            return Err(err);
        }
        self.sync_dir()
    }

    /// Forget event `event_id` (delivered). Not synced: should the removal be lost in a crash,
    /// the event is only sent once more, which receivers must tolerate anyway.
    ///
    /// # Errors
    /// When the file exists but cannot be removed.
    pub fn remove(&self, event_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(event_id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every stored event as `(event_id, body)`, oldest first (event ids begin with their time).
    ///
    /// # Errors
    /// When the directory cannot be read. An unreadable file is skipped (and logged).
    pub fn pending(&self) -> io::Result<Vec<(String, Bytes)>> {
        let mut events = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(EVENT))
            else {
                continue;
            };
            match fs::read(&path) {
                Ok(body) => events.push((id.to_owned(), Bytes::from(body))),
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "unreadable hook outbox entry skipped");
                }
            }
        }
        events.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(events)
    }

    fn path(&self, event_id: &str) -> PathBuf {
        self.dir.join(format!("{event_id}{EVENT}"))
    }

    /// Make a rename in the directory durable.
    fn sync_dir(&self) -> io::Result<()> {
        if self.sync {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// A new event id: 32 lowercase hex digits, the first 12 the time in milliseconds (so ids
/// sort in the order events were queued), the rest random. Only file-name-safe characters.
pub fn new_event_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let random: u128 = rand::random();
    format!(
        "{:012x}{:020x}",
        millis & 0xffff_ffff_ffff,
        random & ((1u128 << 80) - 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_reopening_and_leave_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path(), true).unwrap();
        let (first, second) = (new_event_id(), new_event_id());
        outbox.put(&second, b"{\"n\":2}").unwrap();
        outbox.put(&first, b"{\"n\":1}").unwrap();
        // A crash in the middle of a write leaves a partial file: not an event.
        fs::write(dir.path().join(format!("x{PARTIAL}")), b"{").unwrap();
        let reopened = Outbox::open(dir.path(), true).unwrap();
        let pending = reopened.pending().unwrap();
        let ids: Vec<&str> = pending.iter().map(|(id, _)| id.as_str()).collect();
        let mut expected = [first.as_str(), second.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert!(pending.iter().any(|(_, body)| &body[..] == b"{\"n\":1}"));
        assert!(!dir.path().join(format!("x{PARTIAL}")).exists());
        reopened.remove(&first).unwrap();
        reopened.remove(&first).unwrap();
        assert_eq!(reopened.pending().unwrap().len(), 1);
    }

    #[test]
    fn event_ids_are_unique_hex_in_time_order() {
        let a = new_event_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_event_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(a < b, "{a} {b}");
        assert_ne!(new_event_id(), new_event_id());
    }
}
