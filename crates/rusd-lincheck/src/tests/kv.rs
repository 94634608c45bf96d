//! check_kv on hand-written histories.

use super::{assert_ok, cas, check, del, get, get_full, kind_of, put, unknown};
use crate::{
    check_kv, CheckError, CheckOptions, Input, KeyValue, Operation, Output, ViolationKind,
};

#[test]
fn sequential_history_passes() {
    let h = [
        get(1, 0, 5, "k", None, 1),
        put(1, 10, 20, "k", "a", 2),
        get(1, 30, 40, "k", Some(("a", 2)), 2),
        cas(1, 50, 60, "k", 2, "b", true, 3),
        cas(1, 70, 80, "k", 2, "c", false, 3),
        get_full(1, 90, 95, "k", KeyValue::full("b", 3, 2, 2), 3),
        del(1, 100, 110, "k", 1, 4),
        del(1, 120, 130, "k", 0, 4),
        cas(1, 140, 150, "k", 0, "d", true, 5),
        get_full(1, 160, 170, "k", KeyValue::full("d", 5, 5, 1), 5),
    ];
    assert_ok(check(&h));
}

#[test]
fn overlapping_operations_pass() {
    // Two concurrent puts; the later-called one got the lower revision. Concurrent reads see
    // either order point; a read concurrent with both sees the first.
    let h = [
        put(1, 10, 100, "k", "a", 3),
        put(2, 20, 90, "k", "b", 2),
        get(3, 15, 95, "k", Some(("b", 2)), 2),
        get(4, 30, 95, "k", Some(("a", 3)), 3),
        get(5, 5, 8, "k", None, 1),
        put(6, 40, 60, "j", "x", 4),
        get(7, 50, 200, "j", None, 3),
        get(8, 110, 120, "k", Some(("a", 3)), 4),
    ];
    assert_ok(check(&h));
}

#[test]
fn reads_of_one_revision_in_any_real_time_order_pass() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        get(2, 20, 30, "k", Some(("a", 2)), 2),
        get(3, 40, 50, "k", Some(("a", 2)), 2),
        get(4, 25, 45, "j", None, 2),
    ];
    assert_ok(check(&h));
}

#[test]
fn unknown_put_that_happened_and_was_seen_passes() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        unknown(2, 20, Input::put("k", "b")),
        get(3, 100, 110, "k", Some(("a", 2)), 2),
        get(3, 120, 130, "k", Some(("b", 3)), 3),
        put(1, 140, 150, "k", "c", 4),
    ];
    assert_ok(check(&h));
}

#[test]
fn unknown_put_that_did_not_happen_passes() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        unknown(2, 20, Input::put("k", "b")),
        get(3, 100, 110, "k", Some(("a", 2)), 2),
        put(1, 140, 150, "k", "c", 3),
        get(3, 160, 170, "k", Some(("c", 3)), 3),
    ];
    assert_ok(check(&h));
}

#[test]
fn unknown_put_that_happened_unseen_passes() {
    // Revision 3 went to the unknown put, overwritten before anyone read the key.
    let h = [
        put(1, 0, 10, "k", "a", 2),
        unknown(2, 20, Input::put("k", "b")),
        put(1, 40, 50, "k", "c", 4),
        get(3, 60, 70, "k", Some(("c", 4)), 4),
    ];
    assert_ok(check(&h));
}

#[test]
fn unknown_writes_fill_holes_on_several_keys() {
    let h = [
        unknown(1, 0, Input::put("a", "1")),
        unknown(2, 0, Input::put("b", "2")),
        unknown(3, 0, Input::cas("c", 0, "3")),
        unknown(4, 0, Input::delete("d")),
        unknown(5, 0, Input::get("a")),
        put(6, 10, 20, "d", "x", 2),
        get(6, 100, 110, "b", Some(("2", 3)), 6),
        get(6, 100, 110, "c", Some(("3", 5)), 6),
        get(6, 120, 130, "d", None, 6),
        get(6, 120, 130, "a", Some(("1", 4)), 6),
    ];
    assert_ok(check(&h));
}

