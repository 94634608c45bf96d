//! The search over operations with unknown outcome: which of them filled which hole.
//!
//! A search covers some keys (one, or all that have pending writes) and some holes. Holes are
//! visited in ascending order. At each one the search picks a pending write of a searched key
//! that may take effect there (real time allows it, the rules of `holes` allow it, and it
//! changes its key), or, if the hole is optional, leaves it to a write outside the search;
//! then it replays the acknowledged operations of the searched keys up to the next hole. A
//! replay that contradicts a response ends that branch.
//!
//! Pending writes with the same key and effect (after `timeline` merged the values no read
//! returned) form a *class* and are interchangeable: every member that may be placed at a
//! hole may also be placed at any later one, so which member is used does not matter, only
//! how many. The search uses members in order of their lowest slot, and its state at hole `i`
//! is the number used per class plus the cells of the keys they touched (every other key's
//! cell follows from `i`; create_revision and version are left out for keys no read checks
//! them on).
//!
//! As in porcupine, states that failed are memoized. Memoization uses dominance: unused
//! pending writes may stay unused, so a state that failed also condemns every state with the
//! same cells and at least as many members used of every class.
//!
//! The search over all keys keeps, for each key, a *plan*: placements that a one-key search
//! found for the rest of the history from the key's current state. A choice that takes a
//! hole a plan needed, or places a write a plan did not foresee, makes that key search again
//! from its new state (forward checking); if it finds nothing, the choice fails at once,
//! since the one-key problem is a relaxation of the whole. Planned placements are tried
//! first. None of this changes the verdict, only the time to reach it.

use std::collections::HashMap;

use crate::budget::Budget;
use crate::error::CheckError;
use crate::holes::{Holes, Pin};
use crate::model::{self, Cell};
use crate::timeline::{write_pos, Action, Effect, Timeline};

/// Most failed states kept per memo entry.
const MEMO_WIDTH: usize = 32;

/// Why a branch (or the whole search) failed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Failure {
    /// `tl.acks[ack]` contradicts the model, whose key was `cell`.
    Refused { ack: usize, cell: Cell },
    /// Nothing can fill the hole at `slot`.
    NoFiller { slot: i64 },
}

impl Failure {
    fn pos(&self, tl: &Timeline) -> i64 {
        match self {
            Self::Refused { ack, .. } => tl.acks.get(*ack).map_or(0, |a| a.pos),
            Self::NoFiller { slot } => write_pos(*slot),
        }
    }
}

/// A hole to fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) slot: i64,
    /// Whether something outside the search may fill it.
    pub(crate) optional: bool,
}

/// A pending write of `effect` placed at `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub(crate) slot: i64,
    pub(crate) effect: Effect,
}

/// The result of a search.
pub(crate) enum Outcome {
    /// The placements of a solution.
    Found(Vec<Placement>),
    /// The failure that got furthest.
    Failed(Failure),
}

/// Interchangeable pending writes.
struct Class {
    key: usize,
    effect: Effect,
    /// Indexes into `tl.pending`, by lowest slot.
    members: Vec<usize>,
    /// The only slot the class can fill, if responses fix it.
    only_slot: Option<i64>,
}

/// What is fixed about a set of searched keys.
pub(crate) struct Space<'a> {
    tl: &'a Timeline,
    holes: &'a Holes,
    keys: Vec<usize>,
    /// Global key id -> local index among the searched keys.
    local: Vec<Option<usize>>,
    classes: Vec<Class>,
    /// Per local key: whether some read checks create_revision, version.
    checked: Vec<(bool, bool)>,
    /// Per local key: the last position at which anything checks it.
    last_check: Vec<i64>,
    /// Indexes into `tl.acks` of the searched keys' operations, by position.
    acks: Vec<usize>,
}

