//! What goes through the log (etcd's `InternalRaftRequest`) and what applying it returns.
//!
//! Both are protobuf messages (etcd's own request and response messages inside a oneof), so
//! the log format is compact, versionable and independent of Rust's layout. openraft wants serde
//! for its payloads; these implement it as the protobuf bytes.

use prost::Message;
use rusd_proto::etcdserverpb as pb;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ServerError;

/// A request to apply, in log order, on every member.
#[derive(Clone, PartialEq, Message)]
pub struct RaftRequest {
    /// The operation.
    #[prost(
        oneof = "Op",
        tags = "1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21"
    )]
    pub op: Option<Op>,
    /// Instead of `op`: client requests proposed together as one entry (see
    /// [`crate::raft::proposer`]), applied in order, each as if it were its own entry.
    #[prost(message, repeated, tag = "8")]
    pub batch: Vec<RaftRequest>,
    /// Who asked (etcd's `RequestHeader`: user name and the auth revision its credentials
    /// were checked at); applying checks the user's permissions. Absent for the server's own
    /// requests (lease expiry, alarms, auto-compaction), which are not checked.
    #[prost(message, optional, tag = "9")]
    pub header: Option<RequestHeader>,
}

/// Who proposed a client request (etcd's `RequestHeader` of `raft_internal.proto`, same
/// fields).
#[derive(Clone, PartialEq, Message)]
pub struct RequestHeader {
    /// Request id (unused: rusd matches results to proposals without it).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The user; empty without credentials.
    #[prost(string, tag = "2")]
    pub username: String,
    /// The auth revision the credentials were checked at; 0 without credentials.
    #[prost(uint64, tag = "3")]
    pub auth_revision: u64,
}

/// Authenticate as it goes through the log: the password was checked before proposing, so the
/// entry carries only the user and the random part of the simple token (etcd's
/// `InternalAuthenticateRequest` without the password).
#[derive(Clone, PartialEq, Message)]
pub struct AuthenticateOp {
    /// The user.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The simple token's random part (empty for JWT).
    #[prost(string, tag = "2")]
    pub simple_token: String,
}

/// The operations the log carries.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// KV Put.
    #[prost(message, tag = "1")]
    Put(pb::PutRequest),
    /// KV DeleteRange.
    #[prost(message, tag = "2")]
    DeleteRange(pb::DeleteRangeRequest),
    /// KV Txn with writes.
    #[prost(message, tag = "3")]
    Txn(pb::TxnRequest),
    /// KV Compact.
    #[prost(message, tag = "4")]
    Compaction(pb::CompactionRequest),
    /// Lease grant, with the id already chosen (so every member applies the same).
    #[prost(message, tag = "5")]
    LeaseGrant(pb::LeaseGrantRequest),
    /// Lease revoke (by a client or by expiry).
    #[prost(message, tag = "6")]
    LeaseRevoke(pb::LeaseRevokeRequest),
    /// Alarm activate/deactivate.
    #[prost(message, tag = "7")]
    Alarm(pb::AlarmRequest),
    /// AuthEnable.
    #[prost(message, tag = "10")]
    AuthEnable(pb::AuthEnableRequest),
    /// AuthDisable.
    #[prost(message, tag = "11")]
    AuthDisable(pb::AuthDisableRequest),
    /// Authenticate, password already checked.
    #[prost(message, tag = "12")]
    Authenticate(AuthenticateOp),
    /// UserAdd, with `hashed_password` set and `password` cleared.
    #[prost(message, tag = "13")]
    UserAdd(pb::AuthUserAddRequest),
    /// UserDelete.
    #[prost(message, tag = "14")]
    UserDelete(pb::AuthUserDeleteRequest),
    /// UserChangePassword, with `hashed_password` set and `password` cleared.
    #[prost(message, tag = "15")]
    UserChangePassword(pb::AuthUserChangePasswordRequest),
    /// UserGrantRole.
    #[prost(message, tag = "16")]
    UserGrantRole(pb::AuthUserGrantRoleRequest),
    /// UserRevokeRole.
    #[prost(message, tag = "17")]
    UserRevokeRole(pb::AuthUserRevokeRoleRequest),
    /// RoleAdd.
    #[prost(message, tag = "18")]
    RoleAdd(pb::AuthRoleAddRequest),
    /// RoleDelete.
    #[prost(message, tag = "19")]
    RoleDelete(pb::AuthRoleDeleteRequest),
    /// RoleGrantPermission.
    #[prost(message, tag = "20")]
    RoleGrantPermission(pb::AuthRoleGrantPermissionRequest),
    /// RoleRevokePermission.
    #[prost(message, tag = "21")]
    RoleRevokePermission(pb::AuthRoleRevokePermissionRequest),
}

