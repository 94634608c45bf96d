//! Watch through a real rusd process and the etcd-client crate.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Rusd;
use etcd_client::{
    Client, EventType, Txn, TxnOp, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};

/// The next response, failing the test after 10 s.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch response in time")
        .expect("no stream error")
        .expect("stream open")
}

/// Asserts that nothing arrives for a while.
async fn quiet(stream: &mut WatchStream) {
    if let Ok(more) = tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
        panic!("unexpected {more:?}");
    }
}

/// Opens a stream and returns it with its `created` response.
async fn watch(
    c: &mut Client,
    key: &str,
    options: Option<WatchOptions>,
) -> (WatchStream, WatchResponse) {
    let mut stream = c.watch(key, options).await.expect("watch");
    let created = next(&mut stream).await;
    assert!(created.created(), "{created:?}");
    (stream, created)
}

fn revisions(r: &WatchResponse) -> Vec<i64> {
    r.events()
        .iter()
        .map(|e| e.kv().expect("kv").mod_revision())
        .collect()
}

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    c.put(key, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
}

#[tokio::test]
async fn watch_from_now_with_etcd_headers() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let before = put(&mut c, "a", "0").await;
    let (mut s, created) = watch(&mut c, "a", None).await;
    let header = created.header().expect("header");
    assert_eq!(created.watch_id(), 0);
    assert_eq!(header.revision(), before);
    assert_ne!(header.cluster_id(), 0);
    assert_ne!(header.member_id(), 0);
    assert!(header.raft_term() >= 1);

    put(&mut c, "b", "x").await; // another key: not seen
    let rev = put(&mut c, "a", "1").await;
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![rev]);
    assert_eq!(ev.header().expect("header").revision(), rev);
    let e = &ev.events()[0];
    assert_eq!(e.event_type(), EventType::Put);
    assert_eq!(e.kv().expect("kv").value(), b"1");
    assert!(e.prev_kv().is_none(), "prev_kv only when asked");

    c.delete("a", None).await.expect("delete");
    let ev = next(&mut s).await;
    assert_eq!(ev.events()[0].event_type(), EventType::Delete);
    assert_eq!(ev.events()[0].kv().expect("kv").key(), b"a");
}

#[tokio::test]
async fn watch_from_past_revision_with_prev_kv() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let first = put(&mut c, "k", "1").await;
    let second = put(&mut c, "k", "2").await;
    put(&mut c, "other", "x").await;
    c.delete("k", None).await.expect("delete");
    let (mut s, _) = watch(
        &mut c,
        "k",
        Some(
            WatchOptions::new()
                .with_start_revision(first)
                .with_prev_key(),
        ),
    )
    .await;
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![first, second, second + 2]);
    let evs = ev.events();
    assert!(evs[0].prev_kv().is_none(), "a create has no prev_kv");
    assert_eq!(evs[1].prev_kv().expect("prev").value(), b"1");
    assert_eq!(evs[2].event_type(), EventType::Delete);
    assert_eq!(evs[2].prev_kv().expect("prev").value(), b"2");
    // Then live, without a gap or a repeat.
    let live = put(&mut c, "k", "3").await;
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![live]);
    assert!(ev.events()[0].prev_kv().is_none(), "recreated: a create");
    let live = put(&mut c, "k", "4").await;
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![live]);
    assert_eq!(ev.events()[0].prev_kv().expect("prev").value(), b"3");
}

#[tokio::test]
async fn prefix_watch_and_one_response_per_revision() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let (mut s, _) = watch(&mut c, "p/", Some(WatchOptions::new().with_prefix())).await;
    put(&mut c, "p0", "outside").await;
    put(&mut c, "o", "outside").await;
    let txn = Txn::new().and_then(vec![
        TxnOp::put("p/a", "1", None),
        TxnOp::put("q", "outside", None),
        TxnOp::put("p/b", "2", None),
    ]);
    let rev = c
        .txn(txn)
        .await
        .expect("txn")
        .header()
        .expect("h")
        .revision();
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![rev, rev]);
    let keys: Vec<&[u8]> = ev
        .events()
        .iter()
        .map(|e| e.kv().expect("kv").key())
        .collect();
    assert_eq!(keys, vec![&b"p/a"[..], b"p/b"]);
    quiet(&mut s).await;
}