impl<'a> Space<'a> {
    pub(crate) fn new(tl: &'a Timeline, holes: &'a Holes, keys: &[usize]) -> Self {
        let mut local = vec![None; tl.keys.len()];
        for (j, &key) in keys.iter().enumerate() {
            if let Some(l) = local.get_mut(key) {
                *l = Some(j);
            }
        }
        let mut acks: Vec<usize> = keys
            .iter()
            .filter_map(|&key| tl.by_key.get(key).cloned())
            .flatten()
            .collect();
        acks.sort_by_key(|&a| tl.acks.get(a).map_or(0, |a| a.pos));
        let mut checked = vec![(false, false); keys.len()];
        let mut last_check = vec![i64::MIN; keys.len()];
        for ack in acks.iter().filter_map(|&a| tl.acks.get(a)) {
            let Some(j) = local.get(ack.key).copied().flatten() else {
                continue;
            };
            if let (Action::Get(Some(o)), Some(c)) = (ack.action, checked.get_mut(j)) {
                c.0 |= o.create_rev.is_some();
                c.1 |= o.version.is_some();
            }
            if let Some(l) = last_check.get_mut(j) {
                *l = (*l).max(ack.pos);
            }
        }
        for (&slot, pin) in &holes.pins {
            if let Pin::Key { key, .. } = *pin {
                let j = local.get(key).copied().flatten();
                if let Some(l) = j.and_then(|j| last_check.get_mut(j)) {
                    *l = (*l).max(write_pos(slot));
                }
            }
        }
        let mut classes: Vec<Class> = Vec::new();
        let mut by_effect: HashMap<(usize, Effect), usize> = HashMap::new();
        for (p, pending) in tl.pending.iter().enumerate() {
            if local.get(pending.key).is_none_or(Option::is_none) {
                continue;
            }
            let c = *by_effect
                .entry((pending.key, pending.effect))
                .or_insert_with(|| {
                    classes.push(Class {
                        key: pending.key,
                        effect: pending.effect,
                        members: Vec::new(),
                        only_slot: None,
                    });
                    classes.len() - 1
                });
            if let Some(class) = classes.get_mut(c) {
                class.members.push(p);
            }
        }
        for class in &mut classes {
            if let [p] = class.members.as_slice() {
                class.only_slot = tl.pending.get(*p).and_then(|p| holes.only_slot(p));
            }
        }
        Self {
            tl,
            holes,
            keys: keys.to_vec(),
            local,
            classes,
            checked,
            last_check,
            acks,
        }
    }

    /// For a one-key space: the holes its key may fill, mandatory where pinned to it.
    pub(crate) fn key_targets(&self) -> Vec<Target> {
        let Some(&key) = self.keys.first() else {
            return Vec::new();
        };
        let lowest = self
            .classes
            .iter()
            .filter_map(|c| c.members.first())
            .filter_map(|&p| self.tl.pending.get(p))
            .map(|p| p.lowest)
            .min()
            .unwrap_or(i64::MAX);
        self.holes
            .slots
            .iter()
            .filter_map(|&slot| match self.holes.pins.get(&slot) {
                Some(Pin::Key { key: k, .. }) if *k == key => Some(Target {
                    slot,
                    optional: false,
                }),
                Some(_) => None,
                None => (lowest <= slot && !self.holes.forbids(key, slot)).then_some(Target {
                    slot,
                    optional: true,
                }),
            })
            .collect()
    }

    /// Searches from the start of the history.
    pub(crate) fn solve(
        &self,
        targets: &[Target],
        planner: Option<&Planner<'_>>,
        budget: &mut Budget,
    ) -> Result<Outcome, CheckError> {
        let start = State {
            cells: vec![None; self.keys.len()],
            used: vec![0; self.classes.len()],
            plans: planner.map(|p| p.plans.clone()).unwrap_or_default(),
        };
        Dfs::new(self, targets, i64::MIN, planner).run(start, budget)
    }
}

/// The one-key spaces the search over all keys plans with.
pub(crate) struct Planner<'a> {
    /// Per local key of the all-keys space: its one-key space and targets.
    spaces: Vec<(Space<'a>, Vec<Target>)>,
    /// Per local key: the global class ids of its classes, in its one-key space's order.
    class_map: Vec<Vec<usize>>,
    /// Per local key: the initial plan, next placement last.
    plans: Vec<Vec<Placement>>,
}

