//! Unit tests, and short builders for hand-written histories.

mod durability;
mod kv;
mod oracle;
mod random;
mod watch;

use crate::{
    check_kv, CheckError, CheckOptions, Input, KeyValue, Operation, Output, ViolationKind,
};

fn put(client: u64, call: u64, ret: u64, key: &str, value: &str, revision: i64) -> Operation {
    Operation::new(client, call, Input::put(key, value)).returned(ret, Output::Put { revision })
}

/// A get that found `kv` = (value, mod_revision).
fn get(
    client: u64,
    call: u64,
    ret: u64,
    key: &str,
    kv: Option<(&str, i64)>,
    revision: i64,
) -> Operation {
    let kv = kv.map(|(v, m)| KeyValue::new(v, m));
    Operation::new(client, call, Input::get(key)).returned(ret, Output::Get { kv, revision })
}

fn get_full(client: u64, call: u64, ret: u64, key: &str, kv: KeyValue, revision: i64) -> Operation {
    Operation::new(client, call, Input::get(key)).returned(
        ret,
        Output::Get {
            kv: Some(kv),
            revision,
        },
    )
}

fn del(client: u64, call: u64, ret: u64, key: &str, deleted: i64, revision: i64) -> Operation {
    Operation::new(client, call, Input::delete(key))
        .returned(ret, Output::Delete { deleted, revision })
}

#[allow(clippy::too_many_arguments)]
fn cas(
    client: u64,
    call: u64,
    ret: u64,
    key: &str,
    expect: i64,
    value: &str,
    succeeded: bool,
    revision: i64,
) -> Operation {
    Operation::new(client, call, Input::cas(key, expect, value)).returned(
        ret,
        Output::Cas {
            succeeded,
            revision,
        },
    )
}

fn unknown(client: u64, call: u64, input: Input) -> Operation {
    Operation::new(client, call, input)
}

fn check(history: &[Operation]) -> Result<(), CheckError> {
    check_kv(history, &CheckOptions::default())
}

/// The violation kind, panicking (with the report) on anything but a violation.
fn kind_of(result: Result<(), CheckError>) -> ViolationKind {
    match result {
        Err(CheckError::Violation(v)) => v.kind,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[track_caller]
fn assert_ok(result: Result<(), CheckError>) {
    if let Err(e) = result {
        panic!("expected success, got:\n{e}");
    }
}
