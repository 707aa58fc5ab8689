//! RSASSA-PSS verification with salt-length auto-detection, as Go's `rsa.VerifyPSS` does
//! with `PSSSaltLengthAuto` (Yoke passes nil options).
//!
//! aws-lc-rs verifies PSS with one fixed salt length per algorithm value (the digest length
//! by default). A PSS signature is valid for exactly one salt length: the position of the
//! 0x01 separator in the recovered data block fixes it. Trying each candidate therefore
//! accepts exactly the signatures Go accepts. Candidates are tried most likely first: the
//! maximum (what Go and Yoke sign with), then the digest length (what OpenSSL, ring and
//! aws-lc default to), then every other length. Each try is one public-key operation on the
//! already computed digest, so even a rejected RSA-8192 signature costs only milliseconds.

use aws_lc_rs::digest::Digest;
use aws_lc_rs::signature::{
    RSA_PSS_2048_8192_SHA256, RsaParameters, RsaPssSaltLength, UnparsedPublicKey,
};

/// SHA-256 output length.
const HASH_LEN: usize = 32;
/// Largest salt for the largest accepted key: emLen(8192) - hLen - 2.
const MAX_SALT: usize = 8192 / 8 - HASH_LEN - 2;

/// One verification algorithm per salt length 0..=MAX_SALT.
static BY_SALT: [RsaParameters; MAX_SALT + 1] = build_table();

// Evaluated at compile time (a `static` initialiser): an out-of-bounds index would fail the
// build, never panic at run time, and `i <= MAX_SALT` is exactly the array's bound.
#[allow(clippy::indexing_slicing)]
const fn build_table() -> [RsaParameters; MAX_SALT + 1] {
    let mut table = [const { RSA_PSS_2048_8192_SHA256 }; MAX_SALT + 1];
    let mut i = 0;
    while i <= MAX_SALT {
        table[i] =
            RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Custom(i as u16));
        i += 1;
    }
    table
}

/// The largest PSS salt for a modulus of `bits` bits with SHA-256 (Go's `PSSMaxSaltLength`).
pub(crate) fn max_salt_len(bits: usize) -> usize {
    // emLen = ceil((modBits - 1) / 8)
    let em_len = (bits.saturating_sub(1)).div_ceil(8);
    em_len.saturating_sub(HASH_LEN + 2)
}

/// Verifies an RSA-PSS-SHA256 signature over `digest` with any salt length.
pub(crate) fn verify(spki: &[u8], bits: usize, digest: &Digest, signature: &[u8]) -> bool {
    let max = max_salt_len(bits).min(MAX_SALT);
    let try_len = |salt: usize| {
        BY_SALT.get(salt).is_some_and(|params| {
            UnparsedPublicKey::new(params, spki)
                .verify_digest(digest, signature)
                .is_ok()
        })
    };
    if try_len(max) || (HASH_LEN <= max && try_len(HASH_LEN)) {
        return true;
    }
    (0..max).filter(|s| *s != HASH_LEN).any(try_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_salt_matches_go() {
        // Go: (bits-1+7)/8 - hash.Size() - 2
        assert_eq!(max_salt_len(2048), 222);
        assert_eq!(max_salt_len(3072), 350);
        assert_eq!(max_salt_len(4096), 478);
        assert_eq!(max_salt_len(8192), MAX_SALT);
        // A 2049-bit modulus has a 257-byte emLen... (2048 bits of EM)
        assert_eq!(max_salt_len(2049), 222);
    }
}
