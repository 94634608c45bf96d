//! Lease records and the keys attached to them.
//!
//! The store keeps what must survive a restart and change atomically with keys: which leases
//! exist with which TTL (table `lease`), and which keys each holds (rebuilt from the keys'
//! records on open). Deadlines and expiry are the server's: it revokes an expired lease
//! through [`WriteTxn::lease_revoke`] like any other write.

use std::ops::{Bound, ControlFlow};

use super::write_txn::LeaseOp;
use super::{Leases, MvccStore};
use crate::backend::{ReadTx, Table};
use crate::codec::{put_varint, take_varint};
use crate::error::{Error, Result};
use crate::request::DeleteRangeRequest;
use crate::revision::LeaseId;
use crate::store::write_txn::WriteTxn;

/// A lease as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// Its granted TTL in seconds.
    pub ttl: i64,
    /// The keys attached to it, sorted.
    pub keys: Vec<Vec<u8>>,
}

fn encode_lease(ttl: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    put_varint(&mut out, ttl as u64);
    out
}

impl Leases {
    /// Loads lease records (keys were attached while the index was rebuilt).
    pub(crate) fn load(&mut self, tx: &ReadTx) -> Result<()> {
        let mut failure = None;
        tx.scan(
            Table::Lease,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            |k, v| {
                let id = k.try_into().ok().map(i64::from_be_bytes);
                let mut v = v;
                match (id, take_varint(&mut v)) {
                    (Some(id), Some(ttl)) => {
                        self.by_id.entry(LeaseId(id)).or_default().ttl = ttl as i64;
                        ControlFlow::Continue(())
                    }
                    _ => {
                        failure = Some(Error::Corrupted(format!("lease record {k:?}")));
                        ControlFlow::Break(())
                    }
                }
            },
        )?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl WriteTxn<'_> {
    /// Creates lease `id` with `ttl` seconds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for id 0, [`Error::LeaseExists`]. Negative ids are
    /// accepted, as etcd does (only the ids it picks itself are positive).
    pub fn lease_grant(&mut self, id: LeaseId, ttl: i64) -> Result<()> {
        if id.0 == 0 {
            return Err(Error::InvalidArgument("lease id 0 is not a lease".into()));
        }
        if self.lease_exists(id) {
            return Err(Error::LeaseExists(id));
        }
        let ttl = ttl.max(1);
        self.batch_mut()
            .put(Table::Lease, id.0.to_be_bytes().to_vec(), encode_lease(ttl));
        self.push_lease_op(LeaseOp::Grant(id, ttl));
        Ok(())
    }

    /// Removes lease `id` and deletes every key attached to it, all in this txn's revision.
    /// Returns the number of keys deleted.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`].
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<i64> {
        if !self.lease_exists(id) {
            return Err(Error::LeaseNotFound(id));
        }
        // Sorted, so that every member deletes in the same order (same sub-revisions).
        let keys: Vec<Vec<u8>> = self
            .inner()
            .leases
            .read()
            .by_id
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default();
        let mut deleted = 0;
        for key in keys {
            deleted += self
                .delete_range(&DeleteRangeRequest::new(key, Vec::new()))?
                .deleted;
        }
        self.batch_mut()
            .delete(Table::Lease, id.0.to_be_bytes().to_vec());
        self.push_lease_op(LeaseOp::Revoke(id));
        Ok(deleted)
    }
}

impl MvccStore {
    /// Creates lease `id` with `ttl` seconds (see [`WriteTxn::lease_grant`]).
    ///
    /// # Errors
    /// As [`WriteTxn::lease_grant`].
    pub fn lease_grant(&self, id: LeaseId, ttl: i64) -> Result<()> {
        let mut w = self.write();
        w.lease_grant(id, ttl)?;
        w.commit()?;
        Ok(())
    }

    /// Revokes lease `id`, deleting its keys in one revision; returns the revision after it.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`].
    pub fn lease_revoke(&self, id: LeaseId) -> Result<i64> {
        let mut w = self.write();
        w.lease_revoke(id)?;
        w.commit()
    }

    /// Lease `id` with its attached keys, if it exists.
    pub fn lease(&self, id: LeaseId) -> Option<Lease> {
        let leases = self.inner.leases.read();
        leases.by_id.get(&id).filter(|l| l.ttl != 0).map(|l| Lease {
            id,
            ttl: l.ttl,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// Every lease (without keys), sorted by id.
    pub fn leases(&self) -> Vec<Lease> {
        let leases = self.inner.leases.read();
        let mut out: Vec<Lease> = leases
            .by_id
            .iter()
            .filter(|(_, l)| l.ttl != 0)
            .map(|(id, l)| Lease {
                id: *id,
                ttl: l.ttl,
                keys: Vec::new(),
            })
            .collect();
        out.sort_by_key(|l| l.id);
        out
    }
}
