//! The one place where errors become gRPC statuses, with etcd's codes and exact texts
//! (`api/v3rpc/rpctypes/error.go`). Client libraries match on these texts.

use rusd_mvcc as mvcc;
use tonic::{Code, Status};

use crate::error::ServerError;

/// The gRPC code and etcd's message for an error.
pub fn code_and_message(e: &ServerError) -> (Code, String) {
    use ServerError as S;
    let etcd = |code: Code, text: &str| (code, format!("etcdserver: {text}"));
    match e {
        S::Mvcc(m) => match m {
            mvcc::Error::EmptyKey => etcd(Code::InvalidArgument, "key is not provided"),
            mvcc::Error::Compacted { .. } => etcd(
                Code::OutOfRange,
                "mvcc: required revision has been compacted",
            ),
            mvcc::Error::FutureRevision { .. } => etcd(
                Code::OutOfRange,
                "mvcc: required revision is a future revision",
            ),
            mvcc::Error::InvertedRange { .. } => {
                (Code::InvalidArgument, "mvcc: watcher range is empty".into())
            }
            mvcc::Error::KeyNotFound => etcd(Code::InvalidArgument, "key not found"),
            mvcc::Error::ValueProvided => etcd(Code::InvalidArgument, "value is provided"),
            mvcc::Error::LeaseProvided => etcd(Code::InvalidArgument, "lease is provided"),
            mvcc::Error::LeaseNotFound(_) => etcd(Code::NotFound, "requested lease not found"),
            mvcc::Error::LeaseExists(_) => etcd(Code::FailedPrecondition, "lease already exists"),
            mvcc::Error::TooManyTxnOps { .. } => {
                etcd(Code::InvalidArgument, "too many operations in txn request")
            }
            mvcc::Error::DuplicateKey => {
                etcd(Code::InvalidArgument, "duplicate key given in txn request")
            }
            mvcc::Error::InvalidArgument(text) => (Code::InvalidArgument, text.clone()),
            mvcc::Error::CorruptSnapshot(text) => (
                Code::InvalidArgument,
                format!("snapshot is corrupt: {text}"),
            ),
            mvcc::Error::Corrupted(text) => (Code::DataLoss, format!("data corrupted: {text}")),
            mvcc::Error::Poisoned(_) | mvcc::Error::Closed => {
                etcd(Code::Unavailable, "server stopped")
            }
            mvcc::Error::Backend(text) => (Code::Unknown, text.clone()),
            mvcc::Error::Io(err) => (Code::Unknown, err.to_string()),
        },
        S::InvalidSortOption => etcd(Code::InvalidArgument, "invalid sort option"),
        S::RequestTooLarge => etcd(Code::InvalidArgument, "request is too large"),
        S::NoSpace => etcd(Code::ResourceExhausted, "mvcc: database space exceeded"),
        S::Corrupt => etcd(Code::DataLoss, "corrupt cluster"),
        S::LeaseTtlTooLarge => etcd(Code::OutOfRange, "too large lease TTL"),
        S::NoLeader => etcd(Code::Unavailable, "no leader"),
        S::NotLeader => etcd(Code::FailedPrecondition, "not leader"),
        S::LeaderChanged => etcd(Code::Unavailable, "leader changed"),
        S::Timeout => etcd(Code::Unavailable, "request timed out"),
        S::Stopped => etcd(Code::Unavailable, "server stopped"),
        S::TooManyRequests => etcd(Code::ResourceExhausted, "too many requests"),
        S::BadLeaderTransferee => etcd(Code::FailedPrecondition, "bad leader transferee"),
        S::MemberNotFound => etcd(Code::NotFound, "member not found"),
        S::AuthNotEnabled => etcd(Code::FailedPrecondition, "authentication is not enabled"),
        S::MemberNotLearner => etcd(
            Code::FailedPrecondition,
            "can only promote a learner member",
        ),
        S::TransferTimeout => (
            Code::Unknown,
            "etcdserver: request timed out, leader transfer took too long".into(),
        ),
        S::NotSupportedForLearner => etcd(Code::Unavailable, "rpc not supported for learner"),
        S::PeerUrlExists => etcd(Code::FailedPrecondition, "Peer URLs already exists"),
        S::MemberExists => etcd(Code::FailedPrecondition, "member ID already exist"),
        S::MemberBadUrls => etcd(Code::InvalidArgument, "given member URLs are invalid"),
        S::LearnerNotReady => etcd(
            Code::FailedPrecondition,
            "can only promote a learner member which is in sync with leader",
        ),
        S::TooManyLearners => etcd(
            Code::FailedPrecondition,
            "too many learner members in cluster",
        ),
        // etcd 3.4 maps this one to its client-side error type, which gRPC sends as Unknown.
        S::NotEnoughStartedMembers => etcd(
            Code::Unknown,
            "re-configuration failed due to not enough started members",
        ),
        S::Unhealthy => etcd(Code::Unavailable, "unhealthy cluster"),
        S::RootUserNotExist => etcd(Code::FailedPrecondition, "root user does not exist"),
        S::UserNotFound => etcd(Code::FailedPrecondition, "user name not found"),
        S::RoleNotFound => etcd(Code::FailedPrecondition, "role name not found"),
        S::AuthFailed => etcd(
            Code::InvalidArgument,
            "authentication failed, invalid user ID or password",
        ),
        S::NoPasswordUser => (
            Code::Unknown,
            "auth: authentication failed, password was given for no password user".into(),
        ),
        S::RootRoleNotExist => etcd(
            Code::FailedPrecondition,
            "root user does not have root role",
        ),
        S::UserAlreadyExist => etcd(Code::FailedPrecondition, "user name already exists"),
        S::UserEmpty => etcd(Code::InvalidArgument, "user name is empty"),
        S::RoleAlreadyExist => etcd(Code::FailedPrecondition, "role name already exists"),
        S::RoleEmpty => etcd(Code::InvalidArgument, "role name is empty"),
        S::PermissionDenied => etcd(Code::PermissionDenied, "permission denied"),
        S::RoleNotGranted => etcd(Code::FailedPrecondition, "role is not granted to the user"),
        S::PermissionNotGranted => etcd(
            Code::FailedPrecondition,
            "permission is not granted to the role",
        ),
        S::InvalidAuthToken => etcd(Code::Unauthenticated, "invalid auth token"),
        S::InvalidAuthMgmt => etcd(Code::InvalidArgument, "invalid auth management"),
        S::AuthOldRevision => etcd(Code::InvalidArgument, "revision of auth store is old"),
        S::ElectionNoLeader => (Code::Unknown, "election: no leader".into()),
        S::ElectionNotLeader => (Code::Unknown, "election: not leader".into()),
        S::MissingLeaderKey => (Code::Unknown, "\"leader\" field must be provided".into()),
        S::LostWatcher => (Code::Unknown, "lost watcher waiting for delete".into()),
        S::ViaClient(inner) => (Code::Unknown, code_and_message(inner).1),
        S::Unsupported(text) => (Code::Unimplemented, format!("rusd: {text}")),
        S::Remote { code, message } => (Code::from_i32(*code), message.clone()),
        S::Internal(text) => (Code::Unknown, text.clone()),
    }
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        let (code, message) = code_and_message(&e);
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd's texts, byte for byte (rpctypes/error.go), with their codes.
    #[test]
    fn etcd_codes_and_texts() {
        let cases: Vec<(ServerError, Code, &str)> = vec![
            (
                mvcc::Error::EmptyKey.into(),
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                mvcc::Error::Compacted {
                    requested: 1,
                    compacted: 2,
                }
                .into(),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                mvcc::Error::FutureRevision {
                    requested: 9,
                    current: 2,
                }
                .into(),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                mvcc::Error::KeyNotFound.into(),
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                mvcc::Error::ValueProvided.into(),
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                mvcc::Error::LeaseProvided.into(),
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
            (
                mvcc::Error::LeaseNotFound(mvcc::LeaseId(1)).into(),
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                mvcc::Error::LeaseExists(mvcc::LeaseId(1)).into(),
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                mvcc::Error::TooManyTxnOps { ops: 129, max: 128 }.into(),
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                mvcc::Error::DuplicateKey.into(),
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                ServerError::InvalidSortOption,
                Code::InvalidArgument,
                "etcdserver: invalid sort option",
            ),
            (
                ServerError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ServerError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                ServerError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                ServerError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                ServerError::NotLeader,
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                ServerError::LeaderChanged,
                Code::Unavailable,
                "etcdserver: leader changed",
            ),
            (
                ServerError::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                ServerError::Stopped,
                Code::Unavailable,
                "etcdserver: server stopped",
            ),
            (
                ServerError::TooManyRequests,
                Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
            (
                ServerError::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
            (
                ServerError::BadLeaderTransferee,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
            (
                ServerError::MemberNotFound,
                Code::NotFound,
                "etcdserver: member not found",
            ),
            (
                ServerError::MemberNotLearner,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            (
                ServerError::NotEnoughStartedMembers,
                Code::Unknown,
                "etcdserver: re-configuration failed due to not enough started members",
            ),
            (
                ServerError::Unhealthy,
                Code::Unavailable,
                "etcdserver: unhealthy cluster",
            ),
            (
                ServerError::AuthNotEnabled,
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            (
                ServerError::RootUserNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            (
                ServerError::UserNotFound,
                Code::FailedPrecondition,
                "etcdserver: user name not found",
            ),
            (
                ServerError::AuthFailed,
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                ServerError::RootRoleNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            (
                ServerError::UserAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: user name already exists",
            ),
            (
                ServerError::UserEmpty,
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                ServerError::RoleAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: role name already exists",
            ),
            (
                ServerError::RoleEmpty,
                Code::InvalidArgument,
                "etcdserver: role name is empty",
            ),
            (
                ServerError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                ServerError::RoleNotGranted,
                Code::FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            (
                ServerError::PermissionNotGranted,
                Code::FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            (
                ServerError::InvalidAuthToken,
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                ServerError::InvalidAuthMgmt,
                Code::InvalidArgument,
                "etcdserver: invalid auth management",
            ),
            (
                ServerError::AuthOldRevision,
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            (
                ServerError::RoleNotFound,
                Code::FailedPrecondition,
                "etcdserver: role name not found",
            ),
            (
                ServerError::ElectionNoLeader,
                Code::Unknown,
                "election: no leader",
            ),
            (
                ServerError::ElectionNotLeader,
                Code::Unknown,
                "election: not leader",
            ),
            (
                ServerError::MissingLeaderKey,
                Code::Unknown,
                "\"leader\" field must be provided",
            ),
            (
                ServerError::LostWatcher,
                Code::Unknown,
                "lost watcher waiting for delete",
            ),
            (
                ServerError::ViaClient(Box::new(
                    mvcc::Error::LeaseNotFound(mvcc::LeaseId(1)).into(),
                )),
                Code::Unknown,
                "etcdserver: requested lease not found",
            ),
        ];
        for (err, code, text) in cases {
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, text));
        }
    }
}
