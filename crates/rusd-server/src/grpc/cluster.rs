//! The Cluster service: MemberAdd, MemberRemove, MemberUpdate, MemberList, MemberPromote.
//!
//! rusd runs a single member for now. MemberList answers that member; membership changes are
//! refused with Unimplemented ("membership changes arrive with clusters"), except where etcd
//! itself would refuse the request for a reason that holds here too: an id that is not a member
//! gets etcd's NotFound "etcdserver: member not found", and promoting the (voting) member gets
//! FailedPrecondition "etcdserver: can only promote a learner member".
//!
//! As in etcd, response headers carry no revision (membership does not touch the key space).

use std::sync::Arc;

use rusd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::context::Ctx;
use crate::error::ServerError;

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

    /// This member as etcd describes it.
    fn me(&self) -> pb::Member {
        let config = &self.ctx.config;
        pb::Member {
            id: self.ctx.member_id,
            name: config.name.clone(),
            peer_ur_ls: config.own_peer_urls(),
            client_ur_ls: config.advertise_client_urls.clone(),
            is_learner: false,
        }
    }

    /// Whether `id` is a member of the cluster.
    fn is_member(&self, id: u64) -> bool {
        if id == self.ctx.member_id {
            return true;
        }
        let metrics = self.ctx.raft.metrics();
        let known = metrics
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .any(|(n, _)| *n == id);
        known
    }

    fn unsupported() -> ServerError {
        ServerError::Unsupported("membership changes arrive with clusters".into())
    }
}

/// The Cluster operations, shared by gRPC and the HTTP gateway.
impl ClusterService {
    /// MemberAdd: refused.
    ///
    /// # Errors
    /// Always Unsupported.
    pub async fn do_member_add(
        &self,
        _r: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, ServerError> {
        Err(Self::unsupported())
    }

    /// MemberRemove: NotFound for an unknown id, else refused.
    ///
    /// # Errors
    /// `MemberNotFound` or Unsupported.
    pub async fn do_member_remove(
        &self,
        r: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, ServerError> {
        if !self.is_member(r.id) {
            return Err(ServerError::MemberNotFound);
        }
        Err(Self::unsupported())
    }

    /// MemberUpdate: NotFound for an unknown id, else refused.
    ///
    /// # Errors
    /// `MemberNotFound` or Unsupported.
    pub async fn do_member_update(
        &self,
        r: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, ServerError> {
        if !self.is_member(r.id) {
            return Err(ServerError::MemberNotFound);
        }
        Err(Self::unsupported())
    }

    /// MemberList: the one member. With `linearizable` (etcd 3.5+), after a read index.
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
            members: vec![self.me()],
        })
    }

    /// MemberPromote: NotFound for an unknown id; every member is a voter, so promoting one
    /// fails as in etcd.
    ///
    /// # Errors
    /// `MemberNotFound` or `MemberNotLearner`.
    pub async fn do_member_promote(
        &self,
        r: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, ServerError> {
        if !self.is_member(r.id) {
            return Err(ServerError::MemberNotFound);
        }
        Err(ServerError::MemberNotLearner)
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Ok(Response::new(
            self.do_member_add(request.into_inner()).await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Ok(Response::new(
            self.do_member_remove(request.into_inner()).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Ok(Response::new(
            self.do_member_update(request.into_inner()).await?,
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
        Ok(Response::new(
            self.do_member_promote(request.into_inner()).await?,
        ))
    }
}
