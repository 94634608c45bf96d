//! Events for watchers: history since a revision, and live notification of new ones.

use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use super::{InstallOutcome, MvccStore, StoreInner};
use crate::backend::Table;
use crate::codec::{self, Record};
use crate::error::{Error, Result};
use crate::kv::{Event, EventKind, KeyValue};
use crate::revision::Revision;

/// The events of one revision, in sub-revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    /// The revision all these events happened at.
    pub revision: i64,
    /// The events.
    pub events: Vec<Event>,
}

type Callback = Box<dyn Fn(&Arc<EventBatch>) + Send + Sync>;
type RestoreCallback = Box<dyn Fn(&InstallOutcome) + Send + Sync>;

struct Observer {
    id: u64,
    want_prev: bool,
    callback: Callback,
}

/// Everyone told of new revisions, called by the writer after each publish, in revision
/// order. Callbacks must not block and must not call back into the store's write path.
#[derive(Default)]
pub(crate) struct Observers {
    list: RwLock<Vec<Observer>>,
    next_id: AtomicU64,
    /// Told when `install_snapshot` replaced the history; ids shared with `list`.
    restore: RwLock<Vec<(u64, RestoreCallback)>>,
}

impl Observers {
    /// (anyone observing, anyone wanting prev_kv)
    pub(crate) fn interest(&self) -> (bool, bool) {
        let list = self.list.read();
        (!list.is_empty(), list.iter().any(|o| o.want_prev))
    }

    pub(crate) fn publish(&self, batch: &Arc<EventBatch>) {
        for o in self.list.read().iter() {
            (o.callback)(batch);
        }
    }

    fn add(&self, want_prev: bool, callback: Callback) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.list.write().push(Observer {
            id,
            want_prev,
            callback,
        });
        id
    }

    fn remove(&self, id: u64) {
        self.list.write().retain(|o| o.id != id);
        self.restore.write().retain(|(i, _)| *i != id);
    }

    /// Registers a restore callback under `id`, or under a new id if `None`.
    fn add_restore(&self, id: Option<u64>, callback: RestoreCallback) -> u64 {
        let id = id.unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed));
        self.restore.write().push((id, callback));
        id
    }

    /// Called by `install_snapshot` after the swap, with the writer lock held.
    pub(crate) fn restored(&self, outcome: &InstallOutcome) {
        for (_, callback) in self.restore.read().iter() {
            callback(outcome);
        }
    }
}

/// Live events through a bounded channel. If the reader falls `capacity` batches behind, the
/// subscription is marked lagged and stops receiving; catch up with
/// [`MvccStore::events_since`] and subscribe again. An [`MvccStore::install_snapshot`] marks
/// it lagged too: the history it was following was replaced.
pub struct Subscription {
    rx: Receiver<Arc<EventBatch>>,
    lagged: Arc<AtomicBool>,
    store: Weak<StoreInner>,
    id: u64,
}

impl Subscription {
    /// The next batch, waiting at most `timeout`; `None` on timeout or when lagged.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Arc<EventBatch>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next batch if one is waiting.
    pub fn try_recv(&self) -> Option<Arc<EventBatch>> {
        self.rx.try_recv().ok()
    }

    /// Whether batches were dropped because the channel was full, or the history was
    /// replaced by a snapshot install.
    pub fn is_lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(inner) = self.store.upgrade() {
            inner.observers.remove(self.id);
        }
    }
}

impl MvccStore {
    /// Calls `callback` with every new revision's events, in order, from the writer's thread.
    /// Returns an id for [`MvccStore::unobserve`]. With `want_prev`, events carry `prev_kv`.
    pub fn observe(
        &self,
        want_prev: bool,
        callback: impl Fn(&Arc<EventBatch>) + Send + Sync + 'static,
    ) -> u64 {
        self.inner.observers.add(want_prev, Box::new(callback))
    }

    /// Stops an observer (of either kind).
    pub fn unobserve(&self, id: u64) {
        self.inner.observers.remove(id);
    }

