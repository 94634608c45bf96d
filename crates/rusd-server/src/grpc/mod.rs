//! The gRPC services.

pub mod auth;
pub mod cluster;
pub mod election;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod message_limit;
pub mod peer;
pub mod server_metrics;
pub mod status;
pub mod watch;
