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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Durability, ReadableDatabase, ReadableTable};

use super::{open_database, write_overlays, Backend, LiveBytes, Snapshot, Table, View};
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
        std::fs::rename(&tmp, &inner.config.path)?;
        if let Some(dir) = inner.config.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let target = Arc::new(target);
        let snapshot = Arc::new(Snapshot::new(&target)?);
        inner.db.store(target);
        let _writer = inner.writer.lock();
        let view = inner.view.load_full();
        inner.view.store(Arc::new(View {
            snapshot,
            frozen: view.frozen.clone(),
            active: view.active.clone(),
        }));
        drop(commit);
        Ok(())
    }
}
