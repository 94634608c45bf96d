//! Range reads: the index picks the keys, the backend supplies the values.

use std::collections::HashSet;
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use super::{MvccStore, ReadView, StoreInner};
use crate::backend::Table;
use crate::codec;
use crate::error::{Error, Result};
use crate::key_index::KeyAt;
use crate::key_range::{KeyRange, RangeEnd};
use crate::kv::KeyValue;
use crate::request::{RangeRequest, RangeResponse, SortOrder, SortTarget};
use crate::revision::Revision;

/// Index entries collected per index read lock, so a huge range never holds writers up long.
const COLLECT_CHUNK: usize = 4096;

/// Room reserved for a multi-key range's candidates before the first is found.
const INITIAL_CANDIDATES: usize = 128;

/// A key chosen by a range, before its value is read.
pub(crate) struct Candidate {
    /// Boxed, not a `Vec`: a copied key comes back in two registers, where a `Vec` is
    /// returned through memory and read back in halves that straddle its stores (a
    /// store-forwarding stall per key of a range).
    pub key: Box<[u8]>,
    pub at: KeyAt,
    /// The key's state when it was written by the running txn (not yet in the backend): its
    /// encoded record, whose revision is `at.modified.main`, decoded when read.
    pub own: Option<Arc<[u8]>>,
}

impl MvccStore {
    /// Reads keys as etcd's `Range` does: see [`RangeRequest`] for the fields.
    ///
    /// `count` is the number of keys in the range at the read revision, whatever `limit` or
    /// the filters say, and costs O(log n) at the current revision.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::FutureRevision`], [`Error::Compacted`], or a backend error.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.inner.ops.end(super::op_counts::TxnCalls {
            ranges: 1,
            ..Default::default()
        });
        let view = self.inner.view(req.revision)?;
        range_view(&view, req)
    }
}

/// Whether the request needs every match before it can cut at `limit`.
///
/// As etcd's `rangeLimit` (every release): only an explicit sort order other than ascending
/// by key, or a revision filter, fetches everything. A sort target with order `NONE` sorts
/// just the first `limit + 1` keys (in key order) and cuts those, a quirk clients can see.
fn needs_all(req: &RangeRequest) -> bool {
    let default_ordering = req.sort_order == SortOrder::None
        || (req.sort_target == SortTarget::Key && req.sort_order == SortOrder::Ascend);
    has_filters(req)
        || (!default_ordering && !matches!(effective_sort(req), None | Some((SortTarget::Key, _))))
}

/// Cuts `candidates` (every key of the range, ascending) to what etcd would have fetched:
/// `limit + 1` keys when [`needs_all`] says so. For reads inside a write txn, which collect
/// the whole range to merge the txn's own writes.
pub(crate) fn cut_like_etcd(req: &RangeRequest, candidates: &mut Vec<Candidate>) {
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let reverse = matches!(effective_sort(req), Some((SortTarget::Key, true)));
    if limit > 0 && !reverse && !needs_all(req) {
        candidates.truncate(limit + 1);
    }
}

