//! Model-based property test of [`MvccStore`].
//!
//! Random sequences (1..60 steps over the keys `a ab b c d e`) of puts, deletes, txns (compares
//! on every target and result, both branches, nested txns two deep, the duplicate-key rule,
//! `--max-txn-ops`), compactions (valid and not, waited for or racing with what follows),
//! ranges (any revision, limit, count_only, keys_only, sort, filters), `events_since`, multi-call
//! write transactions (committed or dropped, with an applied index), lease grant/revoke, a live
//! observer (with or without `prev_kv`) and close/reopen are run against the store and against
//! [`Model`], a naive in-memory implementation of etcd's semantics written from the reference
//! (`etcd-v3.md` §1.2-§1.8 and §3) and etcd's `txn.go`, not from the store's code. Every
//! response, every error (variant and numbers), every event and the current/compact revisions,
//! applied index and leases must be identical after every step; after a reopen (and at the end)
//! every retained revision and the whole retained event log are compared too.
//!
//! The model keeps, per key, every record `(main, sub, put kv | tombstone)` that compaction has
//! not removed; each query scans them. Compaction applies etcd 3.6's per-key rule (§3.5): drop
//! the lives whose tombstone is below C, keep the newest revision `<= C` of the first life left
//! and everything after it (so a tombstone exactly at C stays and a watch from C sees it).
//!
//! Two choices where etcd leaves freedom are modelled as the store makes them: equal sort targets
//! keep ascending key order (a stable sort in both directions, as Go's insertion sort does for
//! small results), and a nested
//! txn's response carries the revision reached when it finished (etcd leaves that header empty).
//!
//! `PROPTEST_CASES` overrides the default of 64 cases; `MODEL_STATS=1` (with `--nocapture`)
//! prints how often each outcome was reached. The `bug_*` tests reproduce store bugs the
//! property found.

#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestRunner;
use rusd_mvcc::{
    CompactionHandle, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, Error, Event, EventBatch, EventKind, KeyValue, Lease, LeaseId, MvccStore,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder,
    SortTarget, StoreConfig, TxnRequest, TxnResponse,
};

type Key = Vec<u8>;

/// etcd's default `--max-txn-ops`, which `StoreConfig::new` uses too.
const MAX_TXN_OPS: usize = 128;
/// A lease id that is never granted (the test grants 1 and 2).
const MISSING_LEASE: i64 = 7;

const KEYS: &[&[u8]] = &[b"a", b"ab", b"b", b"c", b"d", b"e"];
const BOUNDS: &[&[u8]] = &[
    b"\0", b"a", b"aa", b"ab", b"abc", b"b", b"c", b"d", b"e", b"f", b"k1", b"k25", b"k5", b"z",
];
const PREFIXES: &[&[u8]] = &[b"a", b"ab", b"b", b"e", b"k", b"k3", b"\xff"];
const VALUES: &[&[u8]] = &[b"", b"x", b"y", b"zz", b"v1"];

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The store's errors the model can produce, with their numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fail {
    EmptyKey,
    Compacted {
        requested: i64,
        compacted: i64,
    },
    Future {
        requested: i64,
        current: i64,
    },
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    LeaseNotFound(i64),
    DuplicateKey,
    TooManyOps {
        ops: usize,
        max: usize,
    },
    LeaseExists(i64),
    InvalidArgument,
    /// Anything else the store returned (never expected).
    Other(String),
}

type R<T> = Result<T, Fail>;

