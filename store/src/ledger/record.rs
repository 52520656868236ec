//! The on-disk encoding of the ledger's big records: intents and idempotency records here,
//! and the compression the compact audit events share (`audit.rs`) (issue #13, "Small":
//! binary records behind a versioned format).
//!
//! A record is one version byte and a packed MessagePack body (`rmp-serde`, structs as arrays,
//! no field names, bytes as `bin`, the request digest as its 32 raw bytes):
//!
//! | first byte | format |
//! |---|---|
//! | `{` (0x7B) | JSON, as every record was written before this module (read, never written) |
//! | 0x01 | [`pack`]ed [`IntentV1`] / [`IdempotencyV1`] |
//!
//! [`pack`] is an LZ4 block (`lz4_flex`, pure Rust, safe decoding) behind its length, with a
//! fixed dictionary, `dict_v1.txt`: the field names and values that every record repeats
//! (audit event skeletons, Stripe paths, operations, statuses, headers, a PaymentIntent). Small
//! records compress well only against such a dictionary. The dictionary is part of the format:
//! it never changes (a test pins its SHA-256); a better one is a new version byte.
//!
//! Old records are read as they are and rewritten in the new format the next time their
//! intent changes; nothing is migrated in bulk. A new format is a new version byte and a new
//! struct beside the old ones, never a change to a struct below: the field order of each `V1`
//! struct and the serde names of the enums it holds are the format (the golden tests at the
//! end pin both).

use std::collections::BTreeMap;

use policies::{OperationClass, Outcome};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::ids::{AgentId, IntentId, OrgId, UserId};
use crate::model::{
    Approval, IdempotencyRecord, Intent, IntentAmount, IntentStatus, Reservation, StoredResponse,
};

/// Version byte of the first binary format.
const V1: u8 = 0x01;

/// The request digest: SHA-256 as 32 raw bytes when it is 64 lower-case hex digits (always, for
/// a digest the guard computed), else the text as stored. Untagged: `bin` or a string.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum DigestV1 {
    Raw(#[serde(with = "bin")] Vec<u8>),
    Text(String),
}

impl DigestV1 {
    fn of(hex_text: &str) -> DigestV1 {
        match hex::decode(hex_text) {
            Ok(raw) if raw.len() == 32 && hex::encode(&raw) == hex_text => DigestV1::Raw(raw),
            _ => DigestV1::Text(hex_text.to_string()),
        }
    }

    fn text(self) -> String {
        match self {
            DigestV1::Raw(raw) => hex::encode(raw),
            DigestV1::Text(t) => t,
        }
    }
}

/// A time the store wrote (`2026-12-03T10:00:00.123456Z`, `time_util`): Unix microseconds
/// when the text reads back identically from them, else the text. Untagged: an integer or a
/// string in MessagePack.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TimeV1 {
    Micros(i64),
    Text(String),
}

impl TimeV1 {
    fn of(text: &str) -> TimeV1 {
        let micros = time::PrimitiveDateTime::parse(text, crate::time_util::RFC3339_MICROS)
            .ok()
            .map(|t| t.assume_utc().unix_timestamp_nanos() / 1000)
            .and_then(|m| i64::try_from(m).ok());
        match micros {
            Some(m) if Self::format(m).as_deref() == Some(text) => TimeV1::Micros(m),
            _ => TimeV1::Text(text.to_string()),
        }
    }

    fn format(micros: i64) -> Option<String> {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).ok()?;
        t.format(crate::time_util::RFC3339_MICROS).ok()
    }

    fn text(self) -> std::result::Result<String, String> {
        match self {
            TimeV1::Micros(m) => Self::format(m).ok_or_else(|| format!("time {m} out of range")),
            TimeV1::Text(t) => Ok(t),
        }
    }
}

