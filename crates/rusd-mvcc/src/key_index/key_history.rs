//! The revisions of one key, grouped into generations (etcd's `keyIndex`).

use std::mem::size_of;

use smallvec::SmallVec;

use super::generation::Generation;
use super::{alloc_bytes, IndexError, KeyAt};
use crate::revision::Revision;

/// Every revision the index still holds for one key, as etcd's `keyIndex`.
///
/// The revisions are grouped into [`Generation`]s, oldest first. Each generation is one life
/// of the key; a tombstone closes the newest generation and opens a new, empty one, so a
/// deleted key ends with an empty generation and a live key ends with a non-empty one.
///
/// # Worked example
///
/// Key `foo` sees `put(1)`, `put(2)`, `tombstone(3)`, `put(4)`, `tombstone(5)` (every sub
/// revision 0). Its generations, oldest first, are then:
///
/// ```text
/// {1, 2, 3(t)}   ver 3, created 1
/// {4, 5(t)}      ver 2, created 4
/// {}             the key is deleted at the current revision
/// ```
///
/// Compacting at `c` keeps, for the key, the newest revision whose main revision is `<= c`
/// together with everything newer, and forgets a whole generation once its tombstone is
/// older than `c`. A tombstone exactly at `c` stays, so that a watch starting at `c` still
/// reports the delete (etcd 3.6 behaviour). Applied one after the other to the history above:
///
/// ```text
/// compact(2)  {2, 3(t)} {4, 5(t)} {}   drops 1
/// compact(4)  {4, 5(t)} {}             drops 2, 3  (the first life ended at 3 < 4)
/// compact(5)  {5(t)} {}                drops 4     (the tombstone at 5 = c stays)
/// compact(6)  {}                       drops 5     (the history is empty: forget the key)
/// ```
///
/// Versions and creation revisions survive compaction: after `compact(2)` a read at
/// revision 2 still reports version 2 and creation revision 1, although `put(1)` is gone.
/// Every step is a unit test in `key_history_test.rs`.
///
/// Invariants: `generations` is never empty; only the last generation may be empty; every
/// other generation ends with its tombstone; revisions ascend across all generations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyHistory {
    /// The key. A boxed slice, not a `Vec`, to save the capacity word on every key.
    key: Box<[u8]>,
    /// Oldest first. One inline slot: a key that was never deleted has one generation, and
    /// keeping it inline saves an allocation per key.
    generations: SmallVec<[Generation; 1]>,
}

impl KeyHistory {
    /// A history with no revision yet (one empty generation); the caller then puts.
    pub fn new(key: &[u8]) -> Self {
        let mut generations = SmallVec::new();
        generations.push(Generation::new());
        Self {
            key: key.into(),
            generations,
        }
    }

    /// A history rebuilt at startup from the first backend record seen for a key: a put at
    /// `rev` whose stored value says it has version `version` in a life created at `created`.
    pub fn restored(key: &[u8], rev: Revision, created: Revision, version: i64) -> Self {
        let mut generations = SmallVec::new();
        generations.push(Generation::restored(created, rev, version));
        Self {
            key: key.into(),
            generations,
        }
    }

    /// A history rebuilt at startup whose first backend record is a tombstone at `rev` (the
    /// puts before it were compacted away, so the creation revision is unknown and left zero).
    pub fn restored_tombstone(key: &[u8], rev: Revision) -> Self {
        let mut generations = SmallVec::new();
        generations.push(Generation::restored(Revision::default(), rev, 1));
        generations.push(Generation::new());
        Self {
            key: key.into(),
            generations,
        }
    }

    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The generations, oldest first.
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// Whether the history holds no revision (a fully compacted key, to be forgotten).
    pub fn is_empty(&self) -> bool {
        self.generations.iter().all(Generation::is_empty)
    }

    /// Whether the key exists at the newest revision (its last generation is non-empty).
    pub fn is_live(&self) -> bool {
        !self.current().is_empty()
    }

    /// Number of revisions held, over all generations.
    pub fn revision_count(&self) -> usize {
        self.generations.iter().map(|g| g.revs().len()).sum()
    }

    /// The newest revision held, tombstones included.
    pub fn last_revision(&self) -> Option<Revision> {
        self.generations.iter().rev().find_map(Generation::last)
    }

    /// Records a put at `rev`, opening a new life if the key is deleted.
    ///
    /// # Panics
    ///
    /// If `rev` is not newer than every revision already held: revisions only grow, so this
    /// is a bug in the caller.
    pub fn put(&mut self, rev: Revision) {
        if let Some(last) = self.last_revision() {
            assert!(
                rev > last,
                "key index: put of key {:?} at revision {rev} is not after its last revision {last}",
                String::from_utf8_lossy(&self.key),
            );
        }
        self.current_mut().push(rev);
    }

