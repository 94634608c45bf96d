//! KV semantics, case by case against etcd's documented (and verified) behaviour.

mod common;

use common::open;
use rusd_mvcc::{
    DeleteRangeRequest, Error, LeaseId, PutRequest, RangeRequest, SortOrder, SortTarget,
};

#[test]
fn revisions_start_at_one_and_the_first_write_gets_two() {
    let s = open();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.set("a", "1"), 2);
    assert_eq!(
        s.set("a", "1"),
        3,
        "an identical value still makes a revision"
    );
    let kv = s.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[test]
fn delete_of_nothing_makes_no_revision() {
    let s = open();
    s.set("a", "1");
    let resp = s.delete_range(&DeleteRangeRequest::new("zz", "")).unwrap();
    assert_eq!((resp.deleted, resp.revision), (0, 2));
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn delete_range_is_one_revision_and_resets_version() {
    let s = open();
    for k in ["a", "b", "c"] {
        s.set(k, "v");
    }
    let resp = s
        .delete_range(&DeleteRangeRequest {
            prev_kv: true,
            ..DeleteRangeRequest::new("a", "c")
        })
        .unwrap();
    assert_eq!((resp.deleted, resp.revision), (2, 5));
    assert_eq!(resp.prev_kvs.len(), 2);
    assert_eq!(s.keys("a", "\0"), ["c"]);
    assert_eq!(s.set("a", "again"), 6);
    let kv = s.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.version), (6, 1));
}

#[test]
fn historical_reads_and_header_revision() {
    let s = open();
    s.set("k", "v1"); // 2
    s.set("k", "v2"); // 3
    s.del("k", ""); // 4
    assert_eq!(s.get_at("k", 2).unwrap().value, b"v1");
    assert_eq!(s.get_at("k", 3).unwrap().value, b"v2");
    assert!(s.get_at("k", 4).is_none());
    assert!(s.get_at("k", 1).is_none());
    let resp = s
        .range(&RangeRequest {
            revision: 2,
            ..RangeRequest::new("k", "")
        })
        .unwrap();
    assert_eq!(resp.revision, 4, "header revision is the current one");
}

