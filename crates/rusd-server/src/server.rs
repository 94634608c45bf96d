//! Starting and stopping a member: engine, log, services, listeners, background tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rusd_mvcc::{MvccStore, StoreConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::alarm::Alarms;
use crate::apply::Applier;
use crate::config::ServerConfig;
use crate::context::Ctx;
use crate::error::ServerError;
use crate::lease::Lessor;
use crate::membership::MemberNode;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, Peers};
use crate::raft::route::{Forwarded, Router};
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
    Log(#[from] crate::raft::log_store::OpenError),
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
    /// A Unix socket listener could not be bound.
    #[error("listening on unix socket {}: {source}", path.display())]
    ListenUnix {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A flag value is not usable.
    #[error("{0}")]
    Config(String),
    /// TLS files or flags are not usable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A running member.
pub struct Server {
    /// Shared state (for tests and embedding).
    pub ctx: Arc<Ctx>,
    /// Where clients can connect (the bound addresses, useful with port 0).
    pub client_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    removed: tokio::sync::watch::Receiver<bool>,
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
        let metrics = crate::metrics::Metrics::new();
        let commit_seconds = metrics.backend_commit.clone();
        store
            .backend()
            .observe_commits(move |took| commit_seconds.observe(took.as_secs_f64()));
        log.observe_fsync(metrics.wal_fsync.clone());
        if let Some(quota) = config.quota_bytes() {
            metrics
                .quota_bytes
                .set(i64::try_from(quota).unwrap_or(i64::MAX));
        }

        let lessor = Arc::new(Lessor::new(config.min_lease_ttl()));
        for lease in store.leases() {
            lessor.granted(lease.id, lease.ttl);
        }
        let alarms = Arc::new(Alarms::load(&store)?);
        let tokens = crate::auth::Tokens::from_flag(&config.auth_token, config.auth_token_ttl)
            .map_err(|e| StartError::Config(format!("--auth-token {}: {e}", config.auth_token)))?;
        let auth = Arc::new(
            crate::auth::AuthStore::load(&store, tokens)
                .map_err(|e| StartError::Config(format!("loading the auth store: {e}")))?,
        );
        let applier = Arc::new(Applier {
            store: store.clone(),
            lessor: lessor.clone(),
            alarms: alarms.clone(),
            auth: auth.clone(),
            applied_requests: Default::default(),
            before_batch: Default::default(),
        });

        // Before anything listens or dials: auto TLS writes its certificates under the data dir.
        let tls = crate::tls::MemberTls::prepare(&config)?;
        let peers = Arc::new(Peers::from_env().with_tls(tls.peer_dial.clone()));
        let initial = initial_members(&config);
        let own_urls = config.own_peer_urls();
        let (member_id, cluster_id) = match log
            .identity()
            .map_err(|e| StartError::Raft(e.to_string()))?
        {
            Some(ids) => ids,
            None if config.initial_cluster_new => {
                let me = crate::membership::member_id(&own_urls, &config.initial_cluster_token);
                if !initial.contains_key(&me) {
                    return Err(StartError::Config(format!(
                        "couldn't find local name {:?} in the initial cluster configuration",
                        config.name
                    )));
                }
                let ids: Vec<u64> = initial.keys().copied().collect();
                (me, crate::membership::cluster_id(&ids))
            }
            None => discover(&config, &peers).await?,
        };
        log.save_identity(member_id, cluster_id)
            .map_err(|e| StartError::Raft(e.to_string()))?;
        // Snapshot streams left by a crash mid-receive.
        let _ =
            std::fs::remove_dir_all(config.data_dir.join("member").join("snap").join("received"));

        let heartbeat = config.heartbeat_interval.as_millis().max(10) as u64;
        let election = config
            .election_timeout
            .as_millis()
            .max(heartbeat as u128 * 2) as u64;
        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: config.initial_cluster_token.clone(),
                heartbeat_interval: heartbeat,
                // openraft's followers refuse votes for a leader lease of election_timeout_max
                // and start an election a random timeout after that, so a failed leader is
                // replaced after 1.5-2x --election-timeout (etcd: 1-2x).
                election_timeout_min: (election / 2).max(heartbeat + 1),
                election_timeout_max: election,
                // A log entry carries a batch of requests, so etcd's --snapshot-count (requests
                // between snapshots) is counted by the proposer, which triggers the snapshots.
                snapshot_policy: openraft::SnapshotPolicy::Never,
                // Entries kept behind a snapshot for followers that lag a little (etcd keeps
                // 5,000 requests; an entry holds up to 1,024).
                max_in_snapshot_log_to_keep: 100,
                // A snapshot is streamed as one call; its time is not bounded by a timeout.
                install_snapshot_timeout: 60_000,
                ..Default::default()
            }
            .validate()
            .map_err(|e| StartError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(
            member_id,
            raft_config.clone(),
            Network::new(peers.clone()),
            log,
            StateMachine::new(applier.clone()),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && config.initial_cluster_new {
            raft.initialize(initial.clone())
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        } else if initialized {
            let single = {
                let m = raft.metrics();
                let m = m.borrow();
                let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
                voters == [member_id]
            };
            if single {
                // A single member need not wait an election timeout to lead again.
                let _ = raft.trigger().elect().await;
            }
        }

        let router = Router::new(raft.clone(), member_id, peers.clone());
        let proposal_counters = crate::raft::proposer::ProposalCounters {
            pending: metrics.proposals_pending.clone(),
            failed: metrics.proposals_failed.clone(),
        };
        let ctx = Arc::new(Ctx {
            ids: crate::ids::IdGenerator::new(member_id),
            metrics,
            watch: crate::watch::WatchHub::new(store.clone()),
            config: config.clone(),
            store,
            proposer: crate::raft::proposer::Proposer::start(
                raft.clone(),
                router.clone(),
                config.election_timeout * 5,
                proposal_counters,
            ),
            router,
            reconfig: crate::reconfig::Reconfig::default(),
            raft_config,
            read_batch: Default::default(),
            leader_batch: Default::default(),
            raft,
            lessor,
            alarms,
            auth,
            member_id,
            cluster_id,
        });

        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut peer_listeners = Vec::new();
        for (addr, accept) in crate::tls::listener::addresses(
            &config.listen_peer,
            &config.listen_peer_tls,
            tls.peer.as_ref(),
        ) {
            let served = accept.describe();
            peer_listeners.push(bind(addr, accept, "peer").await?);
            tracing::info!(peer_listener = %addr, served, "listening for peers");
        }
        for path in &config.listen_peer_unix {
            peer_listeners.push(bind_unix(path, "peer")?);
            tracing::info!(peer_listener = %path.display(), "listening for peers on a unix socket");
        }
        for listener in peer_listeners {
            let router = crate::grpc::peer::router(ctx.clone());
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                router,
                None,
                shutdown_rx.clone(),
            )));
        }

        if !ctx.wait_leader(config.election_timeout * 5).await {
            tracing::warn!("no leader yet; serving anyway");
        }
        lessor_refresh(&ctx);
        tasks.push(tokio::spawn(expire_leases(
            ctx.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(promote_members(
            ctx.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(snapshot_by_count(
            ctx.clone(),
            applier,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(count_leader_changes(
            ctx.clone(),
            shutdown_rx.clone(),
        )));
        let (removed_tx, removed) = tokio::sync::watch::channel(false);
        tasks.push(tokio::spawn(watch_removal(
            ctx.clone(),
            removed_tx,
            shutdown_rx.clone(),
        )));

        let mut client_addrs = Vec::new();
        for (addr, accept) in crate::tls::listener::addresses(
            &config.listen_client,
            &config.listen_client_tls,
            tls.client.as_ref(),
        ) {
            let secure = accept.tls.is_some();
            let served = accept.describe();
            // TCP_NODELAY is set on every accepted connection (see the listener).
            let listener = bind(addr, accept, "client").await?;
            let bound = listener.local_addr().unwrap_or(addr);
            client_addrs.push(bound);
            // Each connection's client certificate name is kept for `--client-cert-auth`.
            let router = crate::router::router(ctx.clone());
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                router,
                config.stream_limit(),
                shutdown_rx.clone(),
            )));
            if secure {
                tracing::info!(address = %bound, served, "serving client traffic with TLS");
            } else {
                tracing::info!(address = %bound, "serving client traffic insecurely; this is strongly discouraged!");
            }
        }
        for path in &config.listen_client_unix {
            let listener = bind_unix(path, "client")?;
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                crate::router::router(ctx.clone()),
                config.stream_limit(),
                shutdown_rx.clone(),
            )));
            tracing::info!(socket = %path.display(), "serving client traffic on a unix socket");
        }
        if !config.listen_metrics_tls.is_empty() && tls.client.is_none() {
            return Err(StartError::Config(
                "https:// in --listen-metrics-urls needs --cert-file and --key-file (or --auto-tls)"
                    .into(),
            ));
        }
        for (addr, accept) in crate::tls::listener::addresses(
            &config.listen_metrics,
            &config.listen_metrics_tls,
            tls.client.as_ref(),
        ) {
            let served = accept.describe();
            let listener = bind(addr, accept, "metrics").await?;
            let router = crate::gateway::metrics_routes(ctx.clone());
            tasks.push(tokio::spawn(crate::http_serve::serve(
                listener,
                router,
                None,
                shutdown_rx.clone(),
            )));
            tracing::info!(address = %addr, served, "serving /metrics and /health");
        }
        tracing::info!(
            cluster_version = crate::VERSION_CLUSTER,
            "enabled capabilities for version {}",
            crate::VERSION_CLUSTER
        );
        publish(&ctx).await;
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
            removed,
        })
    }

    /// Resolves when this member has been removed from the cluster (it then has nothing left
    /// to serve; etcd stops such a member).
    pub async fn removed(&self) {
        let mut removed = self.removed.clone();
        if removed.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
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

/// Binds `addr` and starts accepting plain or TLS connections on it as `accept` says (`what`
/// names the listener in logs).
async fn bind(
    addr: std::net::SocketAddr,
    accept: crate::tls::listener::Accept,
    what: &'static str,
) -> Result<crate::tls::listener::Listener, StartError> {
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    crate::tls::listener::Listener::new(tcp, accept, what)
        .map_err(|source| StartError::Listen { addr, source })
}

/// Binds a Unix socket listener (plaintext) at `path`.
fn bind_unix(
    path: &std::path::Path,
    what: &'static str,
) -> Result<crate::tls::listener::Listener, StartError> {
    crate::tls::listener::Listener::unix(path, what).map_err(|source| StartError::ListenUnix {
        path: path.to_path_buf(),
        source,
    })
}

/// The members of `--initial-cluster`, by id (a member may have several peer URLs).
fn initial_members(config: &ServerConfig) -> BTreeMap<u64, MemberNode> {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, url) in &config.initial_cluster {
        by_name.entry(name).or_default().push(url.clone());
    }
    by_name
        .into_iter()
        .map(|(name, urls)| {
            (
                crate::membership::member_id(&urls, &config.initial_cluster_token),
                MemberNode::initial(name, urls),
            )
        })
        .collect()
}

