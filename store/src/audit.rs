//! The per-organization audit hash chain (AUDIT.md). Append and read only: this module has no
//! function that updates or deletes an event.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit_event::AuditEvent;
use crate::audit_record;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId, UserId};
use crate::tables::{AUDIT, AUDIT_HEADS, USER_AUDIT, USER_AUDIT_HEADS, get_json, put_json};

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
    txn: &crate::ledger::Tx<'_>,
    org: &OrgId,
    actor: &Actor,
    event: &AuditEvent,
    at: &str,
) -> Result<AuditHead> {
    append_raw(txn, org, actor, event.kind(), event.data(), at)
}

/// [`append`] of an already built `kind` and `data`; private so that [`AuditEvent`] is the
/// only way in.
fn append_raw(
    txn: &crate::ledger::Tx<'_>,
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
    let canonical = crate::jcs::to_vec(&event)
        .map_err(|e| StoreError::Corrupt(format!("cannot canonicalize event: {e}")))?;
    let hash = hex::encode(Sha256::digest(&canonical));
    // The compact form (audit_record.rs) when its tail comes back byte for byte, else the line.
    let bytes = audit_record::compact(&canonical, &hash, kind, org.as_str(), &head.hash, seq)
        .unwrap_or_else(|| with_hash_member(&canonical, &hash));
    event["hash"] = Value::String(hash.clone());
    let mut events = txn.open_table(AUDIT)?;
    let key = audit_key(org, seq);
    // The chain never reuses a seq; a store edited behind the guard's back fails the write
    // (and so the decision) instead of overwriting history: the caller's transaction is then
    // aborted, so the overwritten value is never committed.
    if events.insert(key.as_str(), &bytes)? {
        return Err(StoreError::Corrupt(format!(
            "audit seq {seq} of {org} is already used"
        )));
    }
    let new_head = AuditHead { seq, hash };
    put_json(&mut heads, org.as_str(), &new_head)?;
    drop(heads);
    drop(events);
    // WEBHOOKS.md: the outbox entry is written in the same transaction as its audit event.
    crate::webhooks::enqueue_in(txn, org, kind, &event, &new_head)?;
    Ok(new_head)
}

/// Append one event to a user's own trail (ADMIN_API.md: a user's credential events go to
/// their own trail, not to the organizations they belong to). Same chain rules as an
/// organization's: `{"user", "seq", "at", "actor", "kind", "data", "prev", "hash"}`, SHA-256 of
/// the JCS form without `hash`, each event's `prev` the previous one's `hash`; no webhook.
pub(crate) fn append_user(
    txn: &crate::ledger::Tx<'_>,
    user: &UserId,
    actor: &Actor,
    event: &AuditEvent,
    at: &str,
) -> Result<AuditHead> {
    let (kind, data) = (event.kind(), event.data());
    let mut heads = txn.open_table(USER_AUDIT_HEADS)?;
    let head: AuditHead = get_json(&heads, user.as_str())?.unwrap_or_else(AuditHead::empty);
    let seq = head.seq + 1;
    let mut event = json!({
        "user": user, "seq": seq, "at": at, "actor": actor, "kind": kind, "data": data,
        "prev": head.hash,
    });
    let hash = event_hash(&event)?;
    event["hash"] = Value::String(hash.clone());
    let bytes = serde_json_canonicalizer::to_vec(&event)
        .map_err(|e| StoreError::Corrupt(format!("cannot canonicalize event: {e}")))?;
    let mut events = txn.open_table(USER_AUDIT)?;
    if events.insert((user.as_str(), seq), &bytes)? {
        return Err(StoreError::Corrupt(format!(
            "audit seq {seq} of {user} is already used"
        )));
    }
    let new_head = AuditHead { seq, hash };
    put_json(&mut heads, user.as_str(), &new_head)?;
    Ok(new_head)
}

/// The current head of an organization's chain.
pub(crate) fn head(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    chain: &str,
) -> Result<AuditHead> {
    Ok(get_json(table, chain)?.unwrap_or_else(AuditHead::empty))
}

