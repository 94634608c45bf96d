//! Checkers for histories recorded against an etcd v3 key-value store (rusd or etcd) by
//! concurrent clients while members crash and partition:
//!
//! * [`check_kv`]: the history is linearizable against etcd's key-value model *including the
//!   revisions in the responses*;
//! * [`check_durability`]: no acknowledged write is missing from a final read;
//! * [`check_watch`]: watch streams are ordered, gap-free, never go back in time, agree with
//!   each other and with the acknowledged writes.
//!
//! # Module map
//!
//! | module | concept |
//! |---|---|
//! | `history` | [`Operation`], [`Input`], [`Output`], [`KeyValue`]: the recorded requests |
//! | `options` | [`CheckOptions`]: initial revision, foreign writes, search budget |
//! | `error` | [`CheckError`], [`Violation`], [`ViolationKind`]: what a check reports |
//! | `timeline` | places each acknowledged operation at its revision; checks responses, distinct revisions and real-time order |
//! | `model` | the sequential model of one key (value, mod/create revision, version) |
//! | `holes` | revisions no acknowledged write took, and what responses say about them |
//! | `search` | the memoized search placing operations with unknown outcome into holes, per key and for all keys |
//! | `budget` | the step and time bound of the search |
//! | `kv` | [`check_kv`] |
//! | `durability` | [`check_durability`], [`FinalRead`] |
//! | `watch` | [`check_watch`], [`WatchStream`], [`WatchEvent`] |
//!
//! # How [`check_kv`] works, and why it is sound
//!
//! The model is etcd's: a map key -> (value, mod_revision, create_revision, version) and one
//! store revision; each put, delete that deleted something and successful CAS increments the
//! revision by one, and every response carries the store revision. All keys are absent at
//! [`CheckOptions::initial_revision`]. An operation without a response (`ret == None`) may
//! take effect at any time after its call, or never. The history is linearizable when some
//! total order of the acknowledged operations plus some of the unknown ones respects real time
//! (an operation that returned before another was called comes first) and, executed on the
//! model, gives every recorded response.
//!
//! A generic search (Wing & Gong, Lowe, porcupine) tries orders of concurrent operations;
//! porcupine splits the history by key (P-compositionality) to keep that small. Global
//! revisions break that split (reads of different keys are ordered by their revisions), but
//! they also make the search mostly unnecessary:
//!
//! 1. **Revisions pin the order.** In any valid order, the write acknowledged with revision
//!    `r` is the `r`-th write since the initial revision, and a read (or failed CAS, or delete
//!    of nothing) answered with header `h` comes after the `h`-th write and before the next.
//!    So every acknowledged operation has a fixed *position* (`2r` for a write, `2h + 1` for a
//!    read); only reads at the same position can swap, and they do not change the state.
//! 2. **Checks without the model** (`timeline`): responses are well formed; no two
//!    acknowledged writes share a revision; positions respect real time (if `a` returned
//!    before `b` was called, `pos(a) <= pos(b)`), checked by one sweep over calls and returns.
//! 3. **Holes.** A revision up to the highest one observed that no acknowledged write took
//!    must have been produced by exactly one unknown-outcome write that took effect there
//!    (after its call: after every position that returned before it was called), or by a
//!    write outside the history if [`CheckOptions::foreign_writes`] allows it. Unknown
//!    operations that change nothing (gets, deletes of absent keys, failed compares) and
//!    unknown writes after the last observed revision can be left out without changing any
//!    response, so only the assignment of unknown writes to holes is open.
//! 4. **Per-key replay.** Given that assignment, keys are independent: each key's operations
//!    in position order are replayed on the one-key model. Keys with no unknown write are
//!    replayed once, alone (this is where P-compositionality survives).
//! 5. **Search** (`search`), only for keys with unknown writes: holes in ascending order, at
//!    each one every candidate (an unknown write that real time allows, that the responses do
//!    not rule out there, and that changes its key), with failed states memoized as in
//!    porcupine. First each key alone, where holes pinned to other keys are closed and
//!    unpinned ones optional: a relaxation, so a failure there is a real violation, reported
//!    on that key. Then, unless every hole is pinned to one key (the per-key answers then
//!    combine), all keys together, since unpinned holes are shared and must all be filled
//!    (unless foreign writes may fill them);
//!    this search keeps each key's one-key solution as a plan and re-plans a key when a
//!    choice disturbs it, so a choice that dooms a key fails at once.
//!
//! Soundness: if the checker accepts, the positions plus the chosen holes give a total order
//! (ties broken by call time) that respects real time and reproduces every response, so the
//! history is linearizable. Completeness: any valid order induces exactly such positions and
//! such an assignment, and the search tries every assignment up to symmetry (unknown writes
//! with the same key and effect are interchangeable; values no read returned are merged),
//! pruning only by facts every valid order satisfies (see `holes`: a get that saw
//! mod_revision `m` at header `h` proves its key was not written in `(m, h]`; a get or
//! successful CAS naming revision `m` proves which key `m` wrote; versions count the writes
//! between two reads). So a rejection is a real violation. On small random histories the unit
//! tests compare every verdict with a brute-force Wing & Gong search over the whole store.
//!
//! Cost: without unknown outcomes the check is one sort and one replay, `O(n log n)`. The
//! search ranges over unknown writes only; its budget ([`CheckOptions::max_steps`],
//! [`CheckOptions::timeout`]) turns an overlong search into [`CheckError::Undecided`] rather
//! than a verdict. Recording create_revision and version in gets ([`KeyValue::full`]) makes it
//! much stronger and faster.
//!
//! # Example
//!
//! ```
//! use rusd_lincheck::{check_kv, CheckOptions, Input, KeyValue, Operation, Output, ViolationKind};
//!
//! // A put that returned revision 2, then a get that saw it.
//! let put = Operation::new(1, 10, Input::put("k", "v")).returned(20, Output::Put { revision: 2 });
//! let get = Operation::new(2, 30, Input::get("k"))
//!     .returned(40, Output::Get { kv: Some(KeyValue::new("v", 2)), revision: 2 });
//! assert!(check_kv(&[put.clone(), get], &CheckOptions::default()).is_ok());
//!
//! // A get that started after the put returned must not see the key missing.
//! let stale = Operation::new(2, 30, Input::get("k")).returned(40, Output::Get { kv: None, revision: 2 });
//! let err = check_kv(&[put, stale], &CheckOptions::default()).unwrap_err();
//! assert_eq!(err.violation().map(|v| v.kind), Some(ViolationKind::NotLinearizable));
//! println!("{err}");
//! ```

mod budget;
mod durability;
mod error;
mod history;
mod holes;
mod kv;
mod model;
mod options;
mod search;
mod timeline;
mod watch;

pub use durability::{check_durability, FinalRead};
pub use error::{CheckError, EventRef, Violation, ViolationKind};
pub use history::{Input, KeyValue, Operation, Output};
pub use kv::check_kv;
pub use options::CheckOptions;
pub use watch::{check_watch, EventKind, WatchEvent, WatchStream};

#[cfg(test)]
mod tests;
