//! The Raft log: entries in segment files (`wal.rs`), vote, committed and purge marks (and this
//! member's identity) in the `meta` table of a small redb file beside them.
//!
//! `append` hands the entries to the [`LogWriter`] thread, which writes everything queued
//! while its previous fsync ran as one batch (group commit) and only then reports the entries
//! flushed. Until then (and for a while after) readers find them in its tail.

// openraft's `StorageError` is large, and its traits fix the error type.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError, Vote};
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::log_writer::LogWriter;
use super::wal::{Batch, SegmentLog, WalError, SEGMENT_BYTES};
use super::{LogId, TypeConfig};

/// Where entries lived before the segment log; moved into it on open.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
/// (member id, cluster id), saved on first start: a member added at run time learns its id
/// from the cluster, so it cannot be derived from the flags again.
const IDENTITY: &str = "identity";

type StorageResult<T> = Result<T, StorageError<u64>>;

fn io_err(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The meta file failed.
    #[error(transparent)]
    Meta(#[from] redb::Error),
    /// The segment log failed.
    #[error(transparent)]
    Segments(#[from] WalError),
    /// A stored value does not decode.
    #[error("decoding {what}: {error}")]
    Decode {
        /// What was read.
        what: &'static str,
        /// Why it failed.
        error: String,
    },
}

/// The log store. Cheap to clone (one meta database and one segment log shared).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    wal: Arc<Mutex<SegmentLog>>,
    writer: LogWriter,
}

impl LogStore {
    /// Opens (or creates) the log: its meta file at `path`, its segments beside it.
    ///
    /// # Errors
    /// Fails if a file cannot be opened or the log is damaged.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_with(path, SEGMENT_BYTES)
    }

    fn open_with(path: &Path, segment_bytes: u64) -> Result<Self, OpenError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|source| WalError::Io {
            op: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let db = Database::builder()
            .set_cache_size(4 << 20)
            .create(path)
            .map_err(redb::Error::from)?;
        let txn = db.begin_write().map_err(redb::Error::from)?;
        txn.open_table(META).map_err(redb::Error::from)?;
        txn.commit().map_err(redb::Error::from)?;
        let purged = {
            let txn = db.begin_read().map_err(redb::Error::from)?;
            let table = txn.open_table(META).map_err(redb::Error::from)?;
            match table.get(PURGED).map_err(redb::Error::from)? {
                Some(v) => bincode::deserialize::<Option<LogId>>(v.value()).map_err(|e| {
                    OpenError::Decode {
                        what: "the purge mark",
                        error: e.to_string(),
                    }
                })?,
                None => None,
            }
        };
        let mut wal = SegmentLog::open(dir, segment_bytes, purged.map(|p| p.index))?;
        migrate(&db, &mut wal)?;
        let wal = Arc::new(Mutex::new(wal));
        let writer = LogWriter::start(wal.clone()).map_err(|e| WalError::Io {
            op: "starting the log writer for",
            path: dir.to_path_buf(),
            source: e,
        })?;
        Ok(Self {
            db: Arc::new(db),
            wal,
            writer,
        })
    }

    /// Records the duration of every later log fdatasync in `histogram`.
    pub fn observe_fsync(&self, histogram: prometheus::Histogram) {
        self.writer.observe_fsync(histogram);
    }

    /// The (member id, cluster id) saved by [`LogStore::save_identity`].
    ///
    /// # Errors
    /// The log cannot be read.
    pub fn identity(&self) -> StorageResult<Option<(u64, u64)>> {
        self.get_meta(IDENTITY)
    }

    /// Saves this member's (member id, cluster id), durably.
    ///
    /// # Errors
    /// The log cannot be written.
    pub fn save_identity(&self, member_id: u64, cluster_id: u64) -> StorageResult<()> {
        self.put_meta(IDENTITY, &(member_id, cluster_id))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let read = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Store, ErrorVerb::Read, e);
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(META).map_err(|e| read(&e))?;
        let Some(v) = table.get(key).map_err(|e| read(&e))? else {
            return Ok(None);
        };
        bincode::deserialize(v.value())
            .map(Some)
            .map_err(|e| read(&e))
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> StorageResult<()> {
        let write = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Store, ErrorVerb::Write, e);
        let bytes = bincode::serialize(value).map_err(|e| write(&e))?;
        let txn = self.db.begin_write().map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| write(&e))?;
            table.insert(key, bytes.as_slice()).map_err(|e| write(&e))?;
        }
        txn.commit().map_err(|e| write(&e))
    }

    /// Waits until every queued append is durable.
    fn barrier(&self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageResult<()> {
        let writer = self.writer.clone();
        tokio::task::block_in_place(move || writer.barrier()).map_err(|e| io_err(subject, verb, e))
    }

    /// Runs `f` on the segment log off the async runtime's worker.
    fn with_wal<T>(
        &self,
        verb: ErrorVerb,
        f: impl FnOnce(&mut SegmentLog) -> Result<T, WalError>,
    ) -> StorageResult<T> {
        tokio::task::block_in_place(|| f(&mut self.wal.lock()))
            .map_err(|e| io_err(ErrorSubject::Logs, verb, e))
    }

    /// The entries of `from..=to` held by the segment log, read without holding its lock.
    fn read_segments(&self, from: u64, to: u64) -> StorageResult<BTreeMap<u64, Entry<TypeConfig>>> {
        let read = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let spans = self.wal.lock().spans(from, to);
        let mut out = BTreeMap::new();
        for span in spans {
            for (index, payload) in span.read().map_err(|e| read(&e))? {
                out.insert(index, bincode::deserialize(&payload).map_err(|e| read(&e))?);
            }
        }
        Ok(out)
    }

    fn last_entry_id(&self) -> StorageResult<Option<LogId>> {
        let Some(last) = self.wal.lock().last_index() else {
            return Ok(None);
        };
        Ok(self
            .read_segments(last, last)?
            .into_values()
            .next()
            .map(|e| e.log_id))
    }
}

