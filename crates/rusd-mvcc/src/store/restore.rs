//! Installing a snapshot into a running store: etcd's `mvcc.Restore` after a backend swap.
//!
//! A Raft follower that fell behind gets the leader's whole state as a `RUSDSNAP` stream
//! ([`MvccStore::snapshot_to`]) and replaces its own with it while the server keeps running.
//! Every part of the server holds a clone of the same [`MvccStore`], so the replacement happens
//! inside it:
//!
//! 1. With no store lock held (reads and writes go on): the stream is written into
//!    `<db>.installing`, its checksum verified and the file made durable
//!    ([`Backend::prepare_install`](crate::Backend)); the key index, leases and revisions are
//!    rebuilt from that file exactly as `open` rebuilds them. A bad stream stops here.
//! 2. Under the writer lock: wait for a running compaction of the old history, then close the
//!    read gate (`RevState::installing`: new readers wait) and wait until every pinned reader
//!    is done, as etcd's `Restore` waits for its read transactions.
//! 3. Swap: the backend renames the new file over the database and points commits and new
//!    views at it, discarding writes not yet committed; then the index, leases, record cache,
//!    applied index and revisions are replaced, the gate opens, and restore observers learn of
//!    the new history before the writer lock is released.
//!
//! Every read pins its revision for as long as it runs and takes its backend view inside the
//! pin, so a read runs entirely before the swap or entirely after it: it never mixes the two.
//! A thread that holds a read may take another one while the gate is closed (the swap waits for
//! the first anyway); that is what nested reads (a txn's range at another revision) do.

use std::cell::Cell;
use std::io::Read;

use super::{load_state, LoadedState, MvccStore};
use crate::error::{Error, Result};

/// What [`MvccStore::install_snapshot`] installed: the state every handle sees now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallOutcome {
    /// The store's current revision: the newest revision of the snapshot.
    pub revision: i64,
    /// Its compact revision (-1 if the snapshot's history was never compacted).
    pub compact_revision: i64,
    /// The applied log index recorded in the snapshot (0 if none).
    pub applied_index: u64,
    /// Keys in the index (live, or deleted and not yet compacted).
    pub keys: usize,
    /// Leases.
    pub leases: usize,
    /// Bytes read from the stream, trailer included.
    pub snapshot_bytes: u64,
}

thread_local! {
    /// Read views this thread holds (see the module docs: such a thread passes a closed gate).
    static HELD_VIEWS: Cell<usize> = const { Cell::new(0) };
}

pub(super) fn holds_view() -> bool {
    HELD_VIEWS.with(|n| n.get() > 0)
}

pub(super) fn view_taken() {
    HELD_VIEWS.with(|n| n.set(n.get() + 1));
}

pub(super) fn view_released() {
    // Saturating: a view dropped on another thread than it was taken on miscounts. A miscount
    // only decides whether a thread waits at a closed gate while others are still pinned; once
    // nothing is pinned, every new view waits (`StoreInner::view`).
    HELD_VIEWS.with(|n| n.set(n.get().saturating_sub(1)));
}

impl MvccStore {
    /// Replaces the store's whole state with a snapshot stream written by
    /// [`MvccStore::snapshot_to`], in place: when it returns, every handle of this store sees
    /// the new data, revisions, compact revision, leases and applied index (etcd's
    /// `mvcc.Restore` after a backend swap).
    ///
    /// * The stream is read and verified into a new file next to the database first, while
    ///   the store keeps serving; a corrupt or truncated stream returns
    ///   [`Error::CorruptSnapshot`] and changes nothing.
    /// * Writes applied but not yet committed are discarded, not merged; a write transaction
    ///   open at the call finishes first (on the old state).
    /// * Reads that started before the swap finish on the old data: the swap waits for them,
    ///   and reads starting meanwhile wait for the swap, then see only the new data. A thread
    ///   must therefore not hold a [`ReadTxn`](crate::ReadTxn) while it waits for a write, a
    ///   defragment or another thread during an install; calling this with a read open on the
    ///   same thread is refused.
    /// * Crash safety: the new file is complete and durable before it is renamed over the
    ///   database, so a reopen after a crash finds all of the old state or all of the new.
    /// * Restore observers ([`MvccStore::observe_restore`]) are called after the swap;
    ///   subscriptions ([`MvccStore::subscribe`]) are marked lagged.
    ///
    /// # Errors
    /// [`Error::CorruptSnapshot`] for a malformed stream, a checksum mismatch or undecodable
    /// records; [`Error::InvalidArgument`] if this thread holds a read; [`Error::Closed`],
    /// [`Error::Poisoned`], or an I/O or backend error: in all of these the old state is still
    /// in place. The one exception is [`Error::Poisoned`] after the swap, when syncing the
    /// directory failed: the new state is in place but its durability is unknown (reopen).
    pub fn install_snapshot<R: Read>(&self, input: R) -> Result<InstallOutcome> {
        if holds_view() {
            return Err(Error::InvalidArgument(
                "install_snapshot called while this thread holds a read of the store".into(),
            ));
        }
        let inner = &*self.inner;
        let prepared = inner.backend.prepare_install(input)?;
        // Records that pass the checksum but do not decode are the snapshot's fault.
        let loaded = prepared
            .read()
            .and_then(|tx| load_state(&tx))
            .map_err(|e| match e {
                Error::Corrupted(what) => Error::CorruptSnapshot(what),
                e => e,
            })?;
        let snapshot_bytes = prepared.stream_bytes();
        let LoadedState {
            index,
            leases,
            current,
            compact,
            scheduled,
            finished,
            applied_index,
        } = loaded;

        let mut writer = inner.writer.lock();
        // A compaction of the old history would delete from the new one. None starts while
        // the writer lock is held (scheduling one is a write).
        inner.compaction.wait_idle();
        {
            let mut revs = inner.revs.lock();
            revs.installing = true;
            while !revs.pins.is_empty() {
                inner.unpinned.wait(&mut revs);
            }
        }
        if let Err(e) = inner.backend.install(prepared) {
            inner.revs.lock().installing = false;
            inner.unpinned.notify_all();
            return Err(e);
        }
        // Nothing reads or writes now: swap the in-memory state to match the new file.
        let old_index = std::mem::replace(&mut *inner.index.write(), index);
        let lease_count = leases.by_id.values().filter(|l| l.ttl != 0).count();
        let old_leases = std::mem::replace(&mut *inner.leases.write(), leases);
        // Records are cached by revision; the new history may hold others at the same ones.
        inner.records.clear();
        writer.applied_index = applied_index;
        {
            let mut revs = inner.revs.lock();
            revs.current = current;
            revs.compact = compact;
            revs.installing = false;
        }
        inner.unpinned.notify_all();
        let outcome = InstallOutcome {
            revision: current,
            compact_revision: compact,
            applied_index,
            keys: inner.index.read().len(),
            leases: lease_count,
            snapshot_bytes,
        };
        inner.observers.restored(&outcome);
        inner.compaction.restored(compact);
        // As `open`: a compaction the snapshot's source had not finished runs here.
        if let Some(rev) = scheduled {
            if finished != Some(rev) {
                inner.compaction.schedule(rev);
            }
        }
        drop(writer);
        // Freed after the locks: dropping a big index takes a while.
        drop(old_index);
        drop(old_leases);
        inner.backend.check_writable()?;
        Ok(outcome)
    }
}
