//! One watch stream: a task that owns the stream's watchers, reads requests and the hub's live
//! feed, catches lagging watchers up from history, and writes responses to a bounded channel.
//!
//! Invariants (see the [module docs](super) for the why):
//! * `delivered`: every live batch at or below it has been taken from the feed, and every batch
//!   above it will still arrive through the feed.
//! * A watcher has delivered everything below its `next_rev`. It takes a live batch only when
//!   the batch's revision is exactly its `next_rev`; it is *synced* while `next_rev >
//!   delivered`, otherwise it reads history until it is.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use prometheus::IntGauge;
use rand::Rng;
use rusd_mvcc::MvccStore;
use rusd_proto::etcdserverpb as pb;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};

use super::fragment::fragments;
use super::hub::{Live, WatchHub};
use super::watcher::{Counted, Spec, Watcher, WatcherSet, DUPLICATE_ID};
use crate::auth::Credentials;
use crate::context::Ctx;
use crate::error::ServerError;

/// Responses queued for a stream's client before the stream stops reading the live feed.
const OUT_CAPACITY: usize = 64;
/// Revisions read from history per catch-up step (and so at most per response).
const CATCH_UP_REVISIONS: usize = 1000;
/// How long a progress answer waits for batches the store has committed but not yet
/// published (normally microseconds).
const PUBLISH_WAIT: Duration = Duration::from_millis(500);

/// Builds a response header at a revision.
pub(crate) type HeaderFn = Arc<dyn Fn(i64) -> Option<pb::ResponseHeader> + Send + Sync>;

/// Whether the stream's caller may watch `[key, range_end)`.
pub(crate) type PermitFn = Arc<
    dyn Fn(Vec<u8>, Vec<u8>) -> futures::future::BoxFuture<'static, Result<(), ServerError>>
        + Send
        + Sync,
>;

/// What a stream needs from the server.
#[derive(Clone)]
pub(crate) struct Env {
    pub store: MvccStore,
    pub hub: WatchHub,
    pub header: HeaderFn,
    pub progress_interval: Duration,
    /// Responses of `fragment` watchers are split at this size.
    pub fragment_limit: usize,
    pub watchers: IntGauge,
    /// The permission check of each create (read on the watched range).
    pub permit: PermitFn,
}

impl Env {
    fn from_ctx(ctx: &Arc<Ctx>, cred: Credentials) -> Self {
        let header_ctx = ctx.clone();
        let auth_ctx = ctx.clone();
        let permit: PermitFn = Arc::new(move |key, range_end| {
            let (ctx, cred) = (auth_ctx.clone(), cred.clone());
            Box::pin(async move {
                let ai = ctx.auth_info(&cred).await?;
                ctx.auth.state().check_range(&ai, &key, &range_end)
            })
        });
        Self {
            permit,
            store: ctx.store.clone(),
            hub: ctx.watch.clone(),
            header: Arc::new(move |revision| header_ctx.header(revision)),
            progress_interval: ctx.config.watch_progress_notify_interval,
            // etcd: MaxRequestBytes plus gRPC overhead (512 KiB).
            fragment_limit: ctx.config.max_request_bytes.saturating_add(512 * 1024),
            watchers: ctx.metrics.watchers.clone(),
        }
    }
}

/// The responses of one watch stream (see [`open_stream`]). Dropping it ends the stream and
/// cancels its watchers.
pub struct WatchResponses {
    rx: mpsc::Receiver<Result<pb::WatchResponse, ServerError>>,
}

