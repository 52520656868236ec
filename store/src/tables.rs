//! Table definitions and key layout. Tenant tables are keyed `"{org}|…"`, so every read of tenant
//! data names its organization (ids never contain `|`).

use redb::{ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;

pub(crate) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// `{org}` → Org
pub(crate) const ORGS: Table = TableDefinition::new("orgs");
/// `{user}` → User (users are global; memberships are tenant data)
pub(crate) const USERS: Table = TableDefinition::new("users");
/// `{email}` → user id
pub(crate) const USERS_BY_EMAIL: Table = TableDefinition::new("users_by_email");
/// `{org}|{user}` → Membership
pub(crate) const MEMBERS: Table = TableDefinition::new("members");
/// `{org}|{agent}` → Agent
pub(crate) const AGENTS: Table = TableDefinition::new("agents");
/// `{token id}` → TokenRef (org and agent the token belongs to)
pub(crate) const AGENT_TOKENS: Table = TableDefinition::new("agent_tokens");
/// `{org}|{version:010}` → PolicyVersion
pub(crate) const POLICY_VERSIONS: Table = TableDefinition::new("policy_versions");
/// `{org}|{cap}` → Cap
pub(crate) const CAPS: Table = TableDefinition::new("caps");
/// `{org}` → RailKey (sealed)
pub(crate) const RAIL_KEYS: Table = TableDefinition::new("rail_keys");
/// `{org}|{intent}` → Intent
pub(crate) const INTENTS: Table = TableDefinition::new("intents");
/// `{org}|{agent}|{idempotency key}` → IdempotencyRecord
pub(crate) const IDEMPOTENCY: Table = TableDefinition::new("idempotency");
/// `{org}|{scope}|{currency}|{interval}|{window start}|{operation}` → i64 (LE) minor units
pub(crate) const SPEND: Table = TableDefinition::new("spend");
/// `{org}|{agent}|{unix second:012}` → u64 (LE) decided requests in that second
pub(crate) const RATE: Table = TableDefinition::new("rate");
/// `{org}|{intent}` → empty: intents in `forwarding`, marked `unknown` at the next start
pub(crate) const IN_FLIGHT: Table = TableDefinition::new("in_flight");
/// `{org}|{intent}` → i64 (LE) expiry unix seconds: holds awaiting a human decision
pub(crate) const PENDING: Table = TableDefinition::new("pending");
/// `{expiry unix seconds:020}|{org}|{intent}` → empty: the same holds in the order they expire,
/// so the expiry worker reads only the ones that are due (`pending` alone made it read every
/// hold of every organization every few seconds)
pub(crate) const PENDING_BY_EXPIRY: Table = TableDefinition::new("pending_by_expiry");
/// `{org}|{intent}` → empty: approved holds awaiting the executor
pub(crate) const APPROVED: Table = TableDefinition::new("approved");
/// `{org}|{webhook}` → WebhookEndpoint
pub(crate) const WEBHOOKS: Table = TableDefinition::new("webhooks");
/// `{org}|{seq:020}` → OutboxEvent, written in the transaction of the audit event it tells
pub(crate) const OUTBOX: Table = TableDefinition::new("outbox");
/// `{org}|{webhook}|{delivery}` → Delivery (attempts recorded)
pub(crate) const DELIVERIES: Table = TableDefinition::new("deliveries");
/// `{due unix ms:020}|{org}|{webhook}|{delivery}` → empty: deliveries waiting for an attempt
pub(crate) const DELIVERY_QUEUE: Table = TableDefinition::new("delivery_queue");
/// `{session id hash}` → Session (human sign-ins; ids are stored hashed)
pub(crate) const SESSIONS: Table = TableDefinition::new("sessions");
/// `{token id}` → UserToken (personal API tokens, digest only)
pub(crate) const USER_TOKENS: Table = TableDefinition::new("user_tokens");
/// `{user}` → UserSecrets (sealed TOTP secret, last accepted step, hashed recovery codes)
pub(crate) const USER_SECRETS: Table = TableDefinition::new("user_secrets");
/// `{org}|{seq:020}` → canonical event JSON (with `hash`)
pub(crate) const AUDIT: Table = TableDefinition::new("audit");
/// `{org}` → AuditHead
pub(crate) const AUDIT_HEADS: Table = TableDefinition::new("audit_heads");

/// `{org}|{upstream object id}` → intent id: objects whose creation succeeded through the guard
/// and counted toward caps (a confirm or capture of one of them is not counted again)
pub(crate) const UPSTREAM_OBJECTS: Table = TableDefinition::new("upstream_objects");

/// `{user}|{seq:020}` → canonical event JSON: a user's own trail (credential events)
pub(crate) const USER_AUDIT: Table = TableDefinition::new("user_audit");
/// `{user}` → AuditHead of the user's own trail
pub(crate) const USER_AUDIT_HEADS: Table = TableDefinition::new("user_audit_heads");
/// `{org}|{invitation}` → Invitation
pub(crate) const INVITATIONS: Table = TableDefinition::new("invitations");
/// `{token id}` → `{org}|{invitation}`: pending invitations by the id part of their token
pub(crate) const INVITATION_TOKENS: Table = TableDefinition::new("invitation_tokens");
/// `{org}|{user}|{sha256(Idempotency-Key)}` → admin API idempotency record (`-` for the org of
/// a user without one); the answer inside is sealed (admin_idempotency.rs)
pub(crate) const ADMIN_IDEMPOTENCY: Table = TableDefinition::new("admin_idempotency");

/// The key of a hold in [`PENDING_BY_EXPIRY`] (`None`: never expires, sorted last).
pub(crate) fn expiry_key(expires_at_unix: Option<i64>, intent_key: &str) -> String {
    let at = expires_at_unix.unwrap_or(i64::MAX).max(0);
    format!("{at:020}|{intent_key}")
}

/// `applied_lsn` → u64 (LE): the last batch of the writer's log that this state holds (wal.rs)
pub(crate) const META: Table = TableDefinition::new("meta");

/// Who may write a table (ledger/tx.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Intents, their status indexes, idempotency records, spend and rate counters, the
    /// objects a settlement counted: written only by ledger commands on the writer thread.
    Ledger,
    /// The organization's audit chain and its webhook outbox: appended by both, since ledger
    /// commands and control-plane changes are both audited.
    Chain,
    /// Everything else: control-plane records, written only by durable `Store::write` commits.
    Control,
}

