//! Secrets at rest: rail keys are sealed with XChaCha20-Poly1305 under the master key, with the
//! organization id as associated data so a sealed key cannot be moved to another tenant.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

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

/// The master key from `configured` (base64, e.g. `GUARD_SECRETS_MASTER_KEY`), or else from
/// `data_dir/master.key`, generated there with mode 0600 on first start.
pub fn load_or_create_master_key(
    data_dir: &std::path::Path,
    configured: Option<&str>,
) -> Result<MasterKey> {
    if let Some(text) = configured {
        return MasterKey::from_base64(text);
    }
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let key = MasterKey::generate();
            write_private(&path, key.to_base64().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
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
    fn master_key_must_be_32_bytes() {
        assert!(MasterKey::from_base64("AAAA").is_err());
        let k = MasterKey::generate();
        assert!(MasterKey::from_base64(&k.to_base64()).is_ok());
    }
}
