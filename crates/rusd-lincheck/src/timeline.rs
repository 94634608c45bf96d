//! Places every operation on the store's revision timeline (the first phase of
//! [`check_kv`](crate::check_kv)).
//!
//! A *slot* `r` is the `r`-th revision: the one write that moved the store from `r - 1` to `r`.
//! A *position* orders writes and reads on one axis: a write of slot `r` is at `2r`, a read
//! that saw header revision `h` (after slot `h`, before slot `h + 1`) at `2h + 1`.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::error::{CheckError, Violation, ViolationKind};
use crate::history::{Input, KeyValue, Operation, Output};
use crate::options::CheckOptions;

/// Revisions above this are refused, so that positions cannot overflow.
const MAX_REVISION: i64 = i64::MAX / 4;

/// Maps byte strings to dense ids.
#[derive(Default)]
pub(crate) struct Interner {
    ids: HashMap<Vec<u8>, usize>,
    items: Vec<Vec<u8>>,
}

impl Interner {
    pub(crate) fn id(&mut self, bytes: &[u8]) -> usize {
        if let Some(&id) = self.ids.get(bytes) {
            return id;
        }
        let id = self.items.len();
        self.items.push(bytes.to_vec());
        self.ids.insert(bytes.to_vec(), id);
        id
    }

    pub(crate) fn get(&self, id: usize) -> &[u8] {
        self.items.get(id).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// What a read returned for its key (value interned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    pub(crate) value: usize,
    pub(crate) mod_rev: i64,
    pub(crate) create_rev: Option<i64>,
    pub(crate) version: Option<i64>,
}

/// The value id standing for every value that no get returned: such values cannot be told
/// apart by any response, so writes of them are interchangeable.
pub(crate) const ANON: usize = usize::MAX;

/// A change of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Effect {
    Put { value: usize },
    Delete,
    Cas { expect: i64, value: usize },
}

/// An acknowledged operation reduced to what the model checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// A write at slot `pos / 2`.
    Write(Effect),
    /// A get at header revision `pos / 2`.
    Get(Option<Observed>),
    /// A delete that deleted nothing: the key was absent.
    DeleteNone,
    /// A CAS whose compare failed.
    CasFailed { expect: i64 },
}

/// An acknowledged operation on the timeline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ack {
    /// Index in the history.
    pub(crate) index: usize,
    pub(crate) key: usize,
    pub(crate) pos: i64,
    pub(crate) action: Action,
}

/// An operation with unknown outcome that would change its key if it took effect.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    /// Index in the history.
    pub(crate) index: usize,
    pub(crate) key: usize,
    /// The lowest slot it can occupy (real time: after everything that returned before its
    /// call).
    pub(crate) lowest: i64,
    pub(crate) effect: Effect,
    /// Whether no other operation of the history writes its value to its key.
    pub(crate) sole_writer: bool,
}

impl Effect {
    fn value_mut(&mut self) -> Option<&mut usize> {
        match self {
            Effect::Put { value } | Effect::Cas { value, .. } => Some(value),
            Effect::Delete => None,
        }
    }

    pub(crate) fn value(mut self) -> Option<usize> {
        self.value_mut().copied()
    }
}

/// The history on the revision timeline.
pub(crate) struct Timeline {
    pub(crate) keys: Interner,
    pub(crate) values: Interner,
    /// Acknowledged operations sorted by (key, position).
    pub(crate) acks: Vec<Ack>,
    /// `acks[by_key[k]]` are the operations on key `k`.
    pub(crate) by_key: Vec<Range<usize>>,
    /// Operations with unknown outcome that may write, sorted by lowest slot.
    pub(crate) pending: Vec<Pending>,
    /// Slots taken by acknowledged writes: slot -> history index.
    pub(crate) written: HashMap<i64, usize>,
    /// The highest revision any response carried (at least the initial revision).
    pub(crate) max_revision: i64,
    /// The history index of an operation that saw `max_revision`, if any did.
    pub(crate) max_witness: Option<usize>,
}

pub(crate) fn write_pos(slot: i64) -> i64 {
    2 * slot
}

pub(crate) fn read_pos(header: i64) -> i64 {
    2 * header + 1
}

pub(crate) fn is_write_pos(pos: i64) -> bool {
    pos % 2 == 0
}

/// "wrote revision r" or "read at revision h".
pub(crate) fn describe_pos(pos: i64) -> String {
    if is_write_pos(pos) {
        format!("wrote revision {}", pos / 2)
    } else {
        format!("read at revision {}", pos / 2)
    }
}

