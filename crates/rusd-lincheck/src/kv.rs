//! [`check_kv`]: linearizability of a key-value history, revisions included.

use crate::budget::Budget;
use crate::error::{CheckError, Violation, ViolationKind};
use crate::history::{Bytes, Operation};
use crate::holes::{Holes, Pin};
use crate::model::{self, Cell};
use crate::options::CheckOptions;
use crate::search::{Failure, Outcome, Planner, Space, Target};
use crate::timeline::{self, describe_pos, Action, Effect, Timeline};

/// Most holes the search will consider.
const MAX_HOLES: i64 = 10_000_000;

/// Checks that `history` is linearizable against etcd's key-value model with its revisions:
/// some total order of the acknowledged operations and of some operations with unknown
/// outcome respects real time and, run on a store whose keys are all absent at
/// `options.initial_revision`, gives every response that was recorded, header revisions
/// included.
///
/// Returns [`CheckError::Violation`] when no such order exists, [`CheckError::Undecided`] when
/// the search ran out of its budget, [`CheckError::InvalidHistory`] for malformed input.
pub fn check_kv(history: &[Operation], options: &CheckOptions) -> Result<(), CheckError> {
    let tl = timeline::build(history, options)?;
    let r0 = options.initial_revision;

    // Keys without pending writes are independent of everything else: replay them alone.
    let mut searched = vec![false; tl.keys.len()];
    for p in &tl.pending {
        if let Some(s) = searched.get_mut(p.key) {
            *s = true;
        }
    }
    let mut first: Option<(i64, Failure)> = None;
    for key in (0..tl.keys.len()).filter(|&k| !searched.get(k).copied().unwrap_or(false)) {
        if let Err(f @ Failure::Refused { ack, .. }) = replay(&tl, key) {
            let pos = tl.acks.get(ack).map_or(0, |a| a.pos);
            if first.is_none_or(|(p, _)| pos < p) {
                first = Some((pos, f));
            }
        }
    }
    if let Some((_, f)) = first {
        return Err(report(
            history,
            &tl,
            &Holes::find(&tl, tl.max_revision),
            f,
            Scope::Replay,
        )
        .into());
    }

    let hole_count = (tl.max_revision - r0) - i64::try_from(tl.written.len()).unwrap_or(i64::MAX);
    let pending = i64::try_from(tl.pending.len()).unwrap_or(i64::MAX);
    if !options.foreign_writes && hole_count > pending {
        return Err(missing_revisions(history, &tl, hole_count).into());
    }
    if hole_count > MAX_HOLES {
        return Err(
            Budget::new(options).exhausted(format!("{hole_count} revisions without a known write"))
        );
    }
    let holes = Holes::find(&tl, r0);
    let keys: Vec<usize> = (0..tl.keys.len())
        .filter(|&k| searched.get(k).copied().unwrap_or(false))
        .collect();
    let mut budget = Budget::new(options);

    // Each key alone, free to use the holes pinned to it and the unpinned ones: a necessary
    // condition that fails fast and names the key. Its solutions are the initial plans of the
    // search over all keys.
    let mut spaces = Vec::with_capacity(keys.len());
    let mut plans = Vec::with_capacity(keys.len());
    for &key in &keys {
        let space = Space::new(&tl, &holes, &[key]);
        let targets = space.key_targets();
        match space.solve(&targets, None, &mut budget)? {
            Outcome::Found(plan) => plans.push(plan),
            Outcome::Failed(f) => {
                return Err(report(history, &tl, &holes, f, Scope::Key(key)).into());
            }
        }
        spaces.push((space, targets));
    }
    // With every hole pinned to one key, the keys' placements are independent and the
    // per-key searches decided. Otherwise unpinned holes are shared: search all keys at once.
    if holes
        .slots
        .iter()
        .all(|slot| matches!(holes.pins.get(slot), Some(Pin::Key { .. })))
    {
        return Ok(());
    }
    let targets: Vec<Target> = holes
        .slots
        .iter()
        .map(|&slot| Target {
            slot,
            optional: options.foreign_writes && !holes.pins.contains_key(&slot),
        })
        .collect();
    let all = Space::new(&tl, &holes, &keys);
    let planner = Planner::new(&all, spaces, plans);
    match all.solve(&targets, Some(&planner), &mut budget)? {
        Outcome::Found(_) => Ok(()),
        Outcome::Failed(f) => Err(report(history, &tl, &holes, f, Scope::All).into()),
    }
}

/// Replays one key's acknowledged operations in revision order.
fn replay(tl: &Timeline, key: usize) -> Result<(), Failure> {
    let mut cell: Cell = None;
    let range = tl.by_key.get(key).cloned().unwrap_or(0..0);
    for a in range {
        let Some(ack) = tl.acks.get(a) else { continue };
        if !model::step(&mut cell, &ack.action, ack.pos, ack.index) {
            return Err(Failure::Refused { ack: a, cell });
        }
    }
    Ok(())
}

fn missing_revisions(history: &[Operation], tl: &Timeline, holes: i64) -> Violation {
    let mut v = Violation::new(
        ViolationKind::MissingRevision,
        None,
        format!(
            "revisions up to {} were issued, {holes} of them by no acknowledged write, but only {} \
             operations with unknown outcome could have produced them",
            tl.max_revision,
            tl.pending.len()
        ),
    );
    if let Some(w) = tl.max_witness {
        v = v.with_op(history, w);
    }
    v
}

