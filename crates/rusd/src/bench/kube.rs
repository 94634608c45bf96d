//! `kube`: what a Kubernetes apiserver does to etcd for one resource type.
//!
//! - `--objects` keys `<prefix><index>`, each owned by one client (object j by client
//!   j % clients), which knows its mod_revision as the apiserver's cache would;
//! - writes are txns: create = `mod_revision == 0` then put, update = `mod_revision == known`
//!   then put, delete = `mod_revision == known` then delete, each else get (a conflict: the
//!   get tells the current mod_revision);
//! - `--list-ratio` of requests are full lists: pages of `--list-limit` at the first page's
//!   revision, continuing from the last key + "\0";
//! - one prefix watch with prev_kv and progress notify from an initial list's revision + 1;
//!   event latency is put sent to event received (the send time travels in the value);
//! - every `--compact-interval`, the apiserver's compactor: a CAS on `compact_rev_key`'s
//!   version that stores the current revision, then compaction of the one stored last time.
//!
//! Headline: creates, updates, deletes and lists together.

use super::client::Ch;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rusd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use rusd_proto::etcdserverpb::kv_client::KvClient;
use rusd_proto::etcdserverpb::request_op::Request;
use rusd_proto::etcdserverpb::response_op::Response;
use rusd_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchResponse,
};
use rusd_proto::mvccpb::event::EventType;
use rusd_proto::mvccpb::KeyValue;
use tokio::sync::{oneshot, watch as signal};
use tonic::{Code, Status};

use super::client::Conns;
use super::driver::{self, Worker};
use rusd_mvcc::key_range::prefix_end;

use super::keys::{random_value, KeySpace, Rng};
use super::report::{Recorder, Report, MISSING_EVENT};
use super::stamp::{Clock, STAMP_LEN};
use super::watcher::{self, canceled, Handler};
use super::Global;

/// `rusd bench kube`
#[derive(Args, Debug)]
pub struct KubeArgs {
    /// Objects (keys) of the resource.
    #[arg(long, default_value_t = 1000)]
    pub objects: u64,
    /// Object size in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 1024)]
    pub val_size: usize,
    /// Key prefix of the resource.
    #[arg(long, default_value = "/registry/bench/")]
    pub prefix: String,
    /// Page size of lists.
    #[arg(long, default_value_t = 500)]
    pub list_limit: i64,
    /// Share of requests that are a full paginated list.
    #[arg(long, default_value_t = 0.01)]
    pub list_ratio: f64,
    /// Share of writes to an existing object that delete it (the others update it).
    #[arg(long, default_value_t = 0.1)]
    pub delete_ratio: f64,
    /// Compaction period through `compact_rev_key` (0: none; the apiserver's default is 5m).
    #[arg(long, value_parser = super::parse_duration, default_value = "10s")]
    pub compact_interval: Duration,
}

const OPS: &[&str] = &["create", "update", "delete", "list", "event", "compact"];
const CREATE: usize = 0;
const UPDATE: usize = 1;
const DELETE: usize = 2;
const LIST: usize = 3;
const EVENT: usize = 4;
const COMPACT: usize = 5;

const COMPACT_REV_KEY: &[u8] = b"compact_rev_key";
const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// Counters shared by the clients.
#[derive(Default)]
struct Shared {
    /// Txns whose compare failed.
    conflicts: AtomicU64,
    /// Txns whose compare held (each makes one event).
    applied: AtomicU64,
    /// Highest revision written.
    max_revision: AtomicI64,
    /// List pages fetched.
    pages: AtomicU64,
}

/// The resource: its keys and their range.
struct Resource {
    keys: KeySpace,
    start: Vec<u8>,
    end: Vec<u8>,
    limit: i64,
}

impl Resource {
    /// A full list at one revision, page by page; calls `each` on every object; returns the
    /// revision and the number of pages.
    async fn list(
        &self,
        kv: &mut KvClient<Ch>,
        mut each: impl FnMut(&KeyValue),
    ) -> Result<(i64, u64), Status> {
        let mut key = self.start.clone();
        let mut revision = 0;
        let mut pages = 0;
        loop {
            let resp = kv
                .range(RangeRequest {
                    key,
                    range_end: self.end.clone(),
                    limit: self.limit,
                    revision,
                    ..Default::default()
                })
                .await?
                .into_inner();
            pages += 1;
            if revision == 0 {
                revision = resp.header.map_or(0, |h| h.revision);
            }
            resp.kvs.iter().for_each(&mut each);
            match resp.kvs.last() {
                Some(last) if resp.more => {
                    key = Vec::with_capacity(last.key.len() + 1);
                    key.extend_from_slice(&last.key);
                    key.push(0);
                }
                _ => return Ok((revision, pages)),
            }
        }
    }
}

