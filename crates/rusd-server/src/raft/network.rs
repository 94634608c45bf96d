//! Peer transport, client side: openraft's RPCs to the other members over gRPC
//! (`rusd_proto::peerpb`, served by [`crate::grpc::peer`]).
//!
//! openraft's request and response types travel as bincode inside `RaftMessage` (openraft
//! defines them and their serde form; every member of a cluster runs the same openraft). A
//! snapshot travels as a stream: the vote and metadata first, then the engine's snapshot
//! stream in chunks, produced on a blocking thread as it is sent (never a whole database in
//! memory).

// openraft's error types are large, and its traits fix them.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};
use parking_lot::Mutex;
use rusd_proto::peerpb::{peer_client::PeerClient, RaftMessage, SnapshotChunk};
use tonic::transport::{Channel, Endpoint};

use super::{EngineSnapshot, TypeConfig};
use crate::membership::MemberNode;

/// Bytes per snapshot chunk.
const CHUNK: usize = 1 << 20;
/// How long connecting to a peer may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A peer not heard from for this long is no longer active (etcd's peer streams time out after
/// the same `ConnReadTimeout`). It also ends the activity a member recorded when it last led.
const SILENCE: Duration = Duration::from_secs(5);

/// Why a peer cannot be dialled.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The member has no peer URL.
    #[error("member {0:x} has no peer URL")]
    NoUrl(u64),
    /// A peer URL that is not a URL.
    #[error("peer URL {0:?}: {1}")]
    BadUrl(String, String),
}

/// Connections to the other members, one lazily connected channel per peer URL.
#[derive(Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    /// Test-only fault switch: while this file exists, this member neither sends nor accepts
    /// peer traffic (a network partition around it). Set from `RUSD_TEST_PARTITION_FILE`.
    partition_file: Option<std::path::PathBuf>,
    /// How to dial `https://` peers (`None`: no peer TLS configured; `Err`: why not).
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    /// Which members answer this member's Raft RPCs, by id (see [`Peers::active_since`]).
    activity: Mutex<HashMap<u64, Activity>>,
}

/// Since when a peer has answered without a failure or a silence in between.
#[derive(Debug, Clone, Copy)]
struct Activity {
    since: Instant,
    last: Instant,
}

impl Peers {
    /// Peers with the test-only partition switch of the environment, if any.
    pub fn from_env() -> Self {
        Self {
            channels: Mutex::default(),
            partition_file: std::env::var_os("RUSD_TEST_PARTITION_FILE").map(Into::into),
            tls: None,
            activity: Mutex::default(),
        }
    }

