//! Events for watchers: history since a revision, and live notification of new ones.

use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;

use super::{MvccStore, StoreInner};
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
    }
}

/// Live events through a bounded channel. If the reader falls `capacity` batches behind, the
/// subscription is marked lagged and stops receiving; catch up with
/// [`MvccStore::events_since`] and subscribe again.
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

    /// Whether batches were dropped because the channel was full.
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

    /// Stops an observer.
    pub fn unobserve(&self, id: u64) {
        self.inner.observers.remove(id);
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
