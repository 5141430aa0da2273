//! Pure parsing and formatting of the draft's header fields (RFC 9651 structured fields, the
//! small subset the draft uses) and of RFC 9530 digest fields.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::checksum::Algorithm;

/// An sf-integer that is non-negative: up to 15 digits (RFC 9651 §3.3.1), nothing else.
/// The draft says other values make the field ignored; callers decide what "ignored" costs.
pub fn sf_non_negative_integer(value: &str) -> Option<u64> {
    let digits = value.trim_matches(|c| c == ' ' || c == '\t');
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An sf-boolean: `?1` or `?0` (RFC 9651 §3.3.6).
pub fn sf_boolean(value: &str) -> Option<bool> {
    match value.trim_matches(|c| c == ' ' || c == '\t') {
        "?1" => Some(true),
        "?0" => Some(false),
        _ => None,
    }
}

/// The sf-boolean form of `value`.
pub fn sf_boolean_text(value: bool) -> &'static str {
    if value {
        "?1"
    } else {
        "?0"
    }
}

/// Why an RFC 9530 digest field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not a dictionary of `algorithm=:base64:` members.
    #[error("{0} must be a dictionary like sha-256=:base64:")]
    Malformed(&'static str),
    /// A known algorithm with a digest of the wrong length.
    #[error("{0}: the {1} digest has the wrong length")]
    WrongLength(&'static str, &'static str),
}

/// The strongest digest we can check in a `Content-Digest` / `Repr-Digest` dictionary.
///
/// RFC 9530 §2: algorithms we do not know are ignored (so a field with only those is `None`);
/// of `sha-512` and `sha-256` the stronger one is used.
///
/// # Errors
/// A member that is not a byte sequence, or a known algorithm with a digest of the wrong length.
pub fn strongest_digest(
    field: &'static str,
    value: &str,
) -> Result<Option<(Algorithm, Vec<u8>)>, DigestError> {
    let mut best: Option<(Algorithm, Vec<u8>)> = None;
    for member in value.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let (key, rest) = member
            .split_once('=')
            .ok_or(DigestError::Malformed(field))?;
        // Parameters on a member are allowed by RFC 9651 and mean nothing here.
        let item = rest.split(';').next().unwrap_or_default();
        let encoded = item
            .strip_prefix(':')
            .and_then(|s| s.strip_suffix(':'))
            .ok_or(DigestError::Malformed(field))?;
        let digest = B64
            .decode(encoded)
            .map_err(|_| DigestError::Malformed(field))?;
        let (algorithm, name) = match key.trim() {
            "sha-512" => (Algorithm::Sha512, "sha-512"),
            "sha-256" => (Algorithm::Sha256, "sha-256"),
            _ => continue,
        };
        if digest.len() != algorithm.digest_len() {
            return Err(DigestError::WrongLength(field, name));
        }
        let stronger = best
            .as_ref()
            .is_none_or(|(have, _)| *have == Algorithm::Sha256 && algorithm == Algorithm::Sha512);
        if stronger {
            best = Some((algorithm, digest));
        }
    }
    Ok(best)
}

/// `Upload-Limit` members (RFC 9651 dictionary of integers), in the order given, skipping
/// absent ones.
pub fn limit_dictionary(members: &[(&str, Option<u64>)]) -> Option<String> {
    let parts: Vec<String> = members
        .iter()
        .filter_map(|(key, value)| value.map(|v| format!("{key}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The `filename` parameter of a `Content-Disposition` value (RFC 6266), quoted or a token.
/// `filename*` (RFC 8187 encoding) is not decoded; such a name is left out.
pub fn disposition_filename(value: &str) -> Option<String> {
    let (_, params) = value.split_once(';')?;
    let mut rest = params;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (raw, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut text = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => text.extend(chars.next().map(|(_, c)| c)),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => text.push(c),
                    }
                }
                (text, &quoted[end?..])
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        if name.trim().eq_ignore_ascii_case("filename") && !raw.is_empty() {
            return Some(raw);
        }
        rest = tail
            .trim_start()
            .strip_prefix(';')
            .unwrap_or(tail.trim_start());
        if rest.len() == tail.len() && !tail.is_empty() {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disposition_filename_is_read_quoted_or_plain() {
        assert_eq!(
            disposition_filename(r#"inline; filename="a \"b\".png""#),
            Some(r#"a "b".png"#.to_owned())
        );
        assert_eq!(
            disposition_filename("attachment; size=3; filename=x.txt"),
            Some("x.txt".to_owned())
        );
        assert_eq!(disposition_filename("inline"), None);
        assert_eq!(disposition_filename("inline; filename*=UTF-8''x"), None);
        assert_eq!(disposition_filename(r#"inline; filename="open"#), None);
    }

    #[test]
    fn integers_are_plain_non_negative_digits() {
        assert_eq!(sf_non_negative_integer("0"), Some(0));
        assert_eq!(sf_non_negative_integer(" 42 "), Some(42));
        assert_eq!(sf_non_negative_integer("-1"), None);
        assert_eq!(sf_non_negative_integer("1.5"), None);
        assert_eq!(sf_non_negative_integer(""), None);
        assert_eq!(sf_non_negative_integer("1234567890123456"), None);
        assert_eq!(sf_non_negative_integer("+3"), None);
    }

    #[test]
    fn booleans_are_question_mark_one_or_zero() {
        assert_eq!(sf_boolean("?1"), Some(true));
        assert_eq!(sf_boolean("?0"), Some(false));
        assert_eq!(sf_boolean("true"), None);
        assert_eq!(sf_boolean("1"), None);
        assert_eq!(sf_boolean("?2"), None);
    }

    #[test]
    fn the_strongest_known_digest_is_chosen() {
        let sha256 = B64.encode([1u8; 32]);
        let sha512 = B64.encode([2u8; 64]);
        let value = format!("md5=:AAAA:, sha-256=:{sha256}:, sha-512=:{sha512}:");
        assert_eq!(
            strongest_digest("Content-Digest", &value),
            Ok(Some((Algorithm::Sha512, vec![2u8; 64])))
        );
        assert_eq!(
            strongest_digest("Content-Digest", &format!("sha-256=:{sha256}:")),
            Ok(Some((Algorithm::Sha256, vec![1u8; 32])))
        );
        assert_eq!(strongest_digest("Repr-Digest", "unixsum=:AAAA:"), Ok(None));
    }

    #[test]
    fn malformed_digests_are_refused() {
        assert!(strongest_digest("Content-Digest", "sha-256=abc").is_err());
        assert!(strongest_digest("Content-Digest", "sha-256=:AAAA:").is_err());
        assert!(strongest_digest("Content-Digest", "sha-256").is_err());
        assert!(strongest_digest("Content-Digest", "sha-256=:!!:").is_err());
    }

    #[test]
    fn limits_are_a_dictionary_of_the_set_members() {
        assert_eq!(
            limit_dictionary(&[("max-size", Some(10)), ("max-append-size", None)]),
            Some("max-size=10".to_owned())
        );
        assert_eq!(limit_dictionary(&[("max-size", None)]), None);
    }
}