/// Fast path: the guard stores events as JCS canonical JSON, whose top-level members sort as
/// actor, at, data, hash, kind, org, prev, seq. So the stored bytes end with
/// `,"hash":"<64 hex>","kind":"…","org":"…","prev":"<64 hex>","seq":<n>}`, and the canonical
/// form without `hash` is the stored bytes minus `,"hash":"<64 hex>"`. The links are read from
/// that fixed tail (no JSON scan of the whole event), and the event counts as checked when the
/// remaining bytes hash to its own `hash`. Returns `None` when the bytes do not have that shape
/// or the hash does not match; the full check (parse, RFC 8785, hash) then decides.
///
/// Why this is as strong as the full check for tamper evidence: the hash covers every stored
/// byte but the hash member itself, and each event's hash is the next one's `prev` up to the
/// head, so a changed, removed, inserted or reordered event fails here exactly where it fails
/// the full check. Bytes that were never canonical can only pass with a re-chained forgery,
/// which neither check can see without an outside head (AUDIT.md; docs/DECISIONS.md).
fn check_event_fast(raw: &[u8], expected_seq: u64, prev: &str) -> Option<String> {
    let link = fast_link(raw)?;
    (link.seq == expected_seq && link.prev.as_slice() == prev.as_bytes())
        .then(|| hex_text(&link.hash))
}

/// The chain links of one stored event (lower-case hex, as stored).
struct FastLink {
    seq: u64,
    prev: [u8; HEX_LEN],
    hash: [u8; HEX_LEN],
}

/// Lower-case hex digits (checked by `fast_link`) as text.
fn hex_text(hex: &[u8; HEX_LEN]) -> String {
    hex.iter().map(|&b| b as char).collect()
}

const HEX_LEN: usize = 64;
const HASH_MEMBER: &[u8] = b",\"hash\":\"";
const KIND_MEMBER: &[u8] = b"\",\"kind\":\"";
const PREV_MEMBER: &[u8] = b",\"prev\":\"";
const SEQ_MEMBER: &[u8] = b"\",\"seq\":";

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// (seq, prev, hash) from the canonical tail, when the stored bytes hash to the event's own
/// `hash`; `None` for anything else.
fn fast_link(raw: &[u8]) -> Option<FastLink> {
    let t = canonical_tail(raw)?;
    let mut h = Sha256::new();
    h.update(&raw[..t.member_at]);
    h.update(&raw[t.kind_at + 1..]); // from `,"kind":`, past the hash's closing quote
    let mut actual = [0u8; 64];
    hex::encode_to_slice(h.finalize(), &mut actual).ok()?;
    (actual.as_slice() == &raw[t.hash_at..t.kind_at]).then_some(FastLink {
        seq: t.seq,
        prev: t.prev,
        hash: actual,
    })
}

/// Where the members of a canonical line's fixed tail are.
pub(crate) struct CanonicalTail {
    seq: u64,
    prev: [u8; HEX_LEN],
    /// Start of `,"hash":"`.
    member_at: usize,
    /// Start of the stated hash's 64 hex digits.
    hash_at: usize,
    /// Start of `","kind":"` (the hash's closing quote).
    kind_at: usize,
}

impl CanonicalTail {
    /// The stated hash (lower-case hex) of the line this tail was read from.
    pub(crate) fn stated_hash(&self, line: &[u8]) -> String {
        line[self.hash_at..self.kind_at]
            .iter()
            .map(|&b| b as char)
            .collect()
    }
}

