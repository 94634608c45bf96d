//! KV through a real rusd process and the etcd-client crate.

mod common;

use common::Rusd;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

#[tokio::test]
async fn put_get_delete_and_revisions() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let put = c.put("foo", "bar", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 2);
    let get = c.get("foo", None).await.unwrap();
    assert_eq!(get.kvs()[0].value(), b"bar");
    assert_eq!(get.kvs()[0].create_revision(), 2);
    let put = c
        .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(put.prev_key().unwrap().value(), b"bar");
    let old = c
        .get("foo", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"bar");
    assert_eq!(old.header().unwrap().revision(), 3);
    let del = c.delete("foo", None).await.unwrap();
    assert_eq!(del.deleted(), 1);
    assert!(c.get("foo", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn errors_carry_etcd_texts() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let err = c.put("", "v", None).await.unwrap_err().to_string();
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
    c.put("k", "1", None).await.unwrap();
    c.put("k", "2", None).await.unwrap();
    c.compact(3, None).await.unwrap();
    let err = c
        .get("k", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    let err = c
        .get("k", Some(GetOptions::new().with_revision(99)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("required revision is a future revision"),
        "{err}"
    );
}

#[tokio::test]
async fn kubernetes_style_create_and_cas() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let create = Txn::new()
        .when([Compare::mod_revision("/registry/a", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("/registry/a", "v1", None)])
        .or_else([TxnOp::get("/registry/a", None)]);
    assert!(c.txn(create.clone()).await.unwrap().succeeded());
    assert!(!c.txn(create).await.unwrap().succeeded());
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut r = Rusd::start(&[]);
    let mut c = r.client().await;
    for i in 0..200 {
        c.put(format!("k{i}"), format!("v{i}"), None).await.unwrap();
    }
    drop(c);
    r.kill9_and_restart();
    let mut c = r.client().await;
    let all = c
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.kvs().len(), 200);
    let put = c.put("after", "restart", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), 202, "revisions continue");
}

/// kill -9 while 8 clients write: every acknowledged put is there after the restart, and new
/// writes continue from the recovered revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_load() {
    let mut r = Rusd::start(&[]);
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut c = r.client().await;
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let key = format!("w{w}/k{i}");
                match c.put(key.as_str(), "v", None).await {
                    Ok(resp) => acked
                        .lock()
                        .unwrap()
                        .push((key, resp.header().unwrap().revision())),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    r.kill9_and_restart();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(20), w).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before the kill"
    );
    let mut c = r.client().await;
    let max_rev = acked.iter().map(|(_, rev)| *rev).max().unwrap();
    for (key, rev) in &acked {
        let got = c.get(key.as_str(), None).await.unwrap();
        assert_eq!(got.kvs().len(), 1, "acknowledged {key} at {rev} is lost");
        assert_eq!(got.kvs()[0].mod_revision(), *rev);
    }
    let put = c.put("after", "restart", None).await.unwrap();
    assert!(
        put.header().unwrap().revision() > max_rev,
        "revisions went back"
    );
}
