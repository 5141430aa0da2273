//! Digest algorithms for the tus checksum extension.
//!
//! The protocol layer only needs to name algorithms and compare finished digests, so this module
//! hides the individual hash crates behind one small streaming [`Hasher`] type.

use std::fmt;

use md5::Md5;
use sha1::{Digest, Sha1};
use sha2::{Sha256, Sha512};

/// Checksum algorithms of the tus checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-1 (20-byte digest); the only algorithm the tus spec requires.
    Sha1,
    /// SHA-256 (32-byte digest).
    Sha256,
    /// SHA-512 (64-byte digest).
    Sha512,
    /// MD5 (16-byte digest); weak, but commonly offered by clients for integrity only.
    Md5,
    /// CRC-32/IEEE (4-byte digest, big-endian), as computed by `crc32fast`.
    Crc32,
}

impl Algorithm {
    /// Every supported algorithm, in the order advertised in Tus-Checksum-Algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::Sha1,
        Algorithm::Sha256,
        Algorithm::Sha512,
        Algorithm::Md5,
        Algorithm::Crc32,
    ];

    /// The lowercase name used on the wire (`Upload-Checksum`, `Tus-Checksum-Algorithm`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Md5 => "md5",
            Algorithm::Crc32 => "crc32",
        }
    }

    /// Looks an algorithm up by its wire name, ignoring ASCII case (clients are inconsistent).
    ///
    /// ```
    /// use tusk::checksum::Algorithm;
    /// assert_eq!(Algorithm::from_name("SHA1"), Some(Algorithm::Sha1));
    /// assert_eq!(Algorithm::from_name("whirlpool"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.name().eq_ignore_ascii_case(name))
    }

    /// Length in bytes of this algorithm's finished digest; used to reject malformed
    /// `Upload-Checksum` values before any body bytes are read.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Md5 => 16,
            Algorithm::Crc32 => 4,
        }
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        let state = match self {
            Algorithm::Sha1 => State::Sha1(Sha1::new()),
            Algorithm::Sha256 => State::Sha256(Sha256::new()),
            // Boxed so the enum is not sized by the largest state (SHA-512 is ~200 bytes).
            Algorithm::Sha512 => State::Sha512(Box::new(Sha512::new())),
            Algorithm::Md5 => State::Md5(Md5::new()),
            Algorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
        };
        Hasher { state }
    }

    /// The `Tus-Checksum-Algorithm` response header value: every supported name, comma-separated.
    pub fn advertised() -> String {
        Self::ALL.map(Algorithm::name).join(",")
    }
}

/// The per-algorithm running state.
enum State {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Box<Sha512>),
    Md5(Md5),
    Crc32(crc32fast::Hasher),
    /// Every algorithm at once, for a digest whose algorithm is named only after the bytes.
    Every(Vec<Hasher>),
}

/// A streaming digest; feed bytes in order with update, then finalize.
pub struct Hasher {
    state: State,
}

impl Hasher {
    /// A hasher computing every supported algorithm at once, for a checksum sent as a trailer
    /// when the stored bytes cannot be read back (an object store serves an upload only once
    /// it is complete); take the digest wanted with [`Hasher::finalize_as`].
    pub fn every() -> Hasher {
        Hasher {
            state: State::Every(Algorithm::ALL.map(Algorithm::hasher).into()),
        }
    }

    /// The algorithm this hasher computes (`None` for [`Hasher::every`]).
    pub fn algorithm(&self) -> Option<Algorithm> {
        match self.state {
            State::Sha1(_) => Some(Algorithm::Sha1),
            State::Sha256(_) => Some(Algorithm::Sha256),
            State::Sha512(_) => Some(Algorithm::Sha512),
            State::Md5(_) => Some(Algorithm::Md5),
            State::Crc32(_) => Some(Algorithm::Crc32),
            State::Every(_) => None,
        }
    }

    /// The digest for `algorithm`, if this hasher computed it.
    pub fn finalize_as(self, algorithm: Algorithm) -> Option<Vec<u8>> {
        match self.state {
            State::Every(hashers) => hashers
                .into_iter()
                .find(|h| h.algorithm() == Some(algorithm))
                .map(Hasher::finalize),
            _ if self.algorithm() == Some(algorithm) => Some(self.finalize()),
            _ => None,
        }
    }

