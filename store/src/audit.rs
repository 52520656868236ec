//! The per-organization audit hash chain (AUDIT.md). Append and read only: this module has no
//! function that updates or deletes an event.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId};
use crate::tables::{AUDIT, AUDIT_HEADS, get_json, put_json};

/// The hash `prev` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The newest event of an organization's chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Sequence number of the newest event (0 when the chain is empty).
    pub seq: u64,
    /// Its hash ([`GENESIS`] when empty).
    pub hash: String,
}

impl AuditHead {
    fn empty() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_string(),
        }
    }
}

/// The outcome of verifying a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum VerifyReport {
    /// Every event checks out.
    Ok {
        /// Always true.
        ok: bool,
        /// Number of events.
        events: u64,
        /// The newest event.
        head: AuditHead,
    },
    /// The first event that does not.
    Broken {
        /// Always false.
        ok: bool,
        /// The first sequence number that fails.
        first_bad_seq: u64,
        /// Why.
        reason: String,
    },
}

impl VerifyReport {
    /// Whether the chain verified.
    pub fn is_ok(&self) -> bool {
        matches!(self, VerifyReport::Ok { .. })
    }
}

fn audit_key(org: &OrgId, seq: u64) -> String {
    format!("{org}|{seq:020}")
}

/// SHA-256 (lower-case hex) of the JCS canonical form of `event` (which must not hold `hash`).
pub(crate) fn event_hash(event: &Value) -> Result<String> {
    let canonical = serde_json_canonicalizer::to_vec(event)
        .map_err(|e| StoreError::Corrupt(format!("cannot canonicalize event: {e}")))?;
    Ok(hex::encode(Sha256::digest(&canonical)))
}

/// The canonical bytes with `"hash"` inserted where JCS puts it: keys sort as actor, at, data,
/// hash, kind, org, prev, seq, so `hash` goes right before the top-level `,"kind":`, the last
/// occurrence of that text (kind, org, prev and seq cannot contain it). One canonicalization per
/// event instead of two; `fast_and_canonical_checks_agree` and `appended_bytes_are_canonical`
/// check the result.
fn with_hash_member(canonical: &[u8], hash: &str) -> Vec<u8> {
    const KIND: &[u8] = b",\"kind\":";
    let pos = canonical
        .windows(KIND.len())
        .rposition(|w| w == KIND)
        .expect("an event always has a kind member");
    let member = format!(",\"hash\":\"{hash}\"");
    let mut out = Vec::with_capacity(canonical.len() + member.len());
    out.extend_from_slice(&canonical[..pos]);
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(&canonical[pos..]);
    out
}

/// Append one event inside the caller's write transaction; returns the new head.
pub(crate) fn append(
    txn: &redb::WriteTransaction,
    org: &OrgId,
    actor: &Actor,
    kind: &str,
    data: Value,
    at: &str,
) -> Result<AuditHead> {
    let mut heads = txn.open_table(AUDIT_HEADS)?;
    let head: AuditHead = get_json(&heads, org.as_str())?.unwrap_or_else(AuditHead::empty);
    let seq = head.seq + 1;
    let mut event = json!({
        "org": org, "seq": seq, "at": at, "actor": actor, "kind": kind, "data": data,
        "prev": head.hash,
    });
    let canonical = serde_json_canonicalizer::to_vec(&event)
        .map_err(|e| StoreError::Corrupt(format!("cannot canonicalize event: {e}")))?;
    let hash = hex::encode(Sha256::digest(&canonical));
    let bytes = with_hash_member(&canonical, &hash);
    event["hash"] = Value::String(hash.clone());
    let mut events = txn.open_table(AUDIT)?;
    let key = audit_key(org, seq);
    // The chain never reuses a seq; a store edited behind the guard's back fails the write
    // (and so the decision) instead of overwriting history.
    if events.get(key.as_str())?.is_some() {
        return Err(StoreError::Corrupt(format!(
            "audit seq {seq} of {org} is already used"
        )));
    }
    events.insert(key.as_str(), bytes.as_slice())?;
    let new_head = AuditHead { seq, hash };
    put_json(&mut heads, org.as_str(), &new_head)?;
    drop(heads);
    drop(events);
    // WEBHOOKS.md: the outbox entry is written in the same transaction as its audit event.
    crate::webhooks::enqueue_in(txn, org, kind, &event, &new_head)?;
    Ok(new_head)
}

/// The current head of an organization's chain.
pub(crate) fn head(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    org: &OrgId,
) -> Result<AuditHead> {
    Ok(get_json(table, org.as_str())?.unwrap_or_else(AuditHead::empty))
}

/// The members verification needs, borrowed from the raw bytes (no tree is built).
#[derive(Deserialize)]
struct ChainLinks<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: &'a str,
    #[serde(borrow)]
    hash: &'a str,
}

