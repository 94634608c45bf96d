//! `/v3/auth/...`: the Auth service.

use std::sync::Arc;

use super::Api;
use crate::context::Ctx;
use crate::grpc::auth::AuthService;

/// Adds the Auth routes.
pub(super) fn routes(api: Api, ctx: &Arc<Ctx>) -> Api {
    let auth = AuthService::new(ctx.clone());
    let api = unary!(api, auth, "/auth/enable" => do_auth_enable with credentials);
    let api = unary!(api, auth, "/auth/disable" => do_auth_disable with credentials);
    let api = unary!(api, auth, "/auth/status" => do_auth_status with credentials);
    let api = unary!(api, auth, "/auth/authenticate" => do_authenticate with credentials);
    let api = unary!(api, auth, "/auth/user/add" => do_user_add with credentials);
    let api = unary!(api, auth, "/auth/user/get" => do_user_get with credentials);
    let api = unary!(api, auth, "/auth/user/list" => do_user_list with credentials);
    let api = unary!(api, auth, "/auth/user/delete" => do_user_delete with credentials);
    let api = unary!(api, auth, "/auth/user/changepw" => do_user_change_password with credentials);
    let api = unary!(api, auth, "/auth/user/grant" => do_user_grant_role with credentials);
    let api = unary!(api, auth, "/auth/user/revoke" => do_user_revoke_role with credentials);
    let api = unary!(api, auth, "/auth/role/add" => do_role_add with credentials);
    let api = unary!(api, auth, "/auth/role/get" => do_role_get with credentials);
    let api = unary!(api, auth, "/auth/role/list" => do_role_list with credentials);
    let api = unary!(api, auth, "/auth/role/delete" => do_role_delete with credentials);
    let api = unary!(api, auth, "/auth/role/grant" => do_role_grant_permission with credentials);
    unary!(api, auth, "/auth/role/revoke" => do_role_revoke_permission with credentials)
}