/// An id (`int_…`, `org_…`, …): its hex digits as raw bytes when it is the prefix and an even
/// number of lower-case hex digits (every id the guard generates), else the text. Untagged:
/// `bin` or a string in MessagePack.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum IdV1 {
    Raw(#[serde(with = "bin")] Vec<u8>),
    Text(String),
}

impl IdV1 {
    fn of(prefix: &str, id: &str) -> IdV1 {
        match id.strip_prefix(prefix).map(hex::decode) {
            Some(Ok(raw)) if format!("{prefix}{}", hex::encode(&raw)) == id => IdV1::Raw(raw),
            _ => IdV1::Text(id.to_string()),
        }
    }

    fn text(self, prefix: &str) -> String {
        match self {
            IdV1::Raw(raw) => format!("{prefix}{}", hex::encode(raw)),
            IdV1::Text(t) => t,
        }
    }
}

/// An [`Intent`], field for field in the same order, with the amount as its two stored fields,
/// bytes as bytes, and the upstream key left out when it is the one derived from the id.
#[derive(Serialize, Deserialize)]
struct IntentV1 {
    id: IdV1,
    org: IdV1,
    agent: IdV1,
    idempotency_key: String,
    request_digest: DigestV1,
    method: String,
    path: String,
    operation: String,
    class: OperationClass,
    amount: Option<i64>,
    currency: Option<String>,
    counterparty: String,
    account: String,
    counted: Option<i64>,
    valued: bool,
    metadata: BTreeMap<String, String>,
    decision: Outcome,
    status: IntentStatus,
    policies: Vec<String>,
    caps: Vec<String>,
    reason: String,
    approvals_required: u32,
    approvals: Vec<ApprovalV1>,
    created_at: TimeV1,
    decided_at: TimeV1,
    expires_at_unix: Option<i64>,
    reservation: Option<ReservationV1>,
    #[serde(with = "bin_opt")]
    request_body: Option<Vec<u8>>,
    query: String,
    request_headers: Vec<(String, String)>,
    /// `None`: `pg-<id>`, the key every intent since the first release derives.
    upstream_idempotency_key: Option<String>,
    attempts: u32,
    response: Option<ResponseV1>,
    upstream_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ApprovalV1 {
    user: IdV1,
    verdict: String,
    comment: Option<String>,
    at: TimeV1,
}

#[derive(Serialize, Deserialize)]
struct ReservationV1 {
    amount: i64,
    window_unix: i64,
    legacy_counters: Vec<String>,
    released: bool,
}

#[derive(Serialize, Deserialize)]
struct ResponseV1 {
    status: u16,
    headers: Vec<(String, String)>,
    #[serde(with = "bin")]
    body: Vec<u8>,
}

/// An [`IdempotencyRecord`].
#[derive(Serialize, Deserialize)]
struct IdempotencyV1 {
    request_digest: DigestV1,
    intent: IdV1,
    created_at: TimeV1,
}

fn derived_upstream_key(id: &IntentId) -> String {
    format!("pg-{id}")
}

/// The compression dictionary of format version 1 (see the module documentation).
const DICT_V1: &[u8] = include_bytes!("dict_v1.txt");

/// The largest record [`unpack`] accepts: far above any record (request and response bodies
/// are bounded far below it), so a corrupt length cannot make it allocate gigabytes.
const MAX_UNPACKED: usize = 16 << 20;

/// `bytes` as its length (u32, little-endian) and an LZ4 block against [`DICT_V1`].
pub(crate) fn pack(bytes: &[u8]) -> Vec<u8> {
    lz4_flex::block::compress_prepend_size_with_dict(bytes, DICT_V1)
}

/// The bytes [`pack`] packed; an error for anything it did not produce.
pub(crate) fn unpack(packed: &[u8], what: &str) -> Result<Vec<u8>> {
    unpack_at_most(packed, what, MAX_UNPACKED)
}

/// [`unpack`], refusing to produce more than `max` bytes (LZ4 expands up to 255:1, so the
/// stored size alone does not bound what a damaged or hostile value unpacks to).
pub(crate) fn unpack_at_most(packed: &[u8], what: &str, max: usize) -> Result<Vec<u8>> {
    let (len, block) = packed
        .split_first_chunk::<4>()
        .ok_or_else(|| decode_err(what, "too short"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > max {
        return Err(decode_err(what, format!("claims {len} bytes")));
    }
    let out = lz4_flex::block::decompress_with_dict(block, len, DICT_V1)
        .map_err(|e| decode_err(what, e))?;
    if out.len() != len {
        return Err(decode_err(what, "length does not match"));
    }
    Ok(out)
}

fn framed<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let body = rmp_serde::to_vec(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a record: {e}")))?;
    let mut out = Vec::with_capacity(body.len() / 2 + 8);
    out.push(V1);
    out.extend_from_slice(&pack(&body));
    Ok(out)
}

/// The body of a binary record, or `None` for a JSON one; an unknown version is corrupt.
fn body_of(bytes: &[u8], what: &str) -> Result<Option<Vec<u8>>> {
    match bytes.first() {
        Some(b'{') => Ok(None),
        Some(&V1) => unpack(&bytes[1..], what).map(Some),
        Some(other) => Err(StoreError::Corrupt(format!(
            "{what} record has unknown format version {other:#04x}"
        ))),
        None => Err(StoreError::Corrupt(format!("{what} record is empty"))),
    }
}

fn decode_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} record does not decode: {e}"))
}

/// The stored bytes of an intent (always the newest format).
pub(crate) fn encode_intent(i: &Intent) -> Result<Vec<u8>> {
    let upstream = (i.upstream_idempotency_key != derived_upstream_key(&i.id))
        .then(|| i.upstream_idempotency_key.clone());
    framed(&IntentV1 {
        id: IdV1::of(IntentId::PREFIX, i.id.as_str()),
        org: IdV1::of(OrgId::PREFIX, i.org.as_str()),
        agent: IdV1::of(AgentId::PREFIX, i.agent.as_str()),
        idempotency_key: i.idempotency_key.clone(),
        request_digest: DigestV1::of(&i.request_digest),
        method: i.method.clone(),
        path: i.path.clone(),
        operation: i.operation.clone(),
        class: i.class,
        amount: i.amount.minor(),
        currency: i.amount.currency().map(|c| c.as_str().to_string()),
        counterparty: i.counterparty.clone(),
        account: i.account.clone(),
        counted: i.counted,
        valued: i.valued,
        metadata: i.metadata.clone(),
        decision: i.decision,
        status: i.status,
        policies: i.policies.clone(),
        caps: i.caps.clone(),
        reason: i.reason.clone(),
        approvals_required: i.approvals_required,
        approvals: i
            .approvals
            .iter()
            .map(|a| ApprovalV1 {
                user: IdV1::of(UserId::PREFIX, a.user.as_str()),
                verdict: a.verdict.clone(),
                comment: a.comment.clone(),
                at: TimeV1::of(&a.at),
            })
            .collect(),
        created_at: TimeV1::of(&i.created_at),
        decided_at: TimeV1::of(&i.decided_at),
        expires_at_unix: i.expires_at_unix,
        reservation: i.reservation.as_ref().map(|r| ReservationV1 {
            amount: r.amount,
            window_unix: r.window_unix,
            legacy_counters: r.legacy_counters.clone(),
            released: r.released,
        }),
        request_body: i.request_body.clone(),
        query: i.query.clone(),
        request_headers: i.request_headers.clone(),
        upstream_idempotency_key: upstream,
        attempts: i.attempts,
        response: i.response.as_ref().map(|r| ResponseV1 {
            status: r.status,
            headers: r.headers.clone(),
            body: r.body.clone(),
        }),
        upstream_id: i.upstream_id.clone(),
    })
}

/// An intent from its stored bytes, in any format this build has written.
pub(crate) fn decode_intent(bytes: &[u8]) -> Result<Intent> {
    let Some(body) = body_of(bytes, "intent")? else {
        return Ok(serde_json::from_slice(bytes)?);
    };
    let r: IntentV1 = rmp_serde::from_slice(&body).map_err(|e| decode_err("intent", e))?;
    let amount = IntentAmount::try_from(crate::model::AmountFields {
        amount: r.amount,
        currency: r.currency,
    })
    .map_err(|e| decode_err("intent", e))?;
    let id = IntentId::from_stored(r.id.text(IntentId::PREFIX));
    let upstream_idempotency_key = r
        .upstream_idempotency_key
        .unwrap_or_else(|| derived_upstream_key(&id));
    let time = |t: TimeV1| t.text().map_err(|e| decode_err("intent", e));
    let approvals = r
        .approvals
        .into_iter()
        .map(|a| {
            Ok(Approval {
                user: UserId::from_stored(a.user.text(UserId::PREFIX)),
                verdict: a.verdict,
                comment: a.comment,
                at: time(a.at)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Intent {
        id,
        org: OrgId::from_stored(r.org.text(OrgId::PREFIX)),
        agent: AgentId::from_stored(r.agent.text(AgentId::PREFIX)),
        idempotency_key: r.idempotency_key,
        request_digest: r.request_digest.text(),
        method: r.method,
        path: r.path,
        operation: r.operation,
        class: r.class,
        amount,
        counterparty: r.counterparty,
        account: r.account,
        counted: r.counted,
        valued: r.valued,
        metadata: r.metadata,
        decision: r.decision,
        status: r.status,
        policies: r.policies,
        caps: r.caps,
        reason: r.reason,
        approvals_required: r.approvals_required,
        approvals,
        created_at: time(r.created_at)?,
        decided_at: time(r.decided_at)?,
        expires_at_unix: r.expires_at_unix,
        reservation: r.reservation.map(|r| Reservation {
            amount: r.amount,
            window_unix: r.window_unix,
            legacy_counters: r.legacy_counters,
            released: r.released,
        }),
        request_body: r.request_body,
        query: r.query,
        request_headers: r.request_headers,
        upstream_idempotency_key,
        attempts: r.attempts,
        response: r.response.map(|r| StoredResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }),
        upstream_id: r.upstream_id,
    })
}

/// The stored bytes of an idempotency record (always the newest format).
pub(crate) fn encode_idempotency(rec: &IdempotencyRecord) -> Result<Vec<u8>> {
    framed(&IdempotencyV1 {
        request_digest: DigestV1::of(&rec.request_digest),
        intent: IdV1::of(IntentId::PREFIX, rec.intent.as_str()),
        created_at: TimeV1::of(&rec.created_at),
    })
}

/// An idempotency record from its stored bytes, in any format this build has written.
pub(crate) fn decode_idempotency(bytes: &[u8]) -> Result<IdempotencyRecord> {
    let Some(body) = body_of(bytes, "idempotency")? else {
        return Ok(serde_json::from_slice(bytes)?);
    };
    let r: IdempotencyV1 =
        rmp_serde::from_slice(&body).map_err(|e| decode_err("idempotency", e))?;
    Ok(IdempotencyRecord {
        request_digest: r.request_digest.text(),
        intent: IntentId::from_stored(r.intent.text(IntentId::PREFIX)),
        created_at: r
            .created_at
            .text()
            .map_err(|e| decode_err("idempotency", e))?,
    })
}

/// The record stored under `key`, decoded, if any.
fn get_decoded<T>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    decode: fn(&[u8]) -> Result<T>,
) -> Result<Option<T>> {
    table.get(key)?.map(|v| decode(v.value())).transpose()
}

/// The intent stored under `key`, if any.
pub(crate) fn get_intent(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Intent>> {
    get_decoded(table, key, decode_intent)
}

/// Every intent whose key starts with `prefix`, in key order.
pub(crate) fn scan_intents(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<Intent>> {
    let mut out = Vec::new();
    for row in table.range(prefix..)? {
        let (k, v) = row?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(decode_intent(v.value())?);
    }
    Ok(out)
}

/// The idempotency record stored under `key`, if any.
pub(crate) fn get_idempotency(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<IdempotencyRecord>> {
    get_decoded(table, key, decode_idempotency)
}

/// Bytes as MessagePack `bin` (serde's default for `Vec<u8>` is an array of integers).
mod bin {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    pub(super) struct BytesVisitor;

    impl<'de> serde::de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

/// [`bin`] for an optional body.
mod bin_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Owned>::deserialize(d)?.map(|o| o.0))
    }

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    struct Owned(Vec<u8>);

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Owned, D::Error> {
            d.deserialize_byte_buf(super::bin::BytesVisitor).map(Owned)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: IntentStatus) -> Intent {
        let id = IntentId::parse("int_0123456789abcdef01234567").unwrap();
        Intent {
            upstream_idempotency_key: format!("pg-{id}"),
            id,
            org: OrgId::parse("org_0123456789abcdef01234567").unwrap(),
            agent: AgentId::parse("agt_0123456789abcdef01234567").unwrap(),
            idempotency_key: "order-17".into(),
            request_digest: hex::encode([7u8; 32]),
            method: "POST".into(),
            path: "/v1/payment_intents".into(),
            operation: "payment_intents.create".into(),
            class: OperationClass::MoveMoney,
            amount: IntentAmount(Some(policies::Amount {
                minor: 1000,
                currency: policies::Currency::parse("usd").unwrap(),
            })),
            counterparty: "cus_1".into(),
            account: "acct_1".into(),
            counted: Some(1000),
            valued: true,
            metadata: BTreeMap::from([("order".to_string(), "17".to_string())]),
            decision: Outcome::Hold,
            status,
            policies: vec!["policy0".into()],
            caps: vec![],
            reason: "held".into(),
            approvals_required: 2,
            approvals: vec![Approval {
                user: UserId::parse("usr_0123456789abcdef01234567").unwrap(),
                verdict: "approve".into(),
                comment: Some("ok".into()),
                at: "2026-12-03T10:00:00.000000Z".into(),
            }],
            created_at: "2026-12-03T09:59:00.000000Z".into(),
            decided_at: "2026-12-03T09:59:00.000000Z".into(),
            expires_at_unix: Some(1_800_000_000),
            reservation: Some(Reservation {
                amount: 1000,
                window_unix: 1_700_000_000,
                legacy_counters: vec![],
                released: false,
            }),
            request_body: Some(b"amount=1000&currency=usd".to_vec()),
            query: "expand[]=x".into(),
            request_headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            attempts: 1,
            response: Some(StoredResponse {
                status: 200,
                headers: vec![("request-id".into(), "req_1".into())],
                body: br#"{"id":"pi_1"}"#.to_vec(),
            }),
            upstream_id: Some("pi_1".into()),
        }
    }

    fn json_of(i: &Intent) -> serde_json::Value {
        serde_json::to_value(i).unwrap()
    }

    #[test]
    fn intents_round_trip_in_every_status_and_shrink() {
        for status in [
            IntentStatus::PendingApproval,
            IntentStatus::Approved,
            IntentStatus::Forwarding,
            IntentStatus::Succeeded,
            IntentStatus::Failed,
            IntentStatus::Unknown,
            IntentStatus::Denied,
            IntentStatus::Expired,
        ] {
            let i = sample(status);
            let bytes = encode_intent(&i).unwrap();
            assert_eq!(bytes[0], V1);
            assert_eq!(json_of(&decode_intent(&bytes).unwrap()), json_of(&i));
            let json = serde_json::to_vec(&i).unwrap();
            assert!(
                bytes.len() * 10 < json.len() * 7,
                "binary {} B vs JSON {} B",
                bytes.len(),
                json.len()
            );
        }
    }

    #[test]
    fn intents_without_optional_parts_and_with_odd_values_round_trip() {
        let mut i = sample(IntentStatus::Succeeded);
        i.amount = IntentAmount(None);
        i.counted = None;
        i.reservation = None;
        i.request_body = None;
        i.response = None;
        i.upstream_id = None;
        i.approvals.clear();
        i.metadata.clear();
        i.expires_at_unix = None;
        // Neither is what the guard writes; both must come back as they were.
        i.upstream_idempotency_key = "legacy-key".into();
        i.request_digest = "NOT-HEX".into();
        // Ids and times the guard would not write come back as text.
        i.id = IntentId::from_stored("int_NotHex".into());
        i.agent = AgentId::from_stored("agt_abc".into()); // odd number of digits
        i.org = OrgId::from_stored("org_".into());
        i.created_at = "2026-12-03T10:00:00Z".into(); // no microseconds
        i.decided_at = "yesterday".into();
        i.approvals = vec![Approval {
            user: UserId::from_stored("someone".into()),
            verdict: "deny".into(),
            comment: None,
            at: "2026-12-03T10:00:00.000001+00:00".into(),
        }];
        let bytes = encode_intent(&i).unwrap();
        assert_eq!(json_of(&decode_intent(&bytes).unwrap()), json_of(&i));
        i.request_digest = hex::encode([0xABu8; 32]).to_uppercase();
        let bytes = encode_intent(&i).unwrap();
        assert_eq!(json_of(&decode_intent(&bytes).unwrap()), json_of(&i));
    }

    /// A PaymentIntent as Stripe answers a create (API 2026-10-28 fields; ids and secrets are
    /// random-looking, as real ones are): the stored response dominates a real intent record.
    const STRIPE_PAYMENT_INTENT: &str = r#"{
  "id": "pi_3QmZk2LkdIwHu7ix0c8fJp4T",
  "object": "payment_intent",
  "amount": 2000,
  "amount_capturable": 0,
  "amount_details": {"tip": {}},
  "amount_received": 2000,
  "application": null,
  "application_fee_amount": null,
  "automatic_payment_methods": {"allow_redirects": "always", "enabled": true},
  "canceled_at": null,
  "cancellation_reason": null,
  "capture_method": "automatic_async",
  "client_secret": "pi_3QmZk2LkdIwHu7ix0c8fJp4T_secret_Xq8Rr7vH2mUe9yTcWbLa4KpZn",
  "confirmation_method": "automatic",
  "created": 1764756000,
  "currency": "usd",
  "customer": "cus_RfGh8JkLmN2pQr",
  "description": "Order 4711",
  "last_payment_error": null,
  "latest_charge": "ch_3QmZk2LkdIwHu7ix0kF9sD2a",
  "livemode": false,
  "metadata": {"order_id": "4711", "agent": "procurement-bot"},
  "next_action": null,
  "on_behalf_of": null,
  "payment_method": "pm_1QmZk1LkdIwHu7ixVb3nC8eR",
  "payment_method_configuration_details": {"id": "pmc_1PxYz9LkdIwHu7ixq2W3e4R5", "parent": null},
  "payment_method_options": {"card": {"installments": null, "mandate_options": null, "network": null, "request_three_d_secure": "automatic"}, "link": {"persistent_token": null}},
  "payment_method_types": ["card", "link"],
  "processing": null,
  "receipt_email": null,
  "review": null,
  "setup_future_usage": null,
  "shipping": null,
  "source": null,
  "statement_descriptor": null,
  "statement_descriptor_suffix": null,
  "status": "succeeded",
  "transfer_data": null,
  "transfer_group": null
}"#;

    #[test]
    fn a_real_stripe_answer_packs_to_well_under_its_size() {
        let mut i = sample(IntentStatus::Succeeded);
        let body = STRIPE_PAYMENT_INTENT.as_bytes().to_vec();
        i.response = Some(StoredResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("request-id".into(), "req_Vb3nC8eRq2W3e4".into()),
                (
                    "idempotency-key".into(),
                    "pg-int_0123456789abcdef01234567".into(),
                ),
                ("original-request".into(), "req_Vb3nC8eRq2W3e4".into()),
                ("stripe-version".into(), "2026-10-28".into()),
            ],
            body: body.clone(),
        });
        let stored = encode_intent(&i).unwrap();
        let json = serde_json::to_vec(&i).unwrap();
        assert_eq!(json_of(&decode_intent(&stored).unwrap()), json_of(&i));
        // Measured when written: the whole record 1,091 B for a 1,502 B answer, where the JSON
        // record was 3,370 B. Smaller than the answer alone, and under 40 % of the old record.
        let report = format!(
            "stored {} B for a {} B answer (JSON record {} B)",
            stored.len(),
            body.len(),
            json.len()
        );
        assert!(stored.len() < body.len(), "{report}");
        assert!(stored.len() * 5 < json.len() * 2, "{report}");
    }

