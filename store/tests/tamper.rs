//! RELIABILITY.md promise 7 and AUDIT.md "Verification": tampering with the store file directly
//! (bypassing `Store`, which has no code path that updates or deletes an event) is detected.
//!
//! Each case builds a real store through the public API, drops it, opens the redb file with
//! redb itself, edits the `audit` table (`{org}|{seq:020}` → canonical event JSON) and, for the
//! forgeries, the `audit_heads` table, then reopens it with `Store` and checks `audit_verify`:
//! a changed byte, a removed, an inserted and a reordered event each name the first bad seq. A
//! forger who re-chains (recomputes every hash from seq k on and rewrites the head) passes
//! `audit_verify` by construction; what catches it is a head the organization received earlier
//! (every webhook carries one), compared against the export.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::{Actor, AuditHead, MasterKey, OrgId, Store, VerifyReport};
use tempfile::TempDir;

const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");
const AUDIT_HEADS: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_heads");
const AGENTS: usize = 8;

struct Fixture {
    dir: TempDir,
    org: OrgId,
    /// The head as the organization saw it before any tampering (e.g. from a webhook).
    head: AuditHead,
}

/// One key for every open of a fixture's store: the store refuses a key its secrets were not
/// sealed with (key-check value).
fn open(dir: &Path) -> Store {
    let key = MasterKey::from_base64(&format!("{}=", "A".repeat(43))).expect("32 zero bytes");
    Store::open(dir, key).expect("open store")
}

/// A store with an organization, its owner and a few agents: a chain of a dozen events.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (org, _) = store
        .init_org_with_owner("tamper-org", "owner@example.com", "tamper-Password-1234")
        .expect("init");
    for n in 0..AGENTS {
        store
            .create_agent(
                &org.id,
                &format!("agent-{n}"),
                vec![],
                &Actor::System("test".into()),
            )
            .expect("agent");
    }
    // A second organization: its chain must not be disturbed by, nor disturb, the first one's.
    let (other, _) = store
        .init_org_with_owner("other-org", "other@example.com", "tamper-Password-1234")
        .expect("init other");
    store
        .create_agent(
            &other.id,
            "other-agent",
            vec![],
            &Actor::System("test".into()),
        )
        .expect("agent");
    let report = store.audit_verify(&org.id).expect("verify");
    let VerifyReport::Ok { head, events, .. } = report else {
        panic!("fresh chain does not verify: {report:?}")
    };
    assert_eq!(events, head.seq);
    assert!(head.seq >= AGENTS as u64 + 2, "{head:?}");
    assert_eq!(store.audit_head(&org.id).unwrap(), head);
    Fixture {
        dir,
        org: org.id,
        head,
    }
}

fn key(org: &OrgId, seq: u64) -> String {
    format!("{}|{seq:020}", org.as_str())
}

/// Edit the raw redb file, bypassing `Store`.
fn tamper(
    f: &Fixture,
    edit: impl FnOnce(
        &mut redb::Table<'_, &'static str, &'static [u8]>,
        &mut redb::Table<'_, &'static str, &'static [u8]>,
    ),
) {
    let db = redb::Database::open(f.dir.path().join(store::DB_FILE)).expect("open redb");
    let txn = db.begin_write().expect("write txn");
    {
        let mut audit = txn.open_table(AUDIT).expect("audit table");
        let mut heads = txn.open_table(AUDIT_HEADS).expect("heads table");
        edit(&mut audit, &mut heads);
    }
    txn.commit().expect("commit");
}

fn raw(db_table: &redb::Table<'_, &'static str, &'static [u8]>, k: &str) -> Vec<u8> {
    db_table
        .get(k)
        .expect("get")
        .unwrap_or_else(|| panic!("no event {k}"))
        .value()
        .to_vec()
}

/// The organization's events as exported (canonical lines, seq 1 first), read before tampering:
/// the store keeps most events compact (not as their line), so edits start from the lines.
fn lines(f: &Fixture) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    open(f.dir.path())
        .audit_export(&f.org, |line| {
            out.push(line.to_vec());
            Ok(())
        })
        .expect("export");
    out
}

fn event(f_lines: &[Vec<u8>], seq: u64) -> Value {
    serde_json::from_slice(&f_lines[seq as usize - 1]).expect("event JSON")
}

