//! Command line: etcd's flag names, defaults and `ETCD_*` variables.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

/// rusd: an etcd-compatible key-value store.
#[derive(Parser, Debug)]
#[command(
    name = "rusd",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true,
    // Go's flag package takes a repeated flag (the last wins); etcd's e2e suite repeats
    // --client-cert-auth.
    args_override_self = true
)]
pub struct Cli {
    /// What to do; serving when none is given.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print the version (etcd-style lines, then rusd's own) and exit.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub version: bool,
    /// Serving flags (when no subcommand is given).
    #[command(flatten)]
    pub serve: Box<ServeFlags>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve (the default).
    #[command(args_override_self = true)]
    Serve(Box<ServeFlags>),
    /// Work on snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Load an etcd-compatible endpoint and report throughput and latencies.
    Bench(Box<crate::bench::BenchArgs>),
}

/// `rusd snapshot ...`
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Check a snapshot file's checksum and print what it holds.
    Status {
        /// The snapshot file.
        file: std::path::PathBuf,
    },
    /// Create a data directory from a snapshot file (as `etcdctl snapshot restore`).
    Restore {
        /// The snapshot file.
        file: std::path::PathBuf,
        /// The data directory to create (must not exist).
        #[arg(long, default_value = "default.rusd")]
        data_dir: std::path::PathBuf,
    },
}

/// Flags of `rusd serve`, named as etcd's.
#[derive(Args, Debug, Clone)]
pub struct ServeFlags {
    /// etcd's YAML configuration file; when given, every other flag and `ETCD_*` variable is
    /// ignored, as in etcd.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<std::path::PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: `<name>.rusd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<String>,
    /// Path to a dedicated WAL directory (rusd keeps its log under the data directory; accepted
    /// and ignored with a warning).
    #[arg(long, env = "ETCD_WAL_DIR")]
    pub wal_dir: Option<String>,
    /// URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// Client URLs of this member to advertise.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// Peer URLs of this member to advertise.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (`name=url,...`).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster token.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// `new` or `existing`.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Applied entries between log snapshots.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Backend size quota (0: default 2 GiB).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,
    /// Largest request a client may send.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: usize,
    /// Most operations in one txn.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// `periodic` or `revision`.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// History to keep: a duration (periodic; a bare number means hours) or a revision count.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Heartbeat interval in milliseconds.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Election timeout in milliseconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Watch progress notification interval (e.g. `10m`, `100ms`).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m"
    )]
    pub experimental_watch_progress_notify_interval: String,
    /// Engine page cache size in bytes (rusd's own flag).
    #[arg(long, env = "RUSD_BACKEND_CACHE_BYTES", default_value_t = 256 << 20)]
    pub backend_cache_bytes: usize,
    /// Threads that serve requests, 0 for one per CPU core (rusd's own flag). On a machine
    /// whose cores are shared with busy clients, fewer threads than cores do more work: see
    /// docs/benchmarks.md.
    #[arg(long, env = "RUSD_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// `debug`, `info`, `warn`, `error`.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// `zap` or `capnslog` (accepted; rusd always logs with tracing).
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    pub logger: String,
    /// Where logs go: `stderr` (default) or `stdout`.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// rusd's own: `json` for JSON log lines.
    #[arg(long, env = "RUSD_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Enable pprof (Go only: ignored with a warning).
    #[arg(long, env = "ETCD_ENABLE_PPROF", num_args = 0..=1, default_missing_value = "true")]
    pub enable_pprof: Option<bool>,
    /// Enable debug logging.
    #[arg(long, env = "ETCD_DEBUG", num_args = 0..=1, default_missing_value = "true")]
    pub debug: Option<bool>,
    /// The v2 API (not supported; `false` is accepted).
    #[arg(long, env = "ETCD_ENABLE_V2", num_args = 0..=1, default_missing_value = "true")]
    pub enable_v2: Option<bool>,
    /// Reject reconfiguration requests that would cause quorum loss (default true).
    ///
    /// etcd 3.4's rules, checked by the leader: MemberAdd of a voter and MemberRemove of a
    /// voter when fewer than a quorum of the voting members would have started (have a name:
    /// initial members, added ones once they publish); MemberAdd (learners too) unless the
    /// leader has been connected to every voting member for the last 5 s, and MemberRemove of a
    /// live voter unless the voters connected that long, less it, are a quorum of those left
    /// (connected: answering the leader's Raft RPCs with no failure and no 5 s silence);
    /// MemberPromote when the started voters and the learner are fewer than a quorum. A member
    /// added as a voter counts as one, although rusd keeps it a Raft learner until it has
    /// caught up.
    #[arg(long, env = "ETCD_STRICT_RECONFIG_CHECK", num_args = 0..=1, default_missing_value = "true")]
    pub strict_reconfig_check: Option<bool>,
    /// Accepted and ignored.
    #[arg(long, env = "ETCD_PRE_VOTE", num_args = 0..=1, default_missing_value = "true")]
    pub pre_vote: Option<bool>,
    /// Accepted and ignored.
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", num_args = 0..=1, default_missing_value = "true")]
    pub initial_election_tick_advance: Option<bool>,
    /// Check data against peers before serving (a single member has none; accepted).
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", num_args = 0..=1, default_missing_value = "true")]
    pub experimental_initial_corrupt_check: Option<bool>,
    /// Periodic corruption check interval (accepted; single member).
    #[arg(long, env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME")]
    pub experimental_corrupt_check_time: Option<String>,
    /// HTTP/2 streams per client connection, and gateway calls in flight (default: no limit).
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Metrics detail (`basic` or `extensive`; accepted).
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    pub metrics: String,
    /// Extra listeners serving only `/metrics` and `/health` (`http://` or `https://` with the
    /// client TLS files), as kubeadm's etcd manifests use for probes and scraping.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    pub listen_metrics_urls: String,
    /// Authentication token type: `simple`, or
    /// `jwt,pub-key=F,priv-key=F,sign-method=RS256[,ttl=5m]`.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds a simple token lives after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// bcrypt cost of stored passwords (4..=31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
    /// TLS for clients and peers.
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Unsupported flags: any value fails with a clear message.
    #[command(flatten)]
    pub unsupported: UnsupportedFlags,
}

