//! HS256 JSON Web Tokens (RFC 7519) in compact form: `base64url(header).base64url(claims).
//! base64url(HMAC-SHA256(key, header.claims))`.
//!
//! Only HS256 is accepted. `alg: none` and every other algorithm are refused before a key is
//! touched (the classic JWT confusions), `crit` headers are refused, and the signature is
//! checked in constant time (hmac's `verify_slice`) before the claims are read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::keys::{Key, Keyring};

type HmacSha256 = Hmac<Sha256>;

/// Longer tokens are refused unread: nothing legitimate is this big.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest owner name (`sub`); it ends up in records, logs and metrics labels.
const MAX_SUBJECT_LEN: usize = 256;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The owner.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Largest upload this token may create, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Uploads this owner may create per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uploads: Option<u32>,
    /// Allowed `filetype` metadata values (`image/png`, `image/*`); absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filetypes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Why a token was refused (the reason is shown to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not HS256 (`none` included).
    #[error("unsupported token algorithm {0:?}: only HS256 is accepted")]
    Algorithm(String),
    /// The header lists extensions we must understand but do not.
    #[error("token has critical header extensions")]
    Critical,
    /// The `kid` names no key of ours.
    #[error("unknown key id")]
    UnknownKey,
    /// No key produced this signature.
    #[error("invalid token signature")]
    Signature,
    /// The claims are not what tusk needs (missing `sub` or `exp`, wrong types).
    #[error("invalid token claims: {0}")]
    Claims(String),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead.
    #[error("token not yet valid")]
    NotYetValid,
}

/// Sign `claims` with `key`.
pub fn sign(claims: &Claims, key: &Key) -> String {
    let header = Header {
        alg: "HS256".to_owned(),
        typ: Some("JWT".to_owned()),
        kid: key.id.clone(),
        crit: None,
    };
    let signing_input = format!("{}.{}", encode_json(&header), encode_json(claims));
    let signature =
        URL_SAFE_NO_PAD.encode(mac(key, signing_input.as_bytes()).finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Verify `token` against `keys` at time `now` (Unix seconds), allowing `skew` seconds of
/// clock difference for `exp` and `nbf`.
///
/// # Errors
/// A [`TokenError`] saying which check failed.
pub fn verify(token: &str, keys: &Keyring, now: u64, skew: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(header)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg));
    }
    if header.crit.is_some() {
        return Err(TokenError::Critical);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let (signing_input, _) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let mut candidates = keys.candidates(header.kid.as_deref()).peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    let signed = candidates.any(|key| {
        mac(key, signing_input.as_bytes())
            .verify_slice(&signature)
            .is_ok()
    });
    if !signed {
        return Err(TokenError::Signature);
    }
    let claims: Claims = decode_json(claims).map_err(|_| {
        TokenError::Claims("need \"sub\" (string) and \"exp\" (Unix seconds)".to_owned())
    })?;
    if claims.sub.is_empty()
        || claims.sub.len() > MAX_SUBJECT_LEN
        || claims.sub.chars().any(is_hidden)
    {
        return Err(TokenError::Claims(
            "\"sub\" must be 1 to 256 printable characters, without invisible or \
             direction-changing ones"
                .to_owned(),
        ));
    }
    if now > claims.exp.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// Characters an owner name may not contain: controls, and the invisible and bidirectional
/// formatting characters that make a name look like another in logs and the admin API
/// (zero-width spaces and joiners, direction marks, embeddings, overrides and isolates).
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{FEFF}'
        )
}

