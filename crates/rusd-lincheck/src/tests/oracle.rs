//! A brute-force linearizability checker (Wing & Gong over the whole store, no revision
//! reasoning), used as an oracle: on small histories `check_kv` must agree with it exactly.

use std::collections::{BTreeMap, HashSet};

use super::random::{likely_mutation, simulate, Rng, Shape};
use crate::{check_kv, CheckError, CheckOptions, Input, KeyValue, Operation, Output};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Store {
    revision: i64,
    kvs: BTreeMap<Vec<u8>, (Vec<u8>, i64, i64, i64)>,
}

/// Runs `input` on `store`; the response it gets.
fn apply(store: &mut Store, input: &Input) -> Output {
    let put = |store: &mut Store, key: &[u8], value: &[u8]| {
        store.revision += 1;
        let r = store.revision;
        let (create, version) = store
            .kvs
            .get(key)
            .map_or((r, 1), |&(_, _, c, v)| (c, v + 1));
        store
            .kvs
            .insert(key.to_vec(), (value.to_vec(), r, create, version));
    };
    match input {
        Input::Put { key, value } => {
            put(store, key, value);
            Output::Put {
                revision: store.revision,
            }
        }
        Input::Get { key } => Output::Get {
            kv: store
                .kvs
                .get(key)
                .map(|(v, m, c, ver)| KeyValue::full(v.clone(), *m, *c, *ver)),
            revision: store.revision,
        },
        Input::Delete { key } => {
            if store.kvs.remove(key).is_some() {
                store.revision += 1;
                Output::Delete {
                    deleted: 1,
                    revision: store.revision,
                }
            } else {
                Output::Delete {
                    deleted: 0,
                    revision: store.revision,
                }
            }
        }
        Input::Cas {
            key,
            expected_mod_revision,
            value,
        } => {
            let current = store.kvs.get(key).map_or(0, |kv| kv.1);
            let succeeded = current == *expected_mod_revision;
            if succeeded {
                put(store, key, value);
            }
            Output::Cas {
                succeeded,
                revision: store.revision,
            }
        }
    }
}

/// Whether a model response matches the recorded one (create_revision/version when recorded).
fn matches(model: &Output, recorded: &Output) -> bool {
    match (model, recorded) {
        (
            Output::Get {
                kv: Some(m),
                revision: a,
            },
            Output::Get {
                kv: Some(r),
                revision: b,
            },
        ) => {
            a == b
                && m.value == r.value
                && m.mod_revision == r.mod_revision
                && r.create_revision
                    .is_none_or(|c| Some(c) == m.create_revision)
                && r.version.is_none_or(|v| Some(v) == m.version)
        }
        _ => model == recorded,
    }
}

/// Whether some order of all acknowledged operations and some unknown ones respects real
/// time and reproduces every response. With `foreign`, writes outside the history may take
/// revisions at any time.
fn linearizable(history: &[Operation], foreign: bool) -> bool {
    let n = history.len();
    assert!(n <= 64);
    let acked: u64 = (0..n)
        .filter(|&i| history[i].ret.is_some())
        .fold(0, |m, i| m | 1 << i);
    let max_revision = if foreign {
        history
            .iter()
            .filter_map(|op| op.output.as_ref().map(Output::revision))
            .max()
            .unwrap_or(1)
    } else {
        1
    };
    let mut search = Search {
        history,
        acked,
        max_revision,
        failed: HashSet::new(),
    };
    search.run(
        0,
        Store {
            revision: 1,
            kvs: BTreeMap::new(),
        },
    )
}

struct Search<'a> {
    history: &'a [Operation],
    acked: u64,
    /// Foreign writes may raise the revision up to this.
    max_revision: i64,
    failed: HashSet<(u64, Store)>,
}

impl Search<'_> {
    fn run(&mut self, done: u64, store: Store) -> bool {
        let history = self.history;
        if done & self.acked == self.acked {
            return true;
        }
        if self.failed.contains(&(done, store.clone())) {
            return false;
        }
        if store.revision < self.max_revision {
            let mut next = store.clone();
            next.revision += 1;
            if self.run(done, next) {
                return true;
            }
        }
        for (i, op) in history.iter().enumerate() {
            if done & 1 << i != 0 {
                continue;
            }
            // Nothing still open may have returned before this one was called.
            let blocked = history.iter().enumerate().any(|(j, other)| {
                j != i && done & 1 << j == 0 && other.ret.is_some_and(|ret| ret < op.call)
            });
            if blocked {
                continue;
            }
            let mut next = store.clone();
            let output = apply(&mut next, &op.input);
            if op
                .output
                .as_ref()
                .is_some_and(|recorded| !matches(&output, recorded))
            {
                continue;
            }
            if self.run(done | 1 << i, next) {
                return true;
            }
        }
        self.failed.insert((done, store));
        false
    }
}

#[test]
fn check_kv_agrees_with_brute_force() {
    agree(false, 3000);
}

#[test]
fn check_kv_agrees_with_brute_force_with_foreign_writes() {
    agree(true, 1500);
}

fn agree(foreign: bool, seeds: u64) {
    let options = CheckOptions {
        foreign_writes: foreign,
        ..CheckOptions::default()
    };
    let (mut ok, mut bad) = (0, 0);
    for seed in 0..seeds {
        let mut rng = Rng(70_000 + seed);
        let shape = Shape {
            clients: 2 + rng.below(3),
            ops_per_client: 2 + rng.below(3),
            keys: 1 + rng.below(2),
            unknown_percent: 25,
        };
        let mut run = simulate(&mut rng, &shape);
        if seed % 3 != 0 {
            likely_mutation(&mut rng, &mut run.history);
        }
        let expected = linearizable(&run.history, foreign);
        let got = check_kv(&run.history, &options);
        match (&got, expected) {
            (Ok(()), true) => ok += 1,
            (Err(CheckError::Violation(_)), false) => bad += 1,
            _ => {
                let ops: Vec<String> = run
                    .history
                    .iter()
                    .enumerate()
                    .map(|(i, op)| format!("  #{i}: {op}"))
                    .collect();
                panic!(
                    "seed {seed}: brute force says {expected}, check_kv says {got:?}\n{}",
                    ops.join("\n")
                );
            }
        }
    }
    eprintln!("agreement: {ok} linearizable, {bad} not");
    assert!(ok * 5 > seeds && bad * 5 > seeds, "{ok} {bad}");
}
