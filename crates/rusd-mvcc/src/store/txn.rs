//! Txn: validation (etcd's `checkTxnRequest` and `checkIntervals`), compares, and execution.

use super::op_counts::TxnCalls;
use std::collections::BTreeSet;

use super::{range, MvccStore, ReadView};
use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::kv::KeyValue;
use crate::request::{
    Compare, CompareResult, CompareTarget, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use crate::revision::LeaseId;
use crate::store::write_txn::{check_put, WriteTxn};

/// Checks a txn as etcd does before proposing it: operation counts (nested txns share the
/// budget), empty keys, put flags, and the duplicate-key rule for each branch.
///
/// # Errors
/// [`Error::TooManyTxnOps`], [`Error::EmptyKey`], [`Error::ValueProvided`],
/// [`Error::LeaseProvided`], [`Error::DuplicateKey`].
pub fn validate_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn(req, max_ops)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyTxnOps { ops, max: max_ops });
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(Error::EmptyKey),
            RequestOp::Range(_) => {}
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(Error::EmptyKey),
            RequestOp::DeleteRange(_) => {}
            RequestOp::Txn(t) => check_txn(t, max_ops - ops)?,
        }
    }
    Ok(())
}

/// A delete's key interval as etcd's interval tree sees it: `[key, range_end)`, or a point.
struct Interval<'a> {
    start: &'a [u8],
    end: Option<&'a [u8]>,
}

impl Interval<'_> {
    fn contains(&self, key: &[u8]) -> bool {
        match self.end {
            None => key == self.start,
            // Compared as plain bytes, so a "\0" (from-key) end is an empty interval, as in etcd.
            Some(end) => key >= self.start && key < end,
        }
    }
}

/// Puts of a branch (with nested txns) must not repeat a key or fall inside a delete of the
/// same or an enclosing level; a nested txn's then and else may put the same key.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<&[u8]>, Vec<Interval<'_>>)> {
    let mut dels: Vec<Interval<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(Interval {
                start: &d.key,
                end: (!d.range_end.is_empty()).then_some(&d.range_end[..]),
            }),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        for k in &puts_else {
            if puts.contains(k) && !puts_then.contains(k) || dels.iter().any(|d| d.contains(k)) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        let k = &p.key[..];
        if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}

/// Whether a txn (with its nested txns) only reads.
pub(crate) fn is_read_only(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}

/// Which branch each (nested) txn takes, decided up front against one read view.
struct Path {
    succeeded: bool,
    /// One entry per nested txn of the chosen branch, in order.
    nested: Vec<Path>,
}

