//! The auth store: the enabled flag, the auth revision, users and roles. Persisted in the
//! engine's `auth` table, mirrored in memory, and changed only by applying log entries, so
//! every member holds the same store at the same log index.
//!
//! Each change is computed on a copy of the in-memory state, written into the entry's engine
//! transaction, and installed in memory only after that transaction commits (see
//! [`AuthStore::apply`]), so memory never runs ahead of the disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use prost::Message;
use rusd_mvcc::{MvccStore, Table, WriteTxn};
use rusd_proto::authpb::{Permission, Role, User, UserAddOptions};
use rusd_proto::etcdserverpb as pb;

use super::perms::{Access, UnifiedPerms};
use super::token::{TokenEffect, Tokens};
use super::AuthInfo;
use crate::error::ServerError;
use crate::raft::{AuthenticateOp, Op, Output};

/// The `root` user and role: the root role grants everything, and auth cannot be enabled
/// without a root user that has it.
pub const ROOT: &str = "root";

/// `auth` table keys (etcd's names in its `auth` bucket, plus prefixes for users and roles).
mod keys {
    pub const ENABLED: &[u8] = b"authEnabled";
    pub const REVISION: &[u8] = b"authRevision";
    pub const USER: &[u8] = b"user/";
    pub const ROLE: &[u8] = b"role/";
}

fn user_key(name: &str) -> Vec<u8> {
    [keys::USER, name.as_bytes()].concat()
}

fn role_key(name: &str) -> Vec<u8> {
    [keys::ROLE, name.as_bytes()].concat()
}

/// One consistent view of the auth store.
#[derive(Clone, Debug)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's permissions merged over its roles; rebuilt on every change.
    perms: HashMap<String, Arc<UnifiedPerms>>,
}

impl Default for AuthState {
    fn default() -> Self {
        Self {
            enabled: false,
            // A fresh etcd commits auth revision 1 on its first start.
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            perms: HashMap::new(),
        }
    }
}

