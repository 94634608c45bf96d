//! Group commit for the Raft log: one thread writes every append that queued while the previous
//! fsync ran as one batch of records into the segment log (`wal.rs`): one write call and one
//! `fdatasync`, then reports all of them flushed.
//!
//! openraft 0.9 appends one entry per client write and waits for nothing but the `LogFlushed`
//! callback, so a synchronous `append` would pay one fsync per write (64 clients: ~3k writes/s,
//! each round of 64 appends taking 64 fsyncs). Here `append` only queues the entries and keeps
//! them readable in the [`Tail`] until they are on disk (openraft's contract: readable when
//! `append` returns, durable when the callback fires); the writer drains the queue, writes and
//! syncs once, and fires the callbacks in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::{mpsc, OnceLock};

use openraft::storage::LogFlushed;
use openraft::Entry;
use parking_lot::Mutex;

use super::wal::{Batch, SegmentLog};
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

/// Called once the entries of an append are durable (or failed to be).
type Flushed = Box<dyn FnOnce(std::io::Result<()>) + Send>;

enum Job {
    Append(Vec<Entry<TypeConfig>>, Flushed),
    /// Answered once every earlier job is durable.
    Barrier(mpsc::Sender<Result<(), String>>),
}

/// The handle to the writer thread; the thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct LogWriter {
    jobs: mpsc::Sender<Job>,
    tail: Arc<Mutex<Tail>>,
    /// Where each fdatasync's duration goes (`etcd_disk_wal_fsync_duration_seconds`), once
    /// the server has its metrics.
    fsync_seconds: Arc<OnceLock<prometheus::Histogram>>,
}

impl LogWriter {
    /// Starts the writer thread for the segment log `wal`.
    pub fn start(wal: Arc<Mutex<SegmentLog>>) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel();
        let tail = Arc::new(Mutex::new(Tail::default()));
        let fsync_seconds = Arc::new(OnceLock::new());
        let (shared, observed) = (tail.clone(), fsync_seconds.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run(&wal, &rx, &shared, &observed))?;
        Ok(Self {
            jobs,
            tail,
            fsync_seconds,
        })
    }

    /// Records the duration of every later fdatasync in `histogram` (the first call wins).
    pub fn observe_fsync(&self, histogram: prometheus::Histogram) {
        let _ = self.fsync_seconds.set(histogram);
    }

    /// The entries not yet durable and the most recent durable ones.
    pub fn tail(&self) -> &Mutex<Tail> {
        &self.tail
    }

    /// Makes `entries` readable at once and durable soon; `flushed` fires when they are.
    pub fn append(&self, entries: Vec<Entry<TypeConfig>>, flushed: LogFlushed<TypeConfig>) {
        self.append_with(
            entries,
            Box::new(move |result| flushed.log_io_completed(result)),
        );
    }

    /// [`LogWriter::append`] with any callback.
    pub fn append_with(&self, entries: Vec<Entry<TypeConfig>>, flushed: Flushed) {
        {
            let mut tail = self.tail.lock();
            for e in &entries {
                tail.entries.insert(e.log_id.index, e.clone());
            }
        }
        if let Err(mpsc::SendError(Job::Append(_, flushed))) =
            self.jobs.send(Job::Append(entries, flushed))
        {
            flushed(Err(std::io::Error::other("raft log writer stopped")));
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
    wal: &Mutex<SegmentLog>,
    rx: &mpsc::Receiver<Job>,
    tail: &Mutex<Tail>,
    fsync_seconds: &OnceLock<prometheus::Histogram>,
) {
    let mut jobs = Vec::new();
    let mut batch = Batch::default();
    while let Ok(job) = rx.recv() {
        jobs.push(job);
        jobs.extend(rx.try_iter());
        let result = commit(wal, &jobs, &mut batch, fsync_seconds);
        let mut upto = None;
        for job in jobs.drain(..) {
            match job {
                Job::Append(entries, flushed) => {
                    upto = entries.last().map(|e| e.log_id.index).or(upto);
                    flushed(result.clone().map_err(std::io::Error::other));
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

/// Writes every queued append with one write call and one `fdatasync`.
fn commit(
    wal: &Mutex<SegmentLog>,
    jobs: &[Job],
    batch: &mut Batch,
    fsync_seconds: &OnceLock<prometheus::Histogram>,
) -> Result<(), String> {
    batch.clear();
    for job in jobs {
        let Job::Append(entries, _) = job else {
            continue;
        };
        for entry in entries {
            batch
                .push_with(entry.log_id.index, |buf| {
                    bincode::serialize_into(buf, entry)
                })
                .map_err(|e| e.to_string())?;
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    let pending = wal.lock().write(batch).map_err(|e| e.to_string())?;
    // Outside the lock: readers of older entries need not wait for the disk.
    let started = std::time::Instant::now();
    let synced = pending.sync().map_err(|e| {
        wal.lock().poison();
        e.to_string()
    });
    if let Some(histogram) = fsync_seconds.get() {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    synced
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

    #[test]
    fn appends_queued_during_a_write_share_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(Mutex::new(
            SegmentLog::open(dir.path(), 1 << 20, None).unwrap(),
        ));
        let writer = LogWriter::start(wal.clone()).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 1..=500 {
            let tx = tx.clone();
            writer.append_with(
                vec![entry(i)],
                Box::new(move |r| {
                    let _ = tx.send((i, r.is_ok()));
                }),
            );
        }
        let done: Vec<(u64, bool)> = (0..500).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(done, (1..=500).map(|i| (i, true)).collect::<Vec<_>>());
        writer.barrier().unwrap();
        let writes = wal.lock().writes();
        assert!(writes <= 50, "500 appends took {writes} writes");
        // All durable and readable from disk; the tail keeps them too.
        assert_eq!(
            indexes(writer.tail().lock().get(1, 500)).map(|v| v.len()),
            Some(500)
        );
        drop(writer);
        let reopened = SegmentLog::open(dir.path(), 1 << 20, None).unwrap();
        let on_disk = reopened.read(1, u64::MAX).unwrap();
        assert_eq!(on_disk.len(), 500);
        for (index, payload) in on_disk {
            let e: Entry<TypeConfig> = bincode::deserialize(&payload).unwrap();
            assert_eq!(e.log_id.index, index);
        }
    }
}