    /// Records a delete at `rev`: appends the tombstone to the current life and opens an
    /// empty one.
    ///
    /// # Errors
    ///
    /// [`IndexError::NotLive`] if the key is already deleted (or has no revision at all).
    ///
    /// # Panics
    ///
    /// As [`KeyHistory::put`], if `rev` is not newer than every revision held.
    pub fn tombstone(&mut self, rev: Revision) -> Result<(), IndexError> {
        if !self.is_live() {
            return Err(IndexError::NotLive);
        }
        self.put(rev);
        self.generations.push(Generation::new());
        Ok(())
    }

    /// The key's state at store revision `at_main`, or `None` if it did not exist then (or
    /// that part of its history was compacted).
    pub fn get(&self, at_main: i64) -> Option<KeyAt> {
        let newest = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(last)) = (g.first(), g.last()) else {
                continue;
            };
            // A closed life whose tombstone is at or before `at_main` means the key was
            // deleted then: every later life starts after `at_main` (we walked past them).
            if i != newest && last.main <= at_main {
                return None;
            }
            if first.main <= at_main {
                return g.last_at_or_below(at_main).map(|idx| g.key_at(idx));
            }
        }
        None
    }

    /// The key's state at the newest revision, or `None` if it is deleted.
    pub fn latest(&self) -> Option<KeyAt> {
        let g = self.current();
        g.revs().len().checked_sub(1).map(|idx| g.key_at(idx))
    }

    /// Every revision held with `main >= min_main`, ascending, tombstones included.
    ///
    /// Unlike etcd's `since`, two changes of the key inside one store revision (which etcd's
    /// txn validation prevents) are both returned.
    pub fn since(&self, min_main: i64) -> impl Iterator<Item = Revision> + '_ {
        let skip = self
            .generations
            .iter()
            .take_while(|g| g.last().is_some_and(|r| r.main < min_main))
            .count();
        self.generations[skip..]
            .iter()
            .flat_map(|g| g.revs().iter().copied())
            .filter(move |r| r.main >= min_main)
    }

    /// Compacts at store revision `at_main`, appending every revision removed to `dropped`.
    ///
    /// Keeps the newest revision with `main <= at_main` and all newer ones; removes whole
    /// generations whose tombstone is older than `at_main`. A tombstone exactly at `at_main`
    /// is kept. Afterwards [`KeyHistory::is_empty`] says whether the key can be forgotten.
    pub fn compact(&mut self, at_main: i64, dropped: &mut Vec<Revision>) {
        let target = self.compaction_target(at_main);
        for g in self.generations.drain(..target) {
            g.drop_all(dropped);
        }
        if self.generations.spilled() && self.generations.capacity() > 2 * self.generations.len() {
            self.generations.shrink_to_fit();
        }
        let g = &mut self.generations[0];
        if let Some(idx) = g.last_at_or_below(at_main) {
            g.drop_before(idx, dropped);
        }
    }

    /// The revision a compaction at `at_main` keeps as the key's value at `at_main`, for
    /// HashKV, as etcd's `keep`: `None` when the key is absent at `at_main`, including when
    /// its newest revision `<= at_main` is a tombstone exactly at `at_main` (which
    /// [`KeyHistory::compact`] keeps but HashKV skips).
    pub fn keep(&self, at_main: i64) -> Option<Revision> {
        let target = self.compaction_target(at_main);
        let g = &self.generations[target];
        let idx = g.last_at_or_below(at_main)?;
        let is_tombstone = target != self.generations.len() - 1 && idx == g.revs().len() - 1;
        (!is_tombstone).then(|| g.revs()[idx])
    }

    /// Heap bytes held outside the struct itself: the key and any spilled vectors.
    pub fn heap_bytes(&self) -> usize {
        let spilled = if self.generations.spilled() {
            alloc_bytes(self.generations.capacity() * size_of::<Generation>())
        } else {
            0
        };
        alloc_bytes(self.key.len())
            + spilled
            + self
                .generations
                .iter()
                .map(Generation::heap_bytes)
                .sum::<usize>()
    }

    /// Index of the first generation a compaction at `at_main` keeps: the oldest one whose
    /// tombstone is at or after `at_main`, or the newest (open) generation.
    fn compaction_target(&self, at_main: i64) -> usize {
        let newest = self.generations.len() - 1;
        self.generations[..newest]
            .iter()
            .position(|g| g.last().is_some_and(|tomb| tomb.main >= at_main))
            .unwrap_or(newest)
    }

    fn current(&self) -> &Generation {
        self.generations
            .last()
            .expect("key index: a key history always has a generation")
    }

    fn current_mut(&mut self) -> &mut Generation {
        self.generations
            .last_mut()
            .expect("key index: a key history always has a generation")
    }
}
