//! The gRPC services.

pub mod kv;
pub mod status;
