//! The endpoint's signing secret, `whsec_<base64>` (WEBHOOKS.md "Secret").

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use crate::Error;

/// Prefix of the text form of a secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest key bytes a secret may have (Standard Webhooks: 24 to 64 bytes).
pub const SECRET_MIN_BYTES: usize = 24;
/// Most key bytes a secret may have (Standard Webhooks: 24 to 64 bytes).
pub const SECRET_MAX_BYTES: usize = 64;
/// Key bytes of a generated secret (WEBHOOKS.md: 32 random bytes).
const GENERATED_SECRET_BYTES: usize = 32;

/// Standard alphabet, padding optional: the reference library appends `==` before decoding, so
/// it accepts both forms, and so do we.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// An HMAC key shared between the guard and one webhook endpoint.
///
/// Its text form (from [`fmt::Display`] / `to_string()`) is `whsec_` followed by the padded
/// standard base64 of the key, as shown when the endpoint is created or its secret rotated.
/// [`fmt::Debug`] never shows the key.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Parses `whsec_<base64>`, the base64 (standard alphabet, padding optional) decoding to
    /// [`SECRET_MIN_BYTES`]..=[`SECRET_MAX_BYTES`] bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadSecret`] if the prefix is missing, the base64 is invalid, or the key length is
    /// out of range.
    pub fn parse(text: &str) -> Result<Secret, Error> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(Error::BadSecret)?;
        let key = SECRET_BASE64
            .decode(encoded)
            .map_err(|_| Error::BadSecret)?;
        Secret::from_bytes(&key)
    }

    /// A secret made of raw key bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadSecret`] if there are fewer than [`SECRET_MIN_BYTES`] or more than
    /// [`SECRET_MAX_BYTES`] bytes.
    pub fn from_bytes(key: &[u8]) -> Result<Secret, Error> {
        if !(SECRET_MIN_BYTES..=SECRET_MAX_BYTES).contains(&key.len()) {
            return Err(Error::BadSecret);
        }
        Ok(Secret { key: key.to_vec() })
    }

    /// A new secret of 32 bytes from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes: no secret is better than a guessable
    /// one.
    #[must_use]
    pub fn generate() -> Secret {
        let mut key = [0u8; GENERATED_SECRET_BYTES];
        getrandom::fill(&mut key).expect("the operating system's random number generator failed");
        Secret { key: key.to_vec() }
    }

    /// The key bytes, for the HMAC.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.key.len())
    }
}

impl FromStr for Secret {
    type Err = Error;

    fn from_str(text: &str) -> Result<Secret, Error> {
        Secret::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_round_trips_through_text() {
        let secret = Secret::generate();
        let text = secret.to_string();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), "whsec_".len() + 44);
        let parsed = Secret::parse(&text).expect("own text form parses");
        assert_eq!(parsed.key(), secret.key());
        assert_ne!(Secret::generate().key(), secret.key());
    }

    #[test]
    fn padding_is_optional() {
        let key = [7u8; 32];
        let padded = format!("whsec_{}", STANDARD.encode(key));
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        for text in [padded.as_str(), unpadded] {
            assert_eq!(Secret::parse(text).expect("parses").key(), &key);
        }
    }

    #[test]
    fn bad_secrets_are_refused() {
        let b64 = |n: usize| STANDARD.encode(vec![1u8; n]);
        let cases = [
            String::new(),
            "whsec_".to_string(),
            b64(32),                                        // no prefix
            format!("WHSEC_{}", b64(32)),                   // prefix is case-sensitive
            format!("whsec_{}", b64(23)),                   // too short
            format!("whsec_{}", b64(65)),                   // too long
            format!("whsec_{}!", b64(32)),                  // not base64
            format!("whsec_ {}", b64(32)),                  // whitespace
            format!("whsec_{}", b64(32).replace('A', "-")), // url-safe alphabet
        ];
        for text in cases {
            assert_eq!(
                Secret::parse(&text).map(|_| ()),
                Err(Error::BadSecret),
                "{text:?}"
            );
        }
        for n in [24, 64] {
            assert!(
                Secret::parse(&format!("whsec_{}", b64(n))).is_ok(),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let secret = Secret::from_bytes(&[0xAB; 32]).expect("32 bytes");
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret(32 bytes, redacted)");
        let encoded = STANDARD.encode([0xAB; 32]);
        assert!(!shown.contains(&encoded[..8]));
    }
}
