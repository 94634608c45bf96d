//! Applying committed log entries to the engine: the only code that writes the store.
//!
//! Every operation is applied in one engine write transaction that also records the entry's log
//! id (and, inside a batch entry, how many of its operations are done), so the data and "how far
//! the log was applied" are always durable together. What is at or below the recorded position
//! was applied before a crash and is skipped.

use std::sync::Arc;

use rusd_mvcc::{LeaseId, MvccStore, Table};
use rusd_proto::etcdserverpb as pb;

use crate::alarm::{alarm_key, Alarms};
use crate::auth::{AuthInfo, AuthStore};
use crate::convert;
use crate::error::ServerError;
use crate::lease::Lessor;
use crate::raft::{LogId, Op, Output, RaftRequest, RaftResponse};

/// `members` table keys the apply loop owns.
pub mod keys {
    /// bincode `LogId` of the last applied entry.
    pub const APPLIED_LOG_ID: &[u8] = b"raft/applied_log_id";
    /// How far the batch entry being applied got: LE u64 entry index, LE u32 operations
    /// applied, LE u32 operations in the entry (older releases wrote the LE u32 count alone).
    pub const APPLIED_OPS: &[u8] = b"raft/applied_ops";
    /// bincode `LogId` of the last entry applied whole before the batch entry being applied
    /// (absent if none): what to report as applied while that batch is only partly applied.
    pub const APPLIED_BEFORE_BATCH: &[u8] = b"raft/applied_before_batch";
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
    /// Users and roles (changed by auth operations, asked about every client write).
    pub auth: Arc<AuthStore>,
    /// The bincode `LogId` applied before the batch entry being applied, if any (see
    /// [`Applier::applied_log_id`]).
    pub before_batch: parking_lot::Mutex<Option<Vec<u8>>>,
    /// Requests applied since start (a batch entry counts each of its requests): every member
    /// snapshots after `--snapshot-count` of them (see `server::snapshot_by_count`).
    pub applied_requests: std::sync::atomic::AtomicU64,
}