/// A member joining an existing cluster (`--initial-cluster-state existing`) learns its id and
/// the cluster's from the members it was told about: its id is the member with its peer URLs.
async fn discover(config: &ServerConfig, peers: &Peers) -> Result<(u64, u64), StartError> {
    let own = config.own_peer_urls();
    let others: Vec<&String> = config
        .initial_cluster
        .iter()
        .map(|(_, u)| u)
        .filter(|u| !own.contains(u))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last_error = String::from("no other member in --initial-cluster");
    loop {
        for url in &others {
            let answer = match peers.client_at(url) {
                Ok(mut client) => tokio::time::timeout(
                    Duration::from_secs(1),
                    client.members(rusd_proto::peerpb::MembersRequest {}),
                )
                .await
                .map_err(|_| format!("{url}: timed out"))
                .and_then(|r| r.map_err(|e| format!("{url}: {e}"))),
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    let me = answer
                        .members
                        .iter()
                        .find(|m| m.peer_ur_ls.iter().any(|u| own.contains(u)));
                    return match me {
                        Some(m) => Ok((m.id, answer.cluster_id)),
                        None => Err(StartError::Config(format!(
                            "member with peer URLs {own:?} is not in the cluster (add it with \
                             `etcdctl member add` first)"
                        ))),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Config(format!(
                "cannot fetch cluster info from peer urls: {last_error}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records this member's name and client URLs in the membership (etcd's publish), retrying
/// for a while; a member that cannot publish yet serves anyway and keeps trying.
async fn publish(ctx: &Arc<Ctx>) {
    let attempt = |ctx: Arc<Ctx>| async move {
        let (name, urls) = (
            ctx.config.name.clone(),
            ctx.config.advertise_client_urls.clone(),
        );
        let request = rusd_proto::peerpb::PublishRequest {
            id: ctx.member_id,
            name: name.clone(),
            client_urls: urls.clone(),
        };
        let forwarded = ctx
            .router
            .forward(ctx.leader_wait(), |mut leader| {
                let request = request.clone();
                async move { leader.publish(request).await }
            })
            .await?;
        match forwarded {
            Forwarded::Local => ctx.leader_publish(ctx.member_id, name, urls).await,
            Forwarded::Remote(_) => Ok(()),
        }
    };
    // Readiness ("published") waits for this, as etcd's does: a member list must show every
    // started member with its client URLs.
    let deadline = tokio::time::Instant::now() + PUBLISH_WAIT;
    // One attempt may wait on a leader that is being replaced: bound it.
    let attempt = move |ctx: Arc<Ctx>| {
        let once = attempt(ctx.clone());
        async move {
            tokio::time::timeout(ctx.leader_wait() * 2, once)
                .await
                .unwrap_or(Err(ServerError::Timeout))
        }
    };
    loop {
        match attempt(ctx.clone()).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "publishing this member failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not publish this member yet; retrying in the background");
                break;
            }
        }
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        // Bounded: a member that was removed meanwhile never succeeds.
        for _ in 0..7_200 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match attempt(ctx.clone()).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "publishing this member failed; retrying"),
            }
        }
    });
}

