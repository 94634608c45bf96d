//! `/v3/kv/{range,put,deleterange,txn,compaction}`: the KV service.

use std::sync::Arc;

use super::Api;
use crate::context::Ctx;
use crate::grpc::kv::KvService;

/// Adds the KV routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let kv = KvService::new(ctx.clone());
    let api = unary!(api, kv, "/kv/range" => do_range with credentials);
    let api = unary!(api, kv, "/kv/put" => do_put with credentials);
    let api = unary!(api, kv, "/kv/deleterange" => do_delete_range with credentials);
    let api = unary!(api, kv, "/kv/txn" => do_txn with credentials);
    unary!(api, kv, "/kv/compaction" => do_compact with credentials)
}
