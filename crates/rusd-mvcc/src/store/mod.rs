//! [`MvccStore`]: revisions, the key index and the backend put together.
//!
//! ```text
//!            writes (one at a time, under `writer`)          reads (any number, concurrently)
//!  put / delete_range / txn / lease ─► WriteTxn ─publish─┐   range / events_since / hash
//!                                                        ▼        │ pin revision, then read
//!   backend.apply(records)  →  index.write()  →  revs.current = rev  →  observers(events)
//! ```
//!
//! A reader takes `(current, compact)` and pins its revision under the small `revs` mutex,
//! then reads the index (brief read locks) and a backend view without blocking anyone.
//! Publishing a write puts its records into the backend before the index learns of them and
//! bumps `current` last, so a reader that sees revision `r` finds everything written at `r`.
//! Compaction waits until no pinned reader is below its revision before it drops anything.
//!
//! Lock order: `writer` → `compaction` → `index` → `leases` → `revs` → `observers`; the backend's
//! own locks are always taken last and never held across a call back into the store.

mod compaction;
mod hash;
mod lease;
mod op_counts;
mod range;
mod record_cache;
mod restore;
mod txn;
mod watch;
mod write_txn;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::backend::{Backend, BackendConfig, ReadTx, Table, WriteBatch};
use crate::codec::{self, Record};
use crate::error::{Error, Result};
use crate::key_index::KeyIndex;
use crate::kv::KeyValue;
use crate::revision::{LeaseId, Revision};

pub use compaction::CompactionHandle;
pub use lease::Lease;
pub use op_counts::OpCounts;
pub use restore::InstallOutcome;
pub use txn::validate_txn;
pub use watch::{EventBatch, Subscription};
pub use write_txn::WriteTxn;

/// Meta keys, as etcd names them.
pub(crate) mod meta {
    /// Index of the last applied log entry (big-endian u64).
    pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
    /// Revision a compaction was scheduled at (big-endian i64).
    pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
    /// Revision the last finished compaction was at (big-endian i64).
    pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
}

/// Settings of an [`MvccStore`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Backend settings (file, cache size, batching).
    pub backend: BackendConfig,
    /// Most operations per txn branch (etcd's `--max-txn-ops`, default 128).
    pub max_txn_ops: usize,
    /// Keys compacted per index batch; the index write lock is released between batches.
    pub compaction_batch: usize,
    /// Percent of `backend.cache_size` given to the store's cache of kv records by revision
    /// (default 50); redb's page cache gets the rest, so the two together stay within
    /// `cache_size`. 0 disables it. A record costs its size plus about 100 bytes there, against
    /// a whole 4 KiB page in redb's cache for a randomly read one.
    pub record_cache_percent: usize,
}

impl StoreConfig {
    /// Defaults for a database file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            backend: BackendConfig::new(path),
            max_txn_ops: 128,
            compaction_batch: 10_000,
            record_cache_percent: 50,
        }
    }
}

/// Revision bookkeeping shared by readers and the writer.
#[derive(Debug)]
pub(crate) struct RevState {
    /// Newest published revision (1 on an empty store).
    pub current: i64,
    /// Reads below this fail; -1 until the first compaction, as in etcd.
    pub compact: i64,
    /// Revisions pinned by live readers, with counts.
    pins: BTreeMap<i64, usize>,
    /// Set while `install_snapshot` swaps the state: new readers wait (see `restore`).
    installing: bool,
}

/// Leases and which keys they hold, mirrored in memory.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    pub by_id: HashMap<LeaseId, LeaseState>,
    pub key_lease: HashMap<Vec<u8>, LeaseId>,
}

/// One lease in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseState {
    pub ttl: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

pub(crate) struct StoreInner {
    pub config: StoreConfig,
    pub backend: Backend,
    pub index: RwLock<KeyIndex>,
    pub revs: Mutex<RevState>,
    /// Signalled when a pin is released (compaction and `install_snapshot` wait on it) and
    /// when an install is done (new readers wait on it meanwhile).
    pub unpinned: Condvar,
    /// The single writer; holds the applied index of the last write.
    pub writer: Mutex<WriterState>,
    pub leases: RwLock<Leases>,
    pub observers: watch::Observers,
    pub compaction: Arc<compaction::Compaction>,
    /// Records by revision, in front of the backend (see `record_cache`).
    records: record_cache::RecordCache,
    /// Operation totals for monitoring.
    pub ops: op_counts::OpCounters,
}

