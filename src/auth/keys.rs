//! The HMAC keys tokens and download links are signed with.
//!
//! A key file (or the `TUSK_AUTH_SECRET` environment variable) holds one key per line:
//! `SECRET` or `KID SECRET`. The first key signs (`tusk token`, download links); every key
//! verifies. To rotate without downtime, put the new key (with a new id) first, keep the old
//! one until the tokens it signed have expired, then remove it.

use std::fmt;
use std::path::Path;

/// Fewer bytes than this are refused: HS256 wants a key at least as long as its output.
pub const MIN_SECRET_LEN: usize = 32;

/// One signing key.
#[derive(Clone)]
pub struct Key {
    /// The `kid` tokens name it by, if any.
    pub id: Option<String>,
    secret: Vec<u8>,
}

impl Key {
    /// The secret bytes (for HMAC only; never log them).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?}, ***)", self.id)
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// A line is not `SECRET` or `KID SECRET`, or a secret is too short.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// No key at all.
    #[error("no key found (one key per line: SECRET or KID SECRET)")]
    Empty,
}

/// Every key tusk accepts; the first one signs.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// Read a key file.
    ///
    /// # Errors
    /// When the file cannot be read or a line is invalid.
    pub fn from_file(path: &Path) -> Result<Keyring, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Keyring::parse(&text)
    }

    /// Parse key lines; blank lines and `#` comments are skipped.
    ///
    /// # Errors
    /// A line with more than two fields, a secret shorter than [`MIN_SECRET_LEN`], a key id
    /// used twice, or no key.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fail = |reason| KeyError::Line {
                line: index + 1,
                reason,
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, secret) = match fields.as_slice() {
                [secret] => (None, *secret),
                [id, secret] => (Some((*id).to_owned()), *secret),
                _ => return Err(fail("expected SECRET or KID SECRET")),
            };
            if secret.len() < MIN_SECRET_LEN {
                return Err(fail("the secret must be at least 32 characters"));
            }
            if id.is_some() && keys.iter().any(|k| k.id == id) {
                return Err(fail("this key id is used twice"));
            }
            keys.push(Key {
                id,
                secret: secret.as_bytes().to_vec(),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The key new tokens and links are signed with.
    pub fn signing_key(&self) -> &Key {
        &self.keys[0]
    }

    /// The keys that may have signed something naming `kid`: that key alone when an id is
    /// given, else the keys without an id.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |key| key.id.as_deref() == kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn lines_with_and_without_ids() {
        let ring = Keyring::parse(&format!("# keys\n\nnew {A}\n{B}\n")).unwrap();
        assert_eq!(ring.signing_key().id.as_deref(), Some("new"));
        assert_eq!(ring.candidates(Some("new")).count(), 1);
        assert_eq!(ring.candidates(None).count(), 1);
        assert_eq!(ring.candidates(Some("other")).count(), 0);
    }

    #[test]
    fn short_secrets_duplicates_and_empty_files_are_refused() {
        assert!(matches!(
            Keyring::parse("short"),
            Err(KeyError::Line { line: 1, .. })
        ));
        assert!(matches!(
            Keyring::parse(&format!("k {A}\nk {B}")),
            Err(KeyError::Line { line: 2, .. })
        ));
        assert!(matches!(
            Keyring::parse("# nothing\n"),
            Err(KeyError::Empty)
        ));
        assert!(matches!(
            Keyring::parse(&format!("a b {A}")),
            Err(KeyError::Line { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let ring = Keyring::parse(A).unwrap();
        assert!(!format!("{ring:?}").contains(A));
    }
}