struct KubeWorker {
    kv: KvClient<Ch>,
    resource: Arc<Resource>,
    /// This client's objects: (index, mod_revision; 0 when absent).
    mine: Vec<(u64, i64)>,
    value: Arc<[u8]>,
    clock: Clock,
    list_share: f64,
    delete_share: f64,
    rng: Rng,
    shared: Arc<Shared>,
}

fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// The mod_revision the failure branch's get saw (0: absent).
fn current_mod_revision(resp: &TxnResponse) -> i64 {
    match resp.responses.first().and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => r.kvs.first().map_or(0, |kv| kv.mod_revision),
        _ => 0,
    }
}

impl KubeWorker {
    async fn list(&mut self, rec: &mut Recorder) {
        let start = Instant::now();
        match self.resource.list(&mut self.kv, |_| {}).await {
            Ok((_, pages)) => {
                rec.ok(LIST, start);
                self.shared.pages.fetch_add(pages, Ordering::Relaxed);
            }
            Err(s) => rec.error(LIST, s.code(), s.message()),
        }
    }
}

impl Worker for KubeWorker {
    async fn step(&mut self, _n: u64, rec: &mut Recorder) {
        if self.mine.is_empty() || self.rng.unit() < self.list_share {
            self.list(rec).await;
            return;
        }
        let slot = self.rng.below(self.mine.len() as u64) as usize;
        let (object, mod_revision) = self.mine[slot];
        let key = self.resource.keys.key(object);
        let (kind, success) = if mod_revision == 0 {
            (CREATE, None)
        } else if self.rng.unit() < self.delete_share {
            let delete = DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            (DELETE, Some(Request::RequestDeleteRange(delete)))
        } else {
            (UPDATE, None)
        };
        let success = success.unwrap_or_else(|| {
            Request::RequestPut(PutRequest {
                key: key.clone(),
                value: self.clock.stamped(&self.value),
                ..Default::default()
            })
        });
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::ModRevision(mod_revision)),
            }],
            success: vec![op(success)],
            failure: vec![op(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            }))],
        };
        let start = Instant::now();
        let result = self.kv.txn(req).await;
        let Some(resp) = rec.result(kind, start, result) else {
            return;
        };
        if resp.succeeded {
            let revision = resp.header.map_or(0, |h| h.revision);
            self.shared.applied.fetch_add(1, Ordering::Relaxed);
            self.shared
                .max_revision
                .fetch_max(revision, Ordering::Relaxed);
            self.mine[slot].1 = if kind == DELETE { 0 } else { revision };
        } else {
            self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
            self.mine[slot].1 = current_mod_revision(&resp);
        }
    }
}

/// The watch: event latency of puts, prev_kv checks, the last revision seen.
struct KubeWatch {
    clock: Clock,
    received: Arc<AtomicU64>,
    revision: Arc<AtomicI64>,
}

impl Handler for KubeWatch {
    fn on_response(&mut self, rec: &mut Recorder, resp: WatchResponse) -> bool {
        if let Some(why) = canceled(&resp) {
            rec.error(EVENT, Code::Cancelled, &why);
            return true;
        }
        for ev in &resp.events {
            let Some(kv) = &ev.kv else { continue };
            let is_put = ev.r#type == EventType::Put as i32;
            if (!is_put || kv.version > 1) && ev.prev_kv.is_none() {
                rec.error(EVENT, Code::DataLoss, "event without prev_kv");
            } else if is_put {
                match self.clock.age_us(&kv.value) {
                    Some(us) => rec.ok_us(EVENT, us),
                    None => rec.error(EVENT, Code::Unknown, "event without a send time"),
                }
            }
            self.revision.fetch_max(kv.mod_revision, Ordering::Relaxed);
        }
        self.received
            .fetch_add(resp.events.len() as u64, Ordering::Relaxed);
        false
    }
}

/// The apiserver's compactor: every `interval`, CAS `compact_rev_key`'s version from the one
/// last seen, storing the current revision; when that succeeds, compact the revision stored
/// the previous time.
async fn compactor(
    mut kv: KvClient<Ch>,
    interval: Duration,
    done: Arc<AtomicBool>,
) -> (Recorder, u64) {
    let mut rec = Recorder::new(OPS);
    let (mut version, mut revision) = (0i64, 0i64);
    let mut compactions = 0;
    let mut next = Instant::now() + interval;
    while !done.load(Ordering::Relaxed) {
        if Instant::now() < next {
            tokio::time::sleep(Duration::from_millis(10).min(interval)).await;
            continue;
        }
        next += interval;
        let key = COMPACT_REV_KEY.to_vec();
        let req = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Version as i32,
                key: key.clone(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::Version(version)),
            }],
            success: vec![op(Request::RequestPut(PutRequest {
                key: key.clone(),
                value: revision.to_string().into_bytes(),
                ..Default::default()
            }))],
            failure: vec![op(Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            }))],
        };
        let resp = match kv.txn(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                rec.error(COMPACT, s.code(), s.message());
                continue;
            }
        };
        let current = resp.header.map_or(0, |h| h.revision);
        if !resp.succeeded {
            // Another compactor moved on: take its version, try again next time.
            version = match resp.responses.first().and_then(|r| r.response.as_ref()) {
                Some(Response::ResponseRange(r)) => r.kvs.first().map_or(0, |kv| kv.version),
                _ => 0,
            };
            revision = current;
            continue;
        }
        version += 1;
        if revision != 0 {
            let start = Instant::now();
            let result = kv
                .compact(CompactionRequest {
                    revision,
                    physical: false,
                })
                .await;
            if rec.result(COMPACT, start, result).is_some() {
                compactions += 1;
            }
        }
        revision = current;
    }
    (rec, compactions)
}

