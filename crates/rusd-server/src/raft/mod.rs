//! The ordered log: every mutation goes through a Raft group (openraft), one member for now.
//!
//! ```text
//!  grpc/kv.rs ── propose(RaftRequest) ──► openraft ──append──► LogStore (raft.redb, fsync)
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
pub mod request;
pub mod state_machine;

pub use request::{Op, Output, RaftRequest, RaftResponse};

/// The snapshot payload: the engine's data is its database file, so a snapshot of the state
/// machine only needs to say up to where it is durable. Streaming it to a follower arrives with
/// clusters (issue #5).
#[derive(Debug, Clone, Default)]
pub struct EngineSnapshot;

openraft::declare_raft_types!(
    /// rusd's openraft type configuration.
    pub TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = EngineSnapshot,
);

/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<u64>;
