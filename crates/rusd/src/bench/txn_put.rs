//! `txn-put`: txns of `--txn-ops` puts to distinct random keys of a key space.

use super::client::Ch;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::request_op::Request;
use rusd_proto::etcdserverpb::{PutRequest, RequestOp, TxnRequest};

use super::client::Conns;
use super::driver::{self, Worker};
use super::keys::{random_value, KeySpace, Rng};
use super::report::{Recorder, Report};
use super::Global;

/// `rusd bench txn-put`
#[derive(Args, Debug)]
pub struct TxnPutArgs {
    /// Key size in bytes (prefix included).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys to write (at least --txn-ops: a txn may not put a key twice).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Puts per txn.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
    /// Key prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

const OPS: &[&str] = &["txn"];

struct TxnPutWorker {
    kv: KvClient<Ch>,
    keys: Arc<KeySpace>,
    value: Arc<[u8]>,
    ops: u64,
    rng: Rng,
}

impl Worker for TxnPutWorker {
    async fn step(&mut self, _n: u64, rec: &mut Recorder) {
        // Consecutive keys from a random start: distinct within the txn.
        let first = self.rng.below(self.keys.size());
        let success = (0..self.ops)
            .map(|j| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: self.keys.key(first + j),
                    value: self.value.to_vec(),
                    ..Default::default()
                })),
            })
            .collect();
        let req = TxnRequest {
            success,
            ..Default::default()
        };
        let start = Instant::now();
        let result = self.kv.txn(req).await;
        rec.result(0, start, result);
    }
}

/// Runs the workload.
pub async fn run(g: &Global, a: TxnPutArgs) -> anyhow::Result<Report> {
    if a.txn_ops == 0 || a.txn_ops > a.key_space_size.max(1) {
        bail!("--txn-ops must be between 1 and --key-space-size");
    }
    let conns = Conns::connect(g).await?;
    let keys = Arc::new(KeySpace::new(&a.prefix, a.key_size, a.key_space_size));
    let value: Arc<[u8]> = random_value(a.val_size, &mut Rng::new(0)).into();
    let workers = (0..g.clients)
        .map(|i| TxnPutWorker {
            kv: conns.kv(i),
            keys: keys.clone(),
            value: value.clone(),
            ops: a.txn_ops,
            rng: Rng::new(i as u64 + 1),
        })
        .collect();
    let plan = g.plan();
    let (rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;
    let mut report = Report::new(&rec, &[0], elapsed.as_secs_f64());
    report.extra("txn_ops", a.txn_ops);
    Ok(report)
}
