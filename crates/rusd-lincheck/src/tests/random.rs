//! Randomized histories: simulated from the sequential model with random concurrency windows
//! and unknown outcomes (they must pass), then with one response mutated (must be detected).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::assert_ok;
use crate::{
    check_durability, check_kv, check_watch, CheckError, CheckOptions, FinalRead, Input, KeyValue,
    Operation, Output, ViolationKind, WatchEvent, WatchStream,
};

/// splitmix64: small, seeded, good enough for tests.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

pub(super) struct Shape {
    pub(super) clients: u64,
    pub(super) ops_per_client: u64,
    pub(super) keys: u64,
    pub(super) unknown_percent: u64,
}

/// A simulated run: the history, every change in revision order, and the final state.
pub(super) struct Run {
    pub(super) history: Vec<Operation>,
    changes: Vec<WatchEvent>,
    final_read: FinalRead,
}

/// Clients issue operations one after another; each acknowledged one takes effect at a random
/// point of its call..return window, an unknown one (timed out) half the time at a random
/// point after its call, possibly long after. Effects are applied to the sequential model in
/// that order, which gives the responses.
pub(super) fn simulate(rng: &mut Rng, shape: &Shape) -> Run {
    let mut history: Vec<Operation> = Vec::new();
    let mut plan: Vec<(u64, usize)> = Vec::new();
    for client in 0..shape.clients {
        let mut t = rng.below(20);
        for _ in 0..shape.ops_per_client {
            let call = t + 1 + rng.below(10);
            let key = format!("k{}", rng.below(shape.keys));
            let value = format!("v{}", history.len());
            let input = match rng.below(100) {
                0..35 => Input::put(key, value),
                35..70 => Input::get(key),
                70..80 => Input::delete(key),
                _ => Input::cas(key, rng.below(3) as i64, value),
            };
            let index = history.len();
            let mut op = Operation::new(client, call * 1000, input);
            if rng.percent(shape.unknown_percent) {
                if rng.percent(50) {
                    plan.push((call * 1000 + rng.below(300_000), index));
                }
                t = call + 150;
            } else {
                let duration = 1 + rng.below(60);
                op.ret = Some((call + duration) * 1000);
                plan.push((call * 1000 + rng.below(duration * 1000), index));
                t = call + duration;
            }
            history.push(op);
        }
    }
    plan.sort_unstable();

    let mut store: BTreeMap<Vec<u8>, KeyValue> = BTreeMap::new();
    let mut revision = 1;
    let mut changes = Vec::new();
    for (_, index) in plan {
        let Some(op) = history.get_mut(index) else {
            continue;
        };
        let key = op.input.key().to_vec();
        let current = store.get(&key).map_or(0, |kv| kv.mod_revision);
        if let Input::Cas {
            expected_mod_revision,
            ..
        } = &mut op.input
        {
            *expected_mod_revision = match rng.below(4) {
                0 | 1 => current,
                2 => 0,
                _ => (current - 1 - rng.below(3) as i64).max(0),
            };
        }
        let mut put = |value: &[u8], revision: i64, changes: &mut Vec<WatchEvent>| {
            let kv = match store.get(&key) {
                Some(old) => KeyValue::full(
                    value,
                    revision,
                    old.create_revision.unwrap_or(0),
                    old.version.unwrap_or(0) + 1,
                ),
                None => KeyValue::full(value, revision, revision, 1),
            };
            changes.push(WatchEvent::put(
                key.clone(),
                value,
                revision,
                kv.create_revision.unwrap_or(0),
                kv.version.unwrap_or(0),
            ));
            store.insert(key.clone(), kv);
        };
        let output = match &op.input {
            Input::Put { value, .. } => {
                revision += 1;
                put(value, revision, &mut changes);
                Output::Put { revision }
            }
            Input::Get { .. } => Output::Get {
                kv: store.get(&key).cloned(),
                revision,
            },
            Input::Delete { .. } => {
                if store.remove(&key).is_some() {
                    revision += 1;
                    changes.push(WatchEvent::delete(key.clone(), revision));
                    Output::Delete {
                        deleted: 1,
                        revision,
                    }
                } else {
                    Output::Delete {
                        deleted: 0,
                        revision,
                    }
                }
            }
            Input::Cas {
                expected_mod_revision,
                value,
                ..
            } => {
                let succeeded = current == *expected_mod_revision;
                if succeeded {
                    revision += 1;
                    put(value, revision, &mut changes);
                }
                Output::Cas {
                    succeeded,
                    revision,
                }
            }
        };
        if op.ret.is_some() {
            op.output = Some(output);
        }
    }
    Run {
        history,
        changes,
        final_read: FinalRead {
            revision,
            kvs: store,
        },
    }
}

