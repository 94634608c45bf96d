//! The Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases.
//!
//! Grants and revokes go through the log (every member applies the same lease and deletes the
//! same keys in the same revision). Keep-alives, TTL queries and lease lists are answered from
//! the leader's [`crate::lease::Lessor`] and the engine, as etcd's leader answers them from its
//! lessor without a log round.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rusd_mvcc::LeaseId;
use rusd_proto::etcdserverpb as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Credentials;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::lease::MAX_LEASE_TTL;
use crate::quota;
use crate::raft::route::Forwarded;
use crate::raft::{Op, Output};

/// etcd's Lease service.
#[derive(Clone)]
pub struct LeaseService {
    ctx: Arc<Ctx>,
}

impl LeaseService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }
}

fn unexpected(output: &Output) -> ServerError {
    ServerError::Internal(format!("unexpected apply output {output:?}"))
}

/// The lease operations, shared by gRPC and the HTTP gateway.
impl LeaseService {
    /// LeaseGrant, through the log. ID 0 lets the server choose; a TTL below the minimum is
    /// raised to it (the response says which TTL was granted).
    ///
    /// # Errors
    /// NOSPACE / CORRUPT, [`ServerError::LeaseTtlTooLarge`], lease exists, availability errors.
    pub async fn do_lease_grant(
        &self,
        mut g: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, ServerError> {
        let ctx = &self.ctx;
        // etcd's quotaLeaseServer checks the quota before anything else.
        quota::check_space(ctx, quota::LEASE_GRANT_COST).await?;
        if g.ttl > MAX_LEASE_TTL {
            return Err(ServerError::LeaseTtlTooLarge);
        }
        if g.id == 0 {
            g.id = ctx.ids.next_lease_id();
        }
        match ctx.propose(Op::LeaseGrant(g)).await? {
            Output::LeaseGrant(mut out) => {
                // A grant does not change the store revision: the header carries the current one.
                let revision = out.header.map_or(0, |h| h.revision);
                out.header = ctx.header(revision);
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// LeaseRevoke, through the log: the lease's keys are deleted in one revision.
    ///
    /// # Errors
    /// Lease not found, availability errors.
    pub async fn do_lease_revoke(
        &self,
        r: pb::LeaseRevokeRequest,
        cred: &Credentials,
    ) -> Result<pb::LeaseRevokeResponse, ServerError> {
        let ctx = &self.ctx;
        quota::check_corrupt(ctx)?;
        let ai = ctx.auth_info(cred).await?;
        match ctx.propose_as(Op::LeaseRevoke(r), &ai).await? {
            Output::LeaseRevoke(mut out) => {
                let revision = out.header.map_or(0, |h| h.revision);
                out.header = ctx.header(revision);
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// One keep-alive: renews the lease to its full TTL. An unknown or expired lease is not an
    /// error but a response with TTL 0; for an expired one this waits until its revoke is
    /// applied (etcd does the same, so that the keys are gone once TTL 0 is seen). The header
    /// is taken before renewing, as etcd does.
    ///
    /// # Errors
    /// Availability errors (no leader; an expired lease that could not be revoked in time).
    pub async fn do_lease_keep_alive(
        &self,
        k: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, ServerError> {
        let forwarded = self
            .ctx
            .router
            .forward(self.ctx.leader_wait(), |mut c| async move {
                c.lease_keep_alive(k).await
            })
            .await?;
        match forwarded {
            Forwarded::Local => self.leader_lease_keep_alive(k).await,
            Forwarded::Remote(mut out) => {
                out.header = self.ctx.header(self.ctx.store.current_revision());
                Ok(out)
            }
        }
    }

    /// A keep-alive on the leader.
    ///
    /// # Errors
    /// Availability errors.
    pub async fn leader_lease_keep_alive(
        &self,
        k: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, ServerError> {
        let ctx = &self.ctx;
        let header = ctx.header(ctx.store.current_revision());
        let ttl = match ctx
            .lessor
            .renew_or_wait_revoked(LeaseId(k.id), ctx.config.request_timeout())
            .await
        {
            Some(Some(ttl)) => ttl,
            Some(None) => 0,
            None => return Err(ServerError::Timeout),
        };
        Ok(pb::LeaseKeepAliveResponse {
            header,
            id: k.id,
            ttl,
        })
    }

    /// LeaseTimeToLive: remaining seconds (truncated, as etcd), the granted TTL and, when asked,
    /// the attached keys. An unknown lease is not an error but TTL -1.
    ///
    /// # Errors
    /// Availability errors.
    pub async fn do_lease_time_to_live(
        &self,
        t: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ServerError> {
        let forwarded = self
            .ctx
            .router
            .forward(self.ctx.leader_wait(), |mut c| async move {
                c.lease_time_to_live(t).await
            })
            .await?;
        match forwarded {
            Forwarded::Local => self.leader_lease_time_to_live(t).await,
            Forwarded::Remote(mut out) => {
                out.header = self.ctx.header(self.ctx.store.current_revision());
                Ok(out)
            }
        }
    }

    /// LeaseTimeToLive on the leader.
    ///
    /// # Errors
    /// None today.
    pub async fn leader_lease_time_to_live(
        &self,
        t: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, ServerError> {
        let ctx = &self.ctx;
        let header = ctx.header(ctx.store.current_revision());
        let Some(lease) = ctx.store.lease(LeaseId(t.id)) else {
            return Ok(pb::LeaseTimeToLiveResponse {
                header,
                id: t.id,
                ttl: -1,
                ..Default::default()
            });
        };
        let ttl = ctx
            .lessor
            .remaining(lease.id)
            .map_or(lease.ttl, |(left, _)| left);
        Ok(pb::LeaseTimeToLiveResponse {
            header,
            id: t.id,
            ttl,
            granted_ttl: lease.ttl,
            keys: if t.keys { lease.keys } else { Vec::new() },
        })
    }

    /// LeaseLeases: every lease id, soonest expiry first (etcd's order).
    ///
    /// # Errors
    /// None today; fallible for symmetry with the other operations.
    pub async fn do_lease_leases(
        &self,
        _l: pb::LeaseLeasesRequest,
    ) -> Result<pb::LeaseLeasesResponse, ServerError> {
        let ctx = &self.ctx;
        let header = ctx.header(ctx.store.current_revision());
        let mut leases: Vec<_> = ctx
            .store
            .leases()
            .into_iter()
            .map(|l| (ctx.lessor.deadline(l.id), l.id))
            .collect();
        // Leases the lessor does not know yet (a grant being published) sort last.
        leases.sort_by_key(|(deadline, id)| (deadline.is_none(), *deadline, *id));
        Ok(pb::LeaseLeasesResponse {
            header,
            leases: leases
                .into_iter()
                .map(|(_, id)| pb::LeaseStatus { id: id.0 })
                .collect(),
        })
    }
}

/// The response stream of a keep-alive call.
pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Ok(Response::new(
            self.do_lease_grant(request.into_inner()).await?,
        ))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_lease_revoke(request.into_inner(), &cred).await?,
        ))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::LeaseKeepAliveResponse, Status>>(16);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    next = inbound.message() => next,
                    () = tx.closed() => return,
                };
                let req = match req {
                    Ok(Some(req)) => req,
                    // The client closed its side (or the stream broke): done.
                    Ok(None) | Err(_) => return,
                };
                let reply = service.do_lease_keep_alive(req).await.map_err(Status::from);
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            self.do_lease_time_to_live(request.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Ok(Response::new(
            self.do_lease_leases(request.into_inner()).await?,
        ))
    }
}
