//! `/v3/lock/{lock,unlock}`: the Lock service.

use std::sync::Arc;

use super::Api;
use crate::context::Ctx;
use crate::grpc::lock::LockService;

/// Adds the Lock routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let lock = LockService::new(ctx.clone());
    let api = unary!(api, lock, "/lock/lock" => do_lock with credentials);
    unary!(api, lock, "/lock/unlock" => do_unlock with credentials)
}