impl RaftRequest {
    /// Wraps an operation.
    pub fn new(op: Op) -> Self {
        Self {
            op: Some(op),
            batch: Vec::new(),
            header: None,
        }
    }

    /// Wraps a client's operation, with who asked.
    pub fn from_client(op: Op, ai: &crate::auth::AuthInfo) -> Self {
        Self {
            op: Some(op),
            batch: Vec::new(),
            header: Some(RequestHeader {
                id: 0,
                username: ai.username.clone(),
                auth_revision: ai.revision,
            }),
        }
    }

    /// Several operations in one entry.
    pub fn batch(ops: impl IntoIterator<Item = Op>) -> Self {
        Self::batch_of(ops.into_iter().map(Self::new))
    }

    /// Several requests (each with its own header) in one entry.
    pub fn batch_of(requests: impl IntoIterator<Item = RaftRequest>) -> Self {
        Self {
            op: None,
            batch: requests.into_iter().collect(),
            header: None,
        }
    }

    /// Whether applying this touches a bounded number of keys: puts, single-key deletes and
    /// txns of single-key operations, lease grants, and batches of those. Range deletes, range
    /// reads or compares in a txn, lease revokes, compactions and auth changes can touch any
    /// number of keys or users.
    pub fn is_bounded(&self) -> bool {
        match &self.op {
            None => self.batch.iter().all(Self::is_bounded),
            Some(Op::Put(_) | Op::LeaseGrant(_)) => true,
            Some(Op::DeleteRange(d)) => d.range_end.is_empty(),
            Some(Op::Txn(t)) => txn_is_bounded(t),
            Some(_) => false,
        }
    }

    /// Operations this request carries (a batch's, or one).
    pub fn op_count(&self) -> usize {
        if self.op.is_none() {
            self.batch.iter().map(Self::op_count).sum()
        } else {
            1
        }
    }
}

fn txn_is_bounded(txn: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    txn.compare.iter().all(|c| c.range_end.is_empty())
        && txn
            .success
            .iter()
            .chain(&txn.failure)
            .all(|op| match &op.request {
                None | Some(Request::RequestPut(_)) => true,
                Some(Request::RequestRange(r)) => r.range_end.is_empty(),
                Some(Request::RequestDeleteRange(d)) => d.range_end.is_empty(),
                Some(Request::RequestTxn(t)) => txn_is_bounded(t),
            })
}

impl std::fmt::Display for RaftRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.op {
            Some(Op::Put(_)) => "put",
            Some(Op::DeleteRange(_)) => "delete_range",
            Some(Op::Txn(_)) => "txn",
            Some(Op::Compaction(_)) => "compaction",
            Some(Op::LeaseGrant(_)) => "lease_grant",
            Some(Op::LeaseRevoke(_)) => "lease_revoke",
            Some(Op::Alarm(_)) => "alarm",
            Some(Op::AuthEnable(_)) => "auth_enable",
            Some(Op::AuthDisable(_)) => "auth_disable",
            Some(Op::Authenticate(_)) => "authenticate",
            Some(Op::UserAdd(_)) => "user_add",
            Some(Op::UserDelete(_)) => "user_delete",
            Some(Op::UserChangePassword(_)) => "user_change_password",
            Some(Op::UserGrantRole(_)) => "user_grant_role",
            Some(Op::UserRevokeRole(_)) => "user_revoke_role",
            Some(Op::RoleAdd(_)) => "role_add",
            Some(Op::RoleDelete(_)) => "role_delete",
            Some(Op::RoleGrantPermission(_)) => "role_grant_permission",
            Some(Op::RoleRevokePermission(_)) => "role_revoke_permission",
            None if !self.batch.is_empty() => return write!(f, "batch of {}", self.batch.len()),
            None => "empty",
        };
        f.write_str(name)
    }
}

impl Serialize for RaftRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for RaftRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: serde_bytes_shim::ByteBuf = Deserialize::deserialize(d)?;
        RaftRequest::decode(bytes.0.as_slice()).map_err(serde::de::Error::custom)
    }
}

/// The result of applying one request.
#[derive(Clone, PartialEq, Message)]
pub struct ApplyOutput {
    /// What the operation returned.
    #[prost(oneof = "Output", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub output: Option<Output>,
}