/// Moves entries from the previous version's `log` table into the segment log, durably, then
/// drops the table in one transaction. A crash in between leaves the table whole: the next open
/// truncates what the segment log got of it and copies it again.
fn migrate(db: &Database, wal: &mut SegmentLog) -> Result<(), OpenError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let table = match txn.open_table(LOG) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(redb::Error::from(e).into()),
    };
    let first = table
        .first()
        .map_err(redb::Error::from)?
        .map(|(k, _)| k.value());
    if let Some(first) = first {
        let count = table.len().map_err(redb::Error::from)?;
        tracing::info!(
            entries = count,
            "moving the raft log's entries from raft.redb into segment files"
        );
        if wal.last_index().is_some_and(|last| last >= first) {
            wal.truncate(first)?;
        }
        let mut batch = Batch::default();
        for item in table.iter().map_err(redb::Error::from)? {
            let (k, v) = item.map_err(redb::Error::from)?;
            batch.push(k.value(), v.value())?;
            if batch.bytes() >= 16 << 20 {
                wal.write(&batch)?.sync()?;
                batch.clear();
            }
        }
        wal.write(&batch)?.sync()?;
    }
    drop(table);
    drop(txn);
    let txn = db.begin_write().map_err(redb::Error::from)?;
    txn.delete_table(LOG).map_err(redb::Error::from)?;
    txn.commit().map_err(redb::Error::from)?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_sub(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => u64::MAX,
        };
        // Recent entries (the state machine reads each right after its commit) come from the
        // writer's tail; older ones from disk, with the tail laid over them.
        if let Some(entries) = self.writer.tail().lock().get(from, to) {
            return Ok(entries);
        }
        let mut out = self.read_segments(from, to)?;
        self.writer.tail().lock().overlay(from, to, &mut out);
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.barrier(ErrorSubject::Logs, ErrorVerb::Read)?;
        let last_purged_log_id: Option<LogId> = self.get_meta(PURGED)?.flatten();
        // Entries at or below the purge mark may still sit in a segment not yet deleted.
        let last_log_id = match (self.last_entry_id()?, last_purged_log_id) {
            (Some(last), Some(purged)) if last.index <= purged.index => Some(purged),
            (last, purged) => last.or(purged),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        // Every vote change waits for the queued appends to be durable: a leader does not wait
        // for its own flushes (vendor/openraft/PATCHES.md), and a node that steps down, stands
        // for election or wins one must not count entries it still could lose.
        self.barrier(ErrorSubject::Vote, ErrorVerb::Write)?;
        self.put_meta(VOTE, vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        // Read back at startup to apply committed entries without waiting for an election.
        // It need not be synced: losing it only delays applying them.
        let write = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Store, ErrorVerb::Write, e);
        let bytes = bincode::serialize(&committed).map_err(|e| write(&e))?;
        let mut txn = self.db.begin_write().map_err(|e| write(&e))?;
        txn.set_durability(redb::Durability::None)
            .map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| write(&e))?;
            table
                .insert(COMMITTED, bytes.as_slice())
                .map_err(|e| write(&e))?;
        }
        txn.commit().map_err(|e| write(&e))
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        Ok(self.get_meta(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.writer.append(entries.into_iter().collect(), callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        // Queued appends land first, so that none of them rewrites a truncated index later.
        self.barrier(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.with_wal(ErrorVerb::Delete, |wal| wal.truncate(log_id.index))?;
        self.writer.tail().lock().truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        // The mark first, durably: a crash before the segments go leaves them behind it, and
        // open deletes them; the other way round would leave a hole in front of the log.
        self.put_meta(PURGED, &Some(log_id))?;
        // Queued appends land first: whether the purge covers every entry depends on them.
        self.barrier(ErrorSubject::Logs, ErrorVerb::Delete)?;
        self.with_wal(ErrorVerb::Delete, |wal| wal.purge(log_id.index))?;
        self.writer.tail().lock().purge(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: log_id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn append(store: &LogStore, term: u64, indexes: std::ops::RangeInclusive<u64>) {
        let (tx, rx) = std::sync::mpsc::channel();
        store.writer.append_with(
            indexes.map(|i| entry(term, i)).collect(),
            Box::new(move |r| {
                let _ = tx.send(r.map_err(|e| e.to_string()));
            }),
        );
        rx.recv().unwrap().unwrap();
    }

    async fn ids(store: &mut LogStore) -> Vec<(u64, u64)> {
        store
            .try_get_log_entries(..)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    /// Reads from the segments only (the tail answers anything recent).
    async fn ids_on_disk(store: &mut LogStore) -> Vec<(u64, u64)> {
        store
            .read_segments(0, u64::MAX)
            .unwrap()
            .values()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    async fn state(store: &mut LogStore) -> (Option<u64>, Option<u64>) {
        let s = store.get_log_state().await.unwrap();
        (
            s.last_purged_log_id.map(|l| l.index),
            s.last_log_id.map(|l| l.index),
        )
    }

    fn terms(term: u64, r: std::ops::RangeInclusive<u64>) -> Vec<(u64, u64)> {
        r.map(|i| (term, i)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncate_purge_and_reopen_keep_the_log_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal").join("raft.redb");
        let mut store = LogStore::open_with(&path, 512).unwrap();
        assert_eq!(state(&mut store).await, (None, None));
        for i in 1..=20 {
            append(&store, 1, i..=i);
        }
        store.truncate(log_id(1, 15)).await.unwrap();
        append(&store, 2, 15..=16);
        let mut want = terms(1, 1..=14);
        want.extend(terms(2, 15..=16));
        assert_eq!(ids(&mut store).await, want);
        assert_eq!(ids_on_disk(&mut store).await, want);
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        drop(store);

        let mut store = LogStore::open_with(&path, 512).unwrap();
        assert_eq!(ids(&mut store).await, want, "truncated entries stay gone");
        assert_eq!(state(&mut store).await, (None, Some(16)));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        store.purge(log_id(1, 10)).await.unwrap();
        assert_eq!(state(&mut store).await, (Some(10), Some(16)));
        drop(store);

        let mut store = LogStore::open_with(&path, 512).unwrap();
        assert_eq!(state(&mut store).await, (Some(10), Some(16)));
        let got = store.try_get_log_entries(11..=16).await.unwrap();
        assert_eq!(got.len(), 6);
        // A snapshot beyond the log purges all of it; the log continues after the snapshot.
        store.purge(log_id(3, 40)).await.unwrap();
        assert_eq!(state(&mut store).await, (Some(40), Some(40)));
        append(&store, 3, 41..=41);
        drop(store);

        let mut store = LogStore::open_with(&path, 512).unwrap();
        assert_eq!(state(&mut store).await, (Some(40), Some(41)));
        assert_eq!(ids_on_disk(&mut store).await, terms(3, 41..=41));
    }

    /// A leader does not wait for its own appends (vendor/openraft/PATCHES.md), so a vote change
    /// must: `save_vote` returns only once every append queued before it is durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn save_vote_waits_for_queued_appends() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal").join("raft.redb");
        let mut store = LogStore::open_with(&path, 512).unwrap();
        let flushed = Arc::new(AtomicUsize::new(0));
        for i in 1..=50 {
            let flushed = flushed.clone();
            store.writer.append_with(
                vec![entry(1, i)],
                Box::new(move |r| {
                    assert!(r.is_ok());
                    flushed.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(flushed.load(Ordering::SeqCst), 50);
        assert_eq!(ids_on_disk(&mut store).await, terms(1, 1..=50));
    }

    fn write_old_log(path: &Path, entries: &[Entry<TypeConfig>], purged: Option<LogId>) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            for e in entries {
                log.insert(e.log_id.index, bincode::serialize(e).unwrap().as_slice())
                    .unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let vote = bincode::serialize(&Vote::<u64>::new(3, 1)).unwrap();
            meta.insert(VOTE, vote.as_slice()).unwrap();
            if let Some(p) = purged {
                let p = bincode::serialize(&Some(p)).unwrap();
                meta.insert(PURGED, p.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_move_from_the_old_redb_table_into_segments() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("wal")).unwrap();
        let path = dir.path().join("wal").join("raft.redb");
        let old: Vec<_> = (11..=30).map(|i| entry(2, i)).collect();
        write_old_log(&path, &old, Some(log_id(1, 10)));

        let mut store = LogStore::open_with(&path, 256).unwrap();
        assert_eq!(state(&mut store).await, (Some(10), Some(30)));
        assert_eq!(ids(&mut store).await, terms(2, 11..=30));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        {
            let txn = store.db.begin_read().unwrap();
            assert!(matches!(
                txn.open_table(LOG),
                Err(redb::TableError::TableDoesNotExist(_))
            ));
        }
        append(&store, 2, 31..=31);
        drop(store);

        // A migration that crashed after writing segments but before dropping the table: the
        // table is copied again over what the segments got of it.
        let mut again: Vec<_> = (11..=25).map(|i| entry(2, i)).collect();
        again.extend((26..=28).map(|i| entry(3, i)));
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                for e in &again {
                    log.insert(e.log_id.index, bincode::serialize(e).unwrap().as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let mut store = LogStore::open_with(&path, 256).unwrap();
        let mut want = terms(2, 11..=25);
        want.extend(terms(3, 26..=28));
        assert_eq!(ids(&mut store).await, want);
        assert_eq!(state(&mut store).await, (Some(10), Some(28)));
        drop(store);
        let mut store = LogStore::open_with(&path, 256).unwrap();
        assert_eq!(ids(&mut store).await, want);
    }
}
