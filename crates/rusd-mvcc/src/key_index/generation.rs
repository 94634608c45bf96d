//! One life of a key: from the put that creates it to the delete that ends it.

use std::mem::size_of;

use smallvec::SmallVec;

use super::{alloc_bytes, KeyAt};
use crate::revision::Revision;

/// One life of a key, as etcd's `generation`.
///
/// A generation opens with the put that creates the key and, unless it is the newest
/// generation of its key, closes with the tombstone that deleted it. The newest generation
/// of a deleted key is empty.
///
/// Invariants: `revs` is strictly ascending; an empty generation has `ver == 0`; only the
/// newest generation of a key may be empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// How many revisions this life has had, counting ones compaction removed, so that the
    /// version of a revision survives compaction (`ver` is the version of the newest one).
    ver: i64,
    /// The put that started this life; kept after compaction drops that put, because
    /// `create_revision` must still be reported.
    created: Revision,
    /// Revisions in ascending order. One inline slot: most keys hold a single revision, and
    /// a spilled vector would cost a separate allocation per key.
    revs: SmallVec<[Revision; 1]>,
}

impl Generation {
    /// An empty generation: the key does not exist (yet, or any more).
    pub fn new() -> Self {
        Self::default()
    }

    /// A generation rebuilt from the backend, whose earlier revisions may have been compacted:
    /// its newest revision `rev` has version `ver` and the life began at `created`.
    pub fn restored(created: Revision, rev: Revision, ver: i64) -> Self {
        let mut revs = SmallVec::new();
        revs.push(rev);
        Self { ver, created, revs }
    }

    /// Number of revisions this life has had, including compacted ones.
    pub fn ver(&self) -> i64 {
        self.ver
    }

    /// The revision of the put that started this life (zero for an empty generation, or for a
    /// restored tombstone whose creation was compacted away).
    pub fn created(&self) -> Revision {
        self.created
    }

    /// The revisions still held, ascending.
    pub fn revs(&self) -> &[Revision] {
        &self.revs
    }

    /// Whether this generation holds no revision.
    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// The oldest revision held.
    pub fn first(&self) -> Option<Revision> {
        self.revs.first().copied()
    }

    /// The newest revision held (the tombstone, for a closed generation).
    pub fn last(&self) -> Option<Revision> {
        self.revs.last().copied()
    }

    /// Position of the newest revision with `main <= at_main`, if any.
    pub fn last_at_or_below(&self, at_main: i64) -> Option<usize> {
        self.revs
            .partition_point(|r| r.main <= at_main)
            .checked_sub(1)
    }

    /// The key's state as of the revision at position `idx`.
    ///
    /// The version counts back from `ver`: each newer revision in this generation is one
    /// version later.
    ///
    /// # Panics
    ///
    /// If `idx` is out of bounds.
    pub fn key_at(&self, idx: usize) -> KeyAt {
        let newer = self.revs.len() - idx - 1;
        KeyAt {
            modified: self.revs[idx],
            created: self.created,
            version: self.ver - newer as i64,
        }
    }

    /// Appends `rev`; the caller has checked that it is newer than every revision of the key.
    pub(super) fn push(&mut self, rev: Revision) {
        if self.revs.is_empty() {
            self.created = rev;
        }
        self.revs.push(rev);
        self.ver += 1;
    }

    /// Removes the revisions before position `idx`, appending them to `dropped`.
    pub(super) fn drop_before(&mut self, idx: usize, dropped: &mut Vec<Revision>) {
        if idx == 0 {
            return;
        }
        dropped.extend(self.revs.drain(..idx));
        if self.revs.spilled() && self.revs.capacity() > 2 * self.revs.len() {
            self.revs.shrink_to_fit();
        }
    }

    /// Moves every revision into `dropped`, leaving the generation empty.
    pub(super) fn drop_all(self, dropped: &mut Vec<Revision>) {
        dropped.extend(self.revs);
    }

    /// Heap bytes held outside the struct itself (a spilled revision vector).
    pub(super) fn heap_bytes(&self) -> usize {
        if self.revs.spilled() {
            alloc_bytes(self.revs.capacity() * size_of::<Revision>())
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    #[test]
    fn push_sets_created_and_counts_versions() {
        let mut g = Generation::new();
        assert!(g.is_empty());
        assert_eq!(g.last_at_or_below(100), None);
        g.push(rev(3));
        g.push(rev(5));
        g.push(rev(9));
        assert_eq!(g.created(), rev(3));
        assert_eq!(g.ver(), 3);
        assert_eq!(g.revs(), &[rev(3), rev(5), rev(9)]);
        assert_eq!(g.last_at_or_below(2), None);
        assert_eq!(g.last_at_or_below(3), Some(0));
        assert_eq!(g.last_at_or_below(8), Some(1));
        assert_eq!(g.last_at_or_below(9), Some(2));
        assert_eq!(
            g.key_at(1),
            KeyAt {
                modified: rev(5),
                created: rev(3),
                version: 2
            }
        );
    }

    #[test]
    fn dropping_keeps_versions() {
        let mut g = Generation::new();
        for m in 1..=4 {
            g.push(rev(m));
        }
        let mut dropped = Vec::new();
        g.drop_before(2, &mut dropped);
        assert_eq!(dropped, [rev(1), rev(2)]);
        assert_eq!(g.revs(), &[rev(3), rev(4)]);
        assert_eq!(g.key_at(0).version, 3);
        assert_eq!(g.key_at(0).created, rev(1));
        g.drop_all(&mut dropped);
        assert_eq!(dropped, [rev(1), rev(2), rev(3), rev(4)]);
    }

    #[test]
    fn restored_generation() {
        let g = Generation::restored(rev(2), rev(7), 4);
        assert_eq!(g.key_at(0).version, 4);
        assert_eq!(g.created(), rev(2));
        assert_eq!(g.heap_bytes(), 0);
    }
}
