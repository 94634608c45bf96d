//! One watcher (what it watches, where it is) and a stream's set of them with etcd's id
//! allocation.

use std::collections::BTreeMap;

use prometheus::IntGauge;
use rusd_mvcc::{Event, EventKind, KeyRange};
use rusd_proto::etcdserverpb as pb;
use rusd_proto::mvccpb;

use super::hub::PrevKvInterest;
use crate::convert;

/// etcd's cancel reason for `key >= range_end`.
pub(crate) const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// etcd's cancel reason for a client-chosen id already in use on the stream.
pub(crate) const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's cancel reason for a negative start revision (etcd >= 3.6; 3.4 acts as if compacted).
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// What a create request asks for, validated and normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// First key (an empty key means `"\0"`).
    pub key: Vec<u8>,
    /// etcd's `range_end` convention: empty = one key, `"\0"` = every key `>= key`.
    pub range_end: Vec<u8>,
    /// Requested start revision (0 = after the current one).
    pub start_revision: i64,
    /// Drop put events.
    pub no_put: bool,
    /// Drop delete events.
    pub no_delete: bool,
    /// Send `prev_kv`.
    pub prev_kv: bool,
    /// Periodic progress notifications.
    pub progress_notify: bool,
    /// Split large responses.
    pub fragment: bool,
}

impl Spec {
    /// Normalizes a create request; `Err` is etcd's cancel reason.
    pub fn parse(c: &pb::WatchCreateRequest) -> Result<Self, &'static str> {
        let key = if c.key.is_empty() {
            vec![0]
        } else {
            c.key.clone()
        };
        if c.start_revision < 0 {
            return Err(COMPACTED);
        }
        let bounded = !c.range_end.is_empty() && c.range_end != [0];
        if bounded && key >= c.range_end {
            return Err(EMPTY_RANGE);
        }
        use pb::watch_create_request::FilterType;
        let has = |f: FilterType| c.filters.contains(&(f as i32));
        Ok(Self {
            key,
            range_end: c.range_end.clone(),
            start_revision: c.start_revision,
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
            fragment: c.fragment,
        })
    }

    /// Whether the watcher wants `ev`.
    pub fn wants(&self, ev: &Event) -> bool {
        let kind_ok = match ev.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        };
        kind_ok && KeyRange::new(&self.key, &self.range_end).contains(&ev.kv.key)
    }
}

/// Counts a watcher in `etcd_debugging_mvcc_watcher_total` while alive.
pub(crate) struct Counted(IntGauge);

impl Counted {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One watcher on a stream.
pub(crate) struct Watcher {
    /// Its id on the stream.
    pub id: i64,
    /// What it watches.
    pub spec: Spec,
    /// The next revision it must deliver: everything below was delivered (or filtered).
    pub next_rev: i64,
    /// The highest revision the client may believe it has everything up to (the created
    /// header for a watch from "now", else its last event); progress never goes below it.
    pub floor: i64,
    /// No events sent since the last progress tick.
    pub quiet: bool,
    _prev: Option<PrevKvInterest>,
    counted: Counted,
}

impl Watcher {
    pub fn new(
        id: i64,
        spec: Spec,
        next_rev: i64,
        prev: Option<PrevKvInterest>,
        counted: Counted,
    ) -> Self {
        Self {
            id,
            spec,
            next_rev,
            floor: 0,
            quiet: true,
            _prev: prev,
            counted,
        }
    }

    /// The watcher's events among `events`, as protobuf.
    pub fn select<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> Vec<mvccpb::Event> {
        events
            .into_iter()
            .filter(|ev| self.spec.wants(ev))
            .map(|ev| convert::event_to_pb(ev, self.spec.prev_kv))
            .collect()
    }

    /// Whether everything up to `delivered` (what the stream has taken from the live feed) has
    /// reached this watcher, so that everything after will come from the live feed.
    pub fn synced(&self, delivered: i64) -> bool {
        self.next_rev > delivered
    }
}

/// A stream's watchers by id.
///
/// A watcher that compaction canceled stays *compacted* here (as in etcd, whose watch stream
/// keeps it until the client cancels it): it receives nothing and holds no buffer, only its id
/// (a create with that id is a duplicate, automatic ids skip it) and its place in
/// `etcd_debugging_mvcc_watcher_total`, until [`WatcherSet::remove`] or the stream ends.
#[derive(Default)]
pub(crate) struct WatcherSet {
    map: BTreeMap<i64, Watcher>,
    compacted: BTreeMap<i64, Counted>,
    next_id: i64,
}

impl WatcherSet {
    fn taken(&self, id: i64) -> bool {
        self.map.contains_key(&id) || self.compacted.contains_key(&id)
    }