    /// Feeds the next chunk of the input; chunk boundaries do not affect the result.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Sha1(h) => h.update(bytes),
            State::Sha256(h) => h.update(bytes),
            State::Sha512(h) => h.update(bytes),
            State::Md5(h) => h.update(bytes),
            State::Crc32(h) => h.update(bytes),
            State::Every(hashers) => hashers.iter_mut().for_each(|h| h.update(bytes)),
        }
    }

    /// Consumes the hasher and returns the raw digest bytes (`Algorithm::digest_len` long);
    /// crc32 is 4 bytes big-endian, the byte order clients base64-encode.
    pub fn finalize(self) -> Vec<u8> {
        match self.state {
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
            State::Sha512(h) => h.finalize().to_vec(),
            State::Md5(h) => h.finalize().to_vec(),
            State::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            // Not one digest; callers of `every` use `finalize_as`.
            State::Every(_) => Vec::new(),
        }
    }
}

// Hand-written because the hash crates' states are noisy and not meaningful in logs.
impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field(
                "algorithm",
                &self.algorithm().map_or("every", Algorithm::name),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn digest(alg: Algorithm, input: &[u8]) -> String {
        let mut h = alg.hasher();
        h.update(input);
        hex(&h.finalize())
    }

    #[test]
    fn names_round_trip_and_are_case_insensitive() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
            assert_eq!(
                Algorithm::from_name(&alg.name().to_ascii_uppercase()),
                Some(alg)
            );
        }
        assert_eq!(Algorithm::from_name(""), None);
        assert_eq!(Algorithm::from_name("sha-1"), None);
        assert_eq!(Algorithm::from_name(" sha1"), None);
    }

    #[test]
    fn advertised_lists_all_in_order() {
        assert_eq!(Algorithm::advertised(), "sha1,sha256,sha512,md5,crc32");
    }

    #[test]
    fn known_vectors_hello() {
        assert_eq!(
            digest(Algorithm::Sha1, b"hello"),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        assert_eq!(
            digest(Algorithm::Sha256, b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(
            digest(Algorithm::Sha512, b"hello"),
            "9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7\
             2323c3d99ba5c11d7c7acc6e14b8c5da0c4663475c2e5c3adef46f73bcdec043"
        );
        assert_eq!(
            digest(Algorithm::Md5, b"hello"),
            "5d41402abc4b2a76b9719d911017c592"
        );
        assert_eq!(digest(Algorithm::Crc32, b"hello"), "3610a686");
        assert_eq!(digest(Algorithm::Crc32, b"123456789"), "cbf43926");
    }

    #[test]
    fn known_vectors_empty() {
        assert_eq!(
            digest(Algorithm::Sha1, b""),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        assert_eq!(
            digest(Algorithm::Sha256, b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            digest(Algorithm::Sha512, b""),
            "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
             47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
        );
        assert_eq!(
            digest(Algorithm::Md5, b""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(digest(Algorithm::Crc32, b""), "00000000");
        // No update call at all must equal hashing the empty input.
        assert_eq!(
            hex(&Algorithm::Sha1.hasher().finalize()),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn digest_len_matches_output() {
        for alg in Algorithm::ALL {
            let mut h = alg.hasher();
            h.update(b"abc");
            assert_eq!(h.finalize().len(), alg.digest_len(), "{}", alg.name());
        }
    }

    #[test]
    fn chunked_updates_equal_one_update() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for alg in Algorithm::ALL {
            let mut whole = alg.hasher();
            whole.update(&data);
            let whole = whole.finalize();
            for chunk in [1, 3, 64, 127, 4096] {
                let mut h = alg.hasher();
                h.update(&[]);
                for part in data.chunks(chunk) {
                    h.update(part);
                }
                assert_eq!(h.finalize(), whole, "{} chunk {chunk}", alg.name());
            }
        }
    }

    #[test]
    fn hasher_reports_algorithm_and_debug_is_short() {
        for alg in Algorithm::ALL {
            let h = alg.hasher();
            assert_eq!(h.algorithm(), Some(alg));
            assert_eq!(
                format!("{h:?}"),
                format!("Hasher {{ algorithm: {:?} }}", alg.name())
            );
        }
    }

    #[test]
    fn every_hasher_gives_each_algorithms_own_digest() {
        let data = b"the bytes of a chunk whose checksum arrives in a trailer";
        for alg in Algorithm::ALL {
            let mut every = Hasher::every();
            every.update(&data[..7]);
            every.update(&data[7..]);
            let mut single = alg.hasher();
            single.update(data);
            assert_eq!(
                every.finalize_as(alg),
                Some(single.finalize()),
                "{}",
                alg.name()
            );
        }
        assert_eq!(Algorithm::Sha1.hasher().finalize_as(Algorithm::Md5), None);
    }
}