/// The tail `,"hash":"<64 hex>","kind":…,"prev":"<64 hex>","seq":<n>}` of a line stored as JCS
/// canonical JSON (members sort actor, at, data, hash, kind, org, prev, seq), without hashing
/// anything; `None` for bytes of any other shape.
pub(crate) fn canonical_tail(raw: &[u8]) -> Option<CanonicalTail> {
    if !raw.starts_with(b"{\"actor\":") {
        return None;
    }
    let body = raw.strip_suffix(b"}")?;
    // `…","seq":<digits>` (canonical integers: no sign, no leading zero).
    let digits_at = body.iter().rposition(|c| !c.is_ascii_digit())? + 1;
    let digits = &body[digits_at..];
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let before_seq = body[..digits_at].strip_suffix(SEQ_MEMBER)?;
    // `,"prev":"<64 hex>` right before it.
    let prev_at = before_seq.len().checked_sub(HEX_LEN)?;
    let prev = &before_seq[prev_at..];
    if !is_lower_hex(prev) {
        return None;
    }
    let before_prev = before_seq[..prev_at].strip_suffix(PREV_MEMBER)?;
    // The top-level `kind` is the last `","kind":"` (the org id, prev and seq cannot hold it;
    // inside `data` it can only come earlier), and `hash` is the member right before it.
    let kind_at = before_prev
        .windows(KIND_MEMBER.len())
        .rposition(|w| w == KIND_MEMBER)?;
    let hash_at = kind_at.checked_sub(HEX_LEN)?;
    if !is_lower_hex(&raw[hash_at..kind_at]) {
        return None;
    }
    let member_at = hash_at.checked_sub(HASH_MEMBER.len())?;
    if &raw[member_at..hash_at] != HASH_MEMBER {
        return None;
    }
    Some(CanonicalTail {
        seq,
        prev: prev.try_into().ok()?,
        member_at,
        hash_at,
        kind_at,
    })
}

/// Events checked per parallel batch during verification (bounds memory).
const VERIFY_BATCH: usize = 16_384;
/// Bytes of event lines per batch at most (two batches are in memory at a time).
const VERIFY_BATCH_BYTES: usize = 32 << 20;
/// Threads used to check event hashes.
const VERIFY_THREADS_MAX: usize = 8;

/// A stored event on its way to verification: the canonical line itself, or what expands to
/// it ([`Deferred`]), which the checking threads expand in parallel.
pub(crate) trait EventLine: Send {
    /// Bytes its line will take at most (for bounding a batch).
    fn stored_len(&self) -> usize;
    /// The canonical line.
    fn into_line(self) -> Vec<u8>;
}

impl EventLine for Vec<u8> {
    fn stored_len(&self) -> usize {
        self.len()
    }

    fn into_line(self) -> Vec<u8> {
        self
    }
}

/// A stored organization event and what its expansion needs (audit_record.rs): its seq (from
/// its key) and the stated hash of the event before it.
pub(crate) struct Deferred {
    org: std::sync::Arc<str>,
    seq: u64,
    prev: String,
    stored: Vec<u8>,
}

impl EventLine for Deferred {
    fn stored_len(&self) -> usize {
        audit_record::expanded_len_bound(&self.stored)
    }

    fn into_line(self) -> Vec<u8> {
        audit_record::expand(&self.stored, &self.org, self.seq, &self.prev)
    }
}

/// Every event of a batch as its line, with its fast-path link (`None`: take the full check),
/// in order; expansion and hashing are spread over `threads`.
fn lines_and_links<T: EventLine>(batch: Vec<T>, threads: usize) -> Option<Checked> {
    let one = |part: Vec<T>| -> (Vec<Vec<u8>>, Vec<Option<FastLink>>) {
        let lines: Vec<Vec<u8>> = part.into_iter().map(EventLine::into_line).collect();
        let links = lines.iter().map(|l| fast_link(l)).collect();
        (lines, links)
    };
    if threads <= 1 || batch.len() < 1024 {
        return Some(one(batch));
    }
    let chunk = batch.len().div_ceil(threads);
    let mut parts: Vec<Vec<T>> = Vec::new();
    let mut rest = batch;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || one(part)))
            .collect();
        let (mut lines, mut links) = (Vec::new(), Vec::new());
        for h in handles {
            let (l, k) = h.join().ok()?;
            lines.extend(l);
            links.extend(k);
        }
        Some((lines, links))
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

/// A batch of raw events and their fast-path links.
type Checked = (Vec<Vec<u8>>, Vec<Option<FastLink>>);

/// Where the walk along the chain is: the last verified event.
struct Walk {
    prev: String,
    seq: u64,
}

