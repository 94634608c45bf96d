//! Bad input gets a typed error, never a panic, and never changes the store.

mod common;

use common::open;
use proptest::prelude::*;
use rusd_mvcc::{
    Backend, DeleteRangeRequest, Error, LeaseId, PutRequest, RangeRequest, SortOrder, SortTarget,
    Table, WriteBatch,
};

#[test]
fn out_of_range_numbers() {
    let s = open();
    s.set("k", "v");
    let at = |rev| {
        s.range(&RangeRequest {
            revision: rev,
            ..RangeRequest::new("k", "")
        })
    };
    assert!(matches!(at(i64::MAX), Err(Error::FutureRevision { .. })));
    assert!(
        at(i64::MIN).is_ok(),
        "a negative revision means the current one, as in etcd"
    );
    assert!(s
        .range(&RangeRequest {
            limit: -5,
            ..RangeRequest::new("k", "")
        })
        .is_ok());
    assert!(matches!(s.compact(i64::MIN), Err(Error::Compacted { .. })));
    assert!(matches!(
        s.compact(i64::MAX),
        Err(Error::FutureRevision { .. })
    ));
    assert!(s.events_since(i64::MAX, 10, true).unwrap().0.is_empty());
    assert!(s.events_since(i64::MIN, 0, true).unwrap().0.is_empty());
    assert!(matches!(
        s.lease_grant(LeaseId(0), 10),
        Err(Error::InvalidArgument(_))
    ));
    // etcd accepts a negative id (it only picks positive ones itself).
    s.lease_grant(LeaseId(-3), 10).expect("negative lease id");
    s.lease_revoke(LeaseId(-3))
        .expect("revoke negative lease id");
    assert!(matches!(
        s.lease_revoke(LeaseId(i64::MIN)),
        Err(Error::LeaseNotFound(_))
    ));
    assert!(matches!(
        s.store.put(&PutRequest {
            lease: -1,
            ..PutRequest::new("k", "v")
        }),
        Err(Error::LeaseNotFound(_))
    ));
    assert!(s.read(i64::MAX).is_err());
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn the_store_owns_its_tables() {
    let s = open();
    let mut w = s.write();
    assert!(matches!(
        w.put_raw(Table::Kv, b"k", b"v"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        w.delete_raw(Table::Meta, b"k"),
        Err(Error::InvalidArgument(_))
    ));
    w.put_raw(Table::Alarm, b"member1", b"NOSPACE").unwrap();
    w.commit().unwrap();
    let rows = s
        .backend()
        .read()
        .scan_prefix(Table::Alarm, b"member", 0)
        .unwrap();
    assert_eq!(rows, [(b"member1".to_vec(), b"NOSPACE".to_vec())]);
}

#[test]
fn backend_scans_with_limits_and_prefixes() {
    let s = open();
    let mut batch = WriteBatch::new();
    for k in ["a/1", "a/2", "a/3", "b/1"] {
        batch.put(Table::Members, k.as_bytes().to_vec(), b"v".to_vec());
    }
    batch.delete(Table::Members, b"a/2".to_vec());
    s.backend().apply(batch).unwrap();
    let tx = s.backend().read();
    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| {
        rows.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(tx.scan_prefix(Table::Members, b"a/", 0).unwrap()),
        ["a/1", "a/3"]
    );
    assert_eq!(
        keys(tx.scan_prefix(Table::Members, b"", 2).unwrap()),
        ["a/1", "a/3"]
    );
    s.flush().unwrap();
    let tx = s.backend().read();
    assert_eq!(
        keys(tx.scan_prefix(Table::Members, b"b", 0).unwrap()),
        ["b/1"]
    );
    assert_eq!(tx.last(Table::Members).unwrap().unwrap().0, b"b/1");
}

#[test]
fn restore_refuses_an_existing_target() {
    let s = open();
    let mut stream = Vec::new();
    s.snapshot_to(&mut stream).unwrap();
    let target = s.dir.path().join("db");
    assert!(matches!(
        Backend::restore(&stream[..], &target, 1 << 20),
        Err(Error::InvalidArgument(_))
    ));
}

fn sort_order() -> impl Strategy<Value = SortOrder> {
    prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ]
}

fn sort_target() -> impl Strategy<Value = SortTarget> {
    prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::Create),
        Just(SortTarget::Mod),
        Just(SortTarget::Value),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary range and delete requests never panic; errors are the documented ones.
    #[test]
    fn arbitrary_requests_never_panic(
        key in proptest::collection::vec(any::<u8>(), 0..4),
        end in proptest::collection::vec(any::<u8>(), 0..4),
        limit in any::<i64>(),
        revision in prop_oneof![any::<i64>(), -3i64..8],
        order in sort_order(),
        target in sort_target(),
        keys_only in any::<bool>(),
        count_only in any::<bool>(),
        filters in proptest::array::uniform4(prop_oneof![Just(0i64), any::<i64>(), 0i64..8]),
    ) {
        let s = open();
        for k in [&b"a"[..], b"\0", b"\xff\xff", b"ab"] {
            s.store.put(&PutRequest::new(k.to_vec(), "v")).unwrap();
        }
        let req = RangeRequest {
            key: key.clone(),
            range_end: end.clone(),
            limit,
            revision,
            sort_order: order,
            sort_target: target,
            keys_only,
            count_only,
            min_mod_revision: filters[0],
            max_mod_revision: filters[1],
            min_create_revision: filters[2],
            max_create_revision: filters[3],
        };
        match s.range(&req) {
            Ok(resp) => prop_assert!(resp.kvs.len() as i64 <= resp.count || !req.count_only),
            Err(Error::EmptyKey | Error::FutureRevision { .. } | Error::Compacted { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        let del = s.delete_range(&DeleteRangeRequest { key, range_end: end, prev_kv: true });
        prop_assert!(matches!(del, Ok(_) | Err(Error::EmptyKey)));
    }
}