/// State only the writer touches.
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    pub applied_index: u64,
}

/// The MVCC key-value store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct MvccStore {
    pub(crate) inner: Arc<StoreInner>,
}

/// A read at one revision: pins it against compaction until dropped.
pub(crate) struct ReadView<'a> {
    pub inner: &'a StoreInner,
    /// The revision this view reads at.
    pub rev: i64,
    /// The current revision when the view was taken.
    pub current: i64,
    pub tx: ReadTx,
}

impl Drop for ReadView<'_> {
    fn drop(&mut self) {
        self.inner.unpin(self.rev);
        restore::view_released();
    }
}

impl MvccStore {
    /// Opens the store at `config.backend.path`, rebuilding the key index from disk and
    /// resuming an unfinished compaction.
    ///
    /// # Errors
    /// Fails if the database cannot be opened or holds undecodable records.
    pub fn open(config: StoreConfig) -> Result<Self> {
        // Performance: part of the cache holds records by revision (see `record_cache`), which
        // serves a read without walking redb's pages; redb keeps the rest.
        let record_bytes = config.backend.cache_size / 100 * config.record_cache_percent.min(100);
        let mut backend_config = config.backend.clone();
        backend_config.cache_size -= record_bytes;
        let backend = Backend::open(backend_config)?;
        let LoadedState {
            index,
            leases,
            current,
            compact,
            scheduled,
            finished,
            applied_index,
        } = load_state(&backend.read())?;
        let inner = Arc::new(StoreInner {
            backend,
            index: RwLock::new(index),
            revs: Mutex::new(RevState {
                current,
                compact,
                pins: BTreeMap::new(),
                installing: false,
            }),
            unpinned: Condvar::new(),
            writer: Mutex::new(WriterState { applied_index }),
            leases: RwLock::new(leases),
            observers: watch::Observers::default(),
            compaction: Arc::default(),
            records: record_cache::RecordCache::new(record_bytes),
            ops: op_counts::OpCounters::default(),
            config,
        });
        let store = Self { inner };
        store.start_compactor()?;
        // A compaction scheduled before a crash but not finished runs again.
        if let Some(rev) = scheduled {
            if finished != Some(rev) {
                store.inner.compaction.schedule(rev);
            }
        }
        Ok(store)
    }

    /// The newest revision (1 on an empty store; the first write gets 2).
    pub fn current_revision(&self) -> i64 {
        self.inner.revs.lock().current
    }

    /// The compaction point: reads below it fail. -1 before the first compaction.
    pub fn compact_revision(&self) -> i64 {
        self.inner.revs.lock().compact
    }

    /// Index of the last applied log entry recorded with the data (0 if none).
    pub fn applied_index(&self) -> u64 {
        self.inner.writer.lock().applied_index
    }

    /// Number of keys in the index (live or deleted but not yet compacted).
    pub fn key_count(&self) -> usize {
        self.inner.index.read().len()
    }

    /// Number of live keys at the current revision (etcd's `etcd_debugging_mvcc_keys_total`),
    /// from the index chunks' live counts (no key is visited).
    pub fn live_key_count(&self) -> usize {
        self.inner
            .index
            .read()
            .count_live_latest(crate::key_range::KeyRange::new(&[0], &[0]))
    }

    /// Range, put, delete-range and txn totals since the store was opened, counted as etcd
    /// counts them for `etcd_mvcc_*_total` (see [`OpCounts`]).
    pub fn op_counts(&self) -> OpCounts {
        self.inner.ops.snapshot()
    }

    /// Estimated bytes held by the key index.
    pub fn index_heap_bytes(&self) -> usize {
        self.inner.index.read().approx_heap_bytes()
    }

