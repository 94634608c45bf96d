//! `range <key> [range_end]`: the same range request over and over.

use super::client::Ch;
use std::time::Instant;

use clap::Args;
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::RangeRequest;

use super::client::Conns;
use super::driver::{self, Worker};
use super::report::{Recorder, Report};
use super::{Consistency, Global};

/// `rusd bench range`
#[derive(Args, Debug)]
pub struct RangeArgs {
    /// The key (or range start).
    pub key: String,
    /// The range end (exclusive); a single key when absent.
    pub range_end: Option<String>,
    /// Linearizable (`l`) or serializable (`s`) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Most keys per response (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Return keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// Return the count only.
    #[arg(long)]
    pub count_only: bool,
}

const OPS: &[&str] = &["range"];

struct RangeWorker {
    kv: KvClient<Ch>,
    req: RangeRequest,
}

impl Worker for RangeWorker {
    async fn step(&mut self, _n: u64, rec: &mut Recorder) {
        let start = Instant::now();
        let result = self.kv.range(self.req.clone()).await;
        rec.result(0, start, result);
    }
}

/// Runs the workload.
pub async fn run(g: &Global, a: RangeArgs) -> anyhow::Result<Report> {
    let conns = Conns::connect(g).await?;
    let req = RangeRequest {
        key: a.key.into_bytes(),
        range_end: a.range_end.map(String::into_bytes).unwrap_or_default(),
        limit: a.limit,
        serializable: a.consistency.serializable(),
        keys_only: a.keys_only,
        count_only: a.count_only,
        ..Default::default()
    };
    let workers = (0..g.clients)
        .map(|i| RangeWorker {
            kv: conns.kv(i),
            req: req.clone(),
        })
        .collect();
    let plan = g.plan();
    let (rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;
    Ok(Report::new(&rec, &[0], elapsed.as_secs_f64()))
}
