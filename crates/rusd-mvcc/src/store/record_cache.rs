//! A cache of `kv` table records by revision, in front of the backend.
//!
//! Performance: a point read through redb walks three or four pages, each behind a mutex and
//! a read lock in redb's page cache (about 1 us), which capped gets near 300k/s and made every
//! key of a range cost as much as a get. A hit here is a shard read lock and a hash probe, and
//! [`BatchReader`] serves a range's records under one read lock per run of records
//! in the same shard (revisions are sharded in blocks, so neighbouring writes share a shard).
//!
//! Correctness rests on records being immutable: the record of revision `(main, sub)` never
//! changes once the index knows that revision (a write publishes its records before the
//! index learns of them; an aborted write txn never reaches the index, so its revisions,
//! which the next write reuses, are never read and never cached). Compaction deletes records,
//! but only of revisions that no reader can reach any more, so their entries are simply never
//! asked for again and age out. Entries are filled on read misses only.
//!
//! Eviction is CLOCK (second chance) per shard; the byte budget is carved out of
//! [`BackendConfig::cache_size`](crate::BackendConfig::cache_size), so the store's memory
//! stays within the configured cache.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};

use crate::revision::Revision;

const SHARDS: usize = 16;

/// Bytes charged per entry beyond the record itself: the hash map slot, the Arc header and
/// malloc rounding, the clock queue slot.
const ENTRY_OVERHEAD: usize = 96;

/// FxHash-style hasher: revisions are already well spread, SipHash would be most of a hit.
#[derive(Default)]
struct RevHasher(u64);

impl Hasher for RevHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_i64(&mut self, v: i64) {
        self.write_u64(v as u64);
    }
}

struct Entry {
    record: Arc<[u8]>,
    /// CLOCK's second-chance bit, set by readers under the read lock.
    referenced: AtomicBool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Revision, Entry, BuildHasherDefault<RevHasher>>,
    /// Clock order; may hold revisions no longer in `map` (skipped when reached).
    clock: VecDeque<Revision>,
    bytes: usize,
}

/// See the module documentation.
pub(crate) struct RecordCache {
    shards: Box<[RwLock<Shard>]>,
    shard_budget: usize,
}

impl RecordCache {
    /// A cache of at most about `budget` bytes; 0 disables it.
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            shard_budget: budget / SHARDS,
        }
    }

    /// Runs of neighbouring revisions share a shard (blocks of 8 store revisions, and of 16
    /// changes inside one), so a range over keys written together takes few locks; the
    /// blocks are hashed so that big txns still spread over the shards.
    fn shard_of(rev: Revision) -> usize {
        let main = ((rev.main >> 3) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let sub = ((rev.sub >> 4) as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        ((main ^ sub) >> 60) as usize % SHARDS
    }

    fn shard(&self, rev: Revision) -> &RwLock<Shard> {
        &self.shards[Self::shard_of(rev)]
    }

    fn hit<'s>(shard: &'s Shard, rev: &Revision) -> Option<&'s [u8]> {
        let entry = shard.map.get(rev)?;
        entry.referenced.store(true, Ordering::Relaxed);
        Some(&entry.record)
    }

    /// Calls `f` with the cached record of `rev`, if any.
    pub(crate) fn get_with<R>(&self, rev: Revision, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.shard_budget == 0 {
            return None;
        }
        Self::hit(&self.shard(rev).read(), &rev).map(f)
    }

    /// Drops every entry. For `install_snapshot`: after a new history is swapped in, a
    /// revision may name a different record than the cached one.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            shard.map.clear();
            shard.clock.clear();
            shard.bytes = 0;
        }
    }

    /// A reader that keeps its shard's read lock from one lookup to the next while they hit
    /// the same shard (see [`BatchReader`]).
    pub(crate) fn batch_reader(&self) -> BatchReader<'_> {
        BatchReader {
            cache: self,
            held: None,
        }
    }

    /// Caches the record of `rev`, evicting older entries to stay within the budget.
    pub(crate) fn insert(&self, rev: Revision, record: &[u8]) {
        let cost = record.len() + ENTRY_OVERHEAD;
        if cost > self.shard_budget / 8 {
            return; // nothing huge: one value must not flush a whole shard
        }
        let record: Arc<[u8]> = record.into();
        let mut guard = self.shard(rev).write();
        let shard = &mut *guard;
        if shard.map.contains_key(&rev) {
            return;
        }
        while shard.bytes + cost > self.shard_budget {
            let Some(victim) = shard.clock.pop_front() else {
                break;
            };
            match shard.map.get_mut(&victim) {
                Some(e) if e.referenced.load(Ordering::Relaxed) => {
                    *e.referenced.get_mut() = false;
                    shard.clock.push_back(victim);
                }
                Some(_) => {
                    if let Some(e) = shard.map.remove(&victim) {
                        shard.bytes -= e.record.len() + ENTRY_OVERHEAD;
                    }
                }
                None => {}
            }
        }
        shard.map.insert(
            rev,
            Entry {
                record,
                referenced: AtomicBool::new(false),
            },
        );
        shard.clock.push_back(rev);
        shard.bytes += cost;
    }
}

