//! Where a request that must run on the leader goes: here, or over the peer transport to the
//! member that leads.

use std::sync::Arc;

use rusd_proto::peerpb::peer_client::PeerClient;
use tonic::transport::Channel;

use super::network::Peers;
use super::Raft;
use crate::error::ServerError;

/// Who handles a leader-only request.
pub enum Route {
    /// This member leads.
    Local,
    /// Another member leads; its peer client.
    Remote(u64, PeerClient<Channel>),
}

/// Finds the leader of `raft` as member `me` sees it.
#[derive(Clone)]
pub struct Router {
    raft: Raft,
    me: u64,
    peers: Arc<Peers>,
    /// Held shared by every local write and read-index round, exclusively by a leader transfer:
    /// anything this leader sends its followers renews their leader lease, which would make
    /// them refuse the transferee's election.
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl Router {
    /// A router for member `me`.
    pub fn new(raft: Raft, me: u64, peers: Arc<Peers>) -> Self {
        Self {
            raft,
            me,
            peers,
            gate: Arc::default(),
        }
    }

    /// Waits while a leader transfer runs; the transfer waits for the guard to be dropped.
    pub async fn pass(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Stops local writes and reads for a leader transfer.
    pub async fn close(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// The peers' connections.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// The route to the current leader.
    ///
    /// # Errors
    /// [`ServerError::NoLeader`] when no leader is known or it cannot be dialled.
    pub fn leader(&self) -> Result<Route, ServerError> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            None => Err(ServerError::NoLeader),
            Some(l) if l == self.me => Ok(Route::Local),
            Some(l) => {
                let node = m
                    .membership_config
                    .membership()
                    .get_node(&l)
                    .ok_or(ServerError::NoLeader)?;
                let client = self.peers.client(l, node).map_err(|e| {
                    tracing::warn!(error = %e, "cannot dial the leader");
                    ServerError::NoLeader
                })?;
                Ok(Route::Remote(l, client))
            }
        }
    }
}

/// An error status from a peer: a transport failure means the leader could not be reached
/// (etcd's "no leader", which clients retry); anything the peer answered itself is passed on
/// with its code and text.
pub fn from_peer_status(status: tonic::Status) -> ServerError {
    if status.code() == tonic::Code::Unavailable && !status.message().starts_with("etcdserver:") {
        tracing::debug!(error = %status, "leader unreachable");
        return ServerError::NoLeader;
    }
    ServerError::Remote {
        code: status.code() as i32,
        message: status.message().to_string(),
    }
}

impl Router {
    /// The route to the leader, waiting up to `wait` for one to be known.
    ///
    /// # Errors
    /// [`ServerError::NoLeader`] when none is known by then.
    pub async fn leader_within(&self, wait: std::time::Duration) -> Result<Route, ServerError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut metrics = self.raft.metrics();
        loop {
            match self.leader() {
                Err(ServerError::NoLeader) => {}
                other => return other,
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Err(_) => return Err(ServerError::NoLeader),
                Ok(Err(_)) => return Err(ServerError::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// What [`Router::forward`] did.
pub enum Forwarded<T> {
    /// This member leads: the caller runs the request itself.
    Local,
    /// The leader's answer.
    Remote(T),
}

/// Whether a failed peer call certainly did not reach the peer (the connection could not be
/// made), so that sending it again cannot apply it twice.
fn not_sent(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && !status.message().starts_with("etcdserver:")
        && status.message().to_ascii_lowercase().contains("connect")
}

impl Router {
    /// Sends a leader-only request to the leader with `call`, or says to run it here. While the
    /// known leader cannot be connected to (it died and no new one is known yet), waits for
    /// another leader, up to `wait`.
    ///
    /// # Errors
    /// No leader within `wait`; the leader's error.
    pub async fn forward<T, F, Fut>(
        &self,
        wait: std::time::Duration,
        mut call: F,
    ) -> Result<Forwarded<T>, ServerError>
    where
        F: FnMut(PeerClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (leader, client) = match self.leader_within(left).await? {
                Route::Local => return Ok(Forwarded::Local),
                Route::Remote(id, client) => (id, client),
            };
            match call(client).await {
                Ok(answer) => return Ok(Forwarded::Remote(answer.into_inner())),
                Err(status) if not_sent(&status) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(leader = format!("{leader:x}").as_str(), error = %status, "leader unreachable; waiting for another");
                    let mut metrics = self.raft.metrics();
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), async {
                        while metrics.borrow().current_leader == Some(leader) {
                            if metrics.changed().await.is_err() {
                                return;
                            }
                        }
                    })
                    .await;
                }
                Err(status) => return Err(from_peer_status(status)),
            }
        }
    }
}