/// TLS flags, named as etcd's (see `rusd_server::tls`).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// Client TLS: certificate file (PEM).
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<String>,
    /// Client TLS: key file (PEM).
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<String>,
    /// Client TLS: CA that client certificates must chain to (setting it requires them).
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<String>,
    /// Client TLS: require client certificates signed by --trusted-ca-file.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,
    /// Client TLS with a self-signed certificate made at start (under `<data-dir>/fixtures/client`).
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub auto_tls: Option<bool>,
    /// Client TLS: certificate revocation list (PEM or DER); revoked client certs are refused.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<String>,
    /// TLS 1.2 cipher suites, comma-separated Go names (rustls implements the ECDHE AES-GCM
    /// and ChaCha20-Poly1305 ones; others are left out with a warning). TLS 1.3 stays on.
    #[arg(long, env = "ETCD_CIPHER_SUITES")]
    pub cipher_suites: Option<String>,
    /// Peer TLS: certificate file (PEM), served and presented when dialling peers.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<String>,
    /// Peer TLS: key file (PEM).
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<String>,
    /// Peer TLS: CA that peers' certificates must chain to (both directions).
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<String>,
    /// Peer TLS: require peers to present certificates signed by --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: Option<bool>,
    /// Peer TLS with a self-signed certificate (under `<data-dir>/fixtures/peer`); peers are not
    /// verified.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, default_missing_value = "true")]
    pub peer_auto_tls: Option<bool>,
    /// Peer TLS: certificate revocation list for peers' certificates.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<String>,
    /// Peer TLS: accept only peer certificates with this subject common name.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Peer TLS: accept only peer certificates valid for this host name or IP.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Client TLS: accept only client certificates valid for this host name or IP.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    pub client_cert_allowed_hostname: Option<String>,
}

/// Flags rusd does not support yet; giving one fails at start with a clear message.
#[derive(Args, Debug, Clone, Default)]
pub struct UnsupportedFlags {
    /// Start a new cluster from this member's data (not supported yet).
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", num_args = 0..=1, default_missing_value = "true")]
    pub force_new_cluster: Option<bool>,
}

/// Go's flag package accepts `-name value` as well as `--name value`: turn single-dash long
/// flags into double-dash ones so clap understands both.
pub fn normalize_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    args.enumerate()
        .map(|(i, arg)| {
            if i == 0 {
                return arg;
            }
            match arg.to_str() {
                Some(s)
                    if s.len() > 2
                        && s.starts_with('-')
                        && !s.starts_with("--")
                        && s.as_bytes()[1].is_ascii_alphabetic() =>
                {
                    OsString::from(format!("-{s}"))
                }
                _ => arg,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_flags_are_accepted() {
        let args = normalize_args(
            ["rusd", "-name", "n1", "--data-dir=/x", "-5", "-v"]
                .iter()
                .map(OsString::from),
        );
        assert_eq!(args, ["rusd", "--name", "n1", "--data-dir=/x", "-5", "-v"]);
        let cli = Cli::parse_from(normalize_args(
            [
                "rusd",
                "-name",
                "n1",
                "--enable-pprof",
                "--quota-backend-bytes",
                "-1",
            ]
            .iter()
            .map(OsString::from),
        ));
        assert_eq!(cli.serve.name, "n1");
        assert_eq!(cli.serve.enable_pprof, Some(true));
        assert_eq!(cli.serve.quota_backend_bytes, -1);
    }

    #[test]
    fn no_arguments_serve_with_defaults() {
        let cli = Cli::parse_from(["rusd"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.listen_client_urls, "http://localhost:2379");
        assert_eq!(cli.serve.max_txn_ops, 128);
    }
}
