//! Starting and stopping a member: engine, log, services, listeners, background tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use rusd_mvcc::{MvccStore, StoreConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::alarm::Alarms;
use crate::apply::Applier;
use crate::config::ServerConfig;
use crate::context::Ctx;
use crate::lease::Lessor;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::StateMachine;
use crate::raft::{Op, Raft};

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine failed to open.
    #[error("opening the store: {0}")]
    Store(#[from] rusd_mvcc::Error),
    /// The log failed to open.
    #[error("opening the raft log: {0}")]
    Log(#[from] redb::Error),
    /// openraft refused to start.
    #[error("starting raft: {0}")]
    Raft(String),
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A flag value is not usable.
    #[error("{0}")]
    Config(String),
}

/// A running member.
pub struct Server {
    /// Shared state (for tests and embedding).
    pub ctx: Arc<Ctx>,
    /// Where clients can connect (the bound addresses, useful with port 0).
    pub client_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Opens the data directory, starts Raft and the services, and binds the client listeners.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(config: ServerConfig) -> Result<Self, StartError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Config(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        // An etcd database in place of the engine's file is converted first.
        crate::etcd_compat::prepare_data_dir(&config)?;
        let mut store_config = StoreConfig::new(config.db_path());
        store_config.backend.cache_size = config.backend_cache_bytes;
        store_config.max_txn_ops = config.max_txn_ops;
        let store = tokio::task::block_in_place(|| MvccStore::open(store_config))?;
        let log = LogStore::open(&config.log_path())?;

        let lessor = Arc::new(Lessor::new(config.min_lease_ttl()));
        for lease in store.leases() {
            lessor.granted(lease.id, lease.ttl);
        }
        let alarms = Arc::new(Alarms::load(&store)?);
        let applier = Arc::new(Applier {
            store: store.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
        });

        let peer_urls = config.own_peer_urls();
        let member_id = crate::membership::member_id(&peer_urls, &config.initial_cluster_token);
        let members: BTreeMap<u64, openraft::BasicNode> = config
            .initial_cluster
            .iter()
            .map(|(name, url)| {
                let urls: Vec<String> = config
                    .initial_cluster
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, u)| u.clone())
                    .collect();
                (
                    crate::membership::member_id(&urls, &config.initial_cluster_token),
                    openraft::BasicNode::new(url.clone()),
                )
            })
            .collect();
        if members.len() > 1 {
            return Err(StartError::Config(
                "clusters of more than one member arrive with issue #5; use a single-member \
                 --initial-cluster"
                    .into(),
            ));
        }
        let cluster_id =
            crate::membership::cluster_id(&members.keys().copied().collect::<Vec<_>>());

        let heartbeat = config.heartbeat_interval.as_millis().max(10) as u64;
        let election = config
            .election_timeout
            .as_millis()
            .max(heartbeat as u128 * 2) as u64;
        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            // A log entry carries a batch of requests, so etcd's --snapshot-count (requests
            // between snapshots) is counted by the proposer, which triggers the snapshots.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            // Entries kept behind a snapshot for followers that lag a little (etcd keeps 5,000
            // requests; an entry holds up to 1,024).
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let raft = Raft::new(
            member_id,
            Arc::new(raft_config),
            Network,
            log,
            StateMachine::new(applier),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            raft.initialize(members.clone())
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        } else {
            // A single member need not wait an election timeout to lead again.
            let _ = raft.trigger().elect().await;
        }

        let ctx = Arc::new(Ctx {
            ids: crate::ids::IdGenerator::new(member_id),
            metrics: crate::metrics::Metrics::new(),
            watch: crate::watch::WatchHub::new(store.clone()),
            config: config.clone(),
            store,
            proposer: crate::raft::proposer::Proposer::start(
                raft.clone(),
                config.snapshot_count.max(1),
            ),
            raft,
            lessor,
            alarms,
            member_id,
            cluster_id,
        });
        if !ctx.wait_leader(config.election_timeout * 5).await {
            tracing::warn!("no leader yet; serving anyway");
        }
        lessor_refresh(&ctx);

        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(expire_leases(
            ctx.clone(),
            shutdown_rx.clone(),
        )));

        let mut client_addrs = Vec::new();
        for addr in &config.listen_client {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen {
                    addr: *addr,
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?;
            client_addrs.push(bound);
            let router = crate::router::router(ctx.clone());
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                // Without TCP_NODELAY a small response waits for the peer's delayed ACK
                // (Nagle): ~40 ms per request on one connection.
                let listener = listener.tap_io(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::warn!(error = %e, "could not set TCP_NODELAY");
                    }
                });
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "client listener failed");
                }
            }));
            tracing::info!(address = %bound, "serving client traffic insecurely; this is strongly discouraged!");
        }
        tracing::info!(
            cluster_version = crate::VERSION_CLUSTER,
            "enabled capabilities for version {}",
            crate::VERSION_CLUSTER
        );
        tracing::info!(
            member_id = format!("{member_id:x}").as_str(),
            cluster_id = format!("{cluster_id:x}").as_str(),
            "published local member to cluster through raft"
        );
        tracing::info!("ready to serve client requests");
        Ok(Self {
            ctx,
            client_addrs,
            tasks,
            shutdown,
        })
    }

    /// Stops listening, stops Raft, and closes the store (everything applied is durable after).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let _ = self.ctx.raft.shutdown().await;
        let store = self.ctx.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

