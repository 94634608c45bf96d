//! Property test: [`KeyIndex`] against a naive model that keeps every key's full history as a
//! list of `(revision, is_tombstone)` and answers each query by scanning it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use proptest::prelude::*;

use super::{KeyAt, KeyIndex};
use crate::key_range::KeyRange;
use crate::revision::Revision;

const KEYS: u8 = 24;

/// Short keys, and keys around the inline head a chunk keeps of its first key (24 bytes):
/// 30-byte keys sharing their first 28 bytes, and two of their prefixes, of 24 and 25 bytes,
/// so the chunk search also decides on full keys whose heads are equal.
fn key(id: u8) -> Vec<u8> {
    const LONG: &str = "k/registry/pods/namespace-1/";
    let id = id % KEYS;
    match id {
        3 => LONG[..24].into(),
        7 => LONG[..25].into(),
        _ if id.is_multiple_of(2) => format!("k{id:02}").into_bytes(),
        _ => format!("{LONG}{id:02}").into_bytes(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Changes of distinct keys in one store revision: `(key, is_delete)`.
    Txn(Vec<(u8, bool)>),
    /// Compact at `compacted + pick % span`, `batch` keys at a time, putting the listed keys
    /// between batches.
    Compact {
        pick: u16,
        batch: u8,
        between: Vec<u8>,
    },
    /// Reads at `pick` revisions back from the newest (never below the compaction).
    Read {
        a: u8,
        b: u8,
        kind: u8,
        from: Option<u8>,
        back: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((any::<u8>(), prop::bool::weighted(0.3)), 1..4).prop_map(Op::Txn),
        1 => (any::<u16>(), 1u8..6, prop::collection::vec(any::<u8>(), 0..3))
            .prop_map(|(pick, batch, between)| Op::Compact { pick, batch, between }),
        3 => (any::<u8>(), any::<u8>(), 0u8..4, prop::option::of(any::<u8>()), 0u8..12)
            .prop_map(|(a, b, kind, from, back)| Op::Read { a, b, kind, from, back }),
    ]
}

#[derive(Default, Clone)]
struct KeyModel {
    /// Every change ever made, oldest first.
    full: Vec<(Revision, bool)>,
    /// The changes compaction has not removed.
    retained: Vec<(Revision, bool)>,
}

impl KeyModel {
    fn is_live(&self) -> bool {
        self.full.last().is_some_and(|&(_, tomb)| !tomb)
    }

    fn get(&self, at: i64) -> Option<KeyAt> {
        let n = self.full.iter().rposition(|(r, _)| r.main <= at)?;
        if self.full[n].1 {
            return None;
        }
        let start = self.full[..n]
            .iter()
            .rposition(|&(_, t)| t)
            .map_or(0, |t| t + 1);
        Some(KeyAt {
            modified: self.full[n].0,
            created: self.full[start].0,
            version: (n - start + 1) as i64,
        })
    }

    /// etcd 3.6 compaction of the retained changes; returns the removed revisions.
    fn compact(&mut self, at: i64) -> Vec<Revision> {
        let newest = self.retained.iter().rposition(|(r, _)| r.main <= at);
        let keep_newest = newest.filter(|&i| {
            let (r, tomb) = self.retained[i];
            !tomb || r.main == at
        });
        let mut dropped = Vec::new();
        let mut i = 0;
        self.retained.retain(|&(r, _)| {
            let keep = r.main > at || Some(i) == keep_newest;
            i += 1;
            if !keep {
                dropped.push(r);
            }
            keep
        });
        dropped
    }
}

struct Harness {
    index: KeyIndex,
    model: BTreeMap<Vec<u8>, KeyModel>,
    /// The revision the next change gets.
    next: i64,
    compacted: i64,
}

impl Harness {
    fn change(&mut self, k: &[u8], rev: Revision, delete: bool) -> bool {
        let m = self.model.entry(k.to_vec()).or_default();
        if delete {
            let res = self.index.tombstone(k, rev);
            if !m.is_live() {
                assert!(res.is_err(), "tombstone of dead key {k:?} accepted");
                return false;
            }
            assert_eq!(res, Ok(()));
        } else {
            self.index.put(k, rev);
        }
        m.full.push((rev, delete));
        m.retained.push((rev, delete));
        true
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Txn(changes) => {
                let mut seen = Vec::new();
                let mut sub = 0;
                for &(id, delete) in changes {
                    let k = key(id);
                    if seen.contains(&k) {
                        continue;
                    }
                    if self.change(&k, Revision::new(self.next, sub), delete) {
                        sub += 1;
                    }
                    seen.push(k);
                }
                if sub > 0 {
                    self.next += 1;
                }
            }
            Op::Compact {
                pick,
                batch,
                between,
            } => {
                let span = (self.next - self.compacted).max(1);
                let at = self.compacted + i64::from(*pick) % span;
                let mut dropped = Vec::new();
                let mut between = between.iter();
                let mut resume = None;
                loop {
                    resume = self.index.compact_batch(
                        at,
                        resume.as_deref(),
                        usize::from(*batch),
                        &mut dropped,
                    );
                    if resume.is_none() {
                        break;
                    }
                    if let Some(&id) = between.next() {
                        // A change between batches: newer than `at`, so the model can apply
                        // it after the whole compaction.
                        let rev = Revision::new(self.next, 0);
                        self.index.put(&key(id), rev);
                        self.model
                            .entry(key(id))
                            .or_default()
                            .full
                            .push((rev, false));
                        self.model
                            .entry(key(id))
                            .or_default()
                            .retained
                            .push((rev, false));
                        self.next += 1;
                    }
                }
                let mut want: Vec<Revision> = self
                    .model
                    .values_mut()
                    .flat_map(|m| m.compact(at))
                    .collect();
                dropped.sort();
                want.sort();
                assert_eq!(dropped, want, "dropped by compaction at {at}");
                self.compacted = self.compacted.max(at);
            }
            Op::Read {
                a,
                b,
                kind,
                from,
                back,
            } => {
                let at = (self.next - 1 - i64::from(*back)).max(self.compacted);
                let (ka, kb) = (key(*a), key(*b));
                let range = match kind {
                    0 => KeyRange::single(&ka),
                    1 => KeyRange::new(&ka, &kb),
                    2 => KeyRange::new(&ka, b"\0"),
                    _ => KeyRange::new(b"", b"\0"),
                };
                let from = from.map(key);
                self.check_range(range, from.as_deref(), at);
            }
        }
    }

    fn check_range(&self, range: KeyRange<'_>, from: Option<&[u8]>, at: i64) {
        let in_range = |k: &[u8]| !range.is_empty() && range.contains(k);
        let want: Vec<(Vec<u8>, KeyAt)> = self
            .model
            .iter()
            .filter(|(k, _)| in_range(k))
            .filter_map(|(k, m)| Some((k.clone(), m.get(at)?)))
            .collect();
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
        assert_eq!(got, fwd, "range {range:?} from {from:?} at {at}");
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
        assert_eq!(got, rev, "range_rev {range:?} from {from:?} at {at}");
        assert_eq!(self.index.count(range, at), want.len());

        let tracked = self
            .model
            .iter()
            .filter(|(k, m)| in_range(k) && !m.retained.is_empty());
        assert_eq!(self.index.entries_in(range), tracked.clone().count());
        let live = tracked.clone().filter(|(_, m)| m.is_live()).count();
        assert_eq!(self.index.count_live_latest(range), live);

        let mut changes = Vec::new();
        self.index
            .keys_changed_after(range, at, |k, r| changes.push((k.to_vec(), r)));
        let want_changes: Vec<_> = tracked
            .flat_map(|(k, m)| {
                m.full
                    .iter()
                    .filter(|(r, _)| r.main > at)
                    .map(|&(r, _)| (k.clone(), r))
            })
            .collect();
        assert_eq!(changes, want_changes, "keys_changed_after {at}");
    }

    fn check_all(&self) {
        self.index.check_invariants();
        let tracked = self.model.values().filter(|m| !m.retained.is_empty());
        assert_eq!(self.index.len(), tracked.clone().count());
        assert_eq!(
            self.index.live_len(),
            tracked.filter(|m| m.is_live()).count()
        );
        for (k, m) in &self.model {
            assert_eq!(self.index.count_revisions(k), m.retained.len(), "{k:?}");
            assert_eq!(self.index.latest(k), m.get(i64::MAX), "{k:?}");
            let want_keep = m
                .get(self.compacted)
                .map(|a| a.modified)
                .filter(|_| !m.retained.is_empty());
            assert_eq!(
                self.index.history(k).and_then(|h| h.keep(self.compacted)),
                want_keep,
                "keep {k:?} at {}",
                self.compacted
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn index_matches_model(cap in 2usize..6, ops in prop::collection::vec(op(), 1..120)) {
        let mut h = Harness {
            index: KeyIndex::with_chunk_capacity(cap),
            model: BTreeMap::new(),
            next: 2,
            compacted: 0,
        };
        for op in &ops {
            h.apply(op);
            h.check_all();
        }
    }
}