fn verify(f: &Fixture) -> VerifyReport {
    open(f.dir.path()).audit_verify(&f.org).expect("verify")
}

fn first_bad(f: &Fixture) -> u64 {
    match verify(f) {
        VerifyReport::Broken { first_bad_seq, .. } => first_bad_seq,
        ok => panic!("tampering was not detected: {ok:?}"),
    }
}

fn other_org_still_verifies(f: &Fixture) {
    let store = open(f.dir.path());
    for org in store.org_ids().unwrap() {
        if org != f.org {
            assert!(
                store.audit_verify(&org).unwrap().is_ok(),
                "other org broken"
            );
        }
    }
}

fn hash_of(event: &Value) -> String {
    let canonical = serde_json_canonicalizer::to_vec(event).expect("jcs");
    hex::encode(Sha256::digest(&canonical))
}

/// A well-formed event body for `seq` after `prev`, hashed like the store does.
fn forge_event(org: &OrgId, seq: u64, prev: &str, data: Value) -> (Vec<u8>, String) {
    let mut ev = serde_json::json!({
        "org": org.as_str(), "seq": seq, "at": "2026-11-24T09:15:02.123456Z",
        "actor": {"type": "system", "id": "forger"}, "kind": "agent.created",
        "data": data, "prev": prev,
    });
    let h = hash_of(&ev);
    ev["hash"] = Value::String(h.clone());
    (serde_json_canonicalizer::to_vec(&ev).unwrap(), h)
}

/// The comparison a receiver of an earlier head makes: does the exported chain still have that
/// exact event at that seq?
fn agrees_with_known_head(store: &Store, org: &OrgId, known: &AuditHead) -> bool {
    let mut found = None;
    store
        .audit_export(org, |line| {
            let ev: Value = serde_json::from_slice(line).expect("event JSON");
            if ev["seq"].as_u64() == Some(known.seq) {
                found = ev["hash"].as_str().map(str::to_string);
            }
            Ok(())
        })
        .expect("export");
    found.as_deref() == Some(known.hash.as_str())
}

/// A tiny deterministic generator (no dependency on proptest's runner for file-level cases).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn untouched_store_verifies() {
    let f = fixture();
    assert!(verify(&f).is_ok());
}

#[test]
fn a_changed_byte_inside_an_event_names_that_event() {
    let f = fixture();
    let target = 5;
    let all = lines(&f);
    tamper(&f, |audit, _| {
        let k = key(&f.org, target);
        // Stored as its whole line (the older form, still read), one letter changed.
        let text = String::from_utf8(all[target as usize - 1].clone()).unwrap();
        assert!(text.contains("agent-"), "{text}");
        let changed = text.replacen("agent-", "agent_", 1);
        assert_eq!(changed.len(), text.len());
        audit.insert(k.as_str(), changed.as_bytes()).unwrap();
    });
    assert_eq!(first_bad(&f), target);
    other_org_still_verifies(&f);
}

#[test]
fn any_single_byte_flip_names_the_flipped_event() {
    let f = fixture();
    let before = lines(&f);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut last: Option<(u64, Vec<u8>)> = None;
    for round in 0..24 {
        let seq = 1 + rng.below(f.head.seq);
        let flip = rng.next();
        let mut restore = last.take();
        let mut flipped = None;
        tamper(&f, |audit, _| {
            if let Some((s, bytes)) = restore.take() {
                audit
                    .insert(key(&f.org, s).as_str(), bytes.as_slice())
                    .unwrap();
            }
            let k = key(&f.org, seq);
            let original = raw(audit, &k);
            let mut bytes = original.clone();
            let at = (flip % bytes.len() as u64) as usize;
            let delta = 1 + ((flip >> 32) % 255) as u8;
            bytes[at] = bytes[at].wrapping_add(delta);
            audit.insert(k.as_str(), bytes.as_slice()).unwrap();
            flipped = Some((at, original));
        });
        let (at, original) = flipped.unwrap();
        match verify(&f) {
            VerifyReport::Broken { first_bad_seq, .. } => assert_eq!(
                first_bad_seq,
                seq,
                "round {round}: byte {at} of event {seq} changed: {}",
                String::from_utf8_lossy(&original)
            ),
            // A compact event is compressed: a flip can turn one back-reference into another
            // that copies the same bytes. The event is then unchanged, which export shows.
            VerifyReport::Ok { .. } => assert_eq!(
                lines(&f),
                before,
                "round {round}: byte {at} of event {seq} changed the event undetected"
            ),
        }
        last = Some((seq, original));
    }
    // Put the last one back: the chain verifies again, so each round tested one change.
    let (s, bytes) = last.unwrap();
    tamper(&f, |audit, _| {
        audit
            .insert(key(&f.org, s).as_str(), bytes.as_slice())
            .unwrap();
    });
    assert!(verify(&f).is_ok());
}

