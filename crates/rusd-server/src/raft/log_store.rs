//! The Raft log on its own redb file: entries by index, plus vote, committed and purge marks.
//!
//! `append` hands the entries to the [`LogWriter`] thread, which commits everything queued
//! while its previous fsync ran in one durable transaction (group commit) and only then reports
//! the entries flushed. Until then (and for a while after) readers find them in its tail.

// openraft's `StorageError` is large, and its traits fix the error type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::log_writer::LogWriter;
use super::{LogId, TypeConfig};

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

/// The log store. Cheap to clone (one database shared).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    writer: LogWriter,
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    ///
    /// # Errors
    /// Fails if the file cannot be opened.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(redb::StorageError::from)?;
        }
        let db = Database::builder().set_cache_size(32 << 20).create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.commit()?;
        let db = Arc::new(db);
        let writer = LogWriter::start(db.clone(), LOG).map_err(redb::StorageError::from)?;
        Ok(Self { db, writer })
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

    fn last_entry_id(&self) -> StorageResult<Option<LogId>> {
        let read = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(LOG).map_err(|e| read(&e))?;
        let Some((_, v)) = table.last().map_err(|e| read(&e))? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> = bincode::deserialize(v.value()).map_err(|e| read(&e))?;
        Ok(Some(entry.log_id))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let read = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Read, e);
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
        let mut out = std::collections::BTreeMap::new();
        {
            let txn = self.db.begin_read().map_err(|e| read(&e))?;
            let table = txn.open_table(LOG).map_err(|e| read(&e))?;
            for item in table.range(from..=to).map_err(|e| read(&e))? {
                let (k, v) = item.map_err(|e| read(&e))?;
                out.insert(
                    k.value(),
                    bincode::deserialize(v.value()).map_err(|e| read(&e))?,
                );
            }
        }
        self.writer.tail().lock().overlay(from, to, &mut out);
        Ok(out.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.barrier(ErrorSubject::Logs, ErrorVerb::Read)?;
        let last_purged_log_id: Option<LogId> = self.get_meta(PURGED)?.flatten();
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
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
        let write = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        // Queued appends land first, so that none of them rewrites a truncated index later.
        self.barrier(ErrorSubject::Logs, ErrorVerb::Delete)?;
        let txn = self.db.begin_write().map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| write(&e))?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| write(&e))?;
        }
        txn.commit().map_err(|e| write(&e))?;
        self.writer.tail().lock().truncate(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        let write = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let txn = self.db.begin_write().map_err(|e| write(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| write(&e))?;
            let bytes = bincode::serialize(&Some(log_id)).map_err(|e| write(&e))?;
            meta.insert(PURGED, bytes.as_slice())
                .map_err(|e| write(&e))?;
            let mut table = txn.open_table(LOG).map_err(|e| write(&e))?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(|e| write(&e))?;
        }
        txn.commit().map_err(|e| write(&e))?;
        self.writer.tail().lock().purge(log_id.index);
        Ok(())
    }
}
