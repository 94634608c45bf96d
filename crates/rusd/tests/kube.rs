//! A Kubernetes-apiserver-shaped workload against a real rusd for a bounded time: creates as
//! txns on `mod_revision == 0`, updates and deletes as CAS on `mod_revision`, paginated lists at
//! a fixed revision (`limit`, continue from last key + "\0", `count`), a prefix watch from the
//! list revision + 1 with prev_kv and progress notify, compaction through the `compact_rev_key`
//! CAS, and leased "event" objects. Every change the workload makes must arrive on the watch,
//! in revision order, with the right prev_kv, and no request may fail.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Rusd;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

const PREFIX: &str = "/registry/pods/";

/// A deterministic xorshift generator (no extra dependency).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_style_workload_loses_no_event() {
    let r = Rusd::start(&["--experimental-watch-progress-notify-interval", "200ms"]);
    let mut c = r.client().await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // What the "apiserver" believes: key -> (mod_revision, value).
    let mut objects: BTreeMap<String, (i64, String)> = BTreeMap::new();
    // Every change it made: (revision, key, Some(value) for a put / None for a delete).
    let mut changes: Vec<(i64, String, Option<String>)> = Vec::new();

    // Initial list (empty) and the watch from list revision + 1.
    let list = c
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let list_rev = list.header().unwrap().revision();
    let mut watch = c
        .watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_progress_notify()
                    .with_start_revision(list_rev + 1),
            ),
        )
        .await
        .unwrap();
    let lease = c.lease_grant(60, None).await.unwrap().id();
    let mut compact_version = 0i64;
    let mut last_compacted_seen = 0i64;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut ops = 0;
    while Instant::now() < deadline && ops < 3000 {
        ops += 1;
        let n = rng.below(40);
        let key = format!("{PREFIX}pod-{n:03}");
        match (objects.get(&key).cloned(), rng.below(10)) {
            (None, _) => {
                let value = format!("v{ops}");
                let leased = rng.below(4) == 0;
                let put = if leased {
                    TxnOp::put(
                        key.as_str(),
                        value.as_str(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                } else {
                    TxnOp::put(key.as_str(), value.as_str(), None)
                };
                let resp = c
                    .txn(
                        Txn::new()
                            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, 0)])
                            .and_then([put])
                            .or_else([TxnOp::get(key.as_str(), None)]),
                    )
                    .await
                    .unwrap();
                assert!(resp.succeeded(), "create of {key} failed");
                let rev = resp.header().unwrap().revision();
                objects.insert(key.clone(), (rev, value.clone()));
                changes.push((rev, key, Some(value)));
            }
            (Some((mod_rev, _)), 0..=6) => {
                let value = format!("v{ops}");
                let resp = c
                    .txn(
                        Txn::new()
                            .when([Compare::mod_revision(
                                key.as_str(),
                                CompareOp::Equal,
                                mod_rev,
                            )])
                            .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                            .or_else([TxnOp::get(key.as_str(), None)]),
                    )
                    .await
                    .unwrap();
                assert!(resp.succeeded(), "CAS update of {key} at {mod_rev} failed");
                let rev = resp.header().unwrap().revision();
                objects.insert(key.clone(), (rev, value.clone()));
                changes.push((rev, key, Some(value)));
            }
            (Some((mod_rev, _)), _) => {
                let resp = c
                    .txn(
                        Txn::new()
                            .when([Compare::mod_revision(
                                key.as_str(),
                                CompareOp::Equal,
                                mod_rev,
                            )])
                            .and_then([TxnOp::delete(key.as_str(), None)])
                            .or_else([TxnOp::get(key.as_str(), None)]),
                    )
                    .await
                    .unwrap();
                assert!(resp.succeeded(), "CAS delete of {key} failed");
                let rev = resp.header().unwrap().revision();
                objects.remove(&key);
                changes.push((rev, key, None));
            }
        }
        if ops % 50 == 0 {
            // Paginated list at one revision: pages of 7, continuing from last key + "\0".
            let first = c
                .get(PREFIX, Some(GetOptions::new().with_prefix().with_limit(7)))
                .await
                .unwrap();
            let at = first.header().unwrap().revision();
            let total = first.count();
            let mut seen: Vec<String> = Vec::new();
            let mut page = first;
            loop {
                for kv in page.kvs() {
                    seen.push(kv.key_str().unwrap().to_owned());
                }
                assert_eq!(
                    page.count() as usize,
                    total as usize - seen.len() + page.kvs().len()
                );
                if !page.more() {
                    break;
                }
                let mut next = seen.last().unwrap().clone().into_bytes();
                next.push(0);
                page = c
                    .get(
                        next,
                        Some(
                            GetOptions::new()
                                .with_range("/registry/pods0")
                                .with_limit(7)
                                .with_revision(at),
                        ),
                    )
                    .await
                    .unwrap();
            }
            assert_eq!(
                seen.len() as i64,
                total,
                "a paginated list at {at} lost keys"
            );
        }
        if ops % 200 == 0 {
            // The apiserver's compaction: CAS on compact_rev_key's version, then compact the
            // revision recorded last time.
            let current = c.get("compact_rev_key", None).await.unwrap();
            let recorded: i64 = current
                .kvs()
                .first()
                .map_or(0, |kv| kv.value_str().unwrap().parse().unwrap());
            let now = current.header().unwrap().revision();
            let resp = c
                .txn(
                    Txn::new()
                        .when([Compare::version(
                            "compact_rev_key",
                            CompareOp::Equal,
                            compact_version,
                        )])
                        .and_then([TxnOp::put("compact_rev_key", now.to_string(), None)])
                        .or_else([TxnOp::get("compact_rev_key", None)]),
                )
                .await
                .unwrap();
            assert!(resp.succeeded());
            compact_version += 1;
            if recorded > last_compacted_seen {
                c.compact(recorded, None).await.unwrap();
                last_compacted_seen = recorded;
            }
        }
    }
    assert!(ops > 100, "only {ops} operations in the time budget");
    drop(c);

    // Every change must arrive on the watch, in order, with prev_kv for updates and deletes.
    let mut expected = changes.into_iter().peekable();
    let mut last_value: BTreeMap<String, String> = BTreeMap::new();
    let mut last_rev = list_rev;
    let deadline = Instant::now() + Duration::from_secs(30);
    while expected.peek().is_some() {
        let msg = tokio::time::timeout_at(deadline.into(), watch.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .expect("watch ended");
        assert!(!msg.canceled(), "watch canceled: {msg:?}");
        for ev in msg.events() {
            let kv = ev.kv().unwrap();
            let (rev, key, value) = expected.next().expect("an event nobody made");
            assert_eq!(
                (kv.mod_revision(), kv.key_str().unwrap()),
                (rev, key.as_str())
            );
            assert!(rev > last_rev, "revisions went back");
            last_rev = rev;
            match value {
                Some(v) => {
                    assert_eq!(ev.event_type(), EventType::Put);
                    assert_eq!(kv.value_str().unwrap(), v);
                    let prev = ev.prev_kv().map(|p| p.value_str().unwrap().to_owned());
                    assert_eq!(
                        prev,
                        last_value.get(&key).cloned(),
                        "prev_kv of {key} at {rev}"
                    );
                    last_value.insert(key, v);
                }
                None => {
                    assert_eq!(ev.event_type(), EventType::Delete);
                    let prev = ev.prev_kv().map(|p| p.value_str().unwrap().to_owned());
                    assert_eq!(prev, last_value.remove(&key), "delete prev_kv of {key}");
                }
            }
        }
    }
    // Progress notifications arrive once the watcher is idle and synced.
    let msg = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("no progress notification")
        .unwrap()
        .unwrap();
    assert!(msg.events().is_empty());
    assert!(msg.header().unwrap().revision() >= last_rev);
}
