//! The organization's rail (Stripe) key: sealed with the master key, its mode, and the
//! decrypted key for the forwarder.

use redb::ReadableTable;

use crate::Store;
use crate::audit;
use crate::audit_event::AuditEvent;
use crate::error::{Result, StoreError};
use crate::ids::{Actor, OrgId};
use crate::model::{RailInfo, RailKey};
use crate::orgs::load_org;
use crate::tables::*;
use crate::time_util::now;

impl Store {
    /// Store the organization's Stripe secret key, sealed with the master key.
    pub fn set_rail_key(&self, org: &OrgId, key: &str, actor: &Actor) -> Result<RailInfo> {
        let key = key.trim();
        let mode = if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            "live"
        } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            "test"
        } else {
            return Err(StoreError::Invalid(
                "a Stripe secret key starts with sk_test_, sk_live_, rk_test_ or rk_live_".into(),
            ));
        };
        if key.len() > 256 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Invalid(
                "the key has unexpected characters".into(),
            ));
        }
        self.write(|txn| {
            load_org(txn, org)?;
            let t = now();
            let last4: String = key
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let rk = RailKey {
                sealed: self.master.seal(&format!("rail|{org}"), key.as_bytes()),
                mode: mode.to_string(),
                last4: last4.clone(),
                updated_at: t.text.clone(),
            };
            put_json(&mut txn.open_table(RAIL_KEYS)?, org.as_str(), &rk)?;
            audit::append(
                txn,
                org,
                actor,
                &AuditEvent::RailUpdated {
                    mode: mode.to_string(),
                    last4: last4.clone(),
                },
                &t.text,
            )?;
            Ok(RailInfo {
                mode: rk.mode,
                last4: rk.last4,
                updated_at: rk.updated_at,
            })
        })
    }

    /// The rail key's public view.
    pub fn rail_info(&self, org: &OrgId) -> Result<Option<RailInfo>> {
        let r = self.read()?;
        let rk: Option<RailKey> = get_json(&r.open_table(RAIL_KEYS)?, org.as_str())?;
        Ok(rk.map(|rk| RailInfo {
            mode: rk.mode,
            last4: rk.last4,
            updated_at: rk.updated_at,
        }))
    }

    /// The decrypted rail key inside a transaction (for forwarding only).
    pub(crate) fn rail_key_in(
        &self,
        txn: &crate::ledger::Tx<'_>,
        org: &OrgId,
    ) -> Result<Option<(String, bool)>> {
        self.rail_key_from(&txn.open_table(RAIL_KEYS)?, org)
    }

    /// Decrypt the rail key from the rail-keys table of any transaction.
    pub(crate) fn rail_key_from(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        org: &OrgId,
    ) -> Result<Option<(String, bool)>> {
        let rk: Option<RailKey> = get_json(t, org.as_str())?;
        let Some(rk) = rk else { return Ok(None) };
        let plain = self.master.open(&format!("rail|{org}"), &rk.sealed)?;
        let key = String::from_utf8(plain).map_err(|_| StoreError::Crypto)?;
        Ok(Some((key, rk.mode == "live")))
    }

    /// Whether the organization's rail key is a live one (`None`: no key), without decrypting it.
    pub(crate) fn rail_mode_from(
        &self,
        t: &impl ReadableTable<&'static str, &'static [u8]>,
        org: &OrgId,
    ) -> Result<Option<bool>> {
        let rk: Option<RailKey> = get_json(t, org.as_str())?;
        Ok(rk.map(|rk| rk.mode == "live"))
    }

    /// The decrypted rail key (for the executor).
    pub fn rail_key(&self, org: &OrgId) -> Result<Option<String>> {
        let r = self.read()?;
        Ok(self
            .rail_key_from(&r.open_table(RAIL_KEYS)?, org)?
            .map(|(k, _)| k))
    }
}
