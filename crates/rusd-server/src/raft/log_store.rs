//! The Raft log on its own redb file: entries by index, plus vote, committed and purge marks.
//!
//! `append` commits durably (fdatasync) before it reports the entries flushed. openraft hands
//! over whatever accumulated while the previous append was syncing, so concurrent writes share
//! one fsync (group commit).

// openraft's `StorageError` is large, and its traits fix the error type.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{LogId, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";

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
        Ok(Self { db: Arc::new(db) })
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
        let txn = self.db.begin_read().map_err(|e| read(&e))?;
        let table = txn.open_table(LOG).map_err(|e| read(&e))?;
        let bounds: (Bound<u64>, Bound<u64>) =
            (range.start_bound().cloned(), range.end_bound().cloned());
        let mut out = Vec::new();
        for item in table.range(bounds).map_err(|e| read(&e))? {
            let (_, v) = item.map_err(|e| read(&e))?;
            out.push(bincode::deserialize(v.value()).map_err(|e| read(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
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
        let write = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Write, e);
        let db = self.db.clone();
        let result = tokio::task::block_in_place(|| -> StorageResult<()> {
            let txn = db.begin_write().map_err(|e| write(&e))?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| write(&e))?;
                for entry in entries {
                    let bytes = bincode::serialize(&entry).map_err(|e| write(&e))?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(|e| write(&e))?;
                }
            }
            txn.commit().map_err(|e| write(&e))
        });
        match &result {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let write = |e: &dyn std::fmt::Display| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let txn = self.db.begin_write().map_err(|e| write(&e))?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| write(&e))?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| write(&e))?;
        }
        txn.commit().map_err(|e| write(&e))
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
        txn.commit().map_err(|e| write(&e))
    }
}
