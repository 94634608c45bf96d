//! Readers never block writers (etcd's TestConcurrentReadNotBlockingWrite), and concurrent
//! readers always see consistent revisions.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::open;
use rusd_mvcc::{PutRequest, RangeRequest};

#[test]
fn an_open_read_does_not_block_a_write() {
    let s = open();
    s.set("foo", "bar"); // 2
    let read = s.read(0).unwrap();
    let (done, finished) = mpsc::channel();
    let store = s.store.clone();
    let writer = std::thread::spawn(move || {
        store.put(&PutRequest::new("foo", "newBar")).unwrap();
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(5))
        .expect("the write finished while a read was open");
    writer.join().unwrap();
    // the read still sees its own revision
    let old = read.range(&RangeRequest::new("foo", "")).unwrap();
    assert_eq!(
        (read.revision(), old.kvs[0].value.as_slice()),
        (2, &b"bar"[..])
    );
    drop(read);
    assert_eq!(s.get("foo").unwrap().value, b"newBar");
}

#[test]
fn compaction_waits_for_an_open_read_below_it() {
    let s = open();
    s.set("k", "1"); // 2
    s.set("k", "2"); // 3
    let read = s.read(2).unwrap();
    let handle = s.compact(3).unwrap();
    // reads at 2 are refused from now on, but the open one keeps working
    assert!(s.read(2).is_err());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        read.range(&RangeRequest::new("k", "")).unwrap().kvs[0].value,
        b"1"
    );
    drop(read);
    handle.wait();
}

#[test]
fn concurrent_readers_see_whole_revisions() {
    // Each write moves a unit between two keys in one txn; every read must see a total of 10.
    let s = open();
    s.set("x", "10");
    s.set("y", "0");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = s.store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = store.range(&RangeRequest::new("x", "z")).unwrap();
                    let total: i64 = r
                        .kvs
                        .iter()
                        .map(|kv| {
                            std::str::from_utf8(&kv.value)
                                .unwrap()
                                .parse::<i64>()
                                .unwrap()
                        })
                        .sum();
                    assert_eq!(total, 10, "torn read at {}", r.revision);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..2000 {
        let x = 10 - (i % 11);
        let mut w = s.write();
        w.put(&PutRequest::new("x", x.to_string())).unwrap();
        w.put(&PutRequest::new("y", (10 - x).to_string())).unwrap();
        w.commit().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}
