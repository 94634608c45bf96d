//! Applying committed log entries to the engine: the only code that writes the store.
//!
//! Every entry is applied in one engine write transaction that also records the entry's log id,
//! so the data and "how far the log was applied" are always durable together. Entries at or
//! below the recorded index were applied before a crash and are skipped.

use std::sync::Arc;

use rusd_mvcc::{LeaseId, MvccStore, Table};
use rusd_proto::etcdserverpb as pb;

use crate::alarm::{alarm_key, Alarms};
use crate::convert;
use crate::error::ServerError;
use crate::lease::Lessor;
use crate::raft::{LogId, Op, Output, RaftRequest, RaftResponse};

/// `members` table keys the apply loop owns.
pub mod keys {
    /// bincode `LogId` of the last applied entry.
    pub const APPLIED_LOG_ID: &[u8] = b"raft/applied_log_id";
    /// bincode `StoredMembership` as of the last applied membership entry.
    pub const MEMBERSHIP: &[u8] = b"raft/membership";
}

/// Everything applying touches.
pub struct Applier {
    /// The engine.
    pub store: MvccStore,
    /// Lease deadlines (told of grants and revokes).
    pub lessor: Arc<Lessor>,
    /// Raised alarms (told of activations).
    pub alarms: Arc<Alarms>,
}

impl Applier {
    /// Applies one entry; `request` is `None` for blank and membership entries. `membership` is
    /// the bincode of the membership to record with it, if it changed.
    pub fn apply(
        &self,
        log_id: LogId,
        request: Option<&RaftRequest>,
        membership: Option<Vec<u8>>,
    ) -> RaftResponse {
        if log_id.index <= self.store.applied_index() && self.store.applied_index() > 0 {
            return RaftResponse(Ok(Output::Nothing(true)));
        }
        let record = |w: &mut rusd_mvcc::WriteTxn<'_>| -> Result<(), ServerError> {
            w.set_applied_index(log_id.index);
            let id =
                bincode::serialize(&log_id).map_err(|e| ServerError::Internal(e.to_string()))?;
            w.put_raw(Table::Members, keys::APPLIED_LOG_ID, &id)?;
            if let Some(m) = &membership {
                w.put_raw(Table::Members, keys::MEMBERSHIP, m)?;
            }
            Ok(())
        };
        let Some(op) = request.and_then(|r| r.op.as_ref()) else {
            let mut w = self.store.write();
            let result = record(&mut w).and_then(|()| w.commit().map_err(ServerError::from));
            return RaftResponse(result.map(|_| Output::Nothing(true)));
        };
        let mut w = self.store.write();
        let mut after: Option<Box<dyn FnOnce() + '_>> = None;
        let outcome = self.apply_op(&mut w, op, &mut after);
        let result = match outcome {
            Ok(output) => record(&mut w)
                .and_then(|()| w.commit().map_err(ServerError::from))
                .map(|revision| fill_revision(output, revision)),
            Err(e) => {
                // Nothing of the failed operation is applied, but the entry is.
                drop(w);
                let mut w = self.store.write();
                match record(&mut w).and_then(|()| w.commit().map_err(ServerError::from)) {
                    Ok(_) => Err(e),
                    Err(fatal) => Err(fatal),
                }
            }
        };
        if result.is_ok() {
            if let Some(f) = after {
                f();
            }
        }
        RaftResponse(result)
    }

    fn apply_op<'a>(
        &'a self,
        w: &mut rusd_mvcc::WriteTxn<'_>,
        op: &Op,
        after: &mut Option<Box<dyn FnOnce() + 'a>>,
    ) -> Result<Output, ServerError> {
        Ok(match op {
            Op::Put(p) => Output::Put(convert::put_to_pb(w.put(&convert::put_from_pb(p))?)),
            Op::DeleteRange(d) => Output::DeleteRange(convert::delete_to_pb(
                w.delete_range(&convert::delete_from_pb(d))?,
            )),
            Op::Txn(t) => Output::Txn(convert::txn_to_pb(w.txn(&convert::txn_from_pb(t)?)?, false)),
            Op::Compaction(c) => {
                w.compact(c.revision)?;
                Output::Compaction(pb::CompactionResponse::default())
            }
            Op::LeaseGrant(g) => {
                let ttl = self.lessor.effective_ttl(g.ttl);
                let id = LeaseId(g.id);
                w.lease_grant(id, ttl)?;
                let lessor = &self.lessor;
                *after = Some(Box::new(move || lessor.granted(id, ttl)));
                Output::LeaseGrant(pb::LeaseGrantResponse {
                    header: None,
                    id: g.id,
                    ttl,
                    error: String::new(),
                })
            }
            Op::LeaseRevoke(r) => {
                let id = LeaseId(r.id);
                w.lease_revoke(id)?;
                let lessor = &self.lessor;
                *after = Some(Box::new(move || lessor.revoked(id)));
                Output::LeaseRevoke(pb::LeaseRevokeResponse::default())
            }
            Op::Alarm(a) => self.apply_alarm(w, a, after)?,
        })
    }

    fn apply_alarm<'a>(
        &'a self,
        w: &mut rusd_mvcc::WriteTxn<'_>,
        a: &pb::AlarmRequest,
        after: &mut Option<Box<dyn FnOnce() + 'a>>,
    ) -> Result<Output, ServerError> {
        use pb::alarm_request::AlarmAction;
        let member = a.member_id;
        let alarm = a.alarm;
        let alarms = &self.alarms;
        let affected = match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Get) | Err(_) => alarms.list(member, alarm),
            Ok(AlarmAction::Activate) => {
                if alarm == pb::AlarmType::None as i32 {
                    Vec::new()
                } else {
                    w.put_raw(Table::Alarm, &alarm_key(member, alarm), b"")?;
                    *after = Some(Box::new(move || alarms.activate(member, alarm)));
                    vec![pb::AlarmMember {
                        member_id: member,
                        alarm,
                    }]
                }
            }
            Ok(AlarmAction::Deactivate) => {
                let raised = alarms.list(member, alarm);
                for m in &raised {
                    w.delete_raw(Table::Alarm, &alarm_key(m.member_id, m.alarm))?;
                }
                let gone = raised.clone();
                *after = Some(Box::new(move || {
                    for m in gone {
                        alarms.deactivate(m.member_id, m.alarm);
                    }
                }));
                raised
            }
        };
        Ok(Output::Alarm(pb::AlarmResponse {
            header: None,
            alarms: affected,
        }))
    }
}

/// Sets the header revision of outputs that report the store revision after the entry.
fn fill_revision(output: Output, revision: i64) -> Output {
    match output {
        Output::Compaction(mut c) => {
            c.header = convert::revision_header(revision);
            Output::Compaction(c)
        }
        Output::LeaseGrant(mut g) => {
            g.header = convert::revision_header(revision);
            Output::LeaseGrant(g)
        }
        Output::LeaseRevoke(mut r) => {
            r.header = convert::revision_header(revision);
            Output::LeaseRevoke(r)
        }
        other => other,
    }
}
