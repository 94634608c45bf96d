//! A cache of `kv` table records by revision, in front of the backend.
//!
//! Performance: a point read through redb walks three or four pages, each behind a mutex and
//! a read lock in redb's page cache (about 1 us), which capped gets near 300k/s and made every
//! key of a range cost as much as a get. A hit here is a shard read lock and a hash probe, and
//! `RecordCache::read_group` serves a range's records a group at a time under the read locks
//! of the shards involved (revisions are sharded in blocks, so neighbouring writes share one).
//!
//! Correctness rests on records being immutable: the record of revision `(main, sub)` never
//! changes once the index knows that revision (a write publishes its records before the
//! index learns of them; an aborted write txn never reaches the index, so its revisions,
//! which the next write reuses, are never read and never cached). Compaction deletes records,
//! but only of revisions that no reader can reach any more, so their entries are simply never
//! asked for again and age out.
//!
//! Entries are filled on read misses and by writes: a committed txn offers its put records
//! ([`RecordCache::offer`]), after the backend took them and before the index publishes their
//! revisions. The writer never waits for a shard that readers hold (it skips the record
//! instead), so readers still never block writers. Performance: recent writes are then read
//! without a backend miss, and the records of keys written together lie side by side in
//! memory, which a range over them reads much faster than records scattered over the heap
//! by random misses (see `docs/benchmarks.md`, "Write-through record cache").
//!
//! Eviction is CLOCK (second chance) per shard; the byte budget is carved out of
//! [`BackendConfig::cache_size`](crate::BackendConfig::cache_size), so the store's memory
//! stays within the configured cache.

use std::collections::{hash_map, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};
use smallvec::SmallVec;

use crate::revision::Revision;

const SHARDS: usize = 16;

