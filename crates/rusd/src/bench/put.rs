//! `put`: puts of a fixed value to keys of a key space, random or sequential, with optional
//! periodic compaction (as etcd's `benchmark put --compact-interval`).

use super::client::Ch;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::{CompactionRequest, PutRequest};

use super::client::Conns;
use super::driver::{self, Worker};
use super::keys::{random_value, KeySpace, Rng};
use super::report::{Recorder, Report};
use super::Global;

/// `rusd bench put`
#[derive(Args, Debug)]
pub struct PutArgs {
    /// Key size in bytes (prefix included).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys to write.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Write keys in order (request n writes key n % key-space-size) instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Key prefix (keys are the prefix then a zero-padded decimal index).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Compact every this often during the run (e.g. `1s`; 0: never).
    #[arg(long, value_parser = super::parse_duration, default_value = "0s")]
    pub compact_interval: Duration,
    /// Compact to the latest revision minus this.
    #[arg(long, default_value_t = 1000)]
    pub compact_index_delta: i64,
}

const OPS: &[&str] = &["put", "compact"];
const PUT: usize = 0;
const COMPACT: usize = 1;

struct PutWorker {
    kv: KvClient<Ch>,
    keys: Arc<KeySpace>,
    value: Arc<[u8]>,
    rng: Rng,
    sequential: bool,
    /// Highest revision seen, for the compactor.
    revision: Arc<AtomicI64>,
}

impl Worker for PutWorker {
    async fn step(&mut self, n: u64, rec: &mut Recorder) {
        let i = if self.sequential {
            n
        } else {
            self.rng.below(self.keys.size())
        };
        let req = PutRequest {
            key: self.keys.key(i),
            value: self.value.to_vec(),
            ..Default::default()
        };
        let start = Instant::now();
        let result = self.kv.put(req).await;
        if let Some(resp) = rec.result(PUT, start, result) {
            if let Some(h) = resp.header {
                self.revision.fetch_max(h.revision, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the workload.
pub async fn run(g: &Global, a: PutArgs) -> anyhow::Result<Report> {
    let conns = Conns::connect(g).await?;
    let keys = Arc::new(KeySpace::new(&a.prefix, a.key_size, a.key_space_size));
    let value: Arc<[u8]> = random_value(a.val_size, &mut Rng::new(0)).into();
    let revision = Arc::new(AtomicI64::new(0));
    let workers = (0..g.clients)
        .map(|i| PutWorker {
            kv: conns.kv(i),
            keys: keys.clone(),
            value: value.clone(),
            rng: Rng::new(i as u64 + 1),
            sequential: a.sequential_keys,
            revision: revision.clone(),
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let compactor = (!a.compact_interval.is_zero()).then(|| {
        tokio::spawn(compact_loop(
            conns.kv(0),
            a.compact_interval,
            a.compact_index_delta,
            revision.clone(),
            done.clone(),
        ))
    });
    let plan = g.plan();
    let (mut rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;
    done.store(true, Ordering::Relaxed);
    if let Some(c) = compactor {
        rec.merge(&c.await?);
    }
    let mut report = Report::new(&rec, &[PUT], elapsed.as_secs_f64());
    report.extra("last_revision", revision.load(Ordering::Relaxed));
    Ok(report)
}

/// Every `interval`, compacts to the highest revision seen minus `delta`.
async fn compact_loop(
    mut kv: KvClient<Ch>,
    interval: Duration,
    delta: i64,
    revision: Arc<AtomicI64>,
    done: Arc<AtomicBool>,
) -> Recorder {
    let mut rec = Recorder::new(OPS);
    let mut compacted = 0;
    let mut next = tokio::time::Instant::now() + interval;
    while !done.load(Ordering::Relaxed) {
        if tokio::time::Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(10).min(interval)).await;
            continue;
        }
        next += interval;
        let target = revision.load(Ordering::Relaxed) - delta;
        if target <= compacted {
            continue;
        }
        let start = Instant::now();
        let result = kv
            .compact(CompactionRequest {
                revision: target,
                physical: false,
            })
            .await;
        if rec.result(COMPACT, start, result).is_some() {
            compacted = target;
        }
    }
    rec
}
