//! Server settings, with etcd's names and defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::tls::TlsSettings;

/// Auto-compaction settings (`--auto-compaction-mode`, `--auto-compaction-retention`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Off (retention 0).
    Off,
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// The socket path of a `unix://` URL: what follows the scheme, as etcd takes the URL's host
/// (`unix://etcd.unix:1` is the file `etcd.unix:1` in the working directory) or, with an
/// absolute path, the path (`unix:///run/rusd.sock`). `None` for another scheme or no path.
pub fn unix_socket_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("unix://")?.trim_end_matches('/');
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Human-readable member name (`--name`).
    pub name: String,
    /// Data directory (`--data-dir`).
    pub data_dir: PathBuf,
    /// Where clients connect (`--listen-client-urls`); gRPC and HTTP share each listener.
    pub listen_client: Vec<SocketAddr>,
    /// Client URLs told to others (`--advertise-client-urls`).
    pub advertise_client_urls: Vec<String>,
    /// Client listeners serving TLS (`https://` in `--listen-client-urls`). An address in both
    /// `listen_client` and here serves both on one port.
    pub listen_client_tls: Vec<SocketAddr>,
    /// Unix socket paths clients connect to (`unix://` in `--listen-client-urls`), plaintext.
    pub listen_client_unix: Vec<PathBuf>,
    /// Listeners serving only `/metrics` and `/health` (`--listen-metrics-urls`, `http://`).
    pub listen_metrics: Vec<SocketAddr>,
    /// The `https://` ones (served with the client TLS files).
    pub listen_metrics_tls: Vec<SocketAddr>,
    /// Client TLS (`--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`,
    /// `--auto-tls`, `--client-crl-file`).
    pub client_tls: TlsSettings,
    /// Peer listener (`--listen-peer-urls`).
    pub listen_peer: Vec<SocketAddr>,
    /// Peer listeners serving TLS (`https://` in `--listen-peer-urls`).
    pub listen_peer_tls: Vec<SocketAddr>,
    /// Unix socket paths peers connect to (`unix://` in `--listen-peer-urls`), plaintext.
    pub listen_peer_unix: Vec<PathBuf>,
    /// Peer TLS, for the peer listeners and for dialling `https://` peers (`--peer-cert-file`,
    /// `--peer-key-file`, `--peer-trusted-ca-file`, `--peer-client-cert-auth`,
    /// `--peer-auto-tls`, `--peer-crl-file`).
    pub peer_tls: TlsSettings,
    /// TLS 1.2 cipher suites, Go's names (`--cipher-suites`); empty: rustls' defaults.
    pub cipher_suites: Vec<String>,
    /// Peer URLs told to others (`--initial-advertise-peer-urls`).
    pub advertise_peer_urls: Vec<String>,
    /// `--initial-cluster`: `name=url,...`.
    pub initial_cluster: Vec<(String, String)>,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--initial-cluster-state`: true for `new`.
    pub initial_cluster_new: bool,
    /// Applied entries between log snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Space quota in bytes (`--quota-backend-bytes`; 0 = default 2 GiB, negative = none).
    pub quota_backend_bytes: i64,
    /// Largest request (`--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations per txn (`--max-txn-ops`).
    pub max_txn_ops: usize,
    /// HTTP/2 streams per client connection, and gateway calls in flight per client listener
    /// (`--max-concurrent-streams`; `None`, 0 and `u32::MAX` mean no limit, etcd's default).
    pub max_concurrent_streams: Option<u32>,
    /// Auto-compaction.
    pub auto_compaction: AutoCompaction,
    /// Raft heartbeat (`--heartbeat-interval`).
    pub heartbeat_interval: Duration,
    /// Raft election timeout (`--election-timeout`).
    pub election_timeout: Duration,
    /// Watch progress notification interval
    /// (`--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: Duration,
    /// Engine page cache bytes (`--backend-cache-bytes`, rusd's own flag).
    pub backend_cache_bytes: usize,
    /// Refuse membership changes that could cost the quorum (`--strict-reconfig-check`, on by
    /// default); see [`crate::reconfig`]. The leader's setting decides.
    pub strict_reconfig_check: bool,
    /// Token type and options (`--auth-token`: `simple`, or `jwt,pub-key=...`).
    pub auth_token: String,
    /// Life of a simple token after its last use (`--auth-token-ttl`, seconds, default 300).
    pub auth_token_ttl: Duration,
    /// bcrypt cost of stored passwords (`--bcrypt-cost`, default 10).
    pub bcrypt_cost: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            data_dir: PathBuf::from("default.rusd"),
            listen_client: vec![SocketAddr::from(([127, 0, 0, 1], 2379))],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_client_tls: Vec::new(),
            listen_client_unix: Vec::new(),
            listen_metrics: Vec::new(),
            listen_metrics_tls: Vec::new(),
            client_tls: TlsSettings::default(),
            listen_peer: vec![SocketAddr::from(([127, 0, 0, 1], 2380))],
            listen_peer_tls: Vec::new(),
            listen_peer_unix: Vec::new(),
            peer_tls: TlsSettings::default(),
            cipher_suites: Vec::new(),
            advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: vec![("default".into(), "http://localhost:2380".into())],
            initial_cluster_token: "etcd-cluster".into(),
            initial_cluster_new: true,
            snapshot_count: 100_000,
            quota_backend_bytes: 0,
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            max_concurrent_streams: None,
            auto_compaction: AutoCompaction::Off,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            watch_progress_notify_interval: Duration::from_secs(600),
            backend_cache_bytes: 256 << 20,
            strict_reconfig_check: true,
            auth_token: "simple".into(),
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
        }
    }
}

