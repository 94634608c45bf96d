//! The HTTP/JSON API on the client port: etcd's grpc-gateway paths, `/health`, `/version`,
//! `/metrics`. (Being written.)

use std::sync::Arc;

use crate::context::Ctx;

/// Routes of the HTTP API.
pub fn routes(_ctx: Arc<Ctx>) -> axum::Router {
    axum::Router::new()
}
