//! The Auth service: users, roles, permissions, AuthEnable/AuthDisable and Authenticate.
//!
//! Changes go through the log and are applied by [`crate::auth::AuthStore::apply`] (which
//! checks the root role there, as etcd's apply does); gets and lists are served locally after a
//! read index. Passwords are hashed with bcrypt (`--bcrypt-cost`) before they are proposed, so
//! no plain password reaches the log (etcd 3.5 does the same; 3.4 logged them). Authenticate
//! checks the password before proposing and retries if the auth store changed meanwhile.

use std::sync::Arc;

use rusd_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::auth::{AuthInfo, Credentials};
use crate::context::Ctx;
use crate::error::ServerError;
use crate::raft::{AuthenticateOp, Op, Output};

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

    /// A header at the current revision.
    fn header(&self) -> Option<pb::ResponseHeader> {
        self.ctx.header(self.ctx.store.current_revision())
    }

    /// Proposes a change as the caller and waits until it is applied.
    async fn change(
        &self,
        op: Op,
        cred: &Credentials,
    ) -> Result<pb::AuthenticateResponse, ServerError> {
        let ai = self.ctx.auth_info(cred).await?;
        auth_output(self.ctx.propose_as(op, &ai).await?)
    }

    /// The caller, after a read index (gets and lists see every change applied before).
    async fn reader(&self, cred: &Credentials) -> Result<AuthInfo, ServerError> {
        let ai = self.ctx.auth_info(cred).await?;
        self.ctx.read_index().await?;
        Ok(ai)
    }

    /// bcrypt of `password` at the configured cost, off the async workers (~50 ms at cost 10).
    async fn hash(&self, password: String) -> Result<String, ServerError> {
        let cost = self.ctx.config.bcrypt_cost;
        tokio::task::spawn_blocking(move || {
            bcrypt::hash_with_result(password, cost)
                .map(|h| h.format_for_version(bcrypt::Version::TwoA))
                .map_err(|e| ServerError::Internal(format!("hashing the password: {e}")))
        })
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
    }
}

/// What applying an auth operation returns.
fn auth_output(output: Output) -> Result<pb::AuthenticateResponse, ServerError> {
    match output {
        Output::Auth(out) => Ok(out),
        other => Err(ServerError::Internal(format!(
            "unexpected apply output {other:?}"
        ))),
    }
}

