//! The receiver's flow through the public API only, as an integrator writes it.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use payment_guard_sdk::{
    DEFAULT_TOLERANCE_SECS, Error, Headers, Secret, event_types, parse_signature_header,
    signature_header, verify,
};

const NOW: i64 = 1_764_000_000;

fn body(kind: &str) -> Vec<u8> {
    serde_json::json!({
        "id": "evt_7", "type": kind, "created": NOW, "org": "org_1",
        "data": {"agent": "agt_1"}, "audit_head": {"seq": 7, "hash": "00ff"},
    })
    .to_string()
    .into_bytes()
}

#[test]
fn every_event_type_verifies_from_request_headers() {
    let secret = Secret::generate();
    for kind in event_types::ALL {
        let body = body(kind);
        let signature = signature_header(&[&secret], "evt_7", NOW, &body);
        let timestamp = NOW.to_string();
        let request = vec![
            ("Host".to_string(), "receiver.example"),
            ("Webhook-Signature".to_string(), signature.as_str()),
            ("Webhook-Timestamp".to_string(), timestamp.as_str()),
            ("Webhook-Id".to_string(), "evt_7"),
        ];
        let headers = Headers::from_pairs(request).expect("headers present");
        let event =
            verify(&secret, &headers, &body, NOW, DEFAULT_TOLERANCE_SECS).expect("verifies");
        assert_eq!(event.kind, *kind);
        assert_eq!(
            (event.audit_head.seq, event.audit_head.hash.as_str()),
            (7, "00ff")
        );
    }
}

#[test]
fn rotated_secret_verifies_during_overlap_and_old_one_after() {
    let (old, new) = (Secret::generate(), Secret::generate());
    let body = body(event_types::AGENT_FROZEN);
    let timestamp = NOW.to_string();
    let during = signature_header(&[&old, &new], "evt_7", NOW, &body);
    let after = signature_header(&[&new], "evt_7", NOW, &body);
    let check = |secret: &Secret, signature: &str| {
        let headers = Headers {
            id: "evt_7",
            timestamp: &timestamp,
            signature,
        };
        verify(secret, &headers, &body, NOW, DEFAULT_TOLERANCE_SECS).map(|_| ())
    };
    assert_eq!(check(&old, &during), Ok(()));
    assert_eq!(check(&new, &during), Ok(()));
    assert_eq!(check(&new, &after), Ok(()));
    assert_eq!(check(&old, &after), Err(Error::NoMatchingSignature));
}

#[test]
fn errors_do_not_echo_untrusted_input() {
    let header = "v1,SECRET-LOOKING-VALUE";
    let err = parse_signature_header(header).expect_err("not base64");
    assert!(!err.to_string().contains("SECRET-LOOKING-VALUE"), "{err}");
    assert_eq!(
        Secret::parse("whsec_short").map(|_| ()),
        Err(Error::BadSecret)
    );
    assert!(!Error::BadSecret.to_string().contains("short"));
}