impl AuthState {
    /// Whether authentication is enabled.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change of users, roles or permissions, and by
    /// AuthDisable.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every user, in name order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Every role, in name order.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// Whether `user` has `role`.
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == role))
    }

    /// etcd's `IsAdminPermitted`: auth off, or a user with the root role.
    ///
    /// # Errors
    /// `UserEmpty`, `UserNotFound` or `PermissionDenied`.
    pub fn check_admin(&self, ai: &AuthInfo) -> Result<(), ServerError> {
        if !self.enabled {
            return Ok(());
        }
        if ai.username.is_empty() {
            return Err(ServerError::UserEmpty);
        }
        if !self.users.contains_key(&ai.username) {
            return Err(ServerError::UserNotFound);
        }
        if !self.has_role(&ai.username, ROOT) {
            return Err(ServerError::PermissionDenied);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: may `ai` have `access` to `key` (or `[key, range_end)`).
    ///
    /// # Errors
    /// `UserEmpty` without a user, `AuthOldRevision` when the store changed since the caller's
    /// credentials were checked, `PermissionDenied`.
    pub fn check(
        &self,
        ai: &AuthInfo,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), ServerError> {
        if !self.enabled {
            return Ok(());
        }
        if ai.revision == 0 {
            return Err(ServerError::UserEmpty);
        }
        if ai.revision < self.revision {
            return Err(ServerError::AuthOldRevision);
        }
        if !self.users.contains_key(&ai.username) {
            return Err(ServerError::PermissionDenied);
        }
        if self.has_role(&ai.username, ROOT) {
            return Ok(());
        }
        match self.perms.get(&ai.username) {
            Some(p) if p.allows(access, key, range_end) => Ok(()),
            _ => Err(ServerError::PermissionDenied),
        }
    }

    fn rebuild_perms(&mut self) {
        let roles = &self.roles;
        self.perms = self
            .users
            .iter()
            .map(|(name, user)| {
                let perms = user
                    .roles
                    .iter()
                    .filter_map(|r| roles.get(r))
                    .flat_map(|r| r.key_permission.iter());
                (name.clone(), Arc::new(UnifiedPerms::merge(perms)))
            })
            .collect();
    }
}

/// The auth store of one member.
pub struct AuthStore {
    state: RwLock<Arc<AuthState>>,
    /// Issued tokens.
    pub tokens: Tokens,
}

/// What applying an auth operation leaves to do once its transaction committed.
pub type AfterCommit<'a> = Box<dyn FnOnce() + 'a>;

impl AuthStore {
    /// Loads the store persisted in `store`.
    ///
    /// # Errors
    /// A backend error, or a record that does not decode.
    pub fn load(store: &MvccStore, tokens: Tokens) -> Result<Self, ServerError> {
        let state = read_state(store)?;
        if state.enabled {
            tokens.enable();
        }
        Ok(Self {
            state: RwLock::new(Arc::new(state)),
            tokens,
        })
    }

    /// Reloads from `store` (after a snapshot replaced its contents). Tokens issued before
    /// stay valid only if auth stays enabled.
    ///
    /// # Errors
    /// As [`AuthStore::load`].
    pub fn reload(&self, store: &MvccStore) -> Result<(), ServerError> {
        let state = read_state(store)?;
        if !state.enabled {
            self.tokens.apply(TokenEffect::Clear);
        }
        *self.state.write() = Arc::new(state);
        Ok(())
    }

    /// The current state.
    pub fn state(&self) -> Arc<AuthState> {
        self.state.read().clone()
    }

    /// Whether authentication is enabled.
    pub fn enabled(&self) -> bool {
        self.state.read().enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    /// Applies an auth operation of a log entry at `index`: checks that the caller may (when
    /// the entry carries one), writes the change into `w`, and returns the output and what to
    /// do in memory once `w` commits. `None` when `op` is not an auth operation.
    pub fn apply<'a>(
        &'a self,
        w: &mut WriteTxn<'_>,
        op: &Op,
        caller: Option<&AuthInfo>,
        index: u64,
    ) -> Option<Result<(Output, AfterCommit<'a>), ServerError>> {
        if !is_auth_op(op) {
            return None;
        }
        let current = self.state();
        if let Some(ai) = caller {
            if let Err(e) = current.check_admin(ai) {
                if !matches!(op, Op::Authenticate(_)) {
                    return Some(Err(e));
                }
            }
        }
        let mut next = (*current).clone();
        let mut changes = Changes::default();
        let effect = match change(&mut next, &mut changes, op, index, &self.tokens) {
            Ok(effect) => effect,
            Err(e) => return Some(Err(e)),
        };
        if changes.any() {
            next.rebuild_perms();
        }
        if let Err(e) = changes.write(&next, w) {
            return Some(Err(e));
        }
        let token = match &effect {
            TokenEffect::Assign { token, .. } => token.clone(),
            _ => String::new(),
        };
        let output = Output::Auth(pb::AuthenticateResponse {
            header: None,
            token,
        });
        let after: AfterCommit<'a> = Box::new(move || {
            let enabled = next.enabled;
            let was = current.enabled;
            *self.state.write() = Arc::new(next);
            if enabled && !was {
                self.tokens.enable();
            }
            self.tokens.apply(effect);
        });
        Some(Ok((output, after)))
    }
}

fn is_auth_op(op: &Op) -> bool {
    matches!(
        op,
        Op::AuthEnable(_)
            | Op::AuthDisable(_)
            | Op::Authenticate(_)
            | Op::UserAdd(_)
            | Op::UserDelete(_)
            | Op::UserChangePassword(_)
            | Op::UserGrantRole(_)
            | Op::UserRevokeRole(_)
            | Op::RoleAdd(_)
            | Op::RoleDelete(_)
            | Op::RoleGrantPermission(_)
            | Op::RoleRevokePermission(_)
    )
}

/// What a change touched, to be written to the `auth` table.
#[derive(Default)]
struct Changes {
    flag: bool,
    revision: bool,
    users: Vec<String>,
    roles: Vec<String>,
}

