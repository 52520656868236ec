//! Verifying one delivery, in the order of the checks (WEBHOOKS.md "SDK").

use subtle::{Choice, ConstantTimeEq};

use crate::signature::{mac, parse_signature_header};
use crate::{Error, Event, Headers, Secret};

/// How far `webhook-timestamp` may be from now, in seconds, in either direction (WEBHOOKS.md:
/// 5 minutes). Bounds how long a captured delivery can be replayed.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Longest `webhook-timestamp` accepted, in characters: enough for any `i64` of seconds.
const TIMESTAMP_MAX_DIGITS: usize = 19;

/// Verifies a delivery and parses its body as an [`Event`].
///
/// `body` is the raw request body, byte for byte as received; `now` is the current time in Unix
/// seconds; `tolerance_secs` is usually [`DEFAULT_TOLERANCE_SECS`] (a negative tolerance refuses
/// every timestamp). See [`verify_raw`] for the checks.
///
/// # Errors
///
/// Those of [`verify_raw`], then [`Error::BadBody`] if the verified body is not an event.
pub fn verify(
    secret: &Secret,
    headers: &Headers<'_>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<Event, Error> {
    verify_raw(secret, headers, body, now, tolerance_secs)?;
    serde_json::from_slice(body).map_err(|e| Error::BadBody(e.to_string()))
}

/// Verifies a delivery without parsing its body.
///
/// In order: the three headers are present and non-empty; `webhook-timestamp` is an integer
/// (ASCII digits only) within `tolerance_secs` of `now`, inclusive, in either direction;
/// `webhook-signature` parses ([`crate::parse_signature_header`]); and one of its `v1`
/// signatures equals the HMAC of `"{id}.{timestamp}.{body}"`, compared in constant time.
///
/// # Errors
///
/// [`Error::MissingHeader`], [`Error::BadTimestamp`], [`Error::TimestampOutOfTolerance`],
/// [`Error::BadSignatureHeader`] or [`Error::NoMatchingSignature`], the first check that fails.
pub fn verify_raw(
    secret: &Secret,
    headers: &Headers<'_>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), Error> {
    headers.check_present()?;
    let timestamp = parse_timestamp(headers.timestamp)?;
    check_tolerance(timestamp, now, tolerance_secs)?;
    let presented = parse_signature_header(headers.signature)?;
    // The reference library signs the timestamp as it parsed it, not the header text; for
    // digits-only input the two differ only in leading zeros.
    let expected = mac(secret, headers.id, timestamp, body);
    if any_matches(&expected, &presented) {
        Ok(())
    } else {
        Err(Error::NoMatchingSignature)
    }
}

/// Digits only: no sign, no fraction, no exponent, no whitespace. The reference library also
/// takes `1.5` or `1e9` (it parses a float); the guard never sends those, so refusing them
/// only narrows what a forger can try.
fn parse_timestamp(text: &str) -> Result<i64, Error> {
    if text.is_empty()
        || text.len() > TIMESTAMP_MAX_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Error::BadTimestamp);
    }
    text.parse().map_err(|_| Error::BadTimestamp)
}

/// Both directions: an old timestamp is a possible replay, a future one a wrong clock or a
/// message held back for replaying later.
fn check_tolerance(timestamp: i64, now: i64, tolerance_secs: i64) -> Result<(), Error> {
    let earliest = now.saturating_sub(tolerance_secs);
    let latest = now.saturating_add(tolerance_secs);
    if timestamp < earliest || timestamp > latest {
        return Err(Error::TimestampOutOfTolerance);
    }
    Ok(())
}

