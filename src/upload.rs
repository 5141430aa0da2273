//! What an upload is: its id and its record.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// `bytes` as lowercase hex, two characters a byte. (Formatting each byte with `{:02x}` cost
/// 10k instructions per id, a sixteenth of a small upload.)
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Length in characters of every id tusk makes.
const ID_LEN: usize = 32;

/// A server-made upload id: 32 lowercase hex characters (128 random bits).
///
/// Parsing is strict, so nothing a client sends in a URL can name a path outside the data
/// directory: an id is validated before sled or the file system sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> UploadId {
        let mut bytes = [0u8; ID_LEN / 2];
        rand::thread_rng().fill_bytes(&mut bytes);
        UploadId(lower_hex(&bytes))
    }

    /// Accept exactly the ids tusk makes; anything else is `None`.
    pub fn parse(text: &str) -> Option<UploadId> {
        let valid = text.len() == ID_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| UploadId(text.to_owned()))
    }

    /// The id as text (safe to use as a file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UploadId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        UploadId::parse(&value).ok_or_else(|| format!("invalid upload id {value:?}"))
    }
}

impl From<UploadId> for String {
    fn from(id: UploadId) -> String {
        id.0
    }
}

/// The role of an upload in the concatenation extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Concat {
    /// An ordinary upload.
    None,
    /// `Upload-Concat: partial`: a piece meant to be joined into a final upload.
    Partial,
    /// `Upload-Concat: final;...`: the join of `parts`, in order.
    Final {
        /// The partial uploads, in order.
        parts: Vec<UploadId>,
        /// Whether the bytes have been joined (concatenation-unfinished lets a final exist
        /// before its parts are complete).
        joined: bool,
    },
}

/// Where an upload is in its life (the seeds' lifecycle). `expired` and `cancelled` are not
/// stored: an expired upload is one whose `expires_at` has passed (until the sweeper deletes
/// it), and a cancelled one is deleted at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Created, no byte yet.
    #[default]
    Initiated,
    /// Bytes are arriving, or the last PATCH ended normally short of the length.
    Uploading,
    /// The last PATCH broke off (connection lost, idle, taken over); waiting for a resume.
    Interrupted,
    /// Every byte is there.
    Completed,
    /// The server lost bytes it had acknowledged (its data file vanished or came back shorter
    /// after a failure of the disk or a power cut): answered 410, never silently restarted.
    Lost,
}

impl UploadState {
    /// Lowercase name, as shown by the admin API and `tusk uploads list`.
    pub fn name(self) -> &'static str {
        match self {
            UploadState::Initiated => "initiated",
            UploadState::Uploading => "uploading",
            UploadState::Interrupted => "interrupted",
            UploadState::Completed => "completed",
            UploadState::Lost => "lost",
        }
    }
}

/// Everything tusk records about one upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    /// The upload's id.
    pub id: UploadId,
    /// Total length, or `None` while deferred (creation-defer-length) or for a final upload
    /// whose parts' lengths are not all known.
    pub length: Option<u64>,
    /// Bytes committed: written and synced before this value was stored.
    pub offset: u64,
    /// Upload-Metadata in header form, exactly as re-encoded from what the client sent.
    pub metadata: String,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// Unix seconds after which an unfinished upload is gone; `None` never expires.
    pub expires_at: Option<u64>,
    /// Role in the concatenation extension.
    pub concat: Concat,
    /// Lifecycle state (records written before it existed read as `initiated`).
    #[serde(default)]
    pub state: UploadState,
    /// The token subject that created it; `None` when created in open mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl UploadInfo {
    /// Whether every byte has arrived (and, for a final upload, been joined).
    pub fn is_finished(&self) -> bool {
        match &self.concat {
            Concat::Final { joined, .. } => *joined,
            Concat::None | Concat::Partial => self.length == Some(self.offset),
        }
    }

    /// Whether the upload has expired at `now` (unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The lifecycle state as people see it: `expired` once past `expires_at`.
    pub fn lifecycle(&self, now: u64) -> &'static str {
        if self.is_expired(now) {
            "expired"
        } else {
            self.state.name()
        }
    }

    /// Whether this is a final upload (never patched).
    pub fn is_final(&self) -> bool {
        matches!(self.concat, Concat::Final { .. })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_writes_two_digits_a_byte() {
        assert_eq!(lower_hex(&[]), "");
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let id = UploadId::random();
        assert_eq!(UploadId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn random_ids_parse_back() {
        let id = UploadId::random();
        assert_eq!(UploadId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn hostile_ids_are_refused() {
        for text in [
            "",
            "../../etc/passwd",
            "0123456789abcdef0123456789abcde/",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcdef0",
            "0123456789abcdef0123456789abcde\0",
            "..",
            &"a".repeat(1000),
        ] {
            assert_eq!(UploadId::parse(text), None, "{text:?}");
        }
    }
}
