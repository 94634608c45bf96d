//! Backend-choice benchmark for rusd: redb 4.6 vs fjall 3.x vs sled 0.34 on an
//! etcd-style "kv" table (16-byte big-endian revision keys, ~300-byte records).
//!
//! `cargo +1.95.0 run --release` runs the whole suite: it re-executes itself as one
//! child process per (engine, phase, repetition) so that each child's VmHWM (peak RSS)
//! belongs to one engine only, collects the children's `R <metric> <value>` lines and
//! prints markdown tables of medians (plus raw values).
//!
//! Sub-commands used internally (can be run by hand):
//!   ops   <engine> <dir>   200k puts (fsync/100, fsync/10k), 1M gets, 100k scans, 100k deletes
//!   size  <engine> <dir>   1M-record load, on-disk sizes, peak RSS
//!   syscheck <engine> <dir> a few durable commits, meant to run under `strace -c`
//!   crash <none|immediate> <dir>  redb: commit then abort() without closing
//!
//! Env: BENCH_SCALE (default 1.0) scales record/op counts (for smoke tests only).
//!      BENCH_REPS (default 3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CACHE_BYTES: usize = 64 << 20;
const SCAN_LEN: usize = 100;
const ENGINES: [&str; 3] = ["redb", "fjall", "sled"];

struct Sizes {
    n_ops: u64,   // 200k
    n_gets: u64,  // 1M
    n_scans: u64, // 100k
    n_big: u64,   // 1M
}

fn sizes() -> Sizes {
    let s: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let f = |n: f64| ((n * s) as u64).max(20_000);
    Sizes {
        n_ops: f(200_000.0),
        n_gets: f(1_000_000.0),
        n_scans: f(100_000.0),
        n_big: f(1_000_000.0),
    }
}

// ---------------------------------------------------------------------------
// Data layout

/// Revision key: big-endian main revision (index + 1), big-endian sub revision 0.
fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(i + 1).to_be_bytes());
    k[8..].copy_from_slice(&0u64.to_be_bytes());
    k
}

