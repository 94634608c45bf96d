//! A plain loop over one engine operation, for profiling and for CPU-time measurements on a
//! shared machine (criterion's wall-clock numbers follow the machine's load).
//!
//! ```text
//! cargo run --release -p rusd-mvcc --example hotpath -- MODE [SECONDS]
//! perf record -e cpu-clock --call-graph dwarf -D 2000 -- target/release/examples/hotpath get 5
//! ```
//!
//! MODE: `get`, `range10`, `range100`, `prebuilt100` (as `range100` with requests built
//! before timing), `cas`, `put`, `batch` (10 puts per txn) over 100k keys
//! of 16 bytes with 256-byte values (preloaded and flushed for the read modes), or `idxN`: point
//! lookups in a bare `KeyIndex` of N keys. Prints operations per second of wall time and of the
//! thread's own CPU time (`/proc/thread-self/schedstat`), and the committer thread's CPU per
//! operation. `RECORD_CACHE_PERCENT` overrides `StoreConfig::record_cache_percent`; `VERSIONS` writes
//! that many versions of each key (default 1); `KEYS` sets the number of keys (1000 keeps
//! everything in the CPU caches, which shows what is memory latency and what is work);
//! `KEYS_ONLY` makes `prebuilt100` a keys-only range.

#![allow(missing_docs, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rusd_mvcc::{
    Compare, CompareResult, CompareTarget, KeyIndex, MvccStore, PutRequest, RangeRequest,
    RequestOp, Revision, StoreConfig, TxnRequest,
};

/// The `rusd` binary's allocator, as in the criterion benches (`--features system-alloc`:
/// glibc's).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keys preloaded for the read modes (`KEYS`, default 100k: more than the CPU caches hold).
static KEYS: std::sync::LazyLock<u64> =
    std::sync::LazyLock::new(|| std::env::var("KEYS").map_or(100_000, |v| v.parse().unwrap()));

fn key(i: u64) -> Vec<u8> {
    format!("key/{i:012}").into_bytes()
}

/// splitmix64: deterministic random key choice.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Nanoseconds the thread (or task `path`) has run on a CPU.
fn cpu_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn committer_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "rusd-committer" {
            return cpu_ns(&task.path().join("schedstat").to_string_lossy());
        }
    }
    0
}

fn index_only(n: u64, secs: u64) {
    let mut index = KeyIndex::new();
    for i in 0..n {
        index.put(&key(i), Revision::new(i as i64 + 2, 0));
    }
    let keys: Vec<Vec<u8>> = (0..1_000_000).map(|i| key(mix(i) % n)).collect();
    let (start, cpu) = (Instant::now(), cpu_ns("/proc/thread-self/schedstat"));
    let mut found = 0;
    for _ in 0..secs {
        for k in &keys {
            found += usize::from(index.get(k, i64::MAX).is_some());
        }
    }
    let lookups = (secs * 1_000_000) as f64;
    println!(
        "idx{n}: {:.0} ns per lookup of wall time, {:.0} ns of CPU ({found} found)",
        start.elapsed().as_secs_f64() * 1e9 / lookups,
        (cpu_ns("/proc/thread-self/schedstat") - cpu) as f64 / lookups
    );
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "get".into());
    let secs: u64 = std::env::args().nth(2).map_or(5, |s| s.parse().unwrap());
    if let Some(n) = mode.strip_prefix("idx") {
        index_only(n.parse().unwrap(), secs);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path().join("db"));
    if let Ok(p) = std::env::var("RECORD_CACHE_PERCENT") {
        config.record_cache_percent = p.parse().unwrap();
    }
    let store = MvccStore::open(config).unwrap();
    let value = vec![7u8; 256];
    let versions: u64 = std::env::var("VERSIONS").map_or(1, |v| v.parse().unwrap());
    if mode != "put" && mode != "batch" {
        for chunk in (0..versions).flat_map(|_| 0..*KEYS / 1000) {
            let mut w = store.write();
            for i in chunk * 1000..(chunk + 1) * 1000 {
                w.put(&PutRequest::new(key(i), value.clone())).unwrap();
            }
            w.commit().unwrap();
        }
        store.flush().unwrap();
    }
    let mut seen: Vec<i64> = if mode == "cas" {
        (0..*KEYS)
            .map(|i| store.range(&RangeRequest::new(key(i), "")).unwrap().kvs[0].mod_revision)
            .collect()
    } else {
        Vec::new()
    };
    // Requests built before timing (criterion's benches do the same).
    let keys_only = std::env::var("KEYS_ONLY").is_ok();
    let prebuilt: Vec<RangeRequest> = (0..1u64 << 16)
        .map(|i| {
            let s = mix(i + 7) % (*KEYS - 100);
            RangeRequest {
                keys_only,
                ..RangeRequest::new(key(s), key(s + 100))
            }
        })
        .collect();
    let committer = committer_cpu_ns();
    let (start, cpu) = (Instant::now(), cpu_ns("/proc/thread-self/schedstat"));
    let (mut ops, mut i) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..1000 {
            i += 1;
            match mode.as_str() {
                "prebuilt100" => {
                    let resp = store.range(&prebuilt[(i % (1 << 16)) as usize]);
                    assert_eq!(resp.unwrap().kvs.len() as u64, 100);
                }
                "get" => {
                    let resp = store.range(&RangeRequest::new(key(mix(i) % *KEYS), ""));
                    assert_eq!(resp.unwrap().kvs.len(), 1);
                }
                "range10" | "range100" => {
                    let n = if mode == "range10" { 10 } else { 100 };
                    let s = mix(i) % (*KEYS - n);
                    let resp = store.range(&RangeRequest::new(key(s), key(s + n)));
                    assert_eq!(resp.unwrap().kvs.len() as u64, n);
                }
                "cas" => {
                    let j = mix(i) % *KEYS;
                    let k = key(j);
                    let req = TxnRequest {
                        compare: vec![Compare {
                            result: CompareResult::Equal,
                            target: CompareTarget::Mod(seen[j as usize]),
                            key: k.clone(),
                            range_end: Vec::new(),
                        }],
                        success: vec![RequestOp::Put(PutRequest::new(k.clone(), value.clone()))],
                        failure: vec![RequestOp::Range(RangeRequest::new(k, ""))],
                    };
                    let resp = store.txn(&req).unwrap();
                    assert!(resp.succeeded);
                    seen[j as usize] = resp.revision;
                }
                "put" => {
                    store.put(&PutRequest::new(key(i), value.clone())).unwrap();
                }
                "batch" => {
                    let mut w = store.write();
                    for _ in 0..10 {
                        i += 1;
                        w.put(&PutRequest::new(key(i), value.clone())).unwrap();
                    }
                    w.commit().unwrap();
                    ops += 9;
                }
                other => panic!("unknown mode {other}"),
            }
            ops += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_ns("/proc/thread-self/schedstat") - cpu) as f64 / 1e9;
    let committer = (committer_cpu_ns() - committer) as f64 / 1e3 / ops as f64;
    println!(
        "{mode}: {:.0}/s of wall time ({:.2} us), {:.0}/s of this thread's CPU ({:.2} us); \
         committer {committer:.2} us of CPU per operation",
        ops as f64 / wall,
        wall * 1e6 / ops as f64,
        ops as f64 / cpu,
        cpu * 1e6 / ops as f64,
    );
    store.close().unwrap();
}