impl Changes {
    fn any(&self) -> bool {
        self.flag || self.revision || !self.users.is_empty() || !self.roles.is_empty()
    }

    fn commit_revision(&mut self, state: &mut AuthState) {
        state.revision += 1;
        self.revision = true;
    }

    fn write(&self, state: &AuthState, w: &mut WriteTxn<'_>) -> Result<(), ServerError> {
        if self.flag {
            w.put_raw(Table::Auth, keys::ENABLED, &[u8::from(state.enabled)])?;
        }
        if self.revision {
            w.put_raw(Table::Auth, keys::REVISION, &state.revision.to_be_bytes())?;
        }
        for name in &self.users {
            match state.users.get(name) {
                Some(u) => w.put_raw(Table::Auth, &user_key(name), &u.encode_to_vec())?,
                None => w.delete_raw(Table::Auth, &user_key(name))?,
            }
        }
        for name in &self.roles {
            match state.roles.get(name) {
                Some(r) => w.put_raw(Table::Auth, &role_key(name), &r.encode_to_vec())?,
                None => w.delete_raw(Table::Auth, &role_key(name))?,
            }
        }
        Ok(())
    }
}

/// Applies `op` to `s` (etcd's auth store rules), recording what changed.
fn change(
    s: &mut AuthState,
    c: &mut Changes,
    op: &Op,
    index: u64,
    tokens: &Tokens,
) -> Result<TokenEffect, ServerError> {
    match op {
        Op::AuthEnable(_) => {
            if s.enabled {
                return Ok(TokenEffect::None);
            }
            let root = s.users.get(ROOT).ok_or(ServerError::RootUserNotExist)?;
            if !root.roles.iter().any(|r| r == ROOT) {
                return Err(ServerError::RootRoleNotExist);
            }
            s.enabled = true;
            c.flag = true;
            Ok(TokenEffect::None)
        }
        Op::AuthDisable(_) => {
            if !s.enabled {
                return Ok(TokenEffect::None);
            }
            s.enabled = false;
            c.flag = true;
            c.commit_revision(s);
            Ok(TokenEffect::Clear)
        }
        Op::Authenticate(AuthenticateOp { name, simple_token }) => {
            if !s.enabled {
                return Err(ServerError::AuthNotEnabled);
            }
            let user = s.users.get(name).ok_or(ServerError::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(ServerError::AuthFailed);
            }
            Ok(TokenEffect::Assign {
                token: tokens.make(simple_token, index, name, s.revision)?,
                user: name.clone(),
            })
        }
        Op::UserAdd(r) => {
            if r.name.is_empty() {
                return Err(ServerError::UserEmpty);
            }
            if s.users.contains_key(&r.name) {
                return Err(ServerError::UserAlreadyExist);
            }
            let options = r.options.unwrap_or(UserAddOptions { no_password: false });
            let password = if options.no_password {
                Vec::new()
            } else {
                r.hashed_password.as_bytes().to_vec()
            };
            s.users.insert(
                r.name.clone(),
                User {
                    name: r.name.as_bytes().to_vec(),
                    password,
                    roles: Vec::new(),
                    options: Some(options),
                },
            );
            c.users.push(r.name.clone());
            c.commit_revision(s);
            Ok(TokenEffect::None)
        }
        Op::UserDelete(r) => {
            if s.enabled && r.name == ROOT {
                return Err(ServerError::InvalidAuthMgmt);
            }
            if s.users.remove(&r.name).is_none() {
                return Err(ServerError::UserNotFound);
            }
            c.users.push(r.name.clone());
            c.commit_revision(s);
            Ok(TokenEffect::InvalidateUser(r.name.clone()))
        }
        Op::UserChangePassword(r) => {
            let user = s.users.get_mut(&r.name).ok_or(ServerError::UserNotFound)?;
            user.password = r.hashed_password.as_bytes().to_vec();
            c.users.push(r.name.clone());
            c.commit_revision(s);
            Ok(TokenEffect::InvalidateUser(r.name.clone()))
        }
        Op::UserGrantRole(r) => {
            if !s.users.contains_key(&r.user) {
                return Err(ServerError::UserNotFound);
            }
            if r.role != ROOT && !s.roles.contains_key(&r.role) {
                return Err(ServerError::RoleNotFound);
            }
            let user = s.users.get_mut(&r.user).ok_or(ServerError::UserNotFound)?;
            if let Err(at) = user.roles.binary_search(&r.role) {
                user.roles.insert(at, r.role.clone());
                c.users.push(r.user.clone());
                c.commit_revision(s);
            }
            Ok(TokenEffect::None)
        }
        Op::UserRevokeRole(r) => {
            if s.enabled && r.name == ROOT && r.role == ROOT {
                return Err(ServerError::InvalidAuthMgmt);
            }
            let user = s.users.get_mut(&r.name).ok_or(ServerError::UserNotFound)?;
            let before = user.roles.len();
            user.roles.retain(|role| *role != r.role);
            if user.roles.len() == before {
                return Err(ServerError::RoleNotGranted);
            }
            c.users.push(r.name.clone());
            c.commit_revision(s);
            Ok(TokenEffect::None)
        }
        Op::RoleAdd(r) => {
            if r.name.is_empty() {
                return Err(ServerError::RoleEmpty);
            }
            if s.roles.contains_key(&r.name) {
                return Err(ServerError::RoleAlreadyExist);
            }
            s.roles.insert(
                r.name.clone(),
                Role {
                    name: r.name.as_bytes().to_vec(),
                    key_permission: Vec::new(),
                },
            );
            c.roles.push(r.name.clone());
            c.commit_revision(s);
            Ok(TokenEffect::None)
        }
        Op::RoleDelete(r) => {
            if s.enabled && r.role == ROOT {
                return Err(ServerError::InvalidAuthMgmt);
            }
            if s.roles.remove(&r.role).is_none() {
                return Err(ServerError::RoleNotFound);
            }
            c.roles.push(r.role.clone());
            for (name, user) in &mut s.users {
                let before = user.roles.len();
                user.roles.retain(|role| *role != r.role);
                if user.roles.len() != before {
                    c.users.push(name.clone());
                }
            }
            c.commit_revision(s);
            Ok(TokenEffect::None)
        }
        Op::RoleGrantPermission(r) => {
            let role = s.roles.get_mut(&r.name).ok_or(ServerError::RoleNotFound)?;
            let perm = r.perm.clone().unwrap_or_default();
            match role
                .key_permission
                .iter_mut()
                .find(|p| p.key == perm.key && p.range_end == perm.range_end)
            {
                Some(existing) => existing.perm_type = perm.perm_type,
                None => {
                    let at = role.key_permission.partition_point(|p| p.key <= perm.key);
                    role.key_permission.insert(
                        at,
                        Permission {
                            perm_type: perm.perm_type,
                            key: perm.key,
                            range_end: perm.range_end,
                        },
                    );
                }
            }
            c.roles.push(r.name.clone());
            c.commit_revision(s);
            Ok(TokenEffect::None)
        }
        Op::RoleRevokePermission(r) => {
            let role = s.roles.get_mut(&r.role).ok_or(ServerError::RoleNotFound)?;
            let before = role.key_permission.len();
            role.key_permission
                .retain(|p| !(p.key == r.key && p.range_end == r.range_end));
            if role.key_permission.len() == before {
                return Err(ServerError::PermissionNotGranted);
            }
            c.roles.push(r.role.clone());
            c.commit_revision(s);
            Ok(TokenEffect::None)
        }
        _ => Ok(TokenEffect::None),
    }
}

