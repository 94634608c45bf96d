//! check_durability.

use std::collections::BTreeMap;

use super::{assert_ok, del, kind_of, put, unknown};
use crate::{check_durability, FinalRead, Input, KeyValue, ViolationKind};

fn final_read(revision: i64, kvs: &[(&str, &str, i64)]) -> FinalRead {
    let kvs: BTreeMap<Vec<u8>, KeyValue> = kvs
        .iter()
        .map(|&(k, v, m)| (k.as_bytes().to_vec(), KeyValue::new(v, m)))
        .collect();
    FinalRead { revision, kvs }
}

#[test]
fn visible_or_superseded_writes_pass() {
    let h = [
        put(1, 0, 10, "a", "1", 2),
        put(1, 20, 30, "a", "2", 3),
        put(1, 40, 50, "b", "1", 4),
        del(1, 60, 70, "b", 1, 5),
        put(1, 80, 90, "c", "1", 6),
        unknown(2, 100, Input::put("c", "2")),
        put(1, 110, 120, "d", "1", 7),
        unknown(2, 130, Input::delete("d")),
        unknown(2, 140, Input::put("e", "1")),
    ];
    // a: last write visible; b: deleted; c: superseded by an unknown put; d: by an unknown
    // delete; e: the unknown put did not happen.
    assert_ok(check_durability(
        &h,
        &final_read(9, &[("a", "2", 3), ("c", "2", 8)]),
    ));
    // c's unknown put did not happen either: c's acknowledged value is visible.
    assert_ok(check_durability(
        &h,
        &final_read(9, &[("a", "2", 3), ("c", "1", 6), ("e", "1", 9)]),
    ));
}

#[test]
fn lost_acknowledged_write_is_detected() {
    let h = [put(1, 0, 10, "a", "1", 2), put(1, 20, 30, "a", "2", 3)];
    let err = check_durability(&h, &final_read(3, &[("a", "1", 2)])).unwrap_err();
    assert_eq!(
        err.violation().map(|v| v.kind),
        Some(ViolationKind::LostWrite)
    );
    assert!(err.to_string().contains("#1"), "{err}");
    // Missing key, no delete.
    assert_eq!(
        kind_of(check_durability(&h, &final_read(3, &[]))),
        ViolationKind::LostWrite
    );
    // Right revision, wrong value.
    assert_eq!(
        kind_of(check_durability(&h, &final_read(3, &[("a", "x", 3)]))),
        ViolationKind::LostWrite
    );
    // The final read is older than an acknowledged write.
    assert_eq!(
        kind_of(check_durability(&h, &final_read(2, &[("a", "1", 2)]))),
        ViolationKind::LostWrite
    );
}

#[test]
fn values_nobody_wrote_are_detected() {
    let h = [put(1, 0, 10, "a", "1", 2), put(1, 20, 30, "b", "1", 3)];
    assert_eq!(
        kind_of(check_durability(
            &h,
            &final_read(4, &[("a", "9", 4), ("b", "1", 3)])
        )),
        ViolationKind::PhantomWrite
    );
    // Revision 3 was b's write, not a's.
    assert_eq!(
        kind_of(check_durability(
            &h,
            &final_read(4, &[("a", "1", 3), ("b", "1", 3)])
        )),
        ViolationKind::PhantomWrite
    );
}