    /// Since when member `id` has been active: answering this member's Raft RPCs with no
    /// failed call and no 5 s of silence in between (etcd's `Transport.ActiveSince`). `None`
    /// while it is not. Only a leader calls every member all the time, so only a leader's
    /// answer is current.
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        self.active_since_at(id, Instant::now())
    }

    fn active_since_at(&self, id: u64, now: Instant) -> Option<Instant> {
        let activity = self.activity.lock();
        let a = activity.get(&id)?;
        (now.saturating_duration_since(a.last) <= SILENCE).then_some(a.since)
    }

    /// Records that a Raft RPC to member `id` was answered (`true`) or could not be delivered.
    fn record(&self, id: u64, answered: bool) {
        self.record_at(id, answered, Instant::now());
    }

    fn record_at(&self, id: u64, answered: bool, now: Instant) {
        let mut activity = self.activity.lock();
        match (answered, activity.get_mut(&id)) {
            (true, Some(a)) if now.saturating_duration_since(a.last) <= SILENCE => a.last = now,
            (true, _) => {
                tracing::info!(member = format!("{id:x}").as_str(), "peer became active");
                activity.insert(
                    id,
                    Activity {
                        since: now,
                        last: now,
                    },
                );
            }
            (false, Some(_)) => {
                tracing::warn!(
                    member = format!("{id:x}").as_str(),
                    "peer became inactive (a message to it failed)"
                );
                activity.remove(&id);
            }
            (false, None) => {}
        }
    }

    /// Dial `https://` peers with `tls` (see [`crate::tls::MemberTls::peer_dial`]).
    pub fn with_tls(mut self, tls: Option<Result<Arc<rustls::ClientConfig>, String>>) -> Self {
        self.tls = tls;
        self
    }

    /// Whether the test-only partition switch is on.
    pub fn partitioned(&self) -> bool {
        self.partition_file.as_ref().is_some_and(|f| f.exists())
    }

    /// A client for member `id` at `node`'s first peer URL.
    ///
    /// # Errors
    /// The member has no usable peer URL.
    pub fn client(&self, id: u64, node: &MemberNode) -> Result<PeerClient<Channel>, PeerError> {
        let url = node.peer_urls.first().ok_or(PeerError::NoUrl(id))?;
        self.client_at(url)
    }

    /// A client for the member at `url`.
    ///
    /// # Errors
    /// `url` is not usable.
    pub fn client_at(&self, url: &str) -> Result<PeerClient<Channel>, PeerError> {
        if self.partitioned() {
            return Err(PeerError::BadUrl(
                url.to_string(),
                "partitioned (test switch): cannot connect".into(),
            ));
        }
        let mut channels = self.channels.lock();
        let channel = match channels.get(url) {
            Some(channel) => channel.clone(),
            None => {
                let channel = self.channel(url)?;
                channels.insert(url.to_string(), channel.clone());
                channel
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// A lazily connected channel to `url`: plaintext for `http://`, TLS for `https://`.
    fn channel(&self, url: &str) -> Result<Channel, PeerError> {
        let bad = |e: String| PeerError::BadUrl(url.to_string(), e);
        if url.starts_with("unix") {
            let path = crate::config::unix_socket_path(url).ok_or_else(|| {
                bad("only plaintext unix:// peer URLs with a path are supported".into())
            })?;
            // tonic needs an http URI; the dialler connects to the socket whatever it says.
            let endpoint = Endpoint::from_static("http://localhost")
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            return Ok(
                endpoint.connect_with_connector_lazy(crate::tls::dial::UnixDialer::new(&path))
            );
        }
        let tls = if url.starts_with("https://") {
            match &self.tls {
                Some(Ok(config)) => Some(config.clone()),
                Some(Err(e)) => return Err(bad(e.clone())),
                None => {
                    return Err(bad(
                        "an https:// peer needs peer TLS (--peer-cert-file and \
                         --peer-key-file, or --peer-auto-tls)"
                            .into(),
                    ))
                }
            }
        } else {
            None
        };
        // tonic sees an http:// URI; the TLS dialler wraps the connection itself.
        let uri = match tls {
            Some(_) => crate::tls::dial::channel_uri(url).map_err(bad)?,
            None => url.to_string(),
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(match tls {
            Some(config) => {
                endpoint.connect_with_connector_lazy(crate::tls::dial::TlsDialer::new(config))
            }
            None => endpoint.connect_lazy(),
        })
    }
}

/// Creates [`PeerConnection`]s.
#[derive(Clone)]
pub struct Network {
    peers: Arc<Peers>,
}

impl Network {
    /// The network dialling through `peers`.
    pub fn new(peers: Arc<Peers>) -> Self {
        Self { peers }
    }
}

/// openraft's connection to one peer.
pub struct PeerConnection {
    target: u64,
    client: Result<PeerClient<Channel>, String>,
    peers: Arc<Peers>,
    /// When a refusal of this member's certificate was last logged.
    tls_refusal_logged: parking_lot::Mutex<Option<Instant>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerConnection {
        PeerConnection {
            target,
            client: self.peers.client(target, node).map_err(|e| e.to_string()),
            peers: self.peers.clone(),
            tls_refusal_logged: parking_lot::Mutex::new(None),
        }
    }
}

type RpcError = RPCError<u64, MemberNode, RaftError<u64>>;

fn unreachable(e: impl std::fmt::Display) -> Unreachable {
    Unreachable::new(&std::io::Error::other(e.to_string()))
}

fn network(e: impl std::fmt::Display) -> NetworkError {
    NetworkError::new(&std::io::Error::other(e.to_string()))
}

/// A transport failure: a peer that cannot be connected to is unreachable (openraft backs off),
/// anything else is a network error (retried at once).
fn transport(status: &tonic::Status) -> RpcError {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => {
            RPCError::Unreachable(unreachable(status))
        }
        _ => RPCError::Network(network(status)),
    }
}

impl PeerConnection {
    fn client(&self) -> Result<PeerClient<Channel>, RpcError> {
        if self.peers.partitioned() {
            return Err(RPCError::Unreachable(unreachable(
                "partitioned (test switch)",
            )));
        }
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(unreachable(e)))
    }

    /// Logs, at most every 10 s, that the peer refused this member's certificate, in the words
    /// etcd (Go's TLS stack) uses: "remote error: tls: bad certificate".
    fn log_tls_refusal(&self, status: &tonic::Status) {
        let mut text = status.to_string();
        let mut source = std::error::Error::source(status);
        while let Some(e) = source {
            text.push_str(&format!(": {e}"));
            source = e.source();
        }
        if !text.contains("BadCertificate") {
            return;
        }
        let mut last = self.tls_refusal_logged.lock();
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(
            member = format!("{:x}", self.target).as_str(),
            "peer refused this member's certificate: remote error: tls: bad certificate"
        );
    }

    /// Sends one bincode message and decodes the peer's `Result`.
    async fn call<Req, Resp>(
        &self,
        request: &Req,
        option: &RPCOption,
        send: impl AsyncFnOnce(
            PeerClient<Channel>,
            RaftMessage,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> Result<Resp, RpcError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        let client = self
            .client()
            .inspect_err(|_| self.peers.record(self.target, false))?;
        let data = bincode::serialize(request).map_err(|e| RPCError::Network(network(e)))?;
        // A slow answer says nothing about the connection (and openraft may drop this call at
        // its own timeout first): only answers and transport failures are recorded.
        let answer = tokio::time::timeout(option.hard_ttl(), send(client, RaftMessage { data }))
            .await
            .map_err(|_| RPCError::Unreachable(unreachable("timed out")))?;
        self.peers.record(self.target, answer.is_ok());
        if let Err(status) = &answer {
            self.log_tls_refusal(status);
        }
        let answer = answer.map_err(|s| transport(&s))?;
        let result: Result<Resp, RaftError<u64>> = bincode::deserialize(&answer.into_inner().data)
            .map_err(|e| RPCError::Network(network(e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcError> {
        self.call(&rpc, &option, async |mut c, m| c.append_entries(m).await)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcError> {
        self.call(&rpc, &option, async |mut c, m| c.vote(m).await)
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        if self.peers.partitioned() {
            self.peers.record(self.target, false);
            return Err(StreamingError::Unreachable(unreachable(
                "partitioned (test switch)",
            )));
        }
        let mut client = self
            .client
            .clone()
            .map_err(|e| StreamingError::Unreachable(unreachable(e)))?;
        let meta = bincode::serialize(&(vote, &snapshot.meta))
            .map_err(|e| StreamingError::Network(network(e)))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        let first = SnapshotChunk {
            meta,
            data: Vec::new(),
        };
        tx.send(first)
            .await
            .map_err(|e| StreamingError::Network(network(e)))?;
        tracing::info!(
            target_member = format!("{:x}", self.target).as_str(),
            snapshot = %snapshot.meta.snapshot_id,
            "sending a snapshot"
        );
        // The engine writes its stream on a blocking thread; a dropped receiver (the call
        // failed or was cancelled) ends the writing with an error.
        let producer = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            match *snapshot.snapshot {
                EngineSnapshot::Live(store) => store.snapshot_to(&mut out).map(|_| ()),
                EngineSnapshot::Received(path) => std::fs::File::open(path)
                    .and_then(|mut f| std::io::copy(&mut f, &mut out).map(|_| ()))
                    .map_err(rusd_mvcc::Error::from),
            }
            .and_then(|()| out.flush().map_err(rusd_mvcc::Error::from))
        });
        let call = client.install_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let answer = tokio::select! {
            answer = call => answer,
            closed = cancel => {
                producer.abort();
                return Err(StreamingError::Closed(closed));
            }
        };
        match producer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StreamingError::Network(network(e))),
            Err(e) => return Err(StreamingError::Network(network(e))),
        }
        self.peers.record(self.target, answer.is_ok());
        let answer = answer.map_err(|s| match s.code() {
            tonic::Code::Unavailable => StreamingError::Unreachable(unreachable(&s)),
            _ => StreamingError::Network(network(&s)),
        })?;
        let result: Result<SnapshotResponse<u64>, Fatal<u64>> =
            bincode::deserialize(&answer.into_inner().data)
                .map_err(|e| StreamingError::Network(network(e)))?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Cuts a byte stream into [`SnapshotChunk`]s on a channel (from a blocking thread).
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<SnapshotChunk>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(SnapshotChunk {
                meta: Vec::new(),
                data,
            })
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "peer went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_runs_from_the_first_answer_until_a_failure_or_a_silence() {
        let peers = Peers::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(peers.active_since_at(1, t0), None);
        peers.record_at(1, false, t0);
        assert_eq!(peers.active_since_at(1, t0), None, "never answered");
        peers.record_at(1, true, at(100));
        peers.record_at(1, true, at(200));
        assert_eq!(peers.active_since_at(1, at(300)), Some(at(100)));
        assert_eq!(peers.active_since_at(2, at(300)), None, "per member");
        // A failure ends the run; the next answer starts a new one.
        peers.record_at(1, false, at(400));
        assert_eq!(peers.active_since_at(1, at(400)), None);
        peers.record_at(1, true, at(500));
        assert_eq!(peers.active_since_at(1, at(600)), Some(at(500)));
        // So does a silence (a member that stopped leading, or calls openraft cut off).
        let quiet = at(500) + SILENCE + Duration::from_millis(1);
        assert_eq!(peers.active_since_at(1, quiet), None);
        peers.record_at(1, true, quiet);
        assert_eq!(peers.active_since_at(1, quiet), Some(quiet));
    }
}
