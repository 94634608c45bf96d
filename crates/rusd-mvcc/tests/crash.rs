//! Crash safety: a child process writes in a loop and is killed with SIGKILL at a random
//! moment; the parent reopens the store and checks it against a model of the same operations.
//!
//! The child is this test binary itself, started with `--exact child_writer --ignored`; the
//! `child_writer` test does nothing unless `RUSD_CRASH_CHILD_DIR` is set. The child prints
//! `@@ <tag> <numbers>` lines on stdout (`durable` after each flush, `compact-start` before each
//! compaction, `defrag` after each defragment) that the parent reads to learn what it may
//! rely on.
//!
//! Every round continues the same database: the child resumes the deterministic operation
//! sequence where the store stands, so later rounds also crash during recovery (an index
//! rebuild, a resumed compaction). Set `RUSD_CRASH_SEED` to replay a seed (kill times stay
//! racy), `RUSD_CRASH_ROUNDS` to run more rounds, `RUSD_CRASH_KEEP=1` to keep a failing
//! scenario's database.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::ops::{Bound, ControlFlow};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rusd_mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Error, Event, EventKind, KeyValue,
    MvccStore, PutRequest, RangeRequest, RequestOp, Revision, StoreConfig, Table, TxnRequest,
    WriteTxn,
};

// ---------------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------------

const ENV_DIR: &str = "RUSD_CRASH_CHILD_DIR";
const ENV_SCENARIO: &str = "RUSD_CRASH_SCENARIO";
const ENV_KEYS: &str = "RUSD_CRASH_KEYS";
const ENV_BATCH_MS: &str = "RUSD_CRASH_BATCH_MS";
const ENV_BATCH_LIMIT: &str = "RUSD_CRASH_BATCH_LIMIT";
const ENV_CHILD_SEED: &str = "RUSD_CRASH_CHILD_SEED";

/// Kill delays, from the spawn of the child.
const KILL_MIN_MS: u64 = 50;
const KILL_MAX_MS: u64 = 1500;
/// Rounds (kills) per scenario unless `RUSD_CRASH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 4;
/// Operations of the deterministic sequence a scenario goes up to; a child that gets there
/// idles until it is killed. Bounds the parent's verification time.
const MAX_OPS: u64 = 60_000;
/// A child that is never killed (its parent died) gives up after this long.
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(60);
/// The child flushes every this many operations and reports what is durable.
const FLUSH_EVERY: u64 = 97;

/// In the applied-index scenario, every this many log entries also compacts, this many
/// revisions behind (a compaction is a log entry too, atomic with its applied index).
const LOG_COMPACT_EVERY: u64 = 131;
const LOG_COMPACT_LAG: i64 = 20;

/// (batch interval in ms, batch limit) of the child's backend, chosen per round.
const BATCHINGS: [(u64, usize); 4] = [(5, 10_000), (20, 64), (100, 10_000), (5, 16)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Puts, deletes and txns through the store's one-shot calls.
    Puts,
    /// Every operation through a `WriteTxn` that records its applied index.
    Applied,
    /// Puts, deletes and txns with compactions scheduled every so often.
    Compact,
    /// Writes while another thread defragments in a loop.
    Defrag,
    /// Writes, then a flush and a defragment with no writes around it, then idling a little.
    DefragQuiet,
    /// Writes while two threads defragment in a loop (as two clients' Defragment RPCs).
    DefragConcurrent,
}

impl Scenario {
    const ALL: [Scenario; 6] = [
        Scenario::Puts,
        Scenario::Applied,
        Scenario::Compact,
        Scenario::Defrag,
        Scenario::DefragQuiet,
        Scenario::DefragConcurrent,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Puts => "puts",
            Scenario::Applied => "applied",
            Scenario::Compact => "compact",
            Scenario::Defrag => "defrag",
            Scenario::DefragQuiet => "defrag-quiet",
            Scenario::DefragConcurrent => "defrag-concurrent",
        }
    }

    fn from_name(name: &str) -> Result<Self> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| format!("unknown scenario {name:?}"))
    }

    /// Size of the key space: larger for compaction, so that it takes several batches.
    fn keys(self) -> u64 {
        match self {
            Scenario::Puts | Scenario::Applied => 50,
            Scenario::Compact => 2000,
            Scenario::Defrag | Scenario::DefragQuiet | Scenario::DefragConcurrent => 100,
        }
    }

    fn salt(self) -> u64 {
        match self {
            Scenario::Puts => 0x1111,
            Scenario::Applied => 0x2222,
            Scenario::Compact => 0x3333,
            Scenario::Defrag => 0x4444,
            Scenario::DefragQuiet => 0x5555,
            Scenario::DefragConcurrent => 0x6666,
        }
    }
}

fn store_config(dir: &Path, batch_ms: u64, batch_limit: usize) -> StoreConfig {
    let mut config = StoreConfig::new(dir.join("db"));
    config.backend.batch_interval = Duration::from_millis(batch_ms);
    config.backend.batch_limit = batch_limit;
    config.backend.cache_size = 16 << 20;
    // Small compaction batches: more steps for a kill to fall between.
    config.compaction_batch = 16;
    config
}

