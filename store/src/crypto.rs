//! Secrets at rest: rail keys are sealed with XChaCha20-Poly1305 under the master key, with the
//! organization id as associated data so a sealed key cannot be moved to another tenant. TOTP
//! secrets (`totp|{user}`) and webhook signing secrets (`webhook|{org}`) are sealed the same way;
//! `rekey.rs` re-seals all of them when the master key is rotated.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use std::path::Path;

use crate::error::{Result, StoreError};
use crate::ids::random_bytes;

/// The 32-byte master key (OPERATIONS.md `secrets.master_key`).
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Parse base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|_| StoreError::Invalid("master key is not valid base64".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Invalid("master key must be 32 bytes".into()))?;
        Ok(Self(key))
    }

    /// A new random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        key.copy_from_slice(&random_bytes(32));
        Self(key)
    }

    /// The key as base64, for writing the key file once.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// A digest of `data` keyed with this key (SHA-256 over key ‖ 0 ‖ context ‖ 0 ‖ data, hex):
    /// stored where a plain hash of a request could be brute-forced offline for a password in
    /// it (admin Idempotency-Key records). Not verifiable without the key; changes with it.
    pub fn keyed_digest(&self, context: &str, data: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.0);
        h.update([0u8]);
        h.update(context.as_bytes());
        h.update([0u8]);
        h.update(data);
        hex::encode(h.finalize())
    }

    /// Seal `plain` bound to `context`: base64(nonce ‖ ciphertext).
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let nonce_bytes = random_bytes(24);
        let nonce = XNonce::from_slice(&nonce_bytes);
        let sealed = cipher
            .encrypt(
                nonce,
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce_bytes;
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Open what [`MasterKey::seal`] produced with the same context.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>> {
        let raw = B64.decode(sealed).map_err(|_| StoreError::Crypto)?;
        if raw.len() < 24 + 16 {
            return Err(StoreError::Crypto);
        }
        let (nonce, body) = raw.split_at(24);
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| StoreError::Crypto)
    }
}

/// Context and plaintext of the key-check value: a sealed constant kept in the store, so a start
/// with the wrong master key fails at open instead of at the first payment or sign-in.
const KEY_CHECK_CONTEXT: &str = "master-key-check";
const KEY_CHECK_PLAIN: &[u8] = b"payment-guard master key check v1";

impl MasterKey {
    /// A new key-check value sealed under this key.
    pub(crate) fn key_check(&self) -> String {
        self.seal(KEY_CHECK_CONTEXT, KEY_CHECK_PLAIN)
    }

    /// Whether `sealed` is a key-check value sealed under this key.
    pub(crate) fn opens_key_check(&self, sealed: &str) -> bool {
        self.open(KEY_CHECK_CONTEXT, sealed)
            .is_ok_and(|plain| plain == KEY_CHECK_PLAIN)
    }
}

/// Name of the key file the guard generates in the data directory outside production.
pub const DATA_DIR_KEY_FILE: &str = "master.key";

/// Where the master key comes from (OPERATIONS.md `[secrets]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLocation {
    /// `secrets.master_key` (in production: `GUARD_SECRETS_MASTER_KEY` only).
    Value,
    /// `secrets.master_key_file`, resolved (symbolic links and `..` followed).
    File(std::path::PathBuf),
    /// `data_dir/master.key`, generated on first start; refused in production.
    DataDir(std::path::PathBuf),
}

/// Load the master key: from `value` (base64), or from the file `file` outside the data directory
/// that only its owner can read, or — outside production only — from `data_dir/master.key`,
/// generated there with mode 0600 on first start (and said so in the log). `data_dir` must exist
/// (see [`crate::secure_data_dir`]).
pub fn load_master_key(
    data_dir: &Path,
    value: Option<&str>,
    file: Option<&Path>,
    production: bool,
) -> Result<(MasterKey, KeyLocation)> {
    match (value, file) {
        (Some(_), Some(_)) => Err(StoreError::Invalid(
            "set secrets.master_key or secrets.master_key_file, not both".into(),
        )),
        (Some(text), None) => Ok((MasterKey::from_base64(text)?, KeyLocation::Value)),
        (None, Some(path)) => {
            let path = check_key_file(path, data_dir)?;
            let text = std::fs::read_to_string(&path).map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot read master key file {}: {e}",
                    path.display()
                ))
            })?;
            Ok((MasterKey::from_base64(&text)?, KeyLocation::File(path)))
        }
        (None, None) if production => Err(StoreError::Invalid(format!(
            "admin.production is on: the master key must come from GUARD_SECRETS_MASTER_KEY or \
             from secrets.master_key_file (a file outside the data directory, mode 0600), not \
             from a key kept next to the data it protects; move {} out of {} and point \
             secrets.master_key_file at it",
            DATA_DIR_KEY_FILE,
            data_dir.display()
        ))),
        (None, None) => {
            let key = load_or_create_master_key(data_dir, None)?;
            let path = data_dir.join(DATA_DIR_KEY_FILE);
            tracing::warn!(
                path = %path.display(),
                "the master key is kept in the data directory (development convenience); in \
                 production set GUARD_SECRETS_MASTER_KEY or secrets.master_key_file"
            );
            Ok((key, KeyLocation::DataDir(path)))
        }
    }
}