/// The Auth operations, shared by gRPC and the HTTP gateway.
impl AuthService {
    /// AuthEnable: needs a `root` user with the `root` role; a no-op when enabled.
    ///
    /// # Errors
    /// `RootUserNotExist`, `RootRoleNotExist`, permission errors.
    pub async fn do_auth_enable(
        &self,
        r: pb::AuthEnableRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthEnableResponse, ServerError> {
        self.change(Op::AuthEnable(r), cred).await?;
        Ok(pb::AuthEnableResponse {
            header: self.header(),
        })
    }

    /// AuthDisable: a no-op when disabled; otherwise every simple token dies.
    ///
    /// # Errors
    /// Permission errors (root only).
    pub async fn do_auth_disable(
        &self,
        r: pb::AuthDisableRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthDisableResponse, ServerError> {
        self.change(Op::AuthDisable(r), cred).await?;
        Ok(pb::AuthDisableResponse {
            header: self.header(),
        })
    }

    /// AuthStatus: whether auth is enabled, and the auth revision.
    ///
    /// # Errors
    /// etcd's availability errors, an invalid token.
    pub async fn do_auth_status(
        &self,
        _r: pb::AuthStatusRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthStatusResponse, ServerError> {
        self.reader(cred).await?;
        let state = self.ctx.auth.state();
        Ok(pb::AuthStatusResponse {
            header: self.header(),
            enabled: state.enabled(),
            auth_revision: state.revision(),
        })
    }

    /// Authenticate: checks the password, then issues a token through the log.
    ///
    /// # Errors
    /// `AuthNotEnabled`, `AuthFailed` (unknown user or wrong password), `NoPasswordUser`.
    pub async fn do_authenticate(
        &self,
        r: pb::AuthenticateRequest,
        _cred: &Credentials,
    ) -> Result<pb::AuthenticateResponse, ServerError> {
        let ctx = &self.ctx;
        ctx.read_index().await?;
        loop {
            let state = ctx.auth.state();
            if !state.enabled() {
                return Err(ServerError::AuthNotEnabled);
            }
            let user = state.user(&r.name).ok_or(ServerError::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(ServerError::NoPasswordUser);
            }
            let hash = String::from_utf8_lossy(&user.password).into_owned();
            let password = r.password.clone();
            let matches = tokio::task::spawn_blocking(move || {
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await
            .map_err(|e| ServerError::Internal(e.to_string()))?;
            if !matches {
                return Err(ServerError::AuthFailed);
            }
            let op = Op::Authenticate(AuthenticateOp {
                name: r.name.clone(),
                simple_token: ctx.auth.tokens.prefix(),
            });
            let out = auth_output(ctx.propose(op).await?)?;
            // The password was checked against the store at `state`'s revision: if it changed
            // meanwhile (a new password, a deleted user), check again.
            if state.revision() == ctx.auth.revision() {
                return Ok(pb::AuthenticateResponse {
                    header: self.header(),
                    token: out.token,
                });
            }
        }
    }

    /// UserAdd.
    ///
    /// # Errors
    /// `UserEmpty`, `UserAlreadyExist`, permission errors.
    pub async fn do_user_add(
        &self,
        mut r: pb::AuthUserAddRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserAddResponse, ServerError> {
        // Refuse a non-root caller before spending a bcrypt round (the apply checks again).
        self.ctx.check_admin(cred).await?;
        if r.name.is_empty() {
            return Err(ServerError::UserEmpty);
        }
        let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
        r.hashed_password = if no_password {
            String::new()
        } else {
            self.hash(std::mem::take(&mut r.password)).await?
        };
        r.password.clear();
        self.change(Op::UserAdd(r), cred).await?;
        Ok(pb::AuthUserAddResponse {
            header: self.header(),
        })
    }

    /// UserGet: the user's roles; root, or the user itself.
    ///
    /// # Errors
    /// `UserNotFound`, permission errors.
    pub async fn do_user_get(
        &self,
        r: pb::AuthUserGetRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserGetResponse, ServerError> {
        let ai = self.reader(cred).await?;
        let state = self.ctx.auth.state();
        if let Err(e) = state.check_admin(&ai) {
            if r.name != ai.username {
                return Err(e);
            }
        }
        let user = state.user(&r.name).ok_or(ServerError::UserNotFound)?;
        Ok(pb::AuthUserGetResponse {
            header: self.header(),
            roles: user.roles.clone(),
        })
    }

    /// UserList: every user name; root only.
    ///
    /// # Errors
    /// Permission errors.
    pub async fn do_user_list(
        &self,
        _r: pb::AuthUserListRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserListResponse, ServerError> {
        let ai = self.reader(cred).await?;
        let state = self.ctx.auth.state();
        state.check_admin(&ai)?;
        Ok(pb::AuthUserListResponse {
            header: self.header(),
            users: state
                .users()
                .map(|u| String::from_utf8_lossy(&u.name).into_owned())
                .collect(),
        })
    }

    /// UserDelete: the user's tokens die.
    ///
    /// # Errors
    /// `UserNotFound`, `InvalidAuthMgmt` for root while enabled, permission errors.
    pub async fn do_user_delete(
        &self,
        r: pb::AuthUserDeleteRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserDeleteResponse, ServerError> {
        self.change(Op::UserDelete(r), cred).await?;
        Ok(pb::AuthUserDeleteResponse {
            header: self.header(),
        })
    }

    /// UserChangePassword: the user's tokens die.
    ///
    /// # Errors
    /// `UserNotFound`, permission errors.
    pub async fn do_user_change_password(
        &self,
        mut r: pb::AuthUserChangePasswordRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserChangePasswordResponse, ServerError> {
        // Refuse a non-root caller, or a user that does not exist, before spending a bcrypt
        // round (the apply checks both again).
        self.ctx.check_admin(cred).await?;
        if self.ctx.auth.state().user(&r.name).is_none() {
            return Err(ServerError::UserNotFound);
        }
        r.hashed_password = self.hash(std::mem::take(&mut r.password)).await?;
        self.change(Op::UserChangePassword(r), cred).await?;
        Ok(pb::AuthUserChangePasswordResponse {
            header: self.header(),
        })
    }

    /// UserGrantRole (granting a role the user has is a no-op).
    ///
    /// # Errors
    /// `UserNotFound`, `RoleNotFound`, permission errors.
    pub async fn do_user_grant_role(
        &self,
        r: pb::AuthUserGrantRoleRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserGrantRoleResponse, ServerError> {
        self.change(Op::UserGrantRole(r), cred).await?;
        Ok(pb::AuthUserGrantRoleResponse {
            header: self.header(),
        })
    }

    /// UserRevokeRole.
    ///
    /// # Errors
    /// `UserNotFound`, `RoleNotGranted`, `InvalidAuthMgmt` (root from root while enabled),
    /// permission errors.
    pub async fn do_user_revoke_role(
        &self,
        r: pb::AuthUserRevokeRoleRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthUserRevokeRoleResponse, ServerError> {
        self.change(Op::UserRevokeRole(r), cred).await?;
        Ok(pb::AuthUserRevokeRoleResponse {
            header: self.header(),
        })
    }

    /// RoleAdd.
    ///
    /// # Errors
    /// `RoleEmpty`, `RoleAlreadyExist`, permission errors.
    pub async fn do_role_add(
        &self,
        r: pb::AuthRoleAddRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthRoleAddResponse, ServerError> {
        self.change(Op::RoleAdd(r), cred).await?;
        Ok(pb::AuthRoleAddResponse {
            header: self.header(),
        })
    }

    /// RoleGet: the role's permissions; root, or a user that has the role.
    ///
    /// # Errors
    /// `RoleNotFound`, permission errors.
    pub async fn do_role_get(
        &self,
        r: pb::AuthRoleGetRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthRoleGetResponse, ServerError> {
        let ai = self.reader(cred).await?;
        let state = self.ctx.auth.state();
        if let Err(e) = state.check_admin(&ai) {
            if !state.has_role(&ai.username, &r.role) {
                return Err(e);
            }
        }
        let role = state.role(&r.role).ok_or(ServerError::RoleNotFound)?;
        Ok(pb::AuthRoleGetResponse {
            header: self.header(),
            perm: role.key_permission.clone(),
        })
    }

    /// RoleList: every role name; root only.
    ///
    /// # Errors
    /// Permission errors.
    pub async fn do_role_list(
        &self,
        _r: pb::AuthRoleListRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthRoleListResponse, ServerError> {
        let ai = self.reader(cred).await?;
        let state = self.ctx.auth.state();
        state.check_admin(&ai)?;
        Ok(pb::AuthRoleListResponse {
            header: self.header(),
            roles: state
                .roles()
                .map(|r| String::from_utf8_lossy(&r.name).into_owned())
                .collect(),
        })
    }

    /// RoleDelete: the role is also revoked from every user that has it.
    ///
    /// # Errors
    /// `RoleNotFound`, `InvalidAuthMgmt` for root while enabled, permission errors.
    pub async fn do_role_delete(
        &self,
        r: pb::AuthRoleDeleteRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthRoleDeleteResponse, ServerError> {
        self.change(Op::RoleDelete(r), cred).await?;
        Ok(pb::AuthRoleDeleteResponse {
            header: self.header(),
        })
    }

    /// RoleGrantPermission: adds a permission, or changes the type of one with the same range.
    ///
    /// # Errors
    /// `RoleNotFound`, permission errors.
    pub async fn do_role_grant_permission(
        &self,
        r: pb::AuthRoleGrantPermissionRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthRoleGrantPermissionResponse, ServerError> {
        self.change(Op::RoleGrantPermission(r), cred).await?;
        Ok(pb::AuthRoleGrantPermissionResponse {
            header: self.header(),
        })
    }

    /// RoleRevokePermission: removes the permission with exactly this key and range end.
    ///
    /// # Errors
    /// `RoleNotFound`, `PermissionNotGranted`, permission errors.
    pub async fn do_role_revoke_permission(
        &self,
        r: pb::AuthRoleRevokePermissionRequest,
        cred: &Credentials,
    ) -> Result<pb::AuthRoleRevokePermissionResponse, ServerError> {
        self.change(Op::RoleRevokePermission(r), cred).await?;
        Ok(pb::AuthRoleRevokePermissionResponse {
            header: self.header(),
        })
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_auth_enable(request.into_inner(), &cred).await?,
        ))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_auth_disable(request.into_inner(), &cred).await?,
        ))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_auth_status(request.into_inner(), &cred).await?,
        ))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_authenticate(request.into_inner(), &cred).await?,
        ))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_add(request.into_inner(), &cred).await?,
        ))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_get(request.into_inner(), &cred).await?,
        ))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_list(request.into_inner(), &cred).await?,
        ))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_delete(request.into_inner(), &cred).await?,
        ))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_change_password(request.into_inner(), &cred)
                .await?,
        ))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_grant_role(request.into_inner(), &cred).await?,
        ))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_user_revoke_role(request.into_inner(), &cred)
                .await?,
        ))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_role_add(request.into_inner(), &cred).await?,
        ))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_role_get(request.into_inner(), &cred).await?,
        ))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_role_list(request.into_inner(), &cred).await?,
        ))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_role_delete(request.into_inner(), &cred).await?,
        ))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_role_grant_permission(request.into_inner(), &cred)
                .await?,
        ))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_role_revoke_permission(request.into_inner(), &cred)
                .await?,
        ))
    }
}
