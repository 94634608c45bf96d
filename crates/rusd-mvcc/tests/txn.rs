//! Txn semantics: compares, branches, nesting, validation and all-or-nothing pre-checks.

mod common;

use common::{cmp, open};
use rusd_mvcc::{
    validate_txn, CompareResult::*, CompareTarget::*, DeleteRangeRequest, Error, PutRequest,
    RangeRequest, RequestOp, ResponseOp, TxnRequest,
};

fn put(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(k, v))
}

fn get(k: &str) -> RequestOp {
    RequestOp::Range(RangeRequest::new(k, ""))
}

fn del(k: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest::new(k, end))
}

#[test]
fn kubernetes_create_and_cas_update() {
    let s = open();
    let create = |v: &str| TxnRequest {
        compare: vec![cmp("/registry/pods/a", Equal, Mod(0))],
        success: vec![put("/registry/pods/a", v)],
        failure: vec![get("/registry/pods/a")],
    };
    let r = s.txn(&create("v1")).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 2);
    let r = s.txn(&create("v2")).unwrap();
    assert!(!r.succeeded, "create of an existing key fails");
    assert_eq!(
        r.revision, 2,
        "a txn that changed nothing makes no revision"
    );
    let ResponseOp::Range(existing) = &r.responses[0] else {
        panic!("expected a range response")
    };
    assert_eq!(existing.kvs[0].value, b"v1");
    let update = TxnRequest {
        compare: vec![cmp("/registry/pods/a", Equal, Mod(2))],
        success: vec![put("/registry/pods/a", "v3")],
        failure: vec![get("/registry/pods/a")],
    };
    assert!(s.txn(&update).unwrap().succeeded);
    assert!(!s.txn(&update).unwrap().succeeded, "a stale CAS fails");
}

#[test]
fn compares_on_missing_keys() {
    let s = open();
    let holds = |c| {
        s.txn(&TxnRequest {
            compare: vec![c],
            ..TxnRequest::default()
        })
        .unwrap()
        .succeeded
    };
    assert!(holds(cmp("nope", Equal, Version(0))));
    assert!(holds(cmp("nope", Equal, Create(0))));
    assert!(holds(cmp("nope", Equal, Lease(0))));
    assert!(
        !holds(cmp("nope", Equal, Value(vec![]))),
        "VALUE on a missing key is false"
    );
    assert!(!holds(cmp("nope", NotEqual, Value(b"x".to_vec()))));
    s.set("k", "b");
    assert!(holds(cmp("k", Greater, Value(b"a".to_vec()))));
    assert!(holds(cmp("k", Less, Value(b"c".to_vec()))));
    assert!(holds(cmp("k", NotEqual, Version(2))));
    assert!(holds(cmp("k", Greater, Mod(1))));
}

#[test]
fn compare_over_a_range_needs_every_key() {
    let s = open();
    s.set("a1", "x");
    s.set("a2", "x");
    s.set("a3", "y");
    let mut c = cmp("a1", Equal, Value(b"x".to_vec()));
    c.range_end = b"a3".to_vec();
    let ok = s
        .txn(&TxnRequest {
            compare: vec![c.clone()],
            ..TxnRequest::default()
        })
        .unwrap();
    assert!(ok.succeeded);
    c.range_end = b"a4".to_vec();
    let ok = s
        .txn(&TxnRequest {
            compare: vec![c],
            ..TxnRequest::default()
        })
        .unwrap();
    assert!(!ok.succeeded);
}

#[test]
fn reads_see_earlier_writes_and_share_one_revision() {
    let s = open();
    s.set("gone", "x"); // 2
    let r = s
        .txn(&TxnRequest {
            success: vec![
                get("a"),
                put("a", "1"),
                get("a"),
                del("gone", ""),
                put("b", "2"),
                RequestOp::Range(RangeRequest::new("a", "\0")),
            ],
            ..TxnRequest::default()
        })
        .unwrap();
    assert_eq!(r.revision, 3);
    let revs: Vec<i64> = r
        .responses
        .iter()
        .map(|op| match op {
            ResponseOp::Range(x) => x.revision,
            ResponseOp::Put(x) => x.revision,
            ResponseOp::DeleteRange(x) => x.revision,
            ResponseOp::Txn(x) => x.revision,
        })
        .collect();
    assert_eq!(revs, [2, 3, 3, 3, 3, 3]);
    let ResponseOp::Range(first) = &r.responses[0] else {
        panic!()
    };
    assert!(first.kvs.is_empty());
    let ResponseOp::Range(second) = &r.responses[2] else {
        panic!()
    };
    assert_eq!(second.kvs[0].value, b"1");
    assert_eq!(second.kvs[0].mod_revision, 3);
    let ResponseOp::Range(all) = &r.responses[5] else {
        panic!()
    };
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(all.count, 2);
    // Sub-revisions in execution order: a=3.0, gone=3.1, b=3.2.
    let (events, _) = s.events_since(3, 10, false).unwrap();
    let keys: Vec<_> = events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys, [b"a".to_vec(), b"gone".to_vec(), b"b".to_vec()]);
}

#[test]
fn nested_txns_decide_against_the_state_before_the_outer_one() {
    let s = open();
    let r = s
        .txn(&TxnRequest {
            success: vec![
                put("k", "v"),
                RequestOp::Txn(TxnRequest {
                    // evaluated before the outer put: k does not exist yet
                    compare: vec![cmp("k", Equal, Version(0))],
                    success: vec![put("nested", "then")],
                    failure: vec![put("nested", "else")],
                }),
            ],
            ..TxnRequest::default()
        })
        .unwrap();
    assert_eq!(s.get("nested").unwrap().value, b"then");
    let ResponseOp::Txn(inner) = &r.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(r.revision, 2);
}

