//! Snapshot/restore, defragment and sizes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::open;
use rusd_mvcc::{Backend, Error, MvccStore, RangeRequest, StoreConfig, Table};

#[test]
fn snapshot_restores_to_an_identical_store() {
    let s = open();
    for i in 0..2000 {
        s.set(&format!("key{:04}", i % 700), &format!("value{i}"));
    }
    s.del("key0100", "key0200");
    s.compact(1500).unwrap().wait();
    let mut stream = Vec::new();
    let written = s.snapshot_to(&mut stream).unwrap();
    assert_eq!(written as usize, stream.len());
    let target = s.dir.path().join("restored");
    Backend::restore(&stream[..], &target, 16 << 20).unwrap();
    let restored = MvccStore::open(StoreConfig::new(&target)).unwrap();
    assert_eq!(restored.current_revision(), s.current_revision());
    assert_eq!(restored.compact_revision(), s.compact_revision());
    assert_eq!(restored.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    assert_eq!(restored.hash().unwrap(), s.hash().unwrap());
    let all = |st: &MvccStore| st.range(&RangeRequest::new("\0", "\0")).unwrap().kvs;
    assert_eq!(all(&restored), all(&s));
}

#[test]
fn a_corrupt_or_truncated_snapshot_is_refused_and_leaves_nothing() {
    let s = open();
    s.set("a", "1");
    let mut stream = Vec::new();
    s.snapshot_to(&mut stream).unwrap();
    let target = s.dir.path().join("bad");
    let mut flipped = stream.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for bad in [
        &flipped[..],
        &stream[..stream.len() - 1],
        &stream[..10],
        b"not a snapshot",
    ] {
        let err = Backend::restore(bad, &target, 16 << 20).unwrap_err();
        assert!(matches!(err, Error::CorruptSnapshot(_)), "{err}");
        assert!(!target.exists());
    }
    // the trailer is a SHA-256 of everything before it, as etcdctl checks
    use sha2::Digest;
    let (body, trailer) = stream.split_at(stream.len() - 32);
    assert_eq!(sha2::Sha256::digest(body).as_slice(), trailer);
}

#[test]
fn defragment_shrinks_the_file_while_reads_and_writes_go_on() {
    let s = open();
    let value = "x".repeat(1000);
    for i in 0..5000 {
        s.set(&format!("k{i:05}"), &value);
    }
    s.del("k", "l");
    s.set("marker", "1");
    s.compact(s.current_revision()).unwrap().wait();
    s.flush().unwrap();
    let before = s.size();
    let stop = Arc::new(AtomicBool::new(false));
    let store = s.store.clone();
    let flag = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) {
            store
                .put(&rusd_mvcc::PutRequest::new(format!("during{n}"), "v"))
                .unwrap();
            assert_eq!(
                store
                    .range(&RangeRequest::new("marker", ""))
                    .unwrap()
                    .kvs
                    .len(),
                1
            );
            n += 1;
        }
        n
    });
    s.defragment().unwrap();
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    let after = s.size();
    assert!(after < before, "defragment shrank {before} to {after}");
    assert_eq!(s.keys("during", "durinh").len(), written);
    let s = s.reopen();
    assert_eq!(s.keys("during", "durinh").len(), written);
    assert!(s.get("marker").is_some());
}

#[test]
fn size_in_use_drops_after_compaction() {
    let s = open();
    let value = "y".repeat(2000);
    for i in 0..2000 {
        s.set("same", &format!("{i}{value}"));
    }
    s.flush().unwrap();
    let used = s.size_in_use().unwrap();
    s.compact(s.current_revision()).unwrap().wait();
    s.flush().unwrap();
    let after = s.size_in_use().unwrap();
    assert!(after < used / 2, "in use {used} -> {after}");
    assert!(s.size() >= after);
}

#[test]
fn size_in_use_is_the_exact_bytes_of_keys_and_values_and_survives_reopen() {
    use std::ops::{Bound, ControlFlow};
    let s = open();
    for i in 0..500 {
        s.set(&format!("key{}", i % 97), &"v".repeat(i % 300));
    }
    s.del("key1", "key3");
    s.compact(400).unwrap().wait();
    s.flush().unwrap();
    let recount = |st: &MvccStore| {
        let tx = st.backend().read();
        let mut total = 0u64;
        for table in Table::ALL {
            tx.scan(
                table,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                |k, v| {
                    if k != b"rusd/live_bytes" {
                        total += (k.len() + v.len()) as u64;
                    }
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
        }
        total
    };
    assert_eq!(s.size_in_use().unwrap(), recount(&s));
    s.defragment().unwrap();
    assert_eq!(s.size_in_use().unwrap(), recount(&s));
    let s = s.reopen();
    assert_eq!(s.size_in_use().unwrap(), recount(&s));
}

/// Every durable commit that wrote something reports its duration to the observer.
#[test]
fn commit_observer_hears_every_commit() {
    let t = open();
    let store = &t.store;
    let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let heard = commits.clone();
    store.backend().observe_commits(move |took| {
        assert!(took < std::time::Duration::from_secs(60));
        heard.fetch_add(1, Ordering::SeqCst);
    });
    store
        .put(&rusd_mvcc::PutRequest::new("a", "1"))
        .expect("put");
    store.flush().expect("flush");
    assert_eq!(commits.load(Ordering::SeqCst), 1);
    store.flush().expect("nothing to commit");
    assert_eq!(
        commits.load(Ordering::SeqCst),
        1,
        "an empty flush commits nothing"
    );
    store
        .put(&rusd_mvcc::PutRequest::new("b", "2"))
        .expect("put");
    store.flush().expect("flush");
    assert_eq!(commits.load(Ordering::SeqCst), 2);
}

#[test]
fn write_room_shrinks_with_pending_writes_and_returns_after_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rusd_mvcc::BackendConfig::new(dir.path().join("db"));
    config.max_pending_bytes = 10_000;
    // No background commit during the test.
    config.batch_limit = usize::MAX;
    config.batch_interval = std::time::Duration::from_secs(3600);
    let backend = Backend::open(config).unwrap();
    assert_eq!(backend.write_room(), 10_000);
    let mut batch = rusd_mvcc::WriteBatch::new();
    batch.put(Table::Kv, b"key".to_vec(), vec![0u8; 933]);
    backend.apply(batch).unwrap();
    // Key, value and 64 bytes of overhead.
    assert_eq!(backend.write_room(), 10_000 - 1_000);
    for _ in 0..9 {
        let mut batch = rusd_mvcc::WriteBatch::new();
        batch.put(Table::Kv, b"key".to_vec(), vec![0u8; 933]);
        backend.apply(batch).unwrap();
    }
    assert_eq!(backend.write_room(), 0);
    backend.flush().unwrap();
    assert_eq!(backend.write_room(), 10_000);
}
