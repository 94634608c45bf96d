//! The ordered log: every mutation goes through a Raft group (openraft) of the cluster's members.
//!
//! ```text
//!  grpc/kv.rs ── propose(RaftRequest) ──► openraft ──append──► LogStore (segments, fsync)
//!                                            │ commit
//!                                            ▼
//!                                     StateMachine::apply ──► apply.rs ──► MvccStore
//!                                            │                  (applied index stored
//!  ◄────────── RaftResponse ─────────────────┘                   atomically with the data)
//! ```
//!
//! A write is acknowledged only after its entry is durable in the log (many concurrent writes
//! share one fsync: openraft hands the log store batches) and applied. On restart, entries after
//! the engine's applied index are applied again; entries at or below it are skipped, so replay
//! is idempotent.

pub mod log_store;
pub mod log_writer;
pub mod network;
pub mod proposer;
pub mod read_batch;
pub mod request;
pub mod route;
pub mod state_machine;
pub mod wal;

pub use request::{AuthenticateOp, Op, Output, RaftRequest, RaftResponse};

/// The snapshot payload. The engine's database is the state machine's snapshot, so the leader's
/// snapshot is the live engine: sending it streams the engine's state as of the send, which is
/// at or past the snapshot's `last_log_id` (a follower skips entries its engine has applied,
/// so a newer state is safe). A follower receives the stream into a file and installs that.
#[derive(Clone)]
pub enum EngineSnapshot {
    /// This member's own engine.
    Live(rusd_mvcc::MvccStore),
    /// A snapshot stream received from the leader, in a file.
    Received(std::path::PathBuf),
}

impl std::fmt::Debug for EngineSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Live(_) => f.write_str("EngineSnapshot::Live"),
            Self::Received(path) => write!(f, "EngineSnapshot::Received({})", path.display()),
        }
    }
}

openraft::declare_raft_types!(
    /// rusd's openraft type configuration.
    pub TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = u64,
        Node = crate::membership::MemberNode,
        SnapshotData = EngineSnapshot,
);

/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
/// openraft's membership over rusd's members.
pub type Membership = openraft::Membership<u64, crate::membership::MemberNode>;
/// openraft's metrics over rusd's members.
pub type Metrics = openraft::RaftMetrics<u64, crate::membership::MemberNode>;