fn has_filters(req: &RangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

/// The sort to apply, `None` for plain ascending key order. A target other than the key with
/// no order sorts ascending, as etcd does.
fn effective_sort(req: &RangeRequest) -> Option<(SortTarget, bool)> {
    match (req.sort_order, req.sort_target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => None,
        (SortOrder::None, target) | (SortOrder::Ascend, target) => Some((target, false)),
        (SortOrder::Descend, target) => Some((target, true)),
    }
}

pub(crate) fn range_view(view: &ReadView<'_>, req: &RangeRequest) -> Result<RangeResponse> {
    let range = KeyRange::new(&req.key, &req.range_end);
    let mut resp = RangeResponse {
        revision: view.current,
        ..RangeResponse::default()
    };
    if range.is_empty() {
        return Ok(resp);
    }
    if req.count_only {
        resp.count = count_at(view.inner, range, view.rev)? as i64;
        return Ok(resp);
    }
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let reverse = matches!(effective_sort(req), Some((SortTarget::Key, true)));
    let want = if needs_all(req) || limit == 0 {
        usize::MAX
    } else {
        limit + 1
    };
    let candidates = collect(view.inner, range, view.rev, reverse, want);
    // Performance: fewer than `want` candidates means `collect` saw every key of the range live
    // at `rev` (filters are applied later, in `finish`), which is exactly the count. Only a cut
    // range needs `count_at`; this saves its index searches on every get and small range.
    resp.count = if candidates.len() < want {
        candidates.len() as i64
    } else {
        count_at(view.inner, range, view.rev)? as i64
    };
    let (kvs, more) = finish(req, candidates, view)?;
    resp.kvs = kvs;
    resp.more = more;
    Ok(resp)
}

/// Collects up to `want` keys of `range` live at `rev`, releasing the index lock every
/// [`COLLECT_CHUNK`] keys.
pub(crate) fn collect(
    inner: &StoreInner,
    range: KeyRange<'_>,
    rev: i64,
    reverse: bool,
    want: usize,
) -> Vec<Candidate> {
    // Performance: growing from empty copies the candidates as the vector doubles (about 3%
    // of a 100-key scan); a single key needs one slot, anything else starts with room for 128.
    let first_chunk = match range.end {
        RangeEnd::Single => 1,
        _ => want.min(INITIAL_CANDIDATES),
    };
    let mut out: Vec<Candidate> = Vec::with_capacity(first_chunk);
    let mut from: Option<Box<[u8]>> = None;
    loop {
        let before = out.len();
        let chunk_end = before.saturating_add(COLLECT_CHUNK).min(want);
        {
            let index = inner.index.read();
            let mut visit = |key: &[u8], at: KeyAt| {
                if from.as_deref() == Some(key) {
                    return ControlFlow::Continue(()); // the resume key was taken last round
                }
                out.push(Candidate {
                    key: key.into(),
                    at,
                    own: None,
                });
                if out.len() >= chunk_end {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            if reverse {
                index.range_rev(range, from.as_deref(), rev, &mut visit);
            } else {
                index.range(range, from.as_deref(), rev, &mut visit);
            }
        }
        if out.len() < chunk_end || out.len() >= want || out.len() == before {
            return out;
        }
        from = out.last().map(|c| c.key.clone());
    }
}

/// Filters, sorts and cuts candidates, then reads the values of those kept.
pub(crate) fn finish(
    req: &RangeRequest,
    mut candidates: Vec<Candidate>,
    view: &ReadView<'_>,
) -> Result<(Vec<KeyValue>, bool)> {
    if has_filters(req) {
        candidates.retain(|c| {
            let (m, cr) = (c.at.modified.main, c.at.created.main);
            !(req.max_mod_revision != 0 && m > req.max_mod_revision
                || req.min_mod_revision != 0 && m < req.min_mod_revision
                || req.max_create_revision != 0 && cr > req.max_create_revision
                || req.min_create_revision != 0 && cr < req.min_create_revision)
        });
    }
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let sort = effective_sort(req);
    if let Some((SortTarget::Value, descending)) = sort {
        // Values are needed to sort: read them all first.
        let mut kvs = candidates
            .iter()
            .map(|c| {
                // Sorting needs the values even with keys_only (they are blanked after).
                let mut kv = match &c.own {
                    Some(record) => super::decode_put(record, c.at.modified.main, true)?,
                    None => view.kv_at(c.at.modified, true)?,
                };
                kv.key = c.key.to_vec();
                Ok(kv)
            })
            .collect::<Result<Vec<_>>>()?;
        // Stable either way: ties keep key order, as etcd's (Go insertion) sort does for the
        // small results etcdctl users see; reversing after sorting would flip the ties.
        if descending {
            kvs.sort_by(|a, b| b.value.cmp(&a.value));
        } else {
            kvs.sort_by(|a, b| a.value.cmp(&b.value));
        }
        let more = limit > 0 && kvs.len() > limit;
        if more {
            kvs.truncate(limit);
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        return Ok((kvs, more));
    }
    if let Some((target, descending)) = sort {
        let field = |c: &Candidate| match target {
            SortTarget::Version => c.at.version,
            SortTarget::Create => c.at.created.main,
            SortTarget::Mod => c.at.modified.main,
            SortTarget::Key | SortTarget::Value => 0,
        };
        if target == SortTarget::Key {
            if descending && !candidates.is_sorted_by(|a, b| a.key >= b.key) {
                candidates.sort_by(|a, b| b.key.cmp(&a.key));
            }
        } else {
            // Stable: ties keep key order (see the value sort above).
            if descending {
                candidates.sort_by_key(|c| std::cmp::Reverse(field(c)));
            } else {
                candidates.sort_by_key(field);
            }
        }
    }
    let more = limit > 0 && candidates.len() > limit;
    if more {
        candidates.truncate(limit);
    }
    let kvs = view.kvs_at(candidates, !req.keys_only)?;
    Ok((kvs, more))
}

/// Number of keys of `range` live at `rev`, in time that does not grow with the range.
///
/// At the current revision the index's per-chunk live counts answer it. At an older revision,
/// the count is corrected by the keys changed since `rev` (read from the revision log), unless
/// walking the range is cheaper.
pub(crate) fn count_at(inner: &StoreInner, range: KeyRange<'_>, rev: i64) -> Result<usize> {
    let index = inner.index.read();
    // Publishing bumps `current` under the index write lock, so this is the index's revision.
    let latest = inner.revs.lock().current;
    if rev >= latest {
        return Ok(index.count_live_latest(range));
    }
    let changed_revisions = usize::try_from(latest - rev).unwrap_or(usize::MAX);
    if index.entries_in(range) <= changed_revisions.saturating_mul(2) {
        return Ok(index.count(range, rev));
    }
    let mut changed: HashSet<Vec<u8>> = HashSet::new();
    let from = Revision::new(rev + 1, 0).to_bytes();
    let to = Revision::new(latest + 1, 0).to_bytes();
    let mut failure = None;
    inner.backend.read().scan(
        Table::Kv,
        (Bound::Included(&from[..]), Bound::Excluded(&to[..])),
        false,
        |_, v| {
            match codec::decode_key(v) {
                Some((key, _)) if range.contains(key) => {
                    if !changed.contains(key) {
                        changed.insert(key.to_vec());
                    }
                }
                Some(_) => {}
                None => {
                    failure = Some(Error::Corrupted("undecodable kv record".into()));
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    let mut count = index.count_live_latest(range) as i64;
    for key in &changed {
        let then = index.get(key, rev).is_some();
        let now = index.latest(key).is_some();
        count += i64::from(then) - i64::from(now);
    }
    Ok(usize::try_from(count).unwrap_or(0))
}
