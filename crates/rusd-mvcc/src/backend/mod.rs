//! The storage backend: named tables of ordered byte maps on redb, with write coalescing.
//!
//! ```text
//!   apply(batch) ──► active overlay ──freeze──► frozen overlays ──commit──► redb file
//!                          ▲                          ▲                         ▲
//!   ReadTx ────────────────┴──────────────────────────┴─────────────────────────┘
//!            (newest first: active, frozen newest→oldest, then the redb snapshot)
//! ```
//!
//! Writes become visible to readers as soon as [`Backend::apply`] returns and durable when
//! the committer (a background thread, every `batch_interval` or `batch_limit` operations) or
//! [`Backend::flush`] has committed them. A commit never blocks writers: it freezes the active
//! overlay under the writer lock (a pointer swap) and writes the frozen one into redb while new
//! writes go to a fresh overlay. A batch is applied under the writer lock, so a commit holds
//! whole batches: that is what makes the store's applied index atomic with its data.

mod defrag;
mod overlay;
mod read_tx;
mod snapshot;
mod table;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, RwLock};
use redb::{Database, Durability, ReadableDatabase};

use crate::error::{Error, Result};
use overlay::Overlay;
pub use read_tx::ReadTx;
pub use table::Table;

/// Settings of a [`Backend`].
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// The database file.
    pub path: PathBuf,
    /// Bytes of page cache redb may hold (default 256 MiB). An `MvccStore` gives part of it to
    /// its record cache instead (`StoreConfig::record_cache_percent`).
    pub cache_size: usize,
    /// Pending operations that start a commit (default 10,000, etcd's batch limit).
    pub batch_limit: usize,
    /// Longest time a write waits for its commit (default 100 ms, etcd's batch interval).
    pub batch_interval: Duration,
    /// Pending bytes above which writers wait for the committer (default 32 MiB: enough to keep
    /// the committer busy, small enough that memory stays within cache + index + 64 MiB;
    /// 256 MiB cost 60-100 MiB of RSS over that budget loading 1M keys, for no throughput).
    pub max_pending_bytes: usize,
}

impl BackendConfig {
    /// Defaults for a database file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache_size: 256 << 20,
            batch_limit: 10_000,
            batch_interval: Duration::from_millis(100),
            max_pending_bytes: 32 << 20,
        }
    }
}

/// One write to apply: see [`WriteBatch`].
#[derive(Clone, Debug)]
enum WriteOp {
    Put(Table, Vec<u8>, Arc<[u8]>),
    Delete(Table, Vec<u8>),
}

/// Puts and deletes that [`Backend::apply`] makes visible together and commits together.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` under `key` in `table`.
    pub fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Arc<[u8]>>) {
        self.ops.push(WriteOp::Put(table, key.into(), value.into()));
    }

    /// Deletes `key` from `table` (a no-op if it is absent).
    pub fn delete(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete(table, key.into()));
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A consistent redb read transaction with every table opened.
pub(crate) struct Snapshot {
    tables: Vec<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>,
    // Keeps the database open while a reader still uses this snapshot (after a defragment
    // swapped in a new file, for instance).
    _db: Arc<Database>,
}

impl Snapshot {
    fn new(db: &Arc<Database>) -> Result<Self> {
        let txn = db.begin_read()?;
        let mut tables = Vec::with_capacity(Table::ALL.len());
        for table in Table::ALL {
            tables.push(txn.open_table(table.definition())?);
        }
        Ok(Self {
            tables,
            _db: db.clone(),
        })
    }

    fn table(&self, table: Table) -> &redb::ReadOnlyTable<&'static [u8], &'static [u8]> {
        &self.tables[table.index()]
    }
}

/// What readers see: the redb snapshot plus the overlays not yet in it.
pub(crate) struct View {
    snapshot: Arc<Snapshot>,
    /// Overlays being committed, oldest first. Nobody writes to them any more.
    frozen: Vec<Arc<RwLock<Overlay>>>,
    /// Where writes go now.
    active: Arc<RwLock<Overlay>>,
}

/// Committer bookkeeping, behind [`Inner::signal`].
#[derive(Default)]
struct Signal {
    /// Operations applied since the last freeze.
    pending_ops: usize,
    /// Bytes in the active and frozen overlays.
    pending_bytes: usize,
    /// Completed commits; flushers wait for it to pass the value they saw.
    commits: u64,
    /// Set by close; the committer exits.
    closing: bool,
}

