//! The Auth service, answering as an etcd with authentication disabled and no users or roles.
//!
//! rusd does not store users or roles yet, so its auth store is always empty and disabled:
//!
//! | RPC | answer (same as etcd in that state unless noted) |
//! |---|---|
//! | AuthStatus | `{enabled: false, authRevision: 1}` |
//! | AuthDisable | success (already disabled) |
//! | AuthEnable | FailedPrecondition "etcdserver: root user does not exist" |
//! | Authenticate | FailedPrecondition "etcdserver: authentication is not enabled" |
//! | UserList, RoleList | empty lists |
//! | UserGet/Delete/ChangePassword/GrantRole/RevokeRole | FailedPrecondition "etcdserver: user name not found" |
//! | RoleGet/Delete/GrantPermission/RevokePermission | FailedPrecondition "etcdserver: role name not found" |
//! | UserAdd, RoleAdd | **differs**: Unimplemented "rusd: auth is not supported yet" (etcd stores them) |

use std::sync::Arc;

use rusd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::context::Ctx;
use crate::error::ServerError;

/// The auth revision of a fresh etcd auth store (etcd commits revision 1 on first start).
pub const AUTH_REVISION: u64 = 1;

/// etcd's Auth service.
#[derive(Clone)]
pub struct AuthService {
    ctx: Arc<Ctx>,
}

impl AuthService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }

    /// A header at the current revision, after a read index (etcd answers these through the
    /// log).
    async fn header(&self) -> Result<Option<pb::ResponseHeader>, ServerError> {
        self.ctx.read_index().await?;
        Ok(self.ctx.header(self.ctx.store.current_revision()))
    }

    fn unsupported() -> ServerError {
        ServerError::Unsupported("auth is not supported yet".into())
    }
}

/// The Auth operations, shared by gRPC and the HTTP gateway.
impl AuthService {
    /// AuthEnable: no root user exists.
    ///
    /// # Errors
    /// Always `RootUserNotExist`.
    pub async fn do_auth_enable(
        &self,
        _r: pb::AuthEnableRequest,
    ) -> Result<pb::AuthEnableResponse, ServerError> {
        Err(ServerError::RootUserNotExist)
    }