/// etcd's default quota when `--quota-backend-bytes` is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

impl ServerConfig {
    /// How long a request may wait for the log (etcd: 5 s + 2 x election timeout).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + self.election_timeout * 2
    }

    /// The space quota in bytes, `None` when disabled.
    pub fn quota_bytes(&self) -> Option<u64> {
        match self.quota_backend_bytes {
            0 => Some(DEFAULT_QUOTA_BYTES),
            q if q < 0 => None,
            q => Some(q as u64),
        }
    }

    /// The stream limit of `--max-concurrent-streams`, `None` for no limit: etcd's default
    /// (`math.MaxUint32`) and 0 (grpc-go's "unset") mean none.
    pub fn stream_limit(&self) -> Option<u32> {
        self.max_concurrent_streams
            .filter(|&n| n != 0 && n != u32::MAX)
    }

    /// The shortest lease TTL: ceil(1.5 x election timeout) in seconds (2 s by default).
    pub fn min_lease_ttl(&self) -> i64 {
        let ms = self.election_timeout.as_millis() as i64 * 3 / 2;
        (ms + 999) / 1000
    }

    /// Where the engine's database lives.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("member").join("snap").join("db")
    }

    /// Where the Raft log lives.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("member").join("wal").join("raft.redb")
    }

    /// This member's peer URLs: from `--initial-cluster` for our name, else the advertised ones.
    pub fn own_peer_urls(&self) -> Vec<String> {
        let mine: Vec<String> = self
            .initial_cluster
            .iter()
            .filter(|(n, _)| *n == self.name)
            .map(|(_, u)| u.clone())
            .collect();
        if mine.is_empty() {
            self.advertise_peer_urls.clone()
        } else {
            mine
        }
    }
}

/// Go-style durations (`time.ParseDuration`): `10m`, `1h30m`, `100ms`, `5s`.
///
/// # Errors
/// An empty string, a bad number or an unknown unit.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ns" => value / 1e9,
            "us" | "\u{b5}s" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("bad duration unit in {s:?}")),
        };
        total += Duration::from_secs_f64(secs);
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_default_and_zero_streams_mean_no_limit() {
        let limit = |n| {
            ServerConfig {
                max_concurrent_streams: n,
                ..ServerConfig::default()
            }
            .stream_limit()
        };
        assert_eq!(limit(None), None);
        assert_eq!(limit(Some(0)), None);
        assert_eq!(limit(Some(u32::MAX)), None);
        assert_eq!(limit(Some(3)), Some(3));
    }

    #[test]
    fn etcd_defaults() {
        let c = ServerConfig::default();
        assert_eq!(c.min_lease_ttl(), 2);
        assert_eq!(c.request_timeout(), Duration::from_secs(7));
        assert_eq!(c.quota_bytes(), Some(2 << 30));
        assert_eq!(c.max_request_bytes, 1_572_864);
        assert!(c.strict_reconfig_check);
    }
}
