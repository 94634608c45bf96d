//! `/v3/watch`: the body is a sequence of JSON `WatchRequest`s, the response a `{"result":
//! WatchResponse}` line per response. As in etcd, the watchers outlive the end of the body: the
//! response ends when the client goes away.
//!
//! grpc-gateway turns `Grpc-Metadata-*` headers into gRPC metadata, so `Grpc-Metadata-Hasleader:
//! true` asks, as clientv3's `WithRequireLeader` does, to fail without a leader.

use std::sync::Arc;

use axum::extract::Request;
use rusd_proto::etcdserverpb as pb;

use super::stream::{respond, MessageReader};
use super::{Api, GatewayError};
use crate::context::Ctx;
use crate::error::ServerError;

/// Adds the Watch route.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let ctx = ctx.clone();
    let limit = api.limit();
    api.route("/watch", move |request: Request| {
        let ctx = ctx.clone();
        async move {
            let requires_leader = request
                .headers()
                .get("grpc-metadata-hasleader")
                .is_some_and(|v| v.as_bytes() == b"true");
            let cred = crate::auth::Credentials::from_http(request.headers());
            let reader = MessageReader::<pb::WatchRequest>::new(request.into_body(), limit);
            let (requests, fatal) = match reader.open().await {
                Ok(opened) => opened,
                Err(response) => return response,
            };
            if requires_leader && ctx.leader().is_none() {
                return GatewayError::from(ServerError::NoLeader).into_stream_response();
            }
            respond(crate::watch::open_stream(&ctx, requests, cred), Some(fatal)).await
        }
    })
}
