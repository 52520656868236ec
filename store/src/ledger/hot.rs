//! Hot state: the control-plane records every decision reads (the organization, the agent, the
//! rail key, the caps), decoded once and kept by the writer between batches.
//!
//! Correctness rests on one counter. Every control-plane commit (`Store::write`) that wrote one
//! of the [`CACHED_TABLES`] bumps `Store::control_generation` while it holds redb's write lock,
//! before it commits (the transaction wrapper notes such writes, ledger/tx.rs); the writer
//! reads the counter while it holds the same lock (inside its batch's transaction). So when the
//! writer sees the generation it cached under, no control-plane commit has happened since, and
//! the cached records are exactly what a read of the tables would return. When it sees another
//! one, the whole cache is dropped. A commit that then fails only costs a reload.
//!
//! Bounded: past [`MAX_ENTRIES`] records the cache starts over.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use zeroize::Zeroize;

use super::tx::Tx;
use crate::Store;
use crate::error::{Result, StoreError};
use crate::ids::{AgentId, OrgId};
use crate::model::{Agent, Org};
use crate::tables::{AGENTS, CAPS, ORGS, RAIL_KEYS, get_json, get_rec, scan_org};

/// Whether the hot state keeps records of the table named `name`: a write to one of them
/// empties it.
pub(crate) fn is_cached(name: &str) -> bool {
    use redb::TableHandle;
    [ORGS.name(), AGENTS.name(), RAIL_KEYS.name(), CAPS.name()].contains(&name)
}

/// Records kept at most, all kinds together.
const MAX_ENTRIES: usize = 65_536;

/// The organization's rail key, decrypted, and whether it is a live key.
pub(crate) type Rail = Option<(String, bool)>;

#[derive(Default)]
pub(crate) struct Hot {
    generation: u64,
    entries: usize,
    orgs: HashMap<OrgId, Arc<Org>>,
    agents: HashMap<(OrgId, AgentId), Arc<Agent>>,
    rails: HashMap<OrgId, Arc<Rail>>,
    caps: HashMap<OrgId, Arc<Vec<policies::Cap>>>,
}

impl Hot {
    fn clear(&mut self) {
        for rail in self.rails.values_mut() {
            if let Some(r) = Arc::get_mut(rail)
                && let Some((key, _)) = r.as_mut()
            {
                key.zeroize();
            }
        }
        self.entries = 0;
        self.orgs.clear();
        self.agents.clear();
        self.rails.clear();
        self.caps.clear();
    }

    fn count(&mut self) {
        self.entries += 1;
    }
}

impl Drop for Hot {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Store {
    /// The cache, emptied first when a control-plane commit happened since it was filled.
    /// Call only inside a write transaction (see the module documentation).
    fn hot<T>(&self, _txn: &Tx<'_>, f: impl FnOnce(&mut Hot) -> Result<T>) -> Result<T> {
        let mut hot = self
            .hot
            .lock()
            .map_err(|_| StoreError::Db("internal: hot state lock poisoned".into()))?;
        let generation = self.control_generation.load(Ordering::SeqCst);
        if hot.generation != generation || hot.entries >= MAX_ENTRIES {
            hot.clear();
            hot.generation = generation;
        }
        f(&mut hot)
    }

    /// The organization, from the cache or the table.
    pub(crate) fn hot_org(&self, txn: &Tx<'_>, id: &OrgId) -> Result<Arc<Org>> {
        self.hot(txn, |hot| {
            if let Some(o) = hot.orgs.get(id) {
                return Ok(o.clone());
            }
            let org: Org = get_json(&txn.open_table(ORGS)?, id.as_str())?
                .ok_or(StoreError::NotFound("organization"))?;
            let org = Arc::new(org);
            hot.orgs.insert(id.clone(), org.clone());
            hot.count();
            Ok(org)
        })
    }

    /// The agent, from the cache or the table.
    pub(crate) fn hot_agent(&self, txn: &Tx<'_>, org: &OrgId, id: &AgentId) -> Result<Arc<Agent>> {
        self.hot(txn, |hot| {
            let key = (org.clone(), id.clone());
            if let Some(a) = hot.agents.get(&key) {
                return Ok(a.clone());
            }
            let agent: Agent = get_rec(&txn.open_table(AGENTS)?, (org.as_str(), id.as_str()))?
                .ok_or(StoreError::NotFound("agent"))?;
            let agent = Arc::new(agent);
            hot.agents.insert(key, agent.clone());
            hot.count();
            Ok(agent)
        })
    }

    /// The decrypted rail key and its mode, from the cache or the table.
    pub(crate) fn hot_rail(&self, txn: &Tx<'_>, org: &OrgId) -> Result<Arc<Rail>> {
        self.hot(txn, |hot| {
            if let Some(r) = hot.rails.get(org) {
                return Ok(r.clone());
            }
            let rail = Arc::new(self.rail_key_in(txn, org)?);
            hot.rails.insert(org.clone(), rail.clone());
            hot.count();
            Ok(rail)
        })
    }

    /// The organization's caps, from the cache or the table.
    pub(crate) fn hot_caps(&self, txn: &Tx<'_>, org: &OrgId) -> Result<Arc<Vec<policies::Cap>>> {
        self.hot(txn, |hot| {
            if let Some(c) = hot.caps.get(org) {
                return Ok(c.clone());
            }
            let caps: Vec<policies::Cap> = scan_org(&txn.open_table(CAPS)?, org.as_str())?;
            let caps = Arc::new(caps);
            hot.caps.insert(org.clone(), caps.clone());
            hot.count();
            Ok(caps)
        })
    }
}
