//! Prometheus metrics, with etcd's metric names where etcd has them.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry};

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `etcd_server_has_leader`.
    pub has_leader: IntGauge,
    /// `etcd_server_is_leader`.
    pub is_leader: IntGauge,
    /// `etcd_server_proposals_committed_total`.
    pub proposals_committed: IntGauge,
    /// `etcd_server_proposals_applied_total`.
    pub proposals_applied: IntGauge,
    /// `etcd_server_proposals_failed_total`: client writes that could not be committed
    /// (no leader, a timeout, a stopped server), counted by the proposer.
    pub proposals_failed: IntCounter,
    /// `etcd_server_proposals_pending`: client writes proposed and not yet applied.
    pub proposals_pending: IntGauge,
    /// `etcd_mvcc_db_total_size_in_bytes`.
    pub db_total_size: IntGauge,
    /// `etcd_mvcc_db_total_size_in_use_in_bytes`.
    pub db_size_in_use: IntGauge,
    /// `etcd_debugging_mvcc_current_revision`.
    pub current_revision: IntGauge,
    /// `etcd_debugging_mvcc_compact_revision`.
    pub compact_revision: IntGauge,
    /// `etcd_debugging_mvcc_keys_total`.
    pub keys_total: IntGauge,
    /// `etcd_debugging_mvcc_watcher_total`.
    pub watchers: IntGauge,
    /// `etcd_mvcc_{range,put,delete,txn}_total`, mirrored from the store's totals.
    /// The mirror is brought up to date under this lock, one scrape at a time (two scrapes
    /// adding the same difference would count it twice).
    pub mvcc_ops: std::sync::Arc<parking_lot::Mutex<[IntCounter; 4]>>,
    /// `grpc_server_started_total` and `grpc_server_handled_total` (go-grpc-prometheus).
    pub grpc: std::sync::Arc<crate::grpc::server_metrics::GrpcCounters>,
    /// `etcd_disk_wal_fsync_duration_seconds`: the Raft log's fdatasyncs.
    pub wal_fsync: Histogram,
    /// `etcd_disk_backend_commit_duration_seconds`: the engine's durable commits.
    pub backend_commit: Histogram,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes: IntCounter,
    /// `etcd_server_quota_backend_bytes`.
    pub quota_bytes: IntGauge,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    ///
    /// # Panics
    /// Never in practice: only on a duplicate metric name, which is a bug.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let proposals_failed =
            IntCounter::new("etcd_server_proposals_failed_total", "Failed proposals.")
                .expect("valid metric");
        registry
            .register(Box::new(proposals_failed.clone()))
            .expect("unique metric");
        let grpc =
            crate::grpc::server_metrics::GrpcCounters::register(&registry).expect("unique metrics");
        // process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...: the
        // standard process metrics etcd's dashboards read next to its own.
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metrics");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let mvcc_ops = [
            counter(
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            counter(
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            ),
            counter(
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            ),
            counter(
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            ),
        ];
        // etcd's buckets for both: 1 ms to about 8 s, doubling.
        let histogram = |name: &str, help: &str| {
            let buckets = prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets");
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let wal_fsync = histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
        );
        let backend_commit = histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
        );
        let leader_changes = counter(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
        );
        // Constant gauges labelled with the versions, as etcd's.
        for (name, label, version) in [
            (
                "etcd_server_version",
                "server_version",
                crate::VERSION_SERVER,
            ),
            (
                "etcd_cluster_version",
                "cluster_version",
                crate::VERSION_CLUSTER,
            ),
        ] {
            let g = prometheus::IntGaugeVec::new(
                Opts::new(
                    name,
                    format!(
                        "Which version is running. 1 for '{label}' label with current version."
                    ),
                ),
                &[label],
            )
            .expect("valid metric");
            g.with_label_values(&[version]).set(1);
            registry.register(Box::new(g)).expect("unique metric");
        }
        Self {
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether a leader exists (1) or not (0).",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether this member is the leader.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "Consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "Consensus proposals applied.",
            ),
            proposals_failed,
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            db_total_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Physically allocated size of the backend database in bytes.",
            ),
            db_size_in_use: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Logically used size of the backend database in bytes.",
            ),
            current_revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of the store.",
            ),
            compact_revision: gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction.",
            ),
            keys_total: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            watchers: gauge("etcd_debugging_mvcc_watcher_total", "Watchers."),
            mvcc_ops: std::sync::Arc::new(parking_lot::Mutex::new(mvcc_ops)),
            grpc: std::sync::Arc::new(grpc),
            wal_fsync,
            backend_commit,
            leader_changes,
            quota_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