impl<'a> Planner<'a> {
    /// `spaces` and `plans` (from solving each one-key space) are in the order of `all.keys`.
    pub(crate) fn new(
        all: &Space<'_>,
        spaces: Vec<(Space<'a>, Vec<Target>)>,
        plans: Vec<Vec<Placement>>,
    ) -> Self {
        let class_map = all
            .keys
            .iter()
            .map(|&key| {
                (0..all.classes.len())
                    .filter(|&c| all.classes[c].key == key)
                    .collect()
            })
            .collect();
        let plans = plans
            .into_iter()
            .map(|mut p| {
                p.reverse();
                p
            })
            .collect();
        Self {
            spaces,
            class_map,
            plans,
        }
    }

    /// Plans key `j` again after its placement at `slot`, in `state`.
    fn replan(
        &self,
        j: usize,
        slot: i64,
        state: &State,
        budget: &mut Budget,
    ) -> Result<Result<Vec<Placement>, Failure>, CheckError> {
        let (Some((space, targets)), Some(map)) = (self.spaces.get(j), self.class_map.get(j))
        else {
            return Ok(Ok(Vec::new()));
        };
        let after = targets.partition_point(|t| t.slot <= slot);
        let start = State {
            cells: vec![state.cells.get(j).copied().flatten()],
            used: map
                .iter()
                .map(|&c| state.used.get(c).copied().unwrap_or(0))
                .collect(),
            plans: Vec::new(),
        };
        let targets = targets.get(after..).unwrap_or_default();
        Ok(
            match Dfs::new(space, targets, write_pos(slot), None).run(start, budget)? {
                Outcome::Found(mut plan) => {
                    plan.reverse();
                    Ok(plan)
                }
                Outcome::Failed(f) => Err(f),
            },
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Elsewhere,
    Class(usize),
}

#[derive(Clone)]
struct State {
    /// Cells of the searched keys, by local index.
    cells: Vec<Cell>,
    /// Members used, per class.
    used: Vec<u32>,
    /// Per local key (all-keys search only): its plan, next placement last.
    plans: Vec<Vec<Placement>>,
}

struct Node {
    hole: usize,
    state: State,
    choices: Vec<Choice>,
    next: usize,
}

/// The memoized part of a state besides the counts: the hole and the touched keys' cells.
type Essence = (usize, Vec<(usize, Option<(usize, i64, i64, i64)>)>);

/// Failed states: per essence, minimal vectors of used counts.
#[derive(Default)]
struct Memo(HashMap<Essence, Vec<Vec<u32>>>);

impl Memo {
    fn condemns(&self, essence: &Essence, used: &[u32]) -> bool {
        self.0.get(essence).is_some_and(|failed| {
            failed
                .iter()
                .any(|f| f.iter().zip(used).all(|(f, u)| f <= u))
        })
    }

    fn insert(&mut self, essence: Essence, used: Vec<u32>) {
        let failed = self.0.entry(essence).or_default();
        failed.retain(|f| !f.iter().zip(&used).all(|(f, u)| u <= f));
        if failed.len() >= MEMO_WIDTH {
            failed.remove(0);
        }
        failed.push(used);
    }
}

/// One depth-first search over `targets`, starting after position `from`.
struct Dfs<'s, 'a> {
    space: &'s Space<'a>,
    targets: &'s [Target],
    planner: Option<&'s Planner<'a>>,
    /// The space's acknowledged operations after `from`.
    acks: &'s [usize],
    /// `acks[segments[i - 1]..segments[i]]` lie between hole `i - 1` and hole `i`.
    segments: Vec<usize>,
}

impl<'s, 'a> Dfs<'s, 'a> {
    fn new(
        space: &'s Space<'a>,
        targets: &'s [Target],
        from: i64,
        planner: Option<&'s Planner<'a>>,
    ) -> Self {
        let tl = space.tl;
        let pos = |a: &usize| tl.acks.get(*a).map_or(0, |a| a.pos);
        let first = space.acks.partition_point(|a| pos(a) <= from);
        let acks = space.acks.get(first..).unwrap_or_default();
        let limit = |i: usize| targets.get(i).map_or(i64::MAX, |t| write_pos(t.slot));
        let segments = (0..=targets.len())
            .map(|i| acks.partition_point(|a| pos(a) < limit(i)))
            .collect();
        Self {
            space,
            targets,
            planner,
            acks,
            segments,
        }
    }

    fn run(&self, mut state: State, budget: &mut Budget) -> Result<Outcome, CheckError> {
        if let Err(f) = self.replay(&mut state, 0) {
            return Ok(Outcome::Failed(f));
        }
        if self.targets.is_empty() {
            return Ok(Outcome::Found(Vec::new()));
        }
        let mut best: Option<Failure> = None;
        let mut memo = Memo::default();
        let choices = self.choices(0, &state);
        if choices.is_empty() {
            return Ok(Outcome::Failed(Failure::NoFiller { slot: self.slot(0) }));
        }
        let mut stack = vec![Node {
            hole: 0,
            state,
            choices,
            next: 0,
        }];
        while let Some(top) = stack.last_mut() {
            let Some(&choice) = top.choices.get(top.next) else {
                memo.insert(self.essence(top.hole, &top.state), top.state.used.clone());
                stack.pop();
                continue;
            };
            top.next += 1;
            budget.step()?;
            let slot = self.slot(top.hole);
            let mut state = top.state.clone();
            if let Choice::Class(c) = choice {
                self.place(&mut state, c, slot);
            }
            if let Err(f) = self.forward_check(&mut state, choice, slot, budget)? {
                self.record(f, &mut best);
                continue;
            }
            let hole = top.hole + 1;
            if let Err(f) = self.replay(&mut state, hole) {
                self.record(f, &mut best);
                continue;
            }
            if hole == self.targets.len() {
                return Ok(Outcome::Found(self.placements(&stack)));
            }
            let essence = self.essence(hole, &state);
            if memo.condemns(&essence, &state.used) {
                continue;
            }
            let choices = self.choices(hole, &state);
            if choices.is_empty() {
                self.record(
                    Failure::NoFiller {
                        slot: self.slot(hole),
                    },
                    &mut best,
                );
                memo.insert(essence, state.used);
                continue;
            }
            stack.push(Node {
                hole,
                state,
                choices,
                next: 0,
            });
        }
        let fallback = Failure::NoFiller { slot: self.slot(0) };
        Ok(Outcome::Failed(best.unwrap_or(fallback)))
    }

    /// Keeps every key's plan valid after `choice` at `slot`, planning again where needed.
    fn forward_check(
        &self,
        state: &mut State,
        choice: Choice,
        slot: i64,
        budget: &mut Budget,
    ) -> Result<Result<(), Failure>, CheckError> {
        let Some(planner) = self.planner else {
            return Ok(Ok(()));
        };
        let placed = match choice {
            Choice::Class(c) => self.space.classes.get(c).map(|class| {
                (
                    self.space.local.get(class.key).copied().flatten(),
                    class.effect,
                )
            }),
            Choice::Elsewhere => None,
        };
        for j in 0..state.plans.len() {
            let next = state.plans.get(j).and_then(|p| p.last()).copied();
            let wanted = next.filter(|p| p.slot == slot);
            let here = placed.and_then(|(k, effect)| (k == Some(j)).then_some(effect));
            match (here, wanted) {
                (None, None) => continue,
                (Some(effect), Some(w)) if w.effect == effect => {
                    if let Some(plan) = state.plans.get_mut(j) {
                        plan.pop();
                    }
                }
                _ => match planner.replan(j, slot, state, budget)? {
                    Ok(plan) => {
                        if let Some(p) = state.plans.get_mut(j) {
                            *p = plan;
                        }
                    }
                    Err(f) => return Ok(Err(f)),
                },
            }
        }
        Ok(Ok(()))
    }

    /// The placements made along the stack (each node's current choice).
    fn placements(&self, stack: &[Node]) -> Vec<Placement> {
        stack
            .iter()
            .filter_map(|node| match node.choices.get(node.next.checked_sub(1)?)? {
                Choice::Class(c) => Some(Placement {
                    slot: self.slot(node.hole),
                    effect: self.space.classes.get(*c)?.effect,
                }),
                Choice::Elsewhere => None,
            })
            .collect()
    }

    /// Keeps the failure that got furthest.
    fn record(&self, f: Failure, best: &mut Option<Failure>) {
        let tl = self.space.tl;
        if best.is_none_or(|b| f.pos(tl) > b.pos(tl)) {
            *best = Some(f);
        }
    }

    fn slot(&self, hole: usize) -> i64 {
        self.targets.get(hole).map_or(i64::MAX / 2, |t| t.slot)
    }

    /// Replays the acknowledged operations between hole `hole - 1` and hole `hole`.
    fn replay(&self, state: &mut State, hole: usize) -> Result<(), Failure> {
        let start = hole
            .checked_sub(1)
            .and_then(|h| self.segments.get(h))
            .copied()
            .unwrap_or(0);
        let end = self.segments.get(hole).copied().unwrap_or(self.acks.len());
        for &a in self.acks.get(start..end).unwrap_or_default() {
            let Some(ack) = self.space.tl.acks.get(a) else {
                continue;
            };
            let Some(cell) = self.cell(state, ack.key) else {
                continue;
            };
            if !model::step(cell, &ack.action, ack.pos, ack.index) {
                return Err(Failure::Refused {
                    ack: a,
                    cell: *cell,
                });
            }
        }
        Ok(())
    }

    fn cell<'t>(&self, state: &'t mut State, key: usize) -> Option<&'t mut Cell> {
        let j = self.space.local.get(key).copied().flatten()?;
        state.cells.get_mut(j)
    }

    /// The next unused member of class `c`.
    fn next_member(&self, state: &State, c: usize) -> Option<usize> {
        let used = usize::try_from(*state.used.get(c)?).ok()?;
        self.space.classes.get(c)?.members.get(used).copied()
    }

    fn place(&self, state: &mut State, c: usize, slot: i64) {
        let next = self.next_member(state, c);
        let Some(p) = next.and_then(|p| self.space.tl.pending.get(p)) else {
            return;
        };
        if let Some(used) = state.used.get_mut(c) {
            *used += 1;
        }
        if let Some(cell) = self.cell(state, p.key) {
            p.effect.apply(cell, slot, p.index);
        }
    }

    /// What may fill hole `hole` in `state`, in the order to try: planned placements, then
    /// leaving the hole, then writes planned later (soonest first), then writes of keys
    /// nothing checks any more, then the rest.
    fn choices(&self, hole: usize, state: &State) -> Vec<Choice> {
        let space = self.space;
        let slot = self.slot(hole);
        let pin = space.holes.pins.get(&slot);
        let mut ranked: Vec<((u8, i64), Choice)> = Vec::new();
        if self.targets.get(hole).is_some_and(|t| t.optional) {
            ranked.push(((1, 0), Choice::Elsewhere));
        }
        for (c, class) in space.classes.iter().enumerate() {
            let next = self.next_member(state, c);
            let Some(p) = next.and_then(|p| space.tl.pending.get(p)) else {
                continue;
            };
            if p.lowest > slot
                || class.only_slot.is_some_and(|s| s != slot)
                || space.holes.forbids(class.key, slot)
            {
                continue;
            }
            let fits_pin = match pin {
                None => true,
                Some(Pin::Conflict { .. }) => false,
                Some(Pin::Key { key, value, .. }) => {
                    *key == class.key
                        && class
                            .effect
                            .value()
                            .is_some_and(|v| value.is_none_or(|w| w == v))
                }
            };
            let j = space.local.get(class.key).copied().flatten();
            let cell = j.and_then(|j| state.cells.get(j));
            if !fits_pin || !cell.is_some_and(|cell| class.effect.applies(cell)) {
                continue;
            }
            let planned = j
                .and_then(|j| state.plans.get(j))
                .and_then(|plan| plan.last())
                .filter(|p| p.effect == class.effect);
            let unchecked = j
                .and_then(|j| space.last_check.get(j))
                .is_some_and(|&l| l < write_pos(slot));
            let rank = match planned {
                Some(p) if p.slot == slot => (0, 0),
                // A write its key needs later anyway, soonest first.
                Some(p) => (2, p.slot),
                None if unchecked => (3, 0),
                None => (4, 0),
            };
            ranked.push((rank, Choice::Class(c)));
        }
        ranked.sort_by_key(|(rank, _)| *rank);
        ranked.into_iter().map(|(_, choice)| choice).collect()
    }

    fn essence(&self, hole: usize, state: &State) -> Essence {
        let space = self.space;
        let mut touched: Vec<usize> = space
            .classes
            .iter()
            .zip(&state.used)
            .filter(|(_, &used)| used > 0)
            .filter_map(|(class, _)| space.local.get(class.key).copied().flatten())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let cells = touched
            .into_iter()
            .map(|j| {
                let (create, version) = space.checked.get(j).copied().unwrap_or((true, true));
                let cell = state
                    .cells
                    .get(j)
                    .and_then(model::essence)
                    .map(|(v, m, c, n)| {
                        (
                            v,
                            m,
                            if create { c } else { 0 },
                            if version { n } else { 0 },
                        )
                    });
                (j, cell)
            })
            .collect();
        (hole, cells)
    }
}