/// Watch streams that saw `changes`: one of everything, one of prefix "k1" from a random
/// revision cut short, one started "now" somewhere in the middle.
fn streams(rng: &mut Rng, changes: &[WatchEvent]) -> Vec<WatchStream> {
    let n = changes.len() as u64;
    let start = 2 + rng.below(n + 1) as i64;
    let cut = 2 + rng.below(n + 1) as i64;
    let from = rng.below(n + 1) as usize;
    vec![
        WatchStream {
            prefix: b"k".to_vec(),
            start_revision: 2,
            events: changes.to_vec(),
        },
        WatchStream {
            prefix: b"k1".to_vec(),
            start_revision: start,
            events: changes
                .iter()
                .filter(|e| {
                    e.key.starts_with(b"k1")
                        && e.mod_revision >= start
                        && e.mod_revision <= start.max(cut)
                })
                .cloned()
                .collect(),
        },
        WatchStream {
            prefix: Vec::new(),
            start_revision: 0,
            events: changes.get(from..).unwrap_or_default().to_vec(),
        },
    ]
}

fn revision_mut(output: &mut Output) -> &mut i64 {
    match output {
        Output::Put { revision }
        | Output::Get { revision, .. }
        | Output::Delete { revision, .. }
        | Output::Cas { revision, .. } => revision,
    }
}

/// Indexes of acknowledged operations matching `f`.
fn pick(history: &[Operation], f: impl Fn(&Operation) -> bool) -> Vec<usize> {
    (0..history.len())
        .filter(|&i| {
            history
                .get(i)
                .is_some_and(|op| op.output.is_some() && f(op))
        })
        .collect()
}

fn any(rng: &mut Rng, candidates: &[usize]) -> Option<usize> {
    candidates
        .get(rng.below(candidates.len() as u64) as usize)
        .copied()
}

/// Mutations whose detection is certain, with the kinds they may be reported as (empty: any).
fn certain_mutation(
    rng: &mut Rng,
    h: &mut [Operation],
    which: u64,
) -> Option<&'static [ViolationKind]> {
    let is_write = |op: &Operation| op.acknowledged_write().is_some();
    let read_some = |op: &Operation| matches!(op.output, Some(Output::Get { kv: Some(_), .. }));
    match which {
        // A get returns a value no one wrote.
        0 => {
            let i = any(rng, &pick(h, read_some))?;
            if let Some(Output::Get { kv: Some(kv), .. }) = h.get_mut(i)?.output.as_mut() {
                kv.value = b"phantom".to_vec();
            }
            Some(&[])
        }
        // Two acknowledged writes with one revision.
        1 => {
            let writes = pick(h, is_write);
            let (a, b) = (any(rng, &writes)?, any(rng, &writes)?);
            let rb = h.get(b)?.output.as_ref()?.revision();
            if a == b || h.get(a)?.output.as_ref()?.revision() == rb {
                return None;
            }
            *revision_mut(h.get_mut(a)?.output.as_mut()?) = rb;
            Some(&[ViolationKind::DuplicateRevision])
        }
        // A mod_revision above the header revision.
        2 => {
            let i = any(rng, &pick(h, read_some))?;
            if let Some(Output::Get {
                kv: Some(kv),
                revision,
            }) = h.get_mut(i)?.output.as_mut()
            {
                kv.mod_revision = *revision + 1;
            }
            Some(&[ViolationKind::InvalidResponse])
        }
        // A stale read: a get that saw acknowledged write m of its key instead sees an older
        // acknowledged write of that key.
        _ => {
            let acked: BTreeMap<i64, usize> = pick(h, is_write)
                .into_iter()
                .filter_map(|i| Some((h.get(i)?.output.as_ref()?.revision(), i)))
                .collect();
            let candidates: Vec<(usize, KeyValue)> = pick(h, read_some)
                .into_iter()
                .filter_map(|i| {
                    let op = h.get(i)?;
                    let Some(Output::Get { kv: Some(kv), .. }) = &op.output else {
                        return None;
                    };
                    let writer = h.get(*acked.get(&kv.mod_revision)?)?;
                    if writer.input.key() != op.input.key() {
                        return None;
                    }
                    let (_, older) = acked.range(..kv.mod_revision).rev().find(|(_, &w)| {
                        h.get(w).is_some_and(|w| {
                            w.input.key() == op.input.key()
                                && matches!(w.acknowledged_write(), Some((_, Some(_))))
                        })
                    })?;
                    let older = h.get(*older)?;
                    let (r, v) = older.acknowledged_write()?;
                    Some((i, KeyValue::new(v?, r)))
                })
                .collect();
            let (i, stale) = candidates
                .get(rng.below(candidates.len() as u64) as usize)?
                .clone();
            if let Some(Output::Get { kv, .. }) = h.get_mut(i)?.output.as_mut() {
                *kv = Some(stale);
            }
            // Either the read is refused, or the search proves that an unknown write the read
            // rules out was needed to fill a revision.
            Some(&[
                ViolationKind::NotLinearizable,
                ViolationKind::MissingRevision,
            ])
        }
    }
}