    /// Opens a read transaction at `revision` (0 or less: the current one). It pins that
    /// revision: reads through it are consistent with each other, writers go on meanwhile, and
    /// compaction past it waits until it is dropped.
    ///
    /// # Errors
    /// [`Error::FutureRevision`] or [`Error::Compacted`].
    pub fn read(&self, revision: i64) -> Result<ReadTxn<'_>> {
        Ok(ReadTxn {
            view: self.inner.view(revision)?,
            ranges: std::cell::Cell::new(0),
        })
    }

    /// Starts a write transaction: every change in it shares one new revision.
    ///
    /// Blocks while another write transaction is open.
    pub fn write(&self) -> WriteTxn<'_> {
        WriteTxn::begin(&self.inner)
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    /// Fails if the commit fails.
    pub fn flush(&self) -> Result<()> {
        self.inner.backend.flush()
    }

    /// Size of the database file in bytes.
    pub fn size(&self) -> u64 {
        self.inner.backend.size()
    }

    /// Bytes of the database file in use by live data.
    ///
    /// # Errors
    /// Fails on a backend error.
    pub fn size_in_use(&self) -> Result<u64> {
        self.inner.backend.size_in_use()
    }

    /// Rewrites the database file compactly without stopping readers or writers.
    ///
    /// # Errors
    /// Fails on a backend error.
    pub fn defragment(&self) -> Result<()> {
        self.inner.backend.defragment()
    }

    /// Streams a consistent snapshot of the whole store to `out` (see
    /// [`Backend::snapshot_to`]).
    ///
    /// # Errors
    /// Fails on a backend or write error.
    pub fn snapshot_to<W: std::io::Write>(&self, out: &mut W) -> Result<u64> {
        self.inner.backend.snapshot_to(out)
    }

    /// The backend underneath (for tables the store does not interpret: auth, alarms, members).
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// Stops background work, commits everything and closes the file.
    ///
    /// # Errors
    /// Fails if the last commit fails.
    pub fn close(&self) -> Result<()> {
        self.inner.compaction.stop();
        self.inner.backend.close()
    }
}

/// The in-memory state rebuilt from the backend: what `open` and `install_snapshot` start from.
pub(crate) struct LoadedState {
    pub index: KeyIndex,
    pub leases: Leases,
    pub current: i64,
    pub compact: i64,
    /// `scheduledCompactRev` and `finishedCompactRev`: a compaction to resume if they differ.
    pub scheduled: Option<i64>,
    pub finished: Option<i64>,
    pub applied_index: u64,
}

/// Rebuilds the key index, leases and revisions from the `kv`, `lease` and `meta` tables.
///
/// # Errors
/// [`Error::Corrupted`] for undecodable records; a backend read error.
pub(crate) fn load_state(tx: &ReadTx) -> Result<LoadedState> {
    let mut index = KeyIndex::new();
    let mut leases = Leases::default();
    let mut current = 1i64;
    let mut failure = None;
    tx.scan(
        Table::Kv,
        (Bound::Unbounded, Bound::Unbounded),
        false,
        |k, v| {
            let step = (|| -> Result<()> {
                let rev = Revision::from_bytes(k)
                    .ok_or_else(|| Error::Corrupted(format!("kv table key {k:?}")))?;
                current = current.max(rev.main);
                match codec::decode(v, rev.main, false)? {
                    Record::Put(kv) => {
                        // The record carries its creation and version, which compaction may
                        // have removed from the history in front of it.
                        let created = Revision::new(kv.create_revision, 0);
                        index.restore_put(&kv.key, rev, created, kv.version);
                        leases.attach(&kv.key, LeaseId(kv.lease));
                    }
                    Record::Tombstone(key) => {
                        if let Err(e) = index.restore_tombstone(&key, rev) {
                            tracing::warn!(key = ?key, revision = %rev, error = %e,
                                "tombstone of a key that is not live; ignored");
                        }
                        leases.attach(&key, LeaseId::NONE);
                    }
                }
                Ok(())
            })();
            match step {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    // The rebuild inserted keys in revision order, i.e. scattered; packing the chunks full
    // again saves about 15 bytes per key.
    index.repack();
    let read_i64 = |key: &[u8]| -> Result<Option<i64>> {
        Ok(tx
            .get(Table::Meta, key)?
            .and_then(|v| v.try_into().ok().map(i64::from_be_bytes)))
    };
    let scheduled = read_i64(meta::SCHEDULED_COMPACT)?;
    let finished = read_i64(meta::FINISHED_COMPACT)?;
    let applied_index = tx
        .get(Table::Meta, meta::CONSISTENT_INDEX)?
        .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);
    leases.load(tx)?;
    let compact = scheduled.or(finished).unwrap_or(-1);
    current = current.max(compact);
    Ok(LoadedState {
        index,
        leases,
        current,
        compact,
        scheduled,
        finished,
        applied_index,
    })
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        // The last handle is gone: stop the compaction thread before the backend closes.
        self.compaction.stop();
    }
}

impl StoreInner {
    /// Takes a read view at `revision` (0 or less: current), checking it against the
    /// compaction point and the current revision.
    pub(crate) fn view(&self, revision: i64) -> Result<ReadView<'_>> {
        let (rev, current) = {
            let mut revs = self.revs.lock();
            // An install is swapping the state: wait for it, unless this thread holds a view
            // already (the install waits for that one, so nothing is swapped under it). Once
            // nothing is pinned, nobody passes: the swap may be under way.
            while revs.installing && (revs.pins.is_empty() || !restore::holds_view()) {
                self.unpinned.wait(&mut revs);
            }
            let current = revs.current;
            let rev = if revision <= 0 { current } else { revision };
            if rev > current {
                return Err(Error::FutureRevision {
                    requested: rev,
                    current,
                });
            }
            if rev < revs.compact {
                return Err(Error::Compacted {
                    requested: rev,
                    compacted: revs.compact,
                });
            }
            *revs.pins.entry(rev).or_default() += 1;
            restore::view_taken();
            (rev, current)
        };
        Ok(ReadView {
            inner: self,
            rev,
            current,
            tx: self.backend.read(),
        })
    }

    pub(crate) fn unpin(&self, rev: i64) {
        let mut revs = self.revs.lock();
        if let Some(n) = revs.pins.get_mut(&rev) {
            *n -= 1;
            if *n == 0 {
                revs.pins.remove(&rev);
                self.unpinned.notify_all();
            }
        }
    }

    /// Waits until no reader is pinned below `rev`.
    pub(crate) fn wait_unpinned_below(&self, rev: i64) {
        let mut revs = self.revs.lock();
        while revs.pins.range(..rev).next().is_some() {
            self.unpinned.wait(&mut revs);
        }
    }
}

