//! Operation counters for monitoring: etcd's `etcd_mvcc_{range,put,delete,txn}_total`.
//!
//! They count as etcd's `metricsTxnWrite` does: every range, put and delete-range call
//! (a compare reads its key through a range, so it counts as one), and one txn for each read
//! or write transaction that made more than one such call. A `Txn` request is two of them,
//! as in etcd: its compares (with its ranges when it is read-only), then its writes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Totals since the store was opened (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Range calls, compares included.
    pub ranges: u64,
    /// Put calls.
    pub puts: u64,
    /// Delete-range calls (a lease revoke makes one per attached key).
    pub deletes: u64,
    /// Transactions of more than one call.
    pub txns: u64,
}

/// Calls made by one read or write transaction, added to the totals when it ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxnCalls {
    pub ranges: u64,
    pub puts: u64,
    pub deletes: u64,
}

/// The store's running totals.
#[derive(Debug, Default)]
pub(crate) struct OpCounters {
    ranges: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    txns: AtomicU64,
}

impl OpCounters {
    /// Adds the calls of one ended transaction.
    pub(crate) fn end(&self, calls: TxnCalls) {
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.ranges, calls.ranges);
        add(&self.puts, calls.puts);
        add(&self.deletes, calls.deletes);
        add(
            &self.txns,
            u64::from(calls.ranges + calls.puts + calls.deletes > 1),
        );
    }

    /// The totals so far.
    pub(crate) fn snapshot(&self) -> OpCounts {
        OpCounts {
            ranges: self.ranges.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            txns: self.txns.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::OpCounts;
    use crate::{
        Compare, CompareResult, CompareTarget, DeleteRangeRequest, LeaseId, MvccStore, PutRequest,
        RangeRequest, RequestOp, StoreConfig, TxnRequest,
    };

    fn counts(ranges: u64, puts: u64, deletes: u64, txns: u64) -> OpCounts {
        OpCounts {
            ranges,
            puts,
            deletes,
            txns,
        }
    }

    /// The sequence of etcd's e2e `TestV3Metrics*`, then txns: the totals etcd 3.4 reports.
    #[test]
    fn totals_follow_etcd() {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        store.put(&PutRequest::new("k", "v")).unwrap();
        for i in ["1", "2", "3"] {
            store.put(&PutRequest::new(i, "v")).unwrap();
            store
                .delete_range(&DeleteRangeRequest::new(i, Vec::new()))
                .unwrap();
        }
        assert_eq!(store.op_counts(), counts(0, 4, 3, 0));
        assert_eq!(store.live_key_count(), 1);
        assert_eq!(store.key_count(), 4, "deleted keys stay in the index");

        store.range(&RangeRequest::new("k", Vec::new())).unwrap();
        // An empty key is refused before any read (etcd's API layer refuses it).
        assert!(store.range(&RangeRequest::new("", Vec::new())).is_err());
        assert_eq!(store.op_counts(), counts(1, 4, 3, 0));

        let cmp = |key: &str| Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(1),
            key: key.into(),
            range_end: Vec::new(),
        };
        // Read-only: 2 compares + 1 range in one read txn.
        store
            .txn(&TxnRequest {
                compare: vec![cmp("k"), cmp("k")],
                success: vec![RequestOp::Range(RangeRequest::new("k", Vec::new()))],
                failure: vec![],
            })
            .unwrap();
        assert_eq!(store.op_counts(), counts(4, 4, 3, 1));
        // Write: 1 compare (a read txn of one call), then put + delete (a write txn of two).
        store
            .txn(&TxnRequest {
                compare: vec![cmp("k")],
                success: vec![
                    RequestOp::Put(PutRequest::new("a", "v")),
                    RequestOp::DeleteRange(DeleteRangeRequest::new("k", Vec::new())),
                ],
                failure: vec![],
            })
            .unwrap();
        assert_eq!(store.op_counts(), counts(5, 5, 4, 2));
        assert_eq!(store.live_key_count(), 1);

        // A lease revoke deletes each attached key with its own call.
        store.lease_grant(LeaseId(7), 60).unwrap();
        for key in ["x", "y"] {
            let mut put = PutRequest::new(key, "v");
            put.lease = 7;
            store.put(&put).unwrap();
        }
        assert_eq!(store.live_key_count(), 3);
        store.lease_revoke(LeaseId(7)).unwrap();
        assert_eq!(store.op_counts(), counts(5, 7, 6, 3));
        assert_eq!(store.live_key_count(), 1);

        // A read transaction counts its ranges when it ends.
        let read = store.read(0).unwrap();
        read.range(&RangeRequest::new("a", Vec::new())).unwrap();
        read.range(&RangeRequest::new("b", Vec::new())).unwrap();
        drop(read);
        assert_eq!(store.op_counts(), counts(7, 7, 6, 4));
    }
}
