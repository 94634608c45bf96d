//! `txn-mixed <key> [range_end]`: txns that are a range over `[key, range_end)` or a put to the
//! key space (request n puts key n % key-space-size), `--rw-ratio` reads per write; reads and
//! writes are reported separately under `ops`.

use super::client::Ch;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::request_op::Request;
use rusd_proto::etcdserverpb::{PutRequest, RangeRequest, RequestOp, TxnRequest};

use super::client::Conns;
use super::driver::{self, Worker};
use super::keys::{random_value, KeySpace, Rng};
use super::report::{Recorder, Report};
use super::{Consistency, Global};

/// `rusd bench txn-mixed`
#[derive(Args, Debug)]
pub struct TxnMixedArgs {
    /// The range start of reads.
    pub key: String,
    /// The range end of reads (exclusive); a single key when absent.
    pub range_end: Option<String>,
    /// The range end of reads, as etcd's flag (same as the positional argument).
    #[arg(long, conflicts_with = "range_end")]
    pub end_key: Option<String>,
    /// Reads per write.
    #[arg(long, default_value_t = 1.0)]
    pub rw_ratio: f64,
    /// Key size of writes in bytes (prefix included).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size of writes in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys to write.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Key prefix of writes.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Linearizable (`l`) or serializable (`s`) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Most keys per read.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
}

const OPS: &[&str] = &["read", "write"];
const READ: usize = 0;
const WRITE: usize = 1;

struct MixedWorker {
    kv: KvClient<Ch>,
    read: Arc<RangeRequest>,
    keys: Arc<KeySpace>,
    value: Arc<[u8]>,
    read_share: f64,
    rng: Rng,
}

impl Worker for MixedWorker {
    async fn step(&mut self, n: u64, rec: &mut Recorder) {
        let (op, request) = if self.rng.unit() < self.read_share {
            (READ, Request::RequestRange((*self.read).clone()))
        } else {
            let put = PutRequest {
                key: self.keys.key(n),
                value: self.value.to_vec(),
                ..Default::default()
            };
            (WRITE, Request::RequestPut(put))
        };
        let req = TxnRequest {
            success: vec![RequestOp {
                request: Some(request),
            }],
            ..Default::default()
        };
        let start = Instant::now();
        let result = self.kv.txn(req).await;
        rec.result(op, start, result);
    }
}

/// Runs the workload.
pub async fn run(g: &Global, a: TxnMixedArgs) -> anyhow::Result<Report> {
    if !(a.rw_ratio >= 0.0 && a.rw_ratio.is_finite()) {
        bail!("--rw-ratio must be a non-negative number");
    }
    let conns = Conns::connect(g).await?;
    let read = Arc::new(RangeRequest {
        key: a.key.into_bytes(),
        range_end: a
            .range_end
            .or(a.end_key)
            .map(String::into_bytes)
            .unwrap_or_default(),
        limit: a.limit,
        serializable: a.consistency.serializable(),
        ..Default::default()
    });
    let keys = Arc::new(KeySpace::new(&a.prefix, a.key_size, a.key_space_size));
    let value: Arc<[u8]> = random_value(a.val_size, &mut Rng::new(0)).into();
    let read_share = a.rw_ratio / (1.0 + a.rw_ratio);
    let workers = (0..g.clients)
        .map(|i| MixedWorker {
            kv: conns.kv(i),
            read: read.clone(),
            keys: keys.clone(),
            value: value.clone(),
            read_share,
            rng: Rng::new(i as u64 + 1),
        })
        .collect();
    let plan = g.plan();
    let (rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;
    let mut report = Report::new(&rec, &[READ, WRITE], elapsed.as_secs_f64());
    report.extra("rw_ratio", a.rw_ratio);
    Ok(report)
}
