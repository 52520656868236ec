//! Master key rotation (`payment-guard secrets rotate-master-key`, OPERATIONS.md): every secret
//! sealed with [`MasterKey::seal`] is opened with the current key and sealed again with the new
//! one, and the key-check value replaced, in ONE durable write transaction — the store holds
//! either only old-key secrets or only new-key secrets, never a mix.
//!
//! The sealed fields are listed here as data ([`SEALED`]): a new kind of sealed secret must be
//! added to this list (the test below seals one of each kind and opens them again under the new
//! key). Records are handled as JSON values, so fields the rotation does not know are kept as
//! they are.

use serde_json::{Value, json};

use crate::Store;
use crate::audit;
use crate::audit_event::AuditEvent;
use crate::crypto::MasterKey;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId};
use crate::tables::{
    ADMIN_IDEMPOTENCY, Keyed, META, ORGS, OrgPair, RAIL_KEYS, S, Table, USER_SECRETS, WEBHOOKS,
    put_json, put_rec,
};
use crate::time_util::now;

/// Key of the key-check value in the `meta` table.
pub(crate) const KEY_CHECK: &str = "master_key_check";

/// The kinds of sealed secrets, by the module that seals them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `rail.rs`: `rail|{org}`, keyed `{org}`.
    Rail,
    /// `humans.rs`: `totp|{user}`, keyed `{user}` (users are global, not tenant data).
    Totp,
    /// `webhooks.rs`: `webhook|{org}`, keyed `{org}|{webhook}`.
    Webhook,
    /// `admin_idempotency.rs`: `admin-idempotency|{row}`, keyed by the row itself (stored admin
    /// answers may hold a secret shown once).
    AdminAnswer,
}

/// How one record's secrets were sealed.
struct Sealing {
    context: String,
    /// The organization the secret belongs to, if any.
    org: Option<String>,
}

impl Kind {
    /// What the audit event and the report call these secrets.
    fn name(self) -> &'static str {
        match self {
            Kind::Rail => "rail_keys",
            Kind::Totp => "totp_secrets",
            Kind::Webhook => "webhook_secrets",
            Kind::AdminAnswer => "admin_answers",
        }
    }

    /// The sealing context of the record stored under `key`.
    fn sealing(self, key: &str) -> Result<Sealing> {
        Ok(match self {
            Kind::Rail => Sealing {
                context: format!("rail|{key}"),
                org: Some(key.to_string()),
            },
            Kind::Totp => Sealing {
                context: format!("totp|{key}"),
                org: None,
            },
            Kind::Webhook => {
                let org = org_of(key)?;
                Sealing {
                    context: format!("webhook|{org}"),
                    org: Some(org),
                }
            }
            Kind::AdminAnswer => Sealing {
                context: format!("admin-idempotency|{key}"),
                org: None,
            },
        })
    }
}

/// One table holding sealed secrets, and the JSON pointers of the sealed strings in a record
/// (absent or null: nothing sealed).
struct Sealed {
    table: SealedTable,
    kind: Kind,
    fields: &'static [&'static str],
}

fn org_of(key: &str) -> Result<String> {
    key.split('|')
        .next()
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .ok_or_else(|| StoreError::Corrupt(format!("record key {key:?} names no organization")))
}

/// A table holding sealed secrets, by the type of its keys.
#[derive(Clone, Copy)]
enum SealedTable {
    Str(Table),
    Pair(Keyed<OrgPair>),
    Answer(Keyed<(Option<S>, S, S)>),
}

/// A sealed record's key, owned.
enum RowKey {
    Str(String),
    Pair(String, String),
    Answer(Option<String>, String, String),
}

impl RowKey {
    /// The key's text form as stored before typed keys, which the sealing contexts are made of
    /// (so secrets sealed then still open).
    fn text(&self) -> String {
        match self {
            RowKey::Str(k) => k.clone(),
            RowKey::Pair(a, b) => format!("{a}|{b}"),
            RowKey::Answer(org, user, digest) => {
                format!("{}|{user}|{digest}", org.as_deref().unwrap_or("-"))
            }
        }
    }
}

