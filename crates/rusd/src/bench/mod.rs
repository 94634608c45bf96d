//! `rusd bench`: a load generator for any etcd v3 endpoint (rusd or etcd), modelled on etcd's
//! `tools/benchmark`.
//!
//! Global flags pick the endpoints, gRPC connections, concurrent clients, request count, rate
//! and duration; each workload is a subcommand with etcd's flag names. Clients are the generated
//! tonic stubs of `rusd-proto` over plain tonic channels, so the load generator stays cheap next
//! to the server it measures. The result is a text summary on stdout, or with `--json` one JSON
//! object (see [`report`]).

mod client;
mod driver;
mod keys;
mod kube;
mod lease;
mod pace;
mod progress;
mod put;
mod range;
mod report;
mod stamp;
mod txn_mixed;
mod txn_put;
mod watch;
mod watch_get;
mod watcher;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};

use self::driver::Plan;

/// `rusd bench [global flags] <workload> [workload flags]`
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Comma-separated endpoints, `host:port` or `http://host:port`.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// gRPC connections (one HTTP/2 connection each, spread over the endpoints).
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, spread round-robin over the connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send [default: 10000, or unbounded when --duration is given].
    #[arg(long, global = true)]
    pub total: Option<u64>,
    /// Requests per second for all clients together (0: unlimited).
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,
    /// Stop after this long (e.g. `10s`, `1m`) even if --total is not reached.
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// `name:password`: authenticate once and send the token with every request (as
    /// etcdctl's and etcd's benchmark tool's `--user`).
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Print one JSON object with the results on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Threads of the load generator (0: a quarter of the cores, at least 1, leaving the rest
    /// to a server on the same machine).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// The workload.
    #[command(subcommand)]
    pub workload: Workload,
}

/// The workloads.
#[derive(Subcommand, Debug)]
pub enum Workload {
    /// Puts of `--val-size` values to keys drawn from `--key-space-size` keys.
    Put(put::PutArgs),
    /// Ranges over `<key> [range_end]`.
    Range(range::RangeArgs),
    /// Txns of `--txn-ops` puts each.
    TxnPut(txn_put::TxnPutArgs),
    /// Txns that are either a range over `<key> [range_end]` or a put, `--rw-ratio` reads per write.
    TxnMixed(txn_mixed::TxnMixedArgs),
    /// Watchers on a key space while puts go to it: event latency (put sent to event received on
    /// each watcher) and watch creation latency.
    Watch(watch::WatchArgs),
    /// Gets while watchers catch up on history (etcd's watch-get).
    WatchGet(watch_get::WatchGetArgs),
    /// Lease keepalive round trips over LeaseKeepAlive streams, one lease per client.
    LeaseKeepalive(lease::LeaseArgs),
    /// A Kubernetes-apiserver-like mix: CAS creates/updates/deletes, paginated lists, a prefix
    /// watch with prev_kv, periodic compaction through `compact_rev_key`.
    Kube(kube::KubeArgs),
}

impl Workload {
    fn name(&self) -> &'static str {
        match self {
            Workload::Put(_) => "put",
            Workload::Range(_) => "range",
            Workload::TxnPut(_) => "txn-put",
            Workload::TxnMixed(_) => "txn-mixed",
            Workload::Watch(_) => "watch",
            Workload::WatchGet(_) => "watch-get",
            Workload::LeaseKeepalive(_) => "lease-keepalive",
            Workload::Kube(_) => "kube",
        }
    }
}

/// Read consistency, as etcd's benchmark spells it.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable.
    #[value(name = "l")]
    Linearizable,
    /// Serializable.
    #[value(name = "s")]
    Serializable,
}

impl Consistency {
    fn serializable(self) -> bool {
        self == Consistency::Serializable
    }
}

/// The global settings every workload runs under.
pub struct Global {
    /// Endpoint URLs (`http://host:port`).
    pub endpoints: Vec<String>,
    /// gRPC connections.
    pub conns: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests to send (`u64::MAX`: bounded by `duration` only).
    pub total: u64,
    /// Requests per second (0: unlimited).
    pub rate: u64,
    /// Time bound.
    pub duration: Option<Duration>,
    /// Whether to draw a progress bar (stderr is a terminal).
    pub progress: bool,
    /// `--user`: name and password.
    pub user: Option<(String, String)>,
}

impl Global {
    /// A fresh plan for the measured phase: `total` requests at `rate`, within `duration`.
    pub fn plan(&self) -> Arc<Plan> {
        Plan::new(self.total, self.duration, self.rate)
    }
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    crate::serve::parse_duration(s)
}

/// Runs `rusd bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.conns == 0 || args.clients == 0 {
        bail!("--conns and --clients must be at least 1");
    }
    let global = Global {
        endpoints: args
            .endpoints
            .iter()
            .map(|e| client::endpoint_url(e))
            .collect::<anyhow::Result<_>>()?,
        conns: args.conns,
        clients: args.clients,
        total: match (args.total, args.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => 10_000,
        },
        rate: args.rate,
        duration: args.duration,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        user: match &args.user {
            None => None,
            Some(u) => match u.split_once(':') {
                Some((name, password)) => Some((name.to_owned(), password.to_owned())),
                None => bail!("--user {u}: expected name:password"),
            },
        },
    };
    if global.endpoints.is_empty() {
        bail!("no --endpoints");
    }
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 4).max(1)),
        n => n,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .context("tokio runtime")?;
    let name = args.workload.name();
    let mut report = runtime.block_on(async {
        driver::stop_on_ctrl_c();
        match args.workload {
            Workload::Put(a) => put::run(&global, a).await,
            Workload::Range(a) => range::run(&global, a).await,
            Workload::TxnPut(a) => txn_put::run(&global, a).await,
            Workload::TxnMixed(a) => txn_mixed::run(&global, a).await,
            Workload::Watch(a) => watch::run(&global, a).await,
            Workload::WatchGet(a) => watch_get::run(&global, a).await,
            Workload::LeaseKeepalive(a) => lease::run(&global, a).await,
            Workload::Kube(a) => kube::run(&global, a).await,
        }
    })?;
    report.set_config(name, &global);
    report.print(args.json)?;
    // Background tasks (reconnecting channels, streams) must not delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if report.all_failed() {
        bail!("every request failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::parse_from([
            "bench",
            "--endpoints",
            "a:1,http://b:2",
            "put",
            "--key-size",
            "16",
            "--total",
            "5",
            "--json",
        ]);
        assert_eq!(cli.bench.endpoints, ["a:1", "http://b:2"]);
        assert_eq!(cli.bench.total, Some(5));
        assert!(cli.bench.json);
        let Workload::Put(p) = cli.bench.workload else {
            panic!("not put")
        };
        assert_eq!(p.key_size, 16);
    }

    #[test]
    fn range_takes_key_and_end() {
        let cli = Cli::parse_from(["bench", "range", "a", "b", "--consistency", "s"]);
        let Workload::Range(r) = cli.bench.workload else {
            panic!("not range")
        };
        assert_eq!((r.key.as_str(), r.range_end.as_deref()), ("a", Some("b")));
        assert_eq!(r.consistency, Consistency::Serializable);
    }
}