/// Fast path: the guard stores events as JCS canonical JSON, so the canonical form without
/// `hash` is the stored bytes minus `,"hash":"<hex>"` (keys are sorted: `hash` is the last
/// member before `kind`; nothing after it can contain that text). Returns `None` when the bytes
/// do not have that shape or the hash does not match, and the full check then decides.
fn check_event_fast(raw: &[u8], expected_seq: u64, prev: &str) -> Option<String> {
    let (seq, p, hash) = fast_link(raw)?;
    (seq == expected_seq && p == prev).then_some(hash)
}

/// (seq, prev, hash) when the stored bytes hash to the event's own `hash` (one parse).
fn fast_link(raw: &[u8]) -> Option<(u64, &str, String)> {
    let links: ChainLinks<'_> = serde_json::from_slice(raw).ok()?;
    if links.hash.len() != 64 {
        return None;
    }
    let needle = format!(",\"hash\":\"{}\"", links.hash);
    let pos = raw
        .windows(needle.len())
        .rposition(|w| w == needle.as_bytes())?;
    let mut h = Sha256::new();
    h.update(&raw[..pos]);
    h.update(&raw[pos + needle.len()..]);
    let actual = hex::encode(h.finalize());
    (actual == links.hash).then_some((links.seq, links.prev, actual))
}

/// Events checked per parallel batch during verification (bounds memory).
const VERIFY_BATCH: usize = 16_384;
/// Threads used to check event hashes.
const VERIFY_THREADS_MAX: usize = 8;

/// (seq, prev, hash) of an event whose stored bytes hash to its own `hash`, via the fast path.
fn self_link(raw: &[u8]) -> Option<(u64, String, String)> {
    fast_link(raw).map(|(seq, prev, hash)| (seq, prev.to_string(), hash))
}

fn self_links_parallel(batch: &[Vec<u8>], threads: usize) -> Vec<Option<(u64, String, String)>> {
    if threads <= 1 || batch.len() < 1024 {
        return batch.iter().map(|r| self_link(r)).collect();
    }
    let chunk = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .map(|part| {
                (
                    part.len(),
                    scope.spawn(move || part.iter().map(|r| self_link(r)).collect::<Vec<_>>()),
                )
            })
            .collect();
        // A failed worker yields "unknown" for its whole part, so those events take the full
        // check: the result always has exactly one entry per event.
        handles
            .into_iter()
            .flat_map(|(n, h)| h.join().unwrap_or_else(|_| vec![None; n]))
            .collect()
    })
}

/// Check one event line against the expected sequence and previous hash. Returns its hash.
pub fn check_event(
    raw: &[u8],
    expected_seq: u64,
    prev: &str,
) -> std::result::Result<String, String> {
    if let Some(hash) = check_event_fast(raw, expected_seq, prev) {
        return Ok(hash);
    }
    check_event_canonical(raw, expected_seq, prev)
}

/// The full check: parse, drop `hash`, canonicalize (RFC 8785), hash, compare.
fn check_event_canonical(
    raw: &[u8],
    expected_seq: u64,
    prev: &str,
) -> std::result::Result<String, String> {
    let mut event: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let obj = event.as_object_mut().ok_or("not a JSON object")?;
    let stated = match obj.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err("missing hash".into()),
    };
    if obj.get("seq").and_then(Value::as_u64) != Some(expected_seq) {
        return Err(format!("expected seq {expected_seq}"));
    }
    if obj.get("prev").and_then(Value::as_str) != Some(prev) {
        return Err("prev does not match the previous event's hash".into());
    }
    let actual = event_hash(&event).map_err(|e| e.to_string())?;
    if actual != stated {
        return Err("hash does not match the event's content".into());
    }
    Ok(actual)
}

/// Verify a sequence of raw events (in stored order) and the stored head.
pub(crate) fn verify_events(
    events: impl Iterator<Item = Result<Vec<u8>>>,
    stored_head: Option<&AuditHead>,
) -> Result<VerifyReport> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, VERIFY_THREADS_MAX);
    let mut prev = GENESIS.to_string();
    let mut seq = 0u64;
    let mut events = events.peekable();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(VERIFY_BATCH);
    while events.peek().is_some() {
        batch.clear();
        for raw in events.by_ref().take(VERIFY_BATCH) {
            batch.push(raw?);
        }
        // Each event's own hash is independent of the others: check those in parallel, then
        // walk the links in order. Anything the fast path cannot vouch for is re-checked in full.
        let links = self_links_parallel(&batch, threads);
        for (raw, link) in batch.iter().zip(links) {
            let expected = seq + 1;
            let verdict = match link {
                Some((s, p, h)) if s == expected && p == prev => Ok(h),
                _ => check_event_canonical(raw, expected, &prev),
            };
            match verdict {
                Ok(hash) => {
                    prev = hash;
                    seq = expected;
                }
                Err(reason) => {
                    return Ok(VerifyReport::Broken {
                        ok: false,
                        first_bad_seq: expected,
                        reason,
                    });
                }
            }
        }
    }
    let head = AuditHead { seq, hash: prev };
    if let Some(stored) = stored_head
        && *stored != head
    {
        return Ok(VerifyReport::Broken {
            ok: false,
            // Cut tail: the first missing seq; appended tail: the first seq past the head.
            first_bad_seq: seq.min(stored.seq) + 1,
            reason: format!(
                "chain ends at seq {seq} but the stored head is seq {}",
                stored.seq
            ),
        });
    }
    Ok(VerifyReport::Ok {
        ok: true,
        events: seq,
        head,
    })
}