impl Walk {
    /// Follow the links of one batch in order; the report of the first event that fails.
    fn walk(&mut self, batch: &[Vec<u8>], links: Vec<Option<FastLink>>) -> Option<VerifyReport> {
        for (raw, link) in batch.iter().zip(links) {
            let expected = self.seq + 1;
            let verdict = match link {
                Some(l) if l.seq == expected && l.prev.as_slice() == self.prev.as_bytes() => {
                    Ok(hex_text(&l.hash))
                }
                _ => check_event_canonical(raw, expected, &self.prev),
            };
            match verdict {
                Ok(hash) => {
                    self.prev = hash;
                    self.seq = expected;
                }
                Err(reason) => {
                    return Some(VerifyReport::Broken {
                        ok: false,
                        first_bad_seq: expected,
                        reason,
                    });
                }
            }
        }
        None
    }
}

/// Verify a sequence of raw events (in stored order) and the stored head.
pub(crate) fn verify_events<T: EventLine>(
    events: impl Iterator<Item = Result<T>>,
    stored_head: Option<&AuditHead>,
) -> Result<VerifyReport> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, VERIFY_THREADS_MAX);
    let mut chain = Walk {
        prev: GENESIS.to_string(),
        seq: 0,
    };
    // Reading events out of redb is serial; checking each event's own hash is not. So the next
    // batch is read while the previous one is checked on other threads, then the links are
    // walked in order. Anything the fast path cannot vouch for is re-checked in full.
    let mut events = events;
    let broken = std::thread::scope(|scope| -> Result<Option<VerifyReport>> {
        let mut in_flight = None;
        loop {
            // Bounded by count and by bytes: a damaged store cannot make a batch hold more
            // than VERIFY_BATCH_BYTES (plus one event) of lines.
            let mut batch: Vec<T> = Vec::with_capacity(VERIFY_BATCH);
            let mut bytes = 0usize;
            for raw in events.by_ref() {
                let raw = raw?;
                bytes += raw.stored_len();
                batch.push(raw);
                if batch.len() >= VERIFY_BATCH || bytes >= VERIFY_BATCH_BYTES {
                    break;
                }
            }
            if let Some(handle) = in_flight.take() {
                let joined: std::thread::Result<Option<Checked>> =
                    std::thread::ScopedJoinHandle::join(handle);
                let Ok(Some((checked, links))) = joined else {
                    return Err(StoreError::Db("an audit check thread failed".into()));
                };
                if let Some(report) = chain.walk(&checked, links) {
                    return Ok(Some(report));
                }
            }
            if batch.is_empty() {
                return Ok(None);
            }
            in_flight = Some(scope.spawn(move || lines_and_links(batch, threads)));
        }
    })?;
    if let Some(report) = broken {
        return Ok(report);
    }
    let Walk { prev, seq } = chain;
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

/// An organization's events in order from `first_seq`, each as its stored value and what its
/// expansion needs (audit_record.rs): the seq of its key and the stated hash of the event
/// before it. Verification expands them on its checking threads; [`raw_events_from`] expands
/// them as they are read (read transaction).
pub(crate) fn deferred_events_from<'t>(
    table: &'t redb::ReadOnlyTable<&'static str, &'static [u8]>,
    org: &OrgId,
    first_seq: u64,
) -> Result<impl Iterator<Item = Result<Deferred>> + 't> {
    // The first event's `prev` is the stated hash of the one before it.
    let mut prev = match first_seq.checked_sub(1) {
        None | Some(0) => GENESIS.to_string(),
        Some(before) => table
            .get(audit_key(org, before).as_str())?
            .and_then(|v| audit_record::stated_hash(v.value()))
            .unwrap_or_default(),
    };
    let start = audit_key(org, first_seq.max(1));
    let end = format!("{org}}}"); // '}' sorts after '|'
    let range = table.range(start.as_str()..end.as_str())?;
    let org: std::sync::Arc<str> = org.as_str().into();
    Ok(range.map(move |row| {
        let (k, v) = row?;
        // A key whose seq does not parse expands with seq 0, which no check accepts.
        let seq = k
            .value()
            .rsplit_once('|')
            .and_then(|(_, n)| n.parse::<u64>().ok())
            .unwrap_or(0);
        let stored = v.value().to_vec();
        let next = audit_record::stated_hash(&stored).unwrap_or_default();
        Ok(Deferred {
            org: org.clone(),
            seq,
            prev: std::mem::replace(&mut prev, next),
            stored,
        })
    }))
}

