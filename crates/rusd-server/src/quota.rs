//! The space quota and the alarms that gate writes (etcd's `quotaKVServer`).

use rusd_proto::etcdserverpb as pb;

use crate::context::Ctx;
use crate::error::ServerError;
use crate::raft::Op;

/// etcd's per-key overhead in the quota cost of a put.
const KV_OVERHEAD: u64 = 256;
/// etcd's quota cost of a lease grant.
pub const LEASE_GRANT_COST: u64 = 64;

/// Quota cost of a put.
pub fn put_cost(p: &pb::PutRequest) -> u64 {
    KV_OVERHEAD + p.key.len() as u64 + p.value.len() as u64
}

/// Quota cost of a txn: the larger branch's puts.
pub fn txn_cost(t: &pb::TxnRequest) -> u64 {
    use pb::request_op::Request;
    let branch = |ops: &[pb::RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Request::RequestPut(p)) => put_cost(p),
                Some(Request::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

/// Refuses a request whenever the CORRUPT alarm is raised.
///
/// # Errors
/// [`ServerError::Corrupt`].
pub fn check_corrupt(ctx: &Ctx) -> Result<(), ServerError> {
    if ctx.alarms.is_raised(pb::AlarmType::Corrupt) {
        return Err(ServerError::Corrupt);
    }
    Ok(())
}

/// Refuses a write of `cost` bytes when the NOSPACE alarm is raised or the database would grow
/// past the quota; in the second case raises the alarm first, as etcd does.
///
/// # Errors
/// [`ServerError::NoSpace`] or [`ServerError::Corrupt`].
pub async fn check_space(ctx: &Ctx, cost: u64) -> Result<(), ServerError> {
    check_corrupt(ctx)?;
    if ctx.alarms.is_raised(pb::AlarmType::Nospace) {
        return Err(ServerError::NoSpace);
    }
    let Some(quota) = ctx.config.quota_bytes() else {
        return Ok(());
    };
    // The logical size (keys and values), not the file size: it drops as soon as a compaction
    // is committed, so recovering from NOSPACE needs no defragment, and redb's preallocated
    // pages do not count against small quotas.
    let used = ctx.store.size_in_use().unwrap_or_else(|_| ctx.store.size());
    if used + cost <= quota {
        return Ok(());
    }
    let raise = pb::AlarmRequest {
        action: pb::alarm_request::AlarmAction::Activate as i32,
        member_id: ctx.member_id,
        alarm: pb::AlarmType::Nospace as i32,
    };
    if let Err(e) = ctx.propose(Op::Alarm(raise)).await {
        tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
    }
    Err(ServerError::NoSpace)
}
