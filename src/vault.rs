//! Secrets at rest: registry passwords, Git credentials and members' secret variables
//! are sealed with XChaCha20-Poly1305 under a key kept in the data directory
//! (`vault.key`, 32 random bytes, mode 0600, made on first start). A copy of the
//! database alone reveals none of them; the key file and the database together do, so
//! back them up apart.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use rand::Rng;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "vault.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// The first byte of every sealed value: the format, so that it can change later.
const FORMAT_V1: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the key file {path} is not {KEY_LEN} bytes: restore it from a backup (without it, \
         stored registry passwords and secrets cannot be read)"
    )]
    BadKey { path: PathBuf },
    #[error(
        "the key file {path} can be read by other users (mode {mode:o}): run `chmod 600 {path}`"
    )]
    OpenKey { path: PathBuf, mode: u32 },
    #[error("a stored secret cannot be opened with this key (wrong key file, or damaged)")]
    Unreadable,
}

/// Seals and opens values with the installation's key. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    cipher: Arc<XChaCha20Poly1305>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault(..)")
    }
}

impl Vault {
    /// Opens the key in `data_dir`, making it (0600) if there is none yet.
    pub fn open(data_dir: &Path) -> Result<Vault, VaultError> {
        let path = data_dir.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(key) => {
                let mode = std::fs::metadata(&path)
                    .map_err(|source| VaultError::KeyFile {
                        path: path.clone(),
                        source,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(VaultError::OpenKey {
                        path,
                        mode: mode & 0o777,
                    });
                }
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_key(&path).map_err(|source| VaultError::KeyFile {
                    path: path.clone(),
                    source,
                })?
            }
            Err(source) => return Err(VaultError::KeyFile { path, source }),
        };
        Vault::from_key(&key).ok_or(VaultError::BadKey { path })
    }

    /// A vault with a fresh random key that is kept nowhere (tests, benchmarks).
    pub fn ephemeral() -> Vault {
        let mut key = [0u8; KEY_LEN];
        UnwrapErr(SysRng).fill_bytes(&mut key);
        Vault::from_key(&key).unwrap_or_else(|| unreachable!("a {KEY_LEN}-byte key"))
    }

    fn from_key(key: &[u8]) -> Option<Vault> {
        if key.len() != KEY_LEN {
            return None;
        }
        let cipher = XChaCha20Poly1305::new_from_slice(key).ok()?;
        Some(Vault {
            cipher: Arc::new(cipher),
        })
    }

    /// `plaintext` sealed: format byte, random nonce, ciphertext with its tag.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        UnwrapErr(SysRng).fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), plaintext)
            .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 encrypts any length we store"));
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// A string sealed (see `seal`).
    pub fn seal_str(&self, plaintext: &str) -> Vec<u8> {
        self.seal(plaintext.as_bytes())
    }

    /// The plaintext of a value `seal` made with this key.
    pub fn unseal(&self, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let (format, rest) = sealed.split_first().ok_or(VaultError::Unreadable)?;
        if *format != FORMAT_V1 || rest.len() < NONCE_LEN {
            return Err(VaultError::Unreadable);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Unreadable)?;
        self.cipher
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| VaultError::Unreadable)
    }

    /// A sealed string opened (see `seal_str`).
    pub fn unseal_str(&self, sealed: &[u8]) -> Result<String, VaultError> {
        String::from_utf8(self.unseal(sealed)?).map_err(|_| VaultError::Unreadable)
    }
}

/// Writes a new random key with mode 0600 from the first byte (never readable by others,
/// not even briefly); `create_new` so two starts cannot both write one.
fn create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; KEY_LEN];
    UnwrapErr(SysRng).fill_bytes(&mut key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let vault = Vault::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let sealed = vault.seal_str("hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(vault.unseal_str(&sealed).ok().as_deref(), Some("hunter2"));
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, vault.seal_str("hunter2"));
        // The key persists: a second open reads the same key.
        let again = Vault::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.unseal_str(&sealed).ok().as_deref(), Some("hunter2"));
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        // Another key, a flipped bit or a short value: refused, never garbage.
        assert!(Vault::ephemeral().unseal(&sealed).is_err());
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(vault.unseal(&flipped).is_err());
        assert!(vault.unseal(&sealed[..10]).is_err());
        assert!(vault.unseal(&[]).is_err());
        assert_eq!(format!("{vault:?}"), "Vault(..)");
    }

    #[test]
    fn a_key_file_others_can_read_or_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, [0u8; 5]).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            Vault::open(dir.path()),
            Err(VaultError::BadKey { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Vault::open(dir.path()).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("chmod 600")));
    }
}
