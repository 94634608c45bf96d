//! [`WriteTxn`]: a group of changes that share one new revision and become visible together.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::range::{self, Candidate};
use super::{meta, ReadView, StoreInner, WriterState};
use crate::backend::{Table, WriteBatch};
use crate::codec;
use crate::error::{Error, Result};
use crate::key_index::KeyAt;
use crate::key_range::KeyRange;
use crate::kv::{Event, EventKind, KeyValue};
use crate::request::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use crate::revision::{LeaseId, Revision};
use crate::store::watch::EventBatch;

/// A change to the in-memory lease mirror, applied on publish.
pub(crate) enum LeaseOp {
    Attach(Vec<u8>, LeaseId),
    Grant(LeaseId, i64),
    Revoke(LeaseId),
}

/// This txn's newest write of a key.
///
/// Performance: it keeps the encoded record the backend gets (shared, not copied) rather than
/// a `KeyValue`, which cost a copy of the key and value and a 1.2 KB map node per put; the few
/// reads of a txn's own writes decode it.
#[derive(Clone)]
struct Own {
    /// As a `KeyAt` from the index, except that `modified.sub` is 0.
    at: KeyAt,
    record: Arc<[u8]>,
}

/// An open write transaction (etcd's `TxnWrite`).
///
/// Every put and delete in it gets the same main revision (`current + 1`) and consecutive
/// sub-revisions; reads in it see its own writes. Nothing is visible to others until
/// [`WriteTxn::commit`]; dropping it without committing discards everything. Only one write
/// transaction is open at a time.
pub struct WriteTxn<'a> {
    inner: &'a StoreInner,
    writer: MutexGuard<'a, WriterState>,
    /// Reads the state before this txn; pins it against compaction.
    base_view: ReadView<'a>,
    base: i64,
    sub: i64,
    /// Each key's state after this txn's writes so far (`None`: deleted).
    changes: BTreeMap<Vec<u8>, Option<Own>>,
    batch: WriteBatch,
    index_ops: Vec<(Vec<u8>, Revision, bool)>,
    /// The put records of this txn, offered to the record cache once committed.
    records: Vec<(Revision, Arc<[u8]>)>,
    lease_ops: Vec<LeaseOp>,
    /// Lease of each key this txn re-attached (`changes` alone cannot tell for deletes).
    key_lease: BTreeMap<Vec<u8>, LeaseId>,
    events: Option<Vec<Event>>,
    want_prev: bool,
    applied_index: Option<u64>,
    compact: Option<i64>,
    /// Calls made, added to the store's operation totals at commit.
    calls: std::cell::Cell<super::op_counts::TxnCalls>,
}

impl<'a> WriteTxn<'a> {
    pub(crate) fn begin(inner: &'a StoreInner) -> Self {
        let writer = inner.writer.lock();
        let base_view = match inner.view(0) {
            Ok(view) => view,
            // Revision 0 reads the current revision, which is never compacted or in the future.
            Err(e) => panic!("read view at the current revision failed: {e}"),
        };
        let base = base_view.rev;
        let (observed, want_prev) = inner.observers.interest();
        Self {
            inner,
            writer,
            base_view,
            base,
            sub: 0,
            changes: BTreeMap::new(),
            batch: WriteBatch::new(),
            index_ops: Vec::new(),
            records: Vec::new(),
            lease_ops: Vec::new(),
            key_lease: BTreeMap::new(),
            events: observed.then(Vec::new),
            want_prev,
            applied_index: None,
            compact: None,
            calls: std::cell::Cell::default(),
        }
    }

    /// The revision before this txn.
    pub fn base_revision(&self) -> i64 {
        self.base
    }

    /// The revision reads in this txn see: `base + 1` once it changed something.
    pub fn revision(&self) -> i64 {
        if self.sub > 0 {
            self.base + 1
        } else {
            self.base
        }
    }

    /// Whether this txn changed any key.
    pub fn has_changes(&self) -> bool {
        self.sub > 0
    }

    /// Records the index of the log entry this txn applies; it is stored atomically with the
    /// txn's changes (and alone if the txn changes nothing).
    pub fn set_applied_index(&mut self, index: u64) {
        self.applied_index = Some(index);
    }