struct Inner {
    config: BackendConfig,
    db: ArcSwap<Database>,
    view: ArcSwap<View>,
    /// Serialises `apply` and the freeze of a commit. Lock order: `commit` before `writer`.
    writer: Mutex<()>,
    /// Serialises commits, and the final step of a defragment. Holds the commits recorded
    /// while a defragment copies (`Some` only then).
    commit: Mutex<Option<Vec<Arc<RwLock<Overlay>>>>>,
    /// Held for a whole defragment or snapshot install (both build a new file and rename it
    /// over the database): two at once would share the temporary file and the commit log, and
    /// a defragment finishing after an install would rename its copy of the old data over the
    /// installed file. Lock order: `defrag` before `commit`.
    defrag: Mutex<()>,
    signal: Mutex<Signal>,
    wake: Condvar,
    /// Logical size of the committed data, see [`Backend::size_in_use`].
    live_bytes: AtomicU64,
    /// First fatal I/O failure; every later write fails with it.
    poisoned: Mutex<Option<String>>,
    /// Told how long each background commit took (see [`Backend::observe_commits`]).
    commit_observer: std::sync::OnceLock<CommitObserver>,
}

/// A function told the duration of each durable commit.
type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// The storage backend. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Backend {
    inner: Arc<Inner>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl Backend {
    /// Opens (or creates) the database at `config.path` and starts its committer thread.
    ///
    /// # Errors
    /// Fails if the file cannot be opened or is not a redb database.
    pub fn open(config: BackendConfig) -> Result<Self> {
        if let Some(dir) = config.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        // A defragment that crashed before its rename leaves a partial copy behind.
        let _ = std::fs::remove_file(defrag::temp_path(&config.path));
        // So does a snapshot install (`MvccStore::install_snapshot`).
        let _ = std::fs::remove_file(snapshot::install_path(&config.path));
        if !config.path.exists() {
            // A new file is initialised under another name and renamed into place: a kill
            // while redb writes its first pages would leave a file that is not a database.
            let creating = defrag::creating_path(&config.path);
            let _ = std::fs::remove_file(&creating);
            drop(open_database(&creating, config.cache_size)?);
            std::fs::rename(&creating, &config.path)?;
            defrag::sync_parent_dir(&config.path)?;
        }
        let db = Arc::new(open_database(&config.path, config.cache_size)?);
        let live_bytes = AtomicU64::new(load_live_bytes(&db)?);
        let snapshot = Arc::new(Snapshot::new(&db)?);
        let inner = Arc::new(Inner {
            view: ArcSwap::from_pointee(View {
                snapshot,
                frozen: Vec::new(),
                active: Arc::default(),
            }),
            db: ArcSwap::new(db),
            config,
            writer: Mutex::new(()),
            commit: Mutex::new(None),
            defrag: Mutex::new(()),
            signal: Mutex::new(Signal::default()),
            wake: Condvar::new(),
            poisoned: Mutex::new(None),
            commit_observer: std::sync::OnceLock::new(),
            live_bytes,
        });
        let worker = inner.clone();
        let committer = std::thread::Builder::new()
            .name("rusd-committer".into())
            .spawn(move || worker.run_committer())?;
        Ok(Self {
            inner,
            committer: Mutex::new(Some(committer)),
        })
    }

    /// The settings this backend was opened with.
    pub fn config(&self) -> &BackendConfig {
        &self.inner.config
    }

    /// A consistent read view. Cheap: no lock is held while it lives.
    pub fn read(&self) -> ReadTx {
        ReadTx::new(self.inner.view.load_full())
    }

    /// Makes every write of `batch` visible at once; they become durable with the next commit.
    ///
    /// # Errors
    /// [`Error::Poisoned`] after an earlier commit failed, [`Error::Closed`] after close.
    pub fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.wait_for_room();
        let _writer = self.inner.writer.lock();
        let view = self.inner.view.load();
        let mut active = view.active.write();
        let before = active.bytes();
        let ops = batch.ops.len();
        for op in batch.ops {
            match op {
                WriteOp::Put(table, key, value) => active.put(table, key, value),
                WriteOp::Delete(table, key) => active.delete(table, key),
            }
        }
        let added = active.bytes() - before;
        drop(active);
        let mut signal = self.inner.signal.lock();
        signal.pending_ops += ops;
        signal.pending_bytes += added;
        if signal.pending_ops >= self.inner.config.batch_limit {
            self.inner.wake.notify_all();
        }
        Ok(())
    }

    /// Bytes of writes [`Backend::apply`] takes before it waits for the committer: writes
    /// adding less than this (as the write buffer counts them: each key and value plus 64)
    /// return without blocking.
    pub fn write_room(&self) -> usize {
        let pending = self.inner.signal.lock().pending_bytes;
        self.inner.config.max_pending_bytes.saturating_sub(pending)
    }

    /// Commits every write applied so far and waits until it is on disk (fsync).
    ///
    /// # Errors
    /// Fails if the commit fails; the backend is then poisoned.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.commit_now()
    }

    /// Size of the database file in bytes.
    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.inner.config.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Logical size: the bytes of every key and value committed to the file (the rest of the
    /// file is page overhead and free space). Exact, and cheap: each commit updates it from what
    /// redb reports inserting and removing, and persists it with the data. It drops as soon as a
    /// compaction's deletions are committed, without a defragment. Writes not yet committed are
    /// included with an estimate (their bytes plus a small per-entry overhead); after a flush
    /// the value is exact.
    ///
    /// # Errors
    /// None today; kept fallible for backends that would have to compute it.
    pub fn size_in_use(&self) -> Result<u64> {
        // Writes not committed yet count with their overlay estimate, so that a burst of writes
        // between two commits is seen by quota checks.
        let pending = self.inner.signal.lock().pending_bytes as u64;
        Ok(self.inner.live_bytes.load(Ordering::Acquire) + pending)
    }

    /// Stops the committer, commits what is pending and closes the file.
    ///
    /// # Errors
    /// Fails if the last commit fails.
    pub fn close(&self) -> Result<()> {
        {
            let mut signal = self.inner.signal.lock();
            signal.closing = true;
            self.inner.wake.notify_all();
        }
        if let Some(handle) = self.committer.lock().take() {
            let _ = handle.join();
        }
        if self.inner.poisoned.lock().is_some() {
            return Ok(());
        }
        self.inner.commit_now()
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// Calls `observer` with the duration of every later background commit (writing the
    /// pending writes into the database and syncing it: etcd's backend commit, which
    /// monitoring watches as `etcd_disk_backend_commit_duration_seconds`). The first call
    /// wins; later ones are ignored.
    pub fn observe_commits(&self, observer: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.inner.commit_observer.set(Box::new(observer));
    }

    /// `Ok` unless an earlier I/O failure poisoned the backend or it was closed.
    ///
    /// # Errors
    /// [`Error::Poisoned`] or [`Error::Closed`].
    pub(crate) fn check_writable(&self) -> Result<()> {
        self.inner.check_writable()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if self.committer.lock().is_some() {
            if let Err(e) = self.close() {
                tracing::error!(error = %e, "closing the backend failed");
            }
        }
    }
}

fn open_database(path: &Path, cache_size: usize) -> Result<Database> {
    let db = Database::builder()
        .set_cache_size(cache_size)
        .create(path)?;
    // Every table exists from the start, so readers can open them all.
    let txn = db.begin_write()?;
    for table in Table::ALL {
        txn.open_table(table.definition())?;
    }
    txn.commit()?;
    Ok(db)
}

impl Inner {
    fn check_writable(&self) -> Result<()> {
        if let Some(reason) = self.poisoned.lock().as_ref() {
            return Err(Error::Poisoned(reason.clone()));
        }
        if self.signal.lock().closing {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Backpressure: a writer waits while the overlays hold more than `max_pending_bytes`.
    fn wait_for_room(&self) {
        let mut signal = self.signal.lock();
        while signal.pending_bytes > self.config.max_pending_bytes && !signal.closing {
            self.wake.notify_all();
            self.wake.wait_for(&mut signal, Duration::from_millis(50));
        }
    }

    fn run_committer(&self) {
        loop {
            {
                let mut signal = self.signal.lock();
                if signal.pending_ops < self.config.batch_limit && !signal.closing {
                    self.wake.wait_for(&mut signal, self.config.batch_interval);
                }
                if signal.closing {
                    return;
                }
                if signal.pending_ops == 0 {
                    continue;
                }
            }
            if let Err(e) = self.commit_now() {
                tracing::error!(error = %e, "background commit failed; the store is poisoned");
                return;
            }
        }
    }

    /// Freezes the active overlay, writes everything frozen into redb durably and publishes
    /// the new snapshot.
    fn commit_now(&self) -> Result<()> {
        let mut commit = self.commit.lock();
        let frozen = {
            let _writer = self.writer.lock();
            let view = self.view.load_full();
            let mut signal = self.signal.lock();
            signal.pending_ops = 0;
            drop(signal);
            if view.active.read().is_empty() && view.frozen.is_empty() {
                return Ok(());
            }
            let mut frozen = view.frozen.clone();
            frozen.push(view.active.clone());
            self.view.store(Arc::new(View {
                snapshot: view.snapshot.clone(),
                frozen: frozen.clone(),
                active: Arc::default(),
            }));
            frozen
        };
        let db = self.db.load_full();
        let started = std::time::Instant::now();
        let result = write_overlays(
            &db,
            &frozen,
            Durability::Immediate,
            LiveBytes::Track(&self.live_bytes),
        );
        if let (Ok(()), Some(observe)) = (&result, self.commit_observer.get()) {
            observe(started.elapsed());
        }
        let result = result.and_then(|()| Snapshot::new(&db));
        let snapshot = match result {
            Ok(snapshot) => Arc::new(snapshot),
            Err(e) => {
                // The overlays stay readable, but nothing later may claim to be durable.
                *self.poisoned.lock() = Some(e.to_string());
                return Err(e);
            }
        };
        if let Some(log) = commit.as_mut() {
            log.extend(frozen.iter().cloned());
        }
        let committed_bytes: usize = frozen.iter().map(|o| o.read().bytes()).sum();
        {
            let _writer = self.writer.lock();
            let view = self.view.load_full();
            let remaining = view.frozen[frozen.len()..].to_vec();
            self.view.store(Arc::new(View {
                snapshot,
                frozen: remaining,
                active: view.active.clone(),
            }));
        }
        let mut signal = self.signal.lock();
        signal.pending_bytes = signal.pending_bytes.saturating_sub(committed_bytes);
        signal.commits += 1;
        self.wake.notify_all();
        Ok(())
    }
}

/// The meta key under which the logical size is kept with the data (big-endian u64).
pub(crate) const LIVE_BYTES_KEY: &[u8] = b"rusd/live_bytes";

/// How a commit treats the logical size counter.
pub(crate) enum LiveBytes<'a> {
    /// Add this commit's change to the counter and persist the result with it.
    Track(&'a AtomicU64),
    /// Persist this value (a defragment's copy: the changes were counted already).
    Set(u64),
}

/// Writes overlays (oldest first) into `db` in one redb transaction, keeping the logical size
/// (bytes of keys and values of every table) exact: redb hands back the value an insert
/// replaces or a remove deletes, so the change costs nothing extra.
fn write_overlays(
    db: &Database,
    overlays: &[Arc<RwLock<Overlay>>],
    durability: Durability,
    live: LiveBytes<'_>,
) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let mut delta: i64 = 0;
    for table in Table::ALL {
        let mut t = txn.open_table(table.definition())?;
        for overlay in overlays {
            let overlay = overlay.read();
            for (key, value) in overlay.entries(table) {
                match value {
                    Some(v) => {
                        if let Some(old) = t.insert(key, &**v)? {
                            delta -= (key.len() + old.value().len()) as i64;
                        }
                        delta += (key.len() + v.len()) as i64;
                    }
                    None => {
                        if let Some(old) = t.remove(key)? {
                            delta -= (key.len() + old.value().len()) as i64;
                        }
                    }
                }
            }
        }
    }
    let total = match &live {
        LiveBytes::Track(counter) => (counter.load(Ordering::Acquire) as i64)
            .saturating_add(delta)
            .max(0) as u64,
        LiveBytes::Set(value) => *value,
    };
    {
        let mut meta = txn.open_table(Table::Meta.definition())?;
        meta.insert(LIVE_BYTES_KEY, &total.to_be_bytes()[..])?;
    }
    txn.commit()?;
    if let LiveBytes::Track(counter) = live {
        counter.store(total, Ordering::Release);
    }
    Ok(())
}

/// The logical size of `db`: persisted with the data, or counted once for a file written
/// before the counter existed.
fn load_live_bytes(db: &Database) -> Result<u64> {
    use redb::ReadableTable;
    let txn = db.begin_read()?;
    let meta = txn.open_table(Table::Meta.definition())?;
    if let Some(v) = meta.get(LIVE_BYTES_KEY)? {
        if let Ok(bytes) = <[u8; 8]>::try_from(v.value()) {
            return Ok(u64::from_be_bytes(bytes));
        }
    }
    let mut total = 0u64;
    for table in Table::ALL {
        let t = txn.open_table(table.definition())?;
        for entry in t.iter()? {
            let (k, v) = entry?;
            if !(table == Table::Meta && k.value() == LIVE_BYTES_KEY) {
                total += (k.value().len() + v.value().len()) as u64;
            }
        }
    }
    Ok(total)
}
