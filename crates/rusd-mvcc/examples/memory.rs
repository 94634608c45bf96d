//! Memory and restart check: loads 1M keys of 256-byte values into a store with a 64 MiB
//! cache and reports the key index's size per key, resident memory, the file size, load
//! throughput and the time to reopen.
//!
//! ```text
//! cargo run --release -p rusd-mvcc --example memory [-- KEYS [BATCH [DIR]]]
//! ```
//!
//! `KEYS` defaults to 1,000,000; `BATCH` (puts per write transaction while loading) to 1,000;
//! `DIR` to a temporary directory; the environment variable `MAX_PENDING_MIB` overrides
//! `BackendConfig::max_pending_bytes` (to show what the write buffer costs in RSS). The restart is measured twice: in this process (close, open,
//! first read) and in a fresh child process (`--reopen DIR`), whose resident memory is that
//! of a server restarted on the loaded file.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusd_mvcc::{MvccStore, PutRequest, RangeRequest, StoreConfig};

const VALUE_LEN: usize = 256;
const CACHE: usize = 64 << 20;

fn key(i: u64) -> Vec<u8> {
    format!("key/{i:012}").into_bytes()
}

/// (VmRSS, VmHWM) in bytes, from /proc/self/status.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

fn report_rss(label: &str) {
    let (rss, hwm) = rss();
    println!(
        "{label:<34} VmRSS {:>8.1} MiB   VmHWM {:>8.1} MiB",
        mib(rss),
        mib(hwm)
    );
}

fn config(path: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(path.join("db"));
    config.backend.cache_size = CACHE;
    if let Ok(pending) = std::env::var("MAX_PENDING_MIB") {
        config.backend.max_pending_bytes = pending.parse::<usize>().unwrap() << 20;
    }
    config
}

/// splitmix64, for random reads.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_reads(store: &MvccStore, keys: u64, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let resp = store
            .range(&RangeRequest::new(key(mix(i) % keys), ""))
            .unwrap();
        assert_eq!(resp.kvs.len(), 1);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Opens the store at `dir` and reads one key; returns the store and the seconds it took.
fn reopen(dir: &Path) -> (MvccStore, f64) {
    let start = Instant::now();
    let store = MvccStore::open(config(dir)).unwrap();
    let resp = store.range(&RangeRequest::new(key(0), "")).unwrap();
    assert_eq!(resp.kvs.len(), 1);
    (store, start.elapsed().as_secs_f64())
}

fn child(dir: &Path, keys: u64) {
    report_rss("child: before open");
    let (store, secs) = reopen(dir);
    println!("child: open + first read          {secs:.3} s");
    report_rss("child: after open");
    println!(
        "child: index                      {} keys, {:.1} MiB",
        store.key_count(),
        mib(store.index_heap_bytes() as u64)
    );
    let reads = random_reads(&store, keys, 200_000);
    println!("child: random gets                {reads:.0} /s");
    report_rss("child: after 200k random gets");
    store.close().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--reopen") {
        let keys = args[3].parse().unwrap();
        child(Path::new(&args[2]), keys);
        return;
    }
    let keys: u64 = args.get(1).map_or(1_000_000, |s| s.parse().unwrap());
    let batch: u64 = args.get(2).map_or(1_000, |s| s.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = args.get(3).map_or(tmp.path().to_path_buf(), PathBuf::from);

    println!("{keys} keys of 16 bytes, {VALUE_LEN}-byte values, {batch} puts per write txn, cache {} MiB", CACHE >> 20);
    report_rss("start");
    let store = MvccStore::open(config(&dir)).unwrap();
    report_rss("after open (empty)");

    let value = vec![0x5au8; VALUE_LEN];
    let start = Instant::now();
    let mut i = 0;
    while i < keys {
        let mut w = store.write();
        for _ in 0..batch.min(keys - i) {
            w.put(&PutRequest::new(key(i), value.clone())).unwrap();
            i += 1;
        }
        w.commit().unwrap();
    }
    let applied = start.elapsed().as_secs_f64();
    store.flush().unwrap();
    let durable = start.elapsed().as_secs_f64();
    println!(
        "load: {:.0} keys/s applied ({applied:.2} s), {:.0} keys/s durable ({durable:.2} s)",
        keys as f64 / applied,
        keys as f64 / durable
    );
    report_rss("after load + flush");

    let heap = store.index_heap_bytes() as u64;
    let n = store.key_count() as u64;
    println!(
        "index: {n} keys, {:.1} MiB, {:.1} B/key, {:.1} B/key beyond the 16 key bytes",
        mib(heap),
        heap as f64 / n as f64,
        heap as f64 / n as f64 - 16.0
    );
    println!(
        "db file: {:.1} MiB ({:.0} B/key)",
        mib(store.size()),
        store.size() as f64 / n as f64
    );
    let reads = random_reads(&store, keys, 200_000);
    println!("random gets: {reads:.0} /s");
    report_rss("after 200k random gets");
    let (rss_now, _) = rss();
    let budget = CACHE as u64 + heap + (64 << 20);
    println!(
        "budget cache + index + 64 MiB = {:.1} MiB; VmRSS is {}",
        mib(budget),
        if rss_now <= budget { "within" } else { "OVER" }
    );

    let start = Instant::now();
    store.close().unwrap();
    drop(store);
    let closed = start.elapsed().as_secs_f64();
    let (store, open_secs) = reopen(&dir);
    println!("restart in process: close {closed:.3} s, open + first read {open_secs:.3} s");
    report_rss("after in-process reopen");
    store.close().unwrap();
    drop(store);

    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .arg("--reopen")
        .arg(&dir)
        .arg(keys.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}
