//! One listener serves both gRPC (HTTP/2, `content-type: application/grpc`) and the HTTP API
//! (gateway JSON, `/health`, `/version`, `/metrics`).
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
    routes
        .prepare()
        .into_axum_router()
        .layer(MessageLimitLayer::new(limit))
        .merge(crate::gateway::routes(ctx))
}
