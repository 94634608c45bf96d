//! `/v3/lease/{grant,revoke,keepalive,timetolive,leases}` and the additional bindings
//! `/v3/kv/lease/{revoke,timetolive,leases}`: the Lease service.
//!
//! Keep-alive is a stream both ways: the body is a sequence of `{"ID": ...}` requests, each
//! answered in order by a `{"result": ...}` line; the response ends when the body does (as
//! etcd's keep-alive ends when its client half-closes).

use std::sync::Arc;

use axum::extract::Request;
use futures::StreamExt;
use rusd_proto::etcdserverpb as pb;

use super::stream::{respond, MessageReader};
use super::Api;
use crate::context::Ctx;
use crate::grpc::lease::LeaseService;

/// Adds the Lease routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let lease = LeaseService::new(ctx.clone());
    let api = unary!(api, lease, "/lease/grant" => do_lease_grant);
    let api = unary!(api, lease, "/lease/revoke" => do_lease_revoke with credentials);
    let api = unary!(api, lease, "/kv/lease/revoke" => do_lease_revoke with credentials);
    let api = unary!(api, lease, "/lease/timetolive" => do_lease_time_to_live);
    let api = unary!(api, lease, "/kv/lease/timetolive" => do_lease_time_to_live);
    let api = unary!(api, lease, "/lease/leases" => do_lease_leases);
    let api = unary!(api, lease, "/kv/lease/leases" => do_lease_leases);
    let limit = api.limit();
    api.route("/lease/keepalive", move |request: Request| {
        let lease = lease.clone();
        async move {
            let reader =
                MessageReader::<pb::LeaseKeepAliveRequest>::new(request.into_body(), limit);
            let (requests, fatal) = match reader.open().await {
                Ok(opened) => opened,
                Err(response) => return response,
            };
            let responses = requests.then(move |r| {
                let lease = lease.clone();
                async move { lease.do_lease_keep_alive(r).await }
            });
            respond(responses, Some(fatal)).await
        }
    })
}
