//! The Maintenance service: Alarm, Status, Defragment, Hash, HashKV, Snapshot, MoveLeader,
//! Downgrade.
//!
//! Responses follow etcd 3.5 (the version rusd reports): Alarm, Status, Hash and HashKV carry a
//! header at the current revision; Defragment and MoveLeader answer an empty message, as etcd
//! does. Snapshot streams an etcd bbolt file of the store (`rusd_mvcc::etcd_compat`, with the
//! server's buckets from [`crate::etcd_compat`]) in 32 KiB chunks followed by one message holding
//! the SHA-256 of everything before it, as etcd does: `etcdctl snapshot save|status|restore`, etcd
//! itself and `rusd snapshot status|restore` all read the result.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rusd_proto::etcdserverpb as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::Credentials;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::raft::{Op, Output};

/// Bytes of snapshot data per message (etcd's `snapshotSendBufferSize`).
pub const SNAPSHOT_CHUNK: usize = 32 * 1024;
/// Length of the SHA-256 trailer that ends a snapshot stream.
const SHA256_LEN: usize = 32;
/// Chunks buffered between the engine's writer thread and the gRPC stream.
const SNAPSHOT_QUEUE: usize = 8;

/// The snapshot messages of one Snapshot call, in order; an error ends the stream.
pub type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, ServerError>>;

/// etcd's Maintenance service.
#[derive(Clone)]
pub struct MaintenanceService {
    ctx: Arc<Ctx>,
}

impl MaintenanceService {
    /// The service over `ctx`.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }
}

/// Runs blocking engine work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServerError::Internal(e.to_string()))?
}

/// etcd's text for a raised alarm in `StatusResponse.errors`: the protobuf text form of the
/// `AlarmMember`, e.g. `"memberID:10276657743932975437 alarm:NOSPACE "`.
pub fn alarm_error_text(m: &pb::AlarmMember) -> String {
    let mut text = String::new();
    if m.member_id != 0 {
        text.push_str(&format!("memberID:{} ", m.member_id));
    }
    if m.alarm != 0 {
        match pb::AlarmType::try_from(m.alarm) {
            Ok(t) => text.push_str(&format!("alarm:{} ", t.as_str_name())),
            Err(_) => text.push_str(&format!("alarm:{} ", m.alarm)),
        }
    }
    text
}

/// The Maintenance operations, shared by gRPC and the HTTP gateway.
impl MaintenanceService {
    /// Alarm GET/ACTIVATE/DEACTIVATE, all through the log as in etcd. GET lists every member's
    /// alarms (etcd ignores `memberID` there); DEACTIVATE with `memberID` 0 or alarm NONE
    /// matches every member or type.
    ///
    /// # Errors
    /// etcd's availability errors.
    pub async fn do_alarm(
        &self,
        mut r: pb::AlarmRequest,
    ) -> Result<pb::AlarmResponse, ServerError> {
        let ctx = &self.ctx;
        if r.action == pb::alarm_request::AlarmAction::Get as i32 {
            r.member_id = 0;
        }
        match ctx.propose(Op::Alarm(r)).await? {
            Output::Alarm(mut out) => {
                out.header = ctx.header(ctx.store.current_revision());
                Ok(out)
            }
            other => Err(ServerError::Internal(format!(
                "unexpected apply output {other:?}"
            ))),
        }
    }

    /// Status of this member. Never goes through the log, so it answers without a leader.
    ///
    /// # Errors
    /// A backend error while measuring the database.
    pub async fn do_status(
        &self,
        _r: pb::StatusRequest,
    ) -> Result<pb::StatusResponse, ServerError> {
        let ctx = &self.ctx;
        let store = ctx.store.clone();
        let (db_size, in_use) = blocking(move || Ok((store.size(), store.size_in_use()?))).await?;
        let (leader, term, last_index, applied) = {
            let m = ctx.raft.metrics();
            let m = m.borrow();
            (
                m.current_leader,
                m.current_term,
                m.last_log_index.unwrap_or(0),
                m.last_applied.map_or(0, |l| l.index),
            )
        };
        let is_learner = ctx.is_learner();
        // The engine records the applied index with the data, so it is never behind a write
        // that has been answered (openraft's metrics are published asynchronously).
        let applied = applied.max(ctx.store.applied_index());
        let mut errors = Vec::new();
        if leader.is_none() {
            errors.push("etcdserver: no leader".to_string());
        }
        errors.extend(ctx.alarms.list(0, 0).iter().map(alarm_error_text));
        Ok(pb::StatusResponse {
            header: ctx.header(ctx.store.current_revision()),
            version: crate::VERSION_SERVER.to_string(),
            db_size: i64::try_from(db_size).unwrap_or(i64::MAX),
            leader: leader.unwrap_or(0),
            // etcd's raftIndex is its committed index, which openraft 0.9 does not publish:
            // the last log index (committed on a single member once appended).
            raft_index: last_index.max(applied),
            raft_term: term,
            raft_applied_index: applied,
            errors,
            db_size_in_use: i64::try_from(in_use).unwrap_or(i64::MAX),
            is_learner,
            storage_version: crate::VERSION_CLUSTER.to_string(),
            db_size_quota: ctx
                .config
                .quota_bytes()
                .map_or(0, |q| i64::try_from(q).unwrap_or(i64::MAX)),
            downgrade_info: None,
        })
    }

