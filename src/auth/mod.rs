//! Who may do what: HS256 bearer tokens, upload ownership, signed download links and
//! per-owner limits.
//!
//! This layer knows tokens, keys and owners, not HTTP: [`crate::protocol::access`] takes the
//! token out of the request and turns refusals into statuses.
//!
//! - [`keys`] — the key ring (several keys at once, by key id, for rotation).
//! - [`jwt`] — HS256 JSON Web Tokens.
//! - [`link`] — signed download links.
//! - [`limits`] — per-owner creations per hour and uploads in flight.

pub mod jwt;
pub mod keys;
pub mod limits;
pub mod link;

use std::path::Path;

use crate::config::{AuthMode, AuthSettings};
use jwt::{Claims, TokenError};
use keys::{KeyError, Keyring};
use limits::OwnerLedger;
use link::{LinkError, LinkParams};

/// The environment variable that may hold the keys instead of `auth.secret_file`.
pub const SECRET_ENV: &str = "TUSK_AUTH_SECRET";

/// An authenticated client: the owner a token names, and what the token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The owner (`sub`).
    pub owner: String,
    /// Largest upload this client may create (token claim, else `auth.max_upload_size`).
    pub max_size: Option<u64>,
    /// Creations per hour (token claim, else `auth.max_uploads_per_hour`).
    pub uploads_per_hour: Option<u32>,
    /// Allowed `filetype` metadata values; `None` = any.
    pub filetypes: Option<Vec<String>>,
}

impl Principal {
    /// Whether a `filetype` metadata value (or its absence) is allowed.
    pub fn allows_filetype(&self, filetype: Option<&str>) -> bool {
        let Some(allowed) = &self.filetypes else {
            return true;
        };
        let Some(filetype) = filetype else {
            return false;
        };
        let filetype = filetype.trim().to_ascii_lowercase();
        allowed.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_suffix("/*") {
                Some(family) => filetype
                    .split_once('/')
                    .is_some_and(|(kind, _)| kind == family),
                None => pattern == filetype || pattern == "*/*",
            }
        })
    }
}

/// Why authentication could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Token mode without any key.
    #[error("auth.mode = \"token\" needs keys: set auth.secret_file (or --auth-secret-file) or {SECRET_ENV}")]
    NoKeys,
    /// The keys could not be read.
    #[error("auth.secret_file {path}: {source}")]
    Keys {
        /// Where they came from.
        path: String,
        /// What is wrong.
        source: KeyError,
    },
}

/// The server's authentication state.
#[derive(Debug)]
pub struct Authority {
    settings: AuthSettings,
    keys: Option<Keyring>,
    /// Per-owner accounting for limits.
    pub ledger: OwnerLedger,
}

impl Authority {
    /// Set up from `[auth]`, reading keys from the file, or else from `secret_env`.
    ///
    /// # Errors
    /// Token mode without keys, or keys that cannot be read.
    pub fn new(
        settings: &AuthSettings,
        secret_env: Option<String>,
    ) -> Result<Authority, AuthSetupError> {
        let keys = load_keys(&settings.secret_file, secret_env)?;
        if settings.mode == AuthMode::Token && keys.is_none() {
            return Err(AuthSetupError::NoKeys);
        }
        Ok(Authority {
            settings: settings.clone(),
            keys,
            ledger: OwnerLedger::new(),
        })
    }

    /// Whether requests need a token.
    pub fn requires_token(&self) -> bool {
        self.settings.mode == AuthMode::Token
    }

    /// The query parameter a token may arrive in, if enabled.
    pub fn query_param(&self) -> Option<&str> {
        Some(self.settings.query_param.as_str()).filter(|p| !p.is_empty())
    }

    /// Verify a bearer token at `now` (Unix seconds).
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str, now: u64) -> Result<Principal, TokenError> {
        let keys = self.keys.as_ref().ok_or(TokenError::UnknownKey)?;
        let claims = jwt::verify(token, keys, now, self.settings.clock_skew.0.as_secs())?;
        Ok(self.principal(claims))
    }

    fn principal(&self, claims: Claims) -> Principal {
        let non_zero = |v: u64| (v != 0).then_some(v);
        Principal {
            owner: claims.sub,
            max_size: claims
                .max_size
                .or_else(|| non_zero(self.settings.max_upload_size.0)),
            uploads_per_hour: claims.max_uploads.or_else(|| {
                (self.settings.max_uploads_per_hour != 0)
                    .then_some(self.settings.max_uploads_per_hour)
            }),
            filetypes: claims.filetypes,
        }
    }

    /// Bytes an owner may have announced but not yet uploaded, if limited.
    pub fn max_bytes_in_flight(&self) -> Option<u64> {
        Some(self.settings.max_bytes_in_flight.0).filter(|&v| v != 0)
    }

    /// A signed link to `id`, valid for `ttl_secs` from `now` (capped by `auth.link_max_ttl`);
    /// `None` without keys.
    pub fn sign_link(&self, id: &str, ttl_secs: u64, now: u64) -> Option<LinkParams> {
        let ttl = ttl_secs.min(self.settings.link_max_ttl.0.as_secs());
        let keys = self.keys.as_ref()?;
        Some(link::sign(keys.signing_key(), id, now.saturating_add(ttl)))
    }

    /// Check a signed link to `id` at `now`.
    ///
    /// # Errors
    /// Why the link does not open.
    pub fn verify_link(&self, id: &str, params: &LinkParams, now: u64) -> Result<(), LinkError> {
        let keys = self.keys.as_ref().ok_or(LinkError::Signature)?;
        link::verify(keys, id, params, now)
    }

    /// Default link lifetime when the owner does not ask for one.
    pub fn default_link_ttl(&self) -> u64 {
        3600u64.min(self.settings.link_max_ttl.0.as_secs())
    }
}

/// Keys from `file` (when set) or from the environment variable's value.
///
/// # Errors
/// When the file cannot be read or holds invalid lines.
pub fn load_keys(
    file: &Path,
    secret_env: Option<String>,
) -> Result<Option<Keyring>, AuthSetupError> {
    if !file.as_os_str().is_empty() {
        return Keyring::from_file(file)
            .map(Some)
            .map_err(|source| AuthSetupError::Keys {
                path: file.display().to_string(),
                source,
            });
    }
    match secret_env.filter(|v| !v.trim().is_empty()) {
        Some(text) => Keyring::parse(&text)
            .map(Some)
            .map_err(|source| AuthSetupError::Keys {
                path: SECRET_ENV.to_owned(),
                source,
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(filetypes: Option<&[&str]>) -> Principal {
        Principal {
            owner: "a".to_owned(),
            max_size: None,
            uploads_per_hour: None,
            filetypes: filetypes.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn filetype_patterns() {
        assert!(principal(None).allows_filetype(None));
        let images = principal(Some(&["image/*", "application/pdf"]));
        assert!(images.allows_filetype(Some("image/png")));
        assert!(images.allows_filetype(Some("Application/PDF")));
        assert!(!images.allows_filetype(Some("video/mp4")));
        assert!(!images.allows_filetype(Some("imagex/png")));
        assert!(!images.allows_filetype(None));
    }

    #[test]
    fn token_mode_needs_keys() {
        let settings = AuthSettings {
            mode: AuthMode::Token,
            ..AuthSettings::default()
        };
        assert!(matches!(
            Authority::new(&settings, None),
            Err(AuthSetupError::NoKeys)
        ));
        let authority = Authority::new(
            &settings,
            Some("0123456789abcdef0123456789abcdef".to_owned()),
        )
        .unwrap();
        assert!(authority.requires_token());
    }
}
