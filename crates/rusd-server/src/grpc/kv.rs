//! The KV service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use prost::Message;
use rusd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::auth::{AuthInfo, Credentials};
use crate::context::Ctx;
use crate::convert;
use crate::error::ServerError;
use crate::quota;
use crate::raft::{Op, Output};

/// etcd's KV service.
#[derive(Clone)]
pub struct KvService {
    ctx: Arc<Ctx>,
}

impl KvService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }
}

fn check_size(ctx: &Ctx, len: usize) -> Result<(), ServerError> {
    if len > ctx.config.max_request_bytes {
        return Err(ServerError::RequestTooLarge);
    }
    Ok(())
}

fn unexpected(output: &Output) -> ServerError {
    ServerError::Internal(format!("unexpected apply output {output:?}"))
}

/// The KV operations, shared by gRPC and the HTTP gateway.
impl KvService {
    /// Range (linearizable unless `serializable`).
    ///
    /// # Errors
    /// etcd's range errors.
    pub async fn do_range(
        &self,
        r: pb::RangeRequest,
        cred: &Credentials,
    ) -> Result<pb::RangeResponse, ServerError> {
        let ctx = &self.ctx;
        quota::check_corrupt(ctx)?;
        if r.key.is_empty() {
            return Err(rusd_mvcc::Error::EmptyKey.into());
        }
        let req = convert::range_from_pb(&r)?;
        let ai = ctx.auth_info(cred).await?;
        ctx.auth.state().check_range(&ai, &r.key, &r.range_end)?;
        if !r.serializable {
            if ctx.is_learner() {
                return Err(ServerError::NotSupportedForLearner);
            }
            ctx.read_index().await?;
        }
        let resp = ctx.store.range(&req)?;
        check_auth_unchanged(ctx, &ai)?;
        let revision = resp.revision;
        let mut out = convert::range_to_pb(resp);
        out.header = ctx.header(revision);
        Ok(out)
    }

    /// Put, through the log.
    ///
    /// # Errors
    /// etcd's put errors.
    pub async fn do_put(
        &self,
        p: pb::PutRequest,
        cred: &Credentials,
    ) -> Result<pb::PutResponse, ServerError> {
        let ctx = &self.ctx;
        rusd_mvcc::validate_txn(
            &rusd_mvcc::TxnRequest {
                success: vec![rusd_mvcc::RequestOp::Put(convert::put_from_pb(&p))],
                ..Default::default()
            },
            usize::MAX,
        )?;
        check_size(ctx, p.encoded_len())?;
        quota::check_space(ctx, quota::put_cost(&p)).await?;
        let ai = ctx.auth_info(cred).await?;
        match ctx.propose_as(Op::Put(p), &ai).await? {
            Output::Put(mut out) => {
                let revision = out.header.map_or(0, |h| h.revision);
                out.header = ctx.header(revision);
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// DeleteRange, through the log.
    ///
    /// # Errors
    /// etcd's delete errors.
    pub async fn do_delete_range(
        &self,
        d: pb::DeleteRangeRequest,
        cred: &Credentials,
    ) -> Result<pb::DeleteRangeResponse, ServerError> {
        let ctx = &self.ctx;
        quota::check_corrupt(ctx)?;
        if d.key.is_empty() {
            return Err(rusd_mvcc::Error::EmptyKey.into());
        }
        check_size(ctx, d.encoded_len())?;
        let ai = ctx.auth_info(cred).await?;
        match ctx.propose_as(Op::DeleteRange(d), &ai).await? {
            Output::DeleteRange(mut out) => {
                let revision = out.header.map_or(0, |h| h.revision);
                out.header = ctx.header(revision);
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Txn: read-only ones are served locally after a read index, others go through the log.
    ///
    /// # Errors
    /// etcd's txn errors.
    pub async fn do_txn(
        &self,
        t: pb::TxnRequest,
        cred: &Credentials,
    ) -> Result<pb::TxnResponse, ServerError> {
        let ctx = &self.ctx;
        quota::check_corrupt(ctx)?;
        convert::check_txn(&t, ctx.config.max_txn_ops)?;
        let txn = convert::txn_from_pb(&t)?;
        rusd_mvcc::validate_txn(&txn, ctx.config.max_txn_ops)?;
        let ai = ctx.auth_info(cred).await?;
        if convert::txn_is_read_only(&t) {
            ctx.auth.state().check_txn(&ai, &t)?;
            if !txn_is_serializable(&t) {
                ctx.read_index().await?;
            }
            let resp = ctx.store.txn(&txn)?;
            check_auth_unchanged(ctx, &ai)?;
            let revision = resp.revision;
            let mut out = convert::txn_to_pb(resp, false);
            out.header = ctx.header(revision);
            return Ok(out);
        }
        check_size(ctx, t.encoded_len())?;
        if convert::txn_has_put(&t) {
            quota::check_space(ctx, quota::txn_cost(&t)).await?;
        }
        match ctx.propose_as(Op::Txn(t), &ai).await? {
            Output::Txn(mut out) => {
                let revision = out.header.map_or(0, |h| h.revision);
                out.header = ctx.header(revision);
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Compact, through the log; with `physical`, waits for the deletion too.
    ///
    /// # Errors
    /// etcd's compaction errors.
    pub async fn do_compact(
        &self,
        c: pb::CompactionRequest,
        cred: &Credentials,
    ) -> Result<pb::CompactionResponse, ServerError> {
        let ctx = &self.ctx;
        // etcd 3.4 checks no permission for Compact, but an invalid token still fails.
        ctx.auth_info(cred).await?;
        let physical = c.physical;
        let revision = c.revision;
        match ctx.propose(Op::Compaction(c)).await? {
            Output::Compaction(mut out) => {
                if physical {
                    let handle = ctx.store.compaction_handle(revision);
                    tokio::task::spawn_blocking(move || handle.wait())
                        .await
                        .map_err(|e| ServerError::Internal(e.to_string()))?;
                }
                let current = out.header.map_or(0, |h| h.revision);
                out.header = ctx.header(current);
                Ok(out)
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// After a read: the auth store must not have changed since the caller's credentials were
/// checked (etcd's `doSerialize`), or the client refreshes its token and retries.
fn check_auth_unchanged(ctx: &Ctx, ai: &AuthInfo) -> Result<(), ServerError> {
    if ai.revision != 0 && ai.revision != ctx.auth.revision() {
        return Err(ServerError::AuthOldRevision);
    }
    Ok(())
}

/// etcd serves a read-only txn serializably when every range in it asks for that.
fn txn_is_serializable(t: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => txn_is_serializable(t),
            _ => true,
        })
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_range(request.into_inner(), &cred).await?,
        ))
    }

    type RangeStreamStream = futures::stream::Empty<Result<pb::RangeStreamResponse, Status>>;

    async fn range_stream(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(ServerError::Unsupported("RangeStream (etcd 3.7) is not implemented".into()).into())
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_put(request.into_inner(), &cred).await?,
        ))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_delete_range(request.into_inner(), &cred).await?,
        ))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_txn(request.into_inner(), &cred).await?,
        ))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_compact(request.into_inner(), &cred).await?,
        ))
    }
}
