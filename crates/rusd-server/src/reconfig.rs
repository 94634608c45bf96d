//! Membership changes, run on the leader: etcd's MemberAdd, MemberRemove, MemberUpdate,
//! MemberPromote, a started member's publish of its name and client URLs, the promotion of
//! caught-up members, and MoveLeader.
//!
//! The member list is openraft's membership (see [`crate::membership`]), so every change is an
//! openraft membership change. openraft runs one at a time, so they are serialized here, and
//! retried while another (for example an automatic promotion) is in flight.
//!
//! Where rusd differs from etcd on purpose: a member added as a voter joins Raft as a learner
//! and is promoted once it has caught up ([`MemberNode::promote`]). Until then it is listed as
//! a voter (as etcd lists it) but does not count towards the quorum, so adding a member that
//! has not started yet never makes a cluster lose its quorum (with etcd, adding a second member
//! to a single-member cluster blocks every write until the new member starts).
//!
//! `--strict-reconfig-check` (on by default) refuses MemberAdd, MemberRemove and MemberPromote
//! as etcd 3.4 does (`etcdserver/server.go` `mayAddMember`, `mayRemoveMember`,
//! `mayPromoteMember`; `membership/cluster.go` `IsReadyTo*`), on the leader, which has every
//! change: the voting members are the ones etcd lists as voters (members waiting for their
//! promotion included); a member has *started* once it has a name (an initial member, or one
//! that has published, etcd's `IsStarted`); a voter is *connected* when it has answered the
//! leader's Raft RPCs without a failure for 5 s (etcd's `HealthInterval` and `ActiveSince`, from
//! [`crate::raft::network::Peers::active_since`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use rusd_proto::etcdserverpb as pb;

use crate::context::Ctx;
use crate::error::ServerError;
use crate::membership::{new_member_id, MemberNode};
use crate::raft::proposer::map_write_error;
use crate::raft::Membership;

/// A learner is ready to vote once it has this share of the leader's log (etcd: 90%).
const READY_PERCENT: u64 = 90;
/// How long a change waits for another one in flight before giving up.
const IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);
/// How long a voter must have been connected to count as active (etcd's `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// Serializes membership changes on this member.
#[derive(Default)]
pub struct Reconfig {
    lock: tokio::sync::Mutex<()>,
}

/// The members as etcd lists them, sorted by id.
pub fn members(membership: &Membership) -> Vec<pb::Member> {
    let mut out: Vec<pb::Member> = membership
        .nodes()
        .map(|(id, node)| to_pb(*id, node, is_learner(membership, *id)))
        .collect();
    out.sort_by_key(|m| m.id);
    out
}

fn to_pb(id: u64, node: &MemberNode, is_learner: bool) -> pb::Member {
    pb::Member {
        id,
        name: node.name.clone(),
        peer_ur_ls: node.peer_urls.clone(),
        client_ur_ls: node.client_urls.clone(),
        is_learner,
    }
}

fn is_voter(membership: &Membership, id: u64) -> bool {
    membership.voter_ids().any(|v| v == id)
}

/// Whether `id` is a learner as etcd sees it: a Raft learner not waiting to be promoted.
pub fn is_learner(membership: &Membership, id: u64) -> bool {
    membership.get_node(&id).is_some_and(|node| !node.promote) && !is_voter(membership, id)
}

/// etcd's quorum of `n` voting members.
fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// etcd's `IsReadyToAddVotingMember`: with the new (unstarted) member, a quorum of the voters
/// have started; a single started member may always get a second (restoring from a backup).
fn ready_to_add_voter(voters: usize, started: usize) -> bool {
    let after = voters + 1;
    (started == 1 && after == 2) || started >= quorum(after)
}

/// etcd's `IsReadyToRemoveVotingMember`: of the `others` voters that remain, a quorum have
/// started.
fn ready_to_remove_voter(others: usize, others_started: usize) -> bool {
    others_started >= quorum(others)
}

/// etcd's `IsReadyToPromoteMember`: a quorum of the voters have started, counting the learner
/// as a started voter.
fn ready_to_promote(voters: usize, started: usize) -> bool {
    started + 1 >= quorum(voters + 1)
}