#[test]
fn future_and_compacted_revisions_are_typed_errors() {
    let s = open();
    for i in 0..5 {
        s.set("k", &i.to_string());
    }
    let at = |rev| {
        s.range(&RangeRequest {
            revision: rev,
            ..RangeRequest::new("k", "")
        })
    };
    assert!(matches!(
        at(7),
        Err(Error::FutureRevision {
            requested: 7,
            current: 6
        })
    ));
    s.compact(4).unwrap().wait();
    assert!(matches!(
        at(3),
        Err(Error::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    assert_eq!(
        at(4).unwrap().kvs[0].value,
        b"2",
        "reading at the compact revision works"
    );
    assert!(matches!(s.compact(4), Err(Error::Compacted { .. })));
    assert!(matches!(s.compact(3), Err(Error::Compacted { .. })));
    assert!(matches!(s.compact(7), Err(Error::FutureRevision { .. })));
    s.compact(6).unwrap().wait();
}

#[test]
fn empty_key_is_rejected_everywhere() {
    let s = open();
    assert!(matches!(
        s.range(&RangeRequest::new("", "")),
        Err(Error::EmptyKey)
    ));
    assert!(matches!(
        s.put(&PutRequest::new("", "v")),
        Err(Error::EmptyKey)
    ));
    assert!(matches!(
        s.delete_range(&DeleteRangeRequest::new("", "")),
        Err(Error::EmptyKey)
    ));
    assert_eq!(s.current_revision(), 1);
}

#[test]
fn range_end_conventions() {
    let s = open();
    for k in ["a", "ab", "b", "c", "\u{7f}"] {
        s.set(k, "v");
    }
    assert_eq!(s.keys("a", ""), ["a"]);
    assert_eq!(s.keys("a", "b"), ["a", "ab"]);
    assert_eq!(s.keys("b", "\0"), ["b", "c", "\u{7f}"]);
    assert_eq!(s.keys("\0", "\0").len(), 5);
    assert!(s.keys("c", "a").is_empty(), "an inverted range is empty");
    assert_eq!(
        s.keys(
            "a",
            &String::from_utf8(rusd_mvcc::prefix_end(b"a")).unwrap()
        ),
        ["a", "ab"]
    );
}

#[test]
fn count_ignores_limit_and_filters_and_more_is_set() {
    let s = open();
    for i in 0..10 {
        s.set(&format!("k{i}"), &i.to_string());
    }
    let resp = s
        .range(&RangeRequest {
            limit: 3,
            ..RangeRequest::new("k", "l")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (3, 10, true));
    let resp = s
        .range(&RangeRequest {
            limit: 10,
            ..RangeRequest::new("k", "l")
        })
        .unwrap();
    assert!(!resp.more);
    let resp = s
        .range(&RangeRequest {
            min_mod_revision: 8,
            ..RangeRequest::new("k", "l")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.count), (4, 10));
    let resp = s
        .range(&RangeRequest {
            count_only: true,
            limit: 1,
            ..RangeRequest::new("k", "l")
        })
        .unwrap();
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (0, 10, false));
}

#[test]
fn historical_count_agrees_with_a_walk() {
    // Many keys and few changes since the read revision take the change-log path; a short
    // range takes the walk. Both must give the same answers.
    let s = open();
    for i in 0..3000 {
        s.set(&format!("k{i:05}"), "v");
    }
    let base = s.current_revision();
    for i in 0..20 {
        s.del(&format!("k{:05}", i * 7), "");
        s.set(&format!("k{:05}x", i), "new");
    }
    for (key, end) in [("k", "l"), ("k00010", "k00100"), ("k00000", "k00003")] {
        let at = |rev| {
            s.range(&RangeRequest {
                revision: rev,
                count_only: true,
                ..RangeRequest::new(key, end)
            })
            .unwrap()
            .count
        };
        let full = |rev| {
            s.range(&RangeRequest {
                revision: rev,
                keys_only: true,
                ..RangeRequest::new(key, end)
            })
            .unwrap()
            .kvs
            .len() as i64
        };
        for rev in [base, base + 5, base + 20, s.current_revision()] {
            assert_eq!(at(rev), full(rev), "range {key}..{end} at {rev}");
        }
    }
}

#[test]
fn sorting_and_keys_only() {
    let s = open();
    s.set("b", "1"); // 2
    s.set("a", "3"); // 3
    s.set("c", "2"); // 4
    s.set("a", "0"); // 5
    let sorted = |order, target| {
        s.range(&RangeRequest {
            sort_order: order,
            sort_target: target,
            ..RangeRequest::new("a", "\0")
        })
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect::<Vec<_>>()
    };
    assert_eq!(sorted(SortOrder::None, SortTarget::Key), ["a", "b", "c"]);
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Key), ["c", "b", "a"]);
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Mod),
        ["b", "c", "a"],
        "NONE + MOD sorts ascending"
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Create),
        ["c", "a", "b"]
    );
    assert_eq!(
        sorted(SortOrder::Ascend, SortTarget::Value),
        ["a", "b", "c"]
    );
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Version),
        ["a", "b", "c"],
        "ties keep key order, as etcd's sort does"
    );
    let resp = s
        .range(&RangeRequest {
            keys_only: true,
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            limit: 1,
            ..RangeRequest::new("a", "\0")
        })
        .unwrap();
    assert_eq!(resp.kvs[0].key, b"c");
    assert!(resp.kvs[0].value.is_empty());
    assert_eq!(resp.kvs[0].mod_revision, 4, "keys_only keeps the metadata");
    assert!(resp.more);
}