fn mac(key: &Key, input: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key.secret()).expect("HMAC accepts any key length");
    mac.update(input);
    mac
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn encode_json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings and numbers always serialize.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Keyring {
        Keyring::parse(text).unwrap()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".to_owned(),
            exp,
            nbf: None,
            iat: None,
            max_size: Some(1024),
            max_uploads: None,
            filetypes: Some(vec!["image/*".to_owned()]),
        }
    }

    const KEY: &str = "k1 0123456789abcdef0123456789abcdef";

    #[test]
    fn signed_tokens_verify_and_keep_their_claims() {
        let keys = ring(KEY);
        let token = sign(&claims(2000), keys.signing_key());
        assert_eq!(verify(&token, &keys, 1000, 0), Ok(claims(2000)));
    }

    #[test]
    fn a_known_token_from_another_implementation_verifies() {
        // HS256 over the secret below, made with Python's hmac/base64 (not with `sign`).
        let keys = ring("secretsecretsecretsecretsecretsecret");
        let token =
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJleHAiOjQxMDI0NDQ4MDB9.\
                     rz1NGTVv-2olbgCeOptTZlNoIzZMA1AGdsGEi1--wc8";
        let claims = verify(token, &keys, 1_700_000_000, 0).unwrap();
        assert_eq!(claims.sub, "bob");
    }

    #[test]
    fn expiry_and_not_before_honour_the_skew() {
        let keys = ring(KEY);
        let token = sign(&claims(1000), keys.signing_key());
        assert_eq!(verify(&token, &keys, 1001, 0), Err(TokenError::Expired));
        assert!(verify(&token, &keys, 1001, 30).is_ok());
        let mut early = claims(5000);
        early.nbf = Some(2000);
        let token = sign(&early, keys.signing_key());
        assert_eq!(
            verify(&token, &keys, 1000, 30),
            Err(TokenError::NotYetValid)
        );
        assert!(verify(&token, &keys, 1990, 30).is_ok());
    }

    #[test]
    fn tampering_other_keys_and_other_algorithms_are_refused() {
        let keys = ring(KEY);
        let token = sign(&claims(2000), keys.signing_key());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":2000}"#);
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            verify(&tampered, &keys, 1000, 0),
            Err(TokenError::Signature)
        );

        let other = ring("k1 ffffffffffffffffffffffffffffffff");
        assert_eq!(verify(&token, &other, 1000, 0), Err(TokenError::Signature));
        let renamed = ring("k2 0123456789abcdef0123456789abcdef");
        assert_eq!(
            verify(&token, &renamed, 1000, 0),
            Err(TokenError::UnknownKey)
        );

        for alg in ["none", "HS512", "RS256", "hs256"] {
            parts[0] = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","kid":"k1"}}"#));
            let token = parts.join(".");
            assert_eq!(
                verify(&token, &keys, 1000, 0),
                Err(TokenError::Algorithm(alg.to_owned()))
            );
        }
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"a","exp":9999999999}"#)
        );
        assert!(matches!(
            verify(&none, &keys, 1000, 0),
            Err(TokenError::Algorithm(_))
        ));
    }

    #[test]
    fn owners_with_invisible_or_direction_characters_are_refused() {
        let keys = ring(KEY);
        for sub in [
            "ali\u{200B}ce",
            "\u{202E}ecila",
            "alice\u{2066}",
            "a\u{200F}",
            "a\u{FEFF}",
            "a\u{7}",
            "a\u{85}",
        ] {
            let mut bad = claims(2000);
            bad.sub = sub.to_owned();
            let token = sign(&bad, keys.signing_key());
            assert!(
                matches!(verify(&token, &keys, 1000, 0), Err(TokenError::Claims(_))),
                "{sub:?} accepted"
            );
        }
        let mut fine = claims(2000);
        fine.sub = "Zoë Åström-李".to_owned();
        let token = sign(&fine, keys.signing_key());
        assert_eq!(verify(&token, &keys, 1000, 0), Ok(fine));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let keys = ring(KEY);
        for token in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(9000)] {
            assert_eq!(
                verify(token, &keys, 0, 0),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
    }

    #[test]
    fn rotated_keys_verify_old_tokens() {
        let old = ring("old 0123456789abcdef0123456789abcdef");
        let token = sign(&claims(2000), old.signing_key());
        let both =
            ring("new ffffffffffffffffffffffffffffffff\nold 0123456789abcdef0123456789abcdef");
        assert!(verify(&token, &both, 1000, 0).is_ok());
        assert_eq!(both.signing_key().id.as_deref(), Some("new"));
    }
}