#[tokio::test]
async fn filters_drop_events_and_empty_responses() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let (mut no_put, _) = watch(
        &mut c,
        "f",
        Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
    )
    .await;
    let (mut no_delete, _) = watch(
        &mut c,
        "f",
        Some(WatchOptions::new().with_filters([WatchFilterType::NoDelete])),
    )
    .await;
    let p = put(&mut c, "f", "1").await;
    let d = c
        .delete("f", None)
        .await
        .expect("delete")
        .header()
        .expect("h")
        .revision();
    let ev = next(&mut no_put).await;
    assert_eq!(revisions(&ev), vec![d]);
    assert_eq!(ev.events()[0].event_type(), EventType::Delete);
    quiet(&mut no_put).await;
    let ev = next(&mut no_delete).await;
    assert_eq!(revisions(&ev), vec![p]);
    quiet(&mut no_delete).await;
}

#[tokio::test]
async fn compacted_start_is_canceled_with_the_compact_revision() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    for i in 0..5 {
        put(&mut c, "k", &i.to_string()).await;
    }
    c.compact(4, None).await.expect("compact");
    let (mut s, created) = watch(
        &mut c,
        "k",
        Some(WatchOptions::new().with_start_revision(2)),
    )
    .await;
    let gone = next(&mut s).await;
    assert!(gone.canceled());
    assert_eq!(gone.watch_id(), created.watch_id());
    assert_eq!(gone.compact_revision(), 4);
    assert!(gone.events().is_empty());

    // Exactly the compact revision is still allowed.
    let (mut s, _) = watch(
        &mut c,
        "k",
        Some(WatchOptions::new().with_start_revision(4)),
    )
    .await;
    let ev = next(&mut s).await;
    assert!(!ev.canceled());
    assert_eq!(revisions(&ev), vec![4, 5, 6]);
}

#[tokio::test]
async fn future_start_waits_for_its_revision() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let now = put(&mut c, "k", "0").await;
    let (mut s, _) = watch(
        &mut c,
        "k",
        Some(WatchOptions::new().with_start_revision(now + 2)),
    )
    .await;
    put(&mut c, "k", "1").await;
    quiet(&mut s).await;
    let rev = put(&mut c, "k", "2").await;
    assert_eq!(rev, now + 2);
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![rev]);
}

