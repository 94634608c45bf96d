//! Defragmentation without stopping readers or writers.
//!
//! redb never shrinks its file; free pages are only reused. Defragment copies the live data
//! into a fresh file while the old one keeps serving:
//!
//! 1. under the commit lock: commit pending writes, take a redb read snapshot, and start
//!    recording every later commit;
//! 2. with no lock held: copy the snapshot into `<db>.defrag`;
//! 3. under the commit lock (writers are never blocked; only commits wait): replay the recorded
//!    commits into the copy, make it durable, rename it over the database file and swap it in.
//!
//! Readers holding the old snapshot finish on the old file, which the kernel frees when the
//! last of them is gone. A crash before the rename leaves the old file intact and a partial
//! copy that the next open removes; after the rename the copy is complete.
//!
//! The last step, [`Inner::swap_database`], is shared with `install_snapshot`
//! (`snapshot.rs`), which swaps in a file built from a snapshot stream instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use super::{open_database, write_overlays, Backend, Inner, LiveBytes, Snapshot, Table, View};
use crate::error::Result;

/// Entries copied per transaction.
const COPY_BATCH: usize = 10_000;

pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".defrag");
    PathBuf::from(name)
}

impl Backend {
    /// Rewrites the database file compactly; readers and writers go on meanwhile.
    ///
    /// # Errors
    /// Fails on a backend or file error; the old file then stays in use.
    pub fn defragment(&self) -> Result<()> {
        let inner = &self.inner;
        // One defragment at a time; a second caller waits and then defragments again.
        let _defrag = inner.defrag.lock();
        inner.check_writable()?;
        inner.commit_now()?;
        let (source, read) = {
            let mut commit = inner.commit.lock();
            let db = inner.db.load_full();
            let read = db.begin_read()?;
            *commit = Some(Vec::new());
            (db, read)
        };
        let tmp = temp_path(&inner.config.path);
        let _ = std::fs::remove_file(&tmp);
        let copied = (|| -> Result<redb::Database> {
            let target = open_database(&tmp, inner.config.cache_size)?;
            for table in Table::ALL {
                let t = read.open_table(table.definition())?;
                let mut iter = t.iter()?;
                loop {
                    let mut txn = target.begin_write()?;
                    txn.set_durability(Durability::None)?;
                    let mut done = true;
                    {
                        let mut out = txn.open_table(table.definition())?;
                        for entry in iter.by_ref().take(COPY_BATCH) {
                            let (k, v) = entry?;
                            out.insert(k.value(), v.value())?;
                            done = false;
                        }
                    }
                    txn.commit()?;
                    if done {
                        break;
                    }
                }
            }
            Ok(target)
        })();
        drop(read);
        drop(source);
        let mut commit = inner.commit.lock();
        let log = commit.take().unwrap_or_default();
        let target = match copied {
            Ok(target) => target,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // Commits made while copying, then one durable commit that also covers the copy.
        write_overlays(
            &target,
            &log,
            Durability::Immediate,
            LiveBytes::Set(inner.live_bytes.load(std::sync::atomic::Ordering::Acquire)),
        )?;
        inner.swap_database(&tmp, Arc::new(target), Pending::Keep)?;
        drop(commit);
        Ok(())
    }
}

/// What [`Inner::swap_database`] does with the writes not committed yet.
pub(super) enum Pending {
    /// Keep them: they go into the new file with the next commit (defragment: same data).
    Keep,
    /// Drop them: the new file replaces the state they were written against (install).
    Discard,
}

impl Inner {
    /// Makes `target`, a complete and durable database open on `tmp`, the database: renames
    /// `tmp` over the database file, syncs the directory, and points commits and new readers
    /// at it. Readers holding the old snapshot finish on the old file, which the kernel frees
    /// when the last of them is gone. Call with the commit lock held, so that no commit writes
    /// into the old file meanwhile.
    ///
    /// An `Err` leaves everything as it was: nothing fails after the rename. If the directory
    /// sync fails, the swap still happens (the file at the path is the new one) but a crash
    /// could bring the old file back without the commits made to the new one, so the backend
    /// is poisoned: nothing after a failed fsync may claim durability.
    pub(super) fn swap_database(
        &self,
        tmp: &Path,
        target: Arc<Database>,
        pending: Pending,
    ) -> Result<()> {
        let snapshot = Arc::new(Snapshot::new(&target)?);
        std::fs::rename(tmp, &self.config.path)?;
        if let Err(e) = sync_parent_dir(&self.config.path) {
            tracing::error!(error = %e, "syncing the directory after a rename failed; the store is poisoned");
            *self.poisoned.lock() = Some(format!("directory sync after a rename: {e}"));
        }
        self.db.store(target);
        let _writer = self.writer.lock();
        let view = self.view.load_full();
        let (frozen, active) = match pending {
            Pending::Keep => (view.frozen.clone(), view.active.clone()),
            Pending::Discard => {
                let mut signal = self.signal.lock();
                signal.pending_ops = 0;
                signal.pending_bytes = 0;
                // Writers waiting for room have it now.
                self.wake.notify_all();
                (Vec::new(), Arc::default())
            }
        };
        self.view.store(Arc::new(View {
            snapshot,
            frozen,
            active,
        }));
        Ok(())
    }
}

/// Where `Backend::open` initialises a new database before renaming it into place.
pub(super) fn creating_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".creating");
    PathBuf::from(name)
}

/// Makes a rename in the database's directory durable.
pub(super) fn sync_parent_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}