/// splitmix64: deterministic, dependency-free PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// ~302-byte record: 16-byte user key + 256 random (incompressible) value bytes +
/// 30 bytes metadata (create_rev, mod_rev, version: u64; lease: u32; flags: u16).
fn record(i: u64, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::with_capacity(302);
    let uk = format!("/registry/{:06}", i % 1_000_000);
    debug_assert_eq!(uk.len(), 16);
    v.extend_from_slice(uk.as_bytes());
    for _ in 0..32 {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v.extend_from_slice(&(i + 1).to_le_bytes());
    v.extend_from_slice(&(i + 1).to_le_bytes());
    v.extend_from_slice(&1u64.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v
}

// ---------------------------------------------------------------------------
// Engine abstraction

trait Engine: Sized {
    fn open(dir: &Path) -> Self;
    /// Insert all items and make them durable before returning.
    fn put_batch(&mut self, items: &[([u8; 16], Vec<u8>)]);
    /// Delete all keys and make the deletion durable before returning.
    fn delete_batch(&mut self, keys: &[[u8; 16]]);
    /// Random point gets; returns (found, total value bytes).
    fn gets(&self, n: u64, key_space: u64, rng: &mut Rng) -> (u64, u64);
    /// Scans of SCAN_LEN consecutive keys from random starts; returns keys visited.
    fn scans(&self, n: u64, key_space: u64, rng: &mut Rng) -> u64;
    /// Full iteration (warm-up); returns number of keys.
    fn iterate_all(&self) -> u64;
    /// Wait for background flush/compaction to finish (LSM engines).
    fn settle(&mut self) {}
    /// Explicit compaction where the engine offers one. Returns false if unsupported.
    fn compact(&mut self) -> bool {
        false
    }
    fn close(self);
}

// ---- redb -----------------------------------------------------------------

const KV: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct Redb {
    db: redb::Database,
}

impl Engine for Redb {
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("data.redb"))
            .unwrap();
        Redb { db }
    }
    fn put_batch(&mut self, items: &[([u8; 16], Vec<u8>)]) {
        // Default durability is Durability::Immediate (1-phase commit + fdatasync).
        let tx = self.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(KV).unwrap();
            for (k, v) in items {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn delete_batch(&mut self, keys: &[[u8; 16]]) {
        let tx = self.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(KV).unwrap();
            for k in keys {
                t.remove(k.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn gets(&self, n: u64, key_space: u64, rng: &mut Rng) -> (u64, u64) {
        use redb::ReadableDatabase;
        let rtx = self.db.begin_read().unwrap();
        let t = rtx.open_table(KV).unwrap();
        let (mut found, mut bytes) = (0, 0);
        for _ in 0..n {
            let k = key(rng.below(key_space));
            if let Some(v) = t.get(k.as_slice()).unwrap() {
                found += 1;
                bytes += v.value().len() as u64;
            }
        }
        (found, bytes)
    }
    fn scans(&self, n: u64, key_space: u64, rng: &mut Rng) -> u64 {
        use redb::ReadableDatabase;
        let rtx = self.db.begin_read().unwrap();
        let t = rtx.open_table(KV).unwrap();
        let mut seen = 0;
        for _ in 0..n {
            let k = key(rng.below(key_space - SCAN_LEN as u64));
            for e in t.range(k.as_slice()..).unwrap().take(SCAN_LEN) {
                let (k, v) = e.unwrap();
                seen += (k.value().len() + v.value().len() > 0) as u64;
            }
        }
        seen
    }
    fn iterate_all(&self) -> u64 {
        use redb::{ReadableDatabase, ReadableTable};
        let rtx = self.db.begin_read().unwrap();
        let t = rtx.open_table(KV).unwrap();
        t.iter().unwrap().map(|e| e.unwrap().1.value().len() as u64 / 302).sum()
    }
    fn compact(&mut self) -> bool {
        let mut rounds = 0;
        while rounds < 10 && self.db.compact().unwrap() {
            rounds += 1;
        }
        eprintln!("redb compact: {rounds} round(s) performed work");
        true
    }
    fn close(self) {
        drop(self.db);
    }
}

// ---- fjall ----------------------------------------------------------------

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

/// fjall journal persistence used for "durable" commits. SyncAll = fsync(2).
const FJALL_PERSIST: fjall::PersistMode = fjall::PersistMode::SyncAll;

impl Engine for Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir)
            .cache_size(CACHE_BYTES as u64)
            .open()
            .unwrap();
        let ks = db
            .keyspace("kv", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Fjall { db, ks }
    }
    fn put_batch(&mut self, items: &[([u8; 16], Vec<u8>)]) {
        let mut b = self.db.batch().durability(Some(FJALL_PERSIST));
        for (k, v) in items {
            b.insert(&self.ks, k.as_slice(), v.as_slice());
        }
        b.commit().unwrap();
    }
    fn delete_batch(&mut self, keys: &[[u8; 16]]) {
        let mut b = self.db.batch().durability(Some(FJALL_PERSIST));
        for k in keys {
            b.remove(&self.ks, k.as_slice());
        }
        b.commit().unwrap();
    }
    fn gets(&self, n: u64, key_space: u64, rng: &mut Rng) -> (u64, u64) {
        let (mut found, mut bytes) = (0, 0);
        for _ in 0..n {
            let k = key(rng.below(key_space));
            if let Some(v) = self.ks.get(k).unwrap() {
                found += 1;
                bytes += v.len() as u64;
            }
        }
        (found, bytes)
    }
    fn scans(&self, n: u64, key_space: u64, rng: &mut Rng) -> u64 {
        let mut seen = 0;
        for _ in 0..n {
            let k = key(rng.below(key_space - SCAN_LEN as u64));
            for g in self.ks.range(k.as_slice()..).take(SCAN_LEN) {
                let (k, v) = g.into_inner().unwrap();
                seen += (k.len() + v.len() > 0) as u64;
            }
        }
        seen
    }
    fn iterate_all(&self) -> u64 {
        self.ks
            .iter()
            .map(|g| g.into_inner().unwrap().1.len() as u64 / 302)
            .sum()
    }
    fn settle(&mut self) {
        // Wait until no flush/compaction has been running for 3 consecutive polls.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut idle = 0;
        while idle < 3 && Instant::now() < deadline {
            if self.db.outstanding_flushes() == 0 && self.db.active_compactions() == 0 {
                idle += 1;
            } else {
                idle = 0;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn compact(&mut self) -> bool {
        // major_compact is #[doc(hidden)] in fjall 3 but public.
        self.ks.rotate_memtable_and_wait().unwrap();
        self.ks.major_compact().unwrap();
        self.settle();
        true
    }
    fn close(self) {
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
        drop(self.ks);
        drop(self.db);
    }
}

// ---- sled -----------------------------------------------------------------

struct Sled {
    db: sled::Db,
    tree: sled::Tree,
}

impl Engine for Sled {
    fn open(dir: &Path) -> Self {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES as u64)
            .open()
            .unwrap();
        let tree = db.open_tree("kv").unwrap();
        Sled { db, tree }
    }
    fn put_batch(&mut self, items: &[([u8; 16], Vec<u8>)]) {
        let mut b = sled::Batch::default();
        for (k, v) in items {
            b.insert(k.as_slice(), v.as_slice());
        }
        self.tree.apply_batch(b).unwrap();
        // sled's "durable" flush: sync_file_range on Linux (see RESULTS.md).
        self.tree.flush().unwrap();
    }
    fn delete_batch(&mut self, keys: &[[u8; 16]]) {
        let mut b = sled::Batch::default();
        for k in keys {
            b.remove(k.as_slice());
        }
        self.tree.apply_batch(b).unwrap();
        self.tree.flush().unwrap();
    }
    fn gets(&self, n: u64, key_space: u64, rng: &mut Rng) -> (u64, u64) {
        let (mut found, mut bytes) = (0, 0);
        for _ in 0..n {
            let k = key(rng.below(key_space));
            if let Some(v) = self.tree.get(k).unwrap() {
                found += 1;
                bytes += v.len() as u64;
            }
        }
        (found, bytes)
    }
    fn scans(&self, n: u64, key_space: u64, rng: &mut Rng) -> u64 {
        let mut seen = 0;
        for _ in 0..n {
            let k = key(rng.below(key_space - SCAN_LEN as u64));
            for e in self.tree.range(k.as_slice()..).take(SCAN_LEN) {
                let (k, v) = e.unwrap();
                seen += (k.len() + v.len() > 0) as u64;
            }
        }
        seen
    }
    fn iterate_all(&self) -> u64 {
        self.tree
            .iter()
            .map(|e| e.unwrap().1.len() as u64 / 302)
            .sum()
    }
    fn close(self) {
        self.db.flush().unwrap();
        drop(self.tree);
        drop(self.db);
    }
}

// ---------------------------------------------------------------------------
// Measurement helpers

fn report(metric: &str, value: f64) {
    println!("R {metric} {value}");
}

fn vm_hwm_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("VmHWM:") {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().unwrap();
            return kb * 1024;
        }
    }
    0
}

/// (allocated bytes as `du` counts them, apparent bytes) of a directory tree.
fn dir_size(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut alloc, mut apparent) = (0, 0);
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (a, b) = dir_size(&e.path());
            alloc += a;
            apparent += b;
        } else {
            alloc += m.blocks() * 512;
            apparent += m.len();
        }
    }
    (alloc, apparent)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn load<E: Engine>(e: &mut E, n: u64, batch: u64, rng: &mut Rng) -> f64 {
    let mut items = Vec::with_capacity(batch as usize);
    let t = Instant::now();
    let mut i = 0;
    while i < n {
        items.clear();
        let end = (i + batch).min(n);
        for j in i..end {
            items.push((key(j), record(j, rng)));
        }
        e.put_batch(&items);
        i = end;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Delete every other key (even indices) among the first `n`, `batch` per durable commit.
/// Returns (deletes/s, deletes done).
fn delete_half<E: Engine>(e: &mut E, n: u64, batch: usize) -> (f64, u64) {
    let keys: Vec<[u8; 16]> = (0..n).step_by(2).map(key).collect();
    let t = Instant::now();
    for chunk in keys.chunks(batch) {
        e.delete_batch(chunk);
    }
    (
        keys.len() as f64 / t.elapsed().as_secs_f64(),
        keys.len() as u64,
    )
}

fn ops_phase<E: Engine>(dir: &Path) {
    let sz = sizes();
    let mut rng = Rng(0x5EED);

    // 1a. put, durable commit every 100 puts (fresh database).
    let d = dir.join("put100");
    let mut e = E::open(&d);
    report("put_fsync100", load(&mut e, sz.n_ops, 100, &mut rng));
    e.close();
    std::fs::remove_dir_all(&d).unwrap();

    // 1b. put, durable commit every 10,000 puts (fresh database, kept for 2-4).
    let d = dir.join("put10k");
    let mut e = E::open(&d);
    report("put_fsync10k", load(&mut e, sz.n_ops, 10_000, &mut rng));
    e.settle();

    // warm-up: one full pass (untimed)
    let n = e.iterate_all();
    assert_eq!(n, sz.n_ops, "warm-up iteration count");

    // 2. random point gets
    let t = Instant::now();
    let (found, _bytes) = e.gets(sz.n_gets, sz.n_ops, &mut rng);
    report("get", sz.n_gets as f64 / t.elapsed().as_secs_f64());
    assert_eq!(found, sz.n_gets);

    // 3. range scans of 100 consecutive keys
    let t = Instant::now();
    let seen = e.scans(sz.n_scans, sz.n_ops, &mut rng);
    report("scan", sz.n_scans as f64 / t.elapsed().as_secs_f64());
    assert_eq!(seen, sz.n_scans * SCAN_LEN as u64);

    // 4. delete every other key, 1000 per durable commit
    let (rate, deleted) = delete_half(&mut e, sz.n_ops, 1000);
    report("delete", rate);
    assert_eq!(deleted, sz.n_ops / 2);
    let (found, _) = e.gets(1000, 1, &mut rng); // key 0 was deleted
    assert_eq!(found, 0);
    e.close();
    std::fs::remove_dir_all(&d).unwrap();
    report("rss_ops", mib(vm_hwm_bytes()));
}

fn size_phase<E: Engine>(dir: &Path) {
    // Sizes are measured with the database closed (clean shutdown), so files that an
    // engine only unlinks lazily while open (e.g. fjall's obsolete tables/journals) do not
    // count; the engine is then reopened for the next step.
    let sz = sizes();
    let mut rng = Rng(0xB16);
    let d = dir.join("big");
    let mut e = E::open(&d);
    report("load1m_fsync10k", load(&mut e, sz.n_big, 10_000, &mut rng));
    e.settle();
    e.close();
    let (alloc, apparent) = dir_size(&d);
    report("disk_loaded", mib(alloc));
    report("disk_loaded_apparent", mib(apparent));

    let mut e = E::open(&d);
    let (_, deleted) = delete_half(&mut e, sz.n_big, 1000);
    assert_eq!(deleted, sz.n_big / 2);
    e.settle();
    e.close();
    let (alloc, apparent) = dir_size(&d);
    report("disk_deleted", mib(alloc));
    report("disk_deleted_apparent", mib(apparent));

    let mut e = E::open(&d);
    let compacted = e.compact();
    e.close();
    if compacted {
        let (alloc, _) = dir_size(&d);
        report("disk_compacted", mib(alloc));
    }

    // etcd-style compaction removes the *oldest* revisions, a contiguous key prefix.
    // Also delete the remaining keys of the first half (odd indices < n/2), leaving the
    // newest 250k records, then compact again where supported.
    let mut e = E::open(&d);
    let keys: Vec<[u8; 16]> = (1..sz.n_big / 2).step_by(2).map(key).collect();
    for c in keys.chunks(1000) {
        e.delete_batch(c);
    }
    e.compact();
    e.settle();
    report("rss_1m", mib(vm_hwm_bytes()));
    e.close();
    let (alloc, _) = dir_size(&d);
    report("disk_prefix", mib(alloc));
    if std::env::var_os("BENCH_KEEP").is_none() {
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A few durable commits, to be observed with `strace -f -c`.
fn syscheck_phase<E: Engine>(dir: &Path) {
    let mut rng = Rng(1);
    let mut e = E::open(dir);
    load(&mut e, 2_000, 100, &mut rng); // 20 durable commits
    let keys: Vec<[u8; 16]> = (0..1000).map(key).collect();
    for c in keys.chunks(200) {
        e.delete_batch(c); // 5 durable commits
    }
    // Do not close cleanly: std::process::exit skips destructors, so only the
    // syscalls issued by the commits themselves (plus background threads) count.
    std::process::exit(0);
}

/// redb: commit key "a" durably, key "b" with the given durability, then abort().
fn crash_child(durability: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let db = redb::Database::create(dir.join("crash.redb")).unwrap();
    let put = |k: &[u8], d: redb::Durability| {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(d).unwrap();
        tx.open_table(KV).unwrap().insert(k, b"v".as_slice()).unwrap();
        tx.commit().unwrap();
    };
    put(b"a", redb::Durability::Immediate);
    let d = match durability {
        "none" => redb::Durability::None,
        _ => redb::Durability::Immediate,
    };
    put(b"b", d);
    // Simulated process crash: no destructors, no close.
    std::process::abort();
}

fn crash_check(dir: &Path) -> (bool, bool) {
    use redb::ReadableDatabase;
    let db = redb::Database::open(dir.join("crash.redb")).unwrap();
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(KV).unwrap();
    let a = t.get(b"a".as_slice()).unwrap().is_some();
    let b = t.get(b"b".as_slice()).unwrap().is_some();
    (a, b)
}

fn dispatch(engine: &str, f: &str, dir: &Path) {
    macro_rules! go {
        ($t:ty) => {
            match f {
                "ops" => ops_phase::<$t>(dir),
                "size" => size_phase::<$t>(dir),
                "syscheck" => syscheck_phase::<$t>(dir),
                _ => panic!("unknown phase {f}"),
            }
        };
    }
    match engine {
        "redb" => go!(Redb),
        "fjall" => go!(Fjall),
        "sled" => go!(Sled),
        _ => panic!("unknown engine {engine}"),
    }
}

// ---------------------------------------------------------------------------
// Orchestrator

fn run_child(args: &[&str]) -> Vec<(String, f64)> {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe).args(args).output().unwrap();
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("child {args:?} failed: {}", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some("R"))
                .then(|| (it.next().unwrap().to_string(), it.next().unwrap().parse().unwrap()))
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn fmt_num(x: f64) -> String {
    if x >= 100_000.0 {
        format!("{:.0}k", x / 1000.0)
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("crash") => return crash_child(&args[2], Path::new(&args[3])),
        Some(f @ ("ops" | "size" | "syscheck")) => {
            return dispatch(&args[2], f, Path::new(&args[3]))
        }
        Some(other) => panic!("unknown sub-command {other}"),
        None => {}
    }

    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let base = PathBuf::from("/tmp/rusd-backend-choice");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let started = Instant::now();
    eprintln!("loadavg at start: {}", loadavg());

    // results[engine][metric] = values over repetitions
    let mut results: BTreeMap<&str, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for rep in 0..reps {
        // rotate engine order per repetition so background noise is spread evenly
        for k in 0..ENGINES.len() {
            let engine = ENGINES[(k + rep) % ENGINES.len()];
            for phase in ["ops", "size"] {
                let dir = base.join(format!("{engine}-{phase}-{rep}"));
                let t = Instant::now();
                let r = run_child(&[phase, engine, dir.to_str().unwrap()]);
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!(
                    "rep {rep} {engine:5} {phase:4} {:6.1}s  (loadavg {})",
                    t.elapsed().as_secs_f64(),
                    loadavg()
                );
                for (m, v) in r {
                    results.entry(engine).or_default().entry(m).or_default().push(v);
                }
            }
        }
    }

    let rows: [(&str, &str); 14] = [
        ("put_fsync100", "put, durable commit every 100 (puts/s)"),
        ("put_fsync10k", "put, durable commit every 10,000 (puts/s)"),
        ("get", "point get, 1M random over 200k, warm (gets/s)"),
        ("scan", "scan 100 consecutive keys, 100k random starts (scans/s)"),
        ("delete", "delete every other key, durable per 1000 (deletes/s)"),
        ("load1m_fsync10k", "load 1M, durable every 10,000 (puts/s)"),
        ("disk_loaded", "on-disk after 1M records (MiB, allocated)"),
        ("disk_deleted", "on-disk after deleting 500k (MiB, allocated)"),
        ("disk_compacted", "on-disk after explicit compaction (MiB)"),
        ("disk_prefix", "on-disk after also deleting oldest half (250k live) + compaction (MiB)"),
        ("disk_loaded_apparent", "apparent file size after 1M (MiB)"),
        ("disk_deleted_apparent", "apparent file size after delete (MiB)"),
        ("rss_1m", "peak RSS, 1M-record run, 64 MiB cache (MiB)"),
        ("rss_ops", "peak RSS, 200k-record ops run (MiB)"),
    ];
    let header = "| metric (median of {reps}) | redb 4.6.0 | fjall 3.1.13 | sled 0.34.7 |";
    println!("{}", header.replace("{reps}", &reps.to_string()));
    println!("|---|---:|---:|---:|");
    for (m, label) in rows {
        let cells: Vec<String> = ["redb", "fjall", "sled"]
            .iter()
            .map(|e| match results.get(e).and_then(|r| r.get(m)) {
                Some(v) => fmt_num(median(v)),
                None => "n/a".to_string(),
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }

    println!("\nRaw values per repetition:\n");
    println!("| metric | redb | fjall | sled |");
    println!("|---|---|---|---|");
    for (m, _) in rows {
        let cells: Vec<String> = ["redb", "fjall", "sled"]
            .iter()
            .map(|e| match results.get(e).and_then(|r| r.get(m)) {
                Some(v) => v.iter().map(|x| fmt_num(*x)).collect::<Vec<_>>().join(" / "),
                None => "n/a".to_string(),
            })
            .collect();
        println!("| {m} | {} |", cells.join(" | "));
    }

    // redb Durability::None crash check (process abort without close).
    println!("\nredb crash check (commit \"a\" Immediate, commit \"b\" with X, then abort(), reopen):\n");
    for d in ["none", "immediate"] {
        let dir = base.join(format!("crash-{d}"));
        let exe = std::env::current_exe().unwrap();
        let st = Command::new(exe)
            .args(["crash", d, dir.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let (a, b) = crash_check(&dir);
        println!(
            "- X = {d}: child exited with {st}; after reopen a present = {a}, b present = {b}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Syscalls issued by durable commits (20 put + 5 delete commits), if strace exists.
    if Command::new("strace").arg("-V").output().is_ok() {
        println!("\nSync syscalls during 25 durable commits (`strace -f -c`):\n");
        for engine in ENGINES {
            let dir = base.join(format!("sys-{engine}"));
            let exe = std::env::current_exe().unwrap();
            let out = Command::new("strace")
                .args(["-f", "-c", "-e", "trace=fsync,fdatasync,sync_file_range,msync,sync"])
                .arg(&exe)
                .args(["syscheck", engine, dir.to_str().unwrap()])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let calls: Vec<String> = err
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let name = *f.last()?;
                    if f.len() >= 5 && ["fsync", "fdatasync", "sync_file_range", "msync", "sync"].contains(&name) {
                        Some(format!("{name}={}", f[3]))
                    } else {
                        None
                    }
                })
                .collect();
            println!("- {engine}: {}", if calls.is_empty() { "none".into() } else { calls.join(", ") });
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    eprintln!(
        "total {:.0}s, loadavg at end: {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    let _ = std::fs::remove_dir_all(&base);
}
