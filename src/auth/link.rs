//! Signed download links: a URL for GET of one finished upload that works without a token
//! until it expires (the HMAC file server's way of sharing a file).
//!
//! The signature is HMAC-SHA256 over `tusk-download-link\n{id}\n{expires}`; the prefix keeps a
//! link signature from ever being valid as anything else signed with the same key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::{Key, Keyring};

/// The query parameter holding a link's signature: the secret part of a link, kept out of
/// what hooks see of a request.
pub const SIGNATURE_PARAM: &str = "signature";

/// The query parameters a link carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkParams {
    /// Unix seconds after which the link no longer works.
    pub expires: u64,
    /// The signing key's id, if it has one.
    pub kid: Option<String>,
    /// base64url HMAC.
    pub signature: String,
}

impl LinkParams {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        match &self.kid {
            Some(kid) => format!(
                "expires={}&kid={kid}&signature={}",
                self.expires, self.signature
            ),
            None => format!("expires={}&signature={}", self.expires, self.signature),
        }
    }

    /// Read `expires`, `kid` and `signature` from a raw query; `None` when the query carries
    /// no `signature` (then it is not a link request at all).
    ///
    /// # Errors
    /// [`LinkError::Malformed`] when `signature` is there but `expires` is missing or bad.
    pub fn from_query(query: &str) -> Result<Option<LinkParams>, LinkError> {
        let mut params = LinkParams::default();
        let mut expires = None;
        let mut signed = false;
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "expires" => expires = Some(value.parse().map_err(|_| LinkError::Malformed)?),
                "kid" => params.kid = Some(value.to_owned()),
                SIGNATURE_PARAM => {
                    signed = true;
                    value.clone_into(&mut params.signature);
                }
                _ => {}
            }
        }
        if !signed {
            return Ok(None);
        }
        params.expires = expires.ok_or(LinkError::Malformed)?;
        Ok(Some(params))
    }
}

/// Why a link does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// `expires` missing or not a number.
    #[error("malformed download link")]
    Malformed,
    /// The signature does not match (or names an unknown key).
    #[error("invalid download link signature")]
    Signature,
    /// Past `expires`.
    #[error("download link expired")]
    Expired,
}

/// Sign a link to `id` valid until `expires`.
pub fn sign(key: &Key, id: &str, expires: u64) -> LinkParams {
    LinkParams {
        expires,
        kid: key.id.clone(),
        signature: URL_SAFE_NO_PAD.encode(mac(key, id, expires).finalize().into_bytes()),
    }
}

/// Check a link to `id` at `now`.
///
/// # Errors
/// [`LinkError::Signature`] or [`LinkError::Expired`].
pub fn verify(keys: &Keyring, id: &str, link: &LinkParams, now: u64) -> Result<(), LinkError> {
    let signature = URL_SAFE_NO_PAD
        .decode(&link.signature)
        .map_err(|_| LinkError::Signature)?;
    let signed = keys
        .candidates(link.kid.as_deref())
        .any(|key| mac(key, id, link.expires).verify_slice(&signature).is_ok());
    if !signed {
        return Err(LinkError::Signature);
    }
    if now > link.expires {
        return Err(LinkError::Expired);
    }
    Ok(())
}

fn mac(key: &Key, id: &str, expires: u64) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.secret()).expect("HMAC accepts any key length");
    mac.update(format!("tusk-download-link\n{id}\n{expires}").as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keyring {
        Keyring::parse("k 0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn links_round_trip_through_the_query() {
        let keys = keys();
        let link = sign(keys.signing_key(), "abc", 2000);
        let parsed = LinkParams::from_query(&link.to_query()).unwrap().unwrap();
        assert_eq!(parsed, link);
        assert_eq!(verify(&keys, "abc", &parsed, 1999), Ok(()));
        assert_eq!(verify(&keys, "abc", &parsed, 2001), Err(LinkError::Expired));
    }

    #[test]
    fn a_link_opens_only_its_upload_until_its_time() {
        let keys = keys();
        let link = sign(keys.signing_key(), "abc", 2000);
        assert_eq!(verify(&keys, "abd", &link, 0), Err(LinkError::Signature));
        let stretched = LinkParams {
            expires: 9999,
            ..link.clone()
        };
        assert_eq!(
            verify(&keys, "abc", &stretched, 0),
            Err(LinkError::Signature)
        );
    }

    #[test]
    fn queries_without_a_signature_are_not_links() {
        assert_eq!(LinkParams::from_query("token=x"), Ok(None));
        assert_eq!(LinkParams::from_query(""), Ok(None));
        assert_eq!(
            LinkParams::from_query("signature=x"),
            Err(LinkError::Malformed)
        );
    }
}