/// Mutations that are usually, not always, detectable.
pub(super) fn likely_mutation(rng: &mut Rng, h: &mut [Operation]) -> Option<()> {
    let i = any(rng, &pick(h, |_| true))?;
    let op = h.get_mut(i)?;
    let output = op.output.as_mut()?;
    match (rng.below(4), output) {
        (0, o) => {
            let r = revision_mut(o);
            *r = if rng.percent(50) {
                *r + 1
            } else {
                (*r - 1).max(1)
            };
        }
        (_, Output::Cas { succeeded, .. }) => *succeeded = !*succeeded,
        (_, Output::Delete { deleted, .. }) => *deleted = 1 - *deleted,
        (_, Output::Get { kv, revision }) => {
            *kv = match kv {
                Some(_) => None,
                None => Some(KeyValue::new("v0", (*revision).max(2))),
            }
        }
        (_, Output::Put { revision }) => *revision += 1,
    }
    Some(())
}

fn small_shape(rng: &mut Rng) -> Shape {
    Shape {
        clients: 2 + rng.below(4),
        ops_per_client: 10 + rng.below(40),
        keys: 1 + rng.below(4),
        unknown_percent: rng.below(15),
    }
}

#[test]
fn simulated_histories_pass() {
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let shape = small_shape(&mut rng);
        let run = simulate(&mut rng, &shape);
        let result = check_kv(&run.history, &CheckOptions::default());
        assert!(
            result.is_ok(),
            "seed {seed}: {}",
            result.map_or_else(|e| e.to_string(), |()| String::new())
        );
        assert_ok(check_durability(&run.history, &run.final_read));
        assert_ok(check_watch(&streams(&mut rng, &run.changes), &run.history));
    }
}

#[test]
fn certain_mutations_are_detected() {
    let mut tried = [0; 4];
    for seed in 0..400 {
        let mut rng = Rng(1000 + seed);
        let shape = small_shape(&mut rng);
        let mut run = simulate(&mut rng, &shape);
        let which = seed % 4;
        let Some(expected) = certain_mutation(&mut rng, &mut run.history, which) else {
            continue;
        };
        tried[which as usize] += 1;
        match check_kv(&run.history, &CheckOptions::default()) {
            Err(CheckError::Violation(v)) => {
                assert!(
                    expected.is_empty() || expected.contains(&v.kind),
                    "seed {seed}: {v}"
                );
            }
            other => panic!("seed {seed}, mutation {which}: not detected: {other:?}"),
        }
    }
    assert!(
        tried.iter().all(|&n| n > 30),
        "too few mutations applied: {tried:?}"
    );
}

