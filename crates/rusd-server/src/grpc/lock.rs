//! The Lock service (etcd's `v3lock`): Lock and Unlock, server-side versions of etcd's
//! `concurrency.Mutex`, plus [`Recipes`], the KV, lease and watch steps the Lock and Election
//! services share.
//!
//! A lock `name` is held by the key `name/<lease id in hex>` with the oldest create revision
//! under `name/`. Lock creates the caller's key (or finds it), then waits until every key under
//! the prefix created before it is deleted: it watches the newest of them for its deletion, and
//! looks again. The key lives as long as its lease, so an expired lease releases the lock.
//!
//! etcd serves these services through an in-process clientv3: every KV or lease error reaches
//! the caller with its text and code Unknown ([`ServerError::ViaClient`]), a call without a
//! lease gets a fresh lease of [`SESSION_TTL`] seconds (a `concurrency.Session` with no lease),
//! and a caller that goes away while waiting has its key deleted.

use std::sync::Arc;

use futures::StreamExt;
use rusd_proto::etcdserverpb as pb;
use rusd_proto::mvccpb;
use rusd_proto::v3lockpb;
use tonic::{Request, Response, Status};

use crate::auth::Credentials;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::grpc::kv::KvService;
use crate::grpc::lease::LeaseService;
use crate::watch::WatchResponses;

/// The TTL of the lease granted for a Lock or Campaign that names none (etcd's
/// `concurrency` default session TTL).
pub const SESSION_TTL: i64 = 60;

/// `e` as the caller of a Lock or Election call sees it (see [`ServerError::ViaClient`]).
pub(crate) fn via_client(e: ServerError) -> ServerError {
    match e {
        ServerError::ViaClient(_) => e,
        other => ServerError::ViaClient(Box::new(other)),
    }
}

/// A lease id as Go's `%x` writes it (a sign, then the magnitude).
fn go_hex(id: i64) -> String {
    if id < 0 {
        format!("-{:x}", id.unsigned_abs())
    } else {
        format!("{id:x}")
    }
}

/// The key that stands for `lease` in the lock or election `prefix` (which ends in `/`).
pub(crate) fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(go_hex(lease).as_bytes());
    key
}

/// `name` + `/`: where a lock's or an election's keys live.
pub(crate) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// Compare: `key`'s create revision is `rev`.
pub(crate) fn created_at(key: &[u8], rev: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(rev)),
    }
}

/// Txn op: put `value` at `key` with `lease`.
pub(crate) fn put_op(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

/// Txn op: a range.
pub(crate) fn range_op(range: pb::RangeRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(range)),
    }
}

/// Txn op: delete `key`.
pub(crate) fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
        )),
    }
}

/// Range: the one key `key`.
pub(crate) fn get(key: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// Range: the oldest key under `prefix` (clientv3's `WithFirstCreate`).
pub(crate) fn first_created(prefix: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: rusd_mvcc::prefix_end(prefix),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        ..Default::default()
    }
}

