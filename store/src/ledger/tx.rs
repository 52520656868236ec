//! The one way the store writes: a write transaction wrapped with what it may write and, for a
//! ledger command, the record of every write it made (docs/ARCHITECTURE.md "Invariants").
//!
//! A [`Tx`] is made in one of two modes and nowhere else:
//! - [`Mode::Ledger`], by the writer thread (`ledger/writer.rs`) for a batch of [`Command`]s.
//!   Every insert and remove is encoded into the transaction's log buffer as it happens, and
//!   the batch's buffer is what the write-ahead log makes durable (`ledger/wal.rs`). A ledger
//!   command may write ledger and chain tables only.
//! - [`Mode::Control`], by `Store::write` for control-plane records (orgs, members, agents,
//!   policies, caps, webhooks, sessions, TOTP, tokens), committed durably by redb itself. A
//!   control commit may write control and chain tables only: **intents, their indexes,
//!   idempotency records, spend and rate counters change only through the ledger writer.**
//!
//! The table classes are in `tables.rs` ([`Class`]). A write of the wrong class is refused with
//! an error that fails its transaction closed: it is a bug, never a state.
//!
//! The raw `redb::WriteTransaction` never leaves this module, so there is no way to write a
//! table around the wrapper and its log.
//!
//! [`Command`]: crate::ledger::Command

use std::cell::RefCell;

use std::borrow::Borrow;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use crate::error::{Result, StoreError};
use crate::tables::{Class, class_of};

/// Who made the transaction (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A batch of ledger commands on the writer thread: writes are recorded for the log.
    Ledger,
    /// A control-plane commit (`Store::write`): durable on its own, nothing recorded.
    Control,
}

/// A write transaction and its log buffer.
pub(crate) struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
    mode: Mode,
    log: RefCell<Vec<u8>>,
    /// Whether a table the writer's hot state caches was written (ledger/hot.rs).
    hot_written: std::cell::Cell<bool>,
}

impl<'a> Tx<'a> {
    /// A control-plane transaction (`Store::write` only).
    pub(crate) fn control(txn: &'a redb::WriteTransaction) -> Tx<'a> {
        Tx::new(txn, Mode::Control)
    }

    /// Wrap `txn` (the writer, and [`Tx::control`]).
    pub(super) fn new(txn: &'a redb::WriteTransaction, mode: Mode) -> Tx<'a> {
        let capacity = if mode == Mode::Ledger { 16 * 1024 } else { 0 };
        Tx {
            txn,
            mode,
            log: RefCell::new(Vec::with_capacity(capacity)),
            hot_written: std::cell::Cell::new(false),
        }
    }

    /// The mode it was made in.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Open a table for reading and for the writes this mode allows. Only string-keyed tables
    /// may be written by a ledger transaction: the log records keys as strings (wal.rs), and the
    /// typed-key tables are control-plane tables (tables.rs [`Keyed`]).
    ///
    /// [`Keyed`]: crate::tables::Keyed
    pub(crate) fn open_table<K: redb::Key + 'static>(
        &self,
        def: TableDefinition<'static, K, &'static [u8]>,
    ) -> Result<TxTable<'_, K>> {
        let class = class_of(def.name());
        if class != Class::Control
            && std::any::TypeId::of::<K>() != std::any::TypeId::of::<&'static str>()
        {
            return Err(StoreError::Db(format!(
                "internal: the {class:?} table {:?} must have string keys (the log records them)",
                def.name()
            )));
        }
        let table = self.txn.open_table(def)?;
        Ok(TxTable {
            def,
            class,
            cached: super::hot::is_cached(def.name()),
            table,
            tx: self,
        })
    }

    /// Open a table whose values are not records (`invitation_tokens`: token → typed pair) for
    /// a control-plane commit; refused in a ledger transaction.
    pub(crate) fn open_control<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<'static, K, V>,
    ) -> Result<redb::Table<'_, K, V>> {
        self.check_writable(def.name(), class_of(def.name()))?;
        if class_of(def.name()) != Class::Control {
            return Err(StoreError::Db(format!(
                "internal: {:?} is not a control-plane table",
                def.name()
            )));
        }
        Ok(self.txn.open_table(def)?)
    }

    /// Whether this transaction wrote a table the writer's hot state caches.
    pub(crate) fn hot_written(&self) -> bool {
        self.hot_written.get()
    }

    /// Bytes of operations recorded so far (ledger mode; always 0 in control mode).
    pub(crate) fn log_len(&self) -> usize {
        self.log.borrow().len()
    }

    /// The operations recorded so far, leaving the buffer empty.
    pub(super) fn take_log(&self) -> Vec<u8> {
        std::mem::take(&mut *self.log.borrow_mut())
    }

    fn check_writable(&self, name: &str, class: Class) -> Result<()> {
        let allowed = match (self.mode, class) {
            (_, Class::Chain) => true,
            (Mode::Ledger, Class::Ledger) | (Mode::Control, Class::Control) => true,
            (Mode::Ledger, Class::Control) | (Mode::Control, Class::Ledger) => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(StoreError::Db(format!(
                "internal: a {:?} transaction may not write the {class:?} table {name:?}",
                self.mode
            )))
        }
    }

    fn record(&self, cached: bool, op: u8, table: &str, key: &[u8], value: &[u8]) {
        if cached {
            self.hot_written.set(true);
        }
        if self.mode == Mode::Ledger {
            super::wal::encode_op(&mut self.log.borrow_mut(), op, table, key, value);
        }
    }
}