/// Compares against every presented signature without stopping at the first match, so timing
/// tells nothing about which entry, or how much of one, matched.
fn any_matches(expected: &[u8; 32], presented: &[[u8; 32]]) -> bool {
    let matched = presented.iter().fold(Choice::from(0), |found, signature| {
        found | expected.ct_eq(signature)
    });
    bool::from(matched)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    use super::*;
    use crate::{event_types, sign, signature_header};

    const NOW: i64 = 1_764_000_000;
    const ID: &str = "evt_1";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"intent.held","created":1764000000,"org":"org_1","data":{"amount":60000,"note":"caf\u00e9 \u20ac"},"audit_head":{"seq":42,"hash":"ab12"}}"#;

    fn secret() -> Secret {
        Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("24-byte test secret")
    }

    fn check(timestamp: &str, signature: &str, body: &[u8]) -> Result<Event, Error> {
        let headers = Headers {
            id: ID,
            timestamp,
            signature,
        };
        verify(&secret(), &headers, body, NOW, DEFAULT_TOLERANCE_SECS)
    }

    fn signed_at(timestamp: i64) -> String {
        sign(&secret(), ID, timestamp, BODY)
    }

    fn bad_header(reason: &str) -> Result<Event, Error> {
        Err(Error::BadSignatureHeader(reason.to_string()))
    }

    #[test]
    fn signed_delivery_round_trips_into_its_event() {
        let event = check(&NOW.to_string(), &signed_at(NOW), BODY).expect("verifies");
        assert_eq!(event.id, ID);
        assert_eq!(event.kind, event_types::INTENT_HELD);
        assert_eq!(event.org, "org_1");
        assert_eq!(event.audit_head.seq, 42);
        assert_eq!(event.data["note"], "café €");
        let raw = Headers {
            id: ID,
            timestamp: &NOW.to_string(),
            signature: &signed_at(NOW),
        };
        assert_eq!(
            verify_raw(&secret(), &raw, BODY, NOW, DEFAULT_TOLERANCE_SECS),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_id_or_secret_is_refused() {
        let ts = NOW.to_string();
        let mut tampered = BODY.to_vec();
        tampered[60] ^= 1;
        assert_eq!(
            check(&ts, &signed_at(NOW), &tampered).unwrap_err(),
            Error::NoMatchingSignature
        );
        let other_id = Headers {
            id: "evt_2",
            timestamp: &ts,
            signature: &signed_at(NOW),
        };
        assert_eq!(
            verify_raw(&secret(), &other_id, BODY, NOW, DEFAULT_TOLERANCE_SECS),
            Err(Error::NoMatchingSignature)
        );
        let other_secret = Secret::generate();
        let headers = Headers {
            id: ID,
            timestamp: &ts,
            signature: &signed_at(NOW),
        };
        assert_eq!(
            verify_raw(&other_secret, &headers, BODY, NOW, DEFAULT_TOLERANCE_SECS),
            Err(Error::NoMatchingSignature)
        );
    }

    #[test]
    fn tampered_timestamp_is_refused() {
        let moved = (NOW + 1).to_string();
        assert_eq!(
            check(&moved, &signed_at(NOW), BODY).unwrap_err(),
            Error::NoMatchingSignature
        );
    }

    #[test]
    fn timestamp_tolerance_is_inclusive_in_both_directions() {
        for ts in [NOW - DEFAULT_TOLERANCE_SECS, NOW + DEFAULT_TOLERANCE_SECS] {
            assert!(check(&ts.to_string(), &signed_at(ts), BODY).is_ok(), "{ts}");
        }
        for ts in [
            NOW - DEFAULT_TOLERANCE_SECS - 1,
            NOW + DEFAULT_TOLERANCE_SECS + 1,
            0,
        ] {
            assert_eq!(
                check(&ts.to_string(), &signed_at(ts), BODY).unwrap_err(),
                Error::TimestampOutOfTolerance,
                "{ts}"
            );
        }
        let headers = Headers {
            id: ID,
            timestamp: &NOW.to_string(),
            signature: &signed_at(NOW),
        };
        assert_eq!(
            verify_raw(&secret(), &headers, BODY, NOW, -1),
            Err(Error::TimestampOutOfTolerance)
        );
        assert_eq!(
            verify_raw(&secret(), &headers, BODY, i64::MAX, i64::MAX),
            Ok(()),
            "saturating bounds"
        );
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        let sig = signed_at(NOW);
        let cases = [
            "-1",
            "+1764000000",
            "1764000000.0",
            "1.764e9",
            " 1764000000",
            "1764000000 ",
            "abc",
            "0x6929",
            "99999999999999999999",
            "9223372036854775808",
            "１７６４０００００００",
        ];
        for ts in cases {
            assert_eq!(
                check(ts, &sig, BODY).unwrap_err(),
                Error::BadTimestamp,
                "{ts:?}"
            );
        }
        // Leading zeros denote the same second, which is what gets signed (as the reference does).
        assert!(check(&format!("0{NOW}"), &sig, BODY).is_ok());
    }

    #[test]
    fn missing_headers_are_refused() {
        let ts = NOW.to_string();
        let sig = signed_at(NOW);
        for (id, timestamp, signature) in [
            ("", ts.as_str(), sig.as_str()),
            (ID, "", &sig),
            (ID, &ts, ""),
        ] {
            let headers = Headers {
                id,
                timestamp,
                signature,
            };
            assert_eq!(
                verify(&secret(), &headers, BODY, NOW, DEFAULT_TOLERANCE_SECS).unwrap_err(),
                Error::MissingHeader
            );
        }
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let ts = NOW.to_string();
        let good = signed_at(NOW);
        let encoded = &good[3..];
        assert_eq!(check(&ts, "v1,", BODY), bad_header("empty v1 signature"));
        assert_eq!(
            check(&ts, &format!("{good} v1,"), BODY),
            bad_header("empty v1 signature")
        );
        let truncated = format!("v1,{}", &encoded[..40]);
        assert_eq!(
            check(&ts, &truncated, BODY),
            bad_header("v1 signature is 30 bytes, not 32")
        );
        let cut = format!("v1,{}", &encoded[..20]);
        assert_eq!(
            check(&ts, &cut, BODY),
            bad_header("v1 signature is 15 bytes, not 32")
        );
        let long = format!("v1,{}", STANDARD.encode([9u8; 48]));
        assert_eq!(
            check(&ts, &long, BODY),
            bad_header("v1 signature is 48 bytes, not 32")
        );
        let not_b64 = format!(
            "v1,{}",
            encoded.replace(|c: char| c.is_ascii_alphabetic(), "*")
        );
        assert_eq!(
            check(&ts, &not_b64, BODY),
            bad_header("v1 signature is not base64")
        );
        assert_eq!(check(&ts, "v1a,abc", BODY), bad_header("no v1 signature"));
        let zeros = format!("v1,{}", STANDARD.encode([0u8; 32]));
        assert_eq!(
            check(&ts, &zeros, BODY).unwrap_err(),
            Error::NoMatchingSignature
        );
    }

    #[test]
    fn rotation_second_signature_matches() {
        let old = Secret::generate();
        let header = signature_header(&[&old, &secret()], ID, NOW, BODY);
        assert_eq!(header.split(' ').count(), 2);
        assert!(check(&NOW.to_string(), &header, BODY).is_ok());
        let headers = Headers {
            id: ID,
            timestamp: &NOW.to_string(),
            signature: &header,
        };
        assert!(verify(&old, &headers, BODY, NOW, DEFAULT_TOLERANCE_SECS).is_ok());
    }

    #[test]
    fn other_versions_are_ignored() {
        let ts = NOW.to_string();
        // A v1a entry carrying the right bytes still does not count: only v1 is HMAC-SHA256.
        let as_v1a = signed_at(NOW).replacen("v1,", "v1a,", 1);
        assert_eq!(check(&ts, &as_v1a, BODY), bad_header("no v1 signature"));
        let mixed = format!("v1a,garbage {}", signed_at(NOW));
        assert!(check(&ts, &mixed, BODY).is_ok());
    }

    #[test]
    fn verified_body_that_is_not_an_event_is_bad_body() {
        let body = br#"{"id":"evt_1"}"#;
        let sig = sign(&secret(), ID, NOW, body);
        assert!(matches!(
            check(&NOW.to_string(), &sig, body),
            Err(Error::BadBody(_))
        ));
        let headers = Headers {
            id: ID,
            timestamp: &NOW.to_string(),
            signature: &sig,
        };
        assert_eq!(
            verify_raw(&secret(), &headers, body, NOW, DEFAULT_TOLERANCE_SECS),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn parse_signature_header_never_panics(value in ".*") {
            let _ = parse_signature_header(&value);
        }

        #[test]
        fn parse_signature_header_never_panics_on_near_misses(
            value in "( ?(v1|v1a|v2|)(,|)[A-Za-z0-9+/=,]{0,50}){0,20}"
        ) {
            let _ = parse_signature_header(&value);
        }

        #[test]
        fn verify_never_panics(
            id in ".*",
            timestamp in "[0-9]{1,20}|.*",
            signature in "(v1,[A-Za-z0-9+/=]{0,48} ?){0,3}|.*",
            body in proptest::collection::vec(any::<u8>(), 0..256),
            now in any::<i64>(),
            tolerance in any::<i64>(),
        ) {
            let headers = Headers { id: &id, timestamp: &timestamp, signature: &signature };
            let _ = verify(&secret(), &headers, &body, now, tolerance);
        }

        #[test]
        fn verify_accepts_exactly_its_own_signature(
            id in "[ -~]{1,40}",
            timestamp in 0..=i64::MAX,
            body in proptest::collection::vec(any::<u8>(), 0..256),
            flip in any::<proptest::sample::Index>(),
        ) {
            let ts = timestamp.to_string();
            let sig = sign(&secret(), &id, timestamp, &body);
            let headers = Headers { id: &id, timestamp: &ts, signature: &sig };
            prop_assert_eq!(verify_raw(&secret(), &headers, &body, timestamp, 0), Ok(()));
            if !body.is_empty() {
                let mut tampered = body.clone();
                tampered[flip.index(body.len())] ^= 0x01;
                prop_assert_eq!(
                    verify_raw(&secret(), &headers, &tampered, timestamp, 0),
                    Err(Error::NoMatchingSignature)
                );
            }
        }
    }
}
