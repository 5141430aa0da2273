//! The small-commit journal: a small PATCH's bytes kept in the session store's own log.
//!
//! A durable commit normally costs two syncs: the upload file's fdatasync, then the record's
//! flush. For a small body the first one dominates, and unlike the record flush it cannot be
//! shared between uploads. Here the bytes (already written to the file, not yet synced) go
//! into sled together with the record, in one transaction, and the record's group flush makes
//! both durable at once: many small uploads share one sync. The files are synced later, many
//! at a time, after which their journal entries are dropped; at start-up, entries still in the
//! journal are written into their files again before anything else reads them.
//!
//! So the invariant holds with the journal as the durable copy: a stored offset never exceeds
//! the bytes durably held for that upload, in its file or in the journal.

use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::{SessionError, SessionStore, SledSessionStore};
use crate::upload::{UploadId, UploadInfo};

/// A copy of bytes written into an upload's blob, held until the blob has them durably.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// Order of issue; every entry below [`CommitJournal::next_seq`] had its bytes written to
    /// the blob before it was issued.
    pub seq: u64,
    /// The upload.
    pub id: UploadId,
    /// Where in the blob the bytes go.
    pub at: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A session store that can hold small commits' bytes next to their records.
#[async_trait]
pub trait CommitJournal: Send + Sync {
    /// Store `info` and a copy of `bytes` (what its blob holds at `at`, already written), the
    /// copy first so that the record never survives a crash without it, and make both durable
    /// before returning.
    async fn put_with_bytes(
        &self,
        info: &UploadInfo,
        at: u64,
        bytes: &[u8],
    ) -> Result<(), SessionError>;
    /// Every entry, oldest first (start-up replay).
    fn entries(&self) -> Result<Vec<JournalEntry>, SessionError>;
    /// The sequence number the next entry gets.
    fn next_seq(&self) -> u64;
    /// Drop every entry below `seq`, once the blobs hold their bytes durably; returns the bytes
    /// freed. Not flushed: replaying an entry dropped in vain rewrites identical bytes.
    fn forget_before(&self, seq: u64) -> Result<u64, SessionError>;
}

/// Bytes per journal entry. sled writes a tree node that outgrows a quarter of its 512 KiB log
/// segment as a separate file, which it never syncs; a leaf holds up to 17 entries, so pieces
/// this small keep every journal node in the synced log.
const PIECE: usize = 4096;

/// Value layout: id length (1 byte), id, offset (8 bytes, big-endian), bytes.
fn encode_entry(id: &UploadId, at: u64, bytes: &[u8]) -> Vec<u8> {
    let id = id.as_str().as_bytes();
    let mut value = Vec::with_capacity(1 + id.len() + 8 + bytes.len());
    value.push(u8::try_from(id.len()).expect("upload ids are short"));
    value.extend_from_slice(id);
    value.extend_from_slice(&at.to_be_bytes());
    value.extend_from_slice(bytes);
    value
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<JournalEntry, SessionError> {
    let corrupt = |message: &str| SessionError::Corrupt {
        id: format!("journal entry {key:?}"),
        message: message.to_owned(),
    };
    let seq = <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("bad key"))?;
    let (&id_len, rest) = value.split_first().ok_or_else(|| corrupt("empty"))?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + 8 {
        return Err(corrupt("truncated"));
    }
    let (id, rest) = rest.split_at(id_len);
    let (at, bytes) = rest.split_at(8);
    let id = std::str::from_utf8(id)
        .ok()
        .and_then(UploadId::parse)
        .ok_or_else(|| corrupt("bad upload id"))?;
    Ok(JournalEntry {
        seq,
        id,
        at: u64::from_be_bytes(at.try_into().expect("8 bytes")),
        bytes: bytes.to_vec(),
    })
}

