//! Where the store's bytes go: per-table entry counts and stored key and value bytes, read from
//! redb's own table statistics (bench/`bytes_per_decision`, issue #13 "Small").

use redb::{ReadableDatabase, ReadableTableMetadata};

use crate::Store;
use crate::error::Result;

/// One table's size, as redb counts it in one read transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableUsage {
    /// The table's name (tables.rs).
    pub name: String,
    /// Entries (key–value pairs).
    pub entries: u64,
    /// Bytes of the keys and values themselves, without redb's page and index overhead.
    pub stored_bytes: u64,
    /// Bytes of the table's pages (leaf and branch), overhead and free space in them included.
    pub page_bytes: u64,
    /// Bytes lost to fragmentation inside those pages.
    pub fragmented_bytes: u64,
}

/// redb's page size (its default; the store does not change it).
const PAGE_BYTES: u64 = 4096;

impl Store {
    /// The size of every table, by name. A consistent snapshot: one read transaction.
    pub fn table_stats(&self) -> Result<Vec<TableUsage>> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        for handle in txn.list_tables()? {
            let table = txn.open_untyped_table(handle)?;
            let stats = table.stats()?;
            out.push(TableUsage {
                name: redb::TableHandle::name(&table).to_string(),
                entries: table.len()?,
                stored_bytes: stats.stored_bytes(),
                page_bytes: (stats.leaf_pages() + stats.branch_pages()) * PAGE_BYTES,
                fragmented_bytes: stats.fragmented_bytes(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, MasterKey};

    #[test]
    fn every_table_is_listed_and_a_new_org_shows_up_in_its_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), MasterKey::generate()).unwrap();
        let before = store.table_stats().unwrap();
        assert_eq!(
            before.len(),
            crate::tables::ALL.len() + crate::tables::typed_names().len()
        );
        let orgs = |s: &[TableUsage]| s.iter().find(|t| t.name == "orgs").unwrap().clone();
        assert_eq!(orgs(&before).entries, 0);
        assert_eq!(orgs(&before).stored_bytes, 0);
        store
            .create_org("Stats", &Actor::System("test".into()))
            .unwrap();
        let after = store.table_stats().unwrap();
        assert_eq!(orgs(&after).entries, 1);
        assert!(orgs(&after).stored_bytes > 0);
        assert!(orgs(&after).page_bytes >= PAGE_BYTES);
    }
}
