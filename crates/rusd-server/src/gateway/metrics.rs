//! `/metrics`: the Prometheus registry in text format, with the gauges that mirror server state
//! refreshed first.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

use prometheus::{Encoder, TextEncoder};

use crate::context::Ctx;

/// The content type etcd's Prometheus handler answers with.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Any method on `/metrics` -> the text exposition format.
pub(super) async fn handle(ctx: Arc<Ctx>) -> Response {
    // Reading the database's size in use takes the backend's commit lock: off the runtime.
    let refreshed = ctx.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || refresh(&refreshed)).await {
        tracing::warn!(error = %e, "refreshing metrics failed");
    }
    let families = ctx.metrics.registry.gather();
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut body) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Sets the gauges that mirror the Raft state and the store.
pub(crate) fn refresh(ctx: &Ctx) {
    let m = &ctx.metrics;
    {
        let raft = ctx.raft.metrics();
        let raft = raft.borrow();
        m.has_leader.set(i64::from(raft.current_leader.is_some()));
        m.is_leader
            .set(i64::from(raft.current_leader == Some(ctx.member_id)));
        let applied = raft.last_applied.map_or(0, |l| l.index);
        m.proposals_applied.set(to_i64(applied));
        m.proposals_committed
            .set(to_i64(committed_index(&raft).max(applied)));
    }
    m.db_total_size.set(to_i64(ctx.store.size()));
    match ctx.store.size_in_use() {
        Ok(in_use) => m.db_size_in_use.set(to_i64(in_use)),
        Err(e) => tracing::warn!(error = %e, "reading the database size in use failed"),
    }
    m.current_revision.set(ctx.store.current_revision());
    // etcd's gauge stays 0 until the first compaction.
    m.compact_revision.set(ctx.store.compact_revision().max(0));
    // Live keys, as etcd's gauge (incremented on a key's creation, decremented on its delete).
    m.keys_total
        .set(i64::try_from(ctx.store.live_key_count()).unwrap_or(i64::MAX));
    let mirror = m.mvcc_ops.lock();
    let ops = ctx.store.op_counts();
    for (counter, total) in mirror
        .iter()
        .zip([ops.ranges, ops.puts, ops.deletes, ops.txns])
    {
        // The store's totals only grow; a counter catches up with them.
        counter.inc_by(total.saturating_sub(counter.get()));
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The highest log index a quorum of voters holds, as far as a leader knows (0 elsewhere:
/// openraft does not publish a follower's commit index, and the applied index bounds it).
fn committed_index(raft: &crate::raft::Metrics) -> u64 {
    let Some(replication) = &raft.replication else {
        return 0;
    };
    let voters: Vec<u64> = raft.membership_config.membership().voter_ids().collect();
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|id| {
            if *id == raft.id {
                raft.last_log_index.unwrap_or(0)
            } else {
                replication
                    .get(id)
                    .and_then(|l| l.map(|l| l.index))
                    .unwrap_or(0)
            }
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(voters.len() / 2).copied().unwrap_or(0)
}
