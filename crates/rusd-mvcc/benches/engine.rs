//! Engine benchmarks: `cargo bench -p rusd-mvcc` (one group: `cargo bench -p rusd-mvcc -- get`).
//!
//! Every store lives in a temporary directory with the default backend settings (a background
//! committer makes writes durable every 100 ms or 10,000 operations). Values are 256 bytes and
//! keys look like `key/000000012345` (16 bytes). Read benchmarks preload their keys and flush,
//! so reads go to the redb file (through its page cache), not to the write overlay.
//! Results and the machine they were measured on: `docs/benchmarks.md`.
//!
//! The allocator is mimalloc, the one the `rusd` binary links (an application that embeds the
//! engine chooses its own; `docs/benchmarks.md` also gives the numbers with glibc's malloc).
//! Read requests are built before the timing starts, so the numbers are the engine's.

#![allow(missing_docs, clippy::unwrap_used)]

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rusd_mvcc::{
    Compare, CompareResult, CompareTarget, MvccStore, PutRequest, RangeRequest, RequestOp,
    StoreConfig, TxnRequest,
};

const VALUE_LEN: usize = 256;
/// Keys preloaded for the read benchmarks.
const READ_KEYS: u64 = 100_000;

fn key(i: u64) -> Vec<u8> {
    format!("key/{i:012}").into_bytes()
}

fn value(seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; VALUE_LEN];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (seed as u8).wrapping_add(i as u8);
    }
    v
}

/// splitmix64: a tiny deterministic generator, so the benches need no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Fixture {
    store: MvccStore,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.store.close();
    }
}

fn open() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).unwrap();
    Fixture { store, _dir: dir }
}

/// Writes `versions` versions of keys `0..n`, 1,000 puts per revision, and flushes.
fn preload(store: &MvccStore, n: u64, versions: u64) {
    let v = value(7);
    for _ in 0..versions {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut w = store.write();
            for &i in chunk {
                w.put(&PutRequest::new(key(i), v.clone())).unwrap();
            }
            w.commit().unwrap();
        }
    }
    store.flush().unwrap();
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g
}

fn bench_put(c: &mut Criterion) {
    let mut g = group(c, "put");
    g.throughput(Throughput::Elements(1));
    let f = open();
    let v = value(1);
    let mut next = 0u64;
    g.bench_function("fresh", |b| {
        b.iter(|| {
            next += 1;
            f.store.put(&PutRequest::new(key(next), v.clone())).unwrap()
        });
    });
    drop(f);
    let f = open();
    preload(&f.store, 10_000, 1);
    let mut rng = Rng(1);
    g.bench_function("overwrite_10k", |b| {
        b.iter(|| {
            let k = key(rng.below(10_000));
            f.store.put(&PutRequest::new(k, v.clone())).unwrap()
        });
    });
    g.finish();
}

fn bench_batch_put(c: &mut Criterion) {
    let mut g = group(c, "batch_put");
    g.throughput(Throughput::Elements(10));
    let f = open();
    let v = value(2);
    let mut next = 0u64;
    g.bench_function("10_keys", |b| {
        b.iter(|| {
            let mut w = f.store.write();
            for _ in 0..10 {
                next += 1;
                w.put(&PutRequest::new(key(next), v.clone())).unwrap();
            }
            w.commit().unwrap()
        });
    });
    g.finish();
}

fn range_req(start: u64, n: u64) -> RangeRequest {
    RangeRequest::new(key(start), key(start + n))
}

/// Requests prepared before timing, cycled through by [`Cycle::next`]: enough of them that the
/// keys they touch are spread over the whole key space (no cache-friendly reuse).
struct Cycle {
    reqs: Vec<RangeRequest>,
    at: usize,
}

impl Cycle {
    const LEN: usize = 1 << 16;

    fn new(mut make: impl FnMut() -> RangeRequest) -> Self {
        Self {
            reqs: (0..Self::LEN).map(|_| make()).collect(),
            at: 0,
        }
    }

    fn next(&mut self) -> &RangeRequest {
        self.at = (self.at + 1) % self.reqs.len();
        &self.reqs[self.at]
    }
}

