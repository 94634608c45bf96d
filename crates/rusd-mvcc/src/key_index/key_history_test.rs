//! Unit tests for [`KeyHistory`], starting with the worked example of its rustdoc.

use super::{IndexError, KeyAt, KeyHistory};
use crate::revision::Revision;

fn rev(main: i64) -> Revision {
    Revision::new(main, 0)
}

fn revs(mains: &[i64]) -> Vec<Revision> {
    mains.iter().map(|&m| rev(m)).collect()
}

/// The generations as `(ver, created main, revision mains)`, oldest first.
fn shape(h: &KeyHistory) -> Vec<(i64, i64, Vec<i64>)> {
    h.generations()
        .iter()
        .map(|g| {
            let mains = g.revs().iter().map(|r| r.main).collect();
            (g.ver(), g.created().main, mains)
        })
        .collect()
}

fn at(modified: i64, created: i64, version: i64) -> Option<KeyAt> {
    Some(KeyAt {
        modified: rev(modified),
        created: rev(created),
        version,
    })
}

/// put(1); put(2); tombstone(3); put(4); tombstone(5) on `foo`.
fn example() -> KeyHistory {
    let mut h = KeyHistory::new(b"foo");
    h.put(rev(1));
    h.put(rev(2));
    h.tombstone(rev(3)).expect("foo is live");
    h.put(rev(4));
    h.tombstone(rev(5)).expect("foo is live");
    h
}

#[test]
fn example_history() {
    let h = example();
    assert_eq!(h.key(), b"foo");
    assert_eq!(
        shape(&h),
        [(3, 1, vec![1, 2, 3]), (2, 4, vec![4, 5]), (0, 0, vec![])]
    );
    assert!(!h.is_live());
    assert!(!h.is_empty());
    assert_eq!(h.revision_count(), 5);
    assert_eq!(h.last_revision(), Some(rev(5)));
    assert_eq!(h.latest(), None);
}

#[test]
fn example_compact_2() {
    let mut h = example();
    let mut dropped = Vec::new();
    h.compact(2, &mut dropped);
    assert_eq!(
        shape(&h),
        [(3, 1, vec![2, 3]), (2, 4, vec![4, 5]), (0, 0, vec![])]
    );
    assert_eq!(dropped, revs(&[1]));
    // Version and creation survive the loss of put(1).
    assert_eq!(h.get(2), at(2, 1, 2));
}

#[test]
fn example_compact_4() {
    let mut h = example();
    let mut dropped = Vec::new();
    h.compact(2, &mut dropped);
    dropped.clear();
    h.compact(4, &mut dropped);
    assert_eq!(shape(&h), [(2, 4, vec![4, 5]), (0, 0, vec![])]);
    assert_eq!(dropped, revs(&[2, 3]));
    assert_eq!(h.get(4), at(4, 4, 1));
}

#[test]
fn example_compact_5_keeps_tombstone_at_compact_revision() {
    let mut h = example();
    let mut dropped = Vec::new();
    h.compact(2, &mut dropped);
    h.compact(4, &mut dropped);
    dropped.clear();
    h.compact(5, &mut dropped);
    assert_eq!(shape(&h), [(2, 4, vec![5]), (0, 0, vec![])]);
    assert_eq!(dropped, revs(&[4]));
    assert!(!h.is_empty());
    assert_eq!(h.get(5), None);
    assert_eq!(h.since(5).collect::<Vec<_>>(), revs(&[5]));
}

#[test]
fn example_compact_6_empties_the_history() {
    let mut h = example();
    let mut dropped = Vec::new();
    for c in [2, 4, 5] {
        h.compact(c, &mut dropped);
    }
    dropped.clear();
    h.compact(6, &mut dropped);
    assert_eq!(shape(&h), [(0, 0, vec![])]);
    assert_eq!(dropped, revs(&[5]));
    assert!(h.is_empty());
}

#[test]
fn example_compactions_from_scratch() {
    // (compact revision, generations left, dropped) each applied to a fresh example.
    type Case = (i64, Vec<Vec<i64>>, Vec<i64>);
    let cases: Vec<Case> = vec![
        (0, vec![vec![1, 2, 3], vec![4, 5], vec![]], vec![]),
        (1, vec![vec![1, 2, 3], vec![4, 5], vec![]], vec![]),
        (3, vec![vec![3], vec![4, 5], vec![]], vec![1, 2]),
        (4, vec![vec![4, 5], vec![]], vec![1, 2, 3]),
        (5, vec![vec![5], vec![]], vec![1, 2, 3, 4]),
        (6, vec![vec![]], vec![1, 2, 3, 4, 5]),
        (100, vec![vec![]], vec![1, 2, 3, 4, 5]),
    ];
    for (c, gens, want_dropped) in cases {
        let mut h = example();
        let mut dropped = Vec::new();
        h.compact(c, &mut dropped);
        let got: Vec<Vec<i64>> = shape(&h).into_iter().map(|(_, _, m)| m).collect();
        assert_eq!(got, gens, "compact({c})");
        assert_eq!(dropped, revs(&want_dropped), "compact({c})");
    }
}

