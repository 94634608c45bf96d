//! The Watch service: a gRPC bidirectional stream over [`crate::watch::open_stream`].

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rusd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status, Streaming};

use crate::context::Ctx;
use crate::error::ServerError;

/// etcd's Watch service.
#[derive(Clone)]
pub struct WatchService {
    ctx: Arc<Ctx>,
}

impl WatchService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }
}

/// The response stream of one Watch call.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Resolves once the member has had no leader for three election timeouts (etcd's
/// `monitorLeader`), when streams that require a leader are ended.
async fn leader_lost(ctx: Arc<Ctx>) {
    let mut metrics = ctx.raft.metrics();
    let patience = ctx.config.election_timeout * 3;
    loop {
        while metrics.borrow().current_leader.is_some() {
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
        // Leaderless: wait for a leader, up to the patience.
        let back = tokio::time::timeout(patience, async {
            while metrics.borrow().current_leader.is_none() {
                if metrics.changed().await.is_err() {
                    return std::future::pending::<()>().await;
                }
            }
        })
        .await;
        if back.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = crate::router::requires_leader(request.metadata().as_ref());
        if require_leader && self.ctx.leader().is_none() {
            return Err(ServerError::NoLeader.into());
        }
        let cred = crate::auth::Credentials::from_grpc(&request);
        // A broken request stream ends the requests, not the responses (as in etcd, the
        // responses end when the client goes away and tonic drops them).
        let requests = request
            .into_inner()
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()));
        let responses =
            crate::watch::open_stream(&self.ctx, requests, cred).map(|r| r.map_err(Status::from));
        if require_leader {
            let ended =
                responses
                    .take_until(leader_lost(self.ctx.clone()))
                    .chain(futures::stream::once(async {
                        Err(Status::from(ServerError::NoLeader))
                    }));
            return Ok(Response::new(Box::pin(ended)));
        }
        Ok(Response::new(Box::pin(responses)))
    }
}
