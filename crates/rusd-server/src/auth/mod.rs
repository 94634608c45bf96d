//! Authentication and authorization, as etcd's `auth` package: users with bcrypt passwords,
//! roles with key-range permissions, the `root` user and role, simple or JWT tokens, client
//! certificate common names as user names, and the auth revision that makes stale credentials
//! retry.
//!
//! | module | what |
//! |---|---|
//! | [`store`] | the users, roles and flag; applying auth operations from the log |
//! | [`perms`] | a user's permissions merged over its roles; range coverage |
//! | [`check`] | which permission each request needs |
//! | [`token`] | simple tokens and the `--auth-token` flag |
//! | [`jwt`] | JWT tokens |
//! | [`credentials`] | what a request carries: token metadata, client certificate name |
//!
//! Writes are checked when they are applied, with the user and auth revision their entry
//! carries (etcd's `authApplierV3`), so the check and the write see the same store; reads are
//! checked before they run and fail with `AuthOldRevision` if the store changed meanwhile.

pub mod check;
pub mod credentials;
pub mod jwt;
pub mod perms;
pub mod store;
pub mod token;

pub use credentials::{ClientCertName, Credentials};
pub use perms::Access;
pub use store::{AuthState, AuthStore, ROOT};
pub use token::Tokens;

/// Who a request comes from (etcd's `AuthInfo`): empty without credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user name.
    pub username: String,
    /// The auth revision the credentials were checked at (0: none given).
    pub revision: u64,
}