    pub(crate) fn inner(&self) -> &'a StoreInner {
        self.inner
    }

    pub(crate) fn compact_revision(&self) -> i64 {
        self.inner.revs.lock().compact
    }

    pub(crate) fn schedule_compaction(&mut self, rev: i64) {
        self.batch.put(
            Table::Meta,
            meta::SCHEDULED_COMPACT,
            super::be_i64(rev).to_vec(),
        );
        self.compact = Some(rev);
    }

    /// Writes `value` under `key` in a table the store does not interpret (auth, alarm,
    /// members), atomically with this txn.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for the tables the store owns (kv, meta, lease).
    pub fn put_raw(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        check_raw(table)?;
        self.batch.put(table, key.to_vec(), value.to_vec());
        Ok(())
    }

    /// Deletes `key` from a table the store does not interpret, atomically with this txn.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for the tables the store owns (kv, meta, lease).
    pub fn delete_raw(&mut self, table: Table, key: &[u8]) -> Result<()> {
        check_raw(table)?;
        self.batch.delete(table, key.to_vec());
        Ok(())
    }

    pub(crate) fn batch_mut(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    pub(crate) fn push_lease_op(&mut self, op: LeaseOp) {
        self.lease_ops.push(op);
    }

    fn next_revision(&mut self) -> Revision {
        let rev = Revision::new(self.base + 1, self.sub);
        self.sub += 1;
        rev
    }

    /// The key's newest state: from this txn's writes, else from the index.
    fn latest_at(&self, key: &[u8]) -> Option<(KeyAt, Option<&[u8]>)> {
        match self.changes.get(key) {
            Some(Some(own)) => Some((own.at, Some(&*own.record))),
            Some(None) => None,
            None => self
                .inner
                .index
                .read()
                .get(key, self.base)
                .map(|at| (at, None)),
        }
    }

    /// The key's full state: decoded from this txn's own record, else read at `at`.
    fn full_kv(&self, at: KeyAt, own: Option<&[u8]>) -> Result<KeyValue> {
        match own {
            Some(record) => super::decode_put(record, at.modified.main, true),
            None => self.base_view.kv_at(at.modified, true),
        }
    }

    /// The key as it was before this txn.
    fn base_kv(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let at = self.inner.index.read().get(key, self.base);
        at.map(|at| self.base_view.kv_at(at.modified, true))
            .transpose()
    }

    /// The lease a key holds now (this txn's writes included).
    fn lease_of(&self, key: &[u8]) -> LeaseId {
        if let Some(lease) = self.key_lease.get(key) {
            return *lease;
        }
        self.inner
            .leases
            .read()
            .key_lease
            .get(key)
            .copied()
            .unwrap_or(LeaseId::NONE)
    }

    /// Whether a lease exists (granted before or in this txn, and not revoked in it).
    pub(crate) fn lease_exists(&self, lease: LeaseId) -> bool {
        let mut exists = self
            .inner
            .leases
            .read()
            .by_id
            .get(&lease)
            .is_some_and(|l| l.ttl != 0);
        for op in &self.lease_ops {
            match op {
                LeaseOp::Grant(id, _) if *id == lease => exists = true,
                LeaseOp::Revoke(id) if *id == lease => exists = false,
                _ => {}
            }
        }
        exists
    }

    /// Writes a key, as etcd's `Put`.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::ValueProvided`], [`Error::LeaseProvided`],
    /// [`Error::KeyNotFound`] (`ignore_*` on a missing key), [`Error::LeaseNotFound`].
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        self.calls.get_mut().puts += 1;
        check_put(req)?;
        // As etcd's Put: the lease is looked up before the previous key is read.
        if req.lease != 0 && !self.lease_exists(LeaseId(req.lease)) {
            return Err(Error::LeaseNotFound(LeaseId(req.lease)));
        }
        let latest = self.latest_at(&req.key);
        let written_in_txn = latest.is_some_and(|(_, own)| own.is_some());
        if (req.ignore_value || req.ignore_lease) && latest.is_none() {
            return Err(Error::KeyNotFound);
        }
        let need_prev =
            req.prev_kv || req.ignore_value || (self.want_prev && self.events.is_some());
        let prev_kv = match (need_prev, latest) {
            (true, Some((at, own))) => Some(self.full_kv(at, own)?),
            _ => None,
        };
        let old_lease = self.lease_of(&req.key);
        let lease = if req.ignore_lease {
            old_lease
        } else {
            LeaseId(req.lease)
        };
        if lease.is_some() && !self.lease_exists(lease) {
            return Err(Error::LeaseNotFound(lease));
        }
        let value = match (&prev_kv, req.ignore_value) {
            (Some(prev), true) => &prev.value,
            _ => &req.value,
        };
        let latest_at = latest.map(|(at, _)| at);
        let rev = self.next_revision();
        let create_revision = latest_at.map_or(rev.main, |at| at.created.main);
        let version = latest_at.map_or(1, |at| at.version + 1);
        let record = codec::encode_put_shared(create_revision, version, lease.0, &req.key, value);
        self.batch
            .put(Table::Kv, rev.to_bytes().to_vec(), record.clone());
        self.records.push((rev, record.clone()));
        self.index_ops.push((req.key.clone(), rev, false));
        if old_lease != lease {
            self.key_lease.insert(req.key.clone(), lease);
            self.lease_ops.push(LeaseOp::Attach(req.key.clone(), lease));
        }
        // A watcher's prev_kv is the key at mod_revision - 1, i.e. before this txn; none for a
        // creation, which is any put whose generation began in this txn (etcd's IsCreateEvent:
        // create_revision == mod_revision), even one after an earlier put of this txn.
        let creates = create_revision == rev.main;
        let event_prev = if !self.want_prev || self.events.is_none() || creates {
            None
        } else if written_in_txn {
            self.base_kv(&req.key)?
        } else {
            prev_kv.clone()
        };
        if let Some(events) = self.events.as_mut() {
            events.push(Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: req.key.clone(),
                    create_revision,
                    mod_revision: rev.main,
                    version,
                    value: value.clone(),
                    lease: lease.0,
                },
                prev_kv: event_prev,
            });
        }
        let at = KeyAt {
            modified: Revision::new(rev.main, 0),
            created: Revision::new(create_revision, 0),
            version,
        };
        self.changes
            .insert(req.key.clone(), Some(Own { at, record }));
        Ok(PutResponse {
            revision: rev.main,
            prev_kv: if req.prev_kv { prev_kv } else { None },
        })
    }

    /// Deletes every key of a range in this txn's revision, as etcd's `DeleteRange`.
    ///
    /// # Errors
    /// [`Error::EmptyKey`] or a backend error.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.calls.get_mut().deletes += 1;
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        let victims = self.live_in(range);
        let need_prev = req.prev_kv || (self.want_prev && self.events.is_some());
        let mut prev_kvs = Vec::new();
        let deleted = victims.len() as i64;
        for c in victims {
            let prev = if need_prev {
                Some(self.full_kv(c.at, c.own.as_deref())?)
            } else {
                None
            };
            let rev = self.next_revision();
            self.batch.put(
                Table::Kv,
                rev.to_bytes().to_vec(),
                Arc::<[u8]>::from(codec::encode_tombstone(&c.key)),
            );
            self.index_ops.push((c.key.to_vec(), rev, true));
            if self.lease_of(&c.key).is_some() {
                self.key_lease.insert(c.key.to_vec(), LeaseId::NONE);
                self.lease_ops
                    .push(LeaseOp::Attach(c.key.to_vec(), LeaseId::NONE));
            }
            let event_prev = if !self.want_prev || self.events.is_none() {
                None
            } else if c.own.is_some() {
                // Written earlier in this txn: the watcher's prev_kv is the key before the txn.
                self.base_kv(&c.key)?
            } else {
                prev.clone()
            };
            if let Some(events) = self.events.as_mut() {
                events.push(Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key: c.key.to_vec(),
                        mod_revision: rev.main,
                        ..KeyValue::default()
                    },
                    prev_kv: event_prev,
                });
            }
            if req.prev_kv {
                if let Some(prev) = prev {
                    prev_kvs.push(prev);
                }
            }
            self.changes.insert(c.key.into_vec(), None);
        }
        Ok(DeleteRangeResponse {
            revision: self.revision(),
            deleted,
            prev_kvs,
        })
    }

    /// Reads as etcd's `Range` inside a txn: with `revision <= 0` it sees this txn's writes.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::FutureRevision`], [`Error::Compacted`], or a backend error.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let mut calls = self.calls.get();
        calls.ranges += 1;
        self.calls.set(calls);
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        // An inverted range is empty (and BTreeMap::range would panic on its bounds).
        let touched = !range.is_empty()
            && self
                .changes
                .range::<[u8], _>(range.bounds())
                .next()
                .is_some();
        if req.revision > 0 || !touched {
            let mut resp = if req.revision > 0 && req.revision != self.base {
                let view = self.inner.view(req.revision)?;
                range::range_view(&view, req)?
            } else {
                let mut at_base = req.clone();
                at_base.revision = self.base;
                range::range_view(&self.base_view, &at_base)?
            };
            resp.revision = self.revision();
            return Ok(resp);
        }
        let mut candidates = self.live_in(range);
        let count = candidates.len() as i64;
        let mut resp = RangeResponse {
            revision: self.revision(),
            count,
            ..RangeResponse::default()
        };
        if req.count_only {
            return Ok(resp);
        }
        range::cut_like_etcd(req, &mut candidates);
        let (kvs, more) = range::finish(req, candidates, &self.base_view)?;
        resp.kvs = kvs;
        resp.more = more;
        Ok(resp)
    }

    /// Keys of `range` live now (this txn's writes included), ascending.
    fn live_in(&self, range: KeyRange<'_>) -> Vec<Candidate> {
        if range.is_empty() {
            return Vec::new();
        }
        let base = range::collect(self.inner, range, self.base, false, usize::MAX);
        let mut own = self.changes.range::<[u8], _>(range.bounds()).peekable();
        if own.peek().is_none() {
            return base;
        }
        let mut out = Vec::with_capacity(base.len());
        let mut base = base.into_iter().peekable();
        loop {
            let take_own = match (base.peek(), own.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(b), Some((k, _))) => {
                    if *b.key == ***k {
                        base.next(); // superseded by this txn's write
                        true
                    } else {
                        k.as_slice() < &*b.key
                    }
                }
            };
            if take_own {
                if let Some((key, Some(own))) = own.next() {
                    out.push(Candidate {
                        key: key.as_slice().into(),
                        at: own.at,
                        own: Some(own.record.clone()),
                    });
                }
            } else if let Some(b) = base.next() {
                out.push(b);
            }
        }
        out
    }

    /// Publishes the txn: records into the backend, then the index, then the revision, then
    /// events. Returns the txn's revision (the base revision if nothing changed).
    ///
    /// # Errors
    /// Fails if the backend refuses the batch (it is poisoned or closed); nothing is published.
    pub fn commit(mut self) -> Result<i64> {
        let rev = self.revision();
        if let Some(index) = self.applied_index {
            self.batch.put(
                Table::Meta,
                meta::CONSISTENT_INDEX,
                index.to_be_bytes().to_vec(),
            );
        }
        let batch = std::mem::take(&mut self.batch);
        super::apply_batch(self.inner, batch)?;
        // Committed, so these revisions are final; no reader can ask for them before the
        // index publishes them below (see `record_cache`).
        for (rev, record) in self.records.drain(..) {
            self.inner.records.offer(rev, record);
        }
        self.inner.ops.end(self.calls.get());
        if let Some(index) = self.applied_index {
            self.writer.applied_index = index;
        }
        if !self.lease_ops.is_empty() {
            let mut leases = self.inner.leases.write();
            for op in self.lease_ops.drain(..) {
                match op {
                    LeaseOp::Attach(key, lease) => leases.attach(&key, lease),
                    LeaseOp::Grant(id, ttl) => {
                        leases.by_id.entry(id).or_default().ttl = ttl;
                    }
                    LeaseOp::Revoke(id) => {
                        if let Some(state) = leases.by_id.remove(&id) {
                            for key in state.keys {
                                leases.key_lease.remove(&key);
                            }
                        }
                    }
                }
            }
        }
        if !self.index_ops.is_empty() || self.compact.is_some() {
            let mut index = self.inner.index.write();
            for (key, r, tombstone) in self.index_ops.drain(..) {
                if tombstone {
                    if let Err(e) = index.tombstone(&key, r) {
                        panic!("tombstone of a live key failed at {r}: {e}");
                    }
                } else {
                    index.put(&key, r);
                }
            }
            let mut revs = self.inner.revs.lock();
            revs.current = rev;
            if let Some(c) = self.compact {
                revs.compact = c;
            }
        }
        if let Some(events) = self.events.take() {
            if !events.is_empty() {
                self.inner.observers.publish(&Arc::new(EventBatch {
                    revision: rev,
                    events,
                }));
            }
        }
        if let Some(c) = self.compact {
            self.inner.compaction.schedule(c);
        }
        Ok(rev)
    }
}