    /// Calls `callback` each time [`MvccStore::install_snapshot`] replaced the store's history,
    /// with what was installed. Returns an id for [`MvccStore::unobserve`].
    ///
    /// Contract, for a watch layer fed by [`MvccStore::observe`]:
    ///
    /// * The callback runs on the installing thread, with the store's writer lock held (it
    ///   must not write, block, or add or remove observers), after the new state is visible to
    ///   every read and before any write on it.
    /// * Every batch of the old history was delivered to the `observe` callbacks before it;
    ///   every batch after it belongs to the new history and starts at revision
    ///   `outcome.revision + 1`.
    /// * The new history may differ from the old at any revision, so a watcher waiting for
    ///   revision `next` re-syncs from the new one: with `next < outcome.compact_revision` it is
    ///   compacted (tell it so); otherwise [`MvccStore::events_since`]`(next, ..)` returns what
    ///   it has not seen, nothing if `next > outcome.revision` (it then waits for `next`, as
    ///   etcd's watchers do after a restore). Revisions it has seen are not sent again.
    pub fn observe_restore(
        &self,
        callback: impl Fn(&InstallOutcome) + Send + Sync + 'static,
    ) -> u64 {
        self.inner.observers.add_restore(None, Box::new(callback))
    }

    /// Subscribes to new revisions through a channel of `capacity` batches.
    pub fn subscribe(&self, capacity: usize, want_prev: bool) -> Subscription {
        let (tx, rx): (SyncSender<Arc<EventBatch>>, _) = mpsc::sync_channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let flag = lagged.clone();
        let id = self.observe(want_prev, move |batch| {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            if let Err(TrySendError::Full(_)) = tx.try_send(batch.clone()) {
                flag.store(true, Ordering::Release);
            }
        });
        // Registered under the same id, so that dropping the subscription removes both.
        let flag = lagged.clone();
        self.inner.observers.add_restore(
            Some(id),
            Box::new(move |_| flag.store(true, Ordering::Release)),
        );
        Subscription {
            rx,
            lagged,
            store: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// Events of revisions `from..=current`, at most `max_revisions` whole revisions of them,
    /// and the revision to continue from. With `prev_kv`, each event carries the key's previous
    /// state unless that was compacted.
    ///
    /// # Errors
    /// [`Error::Compacted`] if `from` is below the compact revision.
    pub fn events_since(
        &self,
        from: i64,
        max_revisions: usize,
        prev_kv: bool,
    ) -> Result<(Vec<Event>, i64)> {
        let from = from.max(1);
        let current = self.current_revision();
        if from > current {
            return Ok((Vec::new(), from));
        }
        let view = self.inner.view(from)?;
        let compact = self.compact_revision();
        let start = Revision::new(from, 0).to_bytes();
        let end = Revision::new(view.current + 1, 0).to_bytes();
        let mut events = Vec::new();
        let mut revisions = 0usize;
        let mut last_main = 0i64;
        let mut next = view.current + 1;
        let mut failure: Option<Error> = None;
        view.tx.scan(
            Table::Kv,
            (Bound::Included(&start[..]), Bound::Excluded(&end[..])),
            false,
            |k, v| {
                let Some(rev) = Revision::from_bytes(k) else {
                    failure = Some(Error::Corrupted(format!("kv table key {k:?}")));
                    return ControlFlow::Break(());
                };
                if rev.main != last_main {
                    if revisions == max_revisions {
                        next = rev.main;
                        return ControlFlow::Break(());
                    }
                    revisions += 1;
                    last_main = rev.main;
                }
                match codec::decode(v, rev.main, true) {
                    Ok(Record::Put(kv)) => events.push(Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: None,
                    }),
                    Ok(Record::Tombstone(key)) => events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key,
                            mod_revision: rev.main,
                            ..KeyValue::default()
                        },
                        prev_kv: None,
                    }),
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        if prev_kv {
            for ev in &mut events {
                let before = ev.kv.mod_revision - 1;
                if ev.is_create() || before < compact.max(1) {
                    continue;
                }
                let at = self.inner.index.read().get(&ev.kv.key, before);
                if let Some(at) = at {
                    ev.prev_kv = Some(view.kv_at(at.modified, true)?);
                }
            }
        }
        Ok((events, next))
    }
}
