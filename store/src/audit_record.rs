//! How an organization's audit event is stored (issue #13, "Small"), and how the stored form
//! becomes the canonical JSON line again.
//!
//! The event is still hashed exactly as AUDIT.md says: SHA-256 of the JCS form without `hash`.
//! Its members sort as actor, at, data, hash, kind, org, prev, seq, so the canonical line is
//!
//! ```text
//! {"actor":…,"at":…,"data":{…}  ,"hash":"<64 hex>"  ,"kind":"K","org":"O","prev":"<64 hex>","seq":N}
//! └──────── the body ─────────┘                      └──────────────── the tail ─────────────────────┘
//! ```
//!
//! Of that, only the body, the kind and the hash are stored; the tail's `org` and `seq` are the
//! event's key and `prev` is the previous event's stored hash, so storing them again would be
//! 180 bytes of every event that say nothing new. The compact form is
//!
//! | bytes | |
//! |---|---|
//! | 1 | 0x01, the format version |
//! | 32 | the event's hash, raw |
//! | rest | `ledger::record::pack` of `kind`, a NUL byte, and the body |
//!
//! A stored value that starts with `{` is the whole canonical line, as every event was stored
//! before (and as an event is still stored whenever its tail would not come back byte for byte,
//! which no event the guard writes does: the test `every_kind_is_stored_compact` checks).
//!
//! Reading expands the compact form into exactly the line that used to be stored, so
//! verification, export and the verifier script see the same bytes as before. Tamper evidence
//! is unchanged: the hash still covers `prev`, taken from the previous event's stored hash, and
//! a change to anything stored (the body, the kind, the hash, a key) makes that event's line
//! fail its hash or its link. A damaged compact value expands to bytes that fail the check at
//! its seq; reading never panics and never stops at it.

use crate::ledger::record::{pack, unpack_at_most};

/// Version byte of the compact form.
const COMPACT_V1: u8 = 0x01;
const HASH_LEN: usize = 32;
const KIND_MEMBER: &[u8] = b",\"kind\":";
/// The largest event body [`expand`] unpacks. The guard's events are a few hundred bytes (their
/// strings are bounded by the admin API and the proxy); a stored value claiming more is damage,
/// and verification must report it, not hold gigabytes of expanded lines.
pub(crate) const MAX_EVENT_BYTES: usize = 1 << 20;

/// What to store for an event whose canonical form without `hash` is `canonical`, hashed to
/// `hash_hex`, given the tail it must reproduce. `None`: store the whole line instead.
pub(crate) fn compact(
    canonical: &[u8],
    hash_hex: &str,
    kind: &str,
    org: &str,
    prev_hex: &str,
    seq: u64,
) -> Option<Vec<u8>> {
    let at = canonical
        .windows(KIND_MEMBER.len())
        .rposition(|w| w == KIND_MEMBER)?;
    let (body, tail) = canonical.split_at(at);
    if tail != build_tail(kind, org, prev_hex, seq)?.as_slice() || kind.contains('\0') {
        return None;
    }
    let hash = hex::decode(hash_hex).ok()?;
    if hash.len() != HASH_LEN || hex::encode(&hash) != hash_hex {
        return None;
    }
    let mut payload = Vec::with_capacity(kind.len() + 1 + body.len());
    payload.extend_from_slice(kind.as_bytes());
    payload.push(0);
    payload.extend_from_slice(body);
    let packed = pack(&payload);
    let mut out = Vec::with_capacity(1 + HASH_LEN + packed.len());
    out.push(COMPACT_V1);
    out.extend_from_slice(&hash);
    out.extend_from_slice(&packed);
    Some(out)
}

/// `,"kind":"K","org":"O","prev":"P","seq":N}`; `None` when a string is outside the plain
/// printable ASCII that needs no JCS escape but `"` and `\` (kinds and ids always are).
fn build_tail(kind: &str, org: &str, prev_hex: &str, seq: u64) -> Option<Vec<u8>> {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    };
    if !plain(kind) || !plain(org) || !plain(prev_hex) {
        return None;
    }
    Some(
        format!(r#","kind":"{kind}","org":"{org}","prev":"{prev_hex}","seq":{seq}}}"#).into_bytes(),
    )
}

