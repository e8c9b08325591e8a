//! Random secrets and their stored form.

use base64::Engine;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::{Rng, RngExt};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The operating system's generator; like rand 0.8's `OsRng`, it panics if the kernel
/// cannot supply randomness (there is nothing safe to fall back to).
fn os_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// A URL-safe random string of `bytes` random bytes (256 bits for 32).
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    os_rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// `bytes` random bytes as lower-case hex (for places where only `[0-9a-f]` fits).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    os_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How high-entropy secrets (session ids, tokens) are stored: SHA-256, hex.
/// No salt is needed: the secrets are random, not chosen by people.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two strings in time that does not depend on where they differ.
/// (The length is not secret: unequal lengths return early.)
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A password people can type: 20 characters without look-alikes (~114 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = os_rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = random_secret(32);
        let b = random_secret(32);
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        assert_eq!(hash_secret("x").len(), 64);
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert_eq!(random_password().len(), 20);
    }

    /// Session ids and tokens are stored as this hex; it must not change across upgrades
    /// (the value was produced with sha2 0.10 before the move to 0.11).
    #[test]
    fn stored_secret_hashes_are_stable() {
        assert_eq!(
            hash_secret("session-id-example"),
            "db35ebb09ef71a2378e8f72589e8310d7ead53b379b6bbc265f410abd0c09270"
        );
    }
}