#[test]
fn unknown_write_taking_effect_long_after_its_call_passes() {
    let h = [
        unknown(1, 0, Input::put("k", "late")),
        put(2, 10, 20, "k", "a", 2),
        get(2, 30, 40, "k", Some(("a", 2)), 2),
        put(2, 50, 60, "j", "b", 3),
        get(2, 70, 80, "k", Some(("late", 4)), 4),
    ];
    assert_ok(check(&h));
}

#[test]
fn hidden_write_shows_in_version() {
    // An unknown put taking revision 3 unseen is fine, but the version must count it.
    let base = [
        put(1, 0, 10, "k", "a", 2),
        unknown(2, 20, Input::put("k", "b")),
        put(1, 40, 50, "k", "c", 4),
    ];
    let with = |version| {
        let mut h = base.to_vec();
        h.push(get_full(
            3,
            60,
            70,
            "k",
            KeyValue::full("c", 4, 2, version),
            4,
        ));
        h
    };
    assert_ok(check(&with(3)));
    // Version 2 leaves no room for the unknown put at 3, and nothing else can fill it.
    let err = check(&with(2)).unwrap_err();
    assert_eq!(
        err.violation().map(|v| v.kind),
        Some(ViolationKind::MissingRevision),
        "{err}"
    );
    assert!(err.to_string().contains("versions"), "{err}");
}

#[test]
fn stale_read_after_completed_write_is_detected() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        get(2, 40, 50, "k", Some(("a", 2)), 3),
    ];
    let err = check(&h).unwrap_err();
    let text = err.to_string();
    assert_eq!(
        err.violation().map(|v| v.kind),
        Some(ViolationKind::NotLinearizable),
        "{text}"
    );
    assert!(
        text.contains("\"k\"") && text.contains("#2") && text.contains("#1"),
        "{text}"
    );

    // The same stale value with the old header revision contradicts real time instead.
    let h = [
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        get(2, 40, 50, "k", Some(("a", 2)), 2),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::RevisionOrder);
}

#[test]
fn two_writes_with_the_same_revision_are_detected() {
    let h = [put(1, 0, 10, "a", "1", 2), put(2, 0, 10, "b", "2", 2)];
    assert_eq!(kind_of(check(&h)), ViolationKind::DuplicateRevision);
}

#[test]
fn revision_going_backwards_for_a_later_read_is_detected() {
    let h = [
        put(1, 0, 10, "a", "1", 2),
        put(1, 20, 30, "a", "2", 3),
        get(2, 40, 50, "b", None, 3),
        get(3, 60, 70, "b", None, 2),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::RevisionOrder);
}

#[test]
fn cas_against_a_stale_mod_revision_is_detected() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        put(1, 20, 30, "k", "b", 3),
        cas(2, 40, 50, "k", 2, "c", true, 4),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::NotLinearizable);
}

#[test]
fn cas_failing_although_it_matched_is_detected() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        cas(2, 40, 50, "k", 2, "c", false, 2),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::NotLinearizable);
}

#[test]
fn delete_of_an_absent_key_reporting_a_deletion_is_detected() {
    let h = [del(1, 0, 10, "k", 1, 2)];
    assert_eq!(kind_of(check(&h)), ViolationKind::NotLinearizable);
    let h = [del(1, 0, 10, "k", 2, 2)];
    assert_eq!(kind_of(check(&h)), ViolationKind::InvalidResponse);
}

#[test]
fn revision_without_a_writer_is_detected() {
    let h = [put(1, 0, 10, "k", "a", 2), put(1, 20, 30, "k", "b", 4)];
    assert_eq!(kind_of(check(&h)), ViolationKind::MissingRevision);
    // Allowed when writes outside the history may take revisions.
    let options = CheckOptions {
        foreign_writes: true,
        ..CheckOptions::default()
    };
    assert_ok(check_kv(&h, &options));
}

#[test]
fn unknown_write_cannot_fill_a_revision_issued_before_its_call() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        get(2, 20, 30, "j", None, 3),
        unknown(3, 40, Input::put("j", "x")),
        put(1, 50, 60, "k", "b", 4),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::MissingRevision);
}

#[test]
fn unknown_write_seen_with_the_wrong_value_is_detected() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        unknown(2, 20, Input::put("k", "b")),
        get(3, 100, 110, "k", Some(("zzz", 3)), 3),
    ];
    let err = check(&h).unwrap_err();
    assert!(err.violation().is_some(), "{err}");
}