/// Per-operation results.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Output {
    /// Put.
    #[prost(message, tag = "1")]
    Put(pb::PutResponse),
    /// DeleteRange.
    #[prost(message, tag = "2")]
    DeleteRange(pb::DeleteRangeResponse),
    /// Txn.
    #[prost(message, tag = "3")]
    Txn(pb::TxnResponse),
    /// Compact.
    #[prost(message, tag = "4")]
    Compaction(pb::CompactionResponse),
    /// LeaseGrant.
    #[prost(message, tag = "5")]
    LeaseGrant(pb::LeaseGrantResponse),
    /// LeaseRevoke.
    #[prost(message, tag = "6")]
    LeaseRevoke(pb::LeaseRevokeResponse),
    /// Alarm.
    #[prost(message, tag = "7")]
    Alarm(pb::AlarmResponse),
    /// An entry replayed after a restart (already applied before the crash), or a blank or
    /// membership entry: nobody waits for it.
    #[prost(bool, tag = "8")]
    Nothing(bool),
    /// An auth operation: the token for Authenticate, empty for the others.
    #[prost(message, tag = "9")]
    Auth(pb::AuthenticateResponse),
}

/// What a proposer gets back: the output, or the error applying it produced; for a batch, one
/// of those per operation, in order.
#[derive(Debug)]
pub enum RaftResponse {
    /// The result of a one-operation (or blank or membership) entry.
    One(Result<Output, ServerError>),
    /// The results of a batch entry.
    Batch(Vec<Result<Output, ServerError>>),
}

impl Clone for RaftResponse {
    fn clone(&self) -> Self {
        let copy = |r: &Result<Output, ServerError>| match r {
            Ok(o) => Ok(o.clone()),
            Err(e) => Err(remote(e)),
        };
        match self {
            Self::One(r) => Self::One(copy(r)),
            Self::Batch(rs) => Self::Batch(rs.iter().map(copy).collect()),
        }
    }
}

/// A copy of `e` in wire form (same gRPC code and text).
pub(crate) fn copy_error(e: &ServerError) -> ServerError {
    remote(e)
}

fn remote(e: &ServerError) -> ServerError {
    let (code, message) = crate::grpc::status::code_and_message(e);
    ServerError::Remote {
        code: code as i32,
        message,
    }
}

#[derive(Serialize, Deserialize)]
enum WireResult {
    Ok(serde_bytes_shim::ByteBuf),
    Err { code: i32, message: String },
}

#[derive(Serialize, Deserialize)]
enum WireResponse {
    One(WireResult),
    Batch(Vec<WireResult>),
}

impl WireResult {
    fn from_result(r: &Result<Output, ServerError>) -> Self {
        match r {
            Ok(o) => Self::Ok(serde_bytes_shim::ByteBuf(
                ApplyOutput {
                    output: Some(o.clone()),
                }
                .encode_to_vec(),
            )),
            Err(e) => match remote(e) {
                ServerError::Remote { code, message } => Self::Err { code, message },
                other => Self::Err {
                    code: 2,
                    message: other.to_string(),
                },
            },
        }
    }

    fn into_result(self) -> Result<Result<Output, ServerError>, prost::DecodeError> {
        Ok(match self {
            Self::Ok(bytes) => {
                let out = ApplyOutput::decode(bytes.0.as_slice())?;
                Ok(out.output.unwrap_or(Output::Nothing(true)))
            }
            Self::Err { code, message } => Err(ServerError::Remote { code, message }),
        })
    }
}

impl Serialize for RaftResponse {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wire = match self {
            Self::One(r) => WireResponse::One(WireResult::from_result(r)),
            Self::Batch(rs) => {
                WireResponse::Batch(rs.iter().map(WireResult::from_result).collect())
            }
        };
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RaftResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let err = serde::de::Error::custom;
        Ok(match WireResponse::deserialize(d)? {
            WireResponse::One(r) => RaftResponse::One(r.into_result().map_err(err)?),
            WireResponse::Batch(rs) => RaftResponse::Batch(
                rs.into_iter()
                    .map(WireResult::into_result)
                    .collect::<Result<_, _>>()
                    .map_err(err)?,
            ),
        })
    }
}

/// Byte buffers through serde as bytes (not as a sequence of numbers).
mod serde_bytes_shim {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub struct ByteBuf(pub Vec<u8>);