/// An organization's events in order from `first_seq`, each as its canonical line (read
/// transaction).
pub(crate) fn raw_events_from<'t>(
    table: &'t redb::ReadOnlyTable<&'static str, &'static [u8]>,
    org: &OrgId,
    first_seq: u64,
) -> Result<impl Iterator<Item = Result<Vec<u8>>> + 't> {
    Ok(deferred_events_from(table, org, first_seq)?.map(|d| d.map(EventLine::into_line)))
}

/// Every event of an organization in order, as canonical lines (read transaction).
pub(crate) fn raw_events<'t>(
    table: &'t redb::ReadOnlyTable<&'static str, &'static [u8]>,
    org: &OrgId,
) -> Result<impl Iterator<Item = Result<Vec<u8>>> + 't> {
    raw_events_from(table, org, 1)
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
    fn fast_path_reads_the_top_level_links_not_look_alikes_in_data() {
        // `data` holding members named like the links must not fool the tail parse.
        let ev = json!({"org": "org_a", "seq": 7, "at": "x", "actor": {"type": "system", "id": "t"},
            "kind": "decision", "prev": GENESIS,
            "data": {"hash": "f".repeat(64), "kind": "\",\"kind\":\"", "prev": "e".repeat(64), "seq": 1}});
        let hash = event_hash(&ev).unwrap();
        let raw = with_hash_member(&serde_json_canonicalizer::to_vec(&ev).unwrap(), &hash);
        assert_eq!(check_event_fast(&raw, 7, GENESIS), Some(hash.clone()));
        assert_eq!(check_event_canonical(&raw, 7, GENESIS), Ok(hash));
        assert_eq!(check_event_fast(&raw, 1, GENESIS), None);
        assert_eq!(check_event_fast(&raw, 7, &"e".repeat(64)), None);
    }

    #[test]
    fn fast_path_refuses_every_single_byte_change() {
        let raw = chain(1).remove(0);
        assert!(check_event_fast(&raw, 1, GENESIS).is_some());
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert!(
                check_event_fast(&bad, 1, GENESIS).is_none(),
                "byte {i} changed"
            );
            assert!(check_event(&bad, 1, GENESIS).is_err(), "byte {i} changed");
        }
        for cut in 0..raw.len() {
            assert!(
                check_event(&raw[..cut], 1, GENESIS).is_err(),
                "cut at {cut}"
            );
        }
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
    fn chains_longer_than_a_batch_verify_and_name_the_first_bad_event() {
        let n = (VERIFY_BATCH * 2 + 100) as u64;
        let mut evs = chain(n);
        let r = verify(&evs);
        assert!(
            matches!(r, VerifyReport::Ok { events, .. } if events == n),
            "{r:?}"
        );
        // One event in the second batch and one in the third changed: the first is named.
        let bad = VERIFY_BATCH + 7;
        for i in [bad, VERIFY_BATCH * 2 + 50] {
            let pos = evs[i].len() / 2;
            evs[i][pos] ^= 0x01;
        }
        let r = verify(&evs);
        assert!(
            matches!(r, VerifyReport::Broken { first_bad_seq, .. } if first_bad_seq == bad as u64 + 1),
            "{r:?}"
        );
    }

    /// Golden bytes: events appended through [`AuditEvent`] are byte for byte what the store
    /// wrote before the enum (computed outside this codebase: Python's sorted-key compact JSON
    /// is JCS for this ASCII text, and SHA-256 of it), so chains from before keep verifying and
    /// keep being extended with the same hashes.
    #[test]
    fn typed_events_append_the_bytes_of_before() {
        use crate::audit_event::{AuditEvent, MemberAdded};
        use crate::model::Role;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path(), crate::MasterKey::generate()).unwrap();
        let org = OrgId::parse("org_1").unwrap();
        let u1 = UserId::parse("usr_1").unwrap();
        let u2 = UserId::parse("usr_2").unwrap();
        let actor = Actor::User(u1.clone());
        let at = "2026-11-24T09:15:02.123456Z";
        let created = AuditEvent::OrgCreated {
            name: "Acme".into(),
        };
        let added = AuditEvent::MemberAdded(MemberAdded::Invited {
            user: u1.clone(),
            email: "a@example.com".into(),
            role: Role::Approver,
            invitation: "inv_1".into(),
            invited_by: u2.clone(),
        });
        let accepted = AuditEvent::UserInvitationAccepted {
            organization: org.clone(),
            role: Role::Approver,
            invitation: "inv_1".into(),
            invited_by: u2,
        };
        let heads = store
            .write(|txn| {
                Ok((
                    append(txn, &org, &actor, &created, at)?,
                    append(txn, &org, &actor, &added, at)?,
                    append_user(txn, &u1, &actor, &accepted, at)?,
                ))
            })
            .unwrap();
        const H1: &str = "edde0f296da3d79d539d7a2fccc294a7080b0d81dcc03b91aff416e1fe4bc851";
        const H2: &str = "88f144f00a4ac68bb2a4246f0d8fd19aaedba037560bab39963fd0f01bfbd4f5";
        const HU: &str = "7a0a8fe37293c8f47899f6bf8324496062c43625813e57a5a52baf7e8a042c2c";
        assert_eq!(
            heads.0,
            AuditHead {
                seq: 1,
                hash: H1.into()
            }
        );
        assert_eq!(
            heads.1,
            AuditHead {
                seq: 2,
                hash: H2.into()
            }
        );
        assert_eq!(
            heads.2,
            AuditHead {
                seq: 1,
                hash: HU.into()
            }
        );
        let r = store.read().unwrap();
        let events = r.open_table(AUDIT).unwrap();
        let stored = |t: &redb::ReadOnlyTable<(&'static str, u64), &'static [u8]>,
                      k: (&str, u64)| {
            String::from_utf8(t.get(k).unwrap().unwrap().value().to_vec()).unwrap()
        };
        // Stored compact (audit_record.rs); read back, exactly the lines stored before.
        let raw = |k: &str| events.get(k).unwrap().unwrap().value().to_vec();
        assert_eq!(raw("org_1|00000000000000000001")[0], 0x01);
        let lines: Vec<String> = raw_events(&events, &org)
            .unwrap()
            .map(|l| String::from_utf8(l.unwrap()).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            format!(
                r#"{{"actor":{{"id":"usr_1","type":"user"}},"at":"{at}","data":{{"name":"Acme"}},"hash":"{H1}","kind":"org.created","org":"org_1","prev":"{GENESIS}","seq":1}}"#
            )
        );
        assert_eq!(
            lines[1],
            format!(
                r#"{{"actor":{{"id":"usr_1","type":"user"}},"at":"{at}","data":{{"email":"a@example.com","invitation":"inv_1","invited_by":"usr_2","role":"approver","user":"usr_1"}},"hash":"{H2}","kind":"member.added","org":"org_1","prev":"{H1}","seq":2}}"#
            )
        );
        assert_eq!(
            stored(&r.open_table(USER_AUDIT).unwrap(), ("usr_1", 1)),
            format!(
                r#"{{"actor":{{"id":"usr_1","type":"user"}},"at":"{at}","data":{{"invitation":"inv_1","invited_by":"usr_2","organization":"org_1","role":"approver"}},"hash":"{HU}","kind":"user.invitation_accepted","prev":"{GENESIS}","seq":1,"user":"usr_1"}}"#
            )
        );
        let report = verify_events(raw_events(&events, &org).unwrap(), Some(&heads.1)).unwrap();
        assert_eq!(
            report,
            VerifyReport::Ok {
                ok: true,
                events: 2,
                head: heads.1
            }
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
