//! `lease-keepalive`: each client grants a lease and opens a LeaseKeepAlive stream, then each
//! request is one keepalive round trip on it (send, wait for the answer). Leases are revoked
//! at the end.

use super::client::Ch;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use rusd_proto::etcdserverpb::lease_client::LeaseClient;
use rusd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use super::client::Conns;
use super::driver::{self, Worker};
use super::report::{Recorder, Report};
use super::Global;

/// `rusd bench lease-keepalive`
#[derive(Args, Debug)]
pub struct LeaseArgs {
    /// TTL of the leases, in seconds.
    #[arg(long, default_value_t = 100)]
    pub ttl: i64,
}

const OPS: &[&str] = &["keepalive"];

struct KeepAliveWorker {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<LeaseKeepAliveResponse>,
}

impl Worker for KeepAliveWorker {
    async fn step(&mut self, _n: u64, rec: &mut Recorder) {
        let start = Instant::now();
        if self
            .tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .is_err()
        {
            rec.error(0, Code::Unavailable, "keepalive stream closed");
            return;
        }
        match self.rx.message().await {
            Ok(Some(resp)) if resp.ttl > 0 => rec.ok(0, start),
            Ok(Some(_)) => rec.error(0, Code::NotFound, "lease not found"),
            Ok(None) => rec.error(0, Code::Unavailable, "keepalive stream ended"),
            Err(s) => rec.error(0, s.code(), s.message()),
        }
    }
}

/// Grants a lease and opens its keepalive stream (one round trip done).
async fn open(mut lease: LeaseClient<Ch>, ttl: i64) -> anyhow::Result<KeepAliveWorker> {
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .context("lease grant")?
        .into_inner()
        .id;
    let (tx, rx) = mpsc::channel(1);
    // Queued before the call: some servers send response headers only with a first message.
    tx.send(LeaseKeepAliveRequest { id })
        .await
        .context("keepalive stream")?;
    let mut rx = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .context("opening a keepalive stream")?
        .into_inner();
    rx.message()
        .await
        .context("first keepalive")?
        .context("keepalive stream ended")?;
    Ok(KeepAliveWorker { id, tx, rx })
}

/// Runs the workload.
pub async fn run(g: &Global, a: LeaseArgs) -> anyhow::Result<Report> {
    let conns = Conns::connect(g).await?;
    let mut workers = Vec::with_capacity(g.clients);
    for i in 0..g.clients {
        workers.push(open(conns.lease(i), a.ttl).await?);
    }
    let ids: Vec<i64> = workers.iter().map(|w| w.id).collect();
    let plan = g.plan();
    let (rec, elapsed) = driver::run(&plan, workers, OPS, g.progress).await?;
    let mut lease = conns.lease(0);
    for id in ids {
        // Best effort: the leases expire anyway.
        let _ = lease.lease_revoke(LeaseRevokeRequest { id }).await;
    }
    Ok(Report::new(&rec, &[0], elapsed.as_secs_f64()))
}
