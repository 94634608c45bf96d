//! Unit tests for [`KeyIndex`]: point operations, and the chunked structure checked against a
//! `BTreeMap` of [`KeyHistory`] built by the same operations.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use super::{
    cmp_keys, Chunk, IndexError, KeyAt, KeyHistory, KeyIndex, DEFAULT_CHUNK_CAP, FIRST_HEAD,
};
use crate::key_range::{KeyRange, RangeEnd};
use crate::revision::Revision;

fn rev(main: i64) -> Revision {
    Revision::new(main, 0)
}

/// A small deterministic generator (xorshift64*), so the tests need no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key/{i:06}").into_bytes()
}

/// The index and a `BTreeMap` shadow fed the same operations, and the next revision.
struct Pair {
    index: KeyIndex,
    shadow: BTreeMap<Vec<u8>, KeyHistory>,
    next: i64,
}

impl Pair {
    fn new(cap: usize) -> Self {
        Self {
            index: KeyIndex::with_chunk_capacity(cap),
            shadow: BTreeMap::new(),
            next: 2,
        }
    }

    fn put(&mut self, k: &[u8]) {
        let r = rev(self.next);
        self.next += 1;
        self.index.put(k, r);
        self.shadow
            .entry(k.to_vec())
            .or_insert_with(|| KeyHistory::new(k))
            .put(r);
    }

    fn delete(&mut self, k: &[u8]) {
        let r = rev(self.next);
        let want = match self.shadow.get_mut(k) {
            None => Err(IndexError::KeyNotFound),
            Some(h) => h.tombstone(r),
        };
        assert_eq!(self.index.tombstone(k, r), want);
        if want.is_ok() {
            self.next += 1;
        }
    }

    fn compact(&mut self, at_main: i64, batch: usize) -> Vec<Revision> {
        let mut dropped = Vec::new();
        let mut resume = None;
        loop {
            resume = self
                .index
                .compact_batch(at_main, resume.as_deref(), batch, &mut dropped);
            if resume.is_none() {
                break;
            }
        }
        let mut want = Vec::new();
        self.shadow.retain(|_, h| {
            h.compact(at_main, &mut want);
            !h.is_empty()
        });
        dropped.sort();
        want.sort();
        assert_eq!(dropped, want, "dropped at {at_main}");
        dropped
    }

    /// Checks the structure and compares every query against the shadow.
    fn check(&self, rng: &mut Rng, queries: usize) {
        self.index.check_invariants();
        assert_eq!(self.index.len(), self.shadow.len());
        let live = self.shadow.values().filter(|h| h.is_live()).count();
        assert_eq!(self.index.live_len(), live);
        let all: Vec<&KeyHistory> = self
            .index
            .iter_from(super::Pos { chunk: 0, idx: 0 })
            .collect();
        assert!(all.iter().copied().eq(self.shadow.values()));
        for _ in 0..queries {
            let a = key(rng.below(self.shadow.len() * 2 + 4));
            let b = key(rng.below(self.shadow.len() * 2 + 4));
            let from = key(rng.below(self.shadow.len() * 2 + 4));
            let at = rng.below(self.next as usize + 1) as i64;
            for range in [
                KeyRange::new(&a, &b),
                KeyRange::new(&a, b"\0"),
                KeyRange::new(&a, b""),
                KeyRange::new(b"", b"\0"),
            ] {
                for from in [None, Some(from.as_slice())] {
                    self.check_range(range, from, at);
                }
            }
        }
    }