// ---------------------------------------------------------------------------------------------
// Randomness (no dependency): xorshift64*
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn base_seed() -> u64 {
    if let Some(seed) = std::env::var("RUSD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return seed;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42)
}

fn rounds() -> usize {
    std::env::var("RUSD_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

// ---------------------------------------------------------------------------------------------
// The deterministic operation sequence and its model
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
        end: Vec<u8>,
    },
    /// If `cond` exists: put `a`, delete `b`; else put `b` and `c`.
    Txn {
        cond: Vec<u8>,
        a: Vec<u8>,
        b: Vec<u8>,
        c: Vec<u8>,
        i: u64,
    },
}

fn key(n: u64) -> Vec<u8> {
    format!("k{n:04}").into_bytes()
}

/// Operation `i` (1-based) of the sequence over `keys` keys.
fn op(i: u64, keys: u64) -> Op {
    if i % 11 == 10 {
        Op::Txn {
            cond: key((i * 3 + 1) % keys),
            a: key(i % keys),
            b: key((i + 17) % keys),
            c: key((i + 29) % keys),
            i,
        }
    } else if i % 7 == 6 {
        let start = (i * 13) % keys;
        Op::Delete {
            key: key(start),
            end: key(start + 1 + i % 5),
        }
    } else {
        let mut value = format!("v{i}").into_bytes();
        if i.is_multiple_of(13) {
            value.resize(1500, b'x');
        }
        Op::Put {
            key: key((i * 7) % keys),
            value,
        }
    }
}

fn txn_request(cond: &[u8], a: &[u8], b: &[u8], c: &[u8], i: u64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Greater,
            target: CompareTarget::Version(0),
            key: cond.to_vec(),
            range_end: Vec::new(),
        }],
        success: vec![
            RequestOp::Put(PutRequest::new(a.to_vec(), format!("t{i}"))),
            RequestOp::DeleteRange(DeleteRangeRequest::new(b.to_vec(), Vec::new())),
        ],
        failure: vec![
            RequestOp::Put(PutRequest::new(b.to_vec(), format!("f{i}"))),
            RequestOp::Put(PutRequest::new(c.to_vec(), format!("f{i}"))),
        ],
    }
}

/// Runs an operation through the store's one-shot calls.
fn run_op(store: &MvccStore, op: &Op) -> Result<()> {
    match op {
        Op::Put { key, value } => {
            store.put(&PutRequest::new(key.clone(), value.clone()))?;
        }
        Op::Delete { key, end } => {
            store.delete_range(&DeleteRangeRequest::new(key.clone(), end.clone()))?;
        }
        Op::Txn { cond, a, b, c, i } => {
            store.txn(&txn_request(cond, a, b, c, *i))?;
        }
    }
    Ok(())
}

/// The compaction log entry `i` makes, if any, given the revision before it and the compact
/// revision.
fn log_compaction(i: u64, base: i64, compact: i64) -> Option<i64> {
    let target = base - LOG_COMPACT_LAG;
    (i.is_multiple_of(LOG_COMPACT_EVERY) && target >= 2 && target > compact).then_some(target)
}

/// Applies log entry `i` as a server would: its operation, sometimes a compaction, and the
/// applied index, in one write transaction.
fn apply_entry(store: &MvccStore, i: u64, keys: u64) -> Result<()> {
    let compact = store.compact_revision();
    let mut w = store.write();
    let base = w.base_revision();
    run_op_in(&mut w, &op(i, keys))?;
    if let Some(target) = log_compaction(i, base, compact) {
        w.compact(target)?;
    }
    w.set_applied_index(i);
    w.commit()?;
    Ok(())
}

/// Runs an operation inside a write transaction.
fn run_op_in(w: &mut WriteTxn<'_>, op: &Op) -> Result<()> {
    match op {
        Op::Put { key, value } => {
            w.put(&PutRequest::new(key.clone(), value.clone()))?;
        }
        Op::Delete { key, end } => {
            w.delete_range(&DeleteRangeRequest::new(key.clone(), end.clone()))?;
        }
        Op::Txn { cond, a, b, c, i } => {
            w.txn(&txn_request(cond, a, b, c, *i))?;
        }
    }
    Ok(())
}

/// What the store must hold after a prefix of the sequence: etcd's semantics, in memory.
struct Model {
    keys: u64,
    /// Operations applied so far (the sequence is 1-based).
    ops: u64,
    rev: i64,
    live: BTreeMap<Vec<u8>, KeyValue>,
    /// Every record of every key, oldest first (`None`: a tombstone).
    history: BTreeMap<Vec<u8>, Vec<(Revision, Option<KeyValue>)>>,
    /// `events[r - 2]`: the events of revision `r`.
    events: Vec<Vec<Event>>,
    /// Whether the sequence is the applied-index log, which compacts now and then.
    log: bool,
    /// The log's compact revision (-1 before its first compaction).
    compact: i64,
}