#[test]
fn put_flags() {
    let s = open();
    let put = |req: PutRequest| s.put(&req);
    assert!(matches!(
        put(PutRequest {
            ignore_value: true,
            ..PutRequest::new("k", "")
        }),
        Err(Error::KeyNotFound)
    ));
    assert!(matches!(
        put(PutRequest {
            ignore_value: true,
            ..PutRequest::new("k", "v")
        }),
        Err(Error::ValueProvided)
    ));
    assert!(matches!(
        put(PutRequest {
            ignore_lease: true,
            lease: 5,
            ..PutRequest::new("k", "v")
        }),
        Err(Error::LeaseProvided)
    ));
    assert!(matches!(
        put(PutRequest {
            lease: 5,
            ..PutRequest::new("k", "v")
        }),
        Err(Error::LeaseNotFound(LeaseId(5)))
    ));
    s.lease_grant(LeaseId(5), 10).unwrap();
    put(PutRequest {
        lease: 5,
        ..PutRequest::new("k", "v1")
    })
    .unwrap();
    let resp = put(PutRequest {
        ignore_value: true,
        prev_kv: true,
        ..PutRequest::new("k", "")
    })
    .unwrap();
    assert_eq!(resp.prev_kv.unwrap().value, b"v1");
    let kv = s.get("k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease),
        (&b"v1"[..], 0),
        "a put without lease detaches"
    );
    put(PutRequest {
        lease: 5,
        ..PutRequest::new("k", "v2")
    })
    .unwrap();
    put(PutRequest {
        ignore_lease: true,
        ..PutRequest::new("k", "v3")
    })
    .unwrap();
    let kv = s.get("k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"v3"[..], 5));
    assert!(s.current_revision() == 5);
}

#[test]
fn lease_revoke_deletes_its_keys_in_one_revision() {
    let s = open();
    s.lease_grant(LeaseId(7), 60).unwrap();
    assert!(matches!(
        s.lease_grant(LeaseId(7), 60),
        Err(Error::LeaseExists(LeaseId(7)))
    ));
    for k in ["x", "a", "m"] {
        s.put(&PutRequest {
            lease: 7,
            ..PutRequest::new(k, "v")
        })
        .unwrap();
    }
    s.set("other", "v");
    assert_eq!(
        s.lease(LeaseId(7)).unwrap().keys,
        [b"a".to_vec(), b"m".to_vec(), b"x".to_vec()]
    );
    let sub = s.subscribe(16, false);
    let rev = s.lease_revoke(LeaseId(7)).unwrap();
    assert_eq!(rev, 6);
    let batch = sub.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    let deleted: Vec<_> = batch
        .events
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        deleted,
        [(b"a".to_vec(), 6), (b"m".to_vec(), 6), (b"x".to_vec(), 6)]
    );
    assert_eq!(s.keys("\0", "\0"), ["other"]);
    assert!(s.lease(LeaseId(7)).is_none());
    assert!(matches!(
        s.lease_revoke(LeaseId(7)),
        Err(Error::LeaseNotFound(_))
    ));
    // An empty lease revokes without a revision.
    s.lease_grant(LeaseId(8), 5).unwrap();
    assert_eq!(s.lease_revoke(LeaseId(8)).unwrap(), 6);
}

#[test]
fn leases_and_attachments_survive_reopen() {
    let s = open();
    s.lease_grant(LeaseId(3), 30).unwrap();
    s.put(&PutRequest {
        lease: 3,
        ..PutRequest::new("k", "v")
    })
    .unwrap();
    let s = s.reopen();
    let lease = s.lease(LeaseId(3)).unwrap();
    assert_eq!((lease.ttl, lease.keys), (30, vec![b"k".to_vec()]));
    assert_eq!(s.leases().len(), 1);
    s.lease_revoke(LeaseId(3)).unwrap();
    assert!(s.get("k").is_none());
}