fn check_raw(table: Table) -> Result<()> {
    if matches!(table, Table::Kv | Table::Meta | Table::Lease) {
        return Err(Error::InvalidArgument(format!(
            "table {} is owned by the store",
            table.name()
        )));
    }
    Ok(())
}

/// The checks etcd makes on a put before it reaches the store.
pub(crate) fn check_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{PutRequest, RangeRequest};
    use crate::store::{MvccStore, StoreConfig};

    fn cached(store: &MvccStore, rev: Revision) -> Option<Vec<u8>> {
        store.inner.records.get_with(rev, <[u8]>::to_vec)
    }

    /// Committed puts reach the record cache; an aborted txn's never do, so the revision it
    /// used, which the next txn reuses, is cached with the committed record only.
    #[test]
    fn committed_records_are_cached_and_aborted_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        let rev = store.put(&PutRequest::new("a", "1")).unwrap().revision;
        let record = cached(&store, Revision::new(rev, 0)).expect("a committed put is cached");
        assert_eq!(codec::decode_key(&record), Some((&b"a"[..], false)));

        let mut w = store.write();
        w.put(&PutRequest::new("b", "aborted")).unwrap();
        drop(w);
        let next = Revision::new(rev + 1, 0);
        assert_eq!(cached(&store, next), None);

        let mut w = store.write();
        w.put(&PutRequest::new("c", "committed")).unwrap();
        assert_eq!(w.commit().unwrap(), next.main);
        let record = cached(&store, next).expect("the reused revision holds the commit");
        assert_eq!(codec::decode_key(&record), Some((&b"c"[..], false)));
        let kvs = store.range(&RangeRequest::new("c", "")).unwrap().kvs;
        assert_eq!(kvs[0].value, b"committed");
        store.close().unwrap();
    }
}
