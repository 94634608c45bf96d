//! The Election service (etcd's `v3election`): Campaign, Proclaim, Leader, Observe and Resign,
//! server-side versions of etcd's `concurrency.Election`.
//!
//! A candidate of election `name` is the key `name/<lease id in hex>` holding its value; the
//! leader is the candidate with the oldest create revision. A [`LeaderKey`](rusd_proto::v3electionpb::LeaderKey)
//! (name, key, create revision, lease) identifies a leadership: Proclaim and Resign act only
//! while that key still exists with that create revision.
//!
//! As in etcd, every KV or lease error reaches the caller with code Unknown, and so do the
//! election's own errors (`election: no leader`, `election: not leader`, `"leader" field must
//! be provided`); see [`crate::grpc::lock`] for the shared steps.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rusd_proto::etcdserverpb as pb;
use rusd_proto::mvccpb;
use rusd_proto::v3electionpb as epb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::lock::{
    created_at, delete_op, first_created, get, prefix_of, put_op, range_op, range_result, revision,
    session_key, Recipes,
};
use crate::auth::Credentials;
use crate::context::Ctx;
use crate::error::ServerError;

/// The responses of one Observe call.
pub type ObserveStream =
    Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, ServerError>> + Send>>;

/// etcd's Election service.
#[derive(Clone)]
pub struct ElectionService {
    recipes: Recipes,
}

impl ElectionService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            recipes: Recipes::new(ctx),
        }
    }
}

/// Txn: delete `key` if it was created at `rev` (a resignation).
fn resign_txn(key: &[u8], rev: i64) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: vec![created_at(key, rev)],
        success: vec![delete_op(key)],
        failure: Vec::new(),
    }
}

/// The election operations, shared by gRPC and the HTTP gateway.
impl ElectionService {
    /// Campaign: becomes a candidate (or finds this lease's candidacy, updating its value) and
    /// waits until it is the oldest. The header is the one of the first step, as in etcd.
    ///
    /// # Errors
    /// KV and lease errors (e.g. an unknown lease), `election: not leader` if the candidacy
    /// vanished while its value was updated; all with code Unknown.
    pub async fn do_campaign(
        &self,
        r: epb::CampaignRequest,
        cred: &Credentials,
    ) -> Result<epb::CampaignResponse, ServerError> {
        let recipes = &self.recipes.as_caller(cred);
        let lease = recipes.session(r.lease).await?;
        let prefix = prefix_of(&r.name);
        let key = session_key(&prefix, lease);
        let resp = recipes
            .txn(pb::TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![put_op(&key, &r.value, lease)],
                failure: vec![range_op(get(&key))],
            })
            .await?;
        let mut rev = revision(resp.header.as_ref());
        if !resp.succeeded {
            let existing = range_result(&resp, 0)
                .and_then(|r| r.kvs.first())
                .ok_or_else(|| ServerError::Internal("campaign: candidate key not found".into()))?;
            rev = existing.create_revision;
            if existing.value != r.value {
                if let Err(e) = self.proclaim(&key, rev, lease, &r.value, cred).await {
                    // etcd resigns and reports the proclaim's error.
                    let _ = recipes.txn(resign_txn(&key, rev)).await;
                    return Err(e);
                }
            }
        }
        // A caller that goes away while waiting resigns; other failures keep the candidacy.
        let resign = recipes.on_drop(resign_txn(&key, rev));
        let waited = recipes.wait_deletes(&prefix, rev - 1).await;
        resign.disarm();
        waited?;
        Ok(epb::CampaignResponse {
            header: resp.header,
            leader: Some(epb::LeaderKey {
                name: r.name,
                key,
                rev,
                lease,
            }),
        })
    }

    /// Puts `value` at `key` under `lease` if `key` was created at `rev`.
    async fn proclaim(
        &self,
        key: &[u8],
        rev: i64,
        lease: i64,
        value: &[u8],
        cred: &Credentials,
    ) -> Result<pb::TxnResponse, ServerError> {
        let resp = self
            .recipes
            .as_caller(cred)
            .txn(pb::TxnRequest {
                compare: vec![created_at(key, rev)],
                success: vec![put_op(key, value, lease)],
                failure: Vec::new(),
            })
            .await?;
        if !resp.succeeded {
            return Err(ServerError::ElectionNotLeader);
        }
        Ok(resp)
    }

    /// Proclaim: the leader announces a new value. As in etcd, a leader key with lease 0 puts
    /// the value under a fresh lease.
    ///
    /// # Errors
    /// `"leader" field must be provided`, `election: not leader` (the key is gone or was
    /// created again), KV and lease errors; all with code Unknown.
    pub async fn do_proclaim(
        &self,
        r: epb::ProclaimRequest,
        cred: &Credentials,
    ) -> Result<epb::ProclaimResponse, ServerError> {
        let leader = r.leader.ok_or(ServerError::MissingLeaderKey)?;
        let lease = self.recipes.as_caller(cred).session(leader.lease).await?;
        let resp = self
            .proclaim(&leader.key, leader.rev, lease, &r.value, cred)
            .await?;
        Ok(epb::ProclaimResponse {
            header: resp.header,
        })
    }

    /// Leader: the oldest candidate's key-value.
    ///
    /// # Errors
    /// `election: no leader`, KV errors; all with code Unknown.
    pub async fn do_leader(
        &self,
        r: epb::LeaderRequest,
        cred: &Credentials,
    ) -> Result<epb::LeaderResponse, ServerError> {
        let resp = self
            .recipes
            .as_caller(cred)
            .range(first_created(&prefix_of(&r.name)))
            .await?;
        let kv = resp
            .kvs
            .into_iter()
            .next()
            .ok_or(ServerError::ElectionNoLeader)?;
        Ok(epb::LeaderResponse {
            header: resp.header,
            kv: Some(kv),
        })
    }

    /// Observe: the current leader (once there is one), then every new value of it, then the
    /// next leader, and so on. The stream ends (without an error) if a step fails, as etcd's
    /// does.
    ///
    /// # Errors
    /// None so far; the signature leaves room.
    pub async fn do_observe(
        &self,
        r: epb::LeaderRequest,
        cred: &Credentials,
    ) -> Result<ObserveStream, ServerError> {
        let (tx, rx) = mpsc::channel(1);
        let recipes = self.recipes.as_caller(cred);
        let prefix = prefix_of(&r.name);
        tokio::spawn(async move {
            tokio::select! {
                () = tx.closed() => {}
                () = observe(&recipes, &prefix, &tx) => {}
            }
        });
        Ok(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok),
        ))
    }

    /// Resign: deletes the leader key if it was created at the given revision (no error if
    /// not). As in etcd, a leader key with lease 0 makes a fresh lease first.
    ///
    /// # Errors
    /// `"leader" field must be provided`, KV and lease errors; all with code Unknown.
    pub async fn do_resign(
        &self,
        r: epb::ResignRequest,
        cred: &Credentials,
    ) -> Result<epb::ResignResponse, ServerError> {
        let leader = r.leader.ok_or(ServerError::MissingLeaderKey)?;
        self.recipes.as_caller(cred).session(leader.lease).await?;
        let resp = self
            .recipes
            .as_caller(cred)
            .txn(resign_txn(&leader.key, leader.rev))
            .await?;
        Ok(epb::ResignResponse {
            header: resp.header,
        })
    }
}

