//! The sealing of runtime accounts' credentials at rest: XChaCha20-Poly1305 under
//! `runtime_accounts.encryption_key`, bound to a context (the account id) as associated
//! data, so a sealed value copied elsewhere does not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Encrypts and decrypts credentials at rest.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([REDACTED])")
    }
}

/// Why a key makes no sealer, or a value cannot be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key is not base64.
    #[error("the key is not valid base64")]
    KeyNotBase64,
    /// The key is not 32 bytes long.
    #[error("the key is {0} bytes, not 32")]
    KeyLength(usize),
    /// Encryption failed.
    #[error("encryption failed")]
    Encrypt,
    /// The sealed value is not base64.
    #[error("sealed value is not base64")]
    NotBase64,
    /// The sealed value is shorter than a nonce and a tag.
    #[error("sealed value is too short")]
    TooShort,
    /// It does not open with this key and context.
    #[error("cannot decrypt (wrong key or tampered record)")]
    Decrypt,
}

impl Sealer {
    /// A sealer from a base64-encoded 32-byte key.
    pub fn new(key_b64: &str) -> Result<Self, SealError> {
        let key = B64
            .decode(key_b64.trim())
            .map_err(|_| SealError::KeyNotBase64)?;
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key).map_err(|_| SealError::KeyLength(key.len()))?;
        Ok(Sealer { cipher })
    }

    /// `base64(nonce ‖ ciphertext)` of `plain`, bound to `context`.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(B64.encode(out))
    }

    /// Opens what [`Sealer::seal`] produced with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let raw = B64.decode(sealed).map_err(|_| SealError::NotBase64)?;
        if raw.len() < 24 + 16 {
            return Err(SealError::TooShort);
        }
        let (nonce, ciphertext) = raw.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn seals_and_opens_bound_to_context() {
        let sealer = Sealer::new(KEY).unwrap();
        let sealed = sealer.seal(b"tok-secret", "acme").unwrap();
        assert!(!sealed.contains("tok-secret"));
        assert_eq!(sealer.open(&sealed, "acme").unwrap(), b"tok-secret");
        assert!(sealer.open(&sealed, "other").is_err());
        let other = Sealer::new(&B64.encode([7u8; 32])).unwrap();
        assert!(other.open(&sealed, "acme").is_err());
        assert_ne!(
            sealer.seal(b"x", "a").unwrap(),
            sealer.seal(b"x", "a").unwrap()
        );
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(Sealer::new("short").is_err());
        assert!(Sealer::new(&B64.encode([1u8; 16])).is_err());
    }
}
