//! rusd's server: etcd's v3 API (gRPC and the HTTP/JSON gateway) over the `rusd-mvcc` engine,
//! with every mutation ordered through an openraft log.
//!
//! | module | role |
//! |---|---|
//! | [`server`] | start and stop a member |
//! | [`config`] | settings with etcd's names and defaults |
//! | [`context`] | shared state; propose through the log; read index |
//! | [`raft`] | openraft types, proposal batching, log store and its group-commit writer, state machine, peer network |
//! | [`apply`] | applying committed entries to the engine |
//! | [`grpc`] | the gRPC services and the one error-to-status mapping |
//! | [`router`] | gRPC and HTTP on one listener |
//! | [`http_serve`] | serving a listener (hyper, the HTTP/2 stream limit, graceful stop) |
//! | [`gateway`] | the HTTP/JSON API, `/health`, `/version`, `/metrics` |
//! | [`watch`] | the watch hub and streams |
//! | [`lease`] | lease deadlines and expiry |
//! | [`auth`] | users, roles, permission checks, simple and JWT tokens |
//! | [`alarm`], [`quota`] | alarms and the space quota |
//! | [`convert`] | protobuf <-> engine types |
//! | [`etcd_compat`] | etcd's bolt layout for the server's buckets; importing an etcd data dir |
//! | [`membership`], [`ids`] | members (openraft's node type); etcd-compatible member, cluster and lease ids |
//! | [`reconfig`] | membership changes and leader transfer, on the leader |
//! | [`metrics`] | Prometheus metrics |
//! | [`tls`] | TLS for the client and peer listeners and for dialling peers (rustls) |

pub mod alarm;
pub mod apply;
pub mod auth;
pub mod config;
pub mod context;
pub mod convert;
pub mod error;
pub mod etcd_compat;
pub mod gateway;
pub mod grpc;
pub mod http_serve;
pub mod ids;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod quota;
pub mod raft;
pub mod reconfig;
pub mod router;
pub mod server;
pub mod tls;
pub mod watch;

pub use config::ServerConfig;
pub use error::ServerError;
pub use server::{Server, StartError};

/// The etcd server version rusd reports (Kubernetes parses it; progress requests need >= 3.4.25
/// and not 3.5.0-3.5.7).
pub const VERSION_SERVER: &str = "3.5.17";
/// The etcd cluster version rusd reports.
pub const VERSION_CLUSTER: &str = "3.5.0";
/// rusd's own version.
pub const VERSION_RUSD: &str = env!("CARGO_PKG_VERSION");
