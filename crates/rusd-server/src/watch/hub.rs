//! [`WatchHub`]: one engine observer feeding a broadcast channel that every watch stream reads.
//!
//! The observer runs on the engine's writer thread, after each publish, in revision order; it
//! only clones an `Arc` into a bounded [`tokio::sync::broadcast`] channel, so it never blocks the
//! writer. A stream that falls more than [`LIVE_CAPACITY`] batches behind sees
//! `RecvError::Lagged` and catches up from history instead.
//!
//! `prev_kv` costs the engine one read per changed key, so the observer asks for it only while
//! some watcher wants it. Switching re-registers the observer; because a write that began before
//! the switch may still publish batches without `prev_kv`, every batch carries `has_prev`, and a
//! watcher that wants `prev_kv` takes such a batch from history instead.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rusd_mvcc::{EventBatch, MvccStore};
use tokio::sync::broadcast;

/// How many revisions the broadcast channel holds for a slow stream before it lags.
pub(crate) const LIVE_CAPACITY: usize = 1024;

/// One revision's events as the streams receive them.
#[derive(Clone, Debug)]
pub(crate) struct Live {
    /// The events.
    pub batch: Arc<EventBatch>,
    /// Whether the events carry `prev_kv` (the write began while someone wanted it).
    pub has_prev: bool,
    /// Not events: a snapshot replaced the store's history up to `batch.revision` (a follower
    /// catching up). Streams deliver nothing for it; their watchers below it re-sync from the
    /// new history.
    pub restored: bool,
}

/// What the observer callback shares with the hub (never the store: no reference cycle).
struct Feed {
    tx: broadcast::Sender<Live>,
    /// The last revision sent: while the observer is being replaced two are registered for a
    /// moment, and both see the same batch.
    last_sent: AtomicI64,
    /// Batches from this revision on carry `prev_kv`; `i64::MAX` while nobody wants it.
    prev_since: AtomicI64,
}

impl Feed {
    fn push(&self, batch: &Arc<EventBatch>) {
        // Callbacks run one at a time on the writer thread, so load-then-store is not racy.
        if batch.revision <= self.last_sent.load(Ordering::Acquire) {
            return;
        }
        self.last_sent.store(batch.revision, Ordering::Release);
        let has_prev = batch.revision >= self.prev_since.load(Ordering::Acquire);
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Live {
            batch: batch.clone(),
            has_prev,
            restored: false,
        });
    }

    /// The store's history was replaced up to `revision`: later batches start above it.
    fn restored(&self, revision: i64) {
        self.last_sent.store(revision, Ordering::Release);
        let _ = self.tx.send(Live {
            batch: Arc::new(EventBatch {
                revision,
                events: Vec::new(),
            }),
            has_prev: false,
            restored: true,
        });
    }
}

struct Registration {
    observer: u64,
    prev_watchers: usize,
}

struct HubInner {
    store: MvccStore,
    feed: Arc<Feed>,
    reg: Mutex<Registration>,
    restore_observer: u64,
}

impl Drop for HubInner {
    fn drop(&mut self) {
        self.store.unobserve(self.reg.lock().observer);
        self.store.unobserve(self.restore_observer);
    }
}

/// Fans the engine's events out to every watch stream (see the [module docs](super)).
#[derive(Clone)]
pub struct WatchHub {
    inner: Arc<HubInner>,
}

impl WatchHub {
    /// A hub over `store`'s events; registers the engine observer.
    pub fn new(store: MvccStore) -> Self {
        let (tx, _) = broadcast::channel(LIVE_CAPACITY);
        let feed = Arc::new(Feed {
            tx,
            last_sent: AtomicI64::new(0),
            prev_since: AtomicI64::new(i64::MAX),
        });
        let observer = register(&store, &feed, false);
        let restore_feed = feed.clone();
        let restore_observer =
            store.observe_restore(move |outcome| restore_feed.restored(outcome.revision));
        Self {
            inner: Arc::new(HubInner {
                store,
                feed,
                reg: Mutex::new(Registration {
                    observer,
                    prev_watchers: 0,
                }),
                restore_observer,
            }),
        }
    }