/// Every row of a [`SealedTable`], owned, through `$txn.open_table` (a read transaction or a
/// [`crate::ledger::Tx`]).
macro_rules! sealed_rows {
    ($txn:expr, $table:expr) => {{
        use redb::ReadableTable;
        let mut rows: Vec<(RowKey, Vec<u8>)> = Vec::new();
        match $table {
            SealedTable::Str(d) => {
                for row in $txn.open_table(d)?.iter()? {
                    let (k, v) = row?;
                    rows.push((RowKey::Str(k.value().to_string()), v.value().to_vec()));
                }
            }
            SealedTable::Pair(d) => {
                for row in $txn.open_table(d)?.iter()? {
                    let (k, v) = row?;
                    let (a, b) = k.value();
                    rows.push((RowKey::Pair(a.into(), b.into()), v.value().to_vec()));
                }
            }
            SealedTable::Answer(d) => {
                for row in $txn.open_table(d)?.iter()? {
                    let (k, v) = row?;
                    let (org, user, digest) = k.value();
                    let key = RowKey::Answer(org.map(str::to_string), user.into(), digest.into());
                    rows.push((key, v.value().to_vec()));
                }
            }
        }
        rows
    }};
}

/// Write `record` back under `key`.
fn put_sealed(
    txn: &crate::ledger::Tx<'_>,
    table: SealedTable,
    key: &RowKey,
    record: &Value,
) -> Result<()> {
    match (table, key) {
        (SealedTable::Str(d), RowKey::Str(k)) => put_json(&mut txn.open_table(d)?, k, record),
        (SealedTable::Pair(d), RowKey::Pair(a, b)) => {
            put_rec(&mut txn.open_table(d)?, (a.as_str(), b.as_str()), record)
        }
        (SealedTable::Answer(d), RowKey::Answer(org, user, digest)) => put_rec(
            &mut txn.open_table(d)?,
            (org.as_deref(), user.as_str(), digest.as_str()),
            record,
        ),
        _ => Err(StoreError::Db(
            "internal: a sealed record's key does not match its table".into(),
        )),
    }
}

/// Every sealed secret the store keeps: rail keys, TOTP secrets (active and pending), webhook
/// signing secrets (current and previous).
const SEALED: [Sealed; 4] = [
    Sealed {
        table: SealedTable::Str(RAIL_KEYS),
        kind: Kind::Rail,
        fields: &["/sealed"],
    },
    Sealed {
        table: SealedTable::Str(USER_SECRETS),
        kind: Kind::Totp,
        fields: &["/totp", "/totp_pending"],
    },
    Sealed {
        table: SealedTable::Pair(WEBHOOKS),
        kind: Kind::Webhook,
        fields: &["/secret", "/previous_secret/0"],
    },
    Sealed {
        table: SealedTable::Answer(ADMIN_IDEMPOTENCY),
        kind: Kind::AdminAnswer,
        fields: &["/sealed"],
    },
];

/// What a rotation re-sealed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RekeyReport {
    pub rail_keys: u64,
    pub totp_secrets: u64,
    pub webhook_secrets: u64,
    /// Stored admin answers kept for Idempotency-Key replays.
    pub admin_answers: u64,
    /// Organizations that got a `secrets.master_key_rotated` audit event.
    pub organizations: u64,
}

impl Store {
    /// Whether `key` is the key this store's secrets are sealed with (its key-check value).
    pub fn key_opens_store(&self, key: &MasterKey) -> Result<bool> {
        let r = self.read()?;
        let t = r.open_table(META)?;
        let check = t.get(KEY_CHECK)?.map(|v| v.value().to_vec());
        Ok(match check {
            Some(bytes) => std::str::from_utf8(&bytes).is_ok_and(|s| key.opens_key_check(s)),
            None => false,
        })
    }