/// `compares` counts the compares evaluated (each reads its key, a range in etcd's metrics).
fn choose_path(view: &ReadView<'_>, req: &TxnRequest, compares: &mut u64) -> Result<Path> {
    let mut succeeded = true;
    for c in &req.compare {
        *compares += 1;
        if !compare(view, c)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = Vec::new();
    for op in ops {
        if let RequestOp::Txn(t) = op {
            nested.push(choose_path(view, t, compares)?);
        }
    }
    Ok(Path { succeeded, nested })
}

fn compare(view: &ReadView<'_>, c: &Compare) -> Result<bool> {
    let range = KeyRange::new(&c.key, &c.range_end);
    let candidates = range::collect(view.inner, range, view.rev, false, usize::MAX);
    if candidates.is_empty() {
        if matches!(c.target, CompareTarget::Value(_)) {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    for cand in candidates {
        let needs_record = matches!(c.target, CompareTarget::Value(_) | CompareTarget::Lease(_));
        let kv = if needs_record {
            view.kv_at(cand.at.modified, true)?
        } else {
            KeyValue {
                create_revision: cand.at.created.main,
                mod_revision: cand.at.modified.main,
                version: cand.at.version,
                ..KeyValue::default()
            }
        };
        if !compare_kv(c, &kv) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ordering = match &c.target {
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match c.result {
        CompareResult::Equal => ordering.is_eq(),
        CompareResult::NotEqual => ordering.is_ne(),
        CompareResult::Greater => ordering.is_gt(),
        CompareResult::Less => ordering.is_lt(),
    }
}

/// The checks etcd makes on the chosen branches before running anything, so that a txn
/// either runs whole or not at all. As etcd's `applierV3backend.Txn`: first every put of the
/// chosen path (`checkPut`, write txns only), then every range (`checkRange`), so a missing
/// lease is reported before a future range revision that comes earlier in the txn.
fn check_path(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &Path,
    compact: i64,
    lease_exists: &dyn Fn(LeaseId) -> bool,
) -> Result<()> {
    check_path_pass(view, req, path, compact, lease_exists, true)?;
    check_path_pass(view, req, path, compact, lease_exists, false)
}

/// One pass of [`check_path`]: puts (`puts`) or ranges (`!puts`).
fn check_path_pass(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &Path,
    compact: i64,
    lease_exists: &dyn Fn(LeaseId) -> bool,
    puts: bool,
) -> Result<()> {
    let ops = if path.succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = path.nested.iter();
    for op in ops {
        match op {
            RequestOp::Range(r) if !puts => {
                // As etcd: only 0 means "latest" here; a negative revision counts as compacted.
                if r.revision != 0 {
                    if r.revision > view.rev {
                        return Err(Error::FutureRevision {
                            requested: r.revision,
                            current: view.rev,
                        });
                    }
                    if r.revision < compact {
                        return Err(Error::Compacted {
                            requested: r.revision,
                            compacted: compact,
                        });
                    }
                }
            }
            RequestOp::Put(p) if puts => {
                // As etcd's checkPut: the previous key first, then the lease.
                if (p.ignore_value || p.ignore_lease)
                    && view.inner.index.read().get(&p.key, view.rev).is_none()
                {
                    return Err(Error::KeyNotFound);
                }
                if p.lease != 0 && !lease_exists(LeaseId(p.lease)) {
                    return Err(Error::LeaseNotFound(LeaseId(p.lease)));
                }
            }
            RequestOp::Range(_) | RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
            RequestOp::Txn(t) => {
                if let Some(p) = nested.next() {
                    check_path_pass(view, t, p, compact, lease_exists, puts)?;
                }
            }
        }
    }
    Ok(())
}

/// `ranges` counts the ranges run (for the operation totals).
fn run_read_only(
    view: &ReadView<'_>,
    req: &TxnRequest,
    path: &Path,
    ranges: &mut u64,
) -> Result<TxnResponse> {
    let ops = if path.succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(match op {
            RequestOp::Range(r) => {
                *ranges += 1;
                let resp = if r.revision > 0 && r.revision != view.rev {
                    range::range_view(&view.inner.view(r.revision)?, r)?
                } else {
                    range::range_view(view, r)?
                };
                ResponseOp::Range(resp)
            }
            RequestOp::Txn(t) => match nested.next() {
                Some(p) => ResponseOp::Txn(run_read_only(view, t, p, ranges)?),
                None => return Err(Error::InvalidArgument("txn path mismatch".into())),
            },
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => {
                return Err(Error::InvalidArgument("write in a read-only txn".into()))
            }
        });
    }
    Ok(TxnResponse {
        revision: view.current,
        succeeded: path.succeeded,
        responses,
    })
}

fn run_write(w: &mut WriteTxn<'_>, req: &TxnRequest, path: &Path) -> Result<TxnResponse> {
    let ops = if path.succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        responses.push(match op {
            RequestOp::Range(r) => ResponseOp::Range(w.range(r)?),
            RequestOp::Put(p) => ResponseOp::Put(w.put(p)?),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(w.delete_range(d)?),
            RequestOp::Txn(t) => match nested.next() {
                Some(p) => ResponseOp::Txn(run_write(w, t, p)?),
                None => return Err(Error::InvalidArgument("txn path mismatch".into())),
            },
        });
    }
    Ok(TxnResponse {
        revision: w.revision(),
        succeeded: path.succeeded,
        responses,
    })
}

impl MvccStore {
    /// Runs a txn as etcd's `Txn`: compares against one view, then the chosen branch, all in
    /// one revision (none if nothing changed). A read-only txn takes no write lock.
    ///
    /// # Errors
    /// Validation errors (see [`validate_txn`]), then [`Error::LeaseNotFound`],
    /// [`Error::KeyNotFound`], [`Error::FutureRevision`] or [`Error::Compacted`] from the
    /// pre-checks; nothing is applied when any of them fails.
    pub fn txn(&self, req: &TxnRequest) -> Result<TxnResponse> {
        validate_txn(req, self.inner.config.max_txn_ops)?;
        if is_read_only(req) {
            let view = self.inner.view(0)?;
            // Compares and ranges are one read transaction in etcd's totals.
            let mut calls = TxnCalls::default();
            let result = (|| {
                let path = choose_path(&view, req, &mut calls.ranges)?;
                let compact = self.inner.revs.lock().compact;
                check_path(&view, req, &path, compact, &|_| true)?;
                run_read_only(&view, req, &path, &mut calls.ranges)
            })();
            self.inner.ops.end(calls);
            return result;
        }
        let mut w = self.write();
        let resp = w.txn(req)?;
        w.commit()?;
        Ok(resp)
    }
}

impl WriteTxn<'_> {
    /// Runs a txn inside this write transaction (see [`MvccStore::txn`]). On error nothing of
    /// the txn is applied, but changes made earlier in this write transaction stay.
    ///
    /// # Errors
    /// As [`MvccStore::txn`].
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        validate_txn(req, self.inner().config.max_txn_ops)?;
        let inner = self.inner();
        let view = inner.view(0)?;
        // The compares are a read transaction of their own in etcd's totals, before the
        // writes (counted with this write transaction).
        let mut compares = 0;
        let path = choose_path(&view, req, &mut compares);
        inner.ops.end(TxnCalls {
            ranges: compares,
            ..TxnCalls::default()
        });
        let path = path?;
        let compact = self.compact_revision();
        check_path(&view, req, &path, compact, &|id| self.lease_exists(id))?;
        drop(view);
        run_write(self, req, &path)
    }
}