#[test]
fn a_removed_event_is_named() {
    for target in [1, 4] {
        let f = fixture();
        tamper(&f, |audit, _| {
            audit.remove(key(&f.org, target).as_str()).unwrap();
        });
        assert_eq!(first_bad(&f), target, "removed {target}");
        other_org_still_verifies(&f);
    }
}

#[test]
fn a_removed_last_event_is_named_against_the_stored_head() {
    let f = fixture();
    tamper(&f, |audit, _| {
        audit.remove(key(&f.org, f.head.seq).as_str()).unwrap();
    });
    assert_eq!(first_bad(&f), f.head.seq);
}

#[test]
fn an_inserted_copy_is_named_at_its_position() {
    let f = fixture();
    tamper(&f, |audit, _| {
        let copy = raw(audit, &key(&f.org, 2));
        // Sorts after seq 3 and before seq 4: the copy of event 2 sits at position 4.
        let k = format!("{}x", key(&f.org, 3));
        audit.insert(k.as_str(), copy.as_slice()).unwrap();
    });
    assert_eq!(first_bad(&f), 4);
    other_org_still_verifies(&f);
}

#[test]
fn an_inserted_well_formed_event_is_named_where_the_chain_breaks() {
    // A self-consistent event claiming seq 4 after the real seq 3: the real seq 4 then breaks.
    let f = fixture();
    let all = lines(&f);
    tamper(&f, |audit, _| {
        let third = event(&all, 3);
        let prev = third["hash"].as_str().unwrap().to_string();
        let (bytes, _) = forge_event(&f.org, 4, &prev, serde_json::json!({"name": "forged"}));
        let k = format!("{}x", key(&f.org, 3));
        audit.insert(k.as_str(), bytes.as_slice()).unwrap();
    });
    assert_eq!(first_bad(&f), 5);
}

#[test]
fn an_appended_event_without_the_head_is_named() {
    // A well-chained event after the head, the head left alone: the extra event is seq N+1.
    let f = fixture();
    let n = f.head.seq;
    tamper(&f, |audit, _| {
        let (bytes, _) = forge_event(
            &f.org,
            n + 1,
            &f.head.hash,
            serde_json::json!({"name": "extra"}),
        );
        audit
            .insert(key(&f.org, n + 1).as_str(), bytes.as_slice())
            .unwrap();
    });
    let report = verify(&f);
    assert!(
        matches!(report, VerifyReport::Broken { first_bad_seq, .. } if first_bad_seq == n + 1),
        "appended event {} should be named: {report:?}",
        n + 1
    );
}

#[test]
fn swapped_events_are_named() {
    let f = fixture();
    let target = 3;
    tamper(&f, |audit, _| {
        let (ka, kb) = (key(&f.org, target), key(&f.org, target + 1));
        let (a, b) = (raw(audit, &ka), raw(audit, &kb));
        audit.insert(ka.as_str(), b.as_slice()).unwrap();
        audit.insert(kb.as_str(), a.as_slice()).unwrap();
    });
    assert_eq!(first_bad(&f), target);
    other_org_still_verifies(&f);
}