    /// Re-seal every secret under `new` and record the rotation in each organization's audit
    /// chain, in one durable transaction. The store's own key stays the old one: reopen the store
    /// with `new` to use it.
    pub fn rotate_master_key(&self, new: &MasterKey, actor: &Actor) -> Result<RekeyReport> {
        self.write(|txn| {
            let mut report = RekeyReport::default();
            let mut per_org: std::collections::BTreeMap<String, Value> = Default::default();
            for sealed in &SEALED {
                let rows = sealed_rows!(txn, sealed.table);
                for (row_key, bytes) in rows {
                    let key = row_key.text();
                    let Sealing { context, org } = sealed.kind.sealing(&key)?;
                    let mut record: Value = serde_json::from_slice(&bytes)?;
                    let mut count = 0u64;
                    for field in sealed.fields {
                        let Some(slot) = record.pointer_mut(field) else {
                            continue;
                        };
                        let Some(text) = slot.as_str() else {
                            if slot.is_null() {
                                continue;
                            }
                            return Err(StoreError::Corrupt(format!(
                                "{key}: sealed field {field} is not a string"
                            )));
                        };
                        let plain = self.master.open(&context, text)?;
                        *slot = Value::String(new.seal(&context, &plain));
                        count += 1;
                    }
                    put_sealed(txn, sealed.table, &row_key, &record)?;
                    match sealed.kind {
                        Kind::Rail => report.rail_keys += count,
                        Kind::Totp => report.totp_secrets += count,
                        Kind::Webhook => report.webhook_secrets += count,
                        Kind::AdminAnswer => report.admin_answers += count,
                    }
                    if let Some(org) = org {
                        let name = sealed.kind.name();
                        let entry = per_org.entry(org).or_insert_with(|| json!({}));
                        let n = entry[name].as_u64().unwrap_or(0) + count;
                        entry[name] = json!(n);
                    }
                }
            }
            txn.open_table(META)?
                .insert(KEY_CHECK, new.key_check().as_bytes())?;
            let at = now();
            let orgs: Vec<String> = {
                use redb::ReadableTable;
                let t = txn.open_table(ORGS)?;
                let mut out = Vec::new();
                for row in t.iter()? {
                    out.push(row?.0.value().to_string());
                }
                out
            };
            for org in orgs {
                let counts = per_org.remove(&org).unwrap_or_else(|| json!({}));
                let event = AuditEvent::SecretsMasterKeyRotated {
                    rail_keys: counts["rail_keys"].as_u64().unwrap_or(0),
                    webhook_secrets: counts["webhook_secrets"].as_u64().unwrap_or(0),
                };
                let id = OrgId::parse(&org)
                    .ok_or_else(|| StoreError::Corrupt(format!("organization id {org:?}")))?;
                audit::append(txn, &id, actor, &event, &at.text)?;
                report.organizations += 1;
            }
            Ok(report)
        })
    }

    /// At open: refuse a key that does not open the key-check value; a store without one (new,
    /// or made before the check existed) gets one, after a sealed secret it already holds was
    /// checked to open under `self.master`.
    pub(crate) fn check_or_record_master_key(&self) -> Result<()> {
        let check = {
            let r = self.read()?;
            let t = r.open_table(META)?;
            t.get(KEY_CHECK)?.map(|v| v.value().to_vec())
        };
        match check {
            Some(bytes) => {
                let ok = std::str::from_utf8(&bytes).is_ok_and(|s| self.master.opens_key_check(s));
                if ok {
                    Ok(())
                } else {
                    Err(StoreError::WrongMasterKey)
                }
            }
            None => {
                if !self.first_secret_opens()? {
                    return Err(StoreError::WrongMasterKey);
                }
                self.write(|txn| {
                    txn.open_table(META)?
                        .insert(KEY_CHECK, self.master.key_check().as_bytes())?;
                    Ok(())
                })
            }
        }
    }