#[test]
fn state_survives_reopen_including_compaction() {
    let s = open();
    s.set("a", "1");
    s.set("a", "2");
    s.set("b", "1");
    s.del("b", "");
    s.set("a", "3"); // 6
    s.compact(4).unwrap().wait();
    let s = s.reopen();
    assert_eq!(s.current_revision(), 6);
    assert_eq!(s.compact_revision(), 4);
    let kv = s.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.version, kv.mod_revision), (2, 3, 6));
    assert_eq!(s.get_at("a", 4).unwrap().value, b"2");
    assert_eq!(s.set("c", "x"), 7);
    // version numbering continues from the record even though older revisions are gone
    s.compact(6).unwrap().wait();
    let s = s.reopen();
    s.set("a", "4");
    assert_eq!(s.get("a").unwrap().version, 4);
}

#[test]
fn applied_index_is_recorded_with_the_data() {
    let s = open();
    let mut w = s.write();
    w.put(&PutRequest::new("k", "v")).unwrap();
    w.set_applied_index(42);
    assert_eq!(w.commit().unwrap(), 2);
    let mut w = s.write();
    w.set_applied_index(43); // an entry that changed nothing is still recorded
    assert_eq!(w.commit().unwrap(), 2);
    assert_eq!(s.applied_index(), 43);
    let s = s.reopen();
    assert_eq!(s.applied_index(), 43);
}

#[test]
fn an_uncommitted_write_txn_changes_nothing() {
    let s = open();
    s.set("k", "v");
    {
        let mut w = s.write();
        w.put(&PutRequest::new("k", "other")).unwrap();
        w.put(&PutRequest::new("j", "v")).unwrap();
        // dropped
    }
    assert_eq!(s.current_revision(), 2);
    assert_eq!(s.get("k").unwrap().value, b"v");
    assert!(s.get("j").is_none());
    assert_eq!(s.set("x", "y"), 3);
}

#[test]
fn dropping_the_last_handle_closes_and_persists_the_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = rusd_mvcc::MvccStore::open(common::config(dir.path())).unwrap();
        s.put(&PutRequest::new("a", "1")).unwrap();
        s.put(&PutRequest::new("a", "2")).unwrap();
        s.compact(2).unwrap();
        let _clone = s.clone();
    }
    let s = rusd_mvcc::MvccStore::open(common::config(dir.path())).unwrap();
    assert_eq!(s.current_revision(), 3);
    assert_eq!(s.compact_revision(), 2);
}

/// `hash_kv` gives etcd's own values: each expected hash was read from etcd 3.4.23
/// (`etcdctl endpoint hashkv`) after the same sequence of commands.
#[test]
fn hash_kv_equals_etcds() {
    let s = common::open();
    let hash = |s: &common::TestStore| {
        let h = s.hash_kv(0).expect("hash_kv");
        (h.hash, h.compact_revision)
    };
    assert_eq!(hash(&s), (1_084_519_789, -1), "empty store");
    s.set("a", "1");
    assert_eq!(hash(&s), (2_587_454_935, -1));
    s.set("a", "2");
    assert_eq!(hash(&s), (535_221_974, -1));
    s.del("a", "");
    assert_eq!(hash(&s), (1_363_947_557, -1));
    s.set("b", "3");
    assert_eq!(hash(&s), (3_418_071_850, -1));
    s.compact(3).expect("compact").wait();
    assert_eq!(hash(&s), (3_953_290_446, 3), "compacted at 3");
    s.set("c", "1");
    s.del("c", "");
    s.compact(7).expect("compact").wait();
    // The tombstone of c at exactly 7 is kept by rusd (as etcd 3.6) but left out of the hash.
    assert_eq!(hash(&s), (3_464_618_346, 7), "compacted at a tombstone");
    s.del("b", "");
    assert_eq!(
        hash(&s),
        (110_117_303, 7),
        "no live key: every stored record counts"
    );
    s.set("d", "1");
    s.compact(9).expect("compact").wait();
    assert_eq!(hash(&s), (2_962_135_069, 9));
    // etcd: only 0 means "current"; a negative revision hashes nothing.
    assert_eq!(s.hash_kv(-1).expect("hash_kv").hash, 1_084_519_789);
}