/// Runs the workload.
pub async fn run(g: &Global, a: KubeArgs) -> anyhow::Result<Report> {
    if a.objects < g.clients as u64 {
        bail!("--objects must be at least --clients");
    }
    if a.list_limit < 0 {
        bail!("--list-limit must not be negative");
    }
    let conns = Conns::connect(g).await?;
    let prefix = a.prefix.as_bytes();
    let resource = Arc::new(Resource {
        keys: KeySpace::new(&a.prefix, 0, a.objects),
        start: prefix.to_vec(),
        end: prefix_end(prefix),
        limit: a.list_limit,
    });
    let clock = Clock::new();
    let shared = Arc::new(Shared::default());

    // Initial list: what exists, and the revision the watch starts after.
    let mut mod_revisions = vec![0i64; a.objects as usize];
    let (list_revision, _) = resource
        .list(&mut conns.kv(0), |kv| {
            if let Some(i) = resource.keys.index_of(&kv.key) {
                mod_revisions[i as usize] = kv.mod_revision;
            }
        })
        .await
        .context("initial list")?;
    shared.max_revision.store(list_revision, Ordering::Relaxed);

    let received = Arc::new(AtomicU64::new(0));
    let watched = Arc::new(AtomicI64::new(list_revision));
    let (stop_tx, stop_rx) = signal::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let watch = tokio::spawn(watcher::run(
        conns.watch(0),
        vec![WatchCreateRequest {
            key: resource.start.clone(),
            range_end: resource.end.clone(),
            start_revision: list_revision + 1,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        }],
        Recorder::new(OPS),
        EVENT,
        EVENT,
        ready_tx,
        stop_rx,
        KubeWatch {
            clock,
            received: received.clone(),
            revision: watched.clone(),
        },
    ));
    ready_rx.await.context("watch task")??;

    let value: Arc<[u8]> = random_value(a.val_size.max(STAMP_LEN), &mut Rng::new(0)).into();
    let mut owned: Vec<Vec<(u64, i64)>> = vec![Vec::new(); g.clients];
    for (j, rev) in mod_revisions.into_iter().enumerate() {
        owned[j % g.clients].push((j as u64, rev));
    }
    let workers = owned
        .into_iter()
        .enumerate()
        .map(|(i, mine)| KubeWorker {
            kv: conns.kv(i),
            resource: resource.clone(),
            mine,
            value: value.clone(),
            clock,
            list_share: a.list_ratio,
            delete_share: a.delete_ratio,
            rng: Rng::new(i as u64 + 1),
            shared: shared.clone(),
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let compaction = (!a.compact_interval.is_zero())
        .then(|| tokio::spawn(compactor(conns.kv(0), a.compact_interval, done.clone())));
    let plan = g.plan();
    let (mut rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;
    done.store(true, Ordering::Relaxed);

    // Let the watch catch up with the last write.
    let target = shared.max_revision.load(Ordering::Relaxed);
    let w = watched.clone();
    driver::wait_until(
        || w.load(Ordering::Relaxed) >= target,
        || w.load(Ordering::Relaxed) as u64,
        DRAIN_IDLE,
    )
    .await;
    let _ = stop_tx.send(true);
    let (watch_rec, _) = watch.await.context("watch task")?;
    rec.merge(&watch_rec);
    let mut compactions = 0;
    if let Some(c) = compaction {
        let (compact_rec, n) = c.await.context("compactor task")?;
        rec.merge(&compact_rec);
        compactions = n;
    }
    let applied = shared.applied.load(Ordering::Relaxed);
    let got = received.load(Ordering::Relaxed);
    rec.errors(
        EVENT,
        MISSING_EVENT,
        applied.saturating_sub(got),
        "event never arrived",
    );
    let mut report = Report::new(&rec, &[CREATE, UPDATE, DELETE, LIST], elapsed.as_secs_f64());
    report.extra("objects", a.objects);
    report.extra("writes_applied", applied);
    report.extra("conflicts", shared.conflicts.load(Ordering::Relaxed));
    report.extra("events_received", got);
    report.extra("list_pages", shared.pages.load(Ordering::Relaxed));
    report.extra("compactions", compactions);
    Ok(report)
}