/// Builds the timeline, checking everything that does not need the model: well-formed
/// responses, distinct write revisions and revisions consistent with real time.
pub(crate) fn build(history: &[Operation], options: &CheckOptions) -> Result<Timeline, CheckError> {
    let r0 = options.initial_revision;
    if !(0..MAX_REVISION).contains(&r0) {
        return Err(invalid(0, format!("initial revision {r0} out of range")));
    }
    let mut keys = Interner::default();
    let mut values = Interner::default();
    let mut acks = Vec::new();
    let mut pending = Vec::new();
    for (index, op) in history.iter().enumerate() {
        let key = keys.id(op.input.key());
        match (op.ret, &op.output) {
            (Some(ret), Some(output)) => {
                if ret < op.call {
                    return Err(invalid(
                        index,
                        format!("returned at {ret} before its call at {}", op.call),
                    ));
                }
                let (pos, action) = classify(history, index, output, r0, &mut values)?;
                acks.push(Ack {
                    index,
                    key,
                    pos,
                    action,
                });
            }
            (None, None) => {
                let effect = match &op.input {
                    Input::Put { value, .. } => Effect::Put {
                        value: values.id(value),
                    },
                    Input::Delete { .. } => Effect::Delete,
                    Input::Cas {
                        expected_mod_revision,
                        value,
                        ..
                    } => {
                        check_expect(index, *expected_mod_revision)?;
                        Effect::Cas {
                            expect: *expected_mod_revision,
                            value: values.id(value),
                        }
                    }
                    Input::Get { .. } => continue,
                };
                pending.push(Pending {
                    index,
                    key,
                    lowest: r0 + 1,
                    effect,
                    sole_writer: false,
                });
            }
            _ => {
                return Err(invalid(
                    index,
                    "ret and output must be both present or both absent".into(),
                ))
            }
        }
    }

    canonicalize(&mut acks, &mut pending);

    let mut written = HashMap::new();
    for ack in acks.iter().filter(|a| is_write_pos(a.pos)) {
        if let Some(&other) = written.get(&(ack.pos / 2)) {
            return Err(Violation::new(
                ViolationKind::DuplicateRevision,
                None,
                format!(
                    "two acknowledged writes both claim revision {}",
                    ack.pos / 2
                ),
            )
            .with_op(history, other)
            .with_op(history, ack.index)
            .into());
        }
        written.insert(ack.pos / 2, ack.index);
    }

    check_real_time(history, &acks, &mut pending, r0)?;

    let (mut max_revision, mut max_witness) = (r0, None);
    for ack in &acks {
        if ack.pos / 2 > max_revision {
            max_revision = ack.pos / 2;
            max_witness = Some(ack.index);
        }
    }

    acks.sort_by_key(|a| (a.key, a.pos, history.get(a.index).map_or(0, |op| op.call)));
    let mut by_key = vec![0..0; keys.len()];
    let mut start = 0;
    while start < acks.len() {
        let key = acks[start].key;
        let end = start + acks[start..].iter().take_while(|a| a.key == key).count();
        by_key[key] = start..end;
        start = end;
    }
    pending.sort_by_key(|p| (p.lowest, p.index));
    Ok(Timeline {
        keys,
        values,
        acks,
        by_key,
        pending,
        written,
        max_revision,
        max_witness,
    })
}

/// Replaces the values no get returned (for their key) by [`ANON`], and marks the pending
/// writes that are the only writer of their value.
fn canonicalize(acks: &mut [Ack], pending: &mut [Pending]) {
    let observed: HashSet<(usize, usize)> = acks
        .iter()
        .filter_map(|a| match a.action {
            Action::Get(Some(o)) => Some((a.key, o.value)),
            _ => None,
        })
        .collect();
    let mut writers: HashMap<(usize, usize), usize> = HashMap::new();
    let written = acks.iter().filter_map(|a| match a.action {
        Action::Write(e) => Some((a.key, e)),
        _ => None,
    });
    for (key, effect) in written.chain(pending.iter().map(|p| (p.key, p.effect))) {
        if let Some(v) = effect.value() {
            *writers.entry((key, v)).or_default() += 1;
        }
    }
    let anonymize = |key: usize, effect: &mut Effect| {
        if let Some(v) = effect.value_mut() {
            if !observed.contains(&(key, *v)) {
                *v = ANON;
            }
        }
    };
    for a in acks.iter_mut() {
        if let Action::Write(e) = &mut a.action {
            anonymize(a.key, e);
        }
    }
    for p in pending.iter_mut() {
        p.sole_writer = p
            .effect
            .value()
            .is_some_and(|v| writers.get(&(p.key, v)) == Some(&1));
        anonymize(p.key, &mut p.effect);
    }
}

fn invalid(index: usize, reason: String) -> CheckError {
    CheckError::InvalidHistory { index, reason }
}

fn check_expect(index: usize, expect: i64) -> Result<(), CheckError> {
    if (0..MAX_REVISION).contains(&expect) {
        Ok(())
    } else {
        Err(invalid(
            index,
            format!("compared mod_revision {expect} out of range"),
        ))
    }
}

