//! The Cluster service: MemberAdd, MemberRemove, MemberUpdate, MemberList, MemberPromote
//! (the changes themselves are in [`crate::reconfig`]).
//!
//! As in etcd, response headers carry no revision (membership does not touch the key space).

use std::sync::Arc;

use rusd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::auth::Credentials;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::raft::route::Forwarded;

/// etcd's Cluster service.
#[derive(Clone)]
pub struct ClusterService {
    ctx: Arc<Ctx>,
}

impl ClusterService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// etcd's membership header: cluster, member and term, revision 0.
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.ctx.header(0)
    }
}

/// The Cluster operations, shared by gRPC and the HTTP gateway. Changes run on the leader; a
/// follower forwards them over the peer transport. The answer's header is this member's.
impl ClusterService {
    /// MemberAdd.
    ///
    /// # Errors
    /// etcd's membership and availability errors.
    pub async fn do_member_add(
        &self,
        r: pb::MemberAddRequest,
        cred: &Credentials,
    ) -> Result<pb::MemberAddResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let forwarded = self
            .ctx
            .router
            .forward(self.ctx.leader_wait(), |mut c| {
                let r = r.clone();
                async move { c.member_add(r).await }
            })
            .await?;
        let mut out = match forwarded {
            Forwarded::Local => self.ctx.leader_member_add(r).await?,
            Forwarded::Remote(out) => out,
        };
        out.header = self.header();
        Ok(out)
    }

    /// MemberRemove.
    ///
    /// # Errors
    /// etcd's membership and availability errors.
    pub async fn do_member_remove(
        &self,
        r: pb::MemberRemoveRequest,
        cred: &Credentials,
    ) -> Result<pb::MemberRemoveResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let forwarded = self
            .ctx
            .router
            .forward(self.ctx.leader_wait(), |mut c| async move {
                c.member_remove(r).await
            })
            .await?;
        let mut out = match forwarded {
            Forwarded::Local => self.ctx.leader_member_remove(r).await?,
            Forwarded::Remote(out) => out,
        };
        out.header = self.header();
        Ok(out)
    }

    /// MemberUpdate.
    ///
    /// # Errors
    /// etcd's membership and availability errors.
    pub async fn do_member_update(
        &self,
        r: pb::MemberUpdateRequest,
        cred: &Credentials,
    ) -> Result<pb::MemberUpdateResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let forwarded = self
            .ctx
            .router
            .forward(self.ctx.leader_wait(), |mut c| {
                let r = r.clone();
                async move { c.member_update(r).await }
            })
            .await?;
        let mut out = match forwarded {
            Forwarded::Local => self.ctx.leader_member_update(r).await?,
            Forwarded::Remote(out) => out,
        };
        out.header = self.header();
        Ok(out)
    }

    /// MemberList: this member's view. With `linearizable` (etcd 3.5+), after a read index.
    ///
    /// # Errors
    /// etcd's availability errors for a linearizable list.
    pub async fn do_member_list(
        &self,
        r: pb::MemberListRequest,
    ) -> Result<pb::MemberListResponse, ServerError> {
        if r.linearizable {
            self.ctx.read_index().await?;
        }
        Ok(pb::MemberListResponse {
            header: self.header(),
            members: self.ctx.members(),
        })
    }

    /// MemberPromote.
    ///
    /// # Errors
    /// etcd's membership and availability errors.
    pub async fn do_member_promote(
        &self,
        r: pb::MemberPromoteRequest,
        cred: &Credentials,
    ) -> Result<pb::MemberPromoteResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let forwarded = self
            .ctx
            .router
            .forward(self.ctx.leader_wait(), |mut c| async move {
                c.member_promote(r).await
            })
            .await?;
        let mut out = match forwarded {
            Forwarded::Local => self.ctx.leader_member_promote(r).await?,
            Forwarded::Remote(out) => out,
        };
        out.header = self.header();
        Ok(out)
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_member_add(request.into_inner(), &cred).await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_member_remove(request.into_inner(), &cred).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_member_update(request.into_inner(), &cred).await?,
        ))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(
            self.do_member_list(request.into_inner()).await?,
        ))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_member_promote(request.into_inner(), &cred).await?,
        ))
    }
}