#[test]
fn read_contradicting_a_hidden_unknown_write_is_detected() {
    // The unknown put to k cannot have taken revision 3 (k reads show "a" through 4), and
    // nothing else could.
    let h = [
        put(1, 0, 10, "k", "a", 2),
        unknown(2, 20, Input::put("k", "b")),
        put(1, 30, 40, "j", "x", 4),
        get(3, 50, 60, "k", Some(("a", 2)), 4),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::MissingRevision);
}

#[test]
fn responses_that_no_request_gets_are_invalid() {
    let h = [
        put(1, 0, 10, "k", "a", 2),
        get(2, 20, 30, "k", Some(("a", 3)), 2),
    ];
    assert_eq!(kind_of(check(&h)), ViolationKind::InvalidResponse);
    let h = [put(1, 0, 10, "k", "a", 1)];
    assert_eq!(kind_of(check(&h)), ViolationKind::InvalidResponse);
}

#[test]
fn malformed_histories_are_refused() {
    let backwards = put(1, 10, 5, "k", "a", 2);
    assert!(matches!(
        check(&[backwards]),
        Err(CheckError::InvalidHistory { index: 0, .. })
    ));
    let mismatched = Operation::new(1, 0, Input::get("k")).returned(1, Output::Put { revision: 2 });
    assert!(matches!(
        check(&[mismatched]),
        Err(CheckError::InvalidHistory { .. })
    ));
    let half = Operation {
        ret: Some(3),
        ..Operation::new(1, 0, Input::get("k"))
    };
    assert!(matches!(
        check(&[half]),
        Err(CheckError::InvalidHistory { .. })
    ));
}

#[test]
fn initial_revision_is_honoured() {
    let h = [
        put(1, 0, 10, "k", "a", 101),
        get(1, 20, 30, "k", Some(("a", 101)), 101),
    ];
    let options = CheckOptions {
        initial_revision: 100,
        ..CheckOptions::default()
    };
    assert_ok(check_kv(&h, &options));
    assert_eq!(kind_of(check(&h)), ViolationKind::MissingRevision);
}

/// Many unknown writes that could each fill any hole, and a contradiction at the end that
/// only an exhaustive search proves.
fn hard_history(n: usize) -> Vec<Operation> {
    let mut h = Vec::new();
    for i in 0..n {
        h.push(unknown(i as u64, 0, Input::put(format!("k{i}"), "x")));
    }
    let top = n as i64 + 1;
    h.push(put(100, 10, 20, "z", "a", top + 1));
    // Every k{i} still absent at the end: no unknown write took effect, so nothing filled
    // revisions 2..=top.
    for i in 0..n {
        h.push(get(100, 30, 40, &format!("k{i}"), None, top + 1));
    }
    h
}

#[test]
fn exhausted_budget_is_undecided_not_a_verdict() {
    let h = hard_history(12);
    let options = CheckOptions {
        max_steps: 50,
        ..CheckOptions::default()
    };
    assert!(matches!(
        check_kv(&h, &options),
        Err(CheckError::Undecided { .. })
    ));
    let options = CheckOptions {
        timeout: Some(std::time::Duration::ZERO),
        ..CheckOptions::default()
    };
    assert!(matches!(
        check_kv(&h, &options),
        Err(CheckError::Undecided { .. })
    ));
    // With a budget large enough, the search proves the violation.
    assert_eq!(
        kind_of(check(&hard_history(6))),
        ViolationKind::NotLinearizable
    );
}

#[test]
fn report_names_key_and_operations() {
    let h = [
        put(1, 0, 10, "key-1", "a", 2),
        put(1, 20, 30, "key-1", "b", 3),
        get(2, 40, 50, "key-1", None, 3),
    ];
    let text = check(&h).unwrap_err().to_string();
    assert!(
        text.starts_with("not linearizable on key \"key-1\""),
        "{text}"
    );
    assert!(
        text.contains("#2: client 2 [40ns..50ns] get(\"key-1\") -> not found, revision 3"),
        "{text}"
    );
    assert!(
        text.contains("#1: client 1 [20ns..30ns] put(\"key-1\", \"b\")"),
        "{text}"
    );
}
