//! Watch events: history since a revision and live subscriptions.

mod common;

use std::time::Duration;

use common::open;
use rusd_mvcc::{DeleteRangeRequest, Error, EventKind, PutRequest};

#[test]
fn events_since_carries_prev_kv_and_stops_at_whole_revisions() {
    let s = open();
    s.set("a", "1"); // 2
    s.set("b", "1"); // 3
    s.set("a", "2"); // 4
    s.del("a", "c"); // 5: a and b
    let (events, next) = s.events_since(2, 100, true).unwrap();
    assert_eq!(next, 6);
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                String::from_utf8(e.kv.key.clone()).unwrap(),
                e.kv.mod_revision,
                e.prev_kv.as_ref().map(|p| p.mod_revision),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, "a".into(), 2, None),
            (EventKind::Put, "b".into(), 3, None),
            (EventKind::Put, "a".into(), 4, Some(2)),
            (EventKind::Delete, "a".into(), 5, Some(4)),
            (EventKind::Delete, "b".into(), 5, Some(3)),
        ]
    );
    assert!(events[0].is_create() && !events[2].is_create());
    assert_eq!(
        events[3].kv.version, 0,
        "a delete carries only key and revision"
    );
    assert!(events[3].kv.value.is_empty());
    let (events, next) = s.events_since(3, 2, false).unwrap();
    assert_eq!((events.len(), next), (2, 5));
    let (events, next) = s.events_since(5, 1, false).unwrap();
    assert_eq!((events.len(), next), (2, 6), "a revision is never split");
    let (events, next) = s.events_since(9, 10, false).unwrap();
    assert_eq!((events.len(), next), (0, 9), "a future start waits");
}

#[test]
fn watching_from_the_compact_revision_sees_a_delete_there() {
    // etcd 3.6 keeps a tombstone at exactly the compact revision (#18089, #19179).
    let s = open();
    s.set("k", "v"); // 2
    s.set("x", "v"); // 3
    s.del("k", ""); // 4
    s.set("x", "w"); // 5
    s.compact(4).unwrap().wait();
    assert!(matches!(
        s.events_since(3, 10, false),
        Err(Error::Compacted { .. })
    ));
    let (events, _) = s.events_since(4, 10, true).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].kind, events[0].kv.key.as_slice()),
        (EventKind::Delete, &b"k"[..])
    );
    assert!(
        events[0].prev_kv.is_none(),
        "the previous version is compacted"
    );
    assert_eq!(events[1].prev_kv.as_ref().unwrap().mod_revision, 3);
    // and the tombstone goes with the next compaction
    s.compact(5).unwrap().wait();
    let (events, _) = s.events_since(5, 10, false).unwrap();
    assert_eq!(events.len(), 1);
}

#[test]
fn subscriptions_get_every_revision_in_order_with_prev_kv() {
    let s = open();
    let sub = s.subscribe(64, true);
    s.set("a", "1");
    s.set("a", "2");
    s.store
        .delete_range(&DeleteRangeRequest::new("a", ""))
        .unwrap();
    let mut seen = Vec::new();
    while let Some(batch) = sub.recv_timeout(Duration::from_millis(200)) {
        for e in &batch.events {
            seen.push((
                batch.revision,
                e.kind,
                e.prev_kv.as_ref().map(|p| p.value.clone()),
            ));
        }
    }
    assert_eq!(
        seen,
        [
            (2, EventKind::Put, None),
            (3, EventKind::Put, Some(b"1".to_vec())),
            (4, EventKind::Delete, Some(b"2".to_vec())),
        ]
    );
    assert!(!sub.is_lagged());
}

#[test]
fn a_slow_subscriber_is_marked_lagged_and_never_blocks_writes() {
    let s = open();
    let sub = s.subscribe(2, false);
    for i in 0..10 {
        s.set("k", &i.to_string());
    }
    assert!(sub.is_lagged());
    assert_eq!(s.current_revision(), 11);
    // it catches up from history
    let (events, next) = s.events_since(2, 100, false).unwrap();
    assert_eq!((events.len(), next), (10, 12));
    drop(sub);
    s.store.put(&PutRequest::new("after", "drop")).unwrap();
}
