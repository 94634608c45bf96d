//! Peer transport. A single member never sends anything; the gRPC peer transport arrives with
//! clusters (issue #5), so every RPC here reports the peer unreachable.

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Snapshot, Vote};

use super::TypeConfig;

/// Creates [`NoPeers`] connections.
#[derive(Clone, Default)]
pub struct Network;

/// A connection to a peer that cannot be reached.
pub struct NoPeers {
    target: u64,
}

fn unreachable(target: u64) -> Unreachable {
    Unreachable::new(&std::io::Error::other(format!(
        "member {target:x}: peer transport arrives with clusters (issue #5)"
    )))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NoPeers;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> NoPeers {
        NoPeers { target }
    }
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(unreachable(self.target)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(RPCError::Unreachable(unreachable(self.target)))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote<u64>,
        _snapshot: Snapshot<TypeConfig>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        Err(StreamingError::Network(NetworkError::new(
            &std::io::Error::other("snapshot transport arrives with clusters (issue #5)"),
        )))
    }
}
