//! [`Ctx`]: what every service shares, and the two ways into the store: proposing through the
//! log, and reading after a read-index round.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use rusd_mvcc::MvccStore;
use rusd_proto::etcdserverpb as pb;

use crate::alarm::Alarms;
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::lease::Lessor;
use crate::raft::{Op, Output, Raft};

/// Shared server state.
pub struct Ctx {
    /// The configuration.
    pub config: ServerConfig,
    /// The engine.
    pub store: MvccStore,
    /// The log.
    pub raft: Raft,
    /// Batches proposals into log entries.
    pub proposer: crate::raft::proposer::Proposer,
    /// Lease deadlines.
    pub lessor: Arc<Lessor>,
    /// Raised alarms.
    pub alarms: Arc<Alarms>,
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// Request-id generator for lease ids (etcd's idutil layout).
    pub ids: crate::ids::IdGenerator,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Watch fan-out.
    pub watch: crate::watch::WatchHub,
}

impl Ctx {
    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term(),
        })
    }

    /// The current Raft term.
    pub fn raft_term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Proposes `op` through the log and waits until it is applied.
    ///
    /// # Errors
    /// What applying returned, or etcd's availability errors.
    pub async fn propose(&self, op: Op) -> Result<Output, ServerError> {
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, self.proposer.propose(op)).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(result) => result,
        }
    }

    /// Waits until this member has applied everything committed when the read began (Raft
    /// read index), so that a local read is linearizable.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn read_index(&self) -> Result<(), ServerError> {
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Err(RaftError::Fatal(_))) => Err(ServerError::Stopped),
            Ok(Err(RaftError::APIError(_))) => Err(ServerError::NoLeader),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// The current leader's id, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Waits up to `wait` for a leader.
    pub async fn wait_leader(&self, wait: Duration) -> bool {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if rx.borrow().current_leader.is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}
