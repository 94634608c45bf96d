//! rusd's MVCC storage engine: etcd's revisioned key-value model on a durable embedded store.
//!
//! Every change gets a store revision; every key keeps its history in *generations* until a
//! compaction drops it; reads can be served at any retained revision; transactions are
//! all-or-nothing in one revision; watchers get every change in revision order. Readers never
//! wait for writers: a read pins its revision and reads the index and a backend snapshot.
//! Memory stays bounded by the backend's page cache plus the key index.
//!
//! The crate is synchronous (no async runtime), so the server, tools and tests can all embed it.
//!
//! # Module map
//!
//! | module | role |
//! |---|---|
//! | [`revision`] | [`Revision`] `(main, sub)` and its 16-byte order-preserving encoding; [`LeaseId`] |
//! | [`key_range`] | etcd's `(key, range_end)` convention as [`KeyRange`]; [`prefix_end`] |
//! | [`key_index`] | the in-memory [`KeyIndex`]: per key, generations of revisions |
//! | [`backend`] | [`Backend`]: named tables on redb, write coalescing, snapshots, defragment |
//! | [`store`] | [`MvccStore`]: put, delete_range, range, txn, compact, leases, watch events |
//! | [`compactor`] | [`Compactor`]: etcd's periodic and revision auto-compaction policies |
//! | [`etcd_compat`] | etcd's bbolt layout: export as an etcd snapshot, import an etcd database |
//! | [`request`] | the KV API's requests and responses |
//! | [`kv`] | [`KeyValue`] and [`Event`] |
//! | [`error`] | [`Error`], with the numbers each failure needs |
//!
//! # Example
//!
//! ```
//! use rusd_mvcc::{MvccStore, StoreConfig, PutRequest, RangeRequest, DeleteRangeRequest};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = MvccStore::open(StoreConfig::new(dir.path().join("db")))?;
//! assert_eq!(store.current_revision(), 1); // an empty store is at revision 1
//!
//! let put = store.put(&PutRequest::new("foo", "bar"))?;
//! assert_eq!(put.revision, 2); // the first write gets revision 2
//! store.put(&PutRequest::new("foo", "baz"))?;
//! store.delete_range(&DeleteRangeRequest::new("foo", ""))?;
//!
//! // Read the past: at revision 2 the key held "bar", as its first version.
//! let old = store.range(&RangeRequest { revision: 2, ..RangeRequest::new("foo", "") })?;
//! assert_eq!(old.kvs[0].value, b"bar");
//! assert_eq!(old.kvs[0].version, 1);
//! assert_eq!(old.revision, 4); // the header revision is always the current one
//!
//! // After compacting at 3, revision 2 is gone.
//! store.compact(3)?.wait();
//! assert!(store.range(&RangeRequest { revision: 2, ..RangeRequest::new("foo", "") }).is_err());
//! store.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/design.md` in the repository for the key encoding, the revision model, the
//! invariants, the lock order and the crash-safety argument.

pub mod backend;
mod codec;
pub mod compactor;
pub mod error;
pub mod etcd_compat;
pub mod key_index;
pub mod key_range;
pub mod kv;
pub mod request;
pub mod revision;
pub mod store;

pub use backend::{Backend, BackendConfig, Table, WriteBatch};
pub use compactor::{CompactionMode, Compactor};
pub use error::{Error, Result};
pub use key_index::{KeyAt, KeyIndex};
pub use key_range::{prefix_end, KeyRange, RangeEnd};
pub use kv::{Event, EventKind, KeyValue};
pub use request::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};
pub use revision::{LeaseId, Revision};
pub use store::{
    validate_txn, CompactionHandle, EventBatch, InstallOutcome, Lease, MvccStore, OpCounts,
    ReadTxn, StoreConfig, Subscription, WriteTxn,
};
