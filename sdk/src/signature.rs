//! Making and reading `webhook-signature` values (WEBHOOKS.md "Headers").

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, Secret};

/// Longest `webhook-signature` value accepted, in bytes.
pub const SIGNATURE_HEADER_MAX_BYTES: usize = 4096;
/// Most space-separated entries accepted in one `webhook-signature` value.
pub const SIGNATURES_MAX: usize = 16;
/// Bytes of an HMAC-SHA256 signature.
const SIGNATURE_BYTES: usize = 32;
/// The only signature scheme this crate makes or checks (symmetric HMAC-SHA256).
const VERSION_V1: &str = "v1";

/// The raw HMAC-SHA256 of `"{msg_id}.{timestamp}.{body}"` under the secret.
pub(crate) fn mac(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC is defined for keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.key())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Signs one message: `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>`.
///
/// `timestamp` is in Unix seconds and must be the value sent in `webhook-timestamp`; `body` is
/// the exact bytes sent.
#[must_use]
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{VERSION_V1},{}",
        STANDARD.encode(mac(secret, msg_id, timestamp, body))
    )
}

/// The whole `webhook-signature` value: one [`sign`] entry per secret, space-separated, so that a
/// receiver holding either the old or the new secret verifies while a rotation overlaps.
///
/// With no secrets the value is empty, which every verifier refuses.
#[must_use]
pub fn signature_header(secrets: &[&Secret], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let entries: Vec<String> = secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect();
    entries.join(" ")
}

/// Reads the `v1` signatures out of a `webhook-signature` value.
///
/// Entries are separated by single spaces (surrounding whitespace is ignored) and each is
/// `<version>,<signature>`. Entries of other versions (`v1a,…`) are skipped; each `v1` entry
/// must be standard padded base64 of exactly 32 bytes.
///
/// # Errors
///
/// [`Error::BadSignatureHeader`] if the value is longer than [`SIGNATURE_HEADER_MAX_BYTES`], has
/// more than [`SIGNATURES_MAX`] entries, an empty entry or one without a comma, a bare `v1,`, a
/// `v1` signature that is not base64 or not 32 bytes long, or no `v1` entry at all.
pub fn parse_signature_header(value: &str) -> Result<Vec<[u8; 32]>, Error> {
    let bad = |reason: &str| Error::BadSignatureHeader(reason.to_string());
    if value.len() > SIGNATURE_HEADER_MAX_BYTES {
        return Err(bad("longer than 4096 bytes"));
    }
    let mut signatures = Vec::new();
    for (index, entry) in value.trim().split(' ').enumerate() {
        if index >= SIGNATURES_MAX {
            return Err(bad("more than 16 signatures"));
        }
        let Some((version, encoded)) = entry.split_once(',') else {
            return Err(bad("an entry is not <version>,<signature>"));
        };
        if version != VERSION_V1 {
            continue;
        }
        signatures.push(decode_v1(encoded)?);
    }
    if signatures.is_empty() {
        return Err(bad("no v1 signature"));
    }
    Ok(signatures)
}

