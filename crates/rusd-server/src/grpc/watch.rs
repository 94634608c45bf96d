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

/// Whether the client asked (clientv3's `WithRequireLeader`) to fail without a leader.
fn requires_leader<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true")
}

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if requires_leader(&request) && self.ctx.leader().is_none() {
            return Err(ServerError::NoLeader.into());
        }
        // A broken request stream ends the requests, not the responses (as in etcd, the
        // responses end when the client goes away and tonic drops them).
        let requests = request
            .into_inner()
            .take_while(|r| std::future::ready(r.is_ok()))
            .filter_map(|r| std::future::ready(r.ok()));
        let responses =
            crate::watch::open_stream(&self.ctx, requests).map(|r| r.map_err(Status::from));
        Ok(Response::new(Box::pin(responses)))
    }
}
