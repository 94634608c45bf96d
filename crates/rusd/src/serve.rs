//! `rusd serve`: flags to configuration, logging, signals.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rusd_server::config::{AutoCompaction, TlsSettings};
use rusd_server::{Server, ServerConfig};

use crate::cli::ServeFlags;

/// The addresses of a `--listen-*-urls` flag, by scheme.
#[derive(Debug, Default)]
struct Listen {
    /// From `http://` URLs.
    plain: Vec<SocketAddr>,
    /// From `https://` URLs.
    tls: Vec<SocketAddr>,
    /// Socket paths from `unix://` URLs.
    unix: Vec<PathBuf>,
    /// The URLs' hosts, for an auto-TLS certificate.
    hosts: Vec<String>,
}

/// Parses `http[s]://host:port[,...]` into socket addresses by scheme.
fn listen_addrs(urls: &str, flag: &str) -> anyhow::Result<Listen> {
    let mut out = Listen::default();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true)
        } else if url.starts_with("unix://") {
            let path = rusd_server::config::unix_socket_path(url)
                .ok_or_else(|| anyhow!("--{flag} {url}: no socket path"))?;
            out.unix.push(path);
            continue;
        } else if url.starts_with("unixs://") {
            bail!("--{flag} {url}: TLS on unix sockets (unixs://) is not supported yet");
        } else {
            bail!("--{flag} {url}: expected http://host:port or https://host:port");
        };
        let hostport = rest.trim_end_matches('/');
        let addrs: Vec<SocketAddr> = hostport
            .to_socket_addrs()
            .with_context(|| format!("--{flag} {url}: cannot resolve"))?
            .collect();
        // Prefer IPv4 for "localhost", as etcd's listener does.
        let pick = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| anyhow!("--{flag} {url}: no address"))?;
        if tls {
            out.tls.push(pick);
        } else {
            out.plain.push(pick);
        }
        let host = hostport
            .rsplit_once(':')
            .map_or(hostport, |(h, _)| h)
            .trim_matches(|c| c == '[' || c == ']');
        if !out.hosts.iter().any(|h| h == host) {
            out.hosts.push(host.to_owned());
        }
    }
    if out.plain.is_empty() && out.tls.is_empty() && out.unix.is_empty() {
        bail!("--{flag} is empty");
    }
    Ok(out)
}

/// The TLS settings of the flags: clients' and peers'.
fn tls_settings(flags: &ServeFlags, client: &Listen, peer: &Listen) -> (TlsSettings, TlsSettings) {
    let t = &flags.tls;
    let path = |p: &Option<String>| p.as_ref().filter(|p| !p.is_empty()).map(PathBuf::from);
    let client_tls = TlsSettings {
        cert_file: path(&t.cert_file),
        key_file: path(&t.key_file),
        trusted_ca_file: path(&t.trusted_ca_file),
        client_cert_auth: t.client_cert_auth == Some(true),
        auto_tls: t.auto_tls == Some(true),
        crl_file: path(&t.client_crl_file),
        auto_tls_hosts: client.hosts.clone(),
        allowed_cn: None,
        allowed_hostname: nonempty(&t.client_cert_allowed_hostname),
    };
    let peer_tls = TlsSettings {
        cert_file: path(&t.peer_cert_file),
        key_file: path(&t.peer_key_file),
        trusted_ca_file: path(&t.peer_trusted_ca_file),
        client_cert_auth: t.peer_client_cert_auth == Some(true),
        auto_tls: t.peer_auto_tls == Some(true),
        crl_file: path(&t.peer_crl_file),
        auto_tls_hosts: peer.hosts.clone(),
        allowed_cn: nonempty(&t.peer_cert_allowed_cn),
        allowed_hostname: nonempty(&t.peer_cert_allowed_hostname),
    };
    (client_tls, peer_tls)
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.is_empty()).cloned()
}

fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Go-style durations: `10m`, `1h30m`, `100ms`, `5s`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    rusd_server::config::parse_go_duration(s).map_err(anyhow::Error::msg)
}

fn auto_compaction(mode: &str, retention: &str) -> anyhow::Result<AutoCompaction> {
    match mode {
        "periodic" => {
            // A bare number is hours, as in etcd.
            let d = match retention.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours * 3600),
                Err(_) => parse_duration(retention)?,
            };
            Ok(if d.is_zero() {
                AutoCompaction::Off
            } else {
                AutoCompaction::Periodic(d)
            })
        }
        "revision" => {
            let n: i64 = retention
                .parse()
                .with_context(|| format!("--auto-compaction-retention {retention:?}"))?;
            Ok(if n == 0 {
                AutoCompaction::Off
            } else {
                AutoCompaction::Revision(n)
            })
        }
        other => bail!("--auto-compaction-mode {other:?}: expected periodic or revision"),
    }
}

/// Flags that are accepted but change nothing; say so.
fn warn_ignored(flags: &ServeFlags) {
    if flags.experimental_initial_corrupt_check == Some(true) {
        tracing::info!(
            "--experimental-initial-corrupt-check: a single member has no peer to compare with"
        );
    }
}