#[test]
fn duplicate_key_rule() {
    let dup = |success: Vec<RequestOp>| {
        validate_txn(
            &TxnRequest {
                success,
                ..TxnRequest::default()
            },
            128,
        )
    };
    assert!(matches!(
        dup(vec![put("a", "1"), put("a", "2")]),
        Err(Error::DuplicateKey)
    ));
    assert!(matches!(
        dup(vec![del("a", "c"), put("b", "2")]),
        Err(Error::DuplicateKey)
    ));
    assert!(matches!(
        dup(vec![put("b", "2"), del("a", "c")]),
        Err(Error::DuplicateKey)
    ));
    assert!(
        dup(vec![del("a", "c"), del("b", "")]).is_ok(),
        "overlapping deletes are fine"
    );
    assert!(
        dup(vec![del("a", "\0"), put("b", "2")]).is_ok(),
        "etcd treats a \\0 end as empty here"
    );
    let nested = |then: Vec<RequestOp>, els: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest {
            success: then,
            failure: els,
            ..TxnRequest::default()
        })
    };
    assert!(dup(vec![nested(vec![put("a", "1")], vec![put("a", "2")])]).is_ok());
    assert!(matches!(
        dup(vec![put("a", "0"), nested(vec![put("a", "1")], vec![])]),
        Err(Error::DuplicateKey)
    ));
    assert!(matches!(
        dup(vec![del("a", ""), nested(vec![], vec![put("a", "1")])]),
        Err(Error::DuplicateKey)
    ));
    // success and failure are checked independently
    assert!(validate_txn(
        &TxnRequest {
            success: vec![put("a", "1")],
            failure: vec![put("a", "1")],
            ..TxnRequest::default()
        },
        128
    )
    .is_ok());
}

#[test]
fn operation_limits() {
    let ops = |n: usize| {
        (0..n)
            .map(|i| put(&format!("k{i}"), "v"))
            .collect::<Vec<_>>()
    };
    let txn = |n| TxnRequest {
        success: ops(n),
        ..TxnRequest::default()
    };
    assert!(validate_txn(&txn(128), 128).is_ok());
    assert!(matches!(
        validate_txn(&txn(129), 128),
        Err(Error::TooManyTxnOps { ops: 129, max: 128 })
    ));
    // nested txns share the budget: 100 at the top leaves 28 below
    let mut outer = txn(100);
    outer.success[99] = RequestOp::Txn(TxnRequest {
        success: ops(29),
        ..TxnRequest::default()
    });
    assert!(matches!(
        validate_txn(&outer, 128),
        Err(Error::TooManyTxnOps { .. })
    ));
    let s = open();
    assert!(matches!(s.txn(&txn(129)), Err(Error::TooManyTxnOps { .. })));
    let mut c = cmp("", Equal, Version(0));
    c.key.clear();
    assert!(matches!(
        validate_txn(
            &TxnRequest {
                compare: vec![c],
                ..TxnRequest::default()
            },
            128
        ),
        Err(Error::EmptyKey)
    ));
}

#[test]
fn failed_pre_checks_apply_nothing() {
    let s = open();
    s.set("k", "v"); // 2
    let with = |op: RequestOp| {
        s.txn(&TxnRequest {
            success: vec![put("first", "x"), op],
            ..TxnRequest::default()
        })
    };
    assert!(matches!(
        with(RequestOp::Put(PutRequest {
            lease: 99,
            ..PutRequest::new("x", "y")
        })),
        Err(Error::LeaseNotFound(_))
    ));
    assert!(matches!(
        with(RequestOp::Put(PutRequest {
            ignore_value: true,
            ..PutRequest::new("missing", "")
        })),
        Err(Error::KeyNotFound)
    ));
    assert!(matches!(
        with(RequestOp::Range(RangeRequest {
            revision: 9,
            ..RangeRequest::new("k", "")
        })),
        Err(Error::FutureRevision { .. })
    ));
    assert_eq!(s.current_revision(), 2);
    assert!(s.get("first").is_none());
}

#[test]
fn negative_revision_in_a_txn_range_counts_as_compacted() {
    // etcd 3.4 compares a txn range's revision with the compact revision whenever it is not 0.
    let s = open();
    s.set("k", "v");
    s.set("k", "w");
    let txn = |rev| {
        s.txn(&TxnRequest {
            success: vec![RequestOp::Range(RangeRequest {
                revision: rev,
                ..RangeRequest::new("k", "")
            })],
            ..TxnRequest::default()
        })
    };
    assert!(txn(-1).is_ok(), "before any compaction -1 is not below -1");
    assert!(matches!(txn(-2), Err(Error::Compacted { .. })));
    s.compact(2).unwrap().wait();
    assert!(matches!(txn(-1), Err(Error::Compacted { .. })));
    let ResponseOp::Range(r) = &txn(2).unwrap().responses[0] else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, b"v");
}

#[test]
fn read_only_txn_makes_no_revision() {
    let s = open();
    s.set("a", "1");
    let r = s
        .txn(&TxnRequest {
            compare: vec![cmp("a", Equal, Value(b"1".to_vec()))],
            success: vec![
                get("a"),
                RequestOp::Txn(TxnRequest {
                    success: vec![get("a")],
                    ..TxnRequest::default()
                }),
            ],
            failure: vec![],
        })
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 2);
    assert_eq!(s.current_revision(), 2);
}