impl Applier {
    /// Replaces the engine's whole state with a snapshot stream received from the leader (the
    /// file at `path`, removed afterwards), then reloads what the server keeps beside it.
    ///
    /// # Errors
    /// The stream is corrupt (nothing changed then) or the engine failed.
    pub fn install_snapshot(&self, path: &std::path::Path) -> Result<(), ServerError> {
        let file = std::fs::File::open(path).map_err(rusd_mvcc::Error::from)?;
        let installed = self
            .store
            .install_snapshot(std::io::BufReader::with_capacity(1 << 20, file));
        let _ = std::fs::remove_file(path);
        installed?;
        self.lessor
            .replace_all(self.store.leases().into_iter().map(|l| (l.id, l.ttl)));
        self.alarms.reload(&self.store)?;
        self.auth.reload(&self.store)?;
        tracing::info!(
            revision = self.store.current_revision(),
            applied_index = self.store.applied_index(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    /// Applies one entry; `request` is `None` for blank and membership entries. `membership` is
    /// the bincode of the membership to record with it, if it changed.
    pub fn apply(
        &self,
        log_id: LogId,
        request: Option<&RaftRequest>,
        membership: Option<Vec<u8>>,
    ) -> RaftResponse {
        let applied = self.store.applied_index();
        let batch = request.map_or(&[][..], |r| r.batch.as_slice());
        if let Some(r) = request {
            self.applied_requests.fetch_add(
                r.batch.len().max(1) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if batch.is_empty() {
            if applied > 0 && log_id.index <= applied {
                return RaftResponse::One(Ok(Output::Nothing(true)));
            }
            let op = request.and_then(|r| r.op.as_ref());
            let header = request.and_then(|r| r.header.as_ref());
            return RaftResponse::One(self.apply_one(
                log_id,
                None,
                op,
                header,
                membership.as_deref(),
            ));
        }
        // Each operation of a batch is applied (and recorded) on its own: after a crash in the
        // middle of one, the operations already applied are skipped, the rest applied.
        let done = if applied > 0 && log_id.index < applied {
            batch.len()
        } else if applied > 0 && log_id.index == applied {
            match self.applied_ops(log_id.index) {
                Ok(n) => n,
                Err(e) => return RaftResponse::One(Err(e)),
            }
        } else {
            0
        };
        // Until the whole batch is applied, the state machine reports the entry before it as
        // applied (see `applied_log_id`), so that after a crash openraft hands the batch over
        // again and the operations not yet applied are.
        if done == 0 {
            if let Err(e) = self.remember_applied_before_batch() {
                return RaftResponse::One(Err(e));
            }
        }
        let len = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        RaftResponse::Batch(
            batch
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    if i < done {
                        return Ok(Output::Nothing(true));
                    }
                    let pos = u32::try_from(i + 1).unwrap_or(u32::MAX);
                    self.apply_one(
                        log_id,
                        Some((pos, len)),
                        r.op.as_ref(),
                        r.header.as_ref(),
                        None,
                    )
                })
                .collect(),
        )
    }

    /// How many operations of the batch entry at `index` (the applied index) were applied.
    fn applied_ops(&self, index: u64) -> Result<usize, ServerError> {
        let tx = self.store.backend().read();
        Ok(match tx.get(Table::Members, keys::APPLIED_OPS)? {
            Some(b) => match decode_applied_ops(&b) {
                Some((i, pos, _)) if i == index => pos as usize,
                // Another entry's record, or the count alone (an older release): the whole
                // entry at the applied index was applied.
                _ => usize::MAX,
            },
            None => usize::MAX,
        })
    }

    /// Keeps the applied log id as it is before a batch entry starts, for
    /// [`Applier::applied_log_id`] to report while the batch is partly applied.
    fn remember_applied_before_batch(&self) -> Result<(), ServerError> {
        let before = self
            .store
            .backend()
            .read()
            .get(Table::Members, keys::APPLIED_LOG_ID)?;
        *self.before_batch.lock() = before;
        Ok(())
    }

    /// The last log entry applied whole, as the state machine reports it to openraft: the
    /// recorded applied log id, except while a batch entry is partly applied (a crash came in
    /// its middle), when it is the entry before that batch, so that openraft applies the batch
    /// again and the operations already applied are skipped.
    ///
    /// # Errors
    /// A backend error or an undecodable record.
    pub fn applied_log_id(&self) -> Result<Option<LogId>, ServerError> {
        let tx = self.store.backend().read();
        let log_id = |key: &[u8]| -> Result<Option<LogId>, ServerError> {
            tx.get(Table::Members, key)?
                .map(|bytes| bincode::deserialize(&bytes))
                .transpose()
                .map_err(|e| ServerError::Internal(e.to_string()))
        };
        let Some(applied) = log_id(keys::APPLIED_LOG_ID)? else {
            return Ok(None);
        };
        let partial = tx
            .get(Table::Members, keys::APPLIED_OPS)?
            .and_then(|b| decode_applied_ops(&b))
            .is_some_and(|(index, pos, len)| index == applied.index && pos < len);
        if partial {
            log_id(keys::APPLIED_BEFORE_BATCH)
        } else {
            Ok(Some(applied))
        }
    }

    /// Applies one operation in one engine write transaction that also records the log id (and
    /// for a batch, how many of its operations are applied with this one: `pos`).
    fn apply_one(
        &self,
        log_id: LogId,
        pos: Option<(u32, u32)>,
        op: Option<&Op>,
        header: Option<&crate::raft::request::RequestHeader>,
        membership: Option<&[u8]>,
    ) -> Result<Output, ServerError> {
        let record = |w: &mut rusd_mvcc::WriteTxn<'_>| -> Result<(), ServerError> {
            w.set_applied_index(log_id.index);
            let id =
                bincode::serialize(&log_id).map_err(|e| ServerError::Internal(e.to_string()))?;
            w.put_raw(Table::Members, keys::APPLIED_LOG_ID, &id)?;
            if let Some((pos, len)) = pos {
                w.put_raw(
                    Table::Members,
                    keys::APPLIED_OPS,
                    &encode_applied_ops(log_id.index, pos, len),
                )?;
                if pos == 1 {
                    if let Some(before) = self.before_batch.lock().as_deref() {
                        w.put_raw(Table::Members, keys::APPLIED_BEFORE_BATCH, before)?;
                    }
                }
            }
            if let Some(m) = membership {
                w.put_raw(Table::Members, keys::MEMBERSHIP, m)?;
            }
            Ok(())
        };
        let Some(op) = op else {
            let mut w = self.store.write();
            record(&mut w)?;
            w.commit()?;
            return Ok(Output::Nothing(true));
        };
        let mut w = self.store.write();
        let mut after: Option<Box<dyn FnOnce() + '_>> = None;
        let caller = header.map(|h| AuthInfo {
            username: h.username.clone(),
            revision: h.auth_revision,
        });
        let outcome = self.apply_op(&mut w, op, caller.as_ref(), log_id.index, &mut after);
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
        result
    }

    fn apply_op<'a>(
        &'a self,
        w: &mut rusd_mvcc::WriteTxn<'_>,
        op: &Op,
        caller: Option<&AuthInfo>,
        index: u64,
        after: &mut Option<Box<dyn FnOnce() + 'a>>,
    ) -> Result<Output, ServerError> {
        if let Some(applied) = self.auth.apply(w, op, caller, index) {
            let (output, then) = applied?;
            *after = Some(then);
            return Ok(output);
        }
        if let Some(ai) = caller {
            let lease_keys = |id: i64| {
                self.store
                    .lease(LeaseId(id))
                    .map(|l| l.keys)
                    .unwrap_or_default()
            };
            self.auth.state().check_op(ai, op, &lease_keys)?;
        }
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
            // Auth operations were applied above.
            _ => Output::Nothing(true),
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

/// `APPLIED_OPS`: entry index, operations applied, operations in the entry.
fn encode_applied_ops(index: u64, pos: u32, len: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_le_bytes());
    out[8..12].copy_from_slice(&pos.to_le_bytes());
    out[12..].copy_from_slice(&len.to_le_bytes());
    out
}

fn decode_applied_ops(b: &[u8]) -> Option<(u64, u32, u32)> {
    let index = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    let pos = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?);
    let len = u32::from_le_bytes(b.get(12..16)?.try_into().ok()?);
    (b.len() == 16).then_some((index, pos, len))
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

/// An applier over a fresh store opened with `config`, for tests.
#[cfg(test)]
pub(crate) fn test_applier(config: rusd_mvcc::StoreConfig) -> Applier {
    let store = MvccStore::open(config).expect("open");
    let auth = Arc::new(
        AuthStore::load(
            &store,
            crate::auth::Tokens::simple(std::time::Duration::from_secs(300)),
        )
        .expect("auth"),
    );
    Applier {
        applied_requests: Default::default(),
        before_batch: Default::default(),
        store,
        lessor: Arc::new(Lessor::new(1)),
        alarms: Arc::new(Alarms::default()),
        auth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId};

    fn applier() -> (Applier, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = rusd_mvcc::StoreConfig::new(dir.path().join("db"));
        (test_applier(config), dir)
    }

    fn put(k: &str) -> Op {
        Op::Put(pb::PutRequest {
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn revisions(r: RaftResponse) -> Vec<i64> {
        let RaftResponse::Batch(results) = r else {
            panic!("not a batch: {r:?}");
        };
        results
            .into_iter()
            .map(|o| match o.expect("applied") {
                Output::Put(p) => p.header.expect("header").revision,
                Output::Nothing(_) => 0,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_batch_gives_each_operation_its_own_revision() {
        let (a, _dir) = applier();
        let batch = RaftRequest::batch([put("a"), put("b"), put("c")]);
        assert_eq!(revisions(a.apply(log_id(3), Some(&batch), None)), [2, 3, 4]);
        // Replayed after a restart: nothing is applied twice.
        assert_eq!(revisions(a.apply(log_id(3), Some(&batch), None)), [0, 0, 0]);
        assert_eq!(a.store.current_revision(), 4);
    }

    #[test]
    fn a_batch_cut_by_a_crash_resumes_after_its_last_applied_operation() {
        let (a, _dir) = applier();
        let one = RaftRequest::new(put("z"));
        assert!(matches!(
            a.apply(log_id(2), Some(&one), None),
            RaftResponse::One(Ok(_))
        ));
        assert_eq!(a.applied_log_id().expect("read"), Some(log_id(2)));
        // The crash came after the first operation of entry 3 was applied (and recorded).
        a.remember_applied_before_batch().expect("remember");
        assert!(a
            .apply_one(log_id(3), Some((1, 3)), Some(&put("a")), None, None)
            .is_ok());
        // Entry 3 is partly applied: openraft must be told 2, so that it hands 3 over again.
        assert_eq!(a.applied_log_id().expect("read"), Some(log_id(2)));
        let batch = RaftRequest::batch([put("a"), put("b"), put("c")]);
        assert_eq!(revisions(a.apply(log_id(3), Some(&batch), None)), [0, 4, 5]);
        assert_eq!(a.applied_log_id().expect("read"), Some(log_id(3)));
        let keys = a
            .store
            .range(&rusd_mvcc::RangeRequest::new("a", "d"))
            .expect("range");
        assert_eq!(
            keys.kvs.iter().map(|kv| kv.version).collect::<Vec<_>>(),
            [1, 1, 1],
            "each key written once"
        );
        // Older entries are skipped whole; a new one-operation entry applies.
        assert_eq!(revisions(a.apply(log_id(2), Some(&batch), None)), [0, 0, 0]);
        let one = RaftRequest::new(put("d"));
        match a.apply(log_id(4), Some(&one), None) {
            RaftResponse::One(Ok(Output::Put(p))) => {
                assert_eq!(p.header.expect("header").revision, 6);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(a.applied_log_id().expect("read"), Some(log_id(4)));
    }

    #[test]
    fn a_failed_operation_in_a_batch_fails_alone() {
        let (a, _dir) = applier();
        let revoke_missing = Op::LeaseRevoke(pb::LeaseRevokeRequest { id: 42 });
        let batch = RaftRequest::batch([put("a"), revoke_missing, put("b")]);
        let RaftResponse::Batch(results) = a.apply(log_id(2), Some(&batch), None) else {
            panic!("not a batch");
        };
        assert!(results[0].is_ok() && results[2].is_ok());
        assert!(results[1].is_err(), "{:?}", results[1]);
        assert_eq!(a.store.current_revision(), 3);
    }
}
