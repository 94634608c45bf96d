//! The engine's errors: one enum, with the numbers a caller needs to explain itself.
//!
//! The server maps these to etcd's gRPC codes and texts in exactly one place; nothing here
//! knows about gRPC. The enum is deliberately not `#[non_exhaustive]`: that mapping is an
//! exhaustive match, so a new variant cannot go unmapped.

use crate::revision::LeaseId;

/// Everything an engine call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request names no key (etcd: "key is not provided").
    #[error("key is not provided")]
    EmptyKey,
    /// A revision below the compaction point was requested.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compact revision.
        compacted: i64,
    },
    /// A revision above the current store revision was requested.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// A range whose end is not after its start where an empty range is not allowed (watch).
    #[error("range is empty: range_end {range_end:?} is not after key {key:?}")]
    InvertedRange {
        /// The range's first key.
        key: Vec<u8>,
        /// The range's end.
        range_end: Vec<u8>,
    },
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or a request op with nothing set.
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a non-empty value.
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("lease is provided")]
    LeaseProvided,
    /// The lease does not exist.
    #[error("requested lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A lease with this id exists already.
    #[error("lease {0} already exists")]
    LeaseExists(LeaseId),
    /// A txn branch or nested txn has more operations than allowed.
    #[error("too many operations in txn request ({ops} > {max})")]
    TooManyTxnOps {
        /// Operations found.
        ops: usize,
        /// The limit.
        max: usize,
    },
    /// Two writes of one key in one txn branch.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A bad argument that etcd has no dedicated error for.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A snapshot stream failed its checksum or is not a snapshot.
    #[error("snapshot is corrupt: {0}")]
    CorruptSnapshot(String),
    /// Stored data could not be decoded: the database is damaged.
    #[error("stored data is corrupt: {0}")]
    Corrupted(String),
    /// An earlier disk failure left the store unusable; reopen it.
    #[error("the store hit an earlier I/O failure and must be reopened: {0}")]
    Poisoned(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The storage backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! backend_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Backend(e.to_string())
            }
        }
    )*};
}

backend_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
);