/// One `v1` signature: the base64 of exactly 32 bytes. Refusing a bare `v1,` or a short value
/// here, rather than letting it fail the comparison, makes the refusal say why.
fn decode_v1(encoded: &str) -> Result<[u8; 32], Error> {
    let bad = |reason: String| Error::BadSignatureHeader(reason);
    if encoded.is_empty() {
        return Err(bad("empty v1 signature".to_string()));
    }
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| bad("v1 signature is not base64".to_string()))?;
    <[u8; SIGNATURE_BYTES]>::try_from(bytes.as_slice())
        .map_err(|_| bad(format!("v1 signature is {} bytes, not 32", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes(&[42u8; 32]).expect("32 bytes")
    }

    fn bad(reason: &str) -> Result<Vec<[u8; 32]>, Error> {
        Err(Error::BadSignatureHeader(reason.to_string()))
    }

    #[test]
    fn known_answer() {
        // Computed independently: python3 -c 'import hmac,hashlib,base64;
        // print(base64.b64encode(hmac.new(bytes([42]*32), b"msg_1.1764000000.{}",
        // hashlib.sha256).digest()).decode())'
        assert_eq!(
            sign(&secret(), "msg_1", 1_764_000_000, b"{}"),
            "v1,x85wyE2Vk2bfTfz/yFg2l7ZrBsRPAy9JOr8VY2+C0JI="
        );
    }

    #[test]
    fn header_has_one_entry_per_secret_and_parses_back() {
        let other = Secret::from_bytes(&[7u8; 24]).expect("24 bytes");
        let header = signature_header(&[&secret(), &other], "msg_1", 5, b"body");
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            entries,
            [
                sign(&secret(), "msg_1", 5, b"body"),
                sign(&other, "msg_1", 5, b"body")
            ]
        );
        let parsed = parse_signature_header(&header).expect("own header parses");
        assert_eq!(
            parsed,
            [
                mac(&secret(), "msg_1", 5, b"body"),
                mac(&other, "msg_1", 5, b"body")
            ]
        );
        assert_eq!(signature_header(&[], "msg_1", 5, b"body"), "");
    }

    #[test]
    fn malformed_headers_are_refused_with_the_reason() {
        let good = sign(&secret(), "msg_1", 5, b"body");
        let encoded = &good[3..];
        let too_many = vec![good.as_str(); SIGNATURES_MAX + 1].join(" ");
        let too_long = format!("{good} v1a,{}", "A".repeat(SIGNATURE_HEADER_MAX_BYTES));
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "an entry is not <version>,<signature>"),
            ("v1,".into(), "empty v1 signature"),
            (format!("{good} v1,"), "empty v1 signature"),
            ("v1".into(), "an entry is not <version>,<signature>"),
            (
                format!("{good}  {good}"),
                "an entry is not <version>,<signature>",
            ),
            (
                format!("v1,{}", &encoded[..encoded.len() - 4]),
                "v1 signature is 30 bytes, not 32",
            ),
            (
                format!("v1,{}", &encoded[..encoded.len() - 1]),
                "v1 signature is not base64",
            ),
            (
                format!("v1,{}", STANDARD.encode([1u8; 33])),
                "v1 signature is 33 bytes, not 32",
            ),
            (format!("v1,{encoded}AAAA"), "v1 signature is not base64"),
            (
                format!("v1,{}", STANDARD.encode([0u8; 64])),
                "v1 signature is 64 bytes, not 32",
            ),
            ("v1,!!!!".into(), "v1 signature is not base64"),
            (
                format!("v1,{}", encoded.replace('=', "")),
                "v1 signature is not base64",
            ),
            (format!("{good},x"), "v1 signature is not base64"),
            (format!("v1a,{encoded}"), "no v1 signature"),
            (format!("V1,{encoded}"), "no v1 signature"),
            (too_many, "more than 16 signatures"),
            (too_long, "longer than 4096 bytes"),
        ];
        for (header, reason) in cases {
            assert_eq!(parse_signature_header(&header), bad(reason), "{header:?}");
        }
    }

    #[test]
    fn other_versions_are_skipped_and_limits_are_inclusive() {
        let good = sign(&secret(), "msg_1", 5, b"body");
        let header = format!("v1a,whatever v2,{} {good}", "x".repeat(10));
        assert_eq!(parse_signature_header(&header).map(|s| s.len()), Ok(1));
        let sixteen = vec![good.as_str(); SIGNATURES_MAX].join(" ");
        assert_eq!(parse_signature_header(&sixteen).map(|s| s.len()), Ok(16));
        assert_eq!(
            parse_signature_header(&format!(" {good}\t")).map(|s| s.len()),
            Ok(1)
        );
    }
}
