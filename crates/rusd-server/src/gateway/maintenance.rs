//! `/v3/maintenance/{alarm,status,defragment,hash,hashkv,snapshot,transfer-leadership,downgrade}`:
//! the Maintenance service. Snapshot streams its chunks as `{"result": ...}` lines.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use rusd_proto::etcdserverpb as pb;

use super::stream::respond;
use super::{json, Api};
use crate::context::Ctx;
use crate::grpc::maintenance::MaintenanceService;

/// Adds the Maintenance routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let maintenance = MaintenanceService::new(ctx.clone());
    let api = unary!(api, maintenance, "/maintenance/alarm" => do_alarm);
    let api = unary!(api, maintenance, "/maintenance/status" => do_status);
    let api = unary!(api, maintenance, "/maintenance/defragment" => do_defragment with credentials);
    let api = unary!(api, maintenance, "/maintenance/hash" => do_hash with credentials);
    let api = unary!(api, maintenance, "/maintenance/hashkv" => do_hash_kv with credentials);
    let api = unary!(api, maintenance, "/maintenance/transfer-leadership" => do_move_leader);
    let api = unary!(api, maintenance, "/maintenance/downgrade" => do_downgrade);
    let limit = api.limit();
    api.route("/maintenance/snapshot", move |request: Request| {
        let maintenance = maintenance.clone();
        async move {
            let cred = crate::auth::Credentials::from_http(request.headers());
            let req = match json::request::<pb::SnapshotRequest>(request.into_body(), limit).await {
                Ok(req) => req,
                Err(e) => return e.into_response(),
            };
            match maintenance.do_snapshot(req, &cred).await {
                Ok(chunks) => respond(chunks, None).await,
                // A server stream's first receive fails: the stream error form.
                Err(e) => super::GatewayError::from(e).into_stream_response(),
            }
        }
    })
}
