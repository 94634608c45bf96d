//! The openraft state machine: applies entries through [`Applier`] and snapshots by flushing
//! the engine (its database file is the snapshot).

// openraft's `StorageError` is large, and its traits fix the error type.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use parking_lot::Mutex;
use rusd_mvcc::Table;

use super::{EngineSnapshot, LogId, RaftResponse, TypeConfig};
use crate::apply::{keys, Applier};
use crate::membership::MemberNode;

type StorageResult<T> = Result<T, StorageError<u64>>;

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::error(e.to_string()),
    )
    .into()
}

/// The state machine. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    applier: Arc<Applier>,
    last_snapshot: Arc<Mutex<Option<SnapshotMeta<u64, MemberNode>>>>,
}

impl StateMachine {
    /// A state machine applying through `applier`.
    pub fn new(applier: Arc<Applier>) -> Self {
        Self {
            applier,
            last_snapshot: Arc::default(),
        }
    }

    fn stored(&self) -> StorageResult<(Option<LogId>, StoredMembership<u64, MemberNode>)> {
        let tx = self.applier.store.backend().read();
        let read = |key: &[u8]| {
            tx.get(Table::Members, key)
                .map_err(|e| sm_err(ErrorVerb::Read, e))
        };
        // Not simply the recorded applied log id: a batch entry cut by a crash must be applied
        // again (see `Applier::applied_log_id`).
        let applied = self
            .applier
            .applied_log_id()
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let membership = match read(keys::MEMBERSHIP)? {
            Some(bytes) => bincode::deserialize(&bytes).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        // Everything applied so far becomes durable; the log up to here can then be purged.
        let store = self.applier.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let (last_log_id, last_membership) = self.stored()?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id: format!(
                "{}-{}",
                last_log_id.map_or(0, |l| l.index),
                self.applier.store.current_revision()
            ),
        };
        *self.last_snapshot.lock() = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(EngineSnapshot::Live(self.applier.store.clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId>, StoredMembership<u64, MemberNode>)> {
        self.stored()
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<RaftResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let applier = self.applier.clone();
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        tokio::task::block_in_place(|| {
            let mut out = Vec::with_capacity(entries.len());
            for entry in entries {
                let response = match &entry.payload {
                    EntryPayload::Blank => applier.apply(entry.log_id, None, None),
                    EntryPayload::Normal(request) => {
                        applier.apply(entry.log_id, Some(request), None)
                    }
                    EntryPayload::Membership(m) => {
                        let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                        let bytes =
                            bincode::serialize(&stored).map_err(|e| sm_err(ErrorVerb::Write, e))?;
                        applier.apply(entry.log_id, None, Some(bytes))
                    }
                };
                out.push(response);
            }
            Ok(out)
        })
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<EngineSnapshot>> {
        // Snapshots arrive whole through the peer service (`install_full_snapshot`), never in
        // openraft's chunks.
        Err(sm_err(
            ErrorVerb::Write,
            "snapshots are received by the peer service, not in chunks",
        ))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, MemberNode>,
        snapshot: Box<EngineSnapshot>,
    ) -> StorageResult<()> {
        let EngineSnapshot::Received(path) = *snapshot else {
            return Err(sm_err(ErrorVerb::Write, "installing a live snapshot"));
        };
        let applier = self.applier.clone();
        tokio::task::spawn_blocking(move || applier.install_snapshot(&path))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, e))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *self.last_snapshot.lock() = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.last_snapshot.lock().clone().map(|meta| Snapshot {
            meta,
            snapshot: Box::new(EngineSnapshot::Live(self.applier.store.clone())),
        }))
    }
}
