//! Prometheus metrics, with etcd's metric names where etcd has them.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: IntCounter,
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
    /// `etcd_server_slow_apply_total` and friends are not kept; requests by RPC are:
    /// `grpc_server_handled_total{grpc_method, grpc_code}`.
    pub grpc_handled: IntCounterVec,
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
        let grpc_handled = IntCounterVec::new(
            Opts::new("grpc_server_handled_total", "RPCs completed on the server."),
            &["grpc_method", "grpc_code"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(grpc_handled.clone()))
            .expect("unique metric");
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
            keys_total: gauge("etcd_debugging_mvcc_keys_total", "Keys in the key index."),
            watchers: gauge("etcd_debugging_mvcc_watcher_total", "Watchers."),
            grpc_handled,
            registry,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