/// etcd's `mayRemoveMember` health rule: of `voters`, `active` (the leader included) have been
/// connected for a health interval, the removed one among them; the active ones left must be
/// a quorum of the voters left.
fn remove_keeps_active_quorum(voters: usize, active: usize) -> bool {
    active.saturating_sub(1) >= quorum(voters.saturating_sub(1))
}

/// The voting members as etcd lists them (Raft voters and members waiting to be promoted),
/// with whether each has started.
fn voting_members(membership: &Membership) -> Vec<(u64, bool)> {
    membership
        .nodes()
        .filter(|(id, _)| !is_learner(membership, **id))
        .map(|(id, node)| (*id, !node.name.is_empty()))
        .collect()
}

/// etcd checks peer URLs with `types.NewURLs`: each must be a URL with a scheme and a host.
fn valid_url(u: &str) -> bool {
    match u.split_once("://") {
        Some((scheme, rest)) => {
            matches!(scheme, "http" | "https" | "unix" | "unixs")
                && !rest.is_empty()
                && !rest.contains('/')
        }
        None => false,
    }
}

impl Ctx {
    async fn change(&self, change: ChangeMembers<u64, MemberNode>) -> Result<(), ServerError> {
        let deadline = tokio::time::Instant::now() + IN_PROGRESS_WAIT;
        loop {
            match self.raft.change_membership(change.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::LearnerNotFound(_),
                ))) => return Err(ServerError::MemberNotFound),
                Err(e) => return Err(map_write_error(&e)),
            }
        }
    }

    /// Fails unless this member leads.
    ///
    /// # Errors
    /// `NotLeader` or `NoLeader`.
    pub fn require_leader(&self) -> Result<(), ServerError> {
        match self.leader() {
            Some(l) if l == self.member_id => Ok(()),
            Some(_) => Err(ServerError::NotLeader),
            None => Err(ServerError::NoLeader),
        }
    }

    /// Whether the leader (this member) has been connected to voter `id` for a health interval.
    fn connected_for_health_interval(&self, id: u64) -> bool {
        id == self.member_id
            || self
                .router
                .peers()
                .active_since(id)
                .is_some_and(|since| since.elapsed() >= HEALTH_INTERVAL)
    }

    /// `--strict-reconfig-check` for MemberAdd (etcd's `mayAddMember`): a voter only when
    /// enough members have started, and any member only while the leader is connected to every
    /// voter.
    fn may_add_member(&self, current: &Membership, is_learner: bool) -> Result<(), ServerError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let voters = voting_members(current);
        let started = voters.iter().filter(|(_, s)| *s).count();
        if !is_learner && !ready_to_add_voter(voters.len(), started) {
            tracing::warn!(
                voters = voters.len(),
                started,
                "rejecting member add: started members would be fewer than a quorum"
            );
            return Err(ServerError::NotEnoughStartedMembers);
        }
        // etcd 3.4 checks this for learners too.
        if !voters
            .iter()
            .all(|(id, _)| self.connected_for_health_interval(*id))
        {
            tracing::warn!(
                "rejecting member add: the leader has not been connected to every voting member \
                 for the last health interval"
            );
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// `--strict-reconfig-check` for MemberRemove (etcd's `mayRemoveMember`): learners may always
    /// go; a voter only when enough of the others have started and, unless it is down, when the
    /// active voters left are a quorum.
    fn may_remove_member(&self, current: &Membership, id: u64) -> Result<(), ServerError> {
        if !self.config.strict_reconfig_check || is_learner(current, id) {
            return Ok(());
        }
        let voters = voting_members(current);
        let others: Vec<bool> = voters
            .iter()
            .filter(|(v, _)| *v != id)
            .map(|(_, started)| *started)
            .collect();
        let others_started = others.iter().filter(|s| **s).count();
        if !ready_to_remove_voter(others.len(), others_started) {
            tracing::warn!(
                member = format!("{id:x}").as_str(),
                "rejecting member remove: started members would be fewer than a quorum"
            );
            return Err(ServerError::NotEnoughStartedMembers);
        }
        // A member that is down is not part of the active quorum: safe to remove.
        if id != self.member_id && self.router.peers().active_since(id).is_none() {
            return Ok(());
        }
        let active = voters
            .iter()
            .filter(|(v, _)| self.connected_for_health_interval(*v))
            .count();
        if !remove_keeps_active_quorum(voters.len(), active) {
            tracing::warn!(
                member = format!("{id:x}").as_str(),
                active,
                voters = voters.len(),
                "rejecting member remove: the active voting members left would be fewer than a \
                 quorum"
            );
            return Err(ServerError::Unhealthy);
        }
        Ok(())
    }

    /// `--strict-reconfig-check` for MemberPromote (etcd's `mayPromoteMember`, after the
    /// learner's readiness).
    fn may_promote_member(&self, current: &Membership, id: u64) -> Result<(), ServerError> {
        if !self.config.strict_reconfig_check {
            return Ok(());
        }
        let voters = voting_members(current);
        let started = voters.iter().filter(|(_, s)| *s).count();
        if !ready_to_promote(voters.len(), started) {
            tracing::warn!(
                member = format!("{id:x}").as_str(),
                "rejecting member promote: started members would be fewer than a quorum"
            );
            return Err(ServerError::NotEnoughStartedMembers);
        }
        Ok(())
    }

    /// MemberAdd on the leader.
    ///
    /// # Errors
    /// etcd's membership errors; not the leader.
    pub async fn leader_member_add(
        &self,
        r: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, ServerError> {
        self.require_leader()?;
        if r.peer_ur_ls.is_empty() || !r.peer_ur_ls.iter().all(|u| valid_url(u)) {
            return Err(ServerError::MemberBadUrls);
        }
        let _guard = self.reconfig.lock.lock().await;
        let current = self.membership();
        // etcd checks before validating the change itself (that happens when it is applied).
        self.may_add_member(&current, r.is_learner)?;
        let taken: BTreeSet<&String> = current.nodes().flat_map(|(_, n)| &n.peer_urls).collect();
        if r.peer_ur_ls.iter().any(|u| taken.contains(u)) {
            return Err(ServerError::PeerUrlExists);
        }
        let learners = current
            .nodes()
            .filter(|(id, n)| !is_voter(&current, **id) && !n.promote)
            .count();
        if r.is_learner && learners >= 1 {
            return Err(ServerError::TooManyLearners);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let id = new_member_id(&r.peer_ur_ls, &self.config.initial_cluster_token, now);
        if current.get_node(&id).is_some() {
            return Err(ServerError::MemberExists);
        }
        let node = MemberNode {
            name: String::new(),
            peer_urls: r.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            promote: !r.is_learner,
        };
        self.change(ChangeMembers::AddNodes(BTreeMap::from([(
            id,
            node.clone(),
        )])))
        .await?;
        tracing::info!(
            member = format!("{id:x}").as_str(),
            peer_urls = ?r.peer_ur_ls,
            learner = r.is_learner,
            "added member"
        );
        Ok(pb::MemberAddResponse {
            header: self.header(0),
            member: Some(to_pb(id, &node, r.is_learner)),
            members: self.members(),
        })
    }

    /// MemberRemove on the leader.
    ///
    /// # Errors
    /// etcd's membership errors; not the leader.
    pub async fn leader_member_remove(
        &self,
        r: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, ServerError> {
        self.require_leader()?;
        let _guard = self.reconfig.lock.lock().await;
        let current = self.membership();
        if current.get_node(&r.id).is_none() {
            return Err(ServerError::MemberNotFound);
        }
        self.may_remove_member(&current, r.id)?;
        // Without `retain`, removing a voter removes its node too; a learner is removed as a
        // node. (When the leader removes itself, it stops once the change is applied, so
        // there must be no second step.)
        let change = if is_voter(&current, r.id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([r.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([r.id]))
        };
        self.change(change).await?;
        tracing::info!(member = format!("{:x}", r.id).as_str(), "removed member");
        Ok(pb::MemberRemoveResponse {
            header: self.header(0),
            members: self.members(),
        })
    }

    /// MemberUpdate on the leader: new peer URLs.
    ///
    /// # Errors
    /// etcd's membership errors; not the leader.
    pub async fn leader_member_update(
        &self,
        r: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, ServerError> {
        self.require_leader()?;
        if r.peer_ur_ls.is_empty() || !r.peer_ur_ls.iter().all(|u| valid_url(u)) {
            return Err(ServerError::MemberBadUrls);
        }
        let _guard = self.reconfig.lock.lock().await;
        let current = self.membership();
        let Some(node) = current.get_node(&r.id) else {
            return Err(ServerError::MemberNotFound);
        };
        let others: BTreeSet<&String> = current
            .nodes()
            .filter(|(id, _)| **id != r.id)
            .flat_map(|(_, n)| &n.peer_urls)
            .collect();
        if r.peer_ur_ls.iter().any(|u| others.contains(u)) {
            return Err(ServerError::PeerUrlExists);
        }
        let mut node = node.clone();
        node.peer_urls = r.peer_ur_ls.clone();
        self.change(ChangeMembers::SetNodes(BTreeMap::from([(r.id, node)])))
            .await?;
        Ok(pb::MemberUpdateResponse {
            header: self.header(0),
            members: self.members(),
        })
    }

    /// MemberPromote on the leader: a learner that has caught up becomes a voter.
    ///
    /// # Errors
    /// etcd's membership errors; not the leader.
    pub async fn leader_member_promote(
        &self,
        r: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, ServerError> {
        self.require_leader()?;
        let _guard = self.reconfig.lock.lock().await;
        let current = self.membership();
        let Some(node) = current.get_node(&r.id) else {
            return Err(ServerError::MemberNotFound);
        };
        if is_voter(&current, r.id) || node.promote {
            return Err(ServerError::MemberNotLearner);
        }
        if !self.caught_up(r.id) {
            return Err(ServerError::LearnerNotReady);
        }
        self.may_promote_member(&current, r.id)?;
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([r.id])))
            .await?;
        tracing::info!(member = format!("{:x}", r.id).as_str(), "promoted member");
        Ok(pb::MemberPromoteResponse {
            header: self.header(0),
            members: self.members(),
        })
    }

    /// A started member's name and client URLs, recorded on the leader (etcd's publish).
    ///
    /// # Errors
    /// Not the leader; the member is unknown.
    pub async fn leader_publish(
        &self,
        id: u64,
        name: String,
        client_urls: Vec<String>,
    ) -> Result<(), ServerError> {
        self.require_leader()?;
        let _guard = self.reconfig.lock.lock().await;
        let current = self.membership();
        let Some(node) = current.get_node(&id) else {
            return Err(ServerError::MemberNotFound);
        };
        if node.name == name && node.client_urls == client_urls {
            return Ok(());
        }
        let mut node = node.clone();
        node.name = name;
        node.client_urls = client_urls;
        self.change(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])))
            .await
    }

    /// Whether learner `id` has this leader's log up to [`READY_PERCENT`].
    fn caught_up(&self, id: u64) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map_or(0, |l| l.index);
        matched * 100 >= last * READY_PERCENT && matched > 0
    }

    /// On the leader: promotes members added as voters once they have caught up.
    pub async fn promote_caught_up(&self) {
        if self.require_leader().is_err() {
            return;
        }
        let current = self.membership();
        let ready: Vec<(u64, MemberNode)> = current
            .nodes()
            .filter(|(id, n)| n.promote && self.caught_up(**id))
            .map(|(id, n)| (*id, n.clone()))
            .collect();
        for (id, mut node) in ready {
            let _guard = self.reconfig.lock.lock().await;
            if !is_voter(&current, id) {
                if let Err(e) = self
                    .change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                    .await
                {
                    tracing::warn!(member = format!("{id:x}").as_str(), error = %e, "promoting a member failed");
                    continue;
                }
            }
            node.promote = false;
            if let Err(e) = self
                .change(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])))
                .await
            {
                tracing::warn!(member = format!("{id:x}").as_str(), error = %e, "recording a promotion failed");
            } else {
                tracing::info!(
                    member = format!("{id:x}").as_str(),
                    "member caught up: now a voter"
                );
            }
        }
    }
}