    impl Serialize for ByteBuf {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = ByteBuf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v.to_vec()))
                }
                fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                    Ok(ByteBuf(v))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<ByteBuf, A::Error> {
                    let mut out = Vec::new();
                    while let Some(b) = seq.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(ByteBuf(out))
                }
            }
            d.deserialize_byte_buf(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_requests_are_single_key_writes_and_their_batches() {
        use pb::request_op::Request;
        let put = || Op::Put(pb::PutRequest::default());
        let delete = |range_end: &[u8]| pb::DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        };
        let op = |request| pb::RequestOp {
            request: Some(request),
        };
        let txn = |compare_end: &[u8], then: Vec<pb::RequestOp>| pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"a".to_vec(),
                range_end: compare_end.to_vec(),
                ..Default::default()
            }],
            success: then,
            failure: vec![op(Request::RequestRange(pb::RangeRequest {
                key: b"a".to_vec(),
                ..Default::default()
            }))],
        };
        let single = txn(b"", vec![op(Request::RequestDeleteRange(delete(b"")))]);
        let bounded = [
            RaftRequest::new(put()),
            RaftRequest::new(Op::DeleteRange(delete(b""))),
            RaftRequest::new(Op::Txn(single.clone())),
            RaftRequest::new(Op::Txn(txn(b"", vec![op(Request::RequestTxn(single))]))),
            RaftRequest::new(Op::LeaseGrant(pb::LeaseGrantRequest::default())),
            RaftRequest::batch([put(), put(), Op::DeleteRange(delete(b""))]),
        ];
        for r in &bounded {
            assert!(r.is_bounded(), "{r}");
        }
        let unbounded = [
            RaftRequest::new(Op::DeleteRange(delete(b"b"))),
            RaftRequest::new(Op::DeleteRange(delete(b"\0"))),
            RaftRequest::new(Op::Txn(txn(b"b", vec![]))),
            RaftRequest::new(Op::Txn(txn(
                b"",
                vec![op(Request::RequestDeleteRange(delete(b"b")))],
            ))),
            RaftRequest::new(Op::Txn(txn(
                b"",
                vec![op(Request::RequestRange(pb::RangeRequest {
                    key: b"a".to_vec(),
                    range_end: b"\0".to_vec(),
                    ..Default::default()
                }))],
            ))),
            RaftRequest::new(Op::LeaseRevoke(pb::LeaseRevokeRequest { id: 1 })),
            RaftRequest::new(Op::Compaction(pb::CompactionRequest::default())),
            RaftRequest::batch([put(), Op::LeaseRevoke(pb::LeaseRevokeRequest { id: 1 })]),
        ];
        for r in &unbounded {
            assert!(!r.is_bounded(), "{r}");
        }
        assert_eq!(RaftRequest::batch([put(), put(), put()]).op_count(), 3);
        assert_eq!(RaftRequest::new(put()).op_count(), 1);
    }

    #[test]
    fn requests_and_responses_round_trip_through_serde() {
        let req = RaftRequest::new(Op::Put(pb::PutRequest {
            key: b"k".to_vec(),
            value: vec![0, 255, 7],
            ..Default::default()
        }));
        let bytes = bincode::serialize(&req).unwrap();
        assert_eq!(bincode::deserialize::<RaftRequest>(&bytes).unwrap(), req);
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<RaftRequest>(&json).unwrap(), req);

        let batch = RaftRequest::batch([
            Op::Put(pb::PutRequest::default()),
            Op::LeaseRevoke(pb::LeaseRevokeRequest { id: 3 }),
        ]);
        let bytes = bincode::serialize(&batch).unwrap();
        assert_eq!(bincode::deserialize::<RaftRequest>(&bytes).unwrap(), batch);
        assert_eq!(batch.to_string(), "batch of 2");

        let ok = RaftResponse::One(Ok(Output::Put(pb::PutResponse::default())));
        let back: RaftResponse = bincode::deserialize(&bincode::serialize(&ok).unwrap()).unwrap();
        assert!(matches!(back, RaftResponse::One(Ok(Output::Put(_)))));
        let both = RaftResponse::Batch(vec![Ok(Output::Nothing(true)), Err(ServerError::NoSpace)]);
        let back: RaftResponse = bincode::deserialize(&bincode::serialize(&both).unwrap()).unwrap();
        let RaftResponse::Batch(results) = back else {
            panic!("not a batch");
        };
        assert!(matches!(results[0], Ok(Output::Nothing(true))));
        let status = tonic::Status::from(results.into_iter().nth(1).unwrap().unwrap_err());
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: database space exceeded"
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }
}