/// Range: the newest key under `prefix` created at or before `max_create_revision`
/// (clientv3's `WithLastCreate` + `WithMaxCreateRev`).
fn last_created_until(prefix: &[u8], max_create_revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: rusd_mvcc::prefix_end(prefix),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Descend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// The range result of the `i`-th op of a txn response.
pub(crate) fn range_result(resp: &pb::TxnResponse, i: usize) -> Option<&pb::RangeResponse> {
    match resp.responses.get(i)?.response.as_ref()? {
        pb::response_op::Response::ResponseRange(r) => Some(r),
        _ => None,
    }
}

/// The revision of a header.
pub(crate) fn revision(header: Option<&pb::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// The KV, lease and watch steps of etcd's concurrency recipes, run inside the server (every
/// write through the log, every read linearizable).
#[derive(Clone)]
pub struct Recipes {
    ctx: Arc<Ctx>,
    kv: KvService,
    lease: LeaseService,
    /// The caller's credentials: the KV steps run as the caller, as etcd's in-process client
    /// passes the caller's context on.
    cred: Credentials,
}

impl Recipes {
    /// The recipes over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            kv: KvService::new(ctx.clone()),
            lease: LeaseService::new(ctx.clone()),
            ctx,
            cred: Credentials::none(),
        }
    }

    /// The recipes run as the caller with `cred`.
    pub(crate) fn as_caller(&self, cred: &Credentials) -> Self {
        Self {
            cred: cred.clone(),
            ..self.clone()
        }
    }

    /// The lease a call works under: `lease`, or a fresh [`SESSION_TTL`] lease for 0.
    pub(crate) async fn session(&self, lease: i64) -> Result<i64, ServerError> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = self
            .lease
            .do_lease_grant(pb::LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            })
            .await
            .map_err(via_client)?;
        Ok(granted.id)
    }

    /// A txn.
    pub(crate) async fn txn(&self, t: pb::TxnRequest) -> Result<pb::TxnResponse, ServerError> {
        self.kv.do_txn(t, &self.cred).await.map_err(via_client)
    }

    /// A linearizable range.
    pub(crate) async fn range(
        &self,
        r: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, ServerError> {
        self.kv.do_range(r, &self.cred).await.map_err(via_client)
    }

    /// Deletes `key`.
    pub(crate) async fn delete(
        &self,
        key: Vec<u8>,
    ) -> Result<pb::DeleteRangeResponse, ServerError> {
        self.kv
            .do_delete_range(
                pb::DeleteRangeRequest {
                    key,
                    ..Default::default()
                },
                &self.cred,
            )
            .await
            .map_err(via_client)
    }

    /// Watches `[key, range_end)` from `start_revision`; dropping the stream cancels it.
    pub(crate) fn watch(
        &self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start_revision: i64,
    ) -> WatchResponses {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key,
                    range_end,
                    start_revision,
                    ..Default::default()
                },
            )),
        };
        crate::watch::open_stream(
            &self.ctx,
            futures::stream::iter([create]),
            self.cred.clone(),
        )
    }

    /// Waits until `key` is deleted at or after `rev` (etcd's `waitDelete`).
    async fn wait_delete(&self, key: Vec<u8>, rev: i64) -> Result<(), ServerError> {
        let mut responses = self.watch(key, Vec::new(), rev);
        while let Some(resp) = responses.next().await {
            let resp = resp.map_err(via_client)?;
            if resp.compact_revision != 0 {
                return Err(via_client(
                    rusd_mvcc::Error::Compacted {
                        requested: rev,
                        compacted: resp.compact_revision,
                    }
                    .into(),
                ));
            }
            if resp.canceled {
                return Err(if resp.cancel_reason.is_empty() {
                    via_client(
                        rusd_mvcc::Error::FutureRevision {
                            requested: rev,
                            current: revision(resp.header.as_ref()),
                        }
                        .into(),
                    )
                } else {
                    ServerError::Internal(resp.cancel_reason)
                });
            }
            if resp
                .events
                .iter()
                .any(|e| e.r#type == mvccpb::event::EventType::Delete as i32)
            {
                return Ok(());
            }
        }
        Err(ServerError::LostWatcher)
    }

    /// Waits until no key under `prefix` was created at or before `max_create_revision`
    /// (etcd's `waitDeletes`); returns the header of the last look.
    pub(crate) async fn wait_deletes(
        &self,
        prefix: &[u8],
        max_create_revision: i64,
    ) -> Result<Option<pb::ResponseHeader>, ServerError> {
        loop {
            let resp = self
                .range(last_created_until(prefix, max_create_revision))
                .await?;
            let Some(last) = resp.kvs.into_iter().next() else {
                return Ok(resp.header);
            };
            self.wait_delete(last.key, revision(resp.header.as_ref()))
                .await?;
        }
    }

    /// A guard that runs `t` in the background when dropped armed: the clean-up of a call that
    /// fails or whose caller goes away.
    pub(crate) fn on_drop(&self, t: pb::TxnRequest) -> Cleanup {
        Cleanup {
            kv: self.kv.clone(),
            cred: self.cred.clone(),
            txn: Some(t),
        }
    }
}