fn bench_reads(c: &mut Criterion) {
    let f = open();
    // Two versions of every key: the second half of the history is read by "historical".
    preload(&f.store, READ_KEYS, 1);
    let mid = f.store.current_revision();
    preload(&f.store, READ_KEYS, 1);
    let store = &f.store;

    let mut g = group(c, "get");
    g.throughput(Throughput::Elements(1));
    let mut rng = Rng(3);
    let mut gets = Cycle::new(|| RangeRequest::new(key(rng.below(READ_KEYS)), ""));
    g.bench_function("random_100k", |b| {
        b.iter(|| {
            let resp = store.range(gets.next()).unwrap();
            debug_assert_eq!(resp.kvs.len(), 1);
            resp
        });
    });
    let mut gets = Cycle::new(|| RangeRequest {
        revision: mid,
        ..RangeRequest::new(key(rng.below(READ_KEYS)), "")
    });
    g.bench_function("historical_100k", |b| {
        b.iter(|| store.range(gets.next()).unwrap());
    });
    g.finish();

    let mut g = group(c, "range");
    for n in [10u64, 100] {
        // Requests per second; keys per second is n times that.
        g.throughput(Throughput::Elements(1));
        let mut ranges = Cycle::new(|| range_req(rng.below(READ_KEYS - n), n));
        g.bench_with_input(BenchmarkId::new("keys", n), &n, |b, &n| {
            b.iter(|| {
                let resp = store.range(ranges.next()).unwrap();
                debug_assert_eq!(resp.kvs.len() as u64, n);
                resp
            });
        });
    }
    g.finish();

    let mut g = group(c, "count_only");
    g.throughput(Throughput::Elements(1));
    for n in [10_000u64, 100_000] {
        g.bench_with_input(BenchmarkId::new("keys", n), &n, |b, &n| {
            let start = rng.below(READ_KEYS - n + 1);
            let req = RangeRequest {
                count_only: true,
                ..range_req(start, n)
            };
            b.iter(|| {
                let resp = store.range(&req).unwrap();
                debug_assert_eq!(resp.count as u64, n);
                resp
            });
        });
    }
    g.finish();
}

/// Kubernetes' GuaranteedUpdate: "if mod_revision(key) == seen then put else get".
fn bench_txn(c: &mut Criterion) {
    let f = open();
    let n = 10_000u64;
    preload(&f.store, n, 1);
    let mut seen: Vec<i64> = (0..n)
        .map(|i| f.store.range(&RangeRequest::new(key(i), "")).unwrap().kvs[0].mod_revision)
        .collect();
    let v = value(4);
    let mut rng = Rng(4);
    let mut g = group(c, "txn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cas_update", |b| {
        b.iter(|| {
            let i = rng.below(n);
            let k = key(i);
            let req = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Mod(seen[i as usize]),
                    key: k.clone(),
                    range_end: Vec::new(),
                }],
                success: vec![RequestOp::Put(PutRequest::new(k.clone(), v.clone()))],
                failure: vec![RequestOp::Range(RangeRequest::new(k, ""))],
            };
            let resp = f.store.txn(&req).unwrap();
            debug_assert!(resp.succeeded);
            seen[i as usize] = resp.revision;
        });
    });
    g.finish();
}

/// Revisions dropped per second: each sample writes `VERSIONS` new versions of `KEYS` keys
/// (untimed) and times `compact(current).wait()`, which drops all but the newest version of
/// each key from the index and the backend's view; "durable" also times the flush that commits
/// the deletions to the file.
fn bench_compaction(c: &mut Criterion) {
    const KEYS: u64 = 20_000;
    const VERSIONS: u64 = 10;
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(KEYS * VERSIONS));
    for durable in [false, true] {
        let f = open();
        preload(&f.store, KEYS, 1);
        let name = if durable { "durable" } else { "revisions" };
        g.bench_function(BenchmarkId::new(name, KEYS * VERSIONS), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    preload(&f.store, KEYS, VERSIONS);
                    let rev = f.store.current_revision();
                    let start = Instant::now();
                    f.store.compact(rev).unwrap().wait();
                    if durable {
                        f.store.flush().unwrap();
                    }
                    total += start.elapsed();
                    black_box(f.store.compact_revision());
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_put,
    bench_batch_put,
    bench_reads,
    bench_txn,
    bench_compaction
);
criterion_main!(benches);