#[async_trait]
impl CommitJournal for SledSessionStore {
    async fn put_with_bytes(
        &self,
        info: &UploadInfo,
        at: u64,
        bytes: &[u8],
    ) -> Result<(), SessionError> {
        let record = Self::encode(info)?;
        let pieces: Vec<(u64, &[u8])> = bytes
            .chunks(PIECE)
            .enumerate()
            .map(|(i, piece)| (at + (i * PIECE) as u64, piece))
            .collect();
        let entries: Vec<Vec<u8>> = pieces
            .iter()
            .map(|&(at, piece)| encode_entry(&info.id, at, piece))
            .collect();
        {
            let mut recent = self.recent();
            // Issued after the bytes were written (the caller's order), so a drain that starts
            // from a later number syncs them.
            let first = self
                .next_seq
                .fetch_add(entries.len() as u64, Ordering::SeqCst);
            // No sled transaction (they cost more than the insert): the entries go into the
            // log before the record, sled recovers a prefix of its log, so a record that
            // survives a crash has its entries with it.
            for (seq, entry) in (first..).zip(&entries) {
                self.journal.insert(seq.to_be_bytes(), &entry[..])?;
            }
            self.uploads.insert(info.id.as_str(), &record[..])?;
            recent.put(info.id.clone(), info.clone());
        }
        SessionStore::flush(self).await
    }

    fn entries(&self) -> Result<Vec<JournalEntry>, SessionError> {
        self.journal
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode_entry(&key, &value)
            })
            .collect()
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    fn forget_before(&self, seq: u64) -> Result<u64, SessionError> {
        let mut freed = 0;
        for entry in self.journal.range(..seq.to_be_bytes()) {
            let (key, value) = entry?;
            self.journal.remove(key)?;
            freed += value.len() as u64;
        }
        Ok(freed)
    }
}

/// The sequence number after the journal's last entry (0 for an empty journal).
pub(super) fn seq_after(journal: &sled::Tree) -> Result<u64, SessionError> {
    Ok(match journal.last()? {
        Some((key, _)) => <[u8; 8]>::try_from(&key[..]).map_or(0, u64::from_be_bytes) + 1,
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::upload::{Concat, UploadState};

    fn record(offset: u64) -> UploadInfo {
        UploadInfo {
            id: UploadId::random(),
            length: Some(100),
            offset,
            metadata: String::new(),
            created_at: 1,
            expires_at: None,
            concat: Concat::None,
            state: UploadState::Uploading,
            owner: None,
        }
    }

    #[tokio::test]
    async fn a_large_write_is_kept_in_pieces_that_add_up_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledSessionStore::open(dir.path(), Durability::Fsync).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        store
            .put_with_bytes(&record(10_000), 100, &bytes)
            .await
            .unwrap();
        let entries = store.entries().unwrap();
        let layout: Vec<_> = entries.iter().map(|e| (e.at, e.bytes.len())).collect();
        assert_eq!(layout, vec![(100, 4096), (4196, 4096), (8292, 1808)]);
        let joined: Vec<u8> = entries.iter().flat_map(|e| e.bytes.clone()).collect();
        assert_eq!(joined, bytes);
    }

    #[tokio::test]
    async fn entries_and_their_records_survive_reopening_and_are_dropped_once_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut info = record(4);
        {
            let store = SledSessionStore::open(dir.path(), Durability::Fsync).unwrap();
            store.put_with_bytes(&info, 0, b"abcd").await.unwrap();
            info.offset = 7;
            store.put_with_bytes(&info, 4, b"efg").await.unwrap();
        }
        let store = SledSessionStore::open(dir.path(), Durability::Fsync).unwrap();
        assert_eq!(store.get(&info.id).await.unwrap(), Some(info.clone()));
        let entries = store.entries().unwrap();
        let found: Vec<_> = entries
            .iter()
            .map(|e| (e.seq, e.id.clone(), e.at, e.bytes.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (0, info.id.clone(), 0, b"abcd".to_vec()),
                (1, info.id.clone(), 4, b"efg".to_vec()),
            ]
        );
        // Numbering goes on after a restart, so old and new entries never share a number.
        assert_eq!(store.next_seq(), 2);
        assert_eq!(store.forget_before(1).unwrap(), 1 + 32 + 8 + 4);
        assert_eq!(store.entries().unwrap().len(), 1);
        assert_eq!(
            store.forget_before(store.next_seq()).unwrap(),
            1 + 32 + 8 + 3
        );
        assert!(store.entries().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_entry_is_reported_not_misread() {
        let id = UploadId::random();
        let value = encode_entry(&id, 9, b"xyz");
        let entry = decode_entry(&5u64.to_be_bytes(), &value).unwrap();
        assert_eq!((entry.seq, entry.at, &entry.bytes[..]), (5, 9, &b"xyz"[..]));
        assert!(decode_entry(&5u64.to_be_bytes(), &value[..20]).is_err());
        assert!(decode_entry(b"short", &value).is_err());
    }
}