impl Stream for WatchResponses {
    type Item = Result<pb::WatchResponse, ServerError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Opens a watch stream: `requests` are the client's create, cancel and progress requests;
/// the returned stream yields etcd's responses, and ends with one `Err` only if the server
/// fails (e.g. it is stopping). The end of `requests` does not end the stream (as in etcd,
/// watchers keep running after the client half-closes); dropping the responses does.
///
/// Transport-neutral: the gRPC service and the HTTP gateway both use it. Must be called
/// within a Tokio runtime (it spawns the stream's task).
pub fn open_stream<S>(ctx: &Arc<Ctx>, requests: S, cred: Credentials) -> WatchResponses
where
    S: Stream<Item = pb::WatchRequest> + Send + 'static,
{
    spawn(Env::from_ctx(ctx, cred), requests)
}

/// [`open_stream`] over an explicit environment.
pub(crate) fn spawn<S>(env: Env, requests: S) -> WatchResponses
where
    S: Stream<Item = pb::WatchRequest> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(OUT_CAPACITY);
    tokio::spawn(async move {
        let session = Session::new(env, tx);
        session.run(Box::pin(requests)).await;
    });
    WatchResponses { rx }
}

/// Why a stream ends.
enum End {
    /// The client went away.
    Gone,
    /// The server failed; the client is told.
    Failed(ServerError),
}

type Step = Result<(), End>;

struct Session {
    env: Env,
    out: mpsc::Sender<Result<pb::WatchResponse, ServerError>>,
    rx: broadcast::Receiver<Live>,
    delivered: i64,
    watchers: WatcherSet,
}

impl Session {
    fn new(env: Env, out: mpsc::Sender<Result<pb::WatchResponse, ServerError>>) -> Self {
        let (rx, delivered) = env.hub.subscribe();
        Self {
            env,
            out,
            rx,
            delivered,
            watchers: WatcherSet::default(),
        }
    }

