//! `watch`: `--streams` × `--watch-per-stream` watchers on the whole key space, then
//! `--put-total` puts to it from `--clients` clients at `--put-rate`.
//!
//! Headline: event latency, from just before a put is sent until its event arrives on a
//! watcher (etcd's watch-latency definition; each put yields one sample per watcher; the send
//! time travels in the value's first 8 bytes). `requests` counts expected events (successful
//! puts × watchers), `ok` received ones, a shortfall is a `MissingEvent` error, and `rps` is
//! events per second from the first put to the last event. `ops.put` and `ops.watch_create`
//! (each creation confirmed before the next on its stream) are reported too.

use super::client::Ch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchResponse};
use tokio::sync::{oneshot, watch as signal};
use tonic::Code;

use super::client::Conns;
use super::driver::{self, Plan, Worker};
use super::keys::{random_value, KeySpace, Rng};
use super::progress::Progress;
use super::report::{Recorder, Report, MISSING_EVENT};
use super::stamp::{Clock, STAMP_LEN};
use super::watcher::{self, canceled, Handler};
use super::Global;

/// `rusd bench watch`
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watch streams (spread over the connections).
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Watchers per stream, each on the whole key space.
    #[arg(long, default_value_t = 10)]
    pub watch_per_stream: usize,
    /// Puts while watching (the global --total and --rate do not apply; --clients put).
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
    /// Puts per second (0: unlimited).
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Key size in bytes (prefix included).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Distinct keys to put.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Key prefix.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

const OPS: &[&str] = &["event", "put", "watch_create"];
const EVENT: usize = 0;
const PUT: usize = 1;
const CREATE: usize = 2;

/// How long to wait for missing events once the puts are done and none arrive.
const DRAIN_IDLE: Duration = Duration::from_secs(5);

struct PutWorker {
    kv: KvClient<Ch>,
    keys: Arc<KeySpace>,
    value: Arc<[u8]>,
    clock: Clock,
    rng: Rng,
}

impl Worker for PutWorker {
    async fn step(&mut self, _n: u64, rec: &mut Recorder) {
        let key = self.keys.key(self.rng.below(self.keys.size()));
        let start = Instant::now();
        let req = PutRequest {
            key,
            value: self.clock.stamped(&self.value),
            ..Default::default()
        };
        let result = self.kv.put(req).await;
        rec.result(PUT, start, result);
    }
}

/// Records each event's latency from the stamp in its value.
struct EventLatency {
    clock: Clock,
    received: Arc<AtomicU64>,
    last_event: Option<Instant>,
}

impl Handler for EventLatency {
    fn on_response(&mut self, rec: &mut Recorder, resp: WatchResponse) -> bool {
        if let Some(why) = canceled(&resp) {
            rec.error(EVENT, Code::Cancelled, &why);
            return true;
        }
        if resp.events.is_empty() {
            return false;
        }
        for ev in &resp.events {
            match ev.kv.as_ref().and_then(|kv| self.clock.age_us(&kv.value)) {
                Some(us) => rec.ok_us(EVENT, us),
                None => rec.error(EVENT, Code::Unknown, "event without a send time"),
            }
        }
        self.received
            .fetch_add(resp.events.len() as u64, Ordering::Relaxed);
        self.last_event = Some(Instant::now());
        false
    }
}

/// Runs the workload.
pub async fn run(g: &Global, a: WatchArgs) -> anyhow::Result<Report> {
    if a.streams == 0 || a.watch_per_stream == 0 {
        bail!("--streams and --watch-per-stream must be at least 1");
    }
    let conns = Conns::connect(g).await?;
    let keys = Arc::new(KeySpace::new(&a.prefix, a.key_size, a.key_space_size));
    let (start_key, end_key) = keys.range();
    let clock = Clock::new();
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = signal::channel(false);

    // Watchers, created stream by stream in parallel.
    let create_start = Instant::now();
    let mut streams = Vec::with_capacity(a.streams);
    let mut readies = Vec::with_capacity(a.streams);
    for s in 0..a.streams {
        let creates = (0..a.watch_per_stream)
            .map(|_| WatchCreateRequest {
                key: start_key.clone(),
                range_end: end_key.clone(),
                ..Default::default()
            })
            .collect();
        let (ready_tx, ready_rx) = oneshot::channel();
        readies.push(ready_rx);
        let handler = EventLatency {
            clock,
            received: received.clone(),
            last_event: None,
        };
        streams.push(tokio::spawn(watcher::run(
            conns.watch(s),
            creates,
            Recorder::new(OPS),
            CREATE,
            EVENT,
            ready_tx,
            stop_rx.clone(),
            handler,
        )));
    }
    for r in readies {
        r.await.context("watch stream task")??;
    }
    let create_seconds = create_start.elapsed().as_secs_f64();

    // Puts.
    let value: Arc<[u8]> = random_value(a.val_size.max(STAMP_LEN), &mut Rng::new(0)).into();
    let workers = (0..g.clients)
        .map(|i| PutWorker {
            kv: conns.kv(i),
            keys: keys.clone(),
            value: value.clone(),
            clock,
            rng: Rng::new(i as u64 + 1),
        })
        .collect();
    let watchers = (a.streams * a.watch_per_stream) as u64;
    let put_start = Instant::now();
    let plan = Plan::new(a.put_total, g.duration, a.put_rate);
    let (mut rec, put_elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;

    // Events still in flight.
    let expected = rec.op(PUT).ok() * watchers;
    let bar = {
        let received = received.clone();
        Progress::start(g.progress, expected, "events", move || {
            received.load(Ordering::Relaxed)
        })
    };
    let counter = received.clone();
    driver::wait_until(
        || counter.load(Ordering::Relaxed) >= expected,
        || counter.load(Ordering::Relaxed),
        DRAIN_IDLE,
    )
    .await;
    if let Some(bar) = bar {
        bar.finish();
    }
    let _ = stop_tx.send(true);
    let mut last_event = None;
    for s in streams {
        let (r, handler) = s.await.context("watch stream task")?;
        rec.merge(&r);
        last_event = last_event.max(handler.last_event);
    }
    let got = received.load(Ordering::Relaxed);
    let missing = expected.saturating_sub(got);
    rec.errors(EVENT, MISSING_EVENT, missing, "event never arrived");
    let event_seconds = last_event.map_or(put_elapsed, |t| t.duration_since(put_start));
    let mut report = Report::new(&rec, &[EVENT], event_seconds.as_secs_f64());
    report.op_seconds("put", put_elapsed.as_secs_f64());
    report.op_seconds("watch_create", create_seconds);
    report.extra("watchers", watchers);
    report.extra("events_expected", expected);
    report.extra("events_received", got);
    Ok(report)
}