/// The position and model action of an acknowledged operation.
fn classify(
    history: &[Operation],
    index: usize,
    output: &Output,
    r0: i64,
    values: &mut Interner,
) -> Result<(i64, Action), CheckError> {
    let Some(op) = history.get(index) else {
        return Err(invalid(index, "no such operation".into()));
    };
    let bad = |message: String| -> CheckError {
        Violation::new(
            ViolationKind::InvalidResponse,
            Some(op.input.key()),
            message,
        )
        .with_op(history, index)
        .into()
    };
    let revision = output.revision();
    if !(r0..MAX_REVISION).contains(&revision) {
        return Err(bad(format!(
            "header revision {revision} outside [{r0}, {MAX_REVISION}) (initial revision, limit)"
        )));
    }
    let write = |effect: Effect| {
        if revision > r0 {
            Ok((write_pos(revision), Action::Write(effect)))
        } else {
            Err(bad(format!(
                "a write got revision {revision}, not above the initial revision {r0}"
            )))
        }
    };
    match (&op.input, output) {
        (Input::Put { value, .. }, Output::Put { .. }) => write(Effect::Put {
            value: values.id(value),
        }),
        (Input::Get { .. }, Output::Get { kv, .. }) => {
            let observed = match kv {
                None => None,
                Some(kv) => {
                    check_kv(kv, revision, r0).map_err(bad)?;
                    Some(Observed {
                        value: values.id(&kv.value),
                        mod_rev: kv.mod_revision,
                        create_rev: kv.create_revision,
                        version: kv.version,
                    })
                }
            };
            Ok((read_pos(revision), Action::Get(observed)))
        }
        (Input::Delete { .. }, Output::Delete { deleted, .. }) => match deleted {
            0 => Ok((read_pos(revision), Action::DeleteNone)),
            1 => write(Effect::Delete),
            n => Err(bad(format!(
                "a delete of one key reported {n} deleted keys"
            ))),
        },
        (
            Input::Cas {
                expected_mod_revision,
                value,
                ..
            },
            Output::Cas { succeeded, .. },
        ) => {
            let expect = *expected_mod_revision;
            check_expect(index, expect)?;
            if *succeeded {
                write(Effect::Cas {
                    expect,
                    value: values.id(value),
                })
            } else {
                Ok((read_pos(revision), Action::CasFailed { expect }))
            }
        }
        _ => Err(invalid(
            index,
            "the output does not answer the input's kind of request".into(),
        )),
    }
}

/// etcd's invariants of a returned key-value.
fn check_kv(kv: &KeyValue, header: i64, r0: i64) -> Result<(), String> {
    let m = kv.mod_revision;
    if m <= r0 || m > header {
        return Err(format!(
            "mod_revision {m} outside ({r0}, {header}] (initial, header revision)"
        ));
    }
    if let Some(c) = kv.create_revision {
        if c <= r0 || c > m {
            return Err(format!(
                "create_revision {c} outside ({r0}, {m}] (initial, mod_revision)"
            ));
        }
    }
    if let Some(v) = kv.version {
        if v < 1 {
            return Err(format!("version {v} of an existing key"));
        }
        if let Some(c) = kv.create_revision {
            if (v == 1) != (c == m) {
                return Err(format!(
                    "version {v} with create_revision {c} and mod_revision {m}"
                ));
            }
        }
    }
    Ok(())
}

/// Revisions must respect real time: if `a` returned before `b` was invoked, `a`'s position
/// is at most `b`'s. Also gives each pending operation its lowest slot.
fn check_real_time(
    history: &[Operation],
    acks: &[Ack],
    pending: &mut [Pending],
    r0: i64,
) -> Result<(), CheckError> {
    let time = |index: usize| {
        history
            .get(index)
            .map_or((0, 0), |op| (op.call, op.ret.unwrap_or(u64::MAX)))
    };
    let mut by_ret: Vec<(u64, i64, usize)> = acks
        .iter()
        .map(|a| (time(a.index).1, a.pos, a.index))
        .collect();
    by_ret.sort_unstable();
    // (call, is pending, index into acks or pending)
    let mut by_call: Vec<(u64, bool, usize)> = acks
        .iter()
        .enumerate()
        .map(|(i, a)| (time(a.index).0, false, i))
        .chain(
            pending
                .iter()
                .enumerate()
                .map(|(i, p)| (time(p.index).0, true, i)),
        )
        .collect();
    by_call.sort_unstable();
    let mut next = 0;
    let mut latest: Option<(i64, usize)> = None; // highest position among returned operations
    for (call, is_pending, i) in by_call {
        while let Some(&(ret, pos, index)) = by_ret.get(next) {
            if ret >= call {
                break;
            }
            if latest.is_none_or(|(p, _)| pos > p) {
                latest = Some((pos, index));
            }
            next += 1;
        }
        let Some((before, before_index)) = latest else {
            continue;
        };
        if is_pending {
            if let Some(p) = pending.get_mut(i) {
                p.lowest = (before / 2 + 1).max(r0 + 1);
            }
        } else if let Some(ack) = acks.get(i) {
            if before > ack.pos {
                return Err(Violation::new(
                    ViolationKind::RevisionOrder,
                    None,
                    format!(
                        "#{} was invoked after #{before_index} returned, so it must take effect \
                         later, yet #{} {} while #{before_index} {}",
                        ack.index,
                        ack.index,
                        describe_pos(ack.pos),
                        describe_pos(before)
                    ),
                )
                .with_op(history, before_index)
                .with_op(history, ack.index)
                .into());
            }
        }
    }
    Ok(())
}