    /// Defragment: rewrites the database file compactly. Unlike etcd's, the engine's
    /// defragmentation does not stop reads or writes. Answers an empty message, as etcd does.
    ///
    /// # Errors
    /// A backend error.
    pub async fn do_defragment(
        &self,
        _r: pb::DefragmentRequest,
        cred: &Credentials,
    ) -> Result<pb::DefragmentResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let store = self.ctx.store.clone();
        tracing::info!("starting defragment");
        let before = store.size();
        let started = std::time::Instant::now();
        blocking(move || store.defragment().map_err(ServerError::from))
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "failed to defragment"))?;
        tracing::info!(
            db_size_before = before,
            db_size_after = self.ctx.store.size(),
            took = ?started.elapsed(),
            "finished defragment"
        );
        Ok(pb::DefragmentResponse::default())
    }

    /// Hash: CRC-32C over every table except the applied index.
    ///
    /// # Errors
    /// A backend error.
    pub async fn do_hash(
        &self,
        _r: pb::HashRequest,
        cred: &Credentials,
    ) -> Result<pb::HashResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let store = self.ctx.store.clone();
        let (revision, hash) = blocking(move || {
            let revision = store.current_revision();
            Ok((revision, store.hash()?))
        })
        .await?;
        Ok(pb::HashResponse {
            header: self.ctx.header(revision),
            hash,
        })
    }

    /// HashKV: CRC-32C of the key history up to `revision` (0: current).
    ///
    /// # Errors
    /// Compacted or future revision, or a backend error.
    pub async fn do_hash_kv(
        &self,
        r: pb::HashKvRequest,
        cred: &Credentials,
    ) -> Result<pb::HashKvResponse, ServerError> {
        self.ctx.check_admin(cred).await?;
        let store = self.ctx.store.clone();
        let (current, h) = blocking(move || {
            let h = store.hash_kv(r.revision)?;
            Ok((store.current_revision(), h))
        })
        .await?;
        Ok(pb::HashKvResponse {
            header: self.ctx.header(current),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        })
    }

    /// Snapshot: streams a consistent copy of the store as an etcd bbolt file. The engine
    /// exports it on a blocking thread into a temporary file next to the database (unlinked
    /// at once), which is then sent through a bounded queue: memory use does not depend on the
    /// database size, and the size is known before the first message.
    ///
    /// The first message carries a header whose revision the snapshot contains at least.
    /// `remaining_bytes` counts the bolt bytes still to come after each message, as etcd's does:
    /// the last data message and the final SHA-256 message carry 0.
    ///
    /// # Errors
    /// None up front; engine errors arrive in the stream.
    pub async fn do_snapshot(
        &self,
        _r: pb::SnapshotRequest,
        cred: &Credentials,
    ) -> Result<SnapshotStream, ServerError> {
        self.ctx.check_admin(cred).await?;
        let ctx = self.ctx.clone();
        let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE);
        let header = ctx.header(ctx.store.current_revision());
        tokio::task::spawn_blocking(move || {
            let extra = crate::etcd_compat::export_buckets(&ctx);
            let db = ctx.config.db_path();
            let tmp_dir = db.parent().unwrap_or(std::path::Path::new("."));
            let snapshot = match ctx.store.etcd_snapshot(tmp_dir, &extra) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot export failed");
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            let size = snapshot.summary.size;
            tracing::info!(
                total_bytes = size,
                revision = snapshot.summary.revision,
                "sending database snapshot to client"
            );
            let mut w = ChunkWriter {
                tx,
                buf: Vec::with_capacity(2 * SNAPSHOT_CHUNK + SHA256_LEN),
                sent: 0,
                estimate: size,
                header,
            };
            match snapshot.write_to(&mut w) {
                Ok(total) => {
                    if w.finish().is_ok() {
                        tracing::info!(total_bytes = total, "sent database snapshot to client");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot stream failed");
                    let _ = w.tx.blocking_send(Err(e.into()));
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// MoveLeader: only the leader may transfer. Moving to the current leader is a no-op (as in
    /// etcd); an id that is not a voting member is refused with "bad leader transferee".
    ///
    /// # Errors
    /// `NotLeader`, `BadLeaderTransferee`, or a transfer that did not complete in time.
    pub async fn do_move_leader(
        &self,
        r: pb::MoveLeaderRequest,
    ) -> Result<pb::MoveLeaderResponse, ServerError> {
        self.ctx.leader_transfer(r.target_id).await?;
        Ok(pb::MoveLeaderResponse::default())
    }

    /// Downgrade (etcd 3.5+): rusd has no storage versions to downgrade between.
    ///
    /// # Errors
    /// Always Unsupported.
    pub async fn do_downgrade(
        &self,
        _r: pb::DowngradeRequest,
    ) -> Result<pb::DowngradeResponse, ServerError> {
        Err(ServerError::Unsupported(
            "cluster downgrade is not supported".into(),
        ))
    }
}

/// An [`io::Write`] that cuts the engine's snapshot stream into messages. It holds back the
/// last [`SHA256_LEN`] bytes, so that at the end the checksum goes out as its own message.
struct ChunkWriter {
    tx: mpsc::Sender<Result<pb::SnapshotResponse, ServerError>>,
    buf: Vec<u8>,
    sent: u64,
    estimate: u64,
    header: Option<pb::ResponseHeader>,
}

impl ChunkWriter {
    fn send(&mut self, blob: Vec<u8>, remaining_bytes: u64) -> io::Result<()> {
        let msg = pb::SnapshotResponse {
            header: self.header.take(),
            remaining_bytes,
            blob,
            version: String::new(),
        };
        self.tx
            .blocking_send(Ok(msg))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "snapshot client went away"))
    }

    /// Sends the data held back and then the checksum.
    fn finish(mut self) -> io::Result<()> {
        if self.buf.len() < SHA256_LEN {
            let _ = self.tx.blocking_send(Err(ServerError::Internal(
                "snapshot stream shorter than its checksum".into(),
            )));
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let sha = self.buf.split_off(self.buf.len() - SHA256_LEN);
        let data = std::mem::take(&mut self.buf);
        if !data.is_empty() {
            self.sent += data.len() as u64;
            self.send(data, 0)?;
        }
        self.send(sha, 0)
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() > SNAPSHOT_CHUNK + SHA256_LEN {
            let rest = self.buf.split_off(SNAPSHOT_CHUNK);
            let chunk = std::mem::replace(&mut self.buf, rest);
            self.sent += chunk.len() as u64;
            // More data follows for sure: at least what is buffered beyond the trailer.
            let known = (self.buf.len() - SHA256_LEN) as u64;
            let remaining = self.estimate.saturating_sub(self.sent).max(known);
            self.send(chunk, remaining)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(self.do_alarm(request.into_inner()).await?))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.do_status(request.into_inner()).await?))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_defragment(request.into_inner(), &cred).await?,
        ))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_hash(request.into_inner(), &cred).await?,
        ))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let cred = Credentials::from_grpc(&request);
        Ok(Response::new(
            self.do_hash_kv(request.into_inner(), &cred).await?,
        ))
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let cred = Credentials::from_grpc(&request);
        let stream = self.do_snapshot(request.into_inner(), &cred).await?;
        Ok(Response::new(Box::pin(
            stream.map(|r| r.map_err(Status::from)),
        )))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Ok(Response::new(
            self.do_move_leader(request.into_inner()).await?,
        ))
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Ok(Response::new(
            self.do_downgrade(request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn alarm_texts_match_etcd() {
        let m = pb::AlarmMember {
            member_id: 13668033151171901709,
            alarm: pb::AlarmType::Nospace as i32,
        };
        assert_eq!(
            alarm_error_text(&m),
            "memberID:13668033151171901709 alarm:NOSPACE "
        );
        let m = pb::AlarmMember {
            member_id: 1,
            alarm: pb::AlarmType::Corrupt as i32,
        };
        assert_eq!(alarm_error_text(&m), "memberID:1 alarm:CORRUPT ");
    }

    fn chunks_of(len: usize) -> Vec<pb::SnapshotResponse> {
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let mut w = ChunkWriter {
            tx,
            buf: Vec::new(),
            sent: 0,
            estimate: 10,
            header: Some(pb::ResponseHeader::default()),
        };
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap();
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            out.push(m.unwrap());
        }
        let joined: Vec<u8> = out.iter().flat_map(|m| m.blob.clone()).collect();
        assert_eq!(joined, data);
        out
    }

    #[test]
    fn chunking_holds_back_the_checksum() {
        for len in [
            SHA256_LEN + 1,
            SNAPSHOT_CHUNK,
            SNAPSHOT_CHUNK + SHA256_LEN,
            SNAPSHOT_CHUNK + SHA256_LEN + 1,
            3 * SNAPSHOT_CHUNK + SHA256_LEN,
            5 * SNAPSHOT_CHUNK + 777,
        ] {
            let msgs = chunks_of(len);
            let (last, data) = msgs.split_last().unwrap();
            assert_eq!(last.blob.len(), SHA256_LEN, "len {len}");
            assert_eq!(last.remaining_bytes, 0);
            assert!(msgs[0].header.is_some());
            assert!(msgs[1..].iter().all(|m| m.header.is_none()));
            let (final_data, middle) = data.split_last().unwrap();
            assert_eq!(final_data.remaining_bytes, 0);
            assert!(!final_data.blob.is_empty());
            for m in middle {
                assert_eq!(m.blob.len(), SNAPSHOT_CHUNK);
                assert!(m.remaining_bytes > 0);
            }
        }
    }
}
