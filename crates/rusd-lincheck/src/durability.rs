//! [`check_durability`]: no acknowledged write is lost.

use std::collections::{BTreeMap, HashMap};

use crate::error::{CheckError, Violation, ViolationKind};
use crate::history::{Bytes, KeyValue, Operation};

/// A read of every key of the history taken after all clients stopped (for example a range
/// over the test's prefix): the keys that exist, and the header revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalRead {
    /// Header revision of the read.
    pub revision: i64,
    /// The keys that exist; a key of the history missing here does not exist.
    pub kvs: BTreeMap<Vec<u8>, KeyValue>,
}

/// Checks that the last acknowledged write of every key (by revision) is visible in
/// `final_read` or was superseded by a later write: the key's mod_revision is at least the
/// write's revision, with the write's own value at exactly its revision, a newer value only
/// from a write whose outcome is unknown, and a missing key only after an acknowledged delete
/// or with a delete of unknown outcome. Also refuses values no write of the history produced.
///
/// [`check_kv`](crate::check_kv) on the history plus the final read as gets implies all of
/// this; this check is cheap and names the lost write directly.
pub fn check_durability(history: &[Operation], final_read: &FinalRead) -> Result<(), CheckError> {
    // key -> (revision, history index) of its last acknowledged write
    let mut last: HashMap<&[u8], (i64, usize)> = HashMap::new();
    // revision -> key of every acknowledged write
    let mut written: HashMap<i64, &[u8]> = HashMap::new();
    for (index, op) in history.iter().enumerate() {
        if op.ret.is_some() != op.output.is_some() {
            return Err(CheckError::InvalidHistory {
                index,
                reason: "ret and output must be both present or both absent".into(),
            });
        }
        let Some((revision, _)) = op.acknowledged_write() else {
            continue;
        };
        let key = op.input.key();
        written.insert(revision, key);
        if revision > final_read.revision {
            return Err(lost(
                history,
                index,
                format!(
                    "the final read is at revision {}, older than this write",
                    final_read.revision
                ),
            ));
        }
        if last.get(key).is_none_or(|&(r, _)| revision > r) {
            last.insert(key, (revision, index));
        }
    }
    let mut keys: Vec<&[u8]> = history.iter().map(|op| op.input.key()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let unknown = |value: Option<&[u8]>| {
            history
                .iter()
                .any(|op| op.input.key() == key && op.may_have_written(value))
        };
        let last = last
            .get(key)
            .and_then(|&(r, i)| Some((r, i, history.get(i)?)));
        match final_read.kvs.get(key) {
            Some(kv) => {
                let m = kv.mod_revision;
                if m > final_read.revision {
                    return Err(Violation::new(
                        ViolationKind::InvalidResponse,
                        Some(key),
                        format!(
                            "final mod_revision {m} above the final read's revision {}",
                            final_read.revision
                        ),
                    )
                    .into());
                }
                match last {
                    Some((r, i, _)) if m < r => {
                        return Err(lost(
                            history,
                            i,
                            format!("the final read shows {kv}, an older write"),
                        ));
                    }
                    Some((r, i, op)) if m == r => {
                        if op.acknowledged_write().and_then(|(_, v)| v) != Some(kv.value.as_slice())
                        {
                            return Err(lost(
                                history,
                                i,
                                format!("the final read shows {kv} instead"),
                            ));
                        }
                    }
                    _ => {
                        if let Some(&other) = written.get(&m).filter(|&&k| k != key) {
                            return Err(Violation::new(
                                ViolationKind::PhantomWrite,
                                Some(key),
                                format!(
                                    "the final read shows {kv}, but revision {m} was an \
                                     acknowledged write of key {}",
                                    Bytes(other)
                                ),
                            )
                            .into());
                        }
                        if !unknown(Some(&kv.value)) {
                            return Err(Violation::new(
                                ViolationKind::PhantomWrite,
                                Some(key),
                                format!("the final read shows {kv}, which no write of the history produced"),
                            )
                            .into());
                        }
                    }
                }
            }
            None => {
                if let Some((_, i, op)) = last {
                    let deleted = op.acknowledged_write().is_some_and(|(_, v)| v.is_none());
                    if !deleted && !unknown(None) {
                        return Err(lost(
                            history,
                            i,
                            "the key is missing from the final read".into(),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn lost(history: &[Operation], index: usize, why: String) -> CheckError {
    let key = history.get(index).map(|op| op.input.key());
    Violation::new(
        ViolationKind::LostWrite,
        key,
        format!("acknowledged write #{index} is neither visible nor superseded: {why}"),
    )
    .with_op(history, index)
    .into()
}
