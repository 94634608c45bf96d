//! The permissions each request needs (etcd's `authApplierV3` and `checkTxnAuth`):
//!
//! | request | needs |
//! |---|---|
//! | Range | read on its range |
//! | Put | write on the key; read too with `prev_kv`; write on every key of its lease already |
//! | DeleteRange | write on its range; read too with `prev_kv` |
//! | Txn | read on every compare's range, and what each operation of both branches needs (a put's lease is not checked, as in etcd) |
//! | LeaseRevoke | write on every key attached to the lease |
//! | auth management, Defragment, Snapshot, Hash, HashKV, member changes | the root role |
//!
//! Compaction, lease grant and keep-alive, alarms, Status and MoveLeader need nothing, as in
//! etcd 3.4.

use rusd_proto::etcdserverpb as pb;

use super::perms::Access;
use super::store::AuthState;
use super::AuthInfo;
use crate::error::ServerError;
use crate::raft::Op;

/// The keys attached to a lease.
pub type LeaseKeys<'a> = &'a dyn Fn(i64) -> Vec<Vec<u8>>;

impl AuthState {
    /// Range (and Watch): read on `[key, range_end)`.
    ///
    /// # Errors
    /// etcd's permission errors.
    pub fn check_range(
        &self,
        ai: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ServerError> {
        self.check(ai, Access::Read, key, range_end)
    }

    /// A write operation about to be applied for `ai`.
    ///
    /// # Errors
    /// etcd's permission errors.
    pub fn check_op(
        &self,
        ai: &AuthInfo,
        op: &Op,
        lease_keys: LeaseKeys<'_>,
    ) -> Result<(), ServerError> {
        if !self.enabled() {
            return Ok(());
        }
        match op {
            Op::Put(p) => {
                self.check(ai, Access::Write, &p.key, b"")?;
                if p.lease != 0 {
                    self.check_lease(ai, p.lease, lease_keys)?;
                }
                if p.prev_kv {
                    self.check(ai, Access::Read, &p.key, b"")?;
                }
                Ok(())
            }
            Op::DeleteRange(d) => self.check_delete(ai, d),
            Op::Txn(t) => self.check_txn(ai, t),
            Op::LeaseRevoke(r) => self.check_lease(ai, r.id, lease_keys),
            _ => Ok(()),
        }
    }

    /// LeaseRevoke, or a put attaching the lease: write on every key the lease has.
    fn check_lease(
        &self,
        ai: &AuthInfo,
        lease: i64,
        lease_keys: LeaseKeys<'_>,
    ) -> Result<(), ServerError> {
        for key in lease_keys(lease) {
            self.check(ai, Access::Write, &key, b"")?;
        }
        Ok(())
    }

    fn check_delete(&self, ai: &AuthInfo, d: &pb::DeleteRangeRequest) -> Result<(), ServerError> {
        self.check(ai, Access::Write, &d.key, &d.range_end)?;
        if d.prev_kv {
            self.check(ai, Access::Read, &d.key, &d.range_end)?;
        }
        Ok(())
    }

    /// Txn: read on every compare, and every operation of both branches.
    ///
    /// # Errors
    /// etcd's permission errors.
    pub fn check_txn(&self, ai: &AuthInfo, t: &pb::TxnRequest) -> Result<(), ServerError> {
        use pb::request_op::Request;
        for c in &t.compare {
            self.check(ai, Access::Read, &c.key, &c.range_end)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    self.check(ai, Access::Read, &r.key, &r.range_end)?
                }
                Some(Request::RequestPut(p)) => self.check(ai, Access::Write, &p.key, b"")?,
                Some(Request::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.check(ai, Access::Read, &d.key, &d.range_end)?;
                    }
                    self.check(ai, Access::Write, &d.key, &d.range_end)?;
                }
                Some(Request::RequestTxn(nested)) => self.check_txn(ai, nested)?,
                None => {}
            }
        }
        Ok(())
    }
}
