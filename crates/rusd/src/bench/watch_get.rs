//! `watch-get` (etcd's): `--events` puts to one key, then `--watchers` watchers over
//! `--streams` streams catch up on that history from the first put's revision while clients
//! run serializable gets of the key. Headline: the gets. `events_received` should equal
//! `--events` × `--watchers`; a shortfall is a `MissingEvent` error under `ops.watch`.

use super::client::Ch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::{PutRequest, RangeRequest, WatchCreateRequest, WatchResponse};
use tokio::sync::{oneshot, watch as signal};
use tonic::Code;

use super::client::Conns;
use super::driver::{self, Plan, Worker};
use super::report::{Recorder, Report, MISSING_EVENT};
use super::watcher::{self, canceled, Handler};
use super::Global;

/// `rusd bench watch-get`
#[derive(Args, Debug)]
pub struct WatchGetArgs {
    /// Watchers in all.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: usize,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Puts to the key before watching: the history each watcher catches up on.
    #[arg(long, default_value_t = 8)]
    pub events: u64,
    /// Gets to send [default: the global --total].
    #[arg(long)]
    pub get_total: Option<u64>,
    /// The key written, watched and read.
    #[arg(long, default_value = "watchkey")]
    pub key: String,
}

const OPS: &[&str] = &["get", "watch_create", "watch"];
const GET: usize = 0;
const CREATE: usize = 1;
const WATCH: usize = 2;

const DRAIN_IDLE: Duration = Duration::from_secs(5);

struct GetWorker {
    kv: KvClient<Ch>,
    req: RangeRequest,
}

impl Worker for GetWorker {
    async fn step(&mut self, _n: u64, rec: &mut Recorder) {
        let start = Instant::now();
        let result = self.kv.range(self.req.clone()).await;
        rec.result(GET, start, result);
    }
}

/// Counts a stream's events until it has them all.
struct CountEvents {
    expected: u64,
    got: u64,
    received: Arc<AtomicU64>,
}

impl Handler for CountEvents {
    fn on_response(&mut self, rec: &mut Recorder, resp: WatchResponse) -> bool {
        if let Some(why) = canceled(&resp) {
            rec.error(WATCH, Code::Cancelled, &why);
            return true;
        }
        let n = resp.events.len() as u64;
        self.got += n;
        self.received.fetch_add(n, Ordering::Relaxed);
        self.got >= self.expected
    }
}

/// Runs the workload.
pub async fn run(g: &Global, a: WatchGetArgs) -> anyhow::Result<Report> {
    if a.streams == 0 || a.watchers < a.streams || a.events == 0 {
        bail!("--watchers must be at least --streams, both and --events at least 1");
    }
    let conns = Conns::connect(g).await?;
    let key = a.key.into_bytes();
    let mut kv = conns.kv(0);
    let mut first_rev = 0;
    for i in 0..a.events {
        let resp = kv
            .put(PutRequest {
                key: key.clone(),
                value: i.to_string().into_bytes(),
                ..Default::default()
            })
            .await
            .context("setup put")?
            .into_inner();
        if i == 0 {
            first_rev = resp.header.map_or(0, |h| h.revision);
        }
    }

    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = signal::channel(false);
    let mut streams = Vec::with_capacity(a.streams);
    let mut readies = Vec::with_capacity(a.streams);
    for s in 0..a.streams {
        let n = a.watchers / a.streams + usize::from(s < a.watchers % a.streams);
        let creates = (0..n)
            .map(|_| WatchCreateRequest {
                key: key.clone(),
                start_revision: first_rev,
                ..Default::default()
            })
            .collect();
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let handler = CountEvents {
            expected: a.events * n as u64,
            got: 0,
            received: received.clone(),
        };
        streams.push(tokio::spawn(watcher::run(
            conns.watch(s),
            creates,
            Recorder::new(OPS),
            CREATE,
            WATCH,
            ready_tx,
            stop_rx.clone(),
            handler,
        )));
    }

    // Gets while the watchers are created and catch up.
    let req = RangeRequest {
        key,
        serializable: true,
        ..Default::default()
    };
    let workers = (0..g.clients)
        .map(|i| GetWorker {
            kv: conns.kv(i),
            req: req.clone(),
        })
        .collect();
    let plan = Plan::new(a.get_total.unwrap_or(g.total), g.duration, g.rate);
    let (mut rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;

    let expected = a.events * a.watchers as u64;
    let counter = received.clone();
    driver::wait_until(
        || counter.load(Ordering::Relaxed) >= expected,
        || counter.load(Ordering::Relaxed),
        DRAIN_IDLE,
    )
    .await;
    let _ = stop_tx.send(true);
    for r in readies {
        r.await.context("watch stream task")??;
    }
    for s in streams {
        let (r, _) = s.await.context("watch stream task")?;
        rec.merge(&r);
    }
    let got = received.load(Ordering::Relaxed);
    rec.errors(
        WATCH,
        MISSING_EVENT,
        expected.saturating_sub(got),
        "event never arrived",
    );
    let mut report = Report::new(&rec, &[GET], elapsed.as_secs_f64());
    report.extra("watchers", a.watchers);
    report.extra("events_expected", expected);
    report.extra("events_received", got);
    Ok(report)
}
