//! The group-commit writer's write-ahead log (PERFORMANCE.md "Where the limit is";
//! docs/DECISIONS.md "The writer's log").
//!
//! A redb durable commit rewrites and fsyncs every B-tree page a batch touched (about 30 pages
//! scattered over the file, for a handful of payments), and holds redb's one write lock while the
//! disk works. With this log a batch is made durable by **one sequential append and one
//! `fdatasync`** of what it wrote instead: the writer commits the batch to redb without an fsync
//! (`Durability::None`), appends the batch's writes — every `(table, key, value)` it inserted and
//! every `(table, key)` it removed, recorded as it ran — to `guard.wal` as one checksummed record,
//! syncs the log, and only then answers anyone. Every `checkpoint_interval` (or
//! `checkpoint_bytes` of log) one batch commits durably instead; everything before it is then in
//! redb's durable state and the log starts over.
//!
//! Recovery ([`replay`]) runs when the store opens, before anything reads it: redb comes back at
//! its last durable commit, whose `meta` table names the last batch it holds (`applied_lsn`);
//! the log's records after that one are applied in order in one durable transaction. A record
//! counts only if its checksum holds and its sequence number follows the previous record's, so a
//! torn append at the tail and the leftovers of an earlier round (the file is reused from offset
//! 0 after each checkpoint; old records carry smaller numbers) end the log.
//!
//! Writes are recorded by the transaction wrapper (`ledger/tx.rs`): a ledger command can only
//! write through it, and in a ledger transaction it encodes every insert and remove into the
//! batch's buffer as it happens. Control-plane commits (durable on their own) record nothing.
//! `writer::tests` checks that state rebuilt from the log equals the state the batches left,
//! table by table, for every command.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::tables::META;

/// Name of the log file inside the data directory.
pub const WAL_FILE: &str = "guard.wal";

const APPLIED_LSN: &str = "applied_lsn";

const MAGIC: &[u8; 4] = b"PGW1";
/// magic, lsn (u64), payload length (u32)
const HEADER: usize = 4 + 8 + 4;
const CHECKSUM: usize = 32;
/// A record larger than this is not one the writer wrote (its batches are bounded).
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

/// The log file grows by this much at a time (see `Wal::ensure_allocated`).
const PREALLOCATE_CHUNK: u64 = 4 * 1024 * 1024;

/// Appends are written with `O_DIRECT` in whole aligned blocks of this size (see `Wal::open`).
const BLOCK: usize = 4096;

/// `len` zero bytes at a `BLOCK`-aligned address (what `O_DIRECT` needs), without `unsafe`:
/// the aligned window of a slightly larger vector.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn zeroed(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        AlignedBuf { raw, start, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

pub(super) const OP_INSERT: u8 = 1;
pub(super) const OP_REMOVE: u8 = 2;

/// Append one operation to a batch's log buffer (called by `Tx` as each write happens).
pub(super) fn encode_op(buf: &mut Vec<u8>, op: u8, table: &str, key: &[u8], value: &[u8]) {
    buf.push(op);
    // Table names are short constants (tables.rs); keys and values are bounded by the store.
    buf.push(table.len() as u8);
    buf.extend_from_slice(table.as_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    if op == OP_INSERT {
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(value);
    }
}

/// The operations of a log buffer, owned, for tests of `Tx`.
#[cfg(test)]
pub(super) fn decode_ops_for_test(p: &[u8]) -> Vec<(&'static str, String, String, Vec<u8>)> {
    decode_ops(p)
        .unwrap()
        .into_iter()
        .map(|op| match op {
            Op::Insert(t, k, v) => ("insert", t.to_string(), k.to_string(), v.to_vec()),
            Op::Remove(t, k) => ("remove", t.to_string(), k.to_string(), Vec::new()),
        })
        .collect()
}

/// One logged write.
#[derive(Debug, PartialEq, Eq)]
enum Op<'a> {
    Insert(&'a str, &'a str, &'a [u8]),
    Remove(&'a str, &'a str),
}

fn decode_ops(mut p: &[u8]) -> Result<Vec<Op<'_>>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if p.len() < n {
            return Err(StoreError::Corrupt(
                "write-ahead log record is truncated".into(),
            ));
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    fn text(b: &[u8]) -> Result<&str> {
        std::str::from_utf8(b)
            .map_err(|_| StoreError::Corrupt("write-ahead log key is not UTF-8".into()))
    }
    fn len32(p: &mut &[u8]) -> Result<usize> {
        let b = take(p, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let mut ops = Vec::new();
    while !p.is_empty() {
        let op = take(&mut p, 1)?[0];
        let tlen = take(&mut p, 1)?[0] as usize;
        let table = text(take(&mut p, tlen)?)?;
        let klen = len32(&mut p)?;
        let key = text(take(&mut p, klen)?)?;
        match op {
            OP_INSERT => {
                let vlen = len32(&mut p)?;
                ops.push(Op::Insert(table, key, take(&mut p, vlen)?));
            }
            OP_REMOVE => ops.push(Op::Remove(table, key)),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "write-ahead log operation {other} is unknown"
                )));
            }
        }
    }
    Ok(ops)
}