    #[test]
    fn json_records_written_before_the_binary_format_still_read() {
        let i = sample(IntentStatus::PendingApproval);
        let old = serde_json::to_vec(&i).unwrap();
        assert_eq!(old[0], b'{');
        assert_eq!(json_of(&decode_intent(&old).unwrap()), json_of(&i));
        let rec = IdempotencyRecord {
            request_digest: hex::encode([9u8; 32]),
            intent: i.id.clone(),
            created_at: "2026-12-03T09:59:00.000000Z".into(),
        };
        let old = serde_json::to_vec(&rec).unwrap();
        let back = decode_idempotency(&old).unwrap();
        assert_eq!(back.intent, rec.intent);
        assert_eq!(back.request_digest, rec.request_digest);
        let new = encode_idempotency(&rec).unwrap();
        assert!(
            new.len() * 3 < old.len() * 2,
            "{} vs {}",
            new.len(),
            old.len()
        );
        let back = decode_idempotency(&new).unwrap();
        assert_eq!(
            (back.request_digest, back.intent, back.created_at),
            (rec.request_digest, rec.intent, rec.created_at)
        );
    }

    #[test]
    fn unknown_versions_and_garbage_are_corrupt_not_panics() {
        for bad in [
            &b""[..],
            &[0x02, 0x90][..],
            &[V1][..],
            &[V1, 0xC1][..],
            b"{not json",
        ] {
            assert!(decode_intent(bad).is_err(), "{bad:?}");
            assert!(decode_idempotency(bad).is_err(), "{bad:?}");
        }
        let good = encode_intent(&sample(IntentStatus::Succeeded)).unwrap();
        for cut in 1..good.len() {
            assert!(decode_intent(&good[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// The format is the field order and the enums' encoding: this pins both. A change here
    /// means records already on disk would decode differently: add a version instead.
    #[test]
    fn the_v1_encoding_is_pinned() {
        let i = sample(IntentStatus::Forwarding);
        let bytes = encode_intent(&i).unwrap();
        assert_eq!(bytes[0], V1);
        assert_eq!(hex::encode(unpack(&bytes[1..], "t").unwrap()), PINNED_BODY);
        let stored = hex::decode(PINNED_PACKED).unwrap();
        assert_eq!(json_of(&decode_intent(&stored).unwrap()), json_of(&i));
        let statuses: Vec<Vec<u8>> = [
            IntentStatus::PendingApproval,
            IntentStatus::Approved,
            IntentStatus::Forwarding,
            IntentStatus::Succeeded,
            IntentStatus::Failed,
            IntentStatus::Unknown,
            IntentStatus::Denied,
            IntentStatus::Expired,
        ]
        .iter()
        .map(|s| rmp_serde::to_vec(s).unwrap())
        .collect();
        assert_eq!(hex::encode(statuses.concat()), PINNED_STATUSES);
    }

    #[test]
    fn the_dictionary_never_changes() {
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(DICT_V1)),
            "c550b2b9aea101ed8080ddc68cdf8ffee127014bb05ade0cf8cd50e48f5e0e2f",
            "dict_v1.txt is part of format version 1: add a version instead"
        );
    }

    #[test]
    fn packing_round_trips_and_refuses_damage_without_panicking() {
        let samples: Vec<Vec<u8>> = vec![
            vec![],
            b"x".to_vec(),
            DICT_V1.to_vec(),
            (0..5000u32).flat_map(|i| i.to_le_bytes()).collect(),
        ];
        for raw in &samples {
            let packed = pack(raw);
            assert_eq!(&unpack(&packed, "t").unwrap(), raw);
            for i in 0..packed.len() {
                for flip in [0x01u8, 0x80, 0xFF] {
                    let mut bad = packed.clone();
                    bad[i] ^= flip;
                    // Damage is an error or (a changed literal) other bytes; never a panic.
                    let _ = unpack(&bad, "t");
                }
            }
        }
        let mut huge = pack(b"abc");
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(&huge, "t").is_err());
    }

    /// The MessagePack body of `sample(Forwarding)`: the format.
    const PINNED_BODY: &str = concat!(
        "dc0022c40c0123456789abcdef01234567c40c0123456789abcdef01234567c40c0123456789abcdef012345",
        "67a86f726465722d3137c4200707070707070707070707070707070707070707070707070707070707070707",
        "a4504f5354b32f76312f7061796d656e745f696e74656e7473b67061796d656e745f696e74656e74732e6372",
        "65617465aa6d6f76655f6d6f6e6579cd03e8a3757364a56375735f31a6616363745f31cd03e8c381a56f7264",
        "6572a23137a4686f6c64aa666f7277617264696e6791a7706f6c6963793090a468656c64029194c40c012345",
        "6789abcdef01234567a7617070726f7665a26f6bcf000661b7d292a800cf000661b7ceff2100cf000661b7ce",
        "ff2100ce6b49d20094cd03e8ce6553f10090c2c418616d6f756e743d313030302663757272656e63793d7573",
        "64aa657870616e645b5d3d789192ac636f6e74656e742d74797065d9216170706c69636174696f6e2f782d77",
        "77772d666f726d2d75726c656e636f646564c00193ccc89192aa726571756573742d6964a57265715f31c40d",
        "7b226964223a2270695f31227da470695f31",
    );
    /// Its stored bytes as this build packed them: must always decode (the compressor may
    /// pack differently one day; the unpacker must still read this).
    const PINNED_PACKED: &str = concat!(
        "019e010000d0dc0022c40c0123456789abcdef08000f0e000910a828077f722d3137c4200701000c10a40b01",
        "1fb3cb00001fb6b0020316aa9001f10bcd03e8a3757364a56375735f31a6616363745f31cd03e8c381a57f00",
        "96a23137a4686f6c64aa90052291a70f08aa3090a468656c64029194c60012a79402d165a26f6bcf000661b7",
        "d292a800090036ceff210900f203ce6b49d20094cd03e8ce6553f10090c2c4184402103d690e14261102f803",
        "3d757364aa657870616e645b5d3d789192ace20f27d921900e0f40100383c00193ccc89192aaf50bb32d6964",
        "a57265715f31c40dda0bb070695f31227da470695f31",
    );
    /// Unit variants are their serde names (`rmp-serde`): renaming one is a format change.
    const PINNED_STATUSES: &str = concat!(
        "b070656e64696e675f617070726f76616ca8617070726f766564aa666f7277617264696e67a9737563636565",
        "646564a66661696c6564a7756e6b6e6f776ea664656e696564a765787069726564",
    );
}
