//! check_watch.

use super::{assert_ok, del, kind_of, put, unknown};
use crate::{check_watch, Input, Operation, ViolationKind, WatchEvent, WatchStream};

/// a=1@2, b=1@3, a=2@4, (unknown put c=1 took 5), delete a@6.
fn history() -> Vec<Operation> {
    vec![
        put(1, 0, 10, "p/a", "1", 2),
        put(1, 20, 30, "p/b", "1", 3),
        put(1, 40, 50, "p/a", "2", 4),
        unknown(2, 60, Input::put("p/c", "1")),
        del(1, 70, 80, "p/a", 1, 6),
    ]
}

fn events() -> Vec<WatchEvent> {
    vec![
        WatchEvent::put("p/a", "1", 2, 2, 1),
        WatchEvent::put("p/b", "1", 3, 3, 1),
        WatchEvent::put("p/a", "2", 4, 2, 2),
        WatchEvent::put("p/c", "1", 5, 5, 1),
        WatchEvent::delete("p/a", 6),
    ]
}

fn stream(prefix: &str, start_revision: i64, events: Vec<WatchEvent>) -> WatchStream {
    WatchStream {
        prefix: prefix.into(),
        start_revision,
        events,
    }
}

#[test]
fn consistent_streams_pass() {
    let all = events();
    let only_a: Vec<WatchEvent> = all.iter().filter(|e| e.key == b"p/a").cloned().collect();
    let streams = [
        stream("p/", 2, all.clone()),
        // Started later, cut short (the watcher was killed after revision 4).
        stream("p/", 3, all.get(1..3).unwrap_or_default().to_vec()),
        // Started "now" (0): covers from its first event.
        stream("p/", 0, all.get(3..).unwrap_or_default().to_vec()),
        stream("p/a", 1, only_a),
        stream("q/", 1, Vec::new()),
    ];
    assert_ok(check_watch(&streams, &history()));
}

#[test]
fn gap_is_detected() {
    let mut e = events();
    e.remove(2);
    let err = check_watch(&[stream("p/", 2, e)], &history()).unwrap_err();
    assert_eq!(
        err.violation().map(|v| v.kind),
        Some(ViolationKind::WatchGap),
        "{err}"
    );
    assert!(err.to_string().contains("misses revision 4"), "{err}");
    // A gap at the start of the covered range, and a gap only another stream reveals (the
    // unknown write at 5).
    let e = events();
    assert_eq!(
        kind_of(check_watch(
            &[stream("p/", 1, e.get(1..).unwrap_or_default().to_vec())],
            &history()
        )),
        ViolationKind::WatchGap
    );
    let mut missing_c = e.clone();
    missing_c.remove(3);
    let streams = [stream("p/", 2, e), stream("p/", 2, missing_c)];
    assert_eq!(
        kind_of(check_watch(&streams, &history())),
        ViolationKind::WatchGap
    );
}

#[test]
fn going_back_in_time_or_repeating_is_detected() {
    let mut e = events();
    e.swap(1, 2);
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 2, e)], &history())),
        ViolationKind::WatchOrder
    );
    let mut e = events();
    let again = e.get(1).cloned();
    e.insert(2, again.unwrap_or_else(|| WatchEvent::delete("x", 0)));
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 2, e)], &history())),
        ViolationKind::WatchOrder
    );
}

#[test]
fn disagreeing_streams_are_detected() {
    // Both streams see the unknown write at 5, with different values: neither contradicts an
    // acknowledged write, but they contradict each other.
    let h = {
        let mut h = history();
        h.push(unknown(3, 60, Input::put("p/c", "other")));
        h
    };
    let mut e2 = events();
    if let Some(e) = e2.get_mut(3) {
        e.value = b"other".to_vec();
    }
    let err = check_watch(&[stream("p/", 2, events()), stream("p/", 2, e2)], &h).unwrap_err();
    assert_eq!(
        err.violation().map(|v| v.kind),
        Some(ViolationKind::WatchDisagreement),
        "{err}"
    );
}

#[test]
fn event_contradicting_an_acknowledged_write_is_detected() {
    let mut e = events();
    if let Some(e) = e.get_mut(2) {
        e.value = b"wrong".to_vec();
    }
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 2, e)], &history())),
        ViolationKind::WatchMismatch
    );
    // Right revision, wrong key.
    let mut e = events();
    if let Some(e) = e.get_mut(1) {
        e.key = b"p/z".to_vec();
    }
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 2, e)], &history())),
        ViolationKind::WatchMismatch
    );
}

#[test]
fn phantom_event_is_detected() {
    let mut e = events();
    if let Some(e) = e.get_mut(3) {
        e.value = b"never".to_vec();
    }
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 2, e)], &history())),
        ViolationKind::PhantomWrite
    );
}

#[test]
fn invalid_events_are_detected() {
    // Outside the prefix.
    assert_eq!(
        kind_of(check_watch(&[stream("p/b", 2, events())], &history())),
        ViolationKind::WatchInvalidEvent
    );
    // Before the start revision.
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 3, events())], &history())),
        ViolationKind::WatchInvalidEvent
    );
    // Version not counting up.
    let mut e = events();
    if let Some(e) = e.get_mut(2) {
        e.version = 1;
        e.create_revision = 4;
    }
    assert_eq!(
        kind_of(check_watch(&[stream("p/", 2, e)], &history())),
        ViolationKind::WatchInvalidEvent
    );
}

#[test]
fn order_within_a_revision_must_agree() {
    // One revision changing two keys outside the history (a multi-key txn).
    let x = WatchEvent::put("t/x", "1", 10, 10, 1);
    let y = WatchEvent::put("t/y", "1", 10, 10, 1);
    let same = [
        stream("t/", 10, vec![x.clone(), y.clone()]),
        stream("t/", 10, vec![x.clone(), y.clone()]),
    ];
    assert_ok(check_watch(&same, &[]));
    let swapped = [
        stream("t/", 10, vec![x.clone(), y.clone()]),
        stream("t/", 10, vec![y, x]),
    ];
    assert_eq!(
        kind_of(check_watch(&swapped, &[])),
        ViolationKind::WatchDisagreement
    );
}
