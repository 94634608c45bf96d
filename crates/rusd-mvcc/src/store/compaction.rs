//! Compaction: dropping history below a revision, logically at once, physically in batches.
//!
//! 1. `compact(C)` (a write, ordered with the others): checks C, persists
//!    `scheduledCompactRev = C` and raises the compact revision, so reads below C fail at once.
//! 2. The compaction thread waits until no reader is pinned below C, then compacts the key
//!    index `compaction_batch` keys at a time (the index write lock is released in between) and
//!    deletes exactly the revisions the index dropped from the backend.
//! 3. It persists `finishedCompactRev = C`. After a crash between 1 and 3, open finds
//!    `scheduled != finished` and runs the compaction again; every step is idempotent.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::{meta, MvccStore, StoreInner};
use crate::backend::{Table, WriteBatch};
use crate::error::{Error, Result};
use crate::store::write_txn::WriteTxn;

#[derive(Default)]
struct State {
    queue: VecDeque<i64>,
    /// Newest compaction whose physical part finished in this process (or was found finished).
    finished: i64,
    /// A compaction is being carried out.
    running: bool,
    stop: bool,
    thread: Option<JoinHandle<()>>,
}

/// The compaction thread's queue.
#[derive(Default)]
pub(crate) struct Compaction {
    state: Mutex<State>,
    changed: Condvar,
}

/// Waits for the physical part of a compaction (etcd's `physical: true`).
pub struct CompactionHandle {
    store: MvccStore,
    revision: i64,
}

impl CompactionHandle {
    /// The revision compacted at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Blocks until the compacted revisions are deleted from the backend.
    pub fn wait(&self) {
        let c = &*self.store.inner.compaction;
        let mut state = c.state.lock();
        while state.finished < self.revision && !state.stop {
            c.changed.wait(&mut state);
        }
    }
}

impl Compaction {
    pub(crate) fn schedule(&self, rev: i64) {
        let mut state = self.state.lock();
        state.queue.push_back(rev);
        self.changed.notify_all();
    }

    pub(crate) fn stop(&self) {
        let handle = {
            let mut state = self.state.lock();
            state.stop = true;
            self.changed.notify_all();
            state.thread.take()
        };
        if let Some(handle) = handle {
            // The compaction thread itself may drop the last store handle; it cannot join itself.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    /// After `install_snapshot` replaced the history (the caller waited for [`wait_idle`]):
    /// compactions from here on are the new history's, whose compact revision is `compact`.
    /// `finished` never goes down, so that a handle of the old history does not wait forever.
    ///
    /// [`wait_idle`]: Compaction::wait_idle
    pub(crate) fn restored(&self, compact: i64) {
        let mut state = self.state.lock();
        state.queue.clear();
        state.finished = state.finished.max(compact);
        self.changed.notify_all();
    }

    /// Blocks until no compaction is queued or running.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.state.lock();
        while (state.running || !state.queue.is_empty()) && !state.stop {
            self.changed.wait(&mut state);
        }
    }
}

impl MvccStore {
    /// Compacts history at `revision`: reads below it fail from now on, and the revisions no
    /// read at or above it can need are deleted in the background. Use the returned handle to
    /// wait for the deletion (etcd's `physical`).
    ///
    /// # Errors
    /// [`Error::Compacted`] if `revision` is not above the compact revision,
    /// [`Error::FutureRevision`] if it is above the current one.
    pub fn compact(&self, revision: i64) -> Result<CompactionHandle> {
        let mut w = self.write();
        w.compact(revision)?;
        w.commit()?;
        Ok(CompactionHandle {
            store: self.clone(),
            revision,
        })
    }

    /// A handle to wait for the physical part of the compaction at `revision` (or any later
    /// one) to finish.
    pub fn compaction_handle(&self, revision: i64) -> CompactionHandle {
        CompactionHandle {
            store: self.clone(),
            revision,
        }
    }

    pub(super) fn start_compactor(&self) -> Result<()> {
        let weak = Arc::downgrade(&self.inner);
        let queue = self.inner.compaction.clone();
        let handle = std::thread::Builder::new()
            .name("rusd-compactor".into())
            .spawn(move || run(&queue, &weak))?;
        let mut state = self.inner.compaction.state.lock();
        state.thread = Some(handle);
        state.finished = self.inner.revs.lock().compact;
        Ok(())
    }
}

impl WriteTxn<'_> {
    /// Schedules a compaction at `revision` as part of this write (see [`MvccStore::compact`]).
    ///
    /// # Errors
    /// [`Error::Compacted`] or [`Error::FutureRevision`].
    pub fn compact(&mut self, revision: i64) -> Result<()> {
        let compacted = self.compact_revision();
        if revision <= compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted,
            });
        }
        let current = self.base_revision();
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        self.schedule_compaction(revision);
        Ok(())
    }
}

/// The compaction thread. It holds only the queue while it waits, so dropping the last store
/// handle is never delayed by it.
fn run(queue: &Compaction, weak: &Weak<StoreInner>) {
    loop {
        let rev = {
            let mut state = queue.state.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(rev) = state.queue.pop_front() {
                    state.running = true;
                    break rev;
                }
                queue.changed.wait(&mut state);
            }
        };
        let result = match weak.upgrade() {
            Some(inner) => compact_physically(&inner, rev),
            None => return,
        };
        let mut state = queue.state.lock();
        state.running = false;
        match result {
            Ok(true) => state.finished = state.finished.max(rev),
            Ok(false) => {}
            Err(e) => tracing::error!(revision = rev, error = %e, "compaction failed"),
        }
        queue.changed.notify_all();
    }
}

/// Returns false when stopped before the end (the compaction resumes at the next open).
fn compact_physically(inner: &StoreInner, rev: i64) -> Result<bool> {
    inner.wait_unpinned_below(rev);
    let mut resume: Option<Vec<u8>> = None;
    let mut dropped = Vec::new();
    loop {
        if inner.compaction.state.lock().stop {
            return Ok(false);
        }
        let next = inner.index.write().compact_batch(
            rev,
            resume.as_deref(),
            inner.config.compaction_batch,
            &mut dropped,
        );
        if !dropped.is_empty() {
            let mut batch = WriteBatch::new();
            for r in dropped.drain(..) {
                batch.delete(Table::Kv, r.to_bytes().to_vec());
            }
            inner.backend.apply(batch)?;
        }
        match next {
            Some(key) => resume = Some(key),
            None => break,
        }
    }
    let mut batch = WriteBatch::new();
    batch.put(
        Table::Meta,
        meta::FINISHED_COMPACT,
        super::be_i64(rev).to_vec(),
    );
    inner.backend.apply(batch)?;
    Ok(true)
}