/// The hash an event states (lower-case hex), read from its stored value without checking it;
/// `None` when the value has no readable hash (it then fails verification on its own).
pub(crate) fn stated_hash(stored: &[u8]) -> Option<String> {
    match stored.first()? {
        b'{' => stated_hash_of_line(stored),
        &COMPACT_V1 => stored.get(1..1 + HASH_LEN).map(hex::encode),
        _ => None,
    }
}

/// `hash` of a stored line. A canonical line ends `"hash":"<64 hex>","kind":…,"org":…,
/// "prev":"<64 hex>","seq":<n>}`, read from that tail; anything else (a line stored by hand, or
/// damaged) is parsed, so a `hash` nested in `data` is never taken for the event's own.
fn stated_hash_of_line(line: &[u8]) -> Option<String> {
    canonical_stated_hash(line).or_else(|| {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        v.get("hash")?.as_str().map(str::to_string)
    })
}

fn canonical_stated_hash(line: &[u8]) -> Option<String> {
    crate::audit::canonical_tail(line).map(|t| t.stated_hash(line))
}

/// An upper bound of the bytes [`expand`] returns for `stored`, read from the packed length
/// without unpacking (a batch of events to verify is bounded by it).
pub(crate) fn expanded_len_bound(stored: &[u8]) -> usize {
    // The tail and the hash member: `,"hash":"<64>"` and `,"kind":…,"seq":<20 digits>}` with
    // the org id and a kind each well under 128 bytes.
    const LINE_OVERHEAD: usize = 512;
    match stored.get(1 + HASH_LEN..1 + HASH_LEN + 4) {
        Some(len) if stored.first() == Some(&COMPACT_V1) => {
            let claimed = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            claimed.min(MAX_EVENT_BYTES).max(stored.len()) + LINE_OVERHEAD
        }
        _ => stored.len(),
    }
}

/// The canonical line of the event stored as `stored` under (`org`, `seq`), whose previous
/// event states `prev_hex`. A whole line comes back as stored; a compact value that cannot be
/// expanded comes back as it is, which no check accepts.
pub(crate) fn expand(stored: &[u8], org: &str, seq: u64, prev_hex: &str) -> Vec<u8> {
    if stored.first() != Some(&COMPACT_V1) {
        return stored.to_vec();
    }
    expand_compact(stored, org, seq, prev_hex).unwrap_or_else(|| stored.to_vec())
}