#[test]
fn likely_mutations_are_mostly_detected() {
    let (mut tried, mut detected, mut undecided) = (0, 0, 0);
    for seed in 0..400 {
        let mut rng = Rng(5000 + seed);
        let shape = small_shape(&mut rng);
        let mut run = simulate(&mut rng, &shape);
        if likely_mutation(&mut rng, &mut run.history).is_none() {
            continue;
        }
        tried += 1;
        match check_kv(&run.history, &CheckOptions::default()) {
            Err(CheckError::Violation(_)) => detected += 1,
            Err(CheckError::Undecided { .. }) => undecided += 1,
            Err(e @ CheckError::InvalidHistory { .. }) => panic!("seed {seed}: {e}"),
            Ok(()) => {}
        }
    }
    eprintln!("likely mutations: {detected} of {tried} detected, {undecided} undecided");
    assert!(tried > 300, "{tried}");
    assert!(
        detected * 100 >= tried * 85,
        "only {detected} of {tried} detected"
    );
}

#[test]
fn watch_mutations_are_detected() {
    for seed in 0..100 {
        let mut rng = Rng(9000 + seed);
        let shape = small_shape(&mut rng);
        let run = simulate(&mut rng, &shape);
        let mut streams = streams(&mut rng, &run.changes);
        let Some(full) = streams.get_mut(0) else {
            continue;
        };
        // Drop an event of an acknowledged write from the middle: a gap.
        let acked: Vec<usize> = (1..full.events.len().saturating_sub(1))
            .filter(|&i| {
                full.events.get(i).is_some_and(|e| {
                    run.history.iter().any(|op| {
                        op.acknowledged_write()
                            .is_some_and(|(r, _)| r == e.mod_revision)
                    })
                })
            })
            .collect();
        let Some(&drop) = acked.get(rng.below(acked.len() as u64) as usize) else {
            continue;
        };
        let mut gap = full.clone();
        gap.events.remove(drop);
        let mut back = full.clone();
        back.events.swap(drop, drop + 1);
        for (mutated, kind) in [
            (gap, ViolationKind::WatchGap),
            (back, ViolationKind::WatchOrder),
        ] {
            let mut s = streams.clone();
            if let Some(first) = s.get_mut(0) {
                *first = mutated;
            }
            match check_watch(&s, &run.history) {
                Err(CheckError::Violation(v)) => assert_eq!(v.kind, kind, "seed {seed}: {v}"),
                other => panic!("seed {seed}: {kind} not detected: {other:?}"),
            }
        }
    }
}

fn large_run(seed: u64, unknown_percent: u64) -> Run {
    let mut rng = Rng(seed);
    simulate(
        &mut rng,
        &Shape {
            clients: 5,
            ops_per_client: 2000,
            keys: 10,
            unknown_percent,
        },
    )
}

#[test]
fn large_history_is_fast() {
    let run = large_run(42, 2);
    let unknown = run.history.iter().filter(|op| op.ret.is_none()).count();
    let started = Instant::now();
    assert_ok(check_kv(&run.history, &CheckOptions::default()));
    let elapsed = started.elapsed();
    assert_ok(check_durability(&run.history, &run.final_read));
    let mut rng = Rng(7);
    assert_ok(check_watch(&streams(&mut rng, &run.changes), &run.history));
    let total = started.elapsed();
    eprintln!(
        "large history: {} ops ({unknown} unknown), {} revisions: check_kv {elapsed:?}, all checks {total:?}",
        run.history.len(),
        run.final_read.revision
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "check_kv took {elapsed:?}"
    );
}

#[test]
fn large_history_with_a_stale_read_is_caught_fast() {
    let mut run = large_run(43, 2);
    let mut rng = Rng(3);
    let started = Instant::now();
    let mut found = false;
    for _ in 0..20 {
        let mut h = run.history.clone();
        if certain_mutation(&mut rng, &mut h, 3).is_some() {
            run.history = h;
            found = true;
            break;
        }
    }
    assert!(found);
    let result = check_kv(&run.history, &CheckOptions::default());
    let elapsed = started.elapsed();
    eprintln!("large history with a stale read: {elapsed:?}");
    assert!(
        matches!(result, Err(CheckError::Violation(_))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
