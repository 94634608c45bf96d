//! [`Ctx`]: what every service shares, and the two ways into the store: proposing through the
//! log, and reading after a read-index round.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use rusd_mvcc::MvccStore;
use rusd_proto::etcdserverpb as pb;

use crate::alarm::Alarms;
use crate::auth::{AuthInfo, Credentials};
use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::lease::Lessor;
use crate::raft::route::Forwarded;
use crate::raft::{Op, Output, Raft, RaftRequest};
use rusd_proto::peerpb::ReadIndexRequest;

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
    /// Users, roles, permissions and tokens.
    pub auth: Arc<crate::auth::AuthStore>,
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
    /// Where leader-only requests go.
    pub router: crate::raft::route::Router,
    /// Serializes membership changes.
    pub reconfig: crate::reconfig::Reconfig,
    /// openraft's settings (timeouts).
    pub raft_config: Arc<openraft::Config>,
    /// Shares this member's read-index rounds among concurrent reads.
    pub read_batch: crate::raft::read_batch::ReadBatch,
    /// On the leader: shares leadership confirmations among local and forwarded reads.
    pub leader_batch: crate::raft::read_batch::ReadBatch,
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

    /// Proposes the server's own `op` (not checked against any user's permissions) through the
    /// log and waits until it is applied.
    ///
    /// # Errors
    /// What applying returned, or etcd's availability errors.
    pub async fn propose(&self, op: Op) -> Result<Output, ServerError> {
        self.propose_request(RaftRequest::new(op)).await
    }

    /// Proposes a client's `op`, applied only if `ai` may do it when it is applied.
    ///
    /// # Errors
    /// As [`Ctx::propose`], and etcd's permission errors.
    pub async fn propose_as(&self, op: Op, ai: &AuthInfo) -> Result<Output, ServerError> {
        self.propose_request(RaftRequest::from_client(op, ai)).await
    }

    async fn propose_request(&self, request: RaftRequest) -> Result<Output, ServerError> {
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, self.proposer.propose(request)).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(result) => result,
        }
    }

    /// The caller, who must have the root role while auth is enabled (etcd's
    /// `IsAdminPermitted`).
    ///
    /// # Errors
    /// `InvalidAuthToken`, `UserEmpty`, `UserNotFound`, `PermissionDenied`.
    pub async fn check_admin(&self, cred: &Credentials) -> Result<AuthInfo, ServerError> {
        let ai = self.auth_info(cred).await?;
        self.auth.state().check_admin(&ai)?;
        Ok(ai)
    }

    /// Who a request comes from: the owner of its token, else (with `--client-cert-auth`) the
    /// common name of its client certificate, else nobody (etcd's `AuthInfoFromCtx`).
    ///
    /// # Errors
    /// `InvalidAuthToken` for a token that is unknown, expired or badly signed.
    pub async fn auth_info(&self, cred: &Credentials) -> Result<AuthInfo, ServerError> {
        if let Some(token) = &cred.token {
            let tokens = &self.auth.tokens;
            if let Some(index) = tokens.issued_at(token) {
                // A simple token is known once the entry that issued it is applied here, its
                // effects included: openraft's applied index moves only after the whole apply
                // (the engine's own moves at the commit, before the token is recorded).
                let applied = self
                    .raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .map_or(0, |l| l.index);
                if applied < index {
                    let wait = self.raft.wait(Some(self.config.request_timeout()));
                    if wait
                        .applied_index_at_least(Some(index), "auth token")
                        .await
                        .is_err()
                    {
                        return Err(ServerError::InvalidAuthToken);
                    }
                }
            }
            let owner = tokens.owner(token).ok_or(ServerError::InvalidAuthToken)?;
            let revision = owner.revision.unwrap_or_else(|| self.auth.revision());
            return Ok(AuthInfo {
                username: owner.username,
                revision,
            });
        }
        match &cred.cert_common_name {
            Some(cn) if self.config.client_tls.client_cert_auth => Ok(AuthInfo {
                username: cn.clone(),
                revision: self.auth.revision(),
            }),
            _ => Ok(AuthInfo::default()),
        }
    }

    /// Waits until this member has applied everything committed when the read began (Raft
    /// read index), so that a local read is linearizable.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn read_index(&self) -> Result<(), ServerError> {
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, self.read_index_round()).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(result) => result,
        }
    }

    async fn read_index_round(&self) -> Result<(), ServerError> {
        let index = match self.sole_voter_read_index() {
            Some(index) => index,
            None => self.shared_read_index().await?,
        };
        if self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
            < index
        {
            self.raft
                .wait(None)
                .applied_index_at_least(Some(index), "read index")
                .await
                .map_err(|_| ServerError::Stopped)?;
        }
        Ok(())
    }

    /// The read index of a member that is the leader and the only voter: its last log index,
    /// taken from the metrics without a round through the Raft core.
    ///
    /// No other member can be leader while this one is the only voter of every configuration
    /// in effect (openraft's effective membership includes appended, uncommitted changes), so
    /// no quorum needs asking, and no leader transfer can run (it needs a second voter), so
    /// the router's transfer gate is not taken either; the last index is at least the commit index and the leader's
    /// first entry of its term, which is what the core would return. Performance: the core's
    /// round trip (two task hand-offs) was a quarter of a single-client linearizable read.
    fn sole_voter_read_index(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let me = self.member_id;
        let sole = m.state == openraft::ServerState::Leader
            && m.current_leader == Some(me)
            && m.vote.is_committed()
            && m.vote.leader_id().voted_for() == Some(me)
            && m.membership_config
                .membership()
                .get_joint_config()
                .iter()
                .all(|voters| voters.len() == 1 && voters.contains(&me));
        sole.then(|| m.last_log_index.unwrap_or(0))
    }

    /// A read index from a shared round: the leader's confirmation with a quorum, asked
    /// locally or forwarded.
    async fn shared_read_index(&self) -> Result<u64, ServerError> {
        let (router, raft, wait) = (self.router.clone(), self.raft.clone(), self.leader_wait());
        let leader_batch = self.leader_batch.clone();
        self.read_batch
            .join(move || async move {
                let forwarded = router
                    .forward(wait, |mut leader| async move {
                        leader.read_index(ReadIndexRequest {}).await
                    })
                    .await?;
                match forwarded {
                    Forwarded::Local => {
                        leader_batch
                            .join(move || confirm_leadership(router, raft))
                            .await
                    }
                    Forwarded::Remote(answer) => Ok(answer.index),
                }
            })
            .await
    }

    /// On the leader: confirms the leadership with a quorum and returns the index a
    /// linearizable read must wait for.
    ///
    /// # Errors
    /// Not the leader any more; stopped.
    pub async fn leader_read_index(&self) -> Result<u64, ServerError> {
        let (router, raft) = (self.router.clone(), self.raft.clone());
        self.leader_batch
            .join(move || confirm_leadership(router, raft))
            .await
    }

    /// How long a request waits for a leader to be known (a few elections' worth; etcd lets
    /// a proposal wait for its whole request timeout).
    pub fn leader_wait(&self) -> Duration {
        self.config.election_timeout * 5
    }

    /// The membership this member applies (openraft's effective one).
    pub fn membership(&self) -> crate::raft::Membership {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// The members as etcd lists them (see [`crate::reconfig::members`]).
    pub fn members(&self) -> Vec<pb::Member> {
        crate::reconfig::members(&self.membership())
    }

    /// Whether this member is a learner (etcd then serves only Status and serializable
    /// Range). A member added as a voter and not yet promoted is not one.
    pub fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        crate::reconfig::is_learner(m.membership_config.membership(), self.member_id)
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

/// One read-index round on the leader: confirms the leadership with a quorum and returns the
/// commit index a linearizable read must wait for. Batched by [`Ctx::leader_batch`].
async fn confirm_leadership(
    router: crate::raft::route::Router,
    raft: Raft,
) -> Result<u64, ServerError> {
    let _pass = router.pass().await;
    match raft.get_read_log_id().await {
        Ok((read, _)) => Ok(read.map_or(0, |l| l.index)),
        Err(RaftError::Fatal(_)) => Err(ServerError::Stopped),
        Err(RaftError::APIError(_)) => Err(ServerError::NoLeader),
    }
}
