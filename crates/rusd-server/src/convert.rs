//! Conversions between etcd's protobuf messages and the engine's request types.

use rusd_mvcc as mvcc;
use rusd_proto::etcdserverpb as pb;
use rusd_proto::mvccpb;

use crate::error::ServerError;

/// A protobuf key-value from the engine's.
pub fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// An engine event as a protobuf event.
pub fn event_to_pb(ev: &mvcc::Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match ev.kind {
            mvcc::EventKind::Put => mvccpb::event::EventType::Put as i32,
            mvcc::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(ev.kv.clone())),
        prev_kv: if with_prev {
            ev.prev_kv.clone().map(kv_to_pb)
        } else {
            None
        },
    }
}

/// A header carrying only a revision (what etcd puts inside txn responses).
pub fn revision_header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..pb::ResponseHeader::default()
    })
}

/// The engine's range request.
///
/// # Errors
/// `etcdserver: invalid sort option` for sort values etcd does not define.
pub fn range_from_pb(r: &pb::RangeRequest) -> Result<mvcc::RangeRequest, ServerError> {
    use pb::range_request::{SortOrder, SortTarget};
    let sort_order = match SortOrder::try_from(r.sort_order) {
        Ok(SortOrder::None) => mvcc::SortOrder::None,
        Ok(SortOrder::Ascend) => mvcc::SortOrder::Ascend,
        Ok(SortOrder::Descend) => mvcc::SortOrder::Descend,
        Err(_) => return Err(ServerError::InvalidSortOption),
    };
    let sort_target = match SortTarget::try_from(r.sort_target) {
        Ok(SortTarget::Key) => mvcc::SortTarget::Key,
        Ok(SortTarget::Version) => mvcc::SortTarget::Version,
        Ok(SortTarget::Create) => mvcc::SortTarget::Create,
        Ok(SortTarget::Mod) => mvcc::SortTarget::Mod,
        Ok(SortTarget::Value) => mvcc::SortTarget::Value,
        Err(_) => return Err(ServerError::InvalidSortOption),
    };
    Ok(mvcc::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// A protobuf range response (header filled by the caller).
pub fn range_to_pb(r: mvcc::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: revision_header(r.revision),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

/// The engine's put request.
pub fn put_from_pb(p: &pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: p.key.clone(),
        value: p.value.clone(),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

/// A protobuf put response.
pub fn put_to_pb(r: mvcc::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: revision_header(r.revision),
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

/// The engine's delete request.
pub fn delete_from_pb(d: &pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: d.key.clone(),
        range_end: d.range_end.clone(),
        prev_kv: d.prev_kv,
    }
}

/// A protobuf delete response.
pub fn delete_to_pb(r: mvcc::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: revision_header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

/// etcd's `compareKV` for enum values it does not know, as an equivalent known compare on
/// the same key range (`None` when both are known):
/// * unknown target: the comparison result is 0, so EQUAL (or an unknown result) is always
///   true and NOT_EQUAL / GREATER / LESS always false;
/// * unknown result: always true, except that a VALUE compare on a range with no key is false
///   (`applyCompare`), i.e. "every key of the range exists" = `create > 0`.
fn unknown_enum_compare(c: &pb::Compare) -> Option<mvcc::Compare> {
    use pb::compare::{CompareResult, CompareTarget};
    let target = CompareTarget::try_from(c.target).ok();
    let result = CompareResult::try_from(c.result).ok();
    // create_revision is 0 for a missing key and positive otherwise.
    let (target, result) = match (target, result) {
        (Some(_), Some(_)) => return None,
        (None, None | Some(CompareResult::Equal)) => (-1, mvcc::CompareResult::Greater),
        (None, Some(_)) => (-1, mvcc::CompareResult::Less),
        (Some(CompareTarget::Value), None) => (0, mvcc::CompareResult::Greater),
        (Some(_), None) => (-1, mvcc::CompareResult::Greater),
    };
    Some(mvcc::Compare {
        result,
        target: mvcc::CompareTarget::Create(target),
        key: c.key.clone(),
        range_end: c.range_end.clone(),
    })
}

fn compare_from_pb(c: &pb::Compare) -> mvcc::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    if let Some(cmp) = unknown_enum_compare(c) {
        return cmp;
    }
    let result = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => mvcc::CompareResult::Equal,
        Ok(CompareResult::Greater) => mvcc::CompareResult::Greater,
        Ok(CompareResult::Less) => mvcc::CompareResult::Less,
        Ok(CompareResult::NotEqual) => mvcc::CompareResult::NotEqual,
        Err(_) => mvcc::CompareResult::Equal, // handled by `unknown_enum_compare`
    };
    let num = |f: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(f).unwrap_or(0);
    let target = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Version) => mvcc::CompareTarget::Version(num(|u| match u {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Create) => mvcc::CompareTarget::Create(num(|u| match u {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => mvcc::CompareTarget::Mod(num(|u| match u {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Value) => mvcc::CompareTarget::Value(match &c.target_union {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        Ok(CompareTarget::Lease) => mvcc::CompareTarget::Lease(num(|u| match u {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        Err(_) => mvcc::CompareTarget::Version(0),
    };
    mvcc::Compare {
        result,
        target,
        key: c.key.clone(),
        range_end: c.range_end.clone(),
    }
}

/// etcd's gRPC-layer txn checks (`checkTxnRequest`), in etcd's order, on the protobuf request:
/// too many operations, then empty compare keys, then every operation of `success` and then
/// `failure` in order (empty key, sort option, put flags, nested txns with the remaining
/// budget, an operation with nothing set). Converting first would report an empty operation
/// before an earlier error.
///
/// # Errors
/// The first error etcd would report.
pub fn check_txn(t: &pb::TxnRequest, max_ops: usize) -> Result<(), ServerError> {
    use pb::request_op::Request;
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_ops {
        return Err(mvcc::Error::TooManyTxnOps { ops, max: max_ops }.into());
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(mvcc::Error::EmptyKey.into());
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => {
                if r.key.is_empty() {
                    return Err(mvcc::Error::EmptyKey.into());
                }
                range_from_pb(r)?;
            }
            Some(Request::RequestPut(p)) => {
                if p.key.is_empty() {
                    return Err(mvcc::Error::EmptyKey.into());
                }
                if p.ignore_value && !p.value.is_empty() {
                    return Err(mvcc::Error::ValueProvided.into());
                }
                if p.ignore_lease && p.lease != 0 {
                    return Err(mvcc::Error::LeaseProvided.into());
                }
            }
            Some(Request::RequestDeleteRange(d)) => {
                if d.key.is_empty() {
                    return Err(mvcc::Error::EmptyKey.into());
                }
            }
            Some(Request::RequestTxn(n)) => check_txn(n, max_ops - ops)?,
            None => return Err(mvcc::Error::KeyNotFound.into()),
        }
    }
    Ok(())
}

/// The engine's txn request.
///
/// # Errors
/// `etcdserver: key not found` for an operation with nothing set; sort option errors.
pub fn txn_from_pb(t: &pb::TxnRequest) -> Result<mvcc::TxnRequest, ServerError> {
    let ops = |ops: &[pb::RequestOp]| -> Result<Vec<mvcc::RequestOp>, ServerError> {
        ops.iter()
            .map(|op| {
                use pb::request_op::Request;
                Ok(match &op.request {
                    Some(Request::RequestRange(r)) => mvcc::RequestOp::Range(range_from_pb(r)?),
                    Some(Request::RequestPut(p)) => mvcc::RequestOp::Put(put_from_pb(p)),
                    Some(Request::RequestDeleteRange(d)) => {
                        mvcc::RequestOp::DeleteRange(delete_from_pb(d))
                    }
                    Some(Request::RequestTxn(t)) => mvcc::RequestOp::Txn(txn_from_pb(t)?),
                    None => return Err(ServerError::Mvcc(mvcc::Error::KeyNotFound)),
                })
            })
            .collect()
    };
    Ok(mvcc::TxnRequest {
        compare: t.compare.iter().map(compare_from_pb).collect(),
        success: ops(&t.success)?,
        failure: ops(&t.failure)?,
    })
}

/// A protobuf txn response. Nested txn responses carry an empty (but present) header, as in
/// etcd (`newTxnResp` sets `Header: &pb.ResponseHeader{}`; the gateway shows `"header":{}`).
pub fn txn_to_pb(r: mvcc::TxnResponse, nested: bool) -> pb::TxnResponse {
    use pb::response_op::Response;
    pb::TxnResponse {
        header: if nested {
            Some(pb::ResponseHeader::default())
        } else {
            revision_header(r.revision)
        },
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    mvcc::ResponseOp::Range(r) => Response::ResponseRange(range_to_pb(r)),
                    mvcc::ResponseOp::Put(p) => Response::ResponsePut(put_to_pb(p)),
                    mvcc::ResponseOp::DeleteRange(d) => {
                        Response::ResponseDeleteRange(delete_to_pb(d))
                    }
                    mvcc::ResponseOp::Txn(t) => Response::ResponseTxn(txn_to_pb(t, true)),
                }),
            })
            .collect(),
    }
}

/// Whether a txn only reads (it can be served without the log).
pub fn txn_is_read_only(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => txn_is_read_only(t),
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) => false,
        })
}

/// Whether a txn may put (for the space quota): any put in any branch.
pub fn txn_has_put(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(t)) => txn_has_put(t),
            _ => false,
        })
}