/// The resolved path of a configured key file, refused when it is inside the data directory
/// (after following symbolic links and `..`), not a regular file, or reachable by group or
/// others.
pub fn check_key_file(path: &Path, data_dir: &Path) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let resolved = std::fs::canonicalize(path).map_err(|e| {
        StoreError::Invalid(format!(
            "cannot read master key file {}: {e}",
            path.display()
        ))
    })?;
    let dir = std::fs::canonicalize(data_dir)?;
    if resolved.starts_with(&dir) {
        return Err(StoreError::Invalid(format!(
            "secrets.master_key_file {} is inside the data directory {}: keep the key apart \
             from the data it protects (a copy of the directory must not carry its key)",
            resolved.display(),
            dir.display()
        )));
    }
    let meta = std::fs::metadata(&resolved)?;
    if !meta.is_file() {
        return Err(StoreError::Invalid(format!(
            "secrets.master_key_file {} is not a regular file",
            resolved.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Invalid(format!(
            "secrets.master_key_file {} has mode {mode:o}: group or others can reach it; \
             `chmod 600` it",
            resolved.display()
        )));
    }
    Ok(resolved)
}

/// Write `key` to the new file `path` (mode 0600, durably); fails if `path` exists.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<()> {
    crate::files::write_new_private(path, key.to_base64().as_bytes())
}

/// Atomically replace the key file `path` with `pending` (same directory), durably.
pub fn replace_key_file(pending: &Path, path: &Path) -> Result<()> {
    std::fs::rename(pending, path)?;
    crate::files::sync_parent(path)
}

/// The master key from `configured` (base64, e.g. `GUARD_SECRETS_MASTER_KEY`), or else from
/// `data_dir/master.key`, generated there with mode 0600 on first start.
pub fn load_or_create_master_key(data_dir: &Path, configured: Option<&str>) -> Result<MasterKey> {
    if let Some(text) = configured {
        return MasterKey::from_base64(text);
    }
    let path = data_dir.join(DATA_DIR_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::files::secure_data_dir(data_dir)?;
            let key = MasterKey::generate();
            crate::files::write_new_private(&path, key.to_base64().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_context() {
        let k = MasterKey::generate();
        let s = k.seal("rail|org_a", b"sk_test_123");
        assert_eq!(k.open("rail|org_a", &s).unwrap(), b"sk_test_123");
        assert!(matches!(k.open("rail|org_b", &s), Err(StoreError::Crypto)));
        assert!(matches!(
            MasterKey::generate().open("rail|org_a", &s),
            Err(StoreError::Crypto)
        ));
        assert!(!s.contains("sk_test"));
    }

    #[test]
    fn the_key_check_opens_only_under_its_key() {
        let k = MasterKey::generate();
        let check = k.key_check();
        assert!(k.opens_key_check(&check));
        assert!(!MasterKey::generate().opens_key_check(&check));
        assert!(!k.opens_key_check(&k.seal("rail|org_a", KEY_CHECK_PLAIN)));
    }

    #[test]
    fn production_refuses_a_key_in_the_data_dir_or_a_loose_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        crate::files::secure_data_dir(&data).unwrap();
        let err = load_master_key(&data, None, None, true).unwrap_err();
        assert!(err.to_string().contains("admin.production"), "{err}");
        assert!(!data.join(DATA_DIR_KEY_FILE).exists(), "nothing generated");

        // Inside the data dir, reached through `..` and a symbolic link: refused.
        let inside = data.join(DATA_DIR_KEY_FILE);
        std::fs::write(&inside, MasterKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = tmp.path().join("link.key");
        std::os::unix::fs::symlink(&inside, &link).unwrap();
        for p in [
            link.clone(),
            data.join("..").join("data").join(DATA_DIR_KEY_FILE),
        ] {
            let err = load_master_key(&data, None, Some(&p), true).unwrap_err();
            assert!(
                err.to_string().contains("inside the data directory"),
                "{err}"
            );
        }

        let outside = tmp.path().join("outside.key");
        let key = MasterKey::generate();
        std::fs::write(&outside, key.to_base64()).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_master_key(&data, None, Some(&outside), true).unwrap_err();
        assert!(err.to_string().contains("mode 640"), "{err}");
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (loaded, at) = load_master_key(&data, None, Some(&outside), true).unwrap();
        assert_eq!(loaded.to_base64(), key.to_base64());
        assert_eq!(
            at,
            KeyLocation::File(std::fs::canonicalize(&outside).unwrap())
        );
        assert!(load_master_key(&data, Some(&key.to_base64()), Some(&outside), true).is_err());
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_base64("AAAA").is_err());
        let k = MasterKey::generate();
        assert!(MasterKey::from_base64(&k.to_base64()).is_ok());
    }
}