#[test]
fn a_rechained_forgery_passes_verify_but_not_a_known_head() {
    let f = fixture();
    {
        let store = open(f.dir.path());
        assert!(agrees_with_known_head(&store, &f.org, &f.head));
    }
    let from = 4;
    let all = lines(&f);
    tamper(&f, |audit, heads| {
        let before = event(&all, from - 1);
        let mut prev = before["hash"].as_str().unwrap().to_string();
        for seq in from..=f.head.seq {
            let k = key(&f.org, seq);
            let mut ev = event(&all, seq);
            let obj = ev.as_object_mut().unwrap();
            obj.remove("hash");
            obj.insert("prev".into(), Value::String(prev.clone()));
            if seq == from {
                // The forger's purpose: history says something else from here on.
                obj.insert("data".into(), serde_json::json!({"rewritten": true}));
            }
            let h = hash_of(&ev);
            ev["hash"] = Value::String(h.clone());
            let bytes = serde_json_canonicalizer::to_vec(&ev).unwrap();
            audit.insert(k.as_str(), bytes.as_slice()).unwrap();
            prev = h;
        }
        let head = serde_json::to_vec(&AuditHead {
            seq: f.head.seq,
            hash: prev,
        })
        .unwrap();
        heads.insert(f.org.as_str(), head.as_slice()).unwrap();
    });
    let store = open(f.dir.path());
    let report = store.audit_verify(&f.org).unwrap();
    assert!(report.is_ok(), "a consistent re-chain verifies: {report:?}");
    let now = store.audit_head(&f.org).unwrap();
    assert_eq!(now.seq, f.head.seq);
    assert_ne!(
        now, f.head,
        "the forged head differs from the one received earlier"
    );
    assert!(
        !agrees_with_known_head(&store, &f.org, &f.head),
        "the forgery must not match the head the organization holds"
    );
}

#[test]
fn a_cut_and_rechained_tail_does_not_reach_a_known_head() {
    // The forger drops the last two events and moves the head back: verify passes, the head
    // received earlier (seq N) is no longer in the chain.
    let f = fixture();
    let all = lines(&f);
    tamper(&f, |audit, heads| {
        let n = f.head.seq;
        audit.remove(key(&f.org, n).as_str()).unwrap();
        audit.remove(key(&f.org, n - 1).as_str()).unwrap();
        let ev = event(&all, n - 2);
        let head = serde_json::to_vec(&AuditHead {
            seq: n - 2,
            hash: ev["hash"].as_str().unwrap().to_string(),
        })
        .unwrap();
        heads.insert(f.org.as_str(), head.as_slice()).unwrap();
    });
    let store = open(f.dir.path());
    assert!(store.audit_verify(&f.org).unwrap().is_ok());
    assert!(!agrees_with_known_head(&store, &f.org, &f.head));
}

#[test]
fn raw_table_layout_is_what_this_test_assumes() {
    // Guards the test itself: if the layout changes, the tampering above would silently miss.
    let f = fixture();
    let all = lines(&f);
    let db = redb::Database::open(f.dir.path().join(store::DB_FILE)).unwrap();
    let r = db.begin_read().unwrap();
    let audit = r.open_table(AUDIT).unwrap();
    let first = audit.get(key(&f.org, 1).as_str()).unwrap().unwrap();
    // Compact (store/src/audit_record.rs): version 1, then the event's hash.
    assert_eq!(first.value()[0], 0x01);
    let ev = event(&all, 1);
    assert_eq!(
        hex::encode(&first.value()[1..33]),
        ev["hash"].as_str().unwrap()
    );
    assert_eq!(ev["seq"], 1);
    assert_eq!(ev["prev"], store::GENESIS);
    let heads = r.open_table(AUDIT_HEADS).unwrap();
    let head: AuditHead =
        serde_json::from_slice(heads.get(f.org.as_str()).unwrap().unwrap().value()).unwrap();
    assert_eq!(head, f.head);
}

#[test]
fn a_chain_begun_by_an_older_guard_verifies_across_the_change_of_form() {
    // An upgraded store: the first events stored whole (as every guard before the compact form
    // stored them), the rest compact. The compact ones take `prev` from the lines' stated hash.
    let f = fixture();
    let all = lines(&f);
    tamper(&f, |audit, _| {
        for seq in 1..=3 {
            let line = &all[seq as usize - 1];
            audit
                .insert(key(&f.org, seq).as_str(), line.as_slice())
                .unwrap();
        }
    });
    assert!(verify(&f).is_ok(), "{:?}", verify(&f));
    assert_eq!(lines(&f), all, "the export is the same lines");
    // And a change to one of the old lines is still named.
    tamper(&f, |audit, _| {
        let text = String::from_utf8(all[1].clone()).unwrap();
        let changed = text.replacen("\"at\":\"2", "\"at\":\"3", 1);
        assert_ne!(changed, text);
        audit
            .insert(key(&f.org, 2).as_str(), changed.as_bytes())
            .unwrap();
    });
    assert_eq!(first_bad(&f), 2);
}
