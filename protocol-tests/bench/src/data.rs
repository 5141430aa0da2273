//! Upload bytes: one random buffer, generated once and sent over and over.

use std::sync::OnceLock;

/// Size of the shared buffer; bodies are sent as slices of it, repeated as needed.
pub const PATTERN_LEN: usize = 1 << 20;

/// One mebibyte of pseudo-random bytes (xorshift64*), the same on every call.
///
/// Random rather than zeros so no layer (filesystem, page cache) can take a shortcut.
pub fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut out = Vec::with_capacity(PATTERN_LEN);
        while out.len() < PATTERN_LEN {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.truncate(PATTERN_LEN);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_stable_and_not_constant() {
        let a = pattern();
        assert_eq!(a.len(), PATTERN_LEN);
        assert!(std::ptr::eq(a, pattern()));
        assert!(a.windows(2).take(1000).any(|w| w[0] != w[1]));
    }
}
