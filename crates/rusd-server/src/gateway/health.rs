//! `/health`, with etcd 3.4's semantics: healthy when no alarm is raised (except those named by
//! `?exclude=ALARM`, repeatable), a leader is known, and, unless `?serializable=true`, a
//! linearizable read completes within a second.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};
use rusd_proto::etcdserverpb::AlarmType;

use super::plain;
use crate::context::Ctx;

/// How long the linearizable read may take (etcd: one second).
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /health` -> `200 {"health":"true"}` or `503 {"health":"false"}`.
pub(super) async fn handle(ctx: Arc<Ctx>, request: Request) -> Response {
    if request.method() != Method::GET {
        return plain::get_only();
    }
    let params = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let excluded: HashSet<&str> = params
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    // Go's `Query().Get`: the first value.
    let serializable = params
        .iter()
        .find(|(k, _)| k == "serializable")
        .is_some_and(|(_, v)| v == "true");
    if healthy(&ctx, &excluded, serializable).await {
        let mut response = r#"{"health":"true"}"#.into_response();
        // What Go's content sniffing picks for etcd's untyped answer.
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    } else {
        plain::text(StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
    }
}

async fn healthy(ctx: &Ctx, excluded: &HashSet<&str>, serializable: bool) -> bool {
    let blocking_alarm = ctx.alarms.list(0, 0).iter().any(|a| {
        let name = AlarmType::try_from(a.alarm).map_or("", |t| t.as_str_name());
        !excluded.contains(name)
    });
    if blocking_alarm {
        tracing::warn!("/health error: an alarm is raised");
        return false;
    }
    if ctx.leader().is_none() {
        tracing::warn!("/health error: no leader");
        return false;
    }
    if !serializable {
        match tokio::time::timeout(READ_TIMEOUT, ctx.read_index()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "/health error: linearizable read failed");
                return false;
            }
            Err(_) => {
                tracing::warn!("/health error: linearizable read timed out");
                return false;
            }
        }
    }
    true
}
