//! One listener serves both gRPC (HTTP/2, `content-type: application/grpc`) and the HTTP API
//! (gateway JSON, `/health`, `/version`, `/metrics`).

use std::sync::Arc;

use rusd_proto::etcdserverpb as pb;

use crate::context::Ctx;
use crate::grpc::kv::KvService;

/// The router for one client listener.
pub fn router(ctx: Arc<Ctx>) -> axum::Router {
    let limit = ctx.config.max_request_bytes + 512 * 1024;
    #[allow(unused_mut)]
    let mut routes = tonic::service::Routes::new(
        pb::kv_server::KvServer::new(KvService::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
    );
    // slot: watch
    // slot: lease
    // slot: maintenance
    // slot: cluster
    // slot: auth
    // slot: lock-election
    routes
        .prepare()
        .into_axum_router()
        .merge(crate::gateway::routes(ctx))
}