/// See [`Recipes::on_drop`].
pub(crate) struct Cleanup {
    kv: KvService,
    cred: Credentials,
    txn: Option<pb::TxnRequest>,
}

impl Cleanup {
    /// Drops the guard without running its clean-up.
    pub(crate) fn disarm(mut self) {
        self.txn = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (kv, cred) = (self.kv.clone(), self.cred.clone());
        runtime.spawn(async move {
            if let Err(e) = kv.do_txn(txn, &cred).await {
                tracing::debug!(error = %e, "lock/election clean-up failed");
            }
        });
    }
}

/// etcd's Lock service.
#[derive(Clone)]
pub struct LockService {
    recipes: Recipes,
}

impl LockService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            recipes: Recipes::new(ctx),
        }
    }
}

/// The lock operations, shared by gRPC and the HTTP gateway.
impl LockService {
    /// Lock: waits until the caller's key `name/<lease hex>` is the oldest under `name/`. Locking
    /// again under a lease that holds the lock returns at once.
    ///
    /// # Errors
    /// KV and lease errors (e.g. an unknown lease), with code Unknown.
    pub async fn do_lock(
        &self,
        r: v3lockpb::LockRequest,
        cred: &Credentials,
    ) -> Result<v3lockpb::LockResponse, ServerError> {
        let recipes = &self.recipes.as_caller(cred);
        let lease = recipes.session(r.lease).await?;
        let prefix = prefix_of(&r.name);
        let key = session_key(&prefix, lease);
        // Join the waiters (or find the key this lease already has), and see who holds the
        // lock, in one round.
        let resp = recipes
            .txn(pb::TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![put_op(&key, b"", lease), range_op(first_created(&prefix))],
                failure: vec![range_op(get(&key)), range_op(first_created(&prefix))],
            })
            .await?;
        let my_rev = if resp.succeeded {
            revision(resp.header.as_ref())
        } else {
            range_result(&resp, 0)
                .and_then(|r| r.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        let owner = range_result(&resp, 1).and_then(|r| r.kvs.first());
        if owner.is_none_or(|kv| kv.create_revision == my_rev) {
            return Ok(v3lockpb::LockResponse {
                header: resp.header,
                key,
            });
        }
        // Whatever ends the wait but success (an error, the caller going away) gives the key up.
        let unlock = recipes.on_drop(pb::TxnRequest {
            success: vec![delete_op(&key)],
            ..Default::default()
        });
        let header = recipes.wait_deletes(&prefix, my_rev - 1).await?;
        unlock.disarm();
        Ok(v3lockpb::LockResponse { header, key })
    }

    /// Unlock: deletes the key (whether or not it exists).
    ///
    /// # Errors
    /// KV errors (e.g. an empty key), with code Unknown.
    pub async fn do_unlock(
        &self,
        r: v3lockpb::UnlockRequest,
        cred: &Credentials,
    ) -> Result<v3lockpb::UnlockResponse, ServerError> {
        let resp = self.recipes.as_caller(cred).delete(r.key).await?;
        Ok(v3lockpb::UnlockResponse {
            header: resp.header,
        })
    }
}

#[tonic::async_trait]
impl v3lockpb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<v3lockpb::LockRequest>,
    ) -> Result<Response<v3lockpb::LockResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_lock(request.into_inner(), &cred).await?,
        ))
    }

    async fn unlock(
        &self,
        request: Request<v3lockpb::UnlockRequest>,
    ) -> Result<Response<v3lockpb::UnlockResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_unlock(request.into_inner(), &cred).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_go_formats_them() {
        assert_eq!(
            session_key(b"lk/", 0x390d_a20c_1969_0006),
            b"lk/390da20c19690006"
        );
        assert_eq!(session_key(b"lk/", -26), b"lk/-1a");
        assert_eq!(session_key(b"/", i64::MIN), b"/-8000000000000000");
    }
}