#[tokio::test]
async fn many_watchers_per_stream_ids_and_cancel() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let (mut s, created) = watch(&mut c, "a", None).await;
    assert_eq!(created.watch_id(), 0);
    s.watch("b", None).await.expect("watch b");
    s.watch("c", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .expect("watch c");
    s.watch("d", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .expect("watch d");
    s.watch("z", Some(WatchOptions::new().with_range("a")))
        .await
        .expect("watch z..a");
    s.watch("e", Some(WatchOptions::new().with_start_revision(-1)))
        .await
        .expect("watch e");
    s.watch("f", None).await.expect("watch f");
    // Created responses come in request order.
    let b = next(&mut s).await;
    assert!(b.created() && !b.canceled() && b.watch_id() == 1);
    let c7 = next(&mut s).await;
    assert!(c7.created() && c7.watch_id() == 7);
    let dup = next(&mut s).await;
    assert!(dup.created() && dup.canceled());
    assert_eq!(dup.watch_id(), -1);
    assert_eq!(
        dup.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    let empty = next(&mut s).await;
    assert!(empty.created() && empty.canceled() && empty.watch_id() == -1);
    assert_eq!(empty.cancel_reason(), "mvcc: watcher range is empty");
    let negative = next(&mut s).await;
    assert!(negative.created() && negative.canceled() && negative.watch_id() == -1);
    assert!(negative.cancel_reason().contains("compacted"));
    let f = next(&mut s).await;
    assert_eq!(f.watch_id(), 2);

    assert_eq!(metric(&r, "etcd_debugging_mvcc_watcher_total"), Some(4.0));

    for (key, id) in [("a", 0), ("b", 1), ("c", 7), ("f", 2)] {
        let rev = put(&mut c, key, "v").await;
        let ev = next(&mut s).await;
        assert_eq!((ev.watch_id(), revisions(&ev)), (id, vec![rev]));
    }
    s.cancel(1).await.expect("cancel");
    let canceled = next(&mut s).await;
    assert!(canceled.canceled() && canceled.watch_id() == 1 && !canceled.created());
    s.cancel(42).await.expect("cancel unknown");
    put(&mut c, "b", "v").await; // no longer watched
    let rev = put(&mut c, "a", "v").await;
    let ev = next(&mut s).await;
    assert_eq!((ev.watch_id(), revisions(&ev)), (0, vec![rev]));
    assert_eq!(metric(&r, "etcd_debugging_mvcc_watcher_total"), Some(3.0));

    drop(s);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metric(&r, "etcd_debugging_mvcc_watcher_total") != Some(0.0) {
        assert!(
            std::time::Instant::now() < deadline,
            "watchers not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn progress_notify_on_quiet_watchers() {
    let r = Rusd::start(&["--experimental-watch-progress-notify-interval", "200ms"]);
    let mut c = r.client().await;
    let rev = put(&mut c, "other", "x").await;
    let (mut s, _) = watch(
        &mut c,
        "k",
        Some(WatchOptions::new().with_progress_notify()),
    )
    .await;
    let p = next(&mut s).await;
    assert!(p.events().is_empty() && !p.created() && !p.canceled());
    assert_eq!(p.watch_id(), 0);
    assert_eq!(p.header().expect("header").revision(), rev);
    // Writes elsewhere move the notified revision.
    let rev = put(&mut c, "other", "y").await;
    loop {
        let p = next(&mut s).await;
        assert!(p.events().is_empty());
        if p.header().expect("header").revision() == rev {
            break;
        }
    }
    // A watcher without progress_notify gets none.
    let (mut plain, _) = watch(&mut c, "k", None).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    quiet(&mut plain).await;
}

#[tokio::test]
async fn progress_request_answers_for_the_stream() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let (mut s, _) = watch(&mut c, "k", None).await;
    let rev = put(&mut c, "elsewhere", "x").await;
    s.request_progress().await.expect("progress");
    let p = next(&mut s).await;
    assert_eq!(p.watch_id(), -1);
    assert_eq!(p.header().expect("header").revision(), rev);
    assert!(p.events().is_empty() && !p.created() && !p.canceled());

    // After events, the progress revision is never behind them.
    let rev = put(&mut c, "k", "v").await;
    s.request_progress().await.expect("progress");
    let ev = next(&mut s).await;
    assert_eq!(revisions(&ev), vec![rev]);
    let p = next(&mut s).await;
    assert_eq!(p.watch_id(), -1);
    assert!(p.header().expect("header").revision() >= rev);
}

#[tokio::test]
async fn fragmented_catch_up() {
    let r = Rusd::start(&["--max-request-bytes", "200000"]);
    let mut c = r.client().await;
    let value = "x".repeat(100_000);
    let mut revs = Vec::new();
    for _ in 0..10 {
        revs.push(put(&mut c, "big", &value).await);
    }
    // Without fragment: the whole catch-up (about 1 MB) in one response.
    let (mut s, _) = watch(
        &mut c,
        "big",
        Some(WatchOptions::new().with_start_revision(revs[0])),
    )
    .await;
    assert_eq!(revisions(&next(&mut s).await), revs);
    // With fragment: parts below max-request-bytes + 512 KiB, together everything, in order.
    let (mut s, _) = watch(
        &mut c,
        "big",
        Some(
            WatchOptions::new()
                .with_start_revision(revs[0])
                .with_fragment(),
        ),
    )
    .await;
    let mut got = Vec::new();
    let mut parts = 0;
    while got.len() < revs.len() {
        let part = next(&mut s).await;
        assert!(part.events().len() <= 7, "{}", part.events().len());
        got.extend(revisions(&part));
        parts += 1;
    }
    assert!(parts >= 2);
    assert_eq!(got, revs);
}

/// A client that stops reading while writes happen still gets every event, in order, once it
/// reads again; a reading watcher meanwhile gets them all too, and neither it nor the writers
/// wait for the slow one.
///
/// The slow watcher's stream must fall off the server's live feed (more than
/// `watch::hub::LIVE_CAPACITY` = 1024 revisions behind) and catch up from history. Its client
/// has a 16 KiB HTTP/2 stream window and the values are 2 KiB, so the connection and the
/// server's 64-response queue hold only about 75 revisions before the stream stops reading the
/// feed: it lags after about 1,100 of the 1,600 writes (in a debug build they take ~4 s; the
/// feed's capacity is a constant, so fewer writes cannot lag).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_consumer_catches_up_without_gaps() {
    use rusd_proto::etcdserverpb as pb;
    use tonic::codegen::tokio_stream::{self, StreamExt};

    const N: i64 = 1_600;
    const WRITERS: i64 = 32;
    const _: () = assert!(N % WRITERS == 0, "every writer writes as much");
    // `--log-level debug` for the server's "watch stream lagged" line.
    let r = Rusd::start(&["--log-level", "debug"]);
    let mut c = r.client().await;
    let start = put(&mut c, "slow/start", "x").await + 1;

    // The slow watcher: its own connection with a small receive window, never read until the
    // writes are done.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", r.endpoint))
        .expect("url")
        .initial_stream_window_size(16 * 1024)
        .connect()
        .await
        .expect("connect");
    let create = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"slow/".to_vec(),
                range_end: b"slow0".to_vec(),
                start_revision: start,
                prev_kv: true,
                ..Default::default()
            },
        )),
    };
    let requests = tokio_stream::iter([create]).chain(tokio_stream::pending());
    let mut slow = pb::watch_client::WatchClient::new(channel)
        .watch(requests)
        .await
        .expect("watch")
        .into_inner();
    assert!(next_raw(&mut slow).await.created);

    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_prev_key();
    let (mut fast, _) = watch(&mut c, "slow/", Some(options)).await;
    let reader = tokio::spawn(async move {
        let mut expect = start;
        while expect < start + N {
            let ev = next(&mut fast).await;
            for rev in revisions(&ev) {
                assert_eq!(rev, expect);
                expect += 1;
            }
        }
    });
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut c = c.clone();
        writers.push(tokio::spawn(async move {
            let value = "v".repeat(2048);
            for i in 0..N / WRITERS {
                c.put(format!("slow/{w}/{}", i % 10), value.as_str(), None)
                    .await
                    .expect("put");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("fast watcher in time")
        .expect("fast watcher");

    let mut expect = start;
    // Responses with several revisions: only a catch-up from history sends those (live
    // batches go out one revision per response).
    let mut from_history = 0;
    while expect < start + N {
        let ev = next_raw(&mut slow).await;
        assert!(!ev.canceled, "{ev:?}");
        let first = expect;
        for e in &ev.events {
            let kv = e.kv.as_ref().expect("kv");
            assert_eq!(kv.mod_revision, expect);
            if kv.version > 1 {
                assert!(e.prev_kv.is_some(), "prev_kv at {expect}");
            }
            expect += 1;
        }
        if expect - first > 1 {
            from_history += 1;
        }
    }
    let more = tokio::time::timeout(Duration::from_millis(300), slow.message()).await;
    assert!(more.is_err(), "unexpected {more:?}");
    assert!(from_history > 0, "the slow watcher never read history");
    let lagged = r
        .log
        .lock()
        .expect("log")
        .iter()
        .any(|l| l.contains("watch stream lagged; catching up from history"));
    assert!(lagged, "no stream fell off the live feed");
}

/// The next response of a raw gRPC watch stream, failing the test after 10 s.
async fn next_raw(
    stream: &mut tonic::Streaming<rusd_proto::etcdserverpb::WatchResponse>,
) -> rusd_proto::etcdserverpb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch response in time")
        .expect("no stream error")
        .expect("stream open")
}

/// A metric's value from `/metrics`.
fn metric(r: &Rusd, name: &str) -> Option<f64> {
    let mut tcp = std::net::TcpStream::connect(&r.endpoint).expect("connect");
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        r.endpoint
    )
    .expect("request");
    let mut body = String::new();
    tcp.read_to_string(&mut body).expect("response");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `--max-concurrent-streams 2`: a connection carrying two watch streams has no room for a
/// third call until one of them ends (the client waits for the server's stream limit, as with
/// etcd's grpc-go server); without the flag the same calls all run.
#[tokio::test]
async fn max_concurrent_streams_bounds_streams_per_connection() {
    let r = Rusd::start(&["--max-concurrent-streams", "2"]);
    let mut c = r.client().await;
    let (first, _) = watch(&mut c, "a", None).await;
    let (second, _) = watch(&mut c, "b", None).await;
    let mut kv = c.kv_client();
    let waiting = tokio::spawn(async move { kv.get("a", None).await.map(|r| r.count()) });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "a third stream ran past the limit");
    drop(first);
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the call ran once a stream ended")
        .expect("task")
        .expect("get");
    assert_eq!(got, 0);
    drop(second);

    let unlimited = Rusd::start(&[]);
    let mut c = unlimited.client().await;
    let mut streams = Vec::new();
    for key in ["a", "b", "c"] {
        streams.push(watch(&mut c, key, None).await);
    }
    let got = tokio::time::timeout(Duration::from_secs(10), c.get("a", None))
        .await
        .expect("no limit")
        .expect("get");
    assert_eq!(got.count(), 0);
}
