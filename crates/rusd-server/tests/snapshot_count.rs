//! `--snapshot-count` counts requests (a log entry carries a batch of them): after that many,
//! a snapshot makes the engine durable and the log is purged behind it, and a restart from the
//! purged log still has every acknowledged write.

use std::net::SocketAddr;
use std::time::Duration;

use rusd_proto::etcdserverpb as pb;
use rusd_server::config::ServerConfig;
use rusd_server::raft::{Op, Output};
use rusd_server::server::Server;

fn config(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        listen_client: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        listen_peer: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        snapshot_count: 50,
        ..ServerConfig::default()
    }
}

async fn put(server: &Server, key: String) -> i64 {
    let op = Op::Put(pb::PutRequest {
        key: key.into_bytes(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    match server.ctx.propose(op).await.expect("put") {
        Output::Put(p) => p.header.map_or(0, |h| h.revision),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_follow_requests_and_a_purged_log_restarts_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(dir.path())).await.expect("start");
    // 16 concurrent writers (batched: fewer log entries than requests), then one writer
    // (an entry per request, so the log outgrows the 100 entries kept behind a snapshot).
    let mut tasks = Vec::new();
    for w in 0..16 {
        let server = &server;
        tasks.push(async move {
            for i in 0..10 {
                put(server, format!("k/{w:02}/{i:02}")).await;
            }
        });
    }
    futures::future::join_all(tasks).await;
    for i in 0..240 {
        put(&server, format!("k/seq/{i:03}")).await;
    }
    let mut purged = None;
    for _ in 0..100 {
        let m = server.ctx.raft.metrics().borrow().clone();
        if let (Some(s), Some(p)) = (m.snapshot, m.purged) {
            purged = Some((s.index, p.index, m.last_log_index.unwrap_or(0)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = server.ctx.raft.metrics().borrow().clone();
    let (snapshot, purged, last) = purged.unwrap_or_else(|| {
        panic!(
            "no snapshot and purge after 400 requests: snapshot {:?}, purged {:?}, last {:?}",
            m.snapshot, m.purged, m.last_log_index
        )
    });
    assert!(snapshot > 0 && purged <= snapshot && last >= snapshot);
    let revision = server.ctx.store.current_revision();
    assert_eq!(revision, 401);
    server.stop().await;

    let server = Server::start(config(dir.path())).await.expect("restart");
    assert_eq!(server.ctx.store.current_revision(), 401);
    let count = server
        .ctx
        .store
        .range(&rusd_mvcc::RangeRequest {
            count_only: true,
            ..rusd_mvcc::RangeRequest::new("k/", "k0")
        })
        .expect("range")
        .count;
    assert_eq!(count, 400);
    // And the log goes on from where it was.
    assert_eq!(put(&server, "after".into()).await, 402);
    server.stop().await;
}