/// Bytes charged per entry beyond the record itself: the Arc header (16) and the
/// allocator's rounding (up to a size class, ~25 for a 256-byte value), the hash map slot
/// (40 bytes at a load of 7/16 to 7/8: 47-94), the clock queue slot (16, in a queue of twice
/// the entries or more: 32-64). 96 undercounted: with the cache filled by writes, the
/// `memory` example's RSS went past its cache + index + 64 MiB budget.
const ENTRY_OVERHEAD: usize = 160;

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

    fn hit<'s>(shard: &'s Shard, rev: &Revision) -> Option<&'s Entry> {
        let entry = shard.map.get(rev)?;
        // Only a clear bit is written: a hot entry's line stays clean and shared between cores.
        if !entry.referenced.load(Ordering::Relaxed) {
            entry.referenced.store(true, Ordering::Relaxed);
        }
        Some(entry)
    }

    /// Calls `f` with the cached record of `rev`, if any.
    pub(crate) fn get_with<R>(&self, rev: Revision, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if self.shard_budget == 0 {
            return None;
        }
        Self::hit(&self.shard(rev).read(), &rev).map(|e| {
            // One independent load per cache line before decoding, so their misses overlap
            // instead of following one another through the decode and the value's copy.
            let touched = e.record.iter().step_by(64).fold(0u8, |t, &b| t ^ b);
            std::hint::black_box(touched);
            f(&e.record)
        })
    }

    /// Calls `f(i, record)` for each of `revs` in order, with `None` for a miss (and for a
    /// `None` revision, not looked up), while holding the read locks of the shards involved.
    ///
    /// Performance: a range's lookups and records are cache misses, and one after another
    /// they were most of a range's time. Here the lookups of a group are independent loads
    /// that the CPU overlaps, and so are the reads that bring each record in before `f`
    /// decodes it. (That touch pays when the records are scattered over the heap, as after
    /// random reads filled the cache: a 100-key scan 12.9-13.2 -> 11.6-12.2 us; it costs about
    /// 7% when a range's records were cached by earlier scans and lie side by side.) The
    /// shards are locked in ascending order, so two readers can never wait on each other
    /// through queued writers (writers hold one shard at a time).
    pub(crate) fn read_group(
        &self,
        revs: &[Option<Revision>],
        mut f: impl FnMut(usize, Option<&[u8]>),
    ) {
        if self.shard_budget == 0 {
            (0..revs.len()).for_each(|i| f(i, None));
            return;
        }
        let mut wanted = 0u32;
        for rev in revs.iter().flatten() {
            wanted |= 1 << Self::shard_of(*rev);
        }
        let guards: SmallVec<[Option<RwLockReadGuard<'_, Shard>>; SHARDS]> = (0..SHARDS)
            .map(|s| (wanted & (1 << s) != 0).then(|| self.shards[s].read()))
            .collect();
        // Inline room for one group of `ReadView::kvs_at` (128 revisions).
        // Entries, not slices: 8 bytes a slot rather than 16 (performance: a 16-byte slot is
        // written from two 8-byte halves and read back whole, a store-forwarding stall).
        let found: SmallVec<[Option<&Entry>; 128]> = revs
            .iter()
            .map(|rev| {
                let rev = rev.as_ref()?;
                Self::hit(guards[Self::shard_of(*rev)].as_ref()?, rev)
            })
            .collect();
        // Independent loads of each record's first and last byte (a 256-byte value spans
        // several cache lines; the hardware prefetcher fills in between). A load per line,
        // as a get does, was slower here (100-key scans 8.6-10.6 against 8.2-9.2 us).
        let mut touched = 0u8;
        for entry in found.iter().flatten() {
            let record = &entry.record;
            touched ^= record.first().copied().unwrap_or(0) ^ record.last().copied().unwrap_or(0);
        }
        std::hint::black_box(touched);
        for (i, entry) in found.iter().enumerate() {
            f(i, entry.map(|e| &*e.record));
        }
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

    /// Caches the record of `rev` (a read miss), evicting older entries to stay within the
    /// budget.
    pub(crate) fn insert(&self, rev: Revision, record: &[u8]) {
        let cost = record.len() + ENTRY_OVERHEAD;
        if self.fits(cost) {
            let mut shard = self.shard(rev).write();
            Self::make_room(&mut shard, self.shard_budget - cost);
            Self::add(&mut shard, rev, record.into(), cost);
        }
    }

    /// Caches the committed record of `rev` (shared with the backend's write, not copied)
    /// if its shard has room and no reader holds it: a writer never waits for readers, and
    /// never evicts. So a stream of writes cannot flush what reads keep hot, and once the
    /// cache is full a write pays only this check (evicting cost a put about 0.6 us more).
    pub(crate) fn offer(&self, rev: Revision, record: Arc<[u8]>) {
        let cost = record.len() + ENTRY_OVERHEAD;
        if !self.fits(cost) {
            return;
        }
        if let Some(mut shard) = self.shard(rev).try_write() {
            if shard.bytes + cost <= self.shard_budget {
                Self::add(&mut shard, rev, record, cost);
            }
        }
    }

    /// Nothing huge: one value must not flush a whole shard.
    fn fits(&self, cost: usize) -> bool {
        cost <= self.shard_budget / 8
    }

    /// Evicts by CLOCK until the shard holds at most `limit` bytes, one hash probe per victim.
    fn make_room(shard: &mut Shard, limit: usize) {
        while shard.bytes > limit {
            let Some(victim) = shard.clock.pop_front() else {
                break;
            };
            if let hash_map::Entry::Occupied(mut e) = shard.map.entry(victim) {
                if *e.get_mut().referenced.get_mut() {
                    *e.get_mut().referenced.get_mut() = false;
                    shard.clock.push_back(victim);
                } else {
                    shard.bytes -= e.remove().record.len() + ENTRY_OVERHEAD;
                }
            }
        }
    }

    /// Adds the entry unless `rev` is cached already (as after two readers missed it at
    /// once; room may then have been made for nothing).
    fn add(shard: &mut Shard, rev: Revision, record: Arc<[u8]>, cost: usize) {
        if let hash_map::Entry::Vacant(slot) = shard.map.entry(rev) {
            slot.insert(Entry {
                record,
                referenced: AtomicBool::new(false),
            });
            shard.clock.push_back(rev);
            shard.bytes += cost;
        }
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
    fn group_lookup() {
        let cache = RecordCache::new(1 << 20);
        for m in [3, 4, 40, 41, 500] {
            cache.insert(Revision::new(m, 1), &[m as u8; 10]);
        }
        let revs: Vec<Option<Revision>> = [Some(3), Some(5), None, Some(4), Some(500), Some(41)]
            .iter()
            .map(|m| m.map(|m| Revision::new(m, 1)))
            .collect();
        let mut seen = Vec::new();
        cache.read_group(&revs, |i, record| seen.push((i, record.map(|r| r[0]))));
        assert_eq!(
            seen,
            [
                (0, Some(3)),
                (1, None),
                (2, None), // not looked up
                (3, Some(4)),
                (4, Some(244)),
                (5, Some(41))
            ]
        );
        // The locks are released on return: filling a miss does not wait for them.
        cache.insert(Revision::new(5, 1), &[5; 10]);
        let mut five = None;
        cache.read_group(&revs[1..2], |_, record| five = record.map(|r| r[0]));
        assert_eq!(five, Some(5));
        let off = RecordCache::new(0);
        let mut calls = 0;
        off.read_group(&revs, |_, record| calls += usize::from(record.is_none()));
        assert_eq!(calls, revs.len());
    }

    #[test]
    fn offers_skip_a_shard_readers_hold() {
        let cache = RecordCache::new(1 << 20);
        let rev = Revision::new(9, 0);
        let held = cache.shard(rev).read();
        cache.offer(rev, Arc::from(&b"x"[..]));
        drop(held);
        assert_eq!(
            cache.get_with(rev, <[u8]>::to_vec),
            None,
            "skipped, not waited"
        );
        cache.offer(rev, Arc::from(&b"y"[..]));
        assert_eq!(cache.get_with(rev, <[u8]>::to_vec), Some(b"y".to_vec()));
        // The first record of a revision stays (records never change once published).
        cache.offer(rev, Arc::from(&b"z"[..]));
        assert_eq!(cache.get_with(rev, <[u8]>::to_vec), Some(b"y".to_vec()));

        // A full shard takes no offers (writes never evict); a read miss still evicts.
        let small = RecordCache::new(SHARDS * 8 * (100 + ENTRY_OVERHEAD));
        let in_shard: Vec<Revision> = (1..)
            .map(|m| Revision::new(m, 0))
            .filter(|r| RecordCache::shard_of(*r) == RecordCache::shard_of(rev))
            .take(9)
            .collect();
        for r in &in_shard[..8] {
            small.offer(*r, Arc::from(&[1; 100][..]));
        }
        assert!(in_shard[..8]
            .iter()
            .all(|r| small.get_with(*r, |_| ()).is_some()));
        small.offer(in_shard[8], Arc::from(&[2; 100][..]));
        assert_eq!(
            small.get_with(in_shard[8], |_| ()),
            None,
            "full: not offered"
        );
        small.insert(in_shard[8], &[3; 100]);
        assert_eq!(small.get_with(in_shard[8], <[u8]>::len), Some(100));
        assert_eq!(small.shard(rev).read().map.len(), 8, "the miss evicted one");
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