/// The class of the table named `name`.
pub(crate) fn class_of(name: &str) -> Class {
    const LEDGER: [Table; 9] = [
        INTENTS,
        IDEMPOTENCY,
        SPEND,
        RATE,
        IN_FLIGHT,
        PENDING,
        PENDING_BY_EXPIRY,
        APPROVED,
        UPSTREAM_OBJECTS,
    ];
    const CHAIN: [Table; 3] = [AUDIT, AUDIT_HEADS, OUTBOX];
    use redb::TableHandle;
    if LEDGER.iter().any(|t| t.name() == name) {
        Class::Ledger
    } else if CHAIN.iter().any(|t| t.name() == name) {
        Class::Chain
    } else {
        Class::Control
    }
}

/// Every table, created once at open so read transactions never meet a missing table.
pub(crate) const ALL: [Table; 33] = [
    ORGS,
    USERS,
    USERS_BY_EMAIL,
    MEMBERS,
    AGENTS,
    AGENT_TOKENS,
    POLICY_VERSIONS,
    CAPS,
    RAIL_KEYS,
    INTENTS,
    IDEMPOTENCY,
    SPEND,
    RATE,
    IN_FLIGHT,
    PENDING,
    PENDING_BY_EXPIRY,
    APPROVED,
    WEBHOOKS,
    OUTBOX,
    DELIVERIES,
    DELIVERY_QUEUE,
    SESSIONS,
    USER_TOKENS,
    USER_SECRETS,
    AUDIT,
    AUDIT_HEADS,
    UPSTREAM_OBJECTS,
    USER_AUDIT,
    USER_AUDIT_HEADS,
    INVITATIONS,
    INVITATION_TOKENS,
    ADMIN_IDEMPOTENCY,
    META,
];

/// Read and decode one JSON record.
pub(crate) fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Encode and write one JSON record (through the transaction wrapper, ledger/tx.rs).
pub(crate) fn put_json<T: Serialize>(
    table: &mut crate::ledger::TxTable<'_>,
    key: &str,
    value: &T,
) -> Result<()> {
    let bytes = serde_json::to_vec(value)?;
    table.insert(key, &bytes)?;
    Ok(())
}

/// Decode every JSON record whose key starts with `prefix`, in key order.
pub(crate) fn scan_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in table.range(prefix..)? {
        let (k, v) = row?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}