/// Looks up many records with one read lock per run of lookups in the same shard, as a
/// range does. Call [`BatchReader::release`] before anything that may write to the cache
/// (filling a miss), or the write lock would wait for this thread's own read lock.
pub(crate) struct BatchReader<'a> {
    cache: &'a RecordCache,
    held: Option<(usize, RwLockReadGuard<'a, Shard>)>,
}

impl BatchReader<'_> {
    /// Calls `f` with the cached record of `rev`, if any.
    pub(crate) fn get_with<R>(&mut self, rev: Revision, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.cache.shard_budget == 0 {
            return None;
        }
        let s = RecordCache::shard_of(rev);
        if self.held.as_ref().is_none_or(|(h, _)| *h != s) {
            self.held = None; // one shard lock at a time
            self.held = Some((s, self.cache.shards[s].read()));
        }
        let (_, guard) = self.held.as_ref()?;
        RecordCache::hit(guard, &rev).map(f)
    }

    /// Drops the read lock held, if any.
    pub(crate) fn release(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_and_budget() {
        assert!((0..1000).any(|m| RecordCache::shard_of(Revision::new(m, 0)) != 0));
        let cache = RecordCache::new(SHARDS * 8 * (100 + ENTRY_OVERHEAD));
        let r = |m| Revision::new(m, 0);
        assert_eq!(cache.get_with(r(2), <[u8]>::to_vec), None);
        cache.insert(r(2), &[1; 100]);
        assert_eq!(cache.get_with(r(2), <[u8]>::len), Some(100));
        // Revisions in the shard of revision 2: that shard holds 8 such records.
        let same: Vec<i64> = (3..)
            .filter(|&m| RecordCache::shard_of(r(m)) == RecordCache::shard_of(r(2)))
            .filter(|m| m % 8 == 0)
            .take(20)
            .collect();
        for &m in &same {
            cache.insert(r(m), &[2; 100]);
            // Referenced on every round, revision 2 survives the clock.
            assert_eq!(cache.get_with(r(2), <[u8]>::len), Some(100));
        }
        let shard = cache.shard(r(2)).read();
        assert!(shard.bytes <= cache.shard_budget);
        assert_eq!(shard.map.len(), 8);
        drop(shard);
        assert_eq!(cache.get_with(r(same[0]), <[u8]>::len), None);
        assert_eq!(cache.get_with(r(same[19]), <[u8]>::len), Some(100));
    }

    #[test]
    fn batch_lookup() {
        let cache = RecordCache::new(1 << 20);
        for m in [3, 4, 40, 41, 500] {
            cache.insert(Revision::new(m, 1), &[m as u8; 10]);
        }
        let mut reader = cache.batch_reader();
        let seen: Vec<Option<u8>> = [3, 5, 4, 40, 500, 41, 7]
            .iter()
            .map(|&m| reader.get_with(Revision::new(m, 1), |rec| rec[0]))
            .collect();
        assert_eq!(
            seen,
            [Some(3), None, Some(4), Some(40), Some(244), Some(41), None]
        );
        reader.release();
        cache.insert(Revision::new(5, 1), &[5; 10]); // would deadlock with the lock held
        assert_eq!(reader.get_with(Revision::new(5, 1), |rec| rec[0]), Some(5));
    }

    #[test]
    fn disabled_and_oversized() {
        let off = RecordCache::new(0);
        off.insert(Revision::new(1, 0), b"x");
        assert_eq!(off.get_with(Revision::new(1, 0), <[u8]>::len), None);
        let small = RecordCache::new(SHARDS * 1000);
        small.insert(Revision::new(1, 0), &[0; 500]);
        assert_eq!(small.get_with(Revision::new(1, 0), <[u8]>::len), None);
    }
}
