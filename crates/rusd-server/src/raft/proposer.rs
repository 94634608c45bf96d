//! Proposal batching: concurrent client writes share one log entry, so they share one fsync.
//!
//! openraft 0.9 appends each `client_write` as its own entry and waits for that entry to be
//! durable before it takes the next one, so with one entry per request every write costs a
//! full log fsync in sequence (measured: ~2,800 puts/s at 64 clients, each round of 64 taking
//! 64 fsyncs). The proposer queues requests and, whenever the log can take another entry (at
//! most two entries are outstanding), proposes everything queued as one batch entry.
//! Applying a batch gives each operation its own revision, in queue order, exactly as separate
//! entries would (see `apply.rs`). On a follower the batch goes to the leader over the peer
//! transport, which appends it as it is.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use rusd_proto::peerpb::RaftMessage;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::route::{Forwarded, Router};
use super::{Output, Raft, RaftRequest, RaftResponse};
use crate::error::ServerError;
use crate::membership::MemberNode;

/// Entries proposed and not yet applied: one being made durable, one waiting behind it.
const IN_FLIGHT: usize = 2;
/// Operations per batch entry at most.
const MAX_OPS: usize = 1024;
/// Encoded bytes per batch entry at most (a single larger request still goes alone).
const MAX_BYTES: usize = 4 << 20;

type Reply = oneshot::Sender<Result<Output, ServerError>>;

/// The handle through which requests are proposed.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<(RaftRequest, Reply)>,
    shared: Arc<Shared>,
}

struct Shared {
    raft: Raft,
    router: Router,
    /// How long a proposal waits for a leader to be known before it fails with "no leader".
    leader_wait: Duration,
    counters: ProposalCounters,
}

/// etcd's proposal metrics, kept by the proposer.
#[derive(Clone)]
pub struct ProposalCounters {
    /// `etcd_server_proposals_pending`: proposals made and not yet answered.
    pub pending: prometheus::IntGauge,
    /// `etcd_server_proposals_failed_total`: proposals that could not be appended through the
    /// leader (no leader, a timeout, a stopped server). A write that was applied and returned
    /// an error (a failed permission check, an unknown lease) is not one, as in etcd.
    pub failed: prometheus::IntCounter,
}

/// Holds one proposal in `etcd_server_proposals_pending` until dropped (also when the client
/// goes away mid-wait).
struct Pending(prometheus::IntGauge);

impl Pending {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Proposer {
    /// Starts the batching task for `raft`. On a follower, batches go to the leader through
    /// `router`.
    pub fn start(
        raft: Raft,
        router: Router,
        leader_wait: Duration,
        counters: ProposalCounters,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            raft,
            router,
            leader_wait,
            counters,
        });
        tokio::spawn(run(shared.clone(), rx));
        Self { queue, shared }
    }

    /// Proposes `request` (one operation) and waits until it is applied.
    ///
    /// # Errors
    /// What applying returned, or etcd's availability errors.
    pub async fn propose(&self, request: RaftRequest) -> Result<Output, ServerError> {
        let _pending = Pending::new(&self.shared.counters.pending);
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((request, tx))
            .map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)?
    }

    /// Appends `request` (a follower's batch) to this member's log, which must lead, and waits
    /// until it is applied.
    ///
    /// # Errors
    /// This member does not lead, or etcd's availability errors.
    pub async fn propose_forwarded(
        &self,
        request: RaftRequest,
    ) -> Result<RaftResponse, ServerError> {
        let _pass = self.shared.router.pass().await;
        let result = self
            .shared
            .raft
            .client_write(request)
            .await
            .map(|r| r.data)
            .map_err(|e| map_write_error(&e));
        result
    }
}

impl Shared {
    /// Appends `request` through the leader: this member's log if it leads, else the
    /// leader's, over the peer transport.
    async fn write(&self, request: RaftRequest) -> Result<RaftResponse, ServerError> {
        let _pass = self.router.pass().await;
        let data = request.encode_to_vec();
        let forwarded = self
            .router
            .forward(self.leader_wait, |mut leader| {
                let data = data.clone();
                async move { leader.propose(RaftMessage { data }).await }
            })
            .await?;
        match forwarded {
            Forwarded::Local => self
                .raft
                .client_write(request)
                .await
                .map(|r| r.data)
                .map_err(|e| map_write_error(&e)),
            Forwarded::Remote(answer) => decode_forwarded(&answer.data),
        }
    }
}

/// The leader's answer to a forwarded proposal, in wire form.
pub fn encode_forwarded(result: &Result<RaftResponse, ServerError>) -> Vec<u8> {
    let wire: Result<&RaftResponse, (i32, String)> = match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let (code, message) = crate::grpc::status::code_and_message(e);
            Err((code as i32, message))
        }
    };
    bincode::serialize(&wire).unwrap_or_default()
}

fn decode_forwarded(bytes: &[u8]) -> Result<RaftResponse, ServerError> {
    let wire: Result<RaftResponse, (i32, String)> = bincode::deserialize(bytes)
        .map_err(|e| ServerError::Internal(format!("undecodable answer from the leader: {e}")))?;
    wire.map_err(|(code, message)| ServerError::Remote { code, message })
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<(RaftRequest, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while the log was busy goes into this entry.
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_OPS && bytes < MAX_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.0.encoded_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            submit(&shared, batch).await;
            drop(slot);
        });
    }
}

/// Proposes one batch and answers its requests.
async fn submit(shared: &Shared, mut batch: Vec<(RaftRequest, Reply)>) {
    if batch.len() == 1 {
        let Some((request, reply)) = batch.pop() else {
            return;
        };
        let result = match shared.write(request).await {
            Ok(RaftResponse::One(result)) => result,
            Ok(RaftResponse::Batch(_)) => Err(mismatch()),
            Err(e) => {
                shared.counters.failed.inc();
                Err(e)
            }
        };
        let _ = reply.send(result);
        return;
    }
    let (requests, replies): (Vec<RaftRequest>, Vec<Reply>) = batch.into_iter().unzip();
    match shared.write(RaftRequest::batch_of(requests)).await {
        Ok(RaftResponse::Batch(results)) if results.len() == replies.len() => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(mismatch()));
            }
        }
        Err(e) => {
            shared.counters.failed.inc_by(replies.len() as u64);
            for reply in replies {
                let _ = reply.send(Err(super::request::copy_error(&e)));
            }
        }
    }
}

fn mismatch() -> ServerError {
    ServerError::Internal("applying a batch entry returned a result of another shape".into())
}

/// openraft's write errors as etcd's.
pub fn map_write_error(e: &RaftError<u64, ClientWriteError<u64, MemberNode>>) -> ServerError {
    match e {
        RaftError::Fatal(_) => ServerError::Stopped,
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(_) => ServerError::NotLeader,
            None => ServerError::NoLeader,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ServerError::Internal(e.to_string())
        }
    }
}