    /// The id for a new watcher: `requested` unless it is 0 (server-chosen: the next free one
    /// counting up from the last), `None` if `requested` is taken (by a live or a compacted
    /// watcher). Reserves nothing.
    pub fn allocate(&mut self, requested: i64) -> Option<i64> {
        if requested != 0 {
            return (!self.taken(requested)).then_some(requested);
        }
        while self.taken(self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some(id)
    }

    pub fn insert(&mut self, w: Watcher) {
        self.map.insert(w.id, w);
    }

    /// Cancels watcher `id`, live or compacted; whether there was one.
    pub fn remove(&mut self, id: i64) -> bool {
        self.map.remove(&id).is_some() || self.compacted.remove(&id).is_some()
    }

    /// Compaction canceled watcher `id`: it leaves the live watchers (no more events, and its
    /// `prev_kv` interest ends) but keeps its id until [`WatcherSet::remove`].
    pub fn compact(&mut self, id: i64) {
        if let Some(w) = self.map.remove(&id) {
            self.compacted.insert(id, w.counted);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Watcher> {
        self.map.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Watcher> {
        self.map.values_mut()
    }

    /// Whether every watcher is synced at `delivered`.
    pub fn all_synced(&self, delivered: i64) -> bool {
        self.iter().all(|w| w.synced(delivered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusd_mvcc::KeyValue;

    fn create(key: &[u8], end: &[u8]) -> pb::WatchCreateRequest {
        pb::WatchCreateRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        }
    }

    fn event(kind: EventKind, key: &[u8]) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: key.to_vec(),
                ..KeyValue::default()
            },
            prev_kv: None,
        }
    }

    #[test]
    fn ids_count_up_and_skip_taken_ones() {
        let mut set = WatcherSet::default();
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let add = |set: &mut WatcherSet, requested: i64| {
            let id = set.allocate(requested)?;
            let spec = Spec::parse(&create(b"k", b"")).expect("spec");
            set.insert(Watcher::new(id, spec, 1, None, Counted::new(gauge.clone())));
            Some(id)
        };
        assert_eq!(add(&mut set, 0), Some(0));
        assert_eq!(add(&mut set, 2), Some(2));
        assert_eq!(add(&mut set, 2), None, "duplicate");
        assert_eq!(add(&mut set, 0), Some(1));
        assert_eq!(add(&mut set, 0), Some(3), "2 is taken");
        assert_eq!(gauge.get(), 4);
        set.remove(0);
        assert_eq!(gauge.get(), 3);
        // etcd does not reuse freed ids while counting up.
        assert_eq!(add(&mut set, 0), Some(4));
        assert_eq!(add(&mut set, -7), Some(-7));
        drop(set);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn compacted_watchers_keep_their_ids_until_removed() {
        let mut set = WatcherSet::default();
        let gauge = IntGauge::new("g", "g").expect("gauge");
        let spec = Spec::parse(&create(b"k", b"")).expect("spec");
        for id in [0, 1] {
            let counted = Counted::new(gauge.clone());
            set.insert(Watcher::new(id, spec.clone(), 1, None, counted));
        }
        set.next_id = 1;
        set.compact(1);
        assert_eq!(set.iter().map(|w| w.id).collect::<Vec<_>>(), vec![0]);
        assert_eq!(gauge.get(), 2, "etcd counts it until canceled");
        assert_eq!(set.allocate(1), None, "duplicate");
        assert_eq!(set.allocate(0), Some(2), "automatic ids skip it");
        assert!(set.remove(1));
        assert!(!set.remove(1));
        assert_eq!(gauge.get(), 1);
        assert_eq!(set.allocate(1), Some(1));
    }

    #[test]
    fn ranges_and_filters() {
        assert_eq!(Spec::parse(&create(b"b", b"a")), Err(EMPTY_RANGE));
        assert_eq!(Spec::parse(&create(b"a", b"a")), Err(EMPTY_RANGE));
        let negative = pb::WatchCreateRequest {
            start_revision: -1,
            ..create(b"a", b"")
        };
        assert_eq!(Spec::parse(&negative), Err(COMPACTED));

        let all = Spec::parse(&create(b"", b"\0")).expect("all keys");
        assert_eq!(all.key, b"\0");
        assert!(all.wants(&event(EventKind::Put, b"\0")));
        assert!(all.wants(&event(EventKind::Put, b"zzz")));

        let one = Spec::parse(&create(b"k", b"")).expect("one key");
        assert!(one.wants(&event(EventKind::Delete, b"k")));
        assert!(!one.wants(&event(EventKind::Put, b"k1")));

        let prefix = Spec::parse(&pb::WatchCreateRequest {
            filters: vec![1],
            ..create(b"p/", b"p0")
        })
        .expect("prefix");
        assert!(prefix.wants(&event(EventKind::Put, b"p/x")));
        assert!(!prefix.wants(&event(EventKind::Delete, b"p/x")), "NODELETE");
        assert!(!prefix.wants(&event(EventKind::Put, b"p0")));
        assert!(!prefix.wants(&event(EventKind::Put, b"o")));
    }
}