/// Iterate an organization's raw events in order (read transaction).
pub(crate) fn raw_events<'t>(
    table: &'t redb::ReadOnlyTable<&'static str, &'static [u8]>,
    org: &OrgId,
) -> Result<impl Iterator<Item = Result<Vec<u8>>> + 't> {
    let prefix = format!("{org}|");
    let end = format!("{org}}}"); // '}' sorts after '|'
    let range = table.range(prefix.as_str()..end.as_str())?;
    Ok(range.map(|row| {
        let (_, v) = row?;
        Ok(v.value().to_vec())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for seq in 1..=n {
            let mut ev = json!({"org": "org_a", "seq": seq, "at": "2026-11-24T00:00:00.000000Z",
                "actor": {"type": "system", "id": "test"}, "kind": "decision",
                "data": {"amount": seq * 100, "note": "caf\u{e9}"}, "prev": prev});
            let h = event_hash(&ev).unwrap();
            ev["hash"] = Value::String(h.clone());
            out.push(serde_json_canonicalizer::to_vec(&ev).unwrap());
            prev = h;
        }
        out
    }

    fn verify(evs: &[Vec<u8>]) -> VerifyReport {
        verify_events(evs.iter().cloned().map(Ok), None).unwrap()
    }

    #[test]
    fn fast_and_canonical_checks_agree() {
        let evs = chain(3);
        let mut prev = GENESIS.to_string();
        for (i, raw) in evs.iter().enumerate() {
            let seq = i as u64 + 1;
            let fast = check_event_fast(raw, seq, &prev)
                .expect("canonical stored bytes take the fast path");
            assert_eq!(Ok(fast.clone()), check_event_canonical(raw, seq, &prev));
            prev = fast;
        }
        // Non-canonical but equivalent bytes fall back to the canonical check and still verify.
        let spaced = String::from_utf8(evs[0].clone())
            .unwrap()
            .replacen(':', ": ", 1);
        assert!(check_event_fast(spaced.as_bytes(), 1, GENESIS).is_none());
        assert!(check_event(spaced.as_bytes(), 1, GENESIS).is_ok());
    }

    #[test]
    fn appended_bytes_are_canonical() {
        let ev = json!({"org": "org_a", "seq": 1, "at": "x", "actor": {"type": "system", "id": "t"},
            "kind": "decision", "data": {"kind": ",\"kind\":", "z": [1, 2]}, "prev": GENESIS});
        let canonical = serde_json_canonicalizer::to_vec(&ev).unwrap();
        let hash = hex::encode(Sha256::digest(&canonical));
        let mut full = ev.clone();
        full["hash"] = Value::String(hash.clone());
        assert_eq!(
            with_hash_member(&canonical, &hash),
            serde_json_canonicalizer::to_vec(&full).unwrap()
        );
    }

    #[test]
    fn untouched_chain_verifies() {
        let r = verify(&chain(5));
        assert!(matches!(r, VerifyReport::Ok { events: 5, .. }), "{r:?}");
    }

    #[test]
    fn changed_byte_is_detected_at_its_seq() {
        let mut evs = chain(5);
        let s = String::from_utf8(evs[2].clone())
            .unwrap()
            .replace("\"amount\":300", "\"amount\":301");
        evs[2] = s.into_bytes();
        assert!(matches!(
            verify(&evs),
            VerifyReport::Broken {
                first_bad_seq: 3,
                ..
            }
        ));
    }

    #[test]
    fn removed_event_is_detected() {
        let mut evs = chain(5);
        evs.remove(1);
        assert!(matches!(
            verify(&evs),
            VerifyReport::Broken {
                first_bad_seq: 2,
                ..
            }
        ));
    }

    #[test]
    fn reordered_events_are_detected() {
        let mut evs = chain(5);
        evs.swap(3, 4);
        assert!(matches!(
            verify(&evs),
            VerifyReport::Broken {
                first_bad_seq: 4,
                ..
            }
        ));
    }

    #[test]
    fn truncated_tail_is_detected_against_the_stored_head() {
        let evs = chain(5);
        let full = verify(&evs);
        let VerifyReport::Ok { head, .. } = full else {
            panic!()
        };
        let r = verify_events(evs[..4].iter().cloned().map(Ok), Some(&head)).unwrap();
        assert!(
            matches!(
                r,
                VerifyReport::Broken {
                    first_bad_seq: 5,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}