fn fail(e: Error) -> Fail {
    match e {
        Error::EmptyKey => Fail::EmptyKey,
        Error::Compacted {
            requested,
            compacted,
        } => Fail::Compacted {
            requested,
            compacted,
        },
        Error::FutureRevision { requested, current } => Fail::Future { requested, current },
        Error::KeyNotFound => Fail::KeyNotFound,
        Error::ValueProvided => Fail::ValueProvided,
        Error::LeaseProvided => Fail::LeaseProvided,
        Error::LeaseNotFound(id) => Fail::LeaseNotFound(id.0),
        Error::DuplicateKey => Fail::DuplicateKey,
        Error::TooManyTxnOps { ops, max } => Fail::TooManyOps { ops, max },
        Error::LeaseExists(id) => Fail::LeaseExists(id.0),
        Error::InvalidArgument(_) => Fail::InvalidArgument,
        other => Fail::Other(format!("{other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// etcd's `(key, range_end)` convention (§1.2): empty end = one key, `"\0"` = every key from
/// `key` on, else `[key, end)` (empty when `end <= key`).
fn in_range(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        end => key <= k && k < end,
    }
}

/// clientv3's `GetPrefixRangeEnd`.
fn prefix_end(prefix: &[u8]) -> Key {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    Put(KeyValue),
    Delete,
}

/// One record of a key: what happened at revision `(main, sub)`.
#[derive(Clone, Debug)]
struct Rec {
    main: i64,
    sub: i64,
    change: Change,
}

#[derive(Clone, Debug)]
struct Model {
    /// Newest revision (1 when empty; the first write gets 2).
    current: i64,
    /// Compact revision, -1 before the first compaction.
    compact: i64,
    /// Per key, every record compaction kept, ascending by `(main, sub)`.
    hist: BTreeMap<Key, Vec<Rec>>,
    /// The applied index last committed with a write transaction.
    applied: u64,
    /// Granted leases and their TTLs.
    leases: BTreeMap<i64, i64>,
}

/// Which branch a txn and each nested txn of that branch take (decided up front, §1.5).
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn branch(req: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

impl Model {
    fn new() -> Self {
        Self {
            current: 1,
            compact: -1,
            hist: BTreeMap::new(),
            applied: 0,
            leases: BTreeMap::new(),
        }
    }

    /// The key at revision `rev`: its newest record at or below `rev`.
    fn get(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        let rec = self.hist.get(key)?.iter().rev().find(|r| r.main <= rev)?;
        match &rec.change {
            Change::Put(kv) => Some(kv),
            Change::Delete => None,
        }
    }

    /// Keys of a range alive at `rev`, ascending.
    fn live(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.hist
            .keys()
            .filter(|k| in_range(key, end, k))
            .filter_map(|k| self.get(k, rev).cloned())
            .collect()
    }

    /// §1.2 step 1.
    fn read_rev(&self, revision: i64) -> R<i64> {
        let rev = if revision <= 0 {
            self.current
        } else {
            revision
        };
        if rev > self.current {
            return Err(Fail::Future {
                requested: rev,
                current: self.current,
            });
        }
        if rev < self.compact {
            return Err(Fail::Compacted {
                requested: rev,
                compacted: self.compact,
            });
        }
        Ok(rev)
    }

    fn range(&self, req: &RangeRequest) -> R<RangeResponse> {
        if req.key.is_empty() {
            return Err(Fail::EmptyKey);
        }
        let rev = self.read_rev(req.revision)?;
        Ok(range_result(self, req, rev, self.current))
    }

    fn put(&mut self, req: &PutRequest) -> R<PutResponse> {
        check_put(req)?;
        let mut w = Writer::new(self);
        let resp = w.put(req)?;
        w.commit(self);
        Ok(resp)
    }

    fn delete(&mut self, req: &DeleteRangeRequest) -> R<DeleteRangeResponse> {
        if req.key.is_empty() {
            return Err(Fail::EmptyKey);
        }
        let mut w = Writer::new(self);
        let resp = w.delete(req);
        w.commit(self);
        Ok(resp)
    }

    fn txn(&mut self, req: &TxnRequest) -> R<TxnResponse> {
        check_txn(req, MAX_TXN_OPS)?;
        check_intervals(&req.success)?;
        check_intervals(&req.failure)?;
        let path = self.choose(req);
        self.precheck(req, &path)?;
        let mut w = Writer::new(self);
        let resp = w.run(req, &path)?;
        w.commit(self);
        Ok(resp)
    }

    fn choose(&self, req: &TxnRequest) -> Path {
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let nested = branch(req, succeeded)
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(t) => Some(self.choose(t)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    /// etcd's `applyCompare`.
    fn compare(&self, c: &Compare) -> bool {
        let kvs = self.live(&c.key, &c.range_end, self.current);
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    /// etcd's `checkTxn` on the chosen path: first every put (`checkPut`), then every range
    /// (`checkRange`), each pass in op order with nested txns depth-first.
    fn precheck(&self, req: &TxnRequest, path: &Path) -> R<()> {
        self.precheck_pass(req, path, true)?;
        self.precheck_pass(req, path, false)
    }

    fn precheck_pass(&self, req: &TxnRequest, path: &Path, puts: bool) -> R<()> {
        let mut nested = path.nested.iter();
        for op in branch(req, path.succeeded) {
            match op {
                RequestOp::Range(r) if !puts => {
                    if r.revision != 0 {
                        if r.revision > self.current {
                            return Err(Fail::Future {
                                requested: r.revision,
                                current: self.current,
                            });
                        }
                        if r.revision < self.compact {
                            return Err(Fail::Compacted {
                                requested: r.revision,
                                compacted: self.compact,
                            });
                        }
                    }
                }
                RequestOp::Put(p) if puts => {
                    // checkPut: the previous key first, then the lease.
                    if (p.ignore_value || p.ignore_lease)
                        && self.get(&p.key, self.current).is_none()
                    {
                        return Err(Fail::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(Fail::LeaseNotFound(p.lease));
                    }
                }
                RequestOp::Range(_) | RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(t) => self.precheck_pass(t, nested.next().unwrap(), puts)?,
            }
        }
        Ok(())
    }

    /// The store's lease grant: a non-zero id that is not in use; TTLs below 1 become 1.
    fn lease_grant(&mut self, id: i64, ttl: i64) -> R<()> {
        if id == 0 {
            return Err(Fail::InvalidArgument);
        }
        if self.leases.contains_key(&id) {
            return Err(Fail::LeaseExists(id));
        }
        self.leases.insert(id, ttl.max(1));
        Ok(())
    }

    /// Keys attached to lease `id`: the live keys whose newest version holds it, ascending.
    fn lease_keys(&self, id: i64) -> Vec<Key> {
        self.live(&[0], &[0], self.current)
            .into_iter()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect()
    }

    /// §1.8 LeaseRevoke: every attached key deleted in one revision, in key order; returns the
    /// revision after it.
    fn lease_revoke(&mut self, id: i64) -> R<i64> {
        if !self.leases.contains_key(&id) {
            return Err(Fail::LeaseNotFound(id));
        }
        let mut w = Writer::new(self);
        for key in self.lease_keys(id) {
            w.delete(&DeleteRangeRequest::new(key, Vec::new()));
        }
        let rev = w.rev();
        w.commit(self);
        self.leases.remove(&id);
        Ok(rev)
    }

    fn lease(&self, id: i64) -> Option<Lease> {
        self.leases.get(&id).map(|&ttl| Lease {
            id: LeaseId(id),
            ttl,
            keys: self.lease_keys(id),
        })
    }

    /// §1.6 and §3.5.
    fn compact(&mut self, rev: i64) -> R<()> {
        if rev <= self.compact {
            return Err(Fail::Compacted {
                requested: rev,
                compacted: self.compact,
            });
        }
        if rev > self.current {
            return Err(Fail::Future {
                requested: rev,
                current: self.current,
            });
        }
        self.compact = rev;
        for recs in self.hist.values_mut() {
            compact_key(recs, rev);
        }
        self.hist.retain(|_, recs| !recs.is_empty());
        Ok(())
    }

    /// An event as a watcher sees it; `prev_kv` is the key at `mod_revision - 1` for a non-create
    /// event, omitted when that revision is compacted (§1.7).
    fn event(&self, key: &[u8], rec: &Rec, with_prev: bool) -> Event {
        let (kind, kv) = match &rec.change {
            Change::Put(kv) => (EventKind::Put, kv.clone()),
            Change::Delete => (
                EventKind::Delete,
                KeyValue {
                    key: key.to_vec(),
                    mod_revision: rec.main,
                    ..KeyValue::default()
                },
            ),
        };
        let is_create = kind == EventKind::Put && kv.create_revision == kv.mod_revision;
        let before = rec.main - 1;
        let prev_kv = if with_prev && !is_create && before >= self.compact {
            self.get(key, before).cloned()
        } else {
            None
        };
        Event { kind, kv, prev_kv }
    }

    /// Every record with `main >= from`, in revision order.
    fn records_from(&self, from: i64) -> Vec<(&Key, &Rec)> {
        let mut out: Vec<(&Key, &Rec)> = self
            .hist
            .iter()
            .flat_map(|(k, recs)| recs.iter().map(move |r| (k, r)))
            .filter(|(_, r)| r.main >= from)
            .collect();
        out.sort_by_key(|(_, r)| (r.main, r.sub));
        out
    }

    fn events_since(&self, from: i64, max: usize, prev_kv: bool) -> R<(Vec<Event>, i64)> {
        let from = from.max(1);
        if from > self.current {
            return Ok((Vec::new(), from));
        }
        if from < self.compact {
            return Err(Fail::Compacted {
                requested: from,
                compacted: self.compact,
            });
        }
        let recs = self.records_from(from);
        let mut mains: Vec<i64> = recs.iter().map(|(_, r)| r.main).collect();
        mains.dedup();
        let next = mains.get(max).copied().unwrap_or(self.current + 1);
        let events = recs
            .iter()
            .filter(|(_, r)| r.main < next)
            .map(|(k, r)| self.event(k, r, prev_kv))
            .collect();
        Ok((events, next))
    }

    /// What a live observer gets for revision `rev`.
    fn batch(&self, rev: i64, want_prev: bool) -> EventBatch {
        EventBatch {
            revision: rev,
            events: self
                .records_from(rev)
                .iter()
                .filter(|(_, r)| r.main == rev)
                .map(|(k, r)| self.event(k, r, want_prev))
                .collect(),
        }
    }
}

/// Compacts one key's records at `c` (§3.5 step 2, etcd 3.6 `keyIndex.compact`).
fn compact_key(recs: &mut Vec<Rec>, c: i64) {
    // Split into lives: each tombstone closes one; the last life is open (maybe empty).
    let mut lives: Vec<Vec<Rec>> = vec![Vec::new()];
    for r in recs.drain(..) {
        let closes = r.change == Change::Delete;
        lives.last_mut().unwrap().push(r);
        if closes {
            lives.push(Vec::new());
        }
    }
    let newest = lives.len() - 1;
    let target = (0..newest)
        .find(|&i| lives[i].last().unwrap().main >= c)
        .unwrap_or(newest);
    let first = &lives[target];
    let keep_from = first.iter().rposition(|r| r.main <= c).unwrap_or(0);
    recs.extend(first[keep_from..].iter().cloned());
    for life in &lives[target + 1..] {
        recs.extend(life.iter().cloned());
    }
}

/// etcd's `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// etcd's `checkPutRequest` (§1.3).
fn check_put(req: &PutRequest) -> R<()> {
    if req.key.is_empty() {
        return Err(Fail::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Fail::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Fail::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` (§1.5 validation steps 1-2).
fn check_txn(req: &TxnRequest, max: usize) -> R<()> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max {
        return Err(Fail::TooManyOps { ops, max });
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Fail::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(Fail::EmptyKey),
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(Fail::EmptyKey),
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::Txn(t) => check_txn(t, max - ops)?,
            RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
        }
    }
    Ok(())
}

/// A delete's interval as etcd's `adt` tree sees it: a point, or `[key, end)` compared as plain
/// bytes (so a `"\0"` end is an empty interval).
type Interval = (Key, Option<Key>);

fn hits(d: &Interval, k: &[u8]) -> bool {
    match &d.1 {
        None => d.0 == k,
        Some(end) => d.0.as_slice() <= k && k < end.as_slice(),
    }
}

/// etcd's `checkIntervals` (§1.5 validation step 3).
fn check_intervals(ops: &[RequestOp]) -> R<(BTreeSet<Key>, Vec<Interval>)> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some((
                d.key.clone(),
                (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            )),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<Key> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| hits(d, k)) {
                return Err(Fail::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(Fail::DuplicateKey);
            }
            if dels.iter().any(|d| hits(d, k)) {
                return Err(Fail::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || dels.iter().any(|d| hits(d, &p.key)) {
            return Err(Fail::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

fn has_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

fn by_target(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

/// §1.2 steps 3-9 at read revision `rev`, with header revision `header`.
fn range_result(m: &Model, req: &RangeRequest, rev: i64, header: i64) -> RangeResponse {
    let mut kvs = m.live(&req.key, &req.range_end, rev);
    let mut resp = RangeResponse {
        revision: header,
        count: kvs.len() as i64,
        ..RangeResponse::default()
    };
    if req.count_only {
        return resp;
    }
    kvs.retain(|kv| {
        !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
            || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
            || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
            || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
    });
    // etcd's rangeLimit: a sort target with order NONE sorts only the first limit + 1 keys (in
    // key order); an explicit order (other than ascending by key) or a filter sorts everything.
    if req.sort_order == SortOrder::None && !has_filters(req) {
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 {
                kvs.truncate(limit + 1);
            }
        }
    }
    match (req.sort_order, req.sort_target) {
        (SortOrder::None | SortOrder::Ascend, SortTarget::Key) => {}
        (SortOrder::Descend, SortTarget::Key) => kvs.reverse(),
        // Stable both ways: ties keep ascending key order, as Go's insertion sort does.
        (SortOrder::Descend, target) => kvs.sort_by(|a, b| by_target(target, b, a)),
        (_, target) => kvs.sort_by(|a, b| by_target(target, a, b)),
    }
    if let Ok(limit) = usize::try_from(req.limit) {
        if limit > 0 && kvs.len() > limit {
            kvs.truncate(limit);
            resp.more = true;
        }
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    resp.kvs = kvs;
    resp
}

/// A write in progress: every change gets main revision `base + 1` and the next sub revision;
/// reads at "latest" (`base + 1`) see them, reads at an explicit revision `<= base` do not.
struct Writer {
    m: Model,
    base: i64,
    sub: i64,
}

impl Writer {
    fn new(m: &Model) -> Self {
        Self {
            m: m.clone(),
            base: m.current,
            sub: 0,
        }
    }

    fn rev(&self) -> i64 {
        if self.sub > 0 {
            self.base + 1
        } else {
            self.base
        }
    }

    fn commit(self, m: &mut Model) {
        if self.sub > 0 {
            m.hist = self.m.hist;
            m.current = self.base + 1;
        }
    }

    fn push(&mut self, key: &[u8], change: Change) {
        let rec = Rec {
            main: self.base + 1,
            sub: self.sub,
            change,
        };
        self.sub += 1;
        self.m.hist.entry(key.to_vec()).or_default().push(rec);
    }

    /// §1.3, after validation. etcd's Put looks the lease up before it reads the previous key
    /// (`txn/put.go`); in a txn both were prechecked already.
    fn put(&mut self, req: &PutRequest) -> R<PutResponse> {
        if req.lease != 0 && !self.m.leases.contains_key(&req.lease) {
            return Err(Fail::LeaseNotFound(req.lease));
        }
        let prev = self.m.get(&req.key, self.base + 1).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(Fail::KeyNotFound);
        }
        // ignore_lease keeps the lease of the key (which exists: revoking deletes its keys).
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let rev = self.base + 1;
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.push(&req.key, Change::Put(kv));
        Ok(PutResponse {
            revision: rev,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// §1.4.
    fn delete(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let victims = self.m.live(&req.key, &req.range_end, self.base + 1);
        for kv in &victims {
            self.push(&kv.key, Change::Delete);
        }
        DeleteRangeResponse {
            revision: self.rev(),
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv { victims } else { Vec::new() },
        }
    }

    /// A range inside a txn (after the prechecks).
    fn range(&self, req: &RangeRequest) -> RangeResponse {
        let rev = if req.revision > 0 {
            req.revision
        } else {
            self.base + 1
        };
        range_result(&self.m, req, rev, self.rev())
    }

    /// [`rusd_mvcc::WriteTxn::range`]: no txn precheck, so the revision is checked here.
    fn range_checked(&self, req: &RangeRequest) -> R<RangeResponse> {
        if req.key.is_empty() {
            return Err(Fail::EmptyKey);
        }
        if req.revision > 0 {
            self.m.read_rev(req.revision)?;
        }
        Ok(self.range(req))
    }

    fn run(&mut self, req: &TxnRequest, path: &Path) -> R<TxnResponse> {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in branch(req, path.succeeded) {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d)),
                RequestOp::Txn(t) => ResponseOp::Txn(self.run(t, nested.next().unwrap())?),
            });
        }
        Ok(TxnResponse {
            revision: self.rev(),
            succeeded: path.succeeded,
            responses,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Generated operations
// ---------------------------------------------------------------------------------------------

/// A revision chosen relative to the state when the operation runs.
#[derive(Clone, Copy, Debug)]
enum Rev {
    Zero,
    Current,
    Ahead(i64),
    AtCompact,
    BelowCompact(i64),
    /// Somewhere in `[max(compact, 1), current]`.
    Within(u8),
    Abs(i64),
}

impl Rev {
    fn at(self, m: &Model) -> i64 {
        match self {
            Rev::Zero => 0,
            Rev::Current => m.current,
            Rev::Ahead(n) => m.current + n,
            Rev::AtCompact => m.compact,
            Rev::BelowCompact(n) => m.compact - n,
            Rev::Within(f) => {
                let lo = m.compact.max(1);
                lo + i64::from(f) % (m.current - lo + 1)
            }
            Rev::Abs(n) => n,
        }
    }
}

#[derive(Clone, Debug)]
struct RangeSpec {
    key: Key,
    end: Key,
    limit: i64,
    rev: Rev,
    order: SortOrder,
    target: SortTarget,
    keys_only: bool,
    count_only: bool,
    /// min mod, max mod, min create, max create.
    filters: [Option<Rev>; 4],
}

impl RangeSpec {
    fn req(&self, m: &Model) -> RangeRequest {
        let f = |r: Option<Rev>| r.map_or(0, |r| r.at(m));
        RangeRequest {
            key: self.key.clone(),
            range_end: self.end.clone(),
            limit: self.limit,
            revision: self.rev.at(m),
            sort_order: self.order,
            sort_target: self.target,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: f(self.filters[0]),
            max_mod_revision: f(self.filters[1]),
            min_create_revision: f(self.filters[2]),
            max_create_revision: f(self.filters[3]),
        }
    }
}

#[derive(Clone, Debug)]
enum CmpTarget {
    Version(i64),
    Create(Rev),
    Mod(Rev),
    Value(Key),
    Lease(i64),
}

#[derive(Clone, Debug)]
struct CmpSpec {
    key: Key,
    end: Key,
    result: CompareResult,
    target: CmpTarget,
}

#[derive(Clone, Debug)]
enum OpSpec {
    Range(RangeSpec),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnSpec),
}

#[derive(Clone, Debug)]
struct TxnSpec {
    compare: Vec<CmpSpec>,
    success: Vec<OpSpec>,
    failure: Vec<OpSpec>,
}

impl TxnSpec {
    fn req(&self, m: &Model) -> TxnRequest {
        let ops = |ops: &[OpSpec]| -> Vec<RequestOp> {
            ops.iter()
                .map(|op| match op {
                    OpSpec::Range(r) => RequestOp::Range(r.req(m)),
                    OpSpec::Put(p) => RequestOp::Put(p.clone()),
                    OpSpec::Delete(d) => RequestOp::DeleteRange(d.clone()),
                    OpSpec::Txn(t) => RequestOp::Txn(t.req(m)),
                })
                .collect()
        };
        TxnRequest {
            compare: self
                .compare
                .iter()
                .map(|c| Compare {
                    result: c.result,
                    target: match &c.target {
                        CmpTarget::Version(v) => CompareTarget::Version(*v),
                        CmpTarget::Create(r) => CompareTarget::Create(r.at(m)),
                        CmpTarget::Mod(r) => CompareTarget::Mod(r.at(m)),
                        CmpTarget::Value(v) => CompareTarget::Value(v.clone()),
                        CmpTarget::Lease(l) => CompareTarget::Lease(*l),
                    },
                    key: c.key.clone(),
                    range_end: c.end.clone(),
                })
                .collect(),
            success: ops(&self.success),
            failure: ops(&self.failure),
        }
    }
}

/// One call on an open [`rusd_mvcc::WriteTxn`].
#[derive(Clone, Debug)]
enum WriteOp {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeSpec),
}

/// The result of a [`WriteOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum WriteResp {
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Range(RangeResponse),
}

#[derive(Clone, Debug)]
enum Step {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnSpec),
    /// Compact; `wait` waits for the physical part at once, else only before the next step that
    /// reads the event log or reopens (the writes and reads in between race with it). Which
    /// records a compaction at C removes at C itself (a put followed by a delete of the same key
    /// in revision C) decides what `events_since(C)` returns, so that is compared settled.
    Compact {
        rev: Rev,
        wait: bool,
    },
    /// Several calls in one write transaction, then commit or drop it; `applied` records the
    /// step number as the applied index.
    Write {
        ops: Vec<WriteOp>,
        commit: bool,
        applied: bool,
    },
    Range(RangeSpec),
    Events {
        from: Rev,
        max: usize,
        prev_kv: bool,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke(i64),
    /// A read-only txn of `outer - 1` ranges and a nested txn of `nested` ranges, around the
    /// `--max-txn-ops` limit (the nested txn gets what the outer level leaves).
    BigTxn {
        outer: usize,
        nested: usize,
    },
    /// Puts `n` consecutive wide keys from `from` in one write transaction.
    Fill {
        from: u16,
        n: u16,
        value: Key,
    },
    Reopen,
    CheckAll,
}

#[derive(Clone, Debug)]
struct Case {
    /// A live observer, and whether it wants `prev_kv`.
    observe: Option<bool>,
    steps: Vec<Step>,
}

fn rev_sel() -> impl Strategy<Value = Rev> {
    prop_oneof![
        2 => Just(Rev::Zero),
        2 => Just(Rev::Current),
        1 => (1i64..3).prop_map(Rev::Ahead),
        1 => Just(Rev::AtCompact),
        1 => (1i64..3).prop_map(Rev::BelowCompact),
        6 => any::<u8>().prop_map(Rev::Within),
        1 => (-3i64..12).prop_map(Rev::Abs),
    ]
}

/// `k000`, `k001`, ...: the keys [`Step::Fill`] writes, many enough to span several chunks of
/// the key index (256 keys each).
fn wide_key(i: u16) -> Key {
    format!("k{i:03}").into_bytes()
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        40 => select(KEYS).prop_map(<[u8]>::to_vec),
        2 => (0u16..900).prop_map(wide_key),
        1 => Just(Vec::new()),
    ]
}

/// `(key, range_end)`: one key, `[a, b)` (maybe empty or inverted), from-key, prefix, all.
fn span() -> impl Strategy<Value = (Key, Key)> {
    prop_oneof![
        4 => key().prop_map(|k| (k, Vec::new())),
        3 => (select(BOUNDS), select(BOUNDS)).prop_map(|(a, b)| (a.to_vec(), b.to_vec())),
        2 => select(BOUNDS).prop_map(|a| (a.to_vec(), vec![0])),
        2 => select(PREFIXES).prop_map(|p| (p.to_vec(), prefix_end(p))),
        1 => Just((vec![0], vec![0])),
    ]
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        select(VALUES),
        any::<bool>(),
        0u8..20,
        0u8..20,
        0u8..30,
    )
        .prop_map(|(key, value, prev_kv, iv, il, l)| {
            let ignore_value = iv < 3;
            // Mostly an empty value with ignore_value (else it is ValueProvided).
            let value = if ignore_value && iv > 0 {
                Vec::new()
            } else {
                value.to_vec()
            };
            PutRequest {
                key,
                value,
                lease: match l {
                    0 => MISSING_LEASE,
                    1..=5 => 1,
                    6..=10 => 2,
                    _ => 0,
                },
                prev_kv,
                ignore_value,
                ignore_lease: il < 3,
            }
        })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (span(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn sort_order() -> impl Strategy<Value = SortOrder> {
    prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ]
}

fn sort_target() -> impl Strategy<Value = SortTarget> {
    prop_oneof![
        3 => Just(SortTarget::Key),
        1 => Just(SortTarget::Version),
        1 => Just(SortTarget::Create),
        1 => Just(SortTarget::Mod),
        1 => Just(SortTarget::Value),
    ]
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    let filter = || prop::option::weighted(0.1, rev_sel());
    (
        span(),
        prop_oneof![2 => Just(0i64), 3 => 1i64..4, 1 => -1i64..0],
        prop_oneof![4 => Just(Rev::Zero), 3 => rev_sel()],
        sort_order(),
        sort_target(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        [filter(), filter(), filter(), filter()],
    )
        .prop_map(
            |((key, end), limit, rev, order, target, keys_only, count_only, filters)| RangeSpec {
                key,
                end,
                limit,
                rev,
                order,
                target,
                keys_only,
                count_only,
                filters,
            },
        )
}

fn cmp_spec() -> impl Strategy<Value = CmpSpec> {
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    let target = prop_oneof![
        (0i64..4).prop_map(CmpTarget::Version),
        rev_sel().prop_map(CmpTarget::Create),
        rev_sel().prop_map(CmpTarget::Mod),
        select(VALUES).prop_map(|v| CmpTarget::Value(v.to_vec())),
        prop_oneof![Just(0i64), Just(1), Just(2), Just(MISSING_LEASE)].prop_map(CmpTarget::Lease),
    ];
    let place = prop_oneof![
        4 => key().prop_map(|k| (k, Vec::new())),
        1 => span(),
    ];
    (place, result, target).prop_map(|((key, end), result, target)| CmpSpec {
        key,
        end,
        result,
        target,
    })
}

fn txn_spec(depth: u32) -> BoxedStrategy<TxnSpec> {
    let op = if depth < 2 {
        prop_oneof![
            3 => range_spec().prop_map(OpSpec::Range),
            3 => put_req().prop_map(OpSpec::Put),
            2 => delete_req().prop_map(OpSpec::Delete),
            1 => txn_spec(depth + 1).prop_map(OpSpec::Txn),
        ]
        .boxed()
    } else {
        prop_oneof![
            3 => range_spec().prop_map(OpSpec::Range),
            3 => put_req().prop_map(OpSpec::Put),
            2 => delete_req().prop_map(OpSpec::Delete),
        ]
        .boxed()
    };
    (
        prop::collection::vec(cmp_spec(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnSpec {
            compare,
            success,
            failure,
        })
        .boxed()
}

fn step() -> impl Strategy<Value = Step> {
    let compact_rev = prop_oneof![
        5 => any::<u8>().prop_map(Rev::Within),
        1 => Just(Rev::Current),
        1 => Just(Rev::AtCompact),
        1 => (1i64..3).prop_map(Rev::BelowCompact),
        1 => (1i64..3).prop_map(Rev::Ahead),
        1 => (-2i64..3).prop_map(Rev::Abs),
    ];
    let events = (
        rev_sel(),
        prop_oneof![2 => Just(usize::MAX), 1 => 0usize..4],
        any::<bool>(),
    )
        .prop_map(|(from, max, prev_kv)| Step::Events { from, max, prev_kv });
    let write_op = prop_oneof![
        3 => put_req().prop_map(WriteOp::Put),
        2 => delete_req().prop_map(WriteOp::Delete),
        2 => range_spec().prop_map(WriteOp::Range),
    ];
    let write = (
        prop::collection::vec(write_op, 0..5),
        prop::bool::weighted(0.75),
        any::<bool>(),
    )
        .prop_map(|(ops, commit, applied)| Step::Write {
            ops,
            commit,
            applied,
        });
    prop_oneof![
        10 => put_req().prop_map(Step::Put),
        4 => delete_req().prop_map(Step::Delete),
        8 => txn_spec(0).prop_map(Step::Txn),
        2 => (compact_rev, any::<bool>()).prop_map(|(rev, wait)| Step::Compact { rev, wait }),
        2 => write,
        6 => range_spec().prop_map(Step::Range),
        3 => events,
        3 => (prop_oneof![1 => Just(0i64), 6 => 1i64..3], -1i64..4)
            .prop_map(|(id, ttl)| Step::LeaseGrant { id, ttl }),
        1 => (0i64..3).prop_map(Step::LeaseRevoke),
        1 => (MAX_TXN_OPS - 1..MAX_TXN_OPS + 2, 0usize..3)
            .prop_map(|(outer, nested)| Step::BigTxn { outer, nested }),
        1 => (0u16..600, 1u16..300, select(VALUES))
            .prop_map(|(from, n, value)| Step::Fill { from, n, value: value.to_vec() }),
        1 => Just(Step::Reopen),
        1 => Just(Step::CheckAll),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
        prop::collection::vec(step(), 1..60),
    )
        .prop_map(|(observe, steps)| Case { observe, steps })
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

struct Harness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Always `Some` between steps.
    store: Option<MvccStore>,
    observe: Option<bool>,
    seen: Arc<Mutex<Vec<EventBatch>>>,
    /// Compactions not waited for yet.
    pending: Vec<CompactionHandle>,
}

impl Harness {
    fn new(observe: Option<bool>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let store = Self::open(&path, observe, &seen);
        Self {
            _dir: dir,
            path,
            store: Some(store),
            observe,
            seen,
            pending: Vec::new(),
        }
    }

    fn open(
        path: &std::path::Path,
        observe: Option<bool>,
        seen: &Arc<Mutex<Vec<EventBatch>>>,
    ) -> MvccStore {
        let store = MvccStore::open(StoreConfig::new(path)).unwrap();
        if let Some(want_prev) = observe {
            let seen = seen.clone();
            store.observe(want_prev, move |batch| {
                seen.lock().unwrap().push((**batch).clone());
            });
        }
        store
    }

    fn store(&self) -> &MvccStore {
        self.store.as_ref().unwrap()
    }

    /// Waits for every pending physical compaction: from then on the event log holds exactly
    /// what the model keeps.
    fn settle(&mut self) {
        for handle in self.pending.drain(..) {
            handle.wait();
        }
    }

    /// Closes the store and opens it again. The redb file lock is released only when the last
    /// clone of the store is dropped (`close` alone keeps it), so the old one is dropped first.
    fn reopen(&mut self) {
        self.settle();
        let old = self.store.take().unwrap();
        old.close().unwrap();
        drop(old);
        self.store = Some(Self::open(&self.path, self.observe, &self.seen));
    }

    fn take_batches(&self) -> Vec<EventBatch> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Counts outcomes per step kind, printed with `MODEL_STATS=1` (to check what the generator
/// reaches).
static STATS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn note<T>(kind: &str, result: &R<T>) {
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{e:?}")
            .split([' ', '(', '{'])
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    *STATS
        .lock()
        .unwrap()
        .entry(format!("{kind} {outcome}"))
        .or_default() += 1;
}

fn note_if(kind: &str, cond: bool) {
    if cond {
        note::<()>(kind, &Ok(()));
    }
}

/// Every retained revision read whole, and the whole retained event log, with and without
/// `prev_kv`.
fn check_all(h: &mut Harness, m: &Model, step: usize) -> Result<(), TestCaseError> {
    h.settle();
    let lo = m.compact.max(1);
    for rev in lo..=m.current {
        let req = RangeRequest {
            revision: rev,
            ..RangeRequest::new(vec![0], vec![0])
        };
        prop_assert_eq!(
            h.store().range(&req).map_err(fail),
            m.range(&req),
            "step {}: full read at revision {}",
            step,
            rev
        );
    }
    for prev_kv in [false, true] {
        prop_assert_eq!(
            h.store()
                .events_since(lo, usize::MAX, prev_kv)
                .map_err(fail),
            m.events_since(lo, usize::MAX, prev_kv),
            "step {}: events since {} (prev_kv {})",
            step,
            lo,
            prev_kv
        );
    }
    Ok(())
}

/// Runs a [`Step::Write`] on the store and the model.
fn run_write(
    h: &Harness,
    m: &mut Model,
    i: usize,
    ops: &[WriteOp],
    commit: bool,
    applied: bool,
) -> Result<(), TestCaseError> {
    let reqs: Vec<(WriteOp, Option<RangeRequest>)> = ops
        .iter()
        .map(|op| match op {
            WriteOp::Range(spec) => (op.clone(), Some(spec.req(m))),
            _ => (op.clone(), None),
        })
        .collect();
    let mut got = Vec::new();
    let mut w = h.store().write();
    for (op, range) in &reqs {
        got.push(match (op, range) {
            (WriteOp::Put(p), _) => w.put(p).map(WriteResp::Put).map_err(fail),
            (WriteOp::Delete(d), _) => w.delete_range(d).map(WriteResp::Delete).map_err(fail),
            (_, Some(r)) => w.range(r).map(WriteResp::Range).map_err(fail),
            (WriteOp::Range(_), None) => unreachable!(),
        });
    }
    let applied_index = i as u64 + 1;
    if applied {
        w.set_applied_index(applied_index);
    }
    let got_end = if commit {
        w.commit().map_err(fail)
    } else {
        let base = w.base_revision();
        drop(w);
        Ok(base)
    };

    let mut want = Vec::new();
    let mut mw = Writer::new(m);
    for (op, range) in &reqs {
        want.push(match (op, range) {
            (WriteOp::Put(p), _) => check_put(p).and_then(|()| mw.put(p)).map(WriteResp::Put),
            (WriteOp::Delete(d), _) if d.key.is_empty() => Err(Fail::EmptyKey),
            (WriteOp::Delete(d), _) => Ok(WriteResp::Delete(mw.delete(d))),
            (_, Some(r)) => mw.range_checked(r).map(WriteResp::Range),
            (WriteOp::Range(_), None) => unreachable!(),
        });
    }
    for r in &want {
        note("write-op", r);
    }
    let want_end = if commit { mw.rev() } else { m.current };
    if commit {
        mw.commit(m);
        if applied {
            m.applied = applied_index;
        }
    }
    prop_assert_eq!(got, want, "step {}: write {:?}", i, reqs);
    prop_assert_eq!(got_end, Ok(want_end), "step {}: write commit", i);
    Ok(())
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let mut h = Harness::new(case.observe);
    let mut m = Model::new();
    for (i, step) in case.steps.iter().enumerate() {
        let before = m.current;
        match step {
            Step::Put(req) => {
                let got = h.store().put(req).map_err(fail);
                let want = m.put(req);
                note("put", &want);
                prop_assert_eq!(got, want, "step {}: {:?}", i, req);
            }
            Step::Delete(req) => {
                let got = h.store().delete_range(req).map_err(fail);
                let want = m.delete(req);
                note("delete", &want);
                note_if(
                    "delete deleted>0",
                    want.as_ref().is_ok_and(|r| r.deleted > 0),
                );
                prop_assert_eq!(got, want, "step {}: {:?}", i, req);
            }
            Step::Txn(spec) => {
                let req = spec.req(&m);
                let got = h.store().txn(&req).map_err(fail);
                let want = m.txn(&req);
                note("txn", &want);
                note_if("txn succeeded", want.as_ref().is_ok_and(|r| r.succeeded));
                note_if(
                    "txn wrote",
                    want.as_ref().is_ok_and(|r| r.revision > before),
                );
                note_if(
                    "txn ran nested",
                    want.as_ref().is_ok_and(|r| {
                        r.responses
                            .iter()
                            .any(|op| matches!(op, ResponseOp::Txn(_)))
                    }),
                );
                prop_assert_eq!(got, want, "step {}: {:?}", i, req);
            }
            Step::Compact { rev, wait } => {
                let rev = rev.at(&m);
                let got = match h.store().compact(rev) {
                    Ok(handle) => {
                        let compacted = handle.revision();
                        if *wait {
                            handle.wait();
                        } else {
                            h.pending.push(handle);
                        }
                        Ok(compacted)
                    }
                    Err(e) => Err(fail(e)),
                };
                let want = m.compact(rev).map(|()| rev);
                note("compact", &want);
                prop_assert_eq!(got, want, "step {}: compact {}", i, rev);
            }
            Step::Write {
                ops,
                commit,
                applied,
            } => run_write(&h, &mut m, i, ops, *commit, *applied)?,
            Step::Range(spec) => {
                let req = spec.req(&m);
                let got = h.store().range(&req).map_err(fail);
                let want = m.range(&req);
                note("range", &want);
                note_if(
                    "range past revision",
                    req.revision > 0 && req.revision < m.current && want.is_ok(),
                );
                note_if("range more", want.as_ref().is_ok_and(|r| r.more));
                prop_assert_eq!(got, want, "step {}: {:?}", i, req);
            }
            Step::Events { from, max, prev_kv } => {
                h.settle();
                let from = from.at(&m);
                let got = h.store().events_since(from, *max, *prev_kv).map_err(fail);
                let want = m.events_since(from, *max, *prev_kv);
                note("events", &want);
                note_if(
                    "events with prev_kv",
                    want.as_ref()
                        .is_ok_and(|(evs, _)| evs.iter().any(|e| e.prev_kv.is_some())),
                );
                prop_assert_eq!(
                    got,
                    want,
                    "step {}: events_since({}, {}, {})",
                    i,
                    from,
                    max,
                    prev_kv
                );
            }
            Step::LeaseGrant { id, ttl } => {
                let got = h.store().lease_grant(LeaseId(*id), *ttl).map_err(fail);
                let want = m.lease_grant(*id, *ttl);
                note("lease grant", &want);
                prop_assert_eq!(got, want, "step {}: lease_grant({}, {})", i, id, ttl);
            }
            Step::LeaseRevoke(id) => {
                let got = h.store().lease_revoke(LeaseId(*id)).map_err(fail);
                let want = m.lease_revoke(*id);
                note("lease revoke", &want);
                note_if(
                    "lease revoke deleted",
                    want.as_ref().is_ok_and(|r| *r > before),
                );
                prop_assert_eq!(got, want, "step {}: lease_revoke({})", i, id);
            }
            Step::BigTxn { outer, nested } => {
                let range = || RequestOp::Range(RangeRequest::new("a", "\0"));
                let mut success: Vec<RequestOp> = (1..*outer).map(|_| range()).collect();
                success.push(RequestOp::Txn(TxnRequest {
                    success: (0..*nested).map(|_| range()).collect(),
                    ..TxnRequest::default()
                }));
                let req = TxnRequest {
                    success,
                    ..TxnRequest::default()
                };
                let got = h.store().txn(&req).map_err(fail);
                let want = m.txn(&req);
                note("big txn", &want);
                prop_assert_eq!(got, want, "step {}: txn of {} + {} ops", i, outer, nested);
            }
            Step::Fill { from, n, value } => {
                let puts: Vec<PutRequest> = (*from..from + n)
                    .map(|k| PutRequest::new(wide_key(k), value.clone()))
                    .collect();
                let mut w = h.store().write();
                for p in &puts {
                    w.put(p).unwrap();
                }
                let got = w.commit().map_err(fail);
                let mut mw = Writer::new(&m);
                for p in &puts {
                    mw.put(p).unwrap();
                }
                let want = mw.rev();
                mw.commit(&mut m);
                note_if("fill", true);
                prop_assert_eq!(got, Ok(want), "step {}: fill", i);
            }
            Step::Reopen => {
                note_if("reopen after compaction", m.compact > 0);
                h.reopen();
                check_all(&mut h, &m, i)?;
            }
            Step::CheckAll => check_all(&mut h, &m, i)?,
        }
        prop_assert_eq!(h.store().current_revision(), m.current, "step {}", i);
        prop_assert_eq!(h.store().compact_revision(), m.compact, "step {}", i);
        prop_assert_eq!(h.store().applied_index(), m.applied, "step {}", i);
        for id in 1..=2 {
            prop_assert_eq!(h.store().lease(LeaseId(id)), m.lease(id), "step {}", i);
        }
        let leases: Vec<Lease> = m
            .leases
            .keys()
            .map(|&id| Lease {
                keys: Vec::new(),
                ..m.lease(id).unwrap()
            })
            .collect();
        prop_assert_eq!(h.store().leases(), leases, "step {}", i);
        if let Some(want_prev) = case.observe {
            let want: Vec<EventBatch> = if m.current > before {
                vec![m.batch(m.current, want_prev)]
            } else {
                Vec::new()
            };
            prop_assert_eq!(h.take_batches(), want, "step {}: observed events", i);
        }
    }
    check_all(&mut h, &m, case.steps.len())?;
    h.store().close().unwrap();
    Ok(())
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        // This file is the only one the test owns: no regression files next to it.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn store_matches_model() {
    // The nested strategies need more than the default 2 MiB test stack in debug builds.
    let runner = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| TestRunner::new(config()).run(&case(), |case| run_case(&case)))
        .unwrap();
    let result = runner.join().unwrap();
    if std::env::var_os("MODEL_STATS").is_some() {
        for (what, n) in STATS.lock().unwrap().iter() {
            eprintln!("{n:>7}  {what}");
        }
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Minimal reproductions of store bugs the property found (regression tests; all fixed)
// ---------------------------------------------------------------------------------------------

fn fresh_store() -> (tempfile::TempDir, MvccStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).unwrap();
    (dir, store)
}

/// etcd's Put looks the lease up before it reads the previous key (`txn/put.go`: `Put` checks
/// `lessor.Lookup` before `put` returns `ErrKeyNotFound`), while a txn's `checkPut` checks the
/// previous key first and the lease second (§1.3, §1.5). The store does both the other way
/// round.
#[test]
fn bug_lease_and_missing_key_precedence() {
    let (_dir, store) = fresh_store();
    let put = PutRequest {
        lease: MISSING_LEASE,
        ignore_value: true,
        ..PutRequest::new("a", "")
    };
    let got = store.put(&put).map_err(fail);
    let txn = TxnRequest {
        success: vec![RequestOp::Put(put)],
        ..TxnRequest::default()
    };
    let got_txn = store.txn(&txn).map_err(fail);
    assert_eq!(got, Err(Fail::LeaseNotFound(MISSING_LEASE)), "plain put");
    assert_eq!(got_txn, Err(Fail::KeyNotFound), "put in a txn");
}

/// A range whose end is below its key is empty (§1.2); inside a write transaction that has
/// already written something, `WriteTxn::range` hands the inverted bounds to `BTreeMap::range`,
/// which panics.
#[test]
fn bug_inverted_range_after_write_in_txn_panics() {
    let (_dir, store) = fresh_store();
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest::new("a", "")),
            RequestOp::Range(RangeRequest::new("c", "a")),
        ],
        ..TxnRequest::default()
    };
    let resp = store.txn(&txn).unwrap();
    assert_eq!(
        resp.responses[1],
        ResponseOp::Range(RangeResponse {
            revision: 2,
            ..RangeResponse::default()
        })
    );
}

/// `keys_only` blanks values after sorting (§1.2 steps 6 and 8), so sorting by VALUE must use
/// the values; the store reads the records without values and sorts empty strings.
#[test]
fn bug_keys_only_sort_by_value() {
    let (_dir, store) = fresh_store();
    store.put(&PutRequest::new("a", "x")).unwrap();
    store.put(&PutRequest::new("ab", "v1")).unwrap();
    let req = RangeRequest {
        sort_target: SortTarget::Value,
        keys_only: true,
        ..RangeRequest::new("a", "b")
    };
    let keys: Vec<Key> = store
        .range(&req)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, [b"ab".to_vec(), b"a".to_vec()]);
}

/// A watcher's `prev_kv` is the key at `mod_revision - 1` (§1.7), which `events_since` gives.
/// A from-key delete is an empty interval to the duplicate-key check (§1.5), so a txn may put a
/// key and then delete it; the live event of that delete carries the put of the same revision
/// as `prev_kv` instead of the key before the txn (here: none).
#[test]
fn bug_live_prev_kv_of_key_written_earlier_in_txn() {
    let (_dir, store) = fresh_store();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.observe(true, move |batch| {
        sink.lock().unwrap().push((**batch).clone())
    });
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest::new("ab", "")),
            RequestOp::DeleteRange(DeleteRangeRequest::new("\0", "\0")),
        ],
        ..TxnRequest::default()
    };
    store.txn(&txn).unwrap();
    let live = seen.lock().unwrap()[0].events.clone();
    let (caught_up, _) = store.events_since(2, usize::MAX, true).unwrap();
    assert_eq!(caught_up[1].prev_kv, None);
    assert_eq!(live, caught_up);
}

/// Found by `store_matches_model`: in one write transaction (the engine allows what etcd's
/// duplicate-key check refuses), a key deleted and then put twice. The second put belongs to
/// the generation the first one began (create_revision == mod_revision), so it is a creation to
/// a watcher and carries no `prev_kv`; the live event gave the key from before the txn.
#[test]
fn bug_live_prev_kv_of_second_put_after_delete_in_txn() {
    let (_dir, store) = fresh_store();
    store.put(&PutRequest::new("b", "v1")).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.observe(true, move |batch| {
        sink.lock().unwrap().push((**batch).clone())
    });
    let mut w = store.write();
    w.delete_range(&DeleteRangeRequest::new("b", "")).unwrap();
    w.put(&PutRequest::new("b", "v2")).unwrap();
    w.put(&PutRequest::new("b", "v3")).unwrap();
    w.commit().unwrap();
    let live = seen.lock().unwrap()[0].events.clone();
    let (caught_up, _) = store.events_since(3, usize::MAX, true).unwrap();
    assert_eq!(live.len(), 3);
    assert_eq!(
        live[0].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some(b"v1".to_vec())
    );
    assert_eq!(live[1].prev_kv, None);
    assert_eq!(live[2].prev_kv, None);
    assert_eq!(live, caught_up);
}