    /// Whether the first sealed secret found (if any) opens under `self.master`.
    fn first_secret_opens(&self) -> Result<bool> {
        let r = self.read()?;
        for sealed in &SEALED {
            for (k, v) in sealed_rows!(r, sealed.table) {
                let Sealing { context, .. } = sealed.kind.sealing(&k.text())?;
                let record: Value = serde_json::from_slice(&v)?;
                for field in sealed.fields {
                    if let Some(text) = record.pointer(field).and_then(Value::as_str) {
                        return Ok(self.master.open(&context, text).is_ok());
                    }
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_reseals_every_secret_and_the_old_key_no_longer_opens_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let old = MasterKey::generate();
        let store = Store::open(tmp.path(), old.clone()).unwrap();
        let (org, user) = store
            .init_org_with_owner("o", "o@example.com", "a-long-enough-password-1")
            .unwrap();
        let actor = Actor::System("test".into());
        store
            .set_rail_key(&org.id, "sk_test_abcdefgh1234", &actor)
            .unwrap();
        store
            .totp_begin_setup(&user.id, "a-long-enough-password-1", &[7u8; 20])
            .unwrap();
        let scope = crate::AdminKeyScope {
            org: Some(org.id.clone()),
            user: user.id.clone(),
            key: "k1".into(),
        };
        let digest = crate::admin_request_digest("POST", "/api/v1/agents", "", b"{}");
        assert_eq!(
            store.claim_admin_key(&scope, &digest).unwrap(),
            crate::AdminClaim::Claimed
        );
        let answer = crate::AdminAnswer {
            status: 201,
            headers: vec![],
            body: b"{\"token\":\"pg_agent_secret\"}".to_vec(),
        };
        store.complete_admin_key(&scope, &answer).unwrap();
        let wh = store
            .create_webhook(&org.id, "https://example.com/hook", None, "whsec_x", &actor)
            .unwrap();
        let new = MasterKey::generate();
        let report = store.rotate_master_key(&new, &actor).unwrap();
        assert_eq!(
            report,
            RekeyReport {
                rail_keys: 1,
                totp_secrets: 1,
                webhook_secrets: 1,
                admin_answers: 1,
                organizations: 1
            }
        );
        assert!(store.key_opens_store(&new).unwrap());
        assert!(!store.key_opens_store(&old).unwrap());
        drop(store);
        assert!(matches!(
            Store::open(tmp.path(), old),
            Err(StoreError::WrongMasterKey)
        ));
        let store = Store::open(tmp.path(), new).unwrap();
        let r = store.read().unwrap();
        let (key, live) = store
            .rail_key_from(&r.open_table(RAIL_KEYS).unwrap(), &org.id)
            .unwrap()
            .unwrap();
        assert_eq!((key.as_str(), live), ("sk_test_abcdefgh1234", false));
        drop(r);
        let ctx = format!("webhook|{}", org.id);
        let [ep] = store.list_webhooks(&org.id).unwrap().try_into().unwrap();
        assert_eq!(ep.id, wh.id);
        assert_eq!(store.master.open(&ctx, &ep.secret).unwrap(), b"whsec_x");
        let rotated: Vec<Value> = store
            .audit_page(&org.id, 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e["kind"] == "secrets.master_key_rotated")
            .collect();
        assert_eq!(rotated.len(), 1);
        assert_eq!(
            rotated[0]["data"],
            json!({"rail_keys": 1, "webhook_secrets": 1})
        );
        assert!(store.audit_verify(&org.id).unwrap().is_ok());
        // A stored admin answer stays sealed under the new key, but its request digest was
        // keyed with the old one: a retry is refused as a different request, never run twice.
        assert_eq!(
            store.claim_admin_key(&scope, &digest).unwrap(),
            crate::AdminClaim::Reused
        );
        drop(answer);
    }
}
