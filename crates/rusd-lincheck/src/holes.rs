//! The revisions no acknowledged write took ("holes"), and what the responses tell about them.
//!
//! Every hole up to the highest revision observed was produced by a write whose outcome the
//! client did not learn (or, with foreign writes allowed, by a write outside the history).
//! Responses narrow down which; every rule below holds in every valid linearization, so
//! pruning with them loses no solution:
//!
//! * a *pin* says which key (and maybe value) the write of a hole changed: a get that returned
//!   mod_revision `m` pins `m` to its key and value, a create_revision `c` pins `c` to its key,
//!   a successful CAS against `m > 0` pins `m` to its key;
//! * a pending write that is the only writer of a value some get returned can only be at the
//!   hole pinned to that value;
//! * a get at header `h` that returned mod_revision `m` proves its key was not written in
//!   `(m, h]`;
//! * a get that returned create_revision `c` and version `v` proves exactly `v - 1` writes of
//!   its key in `(c, m]`: if the acknowledged writes and holes pinned to the key there are
//!   already `v - 1`, no other hole in `(c, m)` wrote the key.

use std::collections::HashMap;

use crate::timeline::{is_write_pos, Action, Effect, Pending, Timeline, ANON};

/// What a response says about the write of a hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// It wrote `key` (with `value`, if known); `witness` is the history index of a response
    /// that says so.
    Key {
        key: usize,
        value: Option<usize>,
        witness: usize,
    },
    /// Responses disagree about it: nothing can fill it.
    Conflict { witness: usize, other: usize },
}

/// Disjoint intervals `(lo, hi]` of slots, sorted.
#[derive(Debug, Clone, Default)]
struct Intervals(Vec<(i64, i64)>);

impl Intervals {
    fn merge(&mut self) {
        self.0.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(self.0.len());
        for &(lo, hi) in &self.0 {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        self.0 = merged;
    }

    fn contains(&self, slot: i64) -> bool {
        let after = self.0.partition_point(|&(lo, _)| lo < slot);
        after > 0 && self.0.get(after - 1).is_some_and(|&(_, hi)| slot <= hi)
    }
}

/// The holes of a timeline and the constraints on them.
pub(crate) struct Holes {
    /// The slots, ascending.
    pub(crate) slots: Vec<i64>,
    pub(crate) pins: HashMap<i64, Pin>,
    /// (key, value) -> the hole pinned to that value.
    pinned_value: HashMap<(usize, usize), i64>,
    /// Per key: slots where a get proves it was not written.
    read_forbidden: Vec<Intervals>,
    /// Per key: slots, other than holes pinned to it, where versions prove it was not written.
    count_forbidden: Vec<Intervals>,
}

impl Holes {
    /// Finds the holes in `(r0, max_revision]`; the caller bounded their number.
    pub(crate) fn find(tl: &Timeline, r0: i64) -> Self {
        let slots = (r0 + 1..=tl.max_revision)
            .filter(|r| !tl.written.contains_key(r))
            .collect();
        let mut pins: HashMap<i64, Pin> = HashMap::new();
        let mut pin = |slot: i64, key: usize, value: Option<usize>, witness: usize| {
            if tl.written.contains_key(&slot) || slot <= r0 {
                return;
            }
            let new = Pin::Key {
                key,
                value,
                witness,
            };
            let merged = match pins.get(&slot) {
                None => new,
                Some(Pin::Key {
                    key: k,
                    value: v,
                    witness: w,
                }) => {
                    if *k != key || (v.is_some() && value.is_some() && *v != value) {
                        Pin::Conflict {
                            witness: *w,
                            other: witness,
                        }
                    } else {
                        Pin::Key {
                            key,
                            value: v.or(value),
                            witness: *w,
                        }
                    }
                }
                Some(conflict) => *conflict,
            };
            pins.insert(slot, merged);
        };
        let mut read_forbidden = vec![Intervals::default(); tl.keys.len()];
        for ack in &tl.acks {
            match ack.action {
                Action::Get(Some(o)) => {
                    pin(o.mod_rev, ack.key, Some(o.value), ack.index);
                    if let Some(c) = o.create_rev {
                        pin(c, ack.key, None, ack.index);
                    }
                    if let Some(f) = read_forbidden.get_mut(ack.key) {
                        f.0.push((o.mod_rev, ack.pos / 2));
                    }
                }
                Action::Write(Effect::Cas { expect, .. }) if expect > 0 => {
                    pin(expect, ack.key, None, ack.index);
                }
                _ => {}
            }
        }
        read_forbidden.iter_mut().for_each(Intervals::merge);
        let mut pinned_value = HashMap::new();
        for (&slot, p) in &pins {
            if let Pin::Key {
                key,
                value: Some(value),
                ..
            } = *p
            {
                pinned_value.insert((key, value), slot);
            }
        }
        let count_forbidden = count_forbidden(tl, &pins);
        Self {
            slots,
            pins,
            pinned_value,
            read_forbidden,
            count_forbidden,
        }
    }

    /// Whether some response proves `key` was not written at `slot`.
    pub(crate) fn forbids(&self, key: usize, slot: i64) -> bool {
        let pinned_here =
            matches!(self.pins.get(&slot), Some(Pin::Key { key: k, .. }) if *k == key);
        self.read_forbidden
            .get(key)
            .is_some_and(|f| f.contains(slot))
            || (!pinned_here
                && self
                    .count_forbidden
                    .get(key)
                    .is_some_and(|f| f.contains(slot)))
    }

    /// The only slot `p` can occupy, if responses fix it (`i64::MIN`: none).
    pub(crate) fn only_slot(&self, p: &Pending) -> Option<i64> {
        let value = p.effect.value().filter(|&v| v != ANON && p.sole_writer)?;
        Some(
            self.pinned_value
                .get(&(p.key, value))
                .copied()
                .unwrap_or(i64::MIN),
        )
    }
}

/// The version rule of the module doc.
fn count_forbidden(tl: &Timeline, pins: &HashMap<i64, Pin>) -> Vec<Intervals> {
    let mut known = vec![Vec::new(); tl.keys.len()];
    for ack in tl.acks.iter().filter(|a| is_write_pos(a.pos)) {
        if let Some(k) = known.get_mut(ack.key) {
            k.push(ack.pos / 2);
        }
    }
    for (&slot, p) in pins {
        if let Pin::Key { key, .. } = *p {
            if let Some(k) = known.get_mut(key) {
                k.push(slot);
            }
        }
    }
    known.iter_mut().for_each(|k| k.sort_unstable());
    let mut out = vec![Intervals::default(); tl.keys.len()];
    for ack in &tl.acks {
        let Action::Get(Some(o)) = ack.action else {
            continue;
        };
        let (Some(c), Some(v)) = (o.create_rev, o.version) else {
            continue;
        };
        let Some(slots) = known.get(ack.key) else {
            continue;
        };
        let within =
            slots.partition_point(|&s| s <= o.mod_rev) - slots.partition_point(|&s| s <= c);
        if i64::try_from(within).is_ok_and(|w| w == v - 1) && o.mod_rev - 1 > c {
            if let Some(f) = out.get_mut(ack.key) {
                f.0.push((c, o.mod_rev - 1));
            }
        }
    }
    out.iter_mut().for_each(Intervals::merge);
    out
}