/// A consistent read at one revision (etcd's `TxnRead`), see [`MvccStore::read`].
pub struct ReadTxn<'a> {
    view: ReadView<'a>,
    /// Ranges read, added to the store's totals when the transaction ends.
    ranges: std::cell::Cell<u64>,
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        self.view.inner.ops.end(op_counts::TxnCalls {
            ranges: self.ranges.get(),
            ..Default::default()
        });
    }
}

impl ReadTxn<'_> {
    /// The revision this transaction reads at.
    pub fn revision(&self) -> i64 {
        self.view.rev
    }

    /// The store's current revision when the transaction began.
    pub fn current_revision(&self) -> i64 {
        self.view.current
    }

    /// A range at this transaction's revision (a request revision `<= 0` means this one; a
    /// positive one must be retained and not in the future).
    ///
    /// # Errors
    /// As [`MvccStore::range`].
    pub fn range(
        &self,
        req: &crate::request::RangeRequest,
    ) -> Result<crate::request::RangeResponse> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.ranges.set(self.ranges.get() + 1);
        if req.revision > 0 && req.revision != self.view.rev {
            let view = self.view.inner.view(req.revision)?;
            return range::range_view(&view, req);
        }
        range::range_view(&self.view, req)
    }
}

impl ReadView<'_> {
    /// Reads the record of `key` at revision `modified`.
    /// Callers pass revisions they found in the index, which is what lets the record cache
    /// serve them (see `record_cache`).
    pub(crate) fn kv_at(&self, modified: Revision, with_value: bool) -> Result<KeyValue> {
        let decode = |bytes: &[u8]| codec::decode(bytes, modified.main, with_value);
        let record = match self.inner.records.get_with(modified, decode) {
            Some(record) => record?,
            None => self
                .tx
                .get_with(Table::Kv, &modified.to_bytes(), |bytes| {
                    self.inner.records.insert(modified, bytes);
                    decode(bytes)
                })?
                .ok_or_else(|| {
                    Error::Corrupted(format!("revision {modified} is in the index only"))
                })??,
        };
        put_kv(record, modified)
    }

    /// The records of `cands`, in order: their own `kv` for a txn's own writes (without the
    /// value unless `with_value`), else as [`ReadView::kv_at`]. Performance: the cached records
    /// are read a group at a time (see `RecordCache::read_group`).
    pub(crate) fn kvs_at(
        &self,
        mut cands: Vec<range::Candidate>,
        with_value: bool,
    ) -> Result<Vec<KeyValue>> {
        /// Candidates per group: each group costs its shard locks and buffers (a 100-key
        /// scan took 9.5 us in one group of 128 against 10.3 us in groups of 32 and 11 us in
        /// groups of 8), and a group holds the shard read locks for about 10 us, which only
        /// delays a reader filling a miss (a committing writer skips a held shard rather than
        /// wait, see `RecordCache::offer`).
        const GROUP: usize = 128;
        // Every slot starts as a default and is filled in place (see `codec::fill_put`);
        // misses stay default until read from the backend below.
        let mut out = Vec::with_capacity(cands.len());
        out.resize_with(cands.len(), KeyValue::default);
        if let ([c], [kv]) = (&mut cands[..], &mut out[..]) {
            // A get: one lookup needs none of the grouping.
            let modified = c.at.modified;
            match &c.own {
                Some(own) => *kv = decode_put(own, modified.main, with_value)?,
                None => {
                    let key = std::mem::take(&mut c.key);
                    let fill = |bytes: &[u8]| codec::fill_put(bytes, modified, with_value, key, kv);
                    match self.inner.records.get_with(modified, fill) {
                        Some(filled) => filled?,
                        None => *kv = self.kv_at(modified, with_value)?,
                    }
                }
            }
            return Ok(out);
        }
        let mut revs: Vec<Option<Revision>> = Vec::with_capacity(GROUP.min(cands.len()));
        let mut missed: Vec<usize> = Vec::new();
        for (g, (group, slots)) in cands
            .chunks_mut(GROUP)
            .zip(out.chunks_mut(GROUP))
            .enumerate()
        {
            revs.clear();
            revs.extend(
                group
                    .iter()
                    .map(|c| c.own.is_none().then_some(c.at.modified)),
            );
            let mut failure = None;
            self.inner.records.read_group(&revs, |i, record| {
                let (c, kv) = (&mut group[i], &mut slots[i]);
                let modified = c.at.modified;
                let filled = match (&c.own, record) {
                    (Some(own), _) => {
                        decode_put(own, modified.main, with_value).map(|own| *kv = own)
                    }
                    (None, Some(bytes)) => {
                        // The candidate's key becomes the result's (performance, see
                        // the codec).
                        let key = std::mem::take(&mut c.key);
                        codec::fill_put(bytes, modified, with_value, key, kv)
                    }
                    (None, None) => {
                        missed.push(g * GROUP + i);
                        Ok(())
                    }
                };
                if let Err(e) = filled {
                    failure.get_or_insert(e);
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
        }
        // Misses read the backend and fill the cache, outside the cache's locks.
        for i in missed {
            out[i] = self.kv_at(cands[i].at.modified, with_value)?;
        }
        Ok(out)
    }
}

/// Decodes the put record of revision `main` (a txn's own write, for instance).
pub(crate) fn decode_put(record: &[u8], main: i64, with_value: bool) -> Result<KeyValue> {
    put_kv(
        codec::decode(record, main, with_value)?,
        Revision::new(main, 0),
    )
}

/// The key-value of a put record; a tombstone where the index says put is corruption.
fn put_kv(record: Record, modified: Revision) -> Result<KeyValue> {
    match record {
        Record::Put(kv) => Ok(kv),
        Record::Tombstone(_) => Err(codec::not_a_put(modified)),
    }
}

impl Leases {
    /// Records that `key` now holds `lease` (NONE detaches).
    pub(crate) fn attach(&mut self, key: &[u8], lease: LeaseId) {
        if let Some(old) = self.key_lease.remove(key) {
            if let Some(state) = self.by_id.get_mut(&old) {
                state.keys.remove(key);
            }
        }
        if lease.is_some() {
            self.key_lease.insert(key.to_vec(), lease);
            self.by_id
                .entry(lease)
                .or_default()
                .keys
                .insert(key.to_vec());
        }
    }
}

pub(crate) fn be_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn apply_batch(inner: &StoreInner, batch: WriteBatch) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    inner.backend.apply(batch)
}

impl MvccStore {
    /// Writes a key in a revision of its own, as etcd's `Put` (see [`WriteTxn::put`]).
    ///
    /// # Errors
    /// As [`WriteTxn::put`].
    pub fn put(&self, req: &crate::request::PutRequest) -> Result<crate::request::PutResponse> {
        let mut w = self.write();
        let resp = w.put(req)?;
        w.commit()?;
        Ok(resp)
    }

    /// Deletes a range in one revision, as etcd's `DeleteRange` (see
    /// [`WriteTxn::delete_range`]); no revision is used when nothing matched.
    ///
    /// # Errors
    /// As [`WriteTxn::delete_range`].
    pub fn delete_range(
        &self,
        req: &crate::request::DeleteRangeRequest,
    ) -> Result<crate::request::DeleteRangeResponse> {
        let mut w = self.write();
        let resp = w.delete_range(req)?;
        w.commit()?;
        Ok(resp)
    }
}
