//! AWS Signature Version 4 for S3 requests (header form, `Authorization: AWS4-HMAC-SHA256 …`).
//!
//! Only what tusk's client sends: path-style URLs, a query string, the `host` header and the
//! `x-amz-*` headers signed, payload either `UNSIGNED-PAYLOAD` or a SHA-256 hex digest.
//! Reference: <https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The `x-amz-content-sha256` value for a body that is not hashed.
///
/// S3 (and s3s) accept it over plain HTTP too; it saves hashing every part a second time
/// (TCP checksums and the part's `Content-Length` already guard the transfer).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The SHA-256 of an empty body, hex: what GET/HEAD/DELETE requests declare.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Credentials and scope of every signature.
#[derive(Clone)]
pub struct Signer {
    access_key: String,
    secret_key: String,
    region: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("access_key", &self.access_key)
            .field("secret_key", &"***")
            .field("region", &self.region)
            .finish()
    }
}

/// What one request contributes to its signature.
#[derive(Debug)]
pub struct Canonical<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The path, already URI-encoded with [`encode_path`].
    pub path: &'a str,
    /// Query parameters, not encoded (a parameter without value has `""`).
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign besides `host`, `x-amz-date` and `x-amz-content-sha256`; names lowercase.
    pub headers: &'a [(&'a str, &'a str)],
    /// The `host` header value (`host[:port]`).
    pub host: &'a str,
    /// The `x-amz-content-sha256` value.
    pub payload_hash: &'a str,
}

/// The headers a signed request must carry.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    /// `x-amz-date`, e.g. `20130524T000000Z`.
    pub amz_date: String,
    /// `authorization`.
    pub authorization: String,
}

impl Signer {
    /// A signer for `region` (service `s3`).
    pub fn new(access_key: &str, secret_key: &str, region: &str) -> Signer {
        Signer {
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: region.to_owned(),
        }
    }

    /// Sign `request` now.
    pub fn sign(&self, request: &Canonical<'_>) -> Signed {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.sign_at(request, secs)
    }

    /// Sign `request` as if at `unix_secs` (tests use fixed times).
    pub fn sign_at(&self, request: &Canonical<'_>, unix_secs: u64) -> Signed {
        let amz_date = amz_date(unix_secs);
        let day = &amz_date[..8];

        // Canonical query: parameters sorted by (encoded) name then value, both encoded.
        let mut query: Vec<(String, String)> = request
            .query
            .iter()
            .map(|(k, v)| (encode(k, true), encode(v, true)))
            .collect();
        query.sort();
        let query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");

        // Canonical headers: lowercase names, sorted, values trimmed and inner runs of spaces
        // collapsed to one.
        let mut headers: Vec<(String, String)> = vec![
            ("host".to_owned(), request.host.to_owned()),
            (
                "x-amz-content-sha256".to_owned(),
                request.payload_hash.to_owned(),
            ),
            ("x-amz-date".to_owned(), amz_date.clone()),
        ];
        headers.extend(request.headers.iter().map(|(k, v)| {
            let value = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), value)
        }));
        headers.sort();
        let mut canonical_headers = String::new();
        for (name, value) in &headers {
            let _ = writeln!(canonical_headers, "{name}:{value}");
        }
        let signed_headers = headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(";");

        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            request.method,
            request.path,
            query,
            canonical_headers,
            signed_headers,
            request.payload_hash
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );

        let key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            day.as_bytes(),
        );
        let key = hmac(&key, self.region.as_bytes());
        let key = hmac(&key, b"s3");
        let key = hmac(&key, b"aws4_request");
        let signature = hex(&hmac(&key, string_to_sign.as_bytes()));

        Signed {
            authorization: format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key
            ),
            amz_date,
        }
    }
}

/// SigV4's URI encoding: every byte except `A-Z a-z 0-9 - . _ ~` as `%XX` (uppercase hex);
/// `/` kept when `slash` is false (paths), encoded when true (query parts).
pub fn encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b'/' if !slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// A path as sent and as signed: each segment encoded once (S3 does not double-encode).
pub fn encode_path(path: &str) -> String {
    encode(path, false)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for unix seconds (UTC), without pulling in a date crate.
fn amz_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format_as_amz_date() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        // 2013-05-24T00:00:00Z, the date of AWS's published examples.
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(951_782_400 + 3661), "20000229T010101Z");
    }

    #[test]
    fn encoding_keeps_unreserved_only() {
        assert_eq!(encode("a b/c~d", false), "a%20b/c~d");
        assert_eq!(encode("a b/c~d", true), "a%20b%2Fc~d");
        assert_eq!(encode("é", true), "%C3%A9");
    }

    /// AWS's documented example "GET Object" (S3 API reference, "Signature Calculations for
    /// the Authorization Header: Transferring Payload in a Single Chunk").
    #[test]
    fn matches_the_aws_get_object_example() {
        let signer = Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
        );
        let signed = signer.sign_at(
            &Canonical {
                method: "GET",
                path: "/test.txt",
                query: &[],
                headers: &[("range", "bytes=0-9")],
                host: "examplebucket.s3.amazonaws.com",
                payload_hash: EMPTY_SHA256,
            },
            1_369_353_600,
        );
        assert_eq!(signed.amz_date, "20130524T000000Z");
        assert_eq!(
            signed.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// AWS's documented example "GET Bucket (List Objects)" with query parameters.
    #[test]
    fn matches_the_aws_list_objects_example() {
        let signer = Signer::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
        );
        let signed = signer.sign_at(
            &Canonical {
                method: "GET",
                path: "/",
                query: &[("max-keys", "2"), ("prefix", "J")],
                headers: &[],
                host: "examplebucket.s3.amazonaws.com",
                payload_hash: EMPTY_SHA256,
            },
            1_369_353_600,
        );
        assert!(signed.authorization.ends_with(
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        ));
    }
}