fn checksum(lsn: u64, payload: &[u8]) -> [u8; CHECKSUM] {
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(lsn.to_le_bytes());
    h.update((payload.len() as u32).to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

fn encode_record_into(out: &mut Vec<u8>, lsn: u64, payload: &[u8]) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(lsn, payload));
}

#[cfg(test)]
fn encode_record(lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record_into(&mut out, lsn, payload);
    out
}

/// The valid records at the start of `bytes`: each with a good checksum and the number after
/// the previous one's. Parsing stops at the first record that is not.
fn valid_records(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out: Vec<(u64, &[u8])> = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER + CHECKSUM {
        let h = &bytes[at..at + HEADER];
        if &h[..4] != MAGIC {
            // Each append ends padded with zeros to a block boundary; the next starts there.
            let next = at.next_multiple_of(BLOCK);
            if next != at && next < bytes.len() {
                at = next;
                continue;
            }
            break;
        }
        let lsn = u64::from_le_bytes(h[4..12].try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap_or([0; 4])) as usize;
        if len > MAX_PAYLOAD || bytes.len() - at - HEADER < len + CHECKSUM {
            break;
        }
        let payload = &bytes[at + HEADER..at + HEADER + len];
        let sum = &bytes[at + HEADER + len..at + HEADER + len + CHECKSUM];
        if sum != checksum(lsn, payload) {
            break;
        }
        if let Some((prev, _)) = out.last()
            && prev.checked_add(1) != Some(lsn)
        {
            break;
        }
        out.push((lsn, payload));
        at += HEADER + len + CHECKSUM;
    }
    out
}

/// The last logged batch redb's state holds (0: none).
pub(crate) fn applied_lsn(t: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    match t.get(APPLIED_LSN)? {
        None => Ok(0),
        Some(v) => {
            let b: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("meta applied_lsn".into()))?;
            Ok(u64::from_le_bytes(b))
        }
    }
}

/// Record, inside a batch's transaction, that redb's state now holds batch `lsn` (not logged:
/// replay sets it itself).
pub(crate) fn set_applied_lsn(txn: &redb::WriteTransaction, lsn: u64) -> Result<()> {
    txn.open_table(META)?
        .insert(APPLIED_LSN, lsn.to_le_bytes().as_slice())?;
    Ok(())
}

/// Apply the log's records that redb's durable state does not hold yet, durably, and return the
/// number the next batch gets. Called by `Store::open` before anything else reads the store.
pub(crate) fn replay(db: &redb::Database, path: &Path) -> Result<u64> {
    let applied = applied_lsn(&db.begin_read()?.open_table(META)?)?;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let records = valid_records(&bytes);
    let last_in_log = records.last().map_or(0, |(lsn, _)| *lsn);
    let pending: Vec<&(u64, &[u8])> = records.iter().filter(|(lsn, _)| *lsn > applied).collect();
    if let Some((first, _)) = pending.first()
        && *first != applied + 1
    {
        return Err(StoreError::Corrupt(format!(
            "write-ahead log starts at batch {first} but the store holds batches up to {applied}"
        )));
    }
    if let Some((last, _)) = pending.last() {
        let txn = db.begin_write()?;
        for (_, payload) in &pending {
            for op in decode_ops(payload)? {
                // Only the store's own tables, never `meta` (set below) or a new one.
                let table = match op {
                    Op::Insert(t, ..) | Op::Remove(t, _) => t,
                };
                // Ledger commands write ledger and chain tables only (ledger/tx.rs): an op on a
                // control table is not one the writer logged.
                if table == META.name()
                    || !crate::tables::ALL.iter().any(|t| t.name() == table)
                    || crate::tables::class_of(table) == crate::tables::Class::Control
                {
                    return Err(StoreError::Corrupt(format!(
                        "write-ahead log names table {table:?}, which the store does not have"
                    )));
                }
                match op {
                    Op::Insert(table, key, value) => {
                        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
                        txn.open_table(def)?.insert(key, value)?;
                    }
                    Op::Remove(table, key) => {
                        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
                        txn.open_table(def)?.remove(key)?;
                    }
                }
            }
        }
        set_applied_lsn(&txn, *last)?;
        txn.commit()?;
        tracing::info!(
            batches = pending.len(),
            last_lsn = last,
            "replayed the write-ahead log"
        );
    }
    Ok(applied.max(last_in_log) + 1)
}