impl Model {
    fn new(keys: u64) -> Self {
        Self {
            keys,
            ops: 0,
            rev: 1,
            live: BTreeMap::new(),
            history: BTreeMap::new(),
            events: Vec::new(),
            log: false,
            compact: -1,
        }
    }

    /// The model of the applied-index log (with its compactions).
    fn log(keys: u64) -> Self {
        Self {
            log: true,
            ..Self::new(keys)
        }
    }

    /// Applies the next operation; true if it made a revision.
    fn step(&mut self) -> bool {
        self.ops += 1;
        let i = self.ops;
        if self.log {
            if let Some(target) = log_compaction(i, self.rev, self.compact) {
                self.compact = target;
            }
        }
        let rev = self.rev + 1;
        let mut events = Vec::new();
        match op(i, self.keys) {
            Op::Put { key, value } => self.put(rev, &mut events, key, value),
            Op::Delete { key, end } => {
                let victims: Vec<Vec<u8>> = self
                    .live
                    .range::<[u8], _>((Bound::Included(&key[..]), Bound::Excluded(&end[..])))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in victims {
                    self.delete(rev, &mut events, k);
                }
            }
            Op::Txn { cond, a, b, c, i } => {
                if self.live.contains_key(&cond) {
                    self.put(rev, &mut events, a, format!("t{i}").into_bytes());
                    if self.live.contains_key(&b) {
                        self.delete(rev, &mut events, b);
                    }
                } else {
                    self.put(rev, &mut events, b, format!("f{i}").into_bytes());
                    self.put(rev, &mut events, c, format!("f{i}").into_bytes());
                }
            }
        }
        if events.is_empty() {
            return false;
        }
        self.rev = rev;
        self.events.push(events);
        true
    }

    fn put(&mut self, rev: i64, events: &mut Vec<Event>, key: Vec<u8>, value: Vec<u8>) {
        let sub = events.len() as i64;
        let prev = self.live.get(&key);
        let kv = KeyValue {
            key: key.clone(),
            create_revision: prev.map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.map_or(1, |p| p.version + 1),
            value,
            lease: 0,
        };
        self.history
            .entry(key.clone())
            .or_default()
            .push((Revision::new(rev, sub), Some(kv.clone())));
        events.push(Event {
            kind: EventKind::Put,
            kv: kv.clone(),
            prev_kv: None,
        });
        self.live.insert(key, kv);
    }