/// A table opened through a [`Tx`]: reads like any redb table; writes are checked against the
/// transaction's mode and recorded for the log in a ledger transaction.
pub(crate) struct TxTable<'t, K: redb::Key + 'static = &'static str> {
    def: TableDefinition<'static, K, &'static [u8]>,
    /// One of the tables the writer's hot state caches (a write empties it).
    cached: bool,
    class: Class,
    table: redb::Table<'t, K, &'static [u8]>,
    tx: &'t Tx<'t>,
}

impl<K: redb::Key + 'static> TxTable<'_, K> {
    /// Insert; returns whether the key held a value before.
    pub(crate) fn insert<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: &[u8],
    ) -> Result<bool> {
        self.tx.check_writable(self.def.name(), self.class)?;
        let key = key.borrow();
        let had = self.table.insert(key, value)?.is_some();
        self.tx.record(
            self.cached,
            super::wal::OP_INSERT,
            self.def.name(),
            K::as_bytes(key).as_ref(),
            value,
        );
        Ok(had)
    }

    /// Remove; returns whether the key held a value. Recorded only when there was one: replay
    /// starts from the state this batch started from, where the key is absent too.
    pub(crate) fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) -> Result<bool> {
        self.tx.check_writable(self.def.name(), self.class)?;
        let key = key.borrow();
        let had = self.table.remove(key)?.is_some();
        if had {
            self.tx.record(
                self.cached,
                super::wal::OP_REMOVE,
                self.def.name(),
                K::as_bytes(key).as_ref(),
                &[],
            );
        }
        Ok(had)
    }
}

impl<K: redb::Key + 'static> ReadableTableMetadata for TxTable<'_, K> {
    fn stats(&self) -> std::result::Result<redb::TableStats, redb::StorageError> {
        self.table.stats()
    }

    fn len(&self) -> std::result::Result<u64, redb::StorageError> {
        self.table.len()
    }
}

impl<K: redb::Key + 'static> ReadableTable<K, &'static [u8]> for TxTable<'_, K> {
    fn get<'a>(
        &self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> std::result::Result<Option<redb::AccessGuard<'_, &'static [u8]>>, redb::StorageError> {
        self.table.get(key)
    }

    fn range<'a, KR>(
        &self,
        range: impl std::ops::RangeBounds<KR> + 'a,
    ) -> std::result::Result<redb::Range<'_, K, &'static [u8]>, redb::StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        self.table.range(range)
    }

    fn first(
        &self,
    ) -> std::result::Result<
        Option<(
            redb::AccessGuard<'_, K>,
            redb::AccessGuard<'_, &'static [u8]>,
        )>,
        redb::StorageError,
    > {
        self.table.first()
    }

    fn last(
        &self,
    ) -> std::result::Result<
        Option<(
            redb::AccessGuard<'_, K>,
            redb::AccessGuard<'_, &'static [u8]>,
        )>,
        redb::StorageError,
    > {
        self.table.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{AGENTS, AUDIT, INTENTS};

    fn db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        (dir, db)
    }

    #[test]
    fn a_ledger_transaction_records_its_writes_and_may_not_write_control_tables() {
        let (_dir, db) = db();
        let txn = db.begin_write().unwrap();
        let tx = Tx::new(&txn, Mode::Ledger);
        tx.open_table(INTENTS).unwrap().insert("o|i", b"x").unwrap();
        tx.open_table(AUDIT).unwrap().insert("o|1", b"e").unwrap();
        assert!(tx.open_table(INTENTS).unwrap().remove("o|i").unwrap());
        assert!(!tx.open_table(INTENTS).unwrap().remove("o|absent").unwrap());
        let err = tx.open_table(AGENTS).unwrap().insert(("o", "a"), b"x");
        assert!(err.is_err(), "a ledger command wrote a control table");
        let ops = super::super::wal::decode_ops_for_test(&tx.take_log());
        assert_eq!(
            ops,
            vec![
                (
                    "insert",
                    "intents".to_string(),
                    "o|i".to_string(),
                    b"x".to_vec()
                ),
                (
                    "insert",
                    "audit".to_string(),
                    "o|1".to_string(),
                    b"e".to_vec()
                ),
                ("remove", "intents".to_string(), "o|i".to_string(), vec![]),
            ]
        );
    }

    #[test]
    fn a_control_transaction_records_nothing_and_may_not_write_ledger_tables() {
        let (_dir, db) = db();
        let txn = db.begin_write().unwrap();
        let tx = Tx::new(&txn, Mode::Control);
        tx.open_table(AGENTS)
            .unwrap()
            .insert(("o", "a"), b"x")
            .unwrap();
        tx.open_table(AUDIT).unwrap().insert("o|1", b"e").unwrap();
        let err = tx.open_table(INTENTS).unwrap().insert("o|i", b"x");
        assert!(err.is_err(), "a control commit wrote an intent");
        assert!(tx.open_table(INTENTS).unwrap().remove("o|i").is_err());
        assert!(tx.take_log().is_empty());
    }
}