    /// The store the hub observes.
    pub fn store(&self) -> &MvccStore {
        &self.inner.store
    }

    /// Whether the engine is currently asked for `prev_kv`.
    pub fn wants_prev_kv(&self) -> bool {
        self.inner.reg.lock().prev_watchers > 0
    }

    /// A receiver of live batches, and a revision `r` such that every batch above `r` will
    /// arrive through it (batches at or below `r` may arrive too).
    pub(crate) fn subscribe(&self) -> (broadcast::Receiver<Live>, i64) {
        let rx = self.inner.feed.tx.subscribe();
        // Read after subscribing: a batch above this revision is published after it was set,
        // so after the subscription.
        (rx, self.inner.store.current_revision())
    }

    /// Registers interest in `prev_kv` until the returned value is dropped.
    pub(crate) fn want_prev_kv(&self) -> PrevKvInterest {
        let inner = &self.inner;
        let mut reg = inner.reg.lock();
        reg.prev_watchers += 1;
        if reg.prev_watchers == 1 {
            let new = register(&inner.store, &inner.feed, true);
            inner.store.unobserve(reg.observer);
            reg.observer = new;
            // A write that began before `register` may still commit as `current + 1` without
            // prev_kv; every later one began after and has it.
            let since = inner.store.current_revision().saturating_add(2);
            inner.feed.prev_since.store(since, Ordering::Release);
        }
        PrevKvInterest {
            inner: inner.clone(),
        }
    }
}

fn register(store: &MvccStore, feed: &Arc<Feed>, want_prev: bool) -> u64 {
    let feed = feed.clone();
    store.observe(want_prev, move |batch| feed.push(batch))
}

/// Keeps the engine producing `prev_kv` while alive.
pub(crate) struct PrevKvInterest {
    inner: Arc<HubInner>,
}

impl Drop for PrevKvInterest {
    fn drop(&mut self) {
        let inner = &self.inner;
        let mut reg = inner.reg.lock();
        reg.prev_watchers = reg.prev_watchers.saturating_sub(1);
        if reg.prev_watchers == 0 {
            inner.feed.prev_since.store(i64::MAX, Ordering::Release);
            let new = register(&inner.store, &inner.feed, false);
            inner.store.unobserve(reg.observer);
            reg.observer = new;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusd_mvcc::{PutRequest, StoreConfig};

    fn put(store: &MvccStore, key: &str) -> i64 {
        store
            .put(&PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .expect("put")
            .revision
    }

    #[tokio::test]
    async fn batches_once_each_with_prev_only_when_wanted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).expect("open");
        let hub = WatchHub::new(store.clone());
        let (mut rx, from) = hub.subscribe();
        assert_eq!(from, store.current_revision());
        put(&store, "a");
        let live = rx.recv().await.expect("batch");
        assert!(!live.has_prev);
        assert!(live.batch.events[0].prev_kv.is_none());

        let interest = hub.want_prev_kv();
        assert!(hub.wants_prev_kv());
        // Several switches in a row never duplicate or lose a batch.
        let again = hub.want_prev_kv();
        drop(again);
        put(&store, "a"); // may be the "in flight" revision: has_prev not promised
        let rev = put(&store, "a");
        let first = rx.recv().await.expect("batch");
        let second = rx.recv().await.expect("batch");
        assert_eq!(second.batch.revision, rev);
        assert_eq!(first.batch.revision, rev - 1);
        assert!(second.has_prev);
        assert_eq!(
            second.batch.events[0]
                .prev_kv
                .as_ref()
                .map(|kv| kv.mod_revision),
            Some(rev - 1)
        );

        drop(interest);
        assert!(!hub.wants_prev_kv());
        let rev = put(&store, "a");
        let live = rx.recv().await.expect("batch");
        assert_eq!(live.batch.revision, rev);
        assert!(!live.has_prev);
        assert!(rx.try_recv().is_err());
    }
}