/// How long start-up waits for this member's publish before serving anyway.
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// Notices this member's removal: once it has been in the applied membership, a membership
/// without it means it was removed.
async fn watch_removal(
    ctx: Arc<Ctx>,
    removed: tokio::sync::watch::Sender<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut metrics = ctx.raft.metrics();
    let mut was_member = false;
    loop {
        let present = {
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            membership.get_node(&ctx.member_id).is_some()
        };
        if present {
            was_member = true;
        } else if was_member {
            tracing::error!(
                member = format!("{:x}", ctx.member_id).as_str(),
                "this member was removed from the cluster"
            );
            let _ = removed.send(true);
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `etcd_server_leader_changes_seen_total`: as etcd, every time this member learns of a
/// leader other than the last one it knew (the first leader counts).
async fn count_leader_changes(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut metrics = ctx.raft.metrics();
    let mut last = None;
    loop {
        let leader = metrics.borrow().current_leader;
        if leader.is_some() && leader != last {
            ctx.metrics.leader_changes.inc();
            last = leader;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// etcd's `--snapshot-count` on every member: after that many requests applied (a batch entry
/// carries many, so openraft's per-entry policy does not fit), a snapshot makes the engine
/// durable and lets openraft purge this member's log behind it.
async fn snapshot_by_count(
    ctx: Arc<Ctx>,
    applier: Arc<Applier>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = ctx.config.snapshot_count.max(1);
    let mut last = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let applied = applier
            .applied_requests
            .load(std::sync::atomic::Ordering::Relaxed);
        if applied.saturating_sub(last) >= every {
            last = applied;
            if let Err(e) = ctx.raft.trigger().snapshot().await {
                tracing::warn!(error = %e, "could not trigger a snapshot");
            }
        }
    }
}

/// Promotes members added as voters once they have caught up (on the leader).
async fn promote_members(ctx: Arc<Ctx>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        ctx.promote_caught_up().await;
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