    /// AuthDisable: auth is already disabled, which etcd answers with success.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn do_auth_disable(
        &self,
        _r: pb::AuthDisableRequest,
    ) -> Result<pb::AuthDisableResponse, ServerError> {
        Ok(pb::AuthDisableResponse {
            header: self.header().await?,
        })
    }

    /// AuthStatus: disabled, at the first auth revision.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn do_auth_status(
        &self,
        _r: pb::AuthStatusRequest,
    ) -> Result<pb::AuthStatusResponse, ServerError> {
        Ok(pb::AuthStatusResponse {
            header: self.header().await?,
            enabled: false,
            auth_revision: AUTH_REVISION,
        })
    }

    /// Authenticate: auth is not enabled.
    ///
    /// # Errors
    /// Always `AuthNotEnabled`.
    pub async fn do_authenticate(
        &self,
        _r: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse, ServerError> {
        Err(ServerError::AuthNotEnabled)
    }

    /// UserAdd: not supported yet.
    ///
    /// # Errors
    /// Always Unsupported.
    pub async fn do_user_add(
        &self,
        _r: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse, ServerError> {
        Err(Self::unsupported())
    }

    /// UserGet: no user exists.
    ///
    /// # Errors
    /// Always `UserNotFound`.
    pub async fn do_user_get(
        &self,
        _r: pb::AuthUserGetRequest,
    ) -> Result<pb::AuthUserGetResponse, ServerError> {
        Err(ServerError::UserNotFound)
    }

    /// UserList: no users.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn do_user_list(
        &self,
        _r: pb::AuthUserListRequest,
    ) -> Result<pb::AuthUserListResponse, ServerError> {
        Ok(pb::AuthUserListResponse {
            header: self.header().await?,
            users: Vec::new(),
        })
    }

    /// UserDelete: no user exists.
    ///
    /// # Errors
    /// Always `UserNotFound`.
    pub async fn do_user_delete(
        &self,
        _r: pb::AuthUserDeleteRequest,
    ) -> Result<pb::AuthUserDeleteResponse, ServerError> {
        Err(ServerError::UserNotFound)
    }

    /// UserChangePassword: no user exists.
    ///
    /// # Errors
    /// Always `UserNotFound`.
    pub async fn do_user_change_password(
        &self,
        _r: pb::AuthUserChangePasswordRequest,
    ) -> Result<pb::AuthUserChangePasswordResponse, ServerError> {
        Err(ServerError::UserNotFound)
    }

    /// UserGrantRole: no user exists.
    ///
    /// # Errors
    /// Always `UserNotFound`.
    pub async fn do_user_grant_role(
        &self,
        _r: pb::AuthUserGrantRoleRequest,
    ) -> Result<pb::AuthUserGrantRoleResponse, ServerError> {
        Err(ServerError::UserNotFound)
    }

    /// UserRevokeRole: no user exists.
    ///
    /// # Errors
    /// Always `UserNotFound`.
    pub async fn do_user_revoke_role(
        &self,
        _r: pb::AuthUserRevokeRoleRequest,
    ) -> Result<pb::AuthUserRevokeRoleResponse, ServerError> {
        Err(ServerError::UserNotFound)
    }

    /// RoleAdd: not supported yet.
    ///
    /// # Errors
    /// Always Unsupported.
    pub async fn do_role_add(
        &self,
        _r: pb::AuthRoleAddRequest,
    ) -> Result<pb::AuthRoleAddResponse, ServerError> {
        Err(Self::unsupported())
    }

    /// RoleGet: no role exists.
    ///
    /// # Errors
    /// Always `RoleNotFound`.
    pub async fn do_role_get(
        &self,
        _r: pb::AuthRoleGetRequest,
    ) -> Result<pb::AuthRoleGetResponse, ServerError> {
        Err(ServerError::RoleNotFound)
    }

    /// RoleList: no roles.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn do_role_list(
        &self,
        _r: pb::AuthRoleListRequest,
    ) -> Result<pb::AuthRoleListResponse, ServerError> {
        Ok(pb::AuthRoleListResponse {
            header: self.header().await?,
            roles: Vec::new(),
        })
    }

    /// RoleDelete: no role exists.
    ///
    /// # Errors
    /// Always `RoleNotFound`.
    pub async fn do_role_delete(
        &self,
        _r: pb::AuthRoleDeleteRequest,
    ) -> Result<pb::AuthRoleDeleteResponse, ServerError> {
        Err(ServerError::RoleNotFound)
    }

    /// RoleGrantPermission: no role exists.
    ///
    /// # Errors
    /// Always `RoleNotFound`.
    pub async fn do_role_grant_permission(
        &self,
        _r: pb::AuthRoleGrantPermissionRequest,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, ServerError> {
        Err(ServerError::RoleNotFound)
    }

    /// RoleRevokePermission: no role exists.
    ///
    /// # Errors
    /// Always `RoleNotFound`.
    pub async fn do_role_revoke_permission(
        &self,
        _r: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, ServerError> {
        Err(ServerError::RoleNotFound)
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        Ok(Response::new(
            self.do_auth_enable(request.into_inner()).await?,
        ))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        Ok(Response::new(
            self.do_auth_disable(request.into_inner()).await?,
        ))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        Ok(Response::new(
            self.do_auth_status(request.into_inner()).await?,
        ))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Ok(Response::new(
            self.do_authenticate(request.into_inner()).await?,
        ))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        Ok(Response::new(self.do_user_add(request.into_inner()).await?))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        Ok(Response::new(self.do_user_get(request.into_inner()).await?))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        Ok(Response::new(
            self.do_user_list(request.into_inner()).await?,
        ))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        Ok(Response::new(
            self.do_user_delete(request.into_inner()).await?,
        ))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        Ok(Response::new(
            self.do_user_change_password(request.into_inner()).await?,
        ))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        Ok(Response::new(
            self.do_user_grant_role(request.into_inner()).await?,
        ))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        Ok(Response::new(
            self.do_user_revoke_role(request.into_inner()).await?,
        ))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        Ok(Response::new(self.do_role_add(request.into_inner()).await?))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        Ok(Response::new(self.do_role_get(request.into_inner()).await?))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        Ok(Response::new(
            self.do_role_list(request.into_inner()).await?,
        ))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        Ok(Response::new(
            self.do_role_delete(request.into_inner()).await?,
        ))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        Ok(Response::new(
            self.do_role_grant_permission(request.into_inner()).await?,
        ))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        Ok(Response::new(
            self.do_role_revoke_permission(request.into_inner()).await?,
        ))
    }
}
