//! Group commit for the Raft log: one thread writes every append that queued while the previous
//! fsync ran in a single redb transaction, then reports all of them flushed.
//!
//! openraft 0.9 appends one entry per client write and waits for nothing but the `LogFlushed`
//! callback, so a synchronous `append` would pay one fsync per write (64 clients: ~3k writes/s,
//! each round of 64 appends taking 64 fsyncs). Here `append` only queues the entries and keeps
//! them readable in the [`Tail`] until they are on disk (openraft's contract: readable when
//! `append` returns, durable when the callback fires); the writer drains the queue, commits
//! once, and fires the callbacks in order.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::LogFlushed;
use openraft::Entry;
use parking_lot::Mutex;
use redb::Database;

use super::TypeConfig;

/// Entries appended but maybe not yet durable, plus the most recent durable ones (which the
/// state machine reads right after they are committed, saving a disk read and a decode).
#[derive(Default)]
pub struct Tail {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    /// Every entry at or below this index is durable.
    durable: u64,
}

/// How many durable entries the tail keeps for readers.
const KEEP_DURABLE: usize = 4096;

impl Tail {
    /// The entries of `from..=to`, if the tail can answer alone: it always holds a contiguous
    /// suffix of the log (appends enter at the end, eviction and purges leave at the front,
    /// truncation cuts the end), so it can when `from` is not older than its first entry.
    pub fn get(&self, from: u64, to: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let first = *self.entries.keys().next()?;
        if from < first || to < from {
            return None;
        }
        Some(
            self.entries
                .range(from..=to)
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    /// The entries of `from..=to` held here, for overlaying on what the database has.
    pub fn overlay(&self, from: u64, to: u64, out: &mut BTreeMap<u64, Entry<TypeConfig>>) {
        for (i, e) in self.entries.range(from..=to) {
            out.insert(*i, e.clone());
        }
    }

    /// The newest entry's log id.
    pub fn last(&self) -> Option<openraft::LogId<u64>> {
        self.entries.values().next_back().map(|e| e.log_id)
    }

    /// Forgets entries at and after `index` (a truncation).
    pub fn truncate(&mut self, index: u64) {
        self.entries.split_off(&index);
        // Entries appended again at these indexes are not durable until written anew.
        self.durable = self.durable.min(index.saturating_sub(1));
    }

    /// Forgets entries at and before `index` (a purge).
    pub fn purge(&mut self, index: u64) {
        self.entries = self.entries.split_off(&(index + 1));
    }

    fn mark_durable(&mut self, upto: u64) {
        self.durable = self.durable.max(upto);
        while self.entries.len() > KEEP_DURABLE {
            match self.entries.first_key_value() {
                Some((&i, _)) if i <= self.durable => {
                    self.entries.pop_first();
                }
                _ => break,
            }
        }
    }
}

enum Job {
    Append(Vec<Entry<TypeConfig>>, LogFlushed<TypeConfig>),
    /// Answered once every earlier job is durable.
    Barrier(mpsc::Sender<Result<(), String>>),
}

/// The handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
    tail: Arc<Mutex<Tail>>,
}

impl LogWriter {
    /// Starts the writer thread for the log table `table` of `db`.
    pub fn start(
        db: Arc<Database>,
        table: redb::TableDefinition<'static, u64, &'static [u8]>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let shared = tail.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(&db, table, &rx, &shared))?;
        Ok(Self { jobs, tail })
    }

    /// The entries not yet durable and the most recent durable ones.
    pub fn tail(&self) -> &Mutex<Tail> {
        &self.tail
    }

    /// Makes `entries` readable at once and durable soon; `flushed` fires when they are.
    pub fn append(&self, entries: Vec<Entry<TypeConfig>>, flushed: LogFlushed<TypeConfig>) {
        {
            let mut tail = self.tail.lock();
            for e in &entries {
                tail.entries.insert(e.log_id.index, e.clone());
            }
        }
        if let Err(mpsc::SendError(Job::Append(_, flushed))) =
            self.jobs.send(Job::Append(entries, flushed))
        {
            flushed.log_io_completed(Err(std::io::Error::other("raft log writer stopped")));
        }
    }

    /// Waits until everything appended so far is durable.
    ///
    /// # Errors
    /// The commit's error, or that the writer stopped.
    pub fn barrier(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .send(Job::Barrier(tx))
            .map_err(|_| "raft log writer stopped".to_string())?;
        rx.recv()
            .map_err(|_| "raft log writer stopped".to_string())?
    }
}

fn run(
    db: &Database,
    table: redb::TableDefinition<'static, u64, &'static [u8]>,
    rx: &mpsc::Receiver<Job>,
    tail: &Mutex<Tail>,
) {
    let mut batch = Vec::new();
    while let Ok(job) = rx.recv() {
        batch.push(job);
        batch.extend(rx.try_iter());
        let result = commit(db, table, &batch);
        let mut upto = None;
        for job in batch.drain(..) {
            match job {
                Job::Append(entries, flushed) => {
                    upto = entries.last().map(|e| e.log_id.index).or(upto);
                    flushed.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Job::Barrier(done) => {
                    let _ = done.send(result.clone());
                }
            }
        }
        if let (Ok(()), Some(upto)) = (&result, upto) {
            tail.lock().mark_durable(upto);
        }
    }
}

/// Writes every queued append in one durable transaction.
fn commit(
    db: &Database,
    table: redb::TableDefinition<'static, u64, &'static [u8]>,
    batch: &[Job],
) -> Result<(), String> {
    if !batch.iter().any(|j| matches!(j, Job::Append(..))) {
        return Ok(());
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = txn.open_table(table).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        for job in batch {
            let Job::Append(entries, _) = job else {
                continue;
            };
            for entry in entries {
                buf.clear();
                bincode::serialize_into(&mut buf, entry).map_err(|e| e.to_string())?;
                t.insert(entry.log_id.index, buf.as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn tail(range: std::ops::RangeInclusive<u64>) -> Tail {
        let mut t = Tail::default();
        for i in range {
            t.entries.insert(i, entry(i));
        }
        t
    }

    fn indexes(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_tail_answers_only_ranges_it_holds_from_their_start() {
        let t = tail(5..=9);
        assert_eq!(indexes(t.get(5, 7)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(t.get(8, u64::MAX)), Some(vec![8, 9]));
        assert_eq!(indexes(t.get(4, 6)), None, "entry 4 is only on disk");
        assert_eq!(indexes(t.get(7, 6)), None);
        assert_eq!(t.last().map(|l| l.index), Some(9));
    }

    #[test]
    fn truncation_purge_and_eviction_keep_a_suffix_of_the_log() {
        let mut t = tail(1..=10);
        t.truncate(8);
        assert_eq!(t.last().map(|l| l.index), Some(7));
        t.purge(3);
        assert_eq!(indexes(t.get(4, 100)), Some(vec![4, 5, 6, 7]));
        // Only durable entries are evicted, oldest first.
        let mut t = tail(1..=(KEEP_DURABLE as u64 + 10));
        t.mark_durable(5);
        assert_eq!(t.entries.keys().next(), Some(&6));
        t.truncate(3);
        assert!(t.entries.is_empty());
        assert_eq!(t.durable, 2, "re-appended indexes are not durable");
    }
}
