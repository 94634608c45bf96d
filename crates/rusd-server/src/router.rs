//! One listener serves both gRPC (HTTP/2, `content-type: application/grpc`) and the HTTP API
//! (gateway JSON, `/health`, `/version`, `/metrics`).
//!
//! A learner refuses every call but Status and serializable Range ("etcdserver: rpc not
//! supported for learner"), as etcd does. Calls with `hasleader: true` metadata fail with "etcdserver: no leader" while the member
//! knows no leader (etcd's interceptor); watch streams that asked for it also end when the
//! leader stays lost (see [`crate::grpc::watch`]).
//!
//! The gRPC receive limit (`--max-request-bytes` + 512 KiB, as etcd) is enforced by
//! [`MessageLimitLayer`] on the gRPC routes only, so that an oversized message is refused with
//! grpc-go's status; tonic's own decoding limit is the same number and only a backstop (the layer
//! refuses at a message's length prefix, before tonic sees it).

use std::sync::Arc;

use rusd_proto::etcdserverpb as pb;

use crate::context::Ctx;
use crate::grpc::kv::KvService;
use crate::grpc::message_limit::MessageLimitLayer;

/// The router for one client listener.
pub fn router(ctx: Arc<Ctx>) -> axum::Router {
    let limit = crate::gateway::json::grpc_limit(ctx.config.max_request_bytes);
    #[allow(unused_mut)]
    let mut routes = tonic::service::Routes::new(
        pb::kv_server::KvServer::new(KvService::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        pb::watch_server::WatchServer::new(crate::grpc::watch::WatchService::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        pb::lease_server::LeaseServer::new(crate::grpc::lease::LeaseService::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        pb::maintenance_server::MaintenanceServer::new(
            crate::grpc::maintenance::MaintenanceService::new(ctx.clone()),
        )
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        pb::cluster_server::ClusterServer::new(crate::grpc::cluster::ClusterService::new(
            ctx.clone(),
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        pb::auth_server::AuthServer::new(crate::grpc::auth::AuthService::new(ctx.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        rusd_proto::v3lockpb::lock_server::LockServer::new(crate::grpc::lock::LockService::new(
            ctx.clone(),
        ))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX),
    );
    routes = routes.add_service(
        rusd_proto::v3electionpb::election_server::ElectionServer::new(
            crate::grpc::election::ElectionService::new(ctx.clone()),
        )
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX),
    );
    let leader_ctx = ctx.clone();
    let counters = ctx.metrics.grpc.clone();
    routes
        .prepare()
        .into_axum_router()
        // Innermost, as etcd's go-grpc-prometheus interceptors run after its own checks.
        .layer(crate::grpc::server_metrics::CountLayer::new(counters))
        .layer(MessageLimitLayer::new(limit))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let refuse = if requires_leader(request.headers()) && leader_ctx.leader().is_none()
                {
                    Some(crate::error::ServerError::NoLeader)
                } else if leader_ctx.is_learner() && !learner_serves(request.uri().path()) {
                    Some(crate::error::ServerError::NotSupportedForLearner)
                } else {
                    None
                };
                async move {
                    if let Some(e) = refuse {
                        return tonic::Status::from(e).into_http();
                    }
                    next.run(request).await
                }
            },
        ))
        .merge(crate::gateway::routes(ctx))
}

/// What a learner serves (etcd's `isRPCSupportedForLearner`): Status, and Range, which refuses
/// linearizable reads itself.
fn learner_serves(path: &str) -> bool {
    matches!(
        path,
        "/etcdserverpb.Maintenance/Status" | "/etcdserverpb.KV/Range"
    )
}

/// Whether a gRPC call asks to fail when the member has no leader (clientv3's
/// `WithRequireLeader`: metadata `hasleader: true`), which etcd checks on every call.
pub fn requires_leader(headers: &http::HeaderMap) -> bool {
    headers
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true")
}