/// Which search produced a failure.
#[derive(Clone, Copy)]
enum Scope {
    /// A key without pending writes, replayed alone.
    Replay,
    /// One key with its pending writes.
    Key(usize),
    /// All keys with pending writes together.
    All,
}

/// Turns the failure that got furthest into a report.
fn report(
    history: &[Operation],
    tl: &Timeline,
    holes: &Holes,
    f: Failure,
    scope: Scope,
) -> Violation {
    let pending = |key: usize| tl.pending.iter().filter(|p| p.key == key).count();
    let tried = match scope {
        Scope::Replay => String::new(),
        Scope::Key(key) => format!(
            " (after trying every placement of the {} operations with unknown outcome on this \
             key that revisions and real time allow; the furthest attempt failed here)",
            pending(key)
        ),
        Scope::All => format!(
            " (after trying every placement of all {} operations with unknown outcome that \
             revisions and real time allow; the furthest attempt failed here)",
            tl.pending.len()
        ),
    };
    match f {
        Failure::Refused { ack, cell } => {
            let Some(a) = tl.acks.get(ack) else {
                return Violation::new(
                    ViolationKind::NotLinearizable,
                    None,
                    "internal error".into(),
                );
            };
            let what = match a.action {
                Action::Write(_) => "its write is impossible here",
                _ => "its response is impossible here",
            };
            let mut v = Violation::new(
                ViolationKind::NotLinearizable,
                Some(tl.keys.get(a.key)),
                format!(
                    "#{} {}, and {what}: just before it {}{tried}",
                    a.index,
                    describe_pos(a.pos),
                    model::describe(&cell, &tl.values)
                ),
            )
            .with_op(history, a.index);
            if let Some(s) = cell {
                v = v.with_op(history, s.writer);
            }
            if let Action::Get(Some(o)) = a.action {
                if let Some(&w) = tl.written.get(&o.mod_rev) {
                    v = v.with_op(history, w);
                }
            }
            v
        }
        Failure::NoFiller { slot } => {
            let mut message = format!(
                "revision {slot} was issued (revisions up to {} were seen), no acknowledged write \
                 has it, and no operation with unknown outcome can have produced it",
                tl.max_revision
            );
            let mut witnesses = Vec::new();
            match holes.pins.get(&slot) {
                Some(Pin::Key {
                    key,
                    value,
                    witness,
                }) => {
                    message += &format!(
                        "; #{witness} shows it wrote key {}",
                        Bytes(tl.keys.get(*key))
                    );
                    if let Some(value) = value {
                        message += &format!(" with value {}", Bytes(tl.values.get(*value)));
                    }
                    witnesses.push(*witness);
                }
                Some(Pin::Conflict { witness, other }) => {
                    message += &format!("; #{witness} and #{other} disagree on what it wrote");
                    witnesses.extend([*witness, *other]);
                }
                None => {}
            }
            message += &tried;
            message += &explain_hole(tl, holes, slot, scope);
            let key = match (scope, holes.pins.get(&slot)) {
                (Scope::Key(k), _) | (_, Some(&Pin::Key { key: k, .. })) => Some(tl.keys.get(k)),
                _ => None,
            };
            let mut v = Violation::new(ViolationKind::MissingRevision, key, message);
            for w in witnesses.into_iter().chain(tl.max_witness) {
                v = v.with_op(history, w);
            }
            v
        }
    }
}

/// Why the pending writes (of the searched scope) cannot fill `slot`, a few of them.
fn explain_hole(tl: &Timeline, holes: &Holes, slot: i64, scope: Scope) -> String {
    const SHOWN: usize = 5;
    let relevant: Vec<_> = tl
        .pending
        .iter()
        .filter(|p| match scope {
            Scope::Key(key) => p.key == key,
            _ => true,
        })
        .collect();
    let mut out = String::new();
    for p in relevant.iter().take(SHOWN) {
        let why = if p.lowest > slot {
            format!(
                "it was invoked after revision {} had been observed",
                p.lowest - 1
            )
        } else if holes.forbids(p.key, slot) {
            let witness = tl.by_key.get(p.key).cloned().unwrap_or(0..0).find_map(|a| {
                let ack = tl.acks.get(a)?;
                match ack.action {
                    Action::Get(Some(o)) if o.mod_rev < slot && slot <= ack.pos / 2 => {
                        Some(format!(
                            "#{} read mod_revision {} at revision {}",
                            ack.index,
                            o.mod_rev,
                            ack.pos / 2
                        ))
                    }
                    _ => None,
                }
            });
            let witness = witness.unwrap_or_else(|| {
                "the versions reads returned leave no room for another write there".into()
            });
            format!("its key was not written there ({witness})")
        } else if holes.only_slot(p).is_some_and(|s| s != slot) {
            "it wrote a value a read saw at another revision".into()
        } else if let Some(Pin::Key { key, .. }) = holes.pins.get(&slot).filter(|pin| match pin {
            Pin::Key { key, value, .. } => {
                *key != p.key || value.is_some_and(|v| !writes_value(p.effect, v))
            }
            Pin::Conflict { .. } => false,
        }) {
            format!(
                "the revision wrote {} with another value or key",
                Bytes(tl.keys.get(*key))
            )
        } else {
            "in every attempt it was placed elsewhere or would change nothing there".into()
        };
        out += &format!("; #{} cannot: {why}", p.index);
    }
    if relevant.len() > SHOWN {
        out += &format!("; and {} more", relevant.len() - SHOWN);
    }
    out
}

fn writes_value(effect: Effect, value: usize) -> bool {
    matches!(effect, Effect::Put { value: v } | Effect::Cas { value: v, .. } if v == value)
}