fn lessor_refresh(ctx: &Ctx) {
    ctx.lessor.refresh_all();
}

/// Revokes expired leases through the log, on the leader only.
///
/// Revokes go out concurrently (etcd revokes each expired lease in its own goroutine) and at
/// most [`EXPIRE_BATCH`] per round; a lease whose revoke failed is retried after
/// [`EXPIRE_RETRY`] (etcd's `expiredLeaseRetryInterval`). A lease revoked by a client while its
/// expiry revoke is in flight makes that revoke fail with "lease not found", which is fine.
async fn expire_leases(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    let mut was_leader = false;
    let mut retry_at: std::collections::HashMap<rusd_mvcc::LeaseId, tokio::time::Instant> =
        std::collections::HashMap::new();
    loop {
        let is_leader = ctx.leader() == Some(ctx.member_id);
        if is_leader && !was_leader {
            // A new leader gives every lease a full TTL (etcd's behaviour without checkpoints).
            ctx.lessor.refresh_all();
            retry_at.clear();
        }
        was_leader = is_leader;
        let mut wait = Duration::from_millis(500);
        if is_leader {
            let now = tokio::time::Instant::now();
            retry_at.retain(|_, at| *at > now);
            let (expired, next) = ctx.lessor.expired(EXPIRE_BATCH + retry_at.len());
            let due: Vec<_> = expired
                .into_iter()
                .filter(|id| !retry_at.contains_key(id))
                .take(EXPIRE_BATCH)
                .collect();
            let revokes = futures::stream::iter(due)
                .map(|id| {
                    let ctx = ctx.clone();
                    async move {
                        let revoke = rusd_proto::etcdserverpb::LeaseRevokeRequest { id: id.0 };
                        (id, ctx.propose(Op::LeaseRevoke(revoke)).await)
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>();
            let results = tokio::select! {
                results = revokes => results,
                _ = stop.wait_for(|s| *s) => return,
            };
            for (id, result) in results {
                match result {
                    Ok(_) => tracing::debug!(lease = %id, "expired lease revoked"),
                    Err(crate::error::ServerError::Mvcc(rusd_mvcc::Error::LeaseNotFound(_))) => {
                        ctx.lessor.revoked(id)
                    }
                    Err(e) => {
                        tracing::warn!(lease = %id, error = %e, "revoking an expired lease failed");
                        retry_at.insert(id, tokio::time::Instant::now() + EXPIRE_RETRY);
                    }
                }
            }
            if let Some(next) = next {
                wait = wait.min(next);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.lessor.changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// At most this many expired leases are revoked per round (etcd: 1000 revocations/s).
const EXPIRE_BATCH: usize = 500;
/// A failed expiry revoke is retried after this long (etcd's `expiredLeaseRetryInterval`).
const EXPIRE_RETRY: Duration = Duration::from_secs(3);
