//! `/version`: the server and cluster versions rusd reports.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::Method;
use serde::Serialize;

use super::error::set_json;
use super::plain;

/// The body of `/version`.
#[derive(Debug, Serialize)]
struct Versions {
    etcdserver: &'static str,
    etcdcluster: &'static str,
}

/// `GET /version` -> `{"etcdserver": ..., "etcdcluster": ...}`.
pub(super) async fn handle(request: Request) -> Response {
    if request.method() != Method::GET {
        return plain::get_only();
    }
    let body = serde_json::to_vec(&Versions {
        etcdserver: crate::VERSION_SERVER,
        etcdcluster: crate::VERSION_CLUSTER,
    })
    .unwrap_or_default();
    let mut response = body.into_response();
    set_json(&mut response);
    response
}