impl Ctx {
    /// MoveLeader on the leader.
    ///
    /// openraft 0.9 has no leadership transfer, and a follower refuses to vote while its leader
    /// lease (the election timeout's upper bound) runs. So the leader stops sending anything
    /// (heartbeats off, local writes and read-index rounds held at the router's gate) until
    /// the leases have run out, then asks the transferee, which has the whole log, to start an
    /// election; it wins before any other follower's election timer fires. Writes pause for
    /// about one lease.
    ///
    /// # Errors
    /// Not the leader; the target is not a voter ("bad leader transferee"); the transfer did
    /// not complete in time.
    pub async fn leader_transfer(&self, target: u64) -> Result<(), ServerError> {
        self.require_leader()?;
        if target == self.member_id {
            return Ok(());
        }
        let current = self.membership();
        let node = match current.get_node(&target) {
            Some(node) if is_voter(&current, target) => node.clone(),
            _ => return Err(ServerError::BadLeaderTransferee),
        };
        let _guard = self.reconfig.lock.lock().await;
        let gate = self.router.close().await;
        let lease = Duration::from_millis(self.raft_config.election_timeout_max);
        // The transferee must have every entry, or the others would refuse to vote for it.
        let caught_up = async {
            let last = self.raft.metrics().borrow().last_log_index;
            let mut rx = self.raft.metrics();
            loop {
                let matched = rx
                    .borrow()
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&target).cloned().flatten())
                    .map(|l| l.index);
                if matched >= last {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(lease, caught_up).await.is_err() {
            return Err(ServerError::Timeout);
        }
        let runtime = self.raft.runtime_config();
        runtime.heartbeat(false);
        runtime.elect(false);
        tokio::time::sleep(lease + Duration::from_millis(50)).await;
        let asked = match self.router.peers().client(target, &node) {
            Ok(mut client) => client
                .campaign(rusd_proto::peerpb::CampaignRequest {})
                .await
                .map_err(crate::raft::route::from_peer_status),
            Err(e) => Err(ServerError::Internal(e.to_string())),
        };
        let moved = match asked {
            Ok(_) => {
                let mut rx = self.raft.metrics();
                tokio::time::timeout(lease * 2, async {
                    loop {
                        if rx.borrow().current_leader == Some(target) {
                            return true;
                        }
                        if rx.changed().await.is_err() {
                            return false;
                        }
                    }
                })
                .await
                .unwrap_or(false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the transferee did not start an election");
                false
            }
        };
        runtime.heartbeat(true);
        runtime.elect(true);
        drop(gate);
        if moved {
            tracing::info!(
                from = format!("{:x}", self.member_id).as_str(),
                to = format!("{target:x}").as_str(),
                "leadership transferred"
            );
            Ok(())
        } else {
            Err(ServerError::TransferTimeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arithmetic of etcd 3.4's `IsReadyToAddVotingMember`, `IsReadyToRemoveVotingMember`,
    /// `IsReadyToPromoteMember` and `mayRemoveMember`.
    #[test]
    fn strict_reconfig_arithmetic_is_etcds() {
        // Add: (voters, started) -> ready.
        assert!(ready_to_add_voter(1, 1), "a single member may get a second");
        assert!(!ready_to_add_voter(2, 1), "1 of 3 started");
        assert!(ready_to_add_voter(2, 2));
        assert!(ready_to_add_voter(3, 3), "3 of 4 started");
        assert!(!ready_to_add_voter(3, 2), "2 of 4 started");
        assert!(ready_to_add_voter(4, 3), "3 of 5 started");
        assert!(!ready_to_add_voter(5, 3), "3 of 6 started");
        assert!(!ready_to_add_voter(0, 0));
        // Remove: (other voters, of them started) -> ready.
        assert!(ready_to_remove_voter(2, 2));
        assert!(!ready_to_remove_voter(2, 1));
        assert!(ready_to_remove_voter(3, 2));
        assert!(!ready_to_remove_voter(1, 0), "the only started member");
        assert!(
            !ready_to_remove_voter(0, 0),
            "the last member cannot be removed"
        );
        // Promote: (voters, started) -> ready, the learner counted as a started voter.
        assert!(ready_to_promote(1, 1));
        assert!(ready_to_promote(2, 1), "2 of 3 started with the learner");
        assert!(!ready_to_promote(3, 1), "2 of 4 started with the learner");
        assert!(ready_to_promote(3, 2));
        // Remove, health: (voters, active with the leader) -> the rest stay a quorum.
        assert!(remove_keeps_active_quorum(3, 3));
        assert!(!remove_keeps_active_quorum(3, 2), "3 members, one down");
        assert!(remove_keeps_active_quorum(5, 4), "5 members, one down");
        assert!(!remove_keeps_active_quorum(5, 3), "5 members, two down");
        assert!(remove_keeps_active_quorum(2, 2));
        assert!(!remove_keeps_active_quorum(2, 1));
        assert!(!remove_keeps_active_quorum(1, 1), "the last member");
    }
}
