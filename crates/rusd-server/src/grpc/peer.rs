//! The peer service (`rusd_proto::peerpb`), served on the peer URLs: openraft's RPCs from the
//! other members, and the requests a follower hands its leader (writes, read index,
//! membership changes). See [`crate::raft::network`] for the sending side.

use std::sync::Arc;

use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::{Snapshot, SnapshotMeta};
use openraft::Vote;
use prost::Message;
use rusd_proto::etcdserverpb as pb;
use rusd_proto::peerpb::{self, peer_server::Peer, RaftMessage};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::context::Ctx;
use crate::membership::MemberNode;
use crate::raft::{EngineSnapshot, RaftRequest, TypeConfig};

/// The peer service of one member.
#[derive(Clone)]
pub struct PeerService {
    ctx: Arc<Ctx>,
}

impl PeerService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }
}

fn undecodable(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable peer message: {e}"))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    let data = bincode::serialize(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { data }))
}

/// Where received snapshots are written before they are installed.
pub fn received_snapshot_dir(ctx: &Ctx) -> std::path::PathBuf {
    ctx.config
        .data_dir
        .join("member")
        .join("snap")
        .join("received")
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            bincode::deserialize(&request.into_inner().data).map_err(undecodable)?;
        encode(&self.ctx.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let rpc: VoteRequest<u64> =
            bincode::deserialize(&request.into_inner().data).map_err(undecodable)?;
        encode(&self.ctx.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<peerpb::SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut chunks = request.into_inner();
        let first = chunks
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let (vote, meta): (Vote<u64>, SnapshotMeta<u64, MemberNode>) =
            bincode::deserialize(&first.meta).map_err(undecodable)?;
        let dir = received_snapshot_dir(&self.ctx);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Status::internal(format!("snapshot dir: {e}")))?;
        let path = dir.join(format!("{}.rusdsnap", self.ctx.ids.next()));
        let result = async {
            let mut file = tokio::fs::File::create(&path).await?;
            file.write_all(&first.data).await?;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(std::io::Error::other)?;
                file.write_all(&chunk.data).await?;
            }
            file.sync_all().await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Status::aborted(format!("receiving a snapshot: {e}")));
        }
        tracing::info!(snapshot = %meta.snapshot_id, "received a snapshot");
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(EngineSnapshot::Received(path.clone())),
        };
        let answer = self.ctx.raft.install_full_snapshot(vote, snapshot).await;
        // Installing consumed the file, or openraft did not need it.
        let _ = tokio::fs::remove_file(&path).await;
        encode(&answer)
    }

    async fn propose(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req = RaftRequest::decode(request.into_inner().data.as_slice()).map_err(undecodable)?;
        let result = self.ctx.proposer.propose_forwarded(req).await;
        Ok(Response::new(RaftMessage {
            data: crate::raft::proposer::encode_forwarded(&result),
        }))
    }

    async fn read_index(
        &self,
        _request: Request<peerpb::ReadIndexRequest>,
    ) -> Result<Response<peerpb::ReadIndexResponse>, Status> {
        let index = self.ctx.leader_read_index().await?;
        Ok(Response::new(peerpb::ReadIndexResponse { index }))
    }

    async fn members(
        &self,
        _request: Request<peerpb::MembersRequest>,
    ) -> Result<Response<peerpb::MembersResponse>, Status> {
        Ok(Response::new(peerpb::MembersResponse {
            cluster_id: self.ctx.cluster_id,
            members: self.ctx.members(),
        }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Ok(Response::new(
            self.ctx.leader_member_add(request.into_inner()).await?,
        ))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Ok(Response::new(
            self.ctx.leader_member_remove(request.into_inner()).await?,
        ))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Ok(Response::new(
            self.ctx.leader_member_update(request.into_inner()).await?,
        ))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Ok(Response::new(
            self.ctx.leader_member_promote(request.into_inner()).await?,
        ))
    }

    async fn publish(
        &self,
        request: Request<peerpb::PublishRequest>,
    ) -> Result<Response<peerpb::PublishResponse>, Status> {
        let r = request.into_inner();
        self.ctx.leader_publish(r.id, r.name, r.client_urls).await?;
        Ok(Response::new(peerpb::PublishResponse {}))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let leases = crate::grpc::lease::LeaseService::new(self.ctx.clone());
        self.ctx.require_leader()?;
        Ok(Response::new(
            leases.leader_lease_keep_alive(request.into_inner()).await?,
        ))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let leases = crate::grpc::lease::LeaseService::new(self.ctx.clone());
        self.ctx.require_leader()?;
        Ok(Response::new(
            leases
                .leader_lease_time_to_live(request.into_inner())
                .await?,
        ))
    }

    async fn campaign(
        &self,
        _request: Request<peerpb::CampaignRequest>,
    ) -> Result<Response<peerpb::CampaignResponse>, Status> {
        self.ctx
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(peerpb::CampaignResponse {}))
    }
}

/// The router for the peer listener. While the test-only partition switch is on, every peer
/// request is refused as if the connection could not be made.
pub fn router(ctx: Arc<Ctx>) -> axum::Router {
    let peers = ctx.router.peers().clone();
    tonic::service::Routes::new(
        peerpb::peer_server::PeerServer::new(PeerService::new(ctx))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    )
    .prepare()
    .into_axum_router()
    .layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let cut = peers.partitioned();
            async move {
                if cut {
                    return tonic::Status::unavailable(
                        "connect refused: partitioned (test switch)",
                    )
                    .into_http();
                }
                next.run(request).await
            }
        },
    ))
}
