//! Requests and responses of the store's KV API, field for field etcd's `etcdserverpb`
//! messages (without transport concerns such as headers or `serializable`).

use crate::kv::KeyValue;

/// Order of a range's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Ascending by key (the default).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// What a range's results are sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The key's version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// etcd's `RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (must not be empty).
    pub key: Vec<u8>,
    /// End of the range, see [`KeyRange`](crate::KeyRange).
    pub range_end: Vec<u8>,
    /// Most keys to return; 0 for no limit.
    pub limit: i64,
    /// Revision to read at; 0 or less for the current one.
    pub revision: i64,
    /// Result order.
    pub sort_order: SortOrder,
    /// Result sort field.
    pub sort_target: SortTarget,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Drop keys whose mod revision is lower (0 = no filter).
    pub min_mod_revision: i64,
    /// Drop keys whose mod revision is higher (0 = no filter).
    pub max_mod_revision: i64,
    /// Drop keys whose create revision is lower (0 = no filter).
    pub min_create_revision: i64,
    /// Drop keys whose create revision is higher (0 = no filter).
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// A request for the key range `[key, range_end)` at the current revision.
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
            ..Self::default()
        }
    }
}

/// etcd's `RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store revision the response was served at (the current one, even for older reads).
    pub revision: i64,
    /// The keys found.
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut the result short.
    pub more: bool,
    /// Keys in the range at the read revision, whatever the limit and filters.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key (must not be empty).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach; 0 for none (which detaches any lease).
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value.
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put of `value` under `key`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            ..Self::default()
        }
    }
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The revision of the put.
    pub revision: i64,
    /// The previous key-value, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// First key (must not be empty).
    pub key: Vec<u8>,
    /// End of the range, see [`KeyRange`](crate::KeyRange).
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// Deletes `[key, range_end)`.
    pub fn new(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
            prev_kv: false,
        }
    }
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The deletion's revision, or the current one when nothing was deleted.
    pub revision: i64,
    /// Keys deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a [`Compare`] compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    /// Equal.
    #[default]
    Equal,
    /// Stored value greater than the given one.
    Greater,
    /// Stored value less than the given one.
    Less,
    /// Not equal.
    NotEqual,
}

/// What a [`Compare`] looks at, with the value to compare against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version.
    Version(i64),
    /// The key's create revision.
    Create(i64),
    /// The key's mod revision.
    Mod(i64),
    /// The key's value.
    Value(Vec<u8>),
    /// The key's lease.
    Lease(i64),
}

/// etcd's `Compare`: one condition of a txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The comparison.
    pub result: CompareResult,
    /// The field and the value to compare it with.
    pub target: CompareTarget,
    /// The key (must not be empty).
    pub key: Vec<u8>,
    /// With a range end, every key in the range must satisfy the condition.
    pub range_end: Vec<u8>,
}

/// One operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn.
    Txn(TxnRequest),
}

/// The result of one [`RequestOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// Result of a read.
    Range(RangeResponse),
    /// Result of a write.
    Put(PutResponse),
    /// Result of a delete.
    DeleteRange(DeleteRangeResponse),
    /// Result of a nested txn.
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`: if every compare holds, run `success`, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Conditions, all of which must hold (none means true).
    pub compare: Vec<Compare>,
    /// Operations when the conditions hold.
    pub success: Vec<RequestOp>,
    /// Operations when they do not.
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// The txn's revision if it changed anything, else the current one.
    pub revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per operation of the branch that ran.
    pub responses: Vec<ResponseOp>,
}