    async fn run(mut self, mut requests: Pin<Box<dyn Stream<Item = pb::WatchRequest> + Send>>) {
        let mut requests_open = true;
        let period = jittered(self.env.progress_interval);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let catching_up = !self.watchers.all_synced(self.delivered);
            let step = tokio::select! {
                _ = self.out.closed() => Err(End::Gone),
                request = requests.next(), if requests_open => match request {
                    Some(request) => self.on_request(request).await,
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                },
                live = self.rx.recv() => self.on_live(live).await,
                _ = ticker.tick() => self.on_tick().await,
                _ = std::future::ready(()), if catching_up => self.catch_up().await,
            };
            if let Err(end) = step {
                break end;
            }
        };
        if let End::Failed(e) = end {
            tracing::debug!(error = %e, "watch stream failed");
            let _ = self.out.send(Err(e)).await;
        }
    }

    async fn send(&self, resp: pb::WatchResponse) -> Step {
        self.out.send(Ok(resp)).await.map_err(|_| End::Gone)
    }

    async fn send_all(&self, responses: Vec<pb::WatchResponse>) -> Step {
        for resp in responses {
            self.send(resp).await?;
        }
        Ok(())
    }

    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        (self.env.header)(revision)
    }

    async fn on_request(&mut self, request: pb::WatchRequest) -> Step {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(&c).await,
            Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => self.progress_all().await,
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: &pb::WatchCreateRequest) -> Step {
        let current = self.env.store.current_revision();
        let refused = |header, reason: &str| pb::WatchResponse {
            header,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let spec = match Spec::parse(c) {
            Ok(spec) => spec,
            Err(reason) => return self.send(refused(self.header(current), reason)).await,
        };
        if let Err(e) = (self.env.permit)(c.key.clone(), c.range_end.clone()).await {
            let reason = match e {
                ServerError::InvalidAuthToken
                | ServerError::AuthOldRevision
                | ServerError::UserEmpty => crate::grpc::status::code_and_message(&e).1,
                _ => crate::grpc::status::code_and_message(&ServerError::PermissionDenied).1,
            };
            return self.send(refused(self.header(current), &reason)).await;
        }
        let Some(id) = self.watchers.allocate(c.watch_id) else {
            return self.send(refused(self.header(current), DUPLICATE_ID)).await;
        };
        let from_now = spec.start_revision == 0;
        let next_rev = if from_now {
            current + 1
        } else {
            spec.start_revision
        };
        let prev = spec.prev_kv.then(|| self.env.hub.want_prev_kv());
        let mut w = Watcher::new(
            id,
            spec,
            next_rev,
            prev,
            Counted::new(self.env.watchers.clone()),
        );
        if from_now {
            w.floor = current;
        }
        self.watchers.insert(w);
        self.send(pb::WatchResponse {
            header: self.header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await
    }

    async fn cancel(&mut self, id: i64) -> Step {
        if !self.watchers.remove(id) {
            return Ok(());
        }
        self.send(pb::WatchResponse {
            header: self.header(self.env.store.current_revision()),
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    async fn on_live(&mut self, live: Result<Live, RecvError>) -> Step {
        match live {
            Ok(live) => {
                let responses = self.apply_live(&live);
                self.send_all(responses).await
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "watch stream lagged; catching up from history");
                self.resubscribe();
                Ok(())
            }
            Err(RecvError::Closed) => Err(End::Failed(ServerError::Stopped)),
        }
    }

    /// The feed dropped batches: start over at its tail; watchers that missed something
    /// become unsynced and read history.
    fn resubscribe(&mut self) {
        let (rx, from) = self.env.hub.subscribe();
        self.rx = rx;
        self.delivered = self.delivered.max(from);
    }

    /// Hands one live revision to the watchers waiting for exactly it.
    fn apply_live(&mut self, live: &Live) -> Vec<pb::WatchResponse> {
        let revision = live.batch.revision;
        if live.restored {
            // History up to `revision` was replaced: watchers below it are now unsynced and
            // read the new history (or learn it is compacted).
            self.delivered = self.delivered.max(revision);
            return Vec::new();
        }
        let mut out = Vec::new();
        for w in self.watchers.iter_mut() {
            if w.next_rev != revision || (w.spec.prev_kv && !live.has_prev) {
                // Not its turn, or it needs prev_kv this batch lacks: history has it.
                continue;
            }
            w.next_rev = revision + 1;
            let events = w.select(&live.batch.events);
            if !events.is_empty() {
                w.quiet = false;
                w.floor = w.floor.max(revision);
                out.extend(event_responses(&self.env, w, revision, events));
            }
        }
        self.delivered = self.delivered.max(revision);
        out
    }

    /// Takes every batch already in the feed.
    async fn drain(&mut self) -> Step {
        loop {
            match self.rx.try_recv() {
                Ok(live) => {
                    let responses = self.apply_live(&live);
                    self.send_all(responses).await?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Lagged(_)) => {
                    self.resubscribe();
                    return Ok(());
                }
                Err(TryRecvError::Closed) => return Err(End::Failed(ServerError::Stopped)),
            }
        }
    }

    /// Drains the feed until it reaches `target` (a revision the store has committed), waiting
    /// a little for batches being published.
    async fn drain_to(&mut self, target: i64) -> Step {
        self.drain().await?;
        let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
        while self.delivered < target {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => break,
                Ok(live) => self.on_live(live).await?,
            }
        }
        Ok(())
    }

    /// The revision a progress notification may claim for `w`, if it may get one: everything
    /// up to it has been delivered, and it is not below what the client has already seen.
    fn progress_revision(&self, w: &Watcher) -> Option<i64> {
        (w.synced(self.delivered) && w.floor <= self.delivered).then_some(self.delivered)
    }

    /// WatchProgressRequest: one response for the whole stream (`watch_id` -1) if every
    /// watcher is synced (vacuously so without watchers, as etcd 3.4 answers), else nothing
    /// (etcd >= 3.4.25 / 3.5.8; the client asks again).
    async fn progress_all(&mut self) -> Step {
        let target = self.env.store.current_revision();
        self.drain_to(target).await?;
        if self
            .watchers
            .iter()
            .any(|w| self.progress_revision(w).is_none())
        {
            return Ok(());
        }
        self.send(pb::WatchResponse {
            header: self.header(self.delivered),
            watch_id: -1,
            ..Default::default()
        })
        .await
    }

    /// The progress ticker: a notification for each synced `progress_notify` watcher that got
    /// no events since the last tick.
    async fn on_tick(&mut self) -> Step {
        if !self.watchers.iter().any(|w| w.spec.progress_notify) {
            return Ok(());
        }
        let target = self.env.store.current_revision();
        self.drain_to(target).await?;
        let mut out = Vec::new();
        for w in self.watchers.iter() {
            if !(w.spec.progress_notify && w.quiet) {
                continue;
            }
            if let Some(revision) = self.progress_revision(w) {
                out.push(pb::WatchResponse {
                    header: self.header(revision),
                    watch_id: w.id,
                    ..Default::default()
                });
            }
        }
        for w in self.watchers.iter_mut() {
            w.quiet = true;
        }
        self.send_all(out).await
    }

    /// One history read for the unsynced watchers, from the lowest revision any of them needs.
    async fn catch_up(&mut self) -> Step {
        let delivered = self.delivered;
        let unsynced = |w: &Watcher| !w.synced(delivered);
        let Some(from) = self
            .watchers
            .iter()
            .filter(|w| unsynced(w))
            .map(|w| w.next_rev)
            .min()
        else {
            return Ok(());
        };
        let prev = self.watchers.iter().any(|w| unsynced(w) && w.spec.prev_kv);
        let store = self.env.store.clone();
        let read =
            tokio::task::spawn_blocking(move || store.events_since(from, CATCH_UP_REVISIONS, prev))
                .await
                .map_err(|e| End::Failed(ServerError::Internal(e.to_string())))?;
        let mut out = Vec::new();
        match read {
            Ok((events, next)) => {
                let header_rev = next - 1;
                for w in self.watchers.iter_mut() {
                    if !unsynced(w) || w.next_rev >= next {
                        continue;
                    }
                    let start = w.next_rev;
                    let selected = w.select(events.iter().filter(|ev| ev.kv.mod_revision >= start));
                    w.next_rev = next;
                    if let Some(last) = selected.last().and_then(|ev| ev.kv.as_ref()) {
                        w.quiet = false;
                        w.floor = w.floor.max(last.mod_revision);
                        out.extend(event_responses(&self.env, w, header_rev, selected));
                    }
                }
            }
            Err(rusd_mvcc::Error::Compacted { compacted, .. }) => {
                let gone: Vec<i64> = self
                    .watchers
                    .iter()
                    .filter(|w| unsynced(w) && w.next_rev < compacted)
                    .map(|w| w.id)
                    .collect();
                for id in gone {
                    // As etcd: the id stays taken until the client cancels it.
                    self.watchers.compact(id);
                    // etcd's compacted response: header revision 0.
                    out.push(pb::WatchResponse {
                        header: self.header(0),
                        watch_id: id,
                        canceled: true,
                        compact_revision: compacted,
                        ..Default::default()
                    });
                }
            }
            Err(e) => return Err(End::Failed(e.into())),
        }
        self.send_all(out).await
    }
}

/// The response(s) carrying `events` for `w` at header `revision`.
fn event_responses(
    env: &Env,
    w: &Watcher,
    revision: i64,
    events: Vec<rusd_proto::mvccpb::Event>,
) -> Vec<pb::WatchResponse> {
    let resp = pb::WatchResponse {
        header: (env.header)(revision),
        watch_id: w.id,
        events,
        ..Default::default()
    };
    if w.spec.fragment {
        fragments(resp, env.fragment_limit)
    } else {
        vec![resp]
    }
}

/// etcd adds up to 10% random jitter so that streams created together do not tick together.
fn jittered(interval: Duration) -> Duration {
    let interval = interval.max(Duration::from_millis(100));
    let tenth = (interval.as_nanos() / 10).min(u128::from(u64::MAX)) as u64;
    let jitter = rand::rng().random_range(0..=tenth);
    interval + Duration::from_nanos(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusd_mvcc::{DeleteRangeRequest, PutRequest, StoreConfig};
    use rusd_proto::mvccpb;
    use tokio_stream::wrappers::ReceiverStream;

    struct Harness {
        store: MvccStore,
        gauge: IntGauge,
        requests: mpsc::Sender<pb::WatchRequest>,
        responses: WatchResponses,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).expect("open");
            let gauge = IntGauge::new("watchers", "watchers").expect("gauge");
            let env = Env {
                store: store.clone(),
                hub: WatchHub::new(store.clone()),
                header: Arc::new(|revision| {
                    Some(pb::ResponseHeader {
                        revision,
                        ..Default::default()
                    })
                }),
                progress_interval: Duration::from_secs(3600),
                fragment_limit: 1 << 20,
                watchers: gauge.clone(),
                permit: Arc::new(|_, _| Box::pin(async { Ok(()) })),
            };
            let (requests, rx) = mpsc::channel(16);
            let responses = spawn(env, ReceiverStream::new(rx));
            Self {
                store,
                gauge,
                requests,
                responses,
                _dir: dir,
            }
        }

        fn put(&self, key: &str, value: &str) -> i64 {
            self.store
                .put(&PutRequest {
                    key: key.into(),
                    value: value.into(),
                    ..Default::default()
                })
                .expect("put")
                .revision
        }

        async fn request(&self, r: pb::watch_request::RequestUnion) {
            self.requests
                .send(pb::WatchRequest {
                    request_union: Some(r),
                })
                .await
                .expect("send");
        }

        async fn create(&mut self, c: pb::WatchCreateRequest) -> pb::WatchResponse {
            self.request(pb::watch_request::RequestUnion::CreateRequest(c))
                .await;
            let r = self.next().await;
            assert!(r.created, "{r:?}");
            r
        }

        async fn next(&mut self) -> pb::WatchResponse {
            tokio::time::timeout(Duration::from_secs(10), self.responses.next())
                .await
                .expect("a response in time")
                .expect("stream open")
                .expect("no error")
        }

        async fn quiet(&mut self) {
            let more =
                tokio::time::timeout(Duration::from_millis(200), self.responses.next()).await;
            assert!(more.is_err(), "unexpected {more:?}");
        }
    }

    fn watch(key: &str) -> pb::WatchCreateRequest {
        pb::WatchCreateRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    fn revisions(r: &pb::WatchResponse) -> Vec<i64> {
        r.events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_history_cancel() {
        let mut h = Harness::new();
        let r1 = h.put("a", "1");
        let created = h.create(watch("a")).await;
        assert_eq!(
            (created.watch_id, created.header.map(|x| x.revision)),
            (0, Some(r1))
        );
        let r2 = h.put("a", "2");
        h.put("b", "x");
        let ev = h.next().await;
        assert_eq!((ev.watch_id, revisions(&ev)), (0, vec![r2]));
        assert!(ev.events[0].prev_kv.is_none());

        // From history, with prev_kv, on the same stream: id 1.
        let past = h
            .create(pb::WatchCreateRequest {
                start_revision: 1,
                prev_kv: true,
                ..watch("a")
            })
            .await;
        assert_eq!(past.watch_id, 1);
        let ev = h.next().await;
        assert_eq!((ev.watch_id, revisions(&ev)), (1, vec![r1, r2]));
        assert!(ev.events[0].prev_kv.is_none(), "a create has no prev_kv");
        assert_eq!(
            ev.events[1].prev_kv.as_ref().map(|kv| kv.value.clone()),
            Some(b"1".to_vec())
        );
        assert_eq!(h.gauge.get(), 2);

        // Live: both watchers get the next revision, only the second with prev_kv.
        let r3 = h.put("a", "3");
        let mut got = [h.next().await, h.next().await];
        got.sort_by_key(|r| r.watch_id);
        assert_eq!(revisions(&got[0]), vec![r3]);
        assert!(got[0].events[0].prev_kv.is_none());
        assert_eq!(revisions(&got[1]), vec![r3]);
        assert!(got[1].events[0].prev_kv.is_some());

        h.request(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 0 },
        ))
        .await;
        let canceled = h.next().await;
        assert!(canceled.canceled && canceled.watch_id == 0);
        h.request(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 9 },
        ))
        .await;
        h.quiet().await;
        assert_eq!(h.gauge.get(), 1);
        drop(h.requests.clone());
        let Harness {
            responses, gauge, ..
        } = h;
        drop(responses);
        for _ in 0..100 {
            if gauge.get() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("watchers not released: {}", gauge.get());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compacted_start_and_filters() {
        let mut h = Harness::new();
        for i in 0..5 {
            h.put("k", &i.to_string());
        }
        h.store.compact(3).expect("compact").wait();
        let created = h
            .create(pb::WatchCreateRequest {
                start_revision: 2,
                ..watch("k")
            })
            .await;
        assert_eq!(created.watch_id, 0);
        let gone = h.next().await;
        assert!(gone.canceled);
        assert_eq!((gone.watch_id, gone.compact_revision), (0, 3));
        assert_eq!(gone.header.map(|x| x.revision), Some(0));
        assert_eq!(h.gauge.get(), 1, "counted until canceled, as in etcd");

        // Its id stays taken until the client cancels it.
        let explicit = |watch_id| pb::WatchCreateRequest {
            watch_id,
            ..watch("k")
        };
        let auto = h.create(explicit(0)).await;
        assert_eq!(
            auto.watch_id, 1,
            "0 asks for an automatic id, which skips 0"
        );
        h.request(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 1 },
        ))
        .await;
        assert!(h.next().await.canceled);
        let z = h
            .create(pb::WatchCreateRequest {
                watch_id: 7,
                start_revision: 1,
                ..watch("k")
            })
            .await;
        assert_eq!(z.watch_id, 7);
        assert_eq!(h.next().await.compact_revision, 3);
        let dup = h.create(explicit(7)).await;
        assert_eq!(
            (dup.watch_id, dup.cancel_reason.as_str()),
            (-1, DUPLICATE_ID)
        );
        for id in [0, 7] {
            h.request(pb::watch_request::RequestUnion::CancelRequest(
                pb::WatchCancelRequest { watch_id: id },
            ))
            .await;
            let c = h.next().await;
            assert_eq!((c.watch_id, c.canceled, c.compact_revision), (id, true, 0));
        }
        assert_eq!(h.gauge.get(), 0);
        assert_eq!(h.create(explicit(7)).await.watch_id, 7);
        h.request(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 7 },
        ))
        .await;
        assert!(h.next().await.canceled);

        // The compact revision itself is still watchable.
        h.create(pb::WatchCreateRequest {
            start_revision: 3,
            filters: vec![pb::watch_create_request::FilterType::Noput as i32],
            ..watch("k")
        })
        .await;
        h.quiet().await; // only puts so far
        let deleted = h
            .store
            .delete_range(&DeleteRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .expect("delete")
            .revision;
        let ev = h.next().await;
        assert_eq!(revisions(&ev), vec![deleted]);
        assert_eq!(ev.events[0].r#type, mvccpb::event::EventType::Delete as i32);
    }

    /// A stream whose client does not read falls off the live feed and catches up from history
    /// without losing or repeating anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lagging_stream_catches_up_in_order() {
        let mut h = Harness::new();
        h.create(pb::WatchCreateRequest {
            prev_kv: true,
            range_end: b"\0".to_vec(),
            ..watch("")
        })
        .await;
        let first = h.store.current_revision() + 1;
        let n = (LIVE_CAPACITY_FOR_TESTS * 3) as i64;
        for i in 0..n {
            h.put(&format!("k{}", i % 7), &i.to_string());
        }
        let mut expect = first;
        while expect < first + n {
            let r = h.next().await;
            for ev in &r.events {
                let kv = ev.kv.as_ref().expect("kv");
                assert_eq!(kv.mod_revision, expect);
                if kv.version > 1 {
                    assert!(ev.prev_kv.is_some(), "prev_kv at {expect}");
                }
                expect += 1;
            }
        }
        h.quiet().await;
    }

    /// Turning prev_kv on while writes are in flight: a batch published without it is taken
    /// from history, so every event still carries it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prev_kv_switched_on_under_writes() {
        let mut h = Harness::new();
        h.put("a", "first");
        let store = h.store.clone();
        let writer = std::thread::spawn(move || {
            for i in 0..2000 {
                store
                    .put(&PutRequest {
                        key: b"a".to_vec(),
                        value: i.to_string().into_bytes(),
                        ..Default::default()
                    })
                    .expect("put");
            }
            store.current_revision()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let created = h
            .create(pb::WatchCreateRequest {
                prev_kv: true,
                ..watch("a")
            })
            .await;
        let last = tokio::task::spawn_blocking(move || writer.join().expect("writer"))
            .await
            .expect("join");
        let mut expect = created.header.map(|x| x.revision).unwrap_or(0) + 1;
        while expect <= last {
            for ev in h.next().await.events {
                assert_eq!(ev.kv.as_ref().map(|kv| kv.mod_revision), Some(expect));
                let prev = ev.prev_kv.expect("prev_kv");
                assert_eq!(prev.mod_revision, expect - 1);
                expect += 1;
            }
        }
    }

    const LIVE_CAPACITY_FOR_TESTS: usize = super::super::hub::LIVE_CAPACITY;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn progress_request_reports_what_was_delivered() {
        let mut h = Harness::new();
        // No watchers: the current revision (as etcd 3.4 answers).
        let r0 = h.put("b", "0");
        h.request(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        ))
        .await;
        let p = h.next().await;
        assert_eq!((p.watch_id, p.header.map(|x| x.revision)), (-1, Some(r0)));
        h.create(watch("a")).await;
        let r = h.put("b", "1");
        h.request(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        ))
        .await;
        let p = h.next().await;
        assert_eq!((p.watch_id, p.header.map(|x| x.revision)), (-1, Some(r)));
        assert!(p.events.is_empty() && !p.created && !p.canceled);
        // A future watcher is synced too.
        h.create(pb::WatchCreateRequest {
            start_revision: r + 10,
            ..watch("a")
        })
        .await;
        h.request(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        ))
        .await;
        assert_eq!(h.next().await.watch_id, -1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_creates() {
        let mut h = Harness::new();
        for (req, reason) in [
            (
                pb::WatchCreateRequest {
                    range_end: b"a".to_vec(),
                    ..watch("b")
                },
                super::super::watcher::EMPTY_RANGE,
            ),
            (
                pb::WatchCreateRequest {
                    start_revision: -3,
                    ..watch("b")
                },
                super::super::watcher::COMPACTED,
            ),
        ] {
            let r = h.create(req).await;
            assert!(r.canceled);
            assert_eq!((r.watch_id, r.cancel_reason.as_str()), (-1, reason));
        }
        let r = h
            .create(pb::WatchCreateRequest {
                watch_id: 5,
                ..watch("b")
            })
            .await;
        assert_eq!(r.watch_id, 5);
        let r = h
            .create(pb::WatchCreateRequest {
                watch_id: 5,
                ..watch("c")
            })
            .await;
        assert_eq!(
            (r.watch_id, r.canceled, r.cancel_reason.as_str()),
            (-1, true, DUPLICATE_ID)
        );
        assert_eq!(h.gauge.get(), 1);
    }
}