/// The log file the writer appends to. Owned by the writer thread.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    /// Where the next record goes (0 after a checkpoint; the file keeps its size).
    offset: u64,
    /// Bytes of the file that exist on disk (written, not sparse): appends below this mark
    /// overwrite allocated blocks, so their `fdatasync` writes data only, no file metadata.
    allocated: u64,
    /// The number of the next batch.
    pub(crate) next_lsn: u64,
}

impl Wal {
    /// Open (or create) the log; `next_lsn` comes from [`replay`], which made the whole log
    /// redundant, so writing starts at offset 0.
    ///
    /// The file is opened with `O_DIRECT` where the file system allows it (not tmpfs): a
    /// buffered append re-dirties whole page-cache folios, which the kernel writes back whole
    /// (measured: 215 KiB written to disk per writer job, against 5 KiB logged); a direct
    /// append writes the blocks it covers and no more.
    pub(crate) fn open(path: &Path, next_lsn: u64) -> Result<Wal> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        let file = match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => options.open(path)?,
            Err(e) => return Err(e.into()),
        };
        // The file's directory entry must survive a crash too.
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let allocated = file.metadata()?.len() / BLOCK as u64 * BLOCK as u64;
        Ok(Wal {
            file,
            offset: 0,
            allocated,
            next_lsn,
        })
    }

    /// Grow the file by whole chunks of zeros (no valid record starts with a zero byte) until
    /// `end` fits, and make the new size durable once, instead of on every append.
    fn ensure_allocated(&mut self, end: u64) -> io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let zeros = AlignedBuf::zeroed(PREALLOCATE_CHUNK as usize);
        while self.allocated < end {
            self.file.write_all_at(zeros.as_slice(), self.allocated)?;
            self.allocated += PREALLOCATE_CHUNK;
        }
        self.file.sync_all()
    }

    /// Append the writes of consecutive batches, `(lsn, writes)` in order, with one write and
    /// one `fdatasync`; durable when this returns `Ok`.
    pub(crate) fn append(&mut self, batches: &[(u64, &[u8])]) -> io::Result<()> {
        let mut records = Vec::new();
        for (lsn, payload) in batches {
            if payload.len() > MAX_PAYLOAD {
                return Err(io::Error::other("batch too large for one log record"));
            }
            encode_record_into(&mut records, *lsn, payload);
        }
        // Whole blocks at a block-aligned offset; the zero padding ends this append.
        let mut buf = AlignedBuf::zeroed(records.len().next_multiple_of(BLOCK));
        buf.as_mut_slice()[..records.len()].copy_from_slice(&records);
        self.ensure_allocated(self.offset + buf.len as u64)?;
        self.file.write_all_at(buf.as_slice(), self.offset)?;
        self.file.sync_data()?;
        self.offset += buf.len as u64;
        Ok(())
    }

    /// Make every later append fail (tests of the poisoned store).
    #[cfg(test)]
    pub(crate) fn break_for_test(&mut self, path: &Path) {
        self.file = File::open(path).expect("reopen the log read-only");
    }

    /// Everything logged is in redb's durable state: start over at offset 0. The old records
    /// stay until overwritten; their numbers are below every new one, so replay ignores them.
    pub(crate) fn restart(&mut self) {
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let mut buf = Vec::new();
        encode_op(&mut buf, OP_INSERT, "intents", b"org|int", b"{\"a\":1}");
        encode_op(&mut buf, OP_REMOVE, "in_flight", b"org|int", b"");
        encode_op(&mut buf, OP_INSERT, "spend", b"k", b"");
        assert_eq!(
            decode_ops(&buf).unwrap(),
            vec![
                Op::Insert("intents", "org|int", b"{\"a\":1}"),
                Op::Remove("in_flight", "org|int"),
                Op::Insert("spend", "k", b""),
            ]
        );
        // Every cut of a valid payload is an error, never a panic or a shorter list.
        for cut in 1..buf.len() {
            let r = decode_ops(&buf[..cut]);
            assert!(r.is_err() || r.unwrap().len() < 3, "cut {cut}");
        }
    }

    #[test]
    fn records_stop_at_a_torn_tail_a_bad_checksum_or_a_gap() {
        let mut log = Vec::new();
        for lsn in 5..9 {
            log.extend(encode_record(lsn, format!("batch {lsn}").as_bytes()));
        }
        let all = valid_records(&log);
        assert_eq!(
            all.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![5, 6, 7, 8]
        );
        // A torn last record.
        assert_eq!(valid_records(&log[..log.len() - 3]).len(), 3);
        // A flipped byte in record 7's payload.
        let mut bad = log.clone();
        let at = 2 * (HEADER + 7 + CHECKSUM) + HEADER + 1;
        bad[at] ^= 1;
        assert_eq!(valid_records(&bad).len(), 2);
        // Leftovers of an earlier round after the new records: smaller numbers end the log.
        let mut reused = encode_record(9, b"new");
        reused.extend(encode_record(3, b"old"));
        assert_eq!(valid_records(&reused).len(), 1);
        // Appends padded to block boundaries, as `Wal::append` writes them.
        let mut padded = encode_record(20, b"a");
        padded.resize(BLOCK, 0);
        padded.extend(encode_record(21, b"b"));
        padded.extend(encode_record(22, b"c"));
        padded.resize(3 * BLOCK, 0);
        padded.extend(encode_record(4, b"stale"));
        let got: Vec<u64> = valid_records(&padded).iter().map(|r| r.0).collect();
        assert_eq!(got, vec![20, 21, 22]);
        assert!(valid_records(b"").is_empty());
        assert!(valid_records(&[0xff; 100]).is_empty());
    }

    #[test]
    fn replay_applies_only_what_redb_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let t: TableDefinition<&str, &[u8]> = TableDefinition::new("intents");
        let txn = db.begin_write().unwrap();
        txn.open_table(t)
            .unwrap()
            .insert("a", b"1".as_slice())
            .unwrap();
        set_applied_lsn(&txn, 1).unwrap();
        txn.commit().unwrap();
        let mut log = Vec::new();
        let mut p1 = Vec::new();
        encode_op(&mut p1, OP_INSERT, "intents", b"a", b"stale");
        log.extend(encode_record(1, &p1));
        let mut p2 = Vec::new();
        encode_op(&mut p2, OP_INSERT, "intents", b"b", b"2");
        encode_op(&mut p2, OP_REMOVE, "intents", b"a", b"");
        log.extend(encode_record(2, &p2));
        let wal = dir.path().join(WAL_FILE);
        std::fs::write(&wal, &log).unwrap();
        assert_eq!(replay(&db, &wal).unwrap(), 3);
        let r = db.begin_read().unwrap();
        let tbl = r.open_table(t).unwrap();
        assert!(tbl.get("a").unwrap().is_none(), "record 2 removed a");
        assert_eq!(tbl.get("b").unwrap().unwrap().value(), b"2");
        assert_eq!(applied_lsn(&r.open_table(META).unwrap()).unwrap(), 2);
        drop((tbl, r));
        // A second replay changes nothing.
        assert_eq!(replay(&db, &wal).unwrap(), 3);
        // A record naming a table the store does not have is refused, and applies nothing.
        let mut p3 = Vec::new();
        encode_op(&mut p3, OP_INSERT, "intents", b"c", b"3");
        encode_op(&mut p3, OP_INSERT, "not_a_table", b"k", b"v");
        log.extend(encode_record(3, &p3));
        std::fs::write(&wal, &log).unwrap();
        assert!(matches!(replay(&db, &wal), Err(StoreError::Corrupt(_))));
        let r = db.begin_read().unwrap();
        assert!(r.open_table(t).unwrap().get("c").unwrap().is_none());
    }
}