fn is_put(e: &mvccpb::Event) -> bool {
    e.r#type == mvccpb::event::EventType::Put as i32
}

/// Observe's loop (etcd's `Election.observe`): returns when a step fails or the receiver is
/// gone.
async fn observe(recipes: &Recipes, prefix: &[u8], tx: &mpsc::Sender<epb::LeaderResponse>) {
    loop {
        let Ok(resp) = recipes.range(first_created(prefix)).await else {
            return;
        };
        let start = revision(resp.header.as_ref());
        let (header, kv) = match resp.kvs.into_iter().next() {
            Some(kv) => (resp.header, kv),
            None => {
                // No leader: the first put under the prefix makes one.
                let mut watch =
                    recipes.watch(prefix.to_vec(), rusd_mvcc::prefix_end(prefix), start);
                loop {
                    let Some(Ok(wr)) = watch.next().await else {
                        return;
                    };
                    if wr.canceled || wr.compact_revision != 0 {
                        return;
                    }
                    let mut header = wr.header;
                    if let Some(kv) = wr.events.into_iter().find(is_put).and_then(|e| e.kv) {
                        if let Some(h) = header.as_mut() {
                            h.revision = kv.mod_revision;
                        }
                        break (header, kv);
                    }
                }
            }
        };
        let next = revision(header.as_ref()) + 1;
        let key = kv.key.clone();
        let first = epb::LeaderResponse {
            header,
            kv: Some(kv),
        };
        if tx.send(first).await.is_err() {
            return;
        }
        // Follow the leader's key until it is deleted.
        let mut watch = recipes.watch(key, Vec::new(), next);
        'leading: loop {
            let Some(Ok(wr)) = watch.next().await else {
                return;
            };
            if wr.canceled || wr.compact_revision != 0 {
                return;
            }
            for ev in wr.events {
                if !is_put(&ev) {
                    break 'leading;
                }
                let update = epb::LeaderResponse {
                    header: wr.header,
                    kv: ev.kv,
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_campaign(request.into_inner(), &cred).await?,
        ))
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_proclaim(request.into_inner(), &cred).await?,
        ))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_leader(request.into_inner(), &cred).await?,
        ))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, Status>> + Send>>;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let cred = Credentials::from_grpc(&request);
        let stream = self.do_observe(request.into_inner(), &cred).await?;
        Ok(Response::new(Box::pin(
            stream.map(|r| r.map_err(Status::from)),
        )))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_resign(request.into_inner(), &cred).await?,
        ))
    }
}
