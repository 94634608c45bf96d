//! `/v3/auth/...`: the Auth service.

use std::sync::Arc;

use super::Api;
use crate::context::Ctx;
use crate::grpc::auth::AuthService;

/// Adds the Auth routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let auth = AuthService::new(ctx.clone());
    let api = unary!(api, auth, "/auth/enable" => do_auth_enable);
    let api = unary!(api, auth, "/auth/disable" => do_auth_disable);
    let api = unary!(api, auth, "/auth/status" => do_auth_status);
    let api = unary!(api, auth, "/auth/authenticate" => do_authenticate);
    let api = unary!(api, auth, "/auth/user/add" => do_user_add);
    let api = unary!(api, auth, "/auth/user/get" => do_user_get);
    let api = unary!(api, auth, "/auth/user/list" => do_user_list);
    let api = unary!(api, auth, "/auth/user/delete" => do_user_delete);
    let api = unary!(api, auth, "/auth/user/changepw" => do_user_change_password);
    let api = unary!(api, auth, "/auth/user/grant" => do_user_grant_role);
    let api = unary!(api, auth, "/auth/user/revoke" => do_user_revoke_role);
    let api = unary!(api, auth, "/auth/role/add" => do_role_add);
    let api = unary!(api, auth, "/auth/role/get" => do_role_get);
    let api = unary!(api, auth, "/auth/role/list" => do_role_list);
    let api = unary!(api, auth, "/auth/role/delete" => do_role_delete);
    let api = unary!(api, auth, "/auth/role/grant" => do_role_grant_permission);
    unary!(api, auth, "/auth/role/revoke" => do_role_revoke_permission)
}
