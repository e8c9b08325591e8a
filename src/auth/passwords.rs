//! Password hashing: argon2id, 19 MiB, t = 2 (OWASP's minimum). CPU-heavy: callers run it
//! on a blocking thread.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;

fn hasher() -> Argon2<'static> {
    // The constants are valid argon2 parameters; Params::new only rejects out-of-range ones.
    let params = Params::new(MEMORY_KIB, ITERATIONS, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A PHC string with a fresh 16-byte salt from the operating system.
pub fn hash_password(password: &str) -> Result<String, String> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the same time as a real check, so a missing account is not revealed by timing.
pub fn verify_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash_password("dummy password").unwrap_or_default());
    let _ = verify_password(password, stored);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_the_agreed_cost() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(h.contains("m=19456,t=2"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    /// Hashes already in databases must keep verifying: this one was made by argon2 0.5
    /// (password-hash 0.5) before the move to 0.6.
    #[test]
    fn hashes_from_argon2_0_5_still_verify() {
        let stored = "$argon2id$v=19$m=19456,t=2,p=1$8jZUcTfoChrW0T02UDaraA$\
                      PQxbMvUSPinhPWCz1Oz2GtfrXueN2EqaT8pv6P/aG8U";
        assert!(verify_password("correct horse battery staple", stored));
        assert!(!verify_password("correct horse battery stapler", stored));
    }
}