fn expand_compact(stored: &[u8], org: &str, seq: u64, prev_hex: &str) -> Option<Vec<u8>> {
    let hash = stored.get(1..1 + HASH_LEN)?;
    let payload =
        unpack_at_most(stored.get(1 + HASH_LEN..)?, "audit event", MAX_EVENT_BYTES).ok()?;
    let nul = payload.iter().position(|&b| b == 0)?;
    let kind = std::str::from_utf8(&payload[..nul]).ok()?;
    let body = &payload[nul + 1..];
    let tail = build_tail(kind, org, prev_hex, seq)?;
    let mut line = Vec::with_capacity(body.len() + 9 + 64 + 1 + tail.len());
    line.extend_from_slice(body);
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hex::encode(hash).as_bytes());
    line.push(b'"');
    line.extend_from_slice(&tail);
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    const ORG: &str = "org_0123456789abcdef01234567";

    fn canonical(prev: &str, seq: u64, kind: &str) -> (Vec<u8>, String) {
        let ev = serde_json::json!({
            "org": ORG, "seq": seq, "at": "2026-12-03T10:00:00.000000Z",
            "actor": {"type": "agent", "id": "agt_0123456789abcdef01234567"}, "kind": kind,
            "data": {"intent": "int_1", "amount": 1000, "note": "caf\u{e9} \"q\""}, "prev": prev,
        });
        let c = serde_json_canonicalizer::to_vec(&ev).unwrap();
        let h = hex::encode(Sha256::digest(&c));
        (c, h)
    }

    fn line(canonical: &[u8], hash: &str) -> Vec<u8> {
        let at = canonical
            .windows(KIND_MEMBER.len())
            .rposition(|w| w == KIND_MEMBER)
            .unwrap();
        let mut out = canonical[..at].to_vec();
        out.extend_from_slice(format!(r#","hash":"{hash}""#).as_bytes());
        out.extend_from_slice(&canonical[at..]);
        out
    }

    #[test]
    fn compact_events_expand_to_the_line_that_used_to_be_stored() {
        let prev = crate::audit::GENESIS;
        let (c, h) = canonical(prev, 7, "decision");
        let stored = compact(&c, &h, "decision", ORG, prev, 7).unwrap();
        assert_eq!(stored[0], COMPACT_V1);
        let full = line(&c, &h);
        assert!(
            stored.len() * 2 < full.len(),
            "{} vs {}",
            stored.len(),
            full.len()
        );
        assert_eq!(expand(&stored, ORG, 7, prev), full);
        assert_eq!(stated_hash(&stored).unwrap(), h);
        assert_eq!(stated_hash(&full).unwrap(), h);
        // A whole line is read as it is.
        assert_eq!(expand(&full, ORG, 7, prev), full);
        // Another org, seq or prev gives another line, which fails the event's own hash.
        assert_ne!(expand(&stored, "org_other", 7, prev), full);
        assert_ne!(expand(&stored, ORG, 8, prev), full);
    }

    #[test]
    fn a_value_unpacking_past_the_event_limit_is_not_expanded() {
        // 2 MiB of one byte packs to a few kilobytes; expanding it would hold 2 MiB a value.
        let mut payload = b"decision\0".to_vec();
        payload.extend(std::iter::repeat_n(b'a', 2 << 20));
        let mut stored = vec![COMPACT_V1];
        stored.extend_from_slice(&[7u8; HASH_LEN]);
        stored.extend_from_slice(&pack(&payload));
        assert!(stored.len() < 16 << 10, "{}", stored.len());
        let out = expand(&stored, ORG, 1, crate::audit::GENESIS);
        assert_eq!(out, stored, "returned as stored, which no check accepts");
        assert!(crate::audit::check_event(&out, 1, crate::audit::GENESIS).is_err());
    }

    #[test]
    fn the_stated_hash_of_a_line_is_its_own_not_one_nested_in_data() {
        let (h, z) = ("1".repeat(64), "2".repeat(64));
        let p = "3".repeat(64);
        // Not canonical (data last), with a `hash` and a `kind` inside data.
        let line = format!(
            r#"{{"actor":1,"hash":"{h}","kind":"k","org":"o","prev":"{p}","seq":1,"data":{{"a":"x","hash":"{z}","kind":"q"}}}}"#
        );
        assert_eq!(stated_hash(line.as_bytes()).unwrap(), h);
        let canonical =
            format!(r#"{{"actor":1,"hash":"{h}","kind":"k","org":"o","prev":"{p}","seq":1}}"#);
        assert_eq!(canonical_stated_hash(canonical.as_bytes()).unwrap(), h);
    }

    #[test]
    fn a_tail_that_would_not_come_back_is_stored_whole() {
        let (c, h) = canonical(crate::audit::GENESIS, 1, "decision");
        // The tail says seq 1; asking to store it as seq 2 must not compact it.
        assert!(compact(&c, &h, "decision", ORG, crate::audit::GENESIS, 2).is_none());
        assert!(compact(&c, &h, "other.kind", ORG, crate::audit::GENESIS, 1).is_none());
    }

    #[test]
    fn damaged_compact_values_expand_to_something_no_check_accepts() {
        let prev = crate::audit::GENESIS;
        let (c, h) = canonical(prev, 3, "decision");
        let stored = compact(&c, &h, "decision", ORG, prev, 3).unwrap();
        let good = line(&c, &h);
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x5A;
            let out = expand(&bad, ORG, 3, prev);
            if out == good {
                continue; // the same event (an LZ4 match to identical bytes): not a change
            }
            // Either not the canonical line of a valid event, or one whose hash fails.
            assert!(
                crate::audit::check_event(&out, 3, prev).is_err(),
                "flip at {i} was accepted"
            );
        }
        assert!(expand(&[COMPACT_V1], ORG, 1, prev) == vec![COMPACT_V1]);
    }
}