    fn delete(&mut self, rev: i64, events: &mut Vec<Event>, key: Vec<u8>) {
        let sub = events.len() as i64;
        self.history
            .entry(key.clone())
            .or_default()
            .push((Revision::new(rev, sub), None));
        events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: rev,
                ..KeyValue::default()
            },
            prev_kv: None,
        });
        self.live.remove(&key);
    }

    /// Applies operations until the model is at revision `rev` (just after the operation that
    /// made it).
    fn advance_to_revision(&mut self, rev: i64) -> Result<()> {
        while self.rev < rev {
            ensure!(
                self.ops < MAX_OPS + 1000,
                "the sequence never reaches revision {rev} (at {} after {} ops)",
                self.rev,
                self.ops
            );
            self.step();
        }
        ensure!(self.rev == rev, "model overshot revision {rev}");
        Ok(())
    }

    fn advance_to_op(&mut self, n: u64) {
        while self.ops < n {
            self.step();
        }
    }

    /// Every live key at revision `r`, ascending.
    fn state_at(&self, r: i64) -> Vec<KeyValue> {
        let mut out = Vec::new();
        for records in self.history.values() {
            let n = records.partition_point(|(rev, _)| rev.main <= r);
            if let Some((_, Some(kv))) = n.checked_sub(1).map(|i| &records[i]) {
                out.push(kv.clone());
            }
        }
        out
    }

    /// The events of revisions `from..=rev`.
    fn events_from(&self, from: i64) -> Vec<Event> {
        let skip = usize::try_from(from.max(2) - 2).unwrap_or(0);
        self.events.iter().skip(skip).flatten().cloned().collect()
    }

    /// The records a complete compaction at `compact` leaves: everything above it, and per key
    /// the newest record at or below it unless that is a tombstone below `compact` (a tombstone
    /// exactly at `compact` is kept).
    fn kept_records(&self, compact: i64) -> BTreeSet<Revision> {
        let mut out = BTreeSet::new();
        for records in self.history.values() {
            let n = records.partition_point(|(rev, _)| rev.main <= compact);
            for (i, (rev, kv)) in records.iter().enumerate() {
                let keep = i >= n || (i + 1 == n && (kv.is_some() || rev.main == compact));
                if keep {
                    out.insert(*rev);
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------------------------

/// The child process: does nothing unless started by a crash test.
#[test]
#[ignore = "the child process of the crash tests; they start it themselves"]
fn child_writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    if let Err(e) = child_main(PathBuf::from(dir)) {
        say(&format!("error {e:#}"));
        eprintln!("crash child failed: {e:#}");
        std::process::exit(3);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // The parent reads what it can; a write error only means it stopped listening.
    let _ = writeln!(out, "\n@@ {line}");
    let _ = out.flush();
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Result<T> {
    std::env::var(name)
        .with_context(|| format!("{name} not set"))?
        .parse()
        .ok()
        .with_context(|| format!("{name} does not parse"))
}

fn child_main(dir: PathBuf) -> Result<()> {
    let scenario = Scenario::from_name(&std::env::var(ENV_SCENARIO)?)?;
    let keys: u64 = env_parse(ENV_KEYS)?;
    let config = store_config(&dir, env_parse(ENV_BATCH_MS)?, env_parse(ENV_BATCH_LIMIT)?);
    let mut rng = Rng::new(env_parse(ENV_CHILD_SEED)?);
    let opening = Instant::now();
    let store = MvccStore::open(config).context("child: open")?;
    say(&format!(
        "ready {} {}",
        store.current_revision(),
        opening.elapsed().as_millis()
    ));
    let started = Instant::now();
    let mut next = if scenario == Scenario::Applied {
        store.applied_index() + 1
    } else {
        // Resume right after the operation that made the current revision.
        let mut model = Model::new(keys);
        model.advance_to_revision(store.current_revision())?;
        model.ops + 1
    };
    let defragmenters = match scenario {
        Scenario::Defrag => 1,
        Scenario::DefragConcurrent => 2,
        _ => 0,
    };
    for _ in 0..defragmenters {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            loop {
                say("defrag-start");
                let t = Instant::now();
                if let Err(e) = store.defragment() {
                    if defragmenters == 1 {
                        say(&format!("error defragment: {e}"));
                        std::process::exit(4);
                    }
                    // Overlapping defragments may refuse (a busy error is fine); they may not
                    // lose or corrupt anything, which the writer and the parent check.
                    say("defrag-refused");
                    continue;
                }
                n += 1;
                say(&format!("defrag {}", t.elapsed().as_millis()));
                std::thread::sleep(Duration::from_millis(n % 7));
            }
        });
    }
    loop {
        if next > MAX_OPS || started.elapsed() > CHILD_MAX_RUNTIME {
            say("idle");
            while started.elapsed() < CHILD_MAX_RUNTIME {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::process::exit(0);
        }
        if scenario == Scenario::Applied {
            apply_entry(&store, next, keys)?;
        } else {
            run_op(&store, &op(next, keys))?;
        }
        if next.is_multiple_of(FLUSH_EVERY) {
            report_durable(&store)?;
        }
        if scenario == Scenario::Compact && next.is_multiple_of(131) {
            let current = store.current_revision();
            let target = if rng.below(4) == 0 {
                current
            } else {
                current - rng.range(0, 40) as i64
            };
            if target >= 2 && target > store.compact_revision() {
                say(&format!("compact-start {target}"));
                let handle = store.compact(target)?;
                if rng.below(8) == 0 {
                    handle.wait();
                }
                say(&format!("compact {target}"));
            }
        }
        if scenario == Scenario::DefragQuiet && next.is_multiple_of(401) {
            report_durable(&store)?;
            say("defrag-start");
            let t = Instant::now();
            store.defragment()?;
            say(&format!("defrag {}", t.elapsed().as_millis()));
            // A quiet spell: a kill here finds the defragmented file with no commit after it.
            std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
        }
        next += 1;
    }
}

/// Flushes and tells the parent what is now durable: revision, applied index, compaction.
fn report_durable(store: &MvccStore) -> Result<()> {
    let rev = store.current_revision();
    let applied = store.applied_index();
    let compact = store.compact_revision();
    store.flush()?;
    say(&format!("durable {rev} {applied} {compact}"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Running and killing a child
// ---------------------------------------------------------------------------------------------

/// Kills the child if the parent gives up early, so that no writer outlives its test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a child said before it died.
#[derive(Debug, Default)]
struct ChildReport {
    /// Last `durable` line: revision, applied index, compact revision.
    durable: Option<(i64, u64, i64)>,
    /// Every compaction the child started (it may have been persisted or not).
    compacts_started: Vec<i64>,
    defrags: usize,
    /// Defragments that returned an error (tolerated only when they overlap).
    defrags_refused: usize,
    /// Milliseconds the finished defragments took.
    defrag_ms: Vec<i64>,
    /// Killed between a `defrag-start` and its end.
    in_defrag: bool,
    ready: bool,
    /// Milliseconds the child's open (index rebuild, recovery) took.
    open_ms: i64,
    idle: bool,
    /// Whether the child was still running when killed (false: it ended on its own).
    killed: bool,
    killed_after: Duration,
}

struct ChildSpec<'a> {
    dir: &'a Path,
    scenario: Scenario,
    batching: (u64, usize),
    delay: Duration,
    seed: u64,
}

fn run_child(spec: &ChildSpec<'_>) -> Result<ChildReport> {
    let exe = std::env::current_exe().context("current_exe")?;
    let child = Command::new(exe)
        .args([
            "child_writer",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ENV_DIR, spec.dir)
        .env(ENV_SCENARIO, spec.scenario.name())
        .env(ENV_KEYS, spec.scenario.keys().to_string())
        .env(ENV_BATCH_MS, spec.batching.0.to_string())
        .env(ENV_BATCH_LIMIT, spec.batching.1.to_string())
        .env(ENV_CHILD_SEED, spec.seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn the child")?;
    let started = Instant::now();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().context("child stdout")?;
    let mut stderr = child.0.stderr.take().context("child stderr")?;
    let out_reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
            .collect::<Vec<String>>()
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut exited: Option<ExitStatus> = None;
    while started.elapsed() < spec.delay {
        if let Some(status) = child.0.try_wait()? {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed_after = started.elapsed();
    let status = match exited {
        Some(status) => status,
        None => {
            child.0.kill().context("kill the child")?;
            child.0.wait()?
        }
    };
    let lines = out_reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?;
    let err = err_reader
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader panicked"))?;
    let mut report = ChildReport {
        killed: status.signal() == Some(9),
        killed_after,
        ..ChildReport::default()
    };
    let mut errors = Vec::new();
    for line in &lines {
        let Some(at) = line.find("@@ ") else { continue };
        let mut words = line[at + 3..].split_whitespace();
        let tag = words.next().unwrap_or_default();
        let nums: Vec<i64> = words.filter_map(|w| w.parse().ok()).collect();
        match (tag, nums.as_slice()) {
            ("durable", [rev, applied, compact]) => {
                report.durable = Some((*rev, u64::try_from(*applied)?, *compact));
            }
            ("compact-start", [rev]) => report.compacts_started.push(*rev),
            ("defrag-start", []) => report.in_defrag = true,
            ("defrag-refused", []) => report.defrags_refused += 1,
            ("defrag", [ms]) => {
                report.defrags += 1;
                report.defrag_ms.push(*ms);
                report.in_defrag = false;
            }
            ("ready", [_, ms]) => {
                report.ready = true;
                report.open_ms = *ms;
            }
            ("idle", _) => report.idle = true,
            ("compact", _) => {}
            _ => errors.push(line.clone()),
        }
    }
    if !(report.killed || status.success() && report.idle) {
        bail!(
            "the child died on its own ({status}) after {killed_after:?}\n\
             child stdout errors: {errors:?}\nchild stderr:\n{err}"
        );
    }
    ensure!(
        errors.is_empty(),
        "the child reported errors: {errors:?}\nstderr:\n{err}"
    );
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

fn all_keys(revision: i64) -> RangeRequest {
    RangeRequest {
        revision,
        ..RangeRequest::new("k", "l")
    }
}

fn show_kv(kv: &KeyValue) -> String {
    let value: String = String::from_utf8_lossy(&kv.value)
        .chars()
        .take(12)
        .collect();
    format!(
        "{}={value} (c{} m{} v{})",
        String::from_utf8_lossy(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    )
}

fn show_event(e: &Event) -> String {
    match e.kind {
        EventKind::Put => format!("put {}", show_kv(&e.kv)),
        EventKind::Delete => format!(
            "delete {} at {}",
            String::from_utf8_lossy(&e.kv.key),
            e.kv.mod_revision
        ),
    }
}

/// The keys on which two ranges differ (at most 8 of them).
fn diff_kvs(got: &[KeyValue], want: &[KeyValue]) -> String {
    let got: BTreeMap<&[u8], &KeyValue> = got.iter().map(|kv| (&kv.key[..], kv)).collect();
    let want: BTreeMap<&[u8], &KeyValue> = want.iter().map(|kv| (&kv.key[..], kv)).collect();
    let keys: BTreeSet<&[u8]> = got.keys().chain(want.keys()).copied().collect();
    let show = |kv: Option<&&KeyValue>| kv.map_or("absent".to_string(), |kv| show_kv(kv));
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| got.get(k) != want.get(k))
        .map(|k| format!("got {}, want {}", show(got.get(k)), show(want.get(k))))
        .collect();
    format!(
        "{} keys differ ({} vs {} expected): {}",
        diffs.len(),
        got.len(),
        want.len(),
        diffs.iter().take(8).cloned().collect::<Vec<_>>().join("; ")
    )
}

/// Where two event streams part.
fn diff_events(got: &[Event], want: &[Event]) -> String {
    let i = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let around = |events: &[Event]| {
        events
            .iter()
            .skip(i.saturating_sub(1))
            .take(3)
            .map(show_event)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    format!(
        "{} events vs {} expected; first difference at event {i}:\n    got:  {}\n    want: {}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    )
}

/// The store holds exactly the model's history from its compaction point on, and nothing
/// below it can be read.
fn check_contents(store: &MvccStore, model: &Model, rng: &mut Rng) -> Result<()> {
    let current = store.current_revision();
    ensure!(
        current == model.rev,
        "current revision {current}, the model is at {}",
        model.rev
    );
    let compact = store.compact_revision();
    ensure!(
        compact <= current,
        "compact revision {compact} above current {current}"
    );
    let lo = compact.max(1);
    let mut revs: BTreeSet<i64> = [lo, lo + 1, current - 1, current].into_iter().collect();
    for _ in 0..6 {
        revs.insert(lo + (rng.next() % (current - lo + 1) as u64) as i64);
    }
    for r in revs.into_iter().filter(|r| (lo..=current).contains(r)) {
        let got = store
            .range(&all_keys(r))
            .with_context(|| format!("range at revision {r} (compact {compact})"))?
            .kvs;
        let want = model.state_at(r);
        ensure!(
            got == want,
            "range at revision {r} (current {current}, compact {compact}) differs from the \
             model: {}",
            diff_kvs(&got, &want)
        );
    }
    // Every revision after the compaction point, whole, in order: nothing torn, nothing extra.
    let from = if compact > 0 { compact + 1 } else { 2 };
    let (events, next) = store
        .events_since(from, usize::MAX, false)
        .with_context(|| format!("events since {from}"))?;
    let want = model.events_from(from);
    ensure!(
        events == want,
        "events since {from} (current {current}) differ from the model: {}",
        diff_events(&events, &want)
    );
    ensure!(next == current + 1, "events_since continues at {next}");
    if compact >= 2 {
        for r in [compact - 1, 1] {
            match store.range(&all_keys(r)) {
                Err(Error::Compacted { .. }) => {}
                other => bail!(
                    "range at {r} below the compact revision {compact} gave {:?}",
                    other.map(|r| r.kvs.len())
                ),
            }
        }
        match store.events_since(compact - 1, usize::MAX, false) {
            Err(Error::Compacted { .. }) => {}
            other => bail!(
                "events since {} below the compact revision gave {:?}",
                compact - 1,
                other.map(|(e, _)| e.len())
            ),
        }
    }
    Ok(())
}

fn meta_i64(store: &MvccStore, key: &[u8]) -> Result<Option<i64>> {
    Ok(store
        .backend()
        .read()
        .get(Table::Meta, key)?
        .and_then(|v| v.try_into().ok().map(i64::from_be_bytes)))
}

/// Waits until no compaction is queued or running, then checks the raw kv table holds exactly
/// the records a complete compaction at the compact revision keeps, and the meta table says
/// the compaction finished.
fn check_records(store: &MvccStore, model: &Model) -> Result<()> {
    // hash_kv settles the history first: it waits for the compaction thread to be idle.
    store.hash_kv(0).context("hash_kv")?;
    let compact = store.compact_revision();
    let mut got = BTreeSet::new();
    let mut bad = None;
    store.backend().read().scan(
        Table::Kv,
        (Bound::Unbounded, Bound::Unbounded),
        false,
        |k, _| {
            match Revision::from_bytes(k) {
                Some(rev) => {
                    got.insert(rev);
                }
                None => bad = Some(k.to_vec()),
            }
            ControlFlow::Continue(())
        },
    )?;
    ensure!(bad.is_none(), "a kv record key is not a revision: {bad:?}");
    let want = model.kept_records(compact);
    if got != want {
        let missing: Vec<_> = want.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&want).take(5).collect();
        bail!(
            "after compaction at {compact} settled, the kv table holds {} records, {} \
             expected; missing {missing:?}, extra {extra:?}",
            got.len(),
            want.len()
        );
    }
    if compact > 0 {
        let scheduled = meta_i64(store, b"scheduledCompactRev")?;
        let finished = meta_i64(store, b"finishedCompactRev")?;
        ensure!(
            scheduled == Some(compact) && finished == Some(compact),
            "compact revision {compact}, but meta says scheduled {scheduled:?}, finished \
             {finished:?}"
        );
    }
    Ok(())
}

/// What the parent knows is durable: from the child's reports and its own clean closes.
#[derive(Clone, Copy, Debug)]
struct Durable {
    rev: i64,
    applied: u64,
    compact: i64,
}

impl Durable {
    fn absorb(&mut self, report: &ChildReport) {
        if let Some((rev, applied, compact)) = report.durable {
            self.rev = self.rev.max(rev);
            self.applied = self.applied.max(applied);
            self.compact = self.compact.max(compact);
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    kills: usize,
    idle: usize,
    max_rev: i64,
    compacts_started: usize,
    unfinished_compactions: usize,
    defrags: usize,
    max_defrag_ms: i64,
    defrags_refused: usize,
    killed_in_defrag: usize,
    killed_before_ready: usize,
    max_open_ms: i64,
    leftover_defrag_files: usize,
}

/// Reopens after a kill and checks everything; leaves the store closed cleanly with one more
/// revision (or, for `Applied`, a few more log entries) written by the parent.
fn verify_round(
    dir: &Path,
    scenario: Scenario,
    durable: &mut Durable,
    report: &ChildReport,
    rng: &mut Rng,
    stats: &mut Stats,
) -> Result<()> {
    let keys = scenario.keys();
    let temp = dir.join("db.defrag");
    if temp.exists() {
        stats.leftover_defrag_files += 1;
    }
    let store = MvccStore::open(store_config(dir, 100, 10_000)).context("reopen after the kill")?;
    ensure!(
        !temp.exists(),
        "open left the defragment's partial copy behind"
    );
    let current = store.current_revision();
    ensure!(
        current >= durable.rev,
        "lost acknowledged writes: revision {} was reported durable, the reopened store is at \
         {current}",
        durable.rev
    );
    let compact = store.compact_revision();
    ensure!(
        compact >= durable.compact,
        "lost a compaction: {} was durable, the reopened store says {compact}",
        durable.compact
    );
    ensure!(
        scenario == Scenario::Applied
            || compact == durable.compact
            || report.compacts_started.contains(&compact),
        "compact revision {compact} after reopening is neither the durable one ({}) nor one the \
         child scheduled ({:?})",
        durable.compact,
        report.compacts_started
    );
    if compact > 0 && meta_i64(&store, b"finishedCompactRev")? != Some(compact) {
        stats.unfinished_compactions += 1;
    }
    stats.max_rev = stats.max_rev.max(current);
    let mut model = if scenario == Scenario::Applied {
        Model::log(keys)
    } else {
        Model::new(keys)
    };
    if scenario == Scenario::Applied {
        let applied = store.applied_index();
        ensure!(
            applied >= durable.applied,
            "lost acknowledged log entries: applied index {} was reported durable, the reopened \
             store says {applied}",
            durable.applied
        );
        model.advance_to_op(applied);
        ensure!(
            current == model.rev,
            "applied index {applied} and the data disagree: the data is at revision {current}, \
             but entries 1..={applied} make revision {}",
            model.rev
        );
        ensure!(
            compact == model.compact,
            "applied index {applied} and the compaction disagree: the store is compacted at \
             {compact}, entries 1..={applied} compact at {}",
            model.compact
        );
    } else {
        model.advance_to_revision(current)?;
    }
    // Right after open, while a resumed compaction may still be running.
    check_contents(&store, &model, rng).context("just after reopening")?;
    check_records(&store, &model)?;
    check_contents(&store, &model, rng).context("after the compactor went idle")?;

    // The store takes new writes, numbered on from where it stands.
    if scenario == Scenario::Applied {
        // A restarted server re-applies its log from applied_index + 1.
        for _ in 0..25 {
            model.step();
            apply_entry(&store, model.ops, keys)?;
        }
        ensure!(
            store.applied_index() == model.ops,
            "applied index {} after re-applying up to {}",
            store.applied_index(),
            model.ops
        );
    } else {
        loop {
            let changed = model.step();
            run_op(&store, &op(model.ops, keys))?;
            if changed {
                break;
            }
        }
        ensure!(
            model.rev == current + 1,
            "model at {} after one write",
            model.rev
        );
    }
    check_contents(&store, &model, rng).context("after new writes")?;
    store.close()?;
    drop(store);
    durable.rev = model.rev;
    durable.applied = model.ops;
    durable.compact = compact;
    Ok(())
}

/// For `Applied`: an uninterrupted run of the same log gives the same store, byte for byte.
fn compare_with_uninterrupted(dir: &Path, scenario: Scenario) -> Result<()> {
    let keys = scenario.keys();
    let store = MvccStore::open(store_config(dir, 100, 10_000))?;
    let applied = store.applied_index();
    let reference_dir = tempfile::tempdir()?;
    let reference = MvccStore::open(store_config(reference_dir.path(), 100, 10_000))?;
    for i in 1..=applied {
        apply_entry(&reference, i, keys)?;
    }
    // Both with their compactions settled.
    let (want, got) = (reference.hash_kv(0)?, store.hash_kv(0)?);
    ensure!(
        want == got,
        "hash_kv differs from an uninterrupted run: {got:?} vs {want:?}"
    );
    ensure!(
        reference.current_revision() == store.current_revision(),
        "uninterrupted run ends at revision {}, the crashed one at {}",
        reference.current_revision(),
        store.current_revision()
    );
    ensure!(
        reference.hash()? == store.hash()?,
        "the crashed and re-applied store differs from an uninterrupted run of entries 1..={applied}"
    );
    reference.close()?;
    store.close()?;
    Ok(())
}

fn crash_scenario(scenario: Scenario) -> Result<()> {
    let base = base_seed();
    let seed = base ^ scenario.salt();
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir()?;
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut durable = Durable {
        rev: 1,
        applied: 0,
        compact: -1,
    };
    let mut result = Ok(());
    for round in 0..rounds() {
        let (batch_ms, batch_limit) = BATCHINGS[rng.below(BATCHINGS.len())];
        let spec = ChildSpec {
            dir: tmp.path(),
            scenario,
            batching: (batch_ms, batch_limit),
            // One round in five kills early, while the child may still be opening (recovering).
            delay: Duration::from_millis(if rng.below(5) == 0 {
                rng.range(5, 2 * KILL_MIN_MS)
            } else {
                rng.range(KILL_MIN_MS, KILL_MAX_MS)
            }),
            seed: rng.next(),
        };
        let outcome = run_child(&spec).and_then(|report| {
            durable.absorb(&report);
            stats.kills += usize::from(report.killed);
            stats.idle += usize::from(report.idle);
            stats.compacts_started += report.compacts_started.len();
            stats.defrags += report.defrags;
            stats.defrags_refused += report.defrags_refused;
            stats.killed_in_defrag += usize::from(report.killed && report.in_defrag);
            stats.killed_before_ready += usize::from(!report.ready);
            stats.max_open_ms = stats.max_open_ms.max(report.open_ms);
            let longest = report.defrag_ms.iter().copied().max().unwrap_or(0);
            stats.max_defrag_ms = stats.max_defrag_ms.max(longest);
            verify_round(
                tmp.path(),
                scenario,
                &mut durable,
                &report,
                &mut rng,
                &mut stats,
            )
            .with_context(|| {
                format!(
                    "child killed after {:?} (ready: {}), durable {:?}",
                    report.killed_after, report.ready, report.durable
                )
            })
        });
        if let Err(e) = outcome {
            result = Err(e.context(format!(
                "round {round} (batch interval {batch_ms} ms, batch limit {batch_limit})"
            )));
            break;
        }
    }
    if result.is_ok() && scenario == Scenario::Applied {
        result = compare_with_uninterrupted(tmp.path(), scenario);
    }
    if let Err(e) = result {
        let kept = if std::env::var_os("RUSD_CRASH_KEEP").is_some() {
            format!("the database is kept in {}", tmp.keep().display())
        } else {
            "set RUSD_CRASH_KEEP=1 to keep the database".to_string()
        };
        return Err(e.context(format!(
            "crash scenario {} failed; seed {base} (rerun with RUSD_CRASH_SEED={base}); {kept}",
            scenario.name()
        )));
    }
    eprintln!(
        "crash scenario {}: {:?} in {:?} (seed {base})",
        scenario.name(),
        stats,
        started.elapsed()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// Puts, deletes and txns; killed at random: every flushed revision survives, every revision is
/// whole, and the store goes on from where it stands.
#[test]
fn crash_during_writes_loses_nothing_flushed_and_tears_nothing() {
    crash_scenario(Scenario::Puts).unwrap();
}

/// The applied index is atomic with the data it covers: re-applying the log from it gives
/// the same store as an uninterrupted run.
#[test]
fn crash_keeps_the_applied_index_atomic_with_the_data() {
    crash_scenario(Scenario::Applied).unwrap();
}

/// Killed while compactions are scheduled and running: the compact revision is the old or a
/// new one, reads at or above it are intact, reads below fail, and the compaction completes
/// after reopening.
#[test]
fn crash_during_compaction_resumes_it() {
    crash_scenario(Scenario::Compact).unwrap();
}

/// Killed while defragmenting under writes: the store reopens with every flushed write.
#[test]
fn crash_during_defragment_under_writes() {
    crash_scenario(Scenario::Defrag).unwrap();
}

/// Killed around a defragment with nothing written meanwhile (its copy must be durable by
/// itself).
#[test]
fn crash_after_a_quiet_defragment() {
    crash_scenario(Scenario::DefragQuiet).unwrap();
}

/// Killed while two defragments overlap under writes: they must not lose each other's
/// commits (defragments have to be serialised).
#[test]
fn crash_during_overlapping_defragments() {
    crash_scenario(Scenario::DefragConcurrent).unwrap();
}

/// The model itself: a few hand-checked steps of the sequence.
#[test]
fn model_follows_etcd_semantics() {
    let mut m = Model::new(50);
    // ops 1..=5 are puts of keys 7, 14, 21, 28, 35.
    m.advance_to_op(5);
    assert_eq!(m.rev, 6);
    assert_eq!(m.live.len(), 5);
    // op 6 deletes [k0028, k0030): one key.
    assert!(m.step());
    assert_eq!(m.rev, 7);
    assert!(!m.live.contains_key(&key(28)));
    assert_eq!(m.state_at(6).len(), 5);
    assert_eq!(m.state_at(7).len(), 4);
    // After a compaction at 7 the tombstone at exactly 7 stays.
    assert!(m.kept_records(7).contains(&Revision::new(7, 0)));
    assert!(!m.kept_records(8).contains(&Revision::new(7, 0)));
    assert!(!m.kept_records(8).contains(&Revision::new(5, 0)));
    assert!(m.kept_records(8).contains(&Revision::new(6, 0)));
}