fn reject_unsupported(flags: &ServeFlags) -> anyhow::Result<()> {
    let u = &flags.unsupported;
    let set = |name: &str, present: bool| -> anyhow::Result<()> {
        if present {
            bail!("--{name} is not supported yet (see README)");
        }
        Ok(())
    };
    set("force-new-cluster", u.force_new_cluster == Some(true))?;
    set("enable-v2", flags.enable_v2 == Some(true))?;
    Ok(())
}

/// Builds the server configuration from the flags.
pub fn config(flags: &ServeFlags) -> anyhow::Result<ServerConfig> {
    reject_unsupported(flags)?;
    let initial_cluster = match &flags.initial_cluster {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.split_once('=')
                    .map(|(n, u)| (n.to_owned(), u.to_owned()))
                    .ok_or_else(|| anyhow!("--initial-cluster {m:?}: expected name=url"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => urls(&flags.initial_advertise_peer_urls)
            .into_iter()
            .map(|u| (flags.name.clone(), u))
            .collect(),
    };
    let initial_cluster_new = match flags.initial_cluster_state.as_str() {
        "new" => true,
        "existing" => false,
        other => bail!("--initial-cluster-state {other:?}: expected new or existing"),
    };
    let client = listen_addrs(&flags.listen_client_urls, "listen-client-urls")?;
    let peer = listen_addrs(&flags.listen_peer_urls, "listen-peer-urls")?;
    let metrics = if flags.listen_metrics_urls.trim().is_empty() {
        Listen::default()
    } else {
        listen_addrs(&flags.listen_metrics_urls, "listen-metrics-urls")?
    };
    if !metrics.unix.is_empty() {
        bail!("--listen-metrics-urls: unix sockets are not supported there");
    }
    let (client_tls, peer_tls) = tls_settings(flags, &client, &peer);
    Ok(ServerConfig {
        name: flags.name.clone(),
        data_dir: PathBuf::from(
            flags
                .data_dir
                .clone()
                .unwrap_or_else(|| format!("{}.rusd", flags.name)),
        ),
        listen_client: client.plain,
        listen_client_tls: client.tls,
        listen_client_unix: client.unix,
        listen_metrics: metrics.plain,
        listen_metrics_tls: metrics.tls,
        client_tls,
        advertise_client_urls: urls(&flags.advertise_client_urls),
        listen_peer: peer.plain,
        listen_peer_tls: peer.tls,
        listen_peer_unix: peer.unix,
        peer_tls,
        cipher_suites: flags
            .tls
            .cipher_suites
            .as_deref()
            .map(urls)
            .unwrap_or_default(),
        advertise_peer_urls: urls(&flags.initial_advertise_peer_urls),
        initial_cluster,
        initial_cluster_token: flags.initial_cluster_token.clone(),
        initial_cluster_new,
        snapshot_count: flags.snapshot_count,
        quota_backend_bytes: flags.quota_backend_bytes,
        max_request_bytes: flags.max_request_bytes,
        max_txn_ops: flags.max_txn_ops,
        max_concurrent_streams: flags.max_concurrent_streams,
        auto_compaction: auto_compaction(
            &flags.auto_compaction_mode,
            &flags.auto_compaction_retention,
        )?,
        heartbeat_interval: Duration::from_millis(flags.heartbeat_interval),
        election_timeout: Duration::from_millis(flags.election_timeout),
        watch_progress_notify_interval: parse_duration(
            &flags.experimental_watch_progress_notify_interval,
        )?
        .max(Duration::from_millis(100)),
        backend_cache_bytes: flags.backend_cache_bytes,
        strict_reconfig_check: flags.strict_reconfig_check.unwrap_or(true),
        auth_token: flags.auth_token.clone(),
        auth_token_ttl: Duration::from_secs(flags.auth_token_ttl),
        bcrypt_cost: flags.bcrypt_cost,
    })
}

fn init_logging(flags: &ServeFlags) {
    let level = if flags.debug == Some(true) {
        "debug".to_owned()
    } else {
        flags.log_level.clone()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUSD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},openraft=warn,h2=warn,hyper=warn,tower=warn"
        ))
    });
    let stdout = flags.log_outputs == "stdout";
    use std::io::IsTerminal;
    let ansi = if stdout {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let result = match (flags.log_format.as_str(), stdout) {
        ("json", true) => builder.json().with_writer(std::io::stdout).try_init(),
        ("json", false) => builder.json().with_writer(std::io::stderr).try_init(),
        (_, true) => builder.with_writer(std::io::stdout).try_init(),
        (_, false) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(e) = result {
        eprintln!("rusd: logging already initialised: {e}");
    }
}

/// Serves until SIGINT or SIGTERM.
pub fn run(flags: ServeFlags) -> anyhow::Result<()> {
    let (flags, from_file) = match &flags.config_file {
        Some(path) => {
            let loaded = crate::config_file::load(path)?;
            (loaded.flags, Some((path.clone(), loaded.ignored)))
        }
        None => (flags, None),
    };
    init_logging(&flags);
    if let Some((path, ignored)) = from_file {
        tracing::info!(
            path = %path.display(),
            "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"
        );
        if !ignored.is_empty() {
            tracing::warn!(keys = ?ignored, "configuration file keys rusd does not use; ignored");
        }
    }
    if flags.enable_pprof == Some(true) {
        tracing::warn!("--enable-pprof is a Go feature; ignored");
    }
    warn_ignored(&flags);
    if flags.wal_dir.is_some() {
        tracing::warn!("--wal-dir is ignored; rusd keeps its log under --data-dir");
    }
    let config = config(&flags)?;
    tracing::info!(
        name = %config.name,
        data_dir = %config.data_dir.display(),
        etcd_version = rusd_server::VERSION_SERVER,
        rusd_version = rusd_server::VERSION_RUSD,
        "starting rusd"
    );
    let runtime = runtime(flags.worker_threads)?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        tokio::select! {
            () = wait_for_signal() => tracing::info!("received a stop signal; shutting down"),
            () = server.removed() => tracing::error!(
                "the member has been permanently removed from the cluster; shutting down"
            ),
        }
        server.stop().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// The server's async runtime: `worker_threads` workers (0: tokio's default, one per core).
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("rusd");
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.build()
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, serve until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_sets_the_runtime_size() {
        let workers = |n| runtime(n).unwrap().metrics().num_workers();
        assert_eq!(workers(1), 1);
        assert_eq!(workers(3), 3);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(workers(0), cores);
    }

    #[test]
    fn durations_and_retention() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert!(parse_duration("5x").is_err());
        assert_eq!(
            auto_compaction("periodic", "1").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(3600))
        );
        assert_eq!(
            auto_compaction("periodic", "5m").unwrap(),
            AutoCompaction::Periodic(Duration::from_secs(300))
        );
        assert_eq!(
            auto_compaction("revision", "100").unwrap(),
            AutoCompaction::Revision(100)
        );
        assert_eq!(
            auto_compaction("periodic", "0").unwrap(),
            AutoCompaction::Off
        );
        assert!(auto_compaction("weird", "1").is_err());
    }

    #[test]
    fn urls_parse_by_scheme() {
        let l = listen_addrs(
            "http://127.0.0.1:2379,http://localhost:22379,https://localhost:22379",
            "x",
        )
        .unwrap();
        assert_eq!(l.plain[0], "127.0.0.1:2379".parse().unwrap());
        assert!(l.plain[1].is_ipv4());
        assert_eq!(l.tls, vec![l.plain[1]]);
        assert_eq!(l.hosts, ["127.0.0.1", "localhost"]);
        let l = listen_addrs("https://[::1]:2380", "x").unwrap();
        assert_eq!(l.hosts, ["::1"]);
        assert!(l.plain.is_empty());
        assert!(listen_addrs("", "x").is_err());
        assert!(listen_addrs("unixs://x", "x").is_err());
        let l = listen_addrs(
            "unix://etcd.unix:1,unix:///run/r.sock/,http://127.0.0.1:1",
            "x",
        )
        .unwrap();
        assert_eq!(
            l.unix,
            [PathBuf::from("etcd.unix:1"), PathBuf::from("/run/r.sock")]
        );
        assert_eq!(l.plain.len(), 1);
        assert!(listen_addrs("unix://", "x").is_err());
        assert!(listen_addrs("unix:///", "x").is_err());
    }

    #[test]
    fn strict_reconfig_check_is_on_unless_turned_off() {
        use clap::Parser;
        let strict = |args: &[&str]| {
            let cli =
                crate::cli::Cli::parse_from(std::iter::once("rusd").chain(args.iter().copied()));
            config(&cli.serve).unwrap().strict_reconfig_check
        };
        assert!(strict(&[]));
        assert!(strict(&["--strict-reconfig-check"]));
        assert!(strict(&["--strict-reconfig-check=true"]));
        assert!(!strict(&["--strict-reconfig-check=false"]));
    }

    #[test]
    fn tls_flags_reach_the_config() {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from([
            "rusd",
            "--listen-client-urls",
            "https://localhost:0",
            "--cert-file",
            "/c.crt",
            "--key-file",
            "/c.key",
            "--client-cert-auth",
            "--client-cert-auth",
            "--peer-auto-tls",
            "--cipher-suites",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ]);
        let c = config(&cli.serve).unwrap();
        assert!(c.listen_client.is_empty());
        assert_eq!(c.listen_client_tls.len(), 1);
        assert_eq!(c.client_tls.cert_file, Some(PathBuf::from("/c.crt")));
        assert!(c.client_tls.client_cert_auth);
        assert_eq!(c.client_tls.auto_tls_hosts, ["localhost"]);
        assert!(c.peer_tls.auto_tls);
        assert_eq!(c.cipher_suites.len(), 2);
    }
}