fn read_state(store: &MvccStore) -> Result<AuthState, ServerError> {
    let tx = store.backend().read();
    let mut s = AuthState {
        enabled: tx
            .get(Table::Auth, keys::ENABLED)?
            .is_some_and(|v| v.first() == Some(&1)),
        ..AuthState::default()
    };
    if let Some(v) = tx.get(Table::Auth, keys::REVISION)? {
        let bytes: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("auth revision"))?;
        s.revision = u64::from_be_bytes(bytes);
    }
    for (k, v) in tx.scan_prefix(Table::Auth, keys::USER, 0)? {
        let name = String::from_utf8_lossy(&k[keys::USER.len()..]).into_owned();
        let user = User::decode(v.as_slice()).map_err(|_| corrupt("user"))?;
        s.users.insert(name, user);
    }
    for (k, v) in tx.scan_prefix(Table::Auth, keys::ROLE, 0)? {
        let name = String::from_utf8_lossy(&k[keys::ROLE.len()..]).into_owned();
        let role = Role::decode(v.as_slice()).map_err(|_| corrupt("role"))?;
        s.roles.insert(name, role);
    }
    s.rebuild_perms();
    Ok(s)
}

fn corrupt(what: &str) -> ServerError {
    rusd_mvcc::Error::Corrupted(format!("undecodable {what} in the auth table")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusd_proto::authpb::permission::Type as PermType;

    fn tokens() -> Tokens {
        Tokens::simple(std::time::Duration::from_secs(300))
    }

    fn run(s: &mut AuthState, op: Op) -> Result<TokenEffect, ServerError> {
        let mut c = Changes::default();
        let out = change(s, &mut c, &op, 9, &tokens());
        s.rebuild_perms();
        out
    }

    fn user_add(name: &str) -> Op {
        Op::UserAdd(pb::AuthUserAddRequest {
            name: name.into(),
            hashed_password: "hash".into(),
            ..Default::default()
        })
    }

    fn grant(user: &str, role: &str) -> Op {
        Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
    }

    fn ai(s: &AuthState, name: &str) -> AuthInfo {
        AuthInfo {
            username: name.into(),
            revision: s.revision(),
        }
    }

    #[test]
    fn enabling_needs_a_root_user_with_the_root_role() {
        let mut s = AuthState::default();
        let enable = || Op::AuthEnable(pb::AuthEnableRequest {});
        assert!(matches!(
            run(&mut s, enable()),
            Err(ServerError::RootUserNotExist)
        ));
        run(&mut s, user_add(ROOT)).expect("add root");
        assert!(matches!(
            run(&mut s, enable()),
            Err(ServerError::RootRoleNotExist)
        ));
        // The root role need not exist to be granted.
        run(&mut s, grant(ROOT, ROOT)).expect("grant root");
        let before = s.revision();
        run(&mut s, enable()).expect("enable");
        assert!(s.enabled());
        assert_eq!(s.revision(), before, "enabling does not bump the revision");
        // Root cannot be deleted or lose its role while auth is on.
        let delete_root = Op::UserDelete(pb::AuthUserDeleteRequest { name: ROOT.into() });
        assert!(matches!(
            run(&mut s, delete_root),
            Err(ServerError::InvalidAuthMgmt)
        ));
        let revoke = Op::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
            name: ROOT.into(),
            role: ROOT.into(),
        });
        assert!(matches!(
            run(&mut s, revoke),
            Err(ServerError::InvalidAuthMgmt)
        ));
        let disable = Op::AuthDisable(pb::AuthDisableRequest {});
        assert!(matches!(run(&mut s, disable), Ok(TokenEffect::Clear)));
        assert_eq!(s.revision(), before + 1, "disabling bumps it");
    }

    #[test]
    fn users_roles_and_permissions_follow_etcds_rules() {
        let mut s = AuthState::default();
        assert!(matches!(
            run(&mut s, user_add("")),
            Err(ServerError::UserEmpty)
        ));
        run(&mut s, user_add("u")).expect("add");
        assert!(matches!(
            run(&mut s, user_add("u")),
            Err(ServerError::UserAlreadyExist)
        ));
        assert!(matches!(
            run(&mut s, grant("u", "r")),
            Err(ServerError::RoleNotFound)
        ));
        assert!(matches!(
            run(&mut s, grant("nobody", "r")),
            Err(ServerError::UserNotFound)
        ));
        let role_add = |n: &str| Op::RoleAdd(pb::AuthRoleAddRequest { name: n.into() });
        assert!(matches!(
            run(&mut s, role_add("")),
            Err(ServerError::RoleEmpty)
        ));
        run(&mut s, role_add("r")).expect("role");
        assert!(matches!(
            run(&mut s, role_add("r")),
            Err(ServerError::RoleAlreadyExist)
        ));
        run(&mut s, grant("u", "r")).expect("grant");
        let rev = s.revision();
        run(&mut s, grant("u", "r")).expect("granting again is a no-op");
        assert_eq!(s.revision(), rev);

        let perm = |key: &str, end: &str, t: PermType| {
            Op::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(Permission {
                    perm_type: t as i32,
                    key: key.into(),
                    range_end: end.into(),
                }),
            })
        };
        run(&mut s, perm("k", "", PermType::Read)).expect("perm");
        s.enabled = true;
        let u = ai(&s, "u");
        assert!(s.check(&u, Access::Read, b"k", b"").is_ok());
        assert!(matches!(
            s.check(&u, Access::Write, b"k", b""),
            Err(ServerError::PermissionDenied)
        ));
        // Same key and range: the type is updated, not a second permission added.
        run(&mut s, perm("k", "", PermType::Readwrite)).expect("perm");
        assert_eq!(s.role("r").expect("role").key_permission.len(), 1);
        let stale = u.clone();
        let u = ai(&s, "u");
        assert!(s.check(&u, Access::Write, b"k", b"").is_ok());
        assert!(matches!(
            s.check(&stale, Access::Read, b"k", b""),
            Err(ServerError::AuthOldRevision)
        ));
        assert!(matches!(
            s.check(&AuthInfo::default(), Access::Read, b"k", b""),
            Err(ServerError::UserEmpty)
        ));
        assert!(matches!(
            s.check_admin(&u),
            Err(ServerError::PermissionDenied)
        ));

        let revoke = |key: &str| {
            Op::RoleRevokePermission(pb::AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: key.into(),
                range_end: Vec::new(),
            })
        };
        assert!(matches!(
            run(&mut s, revoke("other")),
            Err(ServerError::PermissionNotGranted)
        ));
        run(&mut s, revoke("k")).expect("revoke");
        // Deleting a role takes it from its users.
        run(
            &mut s,
            Op::RoleDelete(pb::AuthRoleDeleteRequest { role: "r".into() }),
        )
        .expect("del");
        assert!(s.user("u").expect("user").roles.is_empty());
        let not_granted = Op::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        });
        assert!(matches!(
            run(&mut s, not_granted),
            Err(ServerError::RoleNotGranted)
        ));
    }

    #[test]
    fn authenticate_issues_a_token_at_the_entry_index() {
        let mut s = AuthState::default();
        let auth = |n: &str| {
            Op::Authenticate(AuthenticateOp {
                name: n.into(),
                simple_token: "abc".into(),
            })
        };
        assert!(matches!(
            run(&mut s, auth("u")),
            Err(ServerError::AuthNotEnabled)
        ));
        s.enabled = true;
        assert!(matches!(
            run(&mut s, auth("u")),
            Err(ServerError::AuthFailed)
        ));
        run(&mut s, user_add("u")).expect("add");
        match run(&mut s, auth("u")) {
            Ok(TokenEffect::Assign { token, user }) => {
                assert_eq!(token, "abc.9");
                assert_eq!(user, "u");
            }
            other => panic!("{other:?}"),
        }
        let no_password = Op::UserAdd(pb::AuthUserAddRequest {
            name: "np".into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        });
        run(&mut s, no_password).expect("add");
        assert!(matches!(
            run(&mut s, auth("np")),
            Err(ServerError::AuthFailed)
        ));
    }
}
