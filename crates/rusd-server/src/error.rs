//! The server's errors. Mapped to gRPC status codes and etcd's exact texts in exactly one place:
//! [`crate::grpc::status`].

use rusd_mvcc as mvcc;

/// Everything a client request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine refused the request.
    #[error(transparent)]
    Mvcc(#[from] mvcc::Error),
    /// A sort order or target that etcd does not define.
    #[error("invalid sort option")]
    InvalidSortOption,
    /// The request is larger than `--max-request-bytes`.
    #[error("request is too large")]
    RequestTooLarge,
    /// The space quota is exhausted or the NOSPACE alarm is raised.
    #[error("database space exceeded")]
    NoSpace,
    /// A CORRUPT alarm is raised.
    #[error("corrupt cluster")]
    Corrupt,
    /// A lease TTL above etcd's maximum (9,000,000,000 s).
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    /// No leader is known.
    #[error("no leader")]
    NoLeader,
    /// This member is not the leader (MoveLeader and friends).
    #[error("not leader")]
    NotLeader,
    /// The leadership changed while the request was in flight.
    #[error("leader changed")]
    LeaderChanged,
    /// The request did not complete in time.
    #[error("request timed out")]
    Timeout,
    /// The server is shutting down.
    #[error("server stopped")]
    Stopped,
    /// Too many proposals are waiting to be applied.
    #[error("too many requests")]
    TooManyRequests,
    /// MoveLeader to a member that cannot lead.
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    /// A member id that is not in the cluster.
    #[error("member not found")]
    MemberNotFound,
    /// Authenticate while authentication is not enabled.
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    /// Authenticate with an unknown user or a wrong password.
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    /// Authenticate with a password for a user added with `--no-password` (etcd passes this
    /// one as code Unknown with its auth-package text).
    #[error("authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// AuthEnable while the `root` user lacks the `root` role.
    #[error("root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a name that exists.
    #[error("user name already exists")]
    UserAlreadyExist,
    /// A request that needs a user and has none (no token, no client certificate).
    #[error("user name is empty")]
    UserEmpty,
    /// RoleAdd of a name that exists.
    #[error("role name already exists")]
    RoleAlreadyExist,
    /// RoleAdd with an empty name.
    #[error("role name is empty")]
    RoleEmpty,
    /// The user's roles do not allow the operation.
    #[error("permission denied")]
    PermissionDenied,
    /// UserRevokeRole of a role the user does not have.
    #[error("role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    /// A token that is unknown, expired or badly signed.
    #[error("invalid auth token")]
    InvalidAuthToken,
    /// Deleting `root`, the `root` role, or revoking `root` from `root` while auth is on.
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    /// The auth store changed between the permission check and the operation: the client
    /// refreshes its token and retries.
    #[error("revision of auth store is old")]
    AuthOldRevision,
    /// MoveLeader: the transferee did not become leader in time (etcd passes this one as
    /// code Unknown).
    #[error("leader transfer took too long")]
    TransferTimeout,
    /// A learner serves only Status and serializable Range.
    #[error("rpc not supported for learner")]
    NotSupportedForLearner,
    /// MemberAdd with peer URLs another member has.
    #[error("peer URLs already exist")]
    PeerUrlExists,
    /// MemberAdd whose new id is taken.
    #[error("member ID already exists")]
    MemberExists,
    /// Peer URLs that are not URLs.
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    /// MemberPromote of a learner that has not caught up with the leader.
    #[error("learner not in sync")]
    LearnerNotReady,
    /// MemberAdd of a second learner.
    #[error("too many learners")]
    TooManyLearners,
    /// MemberPromote of a member that is not a learner.
    #[error("can only promote a learner member")]
    MemberNotLearner,
    /// `--strict-reconfig-check`: MemberAdd, MemberRemove or MemberPromote after which fewer
    /// than a quorum of the voting members would have started.
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// `--strict-reconfig-check`: MemberAdd or MemberRemove while the leader has not been
    /// connected to enough voting members for a health interval.
    #[error("unhealthy cluster")]
    Unhealthy,
    /// AuthEnable without a `root` user.
    #[error("root user does not exist")]
    RootUserNotExist,
    /// An auth user that does not exist.
    #[error("user name not found")]
    UserNotFound,
    /// An auth role that does not exist.
    #[error("role name not found")]
    RoleNotFound,
    /// Election: nobody holds the election (etcd's `concurrency.ErrElectionNoLeader`).
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Election: the leader key no longer leads (etcd's `concurrency.ErrElectionNotLeader`).
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Proclaim or Resign without a leader key (etcd's `v3election.ErrMissingLeaderKey`).
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// A Lock or Campaign lost its watch while waiting for a key to be deleted.
    #[error("lost watcher waiting for delete")]
    LostWatcher,
    /// An error of a KV or lease step inside a Lock or Election call. etcd's lock and election
    /// servers reach the store through an in-process client that hands errors back as plain
    /// errors: the caller sees the same text with code Unknown.
    #[error("{0}")]
    ViaClient(Box<ServerError>),
    /// A feature rusd does not have yet.
    #[error("{0}")]
    Unsupported(String),
    /// An error that came back from another member, already in wire form.
    #[error("{message}")]
    Remote {
        /// gRPC status code.
        code: i32,
        /// Message text.
        message: String,
    },
    /// Anything else; reported as gRPC Unknown with its text.
    #[error("{0}")]
    Internal(String),
}

/// The server's result type.
pub type Result<T, E = ServerError> = std::result::Result<T, E>;