#[test]
fn get_at_every_revision() {
    let h = example();
    let want = [
        (0, None),
        (1, at(1, 1, 1)),
        (2, at(2, 1, 2)),
        (3, None),
        (4, at(4, 4, 1)),
        (5, None),
        (6, None),
    ];
    for (r, w) in want {
        assert_eq!(h.get(r), w, "get({r})");
    }

    // A live key: a third life with several puts.
    let mut h = example();
    h.put(rev(8));
    h.put(Revision::new(9, 2));
    h.put(rev(12));
    assert_eq!(h.get(7), None);
    assert_eq!(h.get(8), at(8, 8, 1));
    assert_eq!(
        h.get(10),
        Some(KeyAt {
            modified: Revision::new(9, 2),
            created: rev(8),
            version: 2
        })
    );
    assert_eq!(h.get(12), at(12, 8, 3));
    assert_eq!(h.get(i64::MAX), at(12, 8, 3));
    assert_eq!(h.latest(), at(12, 8, 3));
    assert!(h.is_live());
}

#[test]
fn tombstone_needs_a_live_key() {
    let mut h = KeyHistory::new(b"k");
    assert_eq!(h.tombstone(rev(1)), Err(IndexError::NotLive));
    h.put(rev(2));
    assert_eq!(h.tombstone(rev(3)), Ok(()));
    assert_eq!(h.tombstone(rev(4)), Err(IndexError::NotLive));
    assert_eq!(shape(&h), [(2, 2, vec![2, 3]), (0, 0, vec![])]);
}

#[test]
#[should_panic(expected = "is not after its last revision")]
fn put_must_move_forward() {
    let mut h = KeyHistory::new(b"k");
    h.put(rev(5));
    h.put(rev(5));
}

#[test]
fn compaction_keeps_live_newest_and_later() {
    let mut h = KeyHistory::new(b"k");
    for m in [2, 4, 6, 8] {
        h.put(rev(m));
    }
    let mut dropped = Vec::new();
    h.compact(5, &mut dropped);
    assert_eq!(shape(&h), [(4, 2, vec![4, 6, 8])]);
    assert_eq!(dropped, revs(&[2]));
    assert_eq!(h.get(5), at(4, 2, 2));
    // Compacting below every revision changes nothing.
    dropped.clear();
    h.compact(1, &mut dropped);
    assert!(dropped.is_empty());
    // A long history shrinks back.
    for m in 9..200 {
        h.put(rev(m));
    }
    h.compact(199, &mut dropped);
    assert_eq!(h.revision_count(), 1);
    assert_eq!(h.heap_bytes(), super::alloc_bytes(1));
    assert_eq!(h.latest(), at(199, 2, 195));
}

#[test]
fn since_and_keep() {
    let mut h = example();
    h.put(rev(7));
    let since = |m| h.since(m).map(|r| r.main).collect::<Vec<_>>();
    assert_eq!(since(0), [1, 2, 3, 4, 5, 7]);
    assert_eq!(since(4), [4, 5, 7]);
    assert_eq!(since(6), [7]);
    assert_eq!(since(8), Vec::<i64>::new());
    // keep: the value at the revision, never a tombstone.
    assert_eq!(h.keep(2), Some(rev(2)));
    assert_eq!(h.keep(3), None);
    assert_eq!(h.keep(4), Some(rev(4)));
    assert_eq!(h.keep(5), None);
    assert_eq!(h.keep(6), None);
    assert_eq!(h.keep(9), Some(rev(7)));
}

#[test]
fn restored_histories() {
    let mut h = KeyHistory::restored(b"k", rev(10), rev(3), 4);
    assert_eq!(h.get(10), at(10, 3, 4));
    h.put(rev(11));
    assert_eq!(h.latest(), at(11, 3, 5));

    let mut t = KeyHistory::restored_tombstone(b"k", rev(10));
    assert!(!t.is_live());
    assert_eq!(t.get(10), None);
    assert_eq!(t.get(9), None);
    t.put(rev(12));
    assert_eq!(t.latest(), at(12, 12, 1));
    let mut dropped = Vec::new();
    t.compact(11, &mut dropped);
    assert_eq!(dropped, revs(&[10]));
    assert_eq!(shape(&t), [(1, 12, vec![12])]);
}