    fn check_range(&self, range: KeyRange<'_>, from: Option<&[u8]>, at: i64) {
        let in_range = |k: &[u8]| !range.is_empty() && range.contains(k);
        let want: Vec<(Vec<u8>, KeyAt)> = self
            .shadow
            .iter()
            .filter(|(k, _)| in_range(k))
            .filter_map(|(k, h)| Some((k.clone(), h.get(at)?)))
            .collect();
        let ctx = format!("{range:?} from {from:?} at {at}");

        let mut got = Vec::new();
        self.index.range(range, from, at, |k, v| {
            got.push((k.to_vec(), v));
            ControlFlow::Continue(())
        });
        let fwd: Vec<_> = want
            .iter()
            .filter(|(k, _)| from.is_none_or(|f| k.as_slice() >= f))
            .cloned()
            .collect();
        assert_eq!(got, fwd, "range {ctx}");

        got.clear();
        self.index.range_rev(range, from, at, |k, v| {
            got.push((k.to_vec(), v));
            ControlFlow::Continue(())
        });
        let rev: Vec<_> = want
            .iter()
            .rev()
            .filter(|(k, _)| from.is_none_or(|f| k.as_slice() <= f))
            .cloned()
            .collect();
        assert_eq!(got, rev, "range_rev {ctx}");

        // Stopping early yields a prefix.
        let mut n = 0;
        self.index.range(range, from, at, |_, _| {
            n += 1;
            if n == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(n, fwd.len().min(3), "range break {ctx}");

        assert_eq!(self.index.count(range, at), want.len(), "count {ctx}");
        let tracked = self.shadow.keys().filter(|k| in_range(k)).count();
        assert_eq!(self.index.entries_in(range), tracked, "entries_in {ctx}");
        let live = self
            .shadow
            .iter()
            .filter(|(k, h)| in_range(k) && h.is_live())
            .count();
        assert_eq!(
            self.index.count_live_latest(range),
            live,
            "count_live_latest {ctx}"
        );
    }
}

#[test]
fn point_operations() {
    let mut idx = KeyIndex::new();
    assert!(idx.is_empty());
    assert_eq!(idx.tombstone(b"a", rev(2)), Err(IndexError::KeyNotFound));
    idx.put(b"a", rev(2));
    idx.put(b"b", rev(3));
    idx.put(b"a", rev(4));
    assert_eq!((idx.len(), idx.live_len()), (2, 2));
    assert_eq!(
        idx.get(b"a", 3),
        Some(KeyAt {
            modified: rev(2),
            created: rev(2),
            version: 1
        })
    );
    assert_eq!(idx.latest(b"a").map(|a| a.version), Some(2));
    assert_eq!(idx.get(b"a", 1), None);
    assert_eq!(idx.get(b"zz", 9), None);
    assert_eq!(idx.tombstone(b"a", rev(5)), Ok(()));
    assert_eq!(idx.tombstone(b"a", rev(6)), Err(IndexError::NotLive));
    assert_eq!((idx.len(), idx.live_len()), (2, 1));
    assert_eq!(idx.latest(b"a"), None);
    assert_eq!(idx.get(b"a", 4).map(|a| a.modified), Some(rev(4)));
    assert_eq!(idx.count_revisions(b"a"), 3);
    assert_eq!(idx.count_revisions(b"nope"), 0);
    idx.put(b"a", rev(7));
    assert_eq!(
        idx.latest(b"a").map(|a| (a.created, a.version)),
        Some((rev(7), 1))
    );
    assert_eq!(idx.live_len(), 2);

    let mut changes = Vec::new();
    idx.keys_changed_after(KeyRange::new(b"a", b"\0"), 3, |k, r| {
        changes.push((k.to_vec(), r.main));
    });
    assert_eq!(
        changes,
        [(b"a".to_vec(), 4), (b"a".to_vec(), 5), (b"a".to_vec(), 7)]
    );
    changes.clear();
    idx.keys_changed_after(KeyRange::single(b"b"), 2, |k, r| {
        changes.push((k.to_vec(), r.main))
    });
    assert_eq!(changes, [(b"b".to_vec(), 3)]);

    let mut dropped = Vec::new();
    idx.compact(6, &mut dropped);
    dropped.sort();
    assert_eq!(dropped, [rev(2), rev(4), rev(5)]);
    assert_eq!(idx.count_revisions(b"a"), 1);
    let mut kept = Vec::new();
    idx.keep(6, |k, r| kept.push((k.to_vec(), r.main)));
    assert_eq!(kept, [(b"b".to_vec(), 3)]);
    idx.check_invariants();
}

#[test]
fn quarter_search_matches_binary_search() {
    for n in 0..80 {
        // Keys 0, 2, 4, ...; probe every even (present) and odd (absent) key around them.
        let entries: Vec<KeyHistory> = (0..n).map(|i| KeyHistory::new(&key(2 * i))).collect();
        for probe in 0..2 * n + 2 {
            let k = key(probe);
            let want = entries.binary_search_by(|e| e.key().cmp(k.as_slice()));
            assert_eq!(
                super::search_entries(&entries, &k),
                want,
                "n {n} probe {probe}"
            );
        }
    }
}

#[test]
fn empty_ranges_yield_nothing() {
    let mut idx = KeyIndex::new();
    for i in 0..10 {
        idx.put(&key(i), rev(i as i64 + 2));
    }
    let empty = KeyRange::new(b"key/000005", b"key/000002");
    let mut n = 0;
    idx.range(empty, None, 100, |_, _| {
        n += 1;
        ControlFlow::Continue(())
    });
    idx.range_rev(empty, None, 100, |_, _| {
        n += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(n, 0);
    assert_eq!(idx.count(empty, 100), 0);
    assert_eq!(idx.entries_in(empty), 0);
    assert_eq!(idx.count_live_latest(empty), 0);
    assert_eq!(
        KeyIndex::new().count_live_latest(KeyRange::new(b"", b"\0")),
        0
    );
    assert_eq!(KeyIndex::new().entries_in(KeyRange::new(b"a", b"b")), 0);
    assert_eq!(KeyRange::new(b"a", b"").end, RangeEnd::Single);
}

#[test]
fn sequential_load_fills_chunks() {
    let mut pair = Pair::new(DEFAULT_CHUNK_CAP);
    for i in 0..5000 {
        pair.put(&key(i));
    }
    let chunks = &pair.index.chunks;
    assert_eq!(chunks.len(), 5000usize.div_ceil(DEFAULT_CHUNK_CAP));
    for c in &chunks[..chunks.len() - 1] {
        assert_eq!(c.entries.len(), DEFAULT_CHUNK_CAP);
        assert_eq!(c.entries.capacity(), DEFAULT_CHUNK_CAP);
    }
    let mut rng = Rng(7);
    for i in 0..5000 {
        if rng.below(3) == 0 {
            pair.delete(&key(i));
        }
    }
    pair.check(&mut rng, 40);
}

#[test]
fn random_load_default_chunks() {
    let mut pair = Pair::new(DEFAULT_CHUNK_CAP);
    let mut rng = Rng(11);
    for _ in 0..5000 {
        let k = key(rng.below(4000));
        pair.put(&k);
    }
    for _ in 0..1500 {
        let k = key(rng.below(4000));
        pair.delete(&k);
    }
    assert!(pair.index.chunks.len() > 5);
    pair.check(&mut rng, 40);
    // Random inserts still fill chunks reasonably well.
    let fill = pair.index.len() as f64 / (pair.index.chunks.len() * DEFAULT_CHUNK_CAP) as f64;
    assert!(fill > 0.6, "fill {fill}");
    pair.index.repack();
    assert_eq!(
        pair.index.chunks.len(),
        pair.index.len().div_ceil(DEFAULT_CHUNK_CAP)
    );
    pair.check(&mut rng, 5);
}

#[test]
fn tiny_chunks_with_compaction_and_merging() {
    let mut pair = Pair::new(8);
    let mut rng = Rng(99);
    for round in 0..6 {
        for _ in 0..1500 {
            let k = key(rng.below(2000));
            if rng.below(4) == 0 {
                pair.delete(&k);
            } else {
                pair.put(&k);
            }
        }
        pair.check(&mut rng, 20);
        let at = pair.next - 1 - rng.below(500) as i64;
        pair.compact(at, 1 + rng.below(50));
        pair.check(&mut rng, 20);
        let _ = round;
    }
}

#[test]
fn merging_after_mass_delete() {
    let mut pair = Pair::new(16);
    for i in 0..3000 {
        pair.put(&key(i));
    }
    let before = pair.index.chunks.len();
    for i in 0..3000 {
        if i % 10 != 0 {
            pair.delete(&key(i));
        }
    }
    let at = pair.next - 1;
    pair.compact(at, 64);
    // 300 survivors, plus the key whose tombstone is exactly at the compaction revision.
    assert_eq!(pair.index.len(), 301);
    assert!(
        pair.index.chunks.len() * 3 < before,
        "chunks {}",
        pair.index.chunks.len()
    );
    let mut rng = Rng(5);
    pair.check(&mut rng, 30);
    // Everything gone: no chunk left.
    for i in (0..3000).step_by(10) {
        pair.delete(&key(i));
    }
    let at = pair.next - 1;
    pair.compact(at + 1, 7);
    assert!(pair.index.is_empty());
    assert!(pair.index.chunks.is_empty());
    pair.check(&mut rng, 2);
}

#[test]
fn batched_compaction_equals_compaction_at_once() {
    let mut rng = Rng(1234);
    let mut pair = Pair::new(8);
    for _ in 0..4000 {
        let k = key(rng.below(500));
        if rng.below(3) == 0 {
            pair.delete(&k);
        } else {
            pair.put(&k);
        }
    }
    let at = pair.next / 2;
    let mut once = pair.index.clone();
    let mut all = Vec::new();
    once.compact(at, &mut all);
    all.sort();
    for batch in [1, 3, 8, 100, usize::MAX] {
        let mut p = Pair {
            index: pair.index.clone(),
            shadow: pair.shadow.clone(),
            next: pair.next,
        };
        assert_eq!(p.compact(at, batch), all, "batch {batch}");
        assert_eq!(p.index.len(), once.len());
        assert!(p
            .index
            .iter_from(super::Pos { chunk: 0, idx: 0 })
            .eq(once.iter_from(super::Pos { chunk: 0, idx: 0 })));
        p.check(&mut rng, 5);
    }
    // Resuming after keys appear and disappear between batches.
    let mut dropped = Vec::new();
    let mut index = pair.index.clone();
    let mut resume = index.compact_batch(at, None, 50, &mut dropped);
    let mut next = pair.next;
    while let Some(r) = resume {
        index.put(&r, rev(next));
        index.put(b"key/zzz", rev(next + 1));
        next += 2;
        resume = index.compact_batch(at, Some(&r), 50, &mut dropped);
    }
    dropped.sort();
    assert_eq!(dropped, all);
    index.check_invariants();
}

#[test]
fn restore_rebuilds_compacted_histories() {
    let mut idx = KeyIndex::new();
    idx.restore_tombstone(b"gone", rev(5)).expect("new key");
    idx.restore_put(b"kept", rev(6), rev(2), 3);
    idx.restore_put(b"kept", rev(8), rev(0), 0);
    idx.restore_put(b"gone", rev(9), rev(9), 1);
    assert_eq!(idx.restore_tombstone(b"kept", rev(10)), Ok(()));
    assert_eq!(
        idx.restore_tombstone(b"kept", rev(11)),
        Err(IndexError::NotLive)
    );
    assert_eq!(
        idx.get(b"kept", 8).map(|a| (a.created.main, a.version)),
        Some((2, 4))
    );
    assert_eq!(idx.get(b"gone", 5), None);
    assert_eq!(
        idx.latest(b"gone").map(|a| (a.created.main, a.version)),
        Some((9, 1))
    );
    assert_eq!((idx.len(), idx.live_len()), (2, 1));
    idx.check_invariants();
}

/// Loads one million 16-byte keys, one revision each, and prints the index's memory per key.
fn measure_bytes_per_key(shuffled: bool) {
    const N: usize = 1_000_000;
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }
    let mut order: Vec<usize> = (0..N).collect();
    if shuffled {
        let mut rng = Rng(42);
        for i in (1..N).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    let keys: Vec<[u8; 16]> = order
        .iter()
        .map(|i| {
            let mut k = [0u8; 16];
            k.copy_from_slice(format!("{i:016}").as_bytes());
            k
        })
        .collect();
    drop(order);
    let before = rss();
    let mut idx = KeyIndex::new();
    for (n, k) in keys.iter().enumerate() {
        idx.put(k, rev(n as i64 + 2));
    }
    let after = rss();
    let est = idx.approx_heap_bytes() as f64 / N as f64;
    let real = after.saturating_sub(before) as f64 / N as f64;
    let name = if shuffled { "random" } else { "sequential" };
    eprintln!(
        "{name}: estimate {est:.1} B/key ({:.1} beyond the 16 key bytes), \
         RSS growth {real:.1} B/key, {} chunks",
        est - 16.0,
        idx.chunks.len()
    );
    idx.repack();
    let est = idx.approx_heap_bytes() as f64 / N as f64;
    eprintln!("{name} after repack: estimate {est:.1} B/key");
    assert_eq!(idx.len(), N);
}

/// Memory per key for sequentially loaded keys (the target is <= 120 bytes beyond the key).
///
/// Run alone, in release, so RSS growth means something:
/// `cargo test --release -p rusd-mvcc -- --ignored --nocapture --exact
/// key_index::key_index_test::bytes_per_key_sequential`.
#[test]
#[ignore = "slow; measures memory"]
fn bytes_per_key_sequential() {
    measure_bytes_per_key(false);
}

/// As [`bytes_per_key_sequential`], with keys inserted in random order (the startup rebuild).
#[test]
#[ignore = "slow; measures memory"]
fn bytes_per_key_random() {
    measure_bytes_per_key(true);
}

/// A chunk's first key compared through its inline head gives the full comparison's answer,
/// for keys shorter than, as long as and longer than the head, equal up to it or not.
#[test]
fn chunk_first_key_comparison_through_its_head() {
    let base: Vec<u8> = (0..FIRST_HEAD as u8 + 8).map(|i| b'a' + i % 26).collect();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for len in [
        1,
        FIRST_HEAD - 1,
        FIRST_HEAD,
        FIRST_HEAD + 1,
        FIRST_HEAD + 8,
    ] {
        let k = base[..len].to_vec();
        for at in [0, len / 2, len - 1] {
            for delta in [-1i8, 1] {
                let mut changed = k.clone();
                changed[at] = changed[at].wrapping_add_signed(delta);
                keys.push(changed);
            }
        }
        keys.push(k);
    }
    for first in &keys {
        let chunk = Chunk::new([KeyHistory::new(first)], 4);
        for key in &keys {
            assert_eq!(
                chunk.cmp_first(key),
                cmp_keys(first, key),
                "first {:?} key {:?}",
                String::from_utf8_lossy(first),
                String::from_utf8_lossy(key)
            );
        }
    }
    // A chunk whose first key changes keeps its head in step.
    let mut index = KeyIndex::with_chunk_capacity(4);
    for (i, k) in keys.iter().rev().enumerate() {
        index.put(k, rev(i as i64 + 2));
        index.check_invariants();
    }
}
