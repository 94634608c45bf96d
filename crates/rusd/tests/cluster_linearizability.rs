//! Concurrent clients against a 3-member cluster while the leader is killed and restarted and a
//! follower is cut off and healed. Every request and response is recorded; afterwards the
//! history must be linearizable (with revisions) against a key-value model, no acknowledged
//! write may be lost, and the watch streams must be ordered, gap-free and agree.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use rusd_lincheck::{
    check_durability, check_kv, check_watch, CheckOptions, FinalRead, Input, KeyValue, Operation,
    Output, WatchEvent, WatchStream,
};

const KEYS: usize = 6;
const PREFIX: &str = "lin/";
/// Bounds on the load: whichever comes first.
const RUN: Duration = Duration::from_secs(12);
const MAX_OPS_PER_CLIENT: usize = 600;

/// xorshift: deterministic per client, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn kv_of(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue::full(
        kv.value().to_vec(),
        kv.mod_revision(),
        kv.create_revision(),
        kv.version(),
    )
}

async fn run_client(
    id: u64,
    endpoint: String,
    start: Instant,
    history: Arc<Mutex<Vec<Operation>>>,
) {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(3));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1).wrapping_mul(0x1234_5678_9abc));
    let mut client: Option<etcd_client::Client> = None;
    let mut last_mod = [0i64; KEYS];
    let now = |start: Instant| start.elapsed().as_nanos() as u64;
    for n in 0..MAX_OPS_PER_CLIENT {
        if start.elapsed() > RUN {
            break;
        }
        if client.is_none() {
            match etcd_client::Client::connect([endpoint.clone()], Some(options.clone())).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let Some(c) = client.as_mut() else { continue };
        let k = (rng.next() % KEYS as u64) as usize;
        let key = format!("{PREFIX}{k}");
        let value = format!("c{id}-{n}");
        let choice = rng.next() % 10;
        let call = now(start);
        let (input, output) = match choice {
            0..=3 => (
                Input::put(key.clone(), value.clone()),
                c.put(key.clone(), value.clone(), None)
                    .await
                    .map(|r| Output::Put {
                        revision: r.header().map_or(0, |h| h.revision()),
                    }),
            ),
            4..=6 => (
                Input::get(key.clone()),
                c.get(key.clone(), None).await.map(|r| {
                    if let Some(kv) = r.kvs().first() {
                        last_mod[k] = kv.mod_revision();
                    }
                    Output::Get {
                        kv: r.kvs().first().map(kv_of),
                        revision: r.header().map_or(0, |h| h.revision()),
                    }
                }),
            ),
            7 => (
                Input::delete(key.clone()),
                c.delete(key.clone(), None).await.map(|r| Output::Delete {
                    deleted: r.deleted(),
                    revision: r.header().map_or(0, |h| h.revision()),
                }),
            ),
            _ => {
                let expected = last_mod[k];
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        expected,
                    )])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
                (
                    Input::cas(key.clone(), expected, value.clone()),
                    c.txn(txn).await.map(|r| Output::Cas {
                        succeeded: r.succeeded(),
                        revision: r.header().map_or(0, |h| h.revision()),
                    }),
                )
            }
        };
        let op = Operation::new(id, call, input);
        let op = match output {
            Ok(out) => op.returned(now(start), out),
            // Timed out or failed in flight: it may or may not have taken effect.
            Err(_) => {
                client = None;
                op
            }
        };
        history.lock().expect("history").push(op);
    }
}

async fn run_watcher(endpoint: String, from: i64, stream: Arc<Mutex<WatchStream>>, stop: Instant) {
    let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await else {
        return;
    };
    let Ok(mut events) = c
        .watch(
            PREFIX,
            Some(WatchOptions::new().with_prefix().with_start_revision(from)),
        )
        .await
    else {
        return;
    };
    while Instant::now() < stop {
        let next = tokio::time::timeout(Duration::from_secs(1), events.message()).await;
        let resp = match next {
            Err(_) => continue,
            Ok(Ok(Some(resp))) => resp,
            // The member died or the stream broke: what arrived so far stands.
            Ok(_) => return,
        };
        let mut s = stream.lock().expect("stream");
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            s.events.push(match e.event_type() {
                EventType::Put => WatchEvent::put(
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.mod_revision(),
                    kv.create_revision(),
                    kv.version(),
                ),
                EventType::Delete => WatchEvent::delete(kv.key().to_vec(), kv.mod_revision()),
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_linearizable_through_leader_kills_and_partitions() {
    let mut cluster = Cluster::start(3, &[]);
    let initial = {
        let mut c = cluster.client().await;
        c.get("none", None)
            .await
            .expect("get")
            .header()
            .map_or(1, |h| h.revision())
    };
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();

    let mut streams = Vec::new();
    let mut tasks = Vec::new();
    for e in &endpoints {
        let s = Arc::new(Mutex::new(WatchStream {
            prefix: PREFIX.as_bytes().to_vec(),
            start_revision: initial + 1,
            events: Vec::new(),
        }));
        streams.push(s.clone());
        tasks.push(tokio::spawn(run_watcher(
            e.clone(),
            initial + 1,
            s,
            start + RUN + Duration::from_secs(8),
        )));
    }
    for id in 0..4u64 {
        let endpoint = endpoints[id as usize % endpoints.len()].clone();
        tasks.push(tokio::spawn(run_client(
            id,
            endpoint,
            start,
            history.clone(),
        )));
    }

    // Faults: the leader dies and comes back; then a follower is cut off and healed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.leader().await;
    cluster.members[leader].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.members[leader].restart();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.members[follower].partition(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.members[follower].partition(false);

    for t in tasks {
        let _ = t.await;
    }
    let history = history.lock().expect("history").clone();
    let acked = history.iter().filter(|o| o.ret.is_some()).count();
    assert!(acked > 100, "too few operations completed: {acked}");

    // A final linearizable read of every key.
    let mut c = cluster.client().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let last = loop {
        match c.get(PREFIX, Some(GetOptions::new().with_prefix())).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(Instant::now() < deadline, "final read failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let final_read = FinalRead {
        revision: last.header().map_or(0, |h| h.revision()),
        kvs: last
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv_of(kv)))
            .collect(),
    };

    let options = CheckOptions {
        initial_revision: initial,
        timeout: Some(Duration::from_secs(60)),
        ..CheckOptions::default()
    };
    if let Err(e) = check_kv(&history, &options) {
        panic!("not linearizable ({} operations): {e}", history.len());
    }
    if let Err(e) = check_durability(&history, &final_read) {
        panic!("an acknowledged write was lost: {e}");
    }
    let streams: Vec<WatchStream> = streams
        .iter()
        .map(|s| s.lock().expect("stream").clone())
        .collect();
    assert!(
        streams.iter().any(|s| !s.events.is_empty()),
        "no watcher saw anything"
    );
    if let Err(e) = check_watch(&streams, &history) {
        panic!("watch streams are inconsistent: {e}");
    }
}
