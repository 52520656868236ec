//! Table definitions and key layout. Every tenant key starts with its organization, so every read
//! of tenant data names it. Control-plane tables have typed tuple keys ([`Keyed`]: `(org, id)`
//! and the like); ledger and chain tables, whose writes the writer's log records as strings
//! (ledger/wal.rs), are keyed `"{org}|…"` (ids never contain `|`). Stores from before typed keys
//! are moved at open ([`migrate_typed_keys`]).

use std::borrow::Borrow;

use redb::{ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;

pub(crate) type Table = TableDefinition<'static, &'static str, &'static [u8]>;

/// A control-plane table keyed by a typed tuple (issue #13): `(org, id)` and the like, so no
/// key is built by hand and a range over one organization is a range of its tuples. Ledger and
/// chain tables keep string keys: the writer's log records them as strings (ledger/wal.rs).
pub(crate) type Keyed<K> = TableDefinition<'static, K, &'static [u8]>;
/// A borrowed key part.
pub(crate) type S = &'static str;
/// `(org, id)`: the key of most tenant records.
pub(crate) type OrgPair = (S, S);
/// `(due unix ms, org, webhook, delivery)`: the webhook delivery queue, in due order.
pub(crate) type QueueKey = (u64, S, S, S);

/// `{org}` → Org
pub(crate) const ORGS: Table = TableDefinition::new("orgs");
/// `{user}` → User (users are global; memberships are tenant data)
pub(crate) const USERS: Table = TableDefinition::new("users");
/// `{email}` → user id
pub(crate) const USERS_BY_EMAIL: Table = TableDefinition::new("users_by_email");
/// `(org, user)` → Membership
pub(crate) const MEMBERS: Keyed<OrgPair> = TableDefinition::new("members.v2");
/// `(org, agent)` → Agent
pub(crate) const AGENTS: Keyed<OrgPair> = TableDefinition::new("agents.v2");
/// `{token id}` → TokenRef (org and agent the token belongs to)
pub(crate) const AGENT_TOKENS: Table = TableDefinition::new("agent_tokens");
/// `(org, version)` → PolicyVersion
pub(crate) const POLICY_VERSIONS: Keyed<(S, u64)> = TableDefinition::new("policy_versions.v2");
/// `(org, cap)` → Cap
pub(crate) const CAPS: Keyed<OrgPair> = TableDefinition::new("caps.v2");
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
/// `(org, webhook)` → WebhookEndpoint
pub(crate) const WEBHOOKS: Keyed<OrgPair> = TableDefinition::new("webhooks.v2");
/// `{org}|{seq:020}` → OutboxEvent, written in the transaction of the audit event it tells
pub(crate) const OUTBOX: Table = TableDefinition::new("outbox");
/// `(org, webhook, delivery)` → Delivery (attempts recorded)
pub(crate) const DELIVERIES: Keyed<(S, S, S)> = TableDefinition::new("deliveries.v2");
/// `(due unix ms, org, webhook, delivery)` → empty: deliveries waiting for an attempt
pub(crate) const DELIVERY_QUEUE: Keyed<QueueKey> = TableDefinition::new("delivery_queue.v2");
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

/// `(user, seq)` → canonical event JSON: a user's own trail (credential events)
pub(crate) const USER_AUDIT: Keyed<(S, u64)> = TableDefinition::new("user_audit.v2");
/// `{user}` → AuditHead of the user's own trail
pub(crate) const USER_AUDIT_HEADS: Table = TableDefinition::new("user_audit_heads");
/// `(org, invitation)` → Invitation
pub(crate) const INVITATIONS: Keyed<OrgPair> = TableDefinition::new("invitations.v2");
/// `{token id}` → `(org, invitation)`: pending invitations by the id part of their token
pub(crate) const INVITATION_TOKENS: TableDefinition<'static, S, OrgPair> =
    TableDefinition::new("invitation_tokens.v2");
/// `(org, user, sha256(Idempotency-Key) hex)` → admin API idempotency record (`None` for the
/// org of a user without one); the answer inside is sealed (admin_idempotency.rs)
pub(crate) const ADMIN_IDEMPOTENCY: Keyed<(Option<S>, S, S)> =
    TableDefinition::new("admin_idempotency.v2");

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

/// Every string-keyed table; with [`create_all`]'s typed ones, every table, created once at open
/// so read transactions never meet a missing table.
pub(crate) const ALL: [Table; 22] = [
    ORGS,
    USERS,
    USERS_BY_EMAIL,
    AGENT_TOKENS,
    RAIL_KEYS,
    INTENTS,
    IDEMPOTENCY,
    SPEND,
    RATE,
    IN_FLIGHT,
    PENDING,
    PENDING_BY_EXPIRY,
    APPROVED,
    OUTBOX,
    SESSIONS,
    USER_TOKENS,
    USER_SECRETS,
    AUDIT,
    AUDIT_HEADS,
    UPSTREAM_OBJECTS,
    USER_AUDIT_HEADS,
    META,
];

/// Create every table (at open): the string-keyed ones and the typed ones.
pub(crate) fn create_all(txn: &redb::WriteTransaction) -> Result<()> {
    for table in ALL {
        txn.open_table(table)?;
    }
    txn.open_table(MEMBERS)?;
    txn.open_table(AGENTS)?;
    txn.open_table(POLICY_VERSIONS)?;
    txn.open_table(CAPS)?;
    txn.open_table(WEBHOOKS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(DELIVERY_QUEUE)?;
    txn.open_table(USER_AUDIT)?;
    txn.open_table(INVITATIONS)?;
    txn.open_table(INVITATION_TOKENS)?;
    txn.open_table(ADMIN_IDEMPOTENCY)?;
    Ok(())
}

/// Names of the typed tables [`create_all`] creates besides [`ALL`].
#[cfg(test)]
pub(crate) fn typed_names() -> [&'static str; 11] {
    [
        MEMBERS.name(),
        AGENTS.name(),
        POLICY_VERSIONS.name(),
        CAPS.name(),
        WEBHOOKS.name(),
        DELIVERIES.name(),
        DELIVERY_QUEUE.name(),
        USER_AUDIT.name(),
        INVITATIONS.name(),
        INVITATION_TOKENS.name(),
        ADMIN_IDEMPOTENCY.name(),
    ]
}

/// Read and decode one JSON record of a typed-key table.
pub(crate) fn get_rec<'k, K: redb::Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl Borrow<K::SelfType<'k>>,
) -> Result<Option<T>> {
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

/// Encode and write one JSON record of a typed-key table (through ledger/tx.rs).
pub(crate) fn put_rec<'k, K: redb::Key + 'static, T: Serialize>(
    table: &mut crate::ledger::TxTable<'_, K>,
    key: impl Borrow<K::SelfType<'k>>,
    value: &T,
) -> Result<()> {
    let bytes = serde_json::to_vec(value)?;
    table.insert(key, &bytes)?;
    Ok(())
}

/// Decode every record of one organization of an `(org, id)` table, in id order.
pub(crate) fn scan_org<T: DeserializeOwned>(
    table: &impl ReadableTable<OrgPair, &'static [u8]>,
    org: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for row in table.range((org, "")..)? {
        let (k, v) = row?;
        if k.value().0 != org {
            break;
        }
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

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

/// The store before typed keys (issue #13): the same control-plane tables, keyed by hand-built
/// `|`-joined strings. [`migrate_typed_keys`] moves their rows into the typed tables at open.
mod legacy {
    use super::Table;
    use redb::TableDefinition;

    pub(super) const MEMBERS: Table = TableDefinition::new("members");
    pub(super) const AGENTS: Table = TableDefinition::new("agents");
    pub(super) const POLICY_VERSIONS: Table = TableDefinition::new("policy_versions");
    pub(super) const CAPS: Table = TableDefinition::new("caps");
    pub(super) const WEBHOOKS: Table = TableDefinition::new("webhooks");
    pub(super) const DELIVERIES: Table = TableDefinition::new("deliveries");
    pub(super) const DELIVERY_QUEUE: Table = TableDefinition::new("delivery_queue");
    pub(super) const USER_AUDIT: Table = TableDefinition::new("user_audit");
    pub(super) const INVITATIONS: Table = TableDefinition::new("invitations");
    pub(super) const INVITATION_TOKENS: Table = TableDefinition::new("invitation_tokens");
    pub(super) const ADMIN_IDEMPOTENCY: Table = TableDefinition::new("admin_idempotency");
}

/// A legacy key that does not have the shape its table's keys had.
fn bad_key(table: &str, key: &str) -> crate::error::StoreError {
    crate::error::StoreError::Corrupt(format!(
        "table {table}: key {key:?} does not have the shape of its keys; the store cannot be \
         moved to typed keys"
    ))
}

/// `key` split at `|` into exactly `N` non-empty parts.
fn parts<'a, const N: usize>(table: &str, key: &'a str) -> Result<[&'a str; N]> {
    let v: Vec<&str> = key.split('|').collect();
    let arr: [&str; N] = v.try_into().map_err(|_| bad_key(table, key))?;
    if arr.iter().any(|p| p.is_empty()) {
        return Err(bad_key(table, key));
    }
    Ok(arr)
}

fn number(table: &str, key: &str, part: &str) -> Result<u64> {
    part.parse().map_err(|_| bad_key(table, key))
}

/// A legacy table's rows, owned: key and value.
type LegacyRows = Vec<(String, Vec<u8>)>;

/// Rows of a legacy table, or `None` when the store never had it.
fn legacy_rows(txn: &redb::WriteTransaction, def: Table) -> Result<Option<LegacyRows>> {
    let exists = txn.list_tables()?.any(|h| h.name() == def.name());
    if !exists {
        return Ok(None);
    }
    let t = txn.open_table(def)?;
    let mut rows = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        rows.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(Some(rows))
}

/// Move every row of the string-keyed control-plane tables of an older store into the typed
/// tables, and delete the old tables, inside `txn` (the open's durable transaction: all or
/// nothing). Values are moved byte for byte, so sealed secrets keep their sealing context.
/// Returns the rows moved. A key of the wrong shape refuses the whole open: nothing is guessed.
pub(crate) fn migrate_typed_keys(txn: &redb::WriteTransaction) -> Result<u64> {
    let mut moved = 0u64;
    macro_rules! pairs {
        ($legacy:expr, $typed:expr) => {
            if let Some(rows) = legacy_rows(txn, $legacy)? {
                let mut t = txn.open_table($typed)?;
                for (k, v) in &rows {
                    let [a, b] = parts::<2>($legacy.name(), k)?;
                    t.insert((a, b), v.as_slice())?;
                }
                moved += rows.len() as u64;
                drop(t);
                txn.delete_table($legacy)?;
            }
        };
    }
    pairs!(legacy::MEMBERS, MEMBERS);
    pairs!(legacy::AGENTS, AGENTS);
    pairs!(legacy::CAPS, CAPS);
    pairs!(legacy::WEBHOOKS, WEBHOOKS);
    pairs!(legacy::INVITATIONS, INVITATIONS);
    // `(org, number)` tables.
    for (legacy, typed) in [
        (legacy::POLICY_VERSIONS, POLICY_VERSIONS),
        (legacy::USER_AUDIT, USER_AUDIT),
    ] {
        if let Some(rows) = legacy_rows(txn, legacy)? {
            let mut t = txn.open_table(typed)?;
            for (k, v) in &rows {
                let [a, n] = parts::<2>(legacy.name(), k)?;
                t.insert((a, number(legacy.name(), k, n)?), v.as_slice())?;
            }
            moved += rows.len() as u64;
            drop(t);
            txn.delete_table(legacy)?;
        }
    }
    if let Some(rows) = legacy_rows(txn, legacy::DELIVERIES)? {
        let mut t = txn.open_table(DELIVERIES)?;
        for (k, v) in &rows {
            let [a, b, c] = parts::<3>("deliveries", k)?;
            t.insert((a, b, c), v.as_slice())?;
        }
        moved += rows.len() as u64;
        drop(t);
        txn.delete_table(legacy::DELIVERIES)?;
    }
    if let Some(rows) = legacy_rows(txn, legacy::DELIVERY_QUEUE)? {
        let mut t = txn.open_table(DELIVERY_QUEUE)?;
        for (k, v) in &rows {
            let [due, a, b, c] = parts::<4>("delivery_queue", k)?;
            t.insert((number("delivery_queue", k, due)?, a, b, c), v.as_slice())?;
        }
        moved += rows.len() as u64;
        drop(t);
        txn.delete_table(legacy::DELIVERY_QUEUE)?;
    }
    if let Some(rows) = legacy_rows(txn, legacy::INVITATION_TOKENS)? {
        let mut t = txn.open_table(INVITATION_TOKENS)?;
        for (k, v) in &rows {
            // The value was the invitation's own legacy key, `{org}|{invitation}`.
            let text = std::str::from_utf8(v).map_err(|_| bad_key("invitation_tokens", k))?;
            let [a, b] = parts::<2>("invitation_tokens", text)?;
            t.insert(k.as_str(), (a, b))?;
        }
        moved += rows.len() as u64;
        drop(t);
        txn.delete_table(legacy::INVITATION_TOKENS)?;
    }
    if let Some(rows) = legacy_rows(txn, legacy::ADMIN_IDEMPOTENCY)? {
        let mut t = txn.open_table(ADMIN_IDEMPOTENCY)?;
        for (k, v) in &rows {
            let [org, user, digest] = parts::<3>("admin_idempotency", k)?;
            let org = (org != "-").then_some(org);
            t.insert((org, user, digest), v.as_slice())?;
        }
        moved += rows.len() as u64;
        drop(t);
        txn.delete_table(legacy::ADMIN_IDEMPOTENCY)?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        (dir, db)
    }

    fn put_legacy(db: &redb::Database, def: Table, rows: &[(&str, &[u8])]) {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(def).unwrap();
            for (k, v) in rows {
                t.insert(*k, *v).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[test]
    fn every_legacy_table_moves_to_its_typed_keys_and_is_deleted() {
        let (_dir, db) = db();
        put_legacy(&db, legacy::MEMBERS, &[("org_a|usr_1", b"m")]);
        put_legacy(&db, legacy::AGENTS, &[("org_a|agt_1", b"a")]);
        put_legacy(&db, legacy::CAPS, &[("org_a|cap_1", b"c")]);
        put_legacy(&db, legacy::WEBHOOKS, &[("org_a|wh_1", b"w")]);
        put_legacy(&db, legacy::INVITATIONS, &[("org_a|inv_1", b"i")]);
        put_legacy(&db, legacy::POLICY_VERSIONS, &[("org_a|0000000012", b"p")]);
        put_legacy(
            &db,
            legacy::USER_AUDIT,
            &[("usr_1|00000000000000000003", b"e")],
        );
        put_legacy(&db, legacy::DELIVERIES, &[("org_a|wh_1|dlv_1", b"d")]);
        put_legacy(
            &db,
            legacy::DELIVERY_QUEUE,
            &[("00000001796333129024|org_a|wh_1|dlv_1", b"")],
        );
        put_legacy(&db, legacy::INVITATION_TOKENS, &[("tok1", b"org_a|inv_1")]);
        put_legacy(
            &db,
            legacy::ADMIN_IDEMPOTENCY,
            &[("org_a|usr_1|abc", b"x"), ("-|usr_2|def", b"y")],
        );
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        assert_eq!(migrate_typed_keys(&txn).unwrap(), 12);
        txn.commit().unwrap();

        let r = redb::ReadableDatabase::begin_read(&db).unwrap();
        let names: Vec<String> = r
            .list_tables()
            .unwrap()
            .map(|h| h.name().to_string())
            .collect();
        for old in [
            "members",
            "agents",
            "caps",
            "deliveries",
            "admin_idempotency",
        ] {
            assert!(!names.contains(&old.to_string()), "{old} is still there");
        }
        let got = |v: Option<redb::AccessGuard<'_, &'static [u8]>>| v.unwrap().value().to_vec();
        assert_eq!(
            got(r
                .open_table(MEMBERS)
                .unwrap()
                .get(("org_a", "usr_1"))
                .unwrap()),
            b"m"
        );
        assert_eq!(
            got(r
                .open_table(POLICY_VERSIONS)
                .unwrap()
                .get(("org_a", 12))
                .unwrap()),
            b"p"
        );
        assert_eq!(
            got(r.open_table(USER_AUDIT).unwrap().get(("usr_1", 3)).unwrap()),
            b"e"
        );
        assert_eq!(
            got(r
                .open_table(DELIVERIES)
                .unwrap()
                .get(("org_a", "wh_1", "dlv_1"))
                .unwrap()),
            b"d"
        );
        let queue = r.open_table(DELIVERY_QUEUE).unwrap();
        assert!(
            queue
                .get((1_796_333_129_024, "org_a", "wh_1", "dlv_1"))
                .unwrap()
                .is_some()
        );
        let tokens = r.open_table(INVITATION_TOKENS).unwrap();
        assert_eq!(
            tokens.get("tok1").unwrap().unwrap().value(),
            ("org_a", "inv_1")
        );
        let answers = r.open_table(ADMIN_IDEMPOTENCY).unwrap();
        assert_eq!(
            got(answers.get((Some("org_a"), "usr_1", "abc")).unwrap()),
            b"x"
        );
        assert_eq!(got(answers.get((None, "usr_2", "def")).unwrap()), b"y");
        drop((queue, tokens, answers, r));

        // A second open finds nothing left to move.
        let txn = db.begin_write().unwrap();
        assert_eq!(migrate_typed_keys(&txn).unwrap(), 0);
    }

    #[test]
    fn a_legacy_key_of_the_wrong_shape_refuses_the_move_and_changes_nothing() {
        for (def, key) in [
            (legacy::MEMBERS, "org_a"),
            (legacy::MEMBERS, "org_a|usr_1|extra"),
            (legacy::AGENTS, "|agt_1"),
            (legacy::POLICY_VERSIONS, "org_a|twelve"),
            (legacy::DELIVERY_QUEUE, "soon|org_a|wh_1|dlv_1"),
        ] {
            let (_dir, db) = db();
            put_legacy(&db, def, &[(key, b"v")]);
            let txn = db.begin_write().unwrap();
            create_all(&txn).unwrap();
            let err = migrate_typed_keys(&txn).unwrap_err();
            assert!(err.to_string().contains("does not have the shape"), "{err}");
            drop(txn); // aborted: the legacy table stays as it was
            let r = redb::ReadableDatabase::begin_read(&db).unwrap();
            assert!(r.open_table(def).unwrap().get(key).unwrap().is_some());
        }
    }
}
