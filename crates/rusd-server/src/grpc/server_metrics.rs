//! go-grpc-prometheus' server metrics, which etcd exports and its dashboards read:
//! `grpc_server_started_total` and `grpc_server_handled_total`, labelled with `grpc_type`,
//! `grpc_service`, `grpc_method` (and `grpc_code` when handled).
//!
//! A call is handled when its status is known: in the response headers for a trailers-only
//! answer (tonic's errors), else in the trailers at the end of the body. A stream the client
//! abandons (etcdctl's watch exits, a context is cancelled) drops the body before its trailers
//! and counts as `Canceled`, as grpc-go reports it. As in etcd, where these interceptors run
//! after etcd's own, calls refused before the services (no leader, learner, message size) and
//! unknown methods are not counted. The per-message counters (`grpc_server_msg_*_total`) are
//! not kept.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use prometheus::IntCounterVec;

/// The kind of each streaming method; every other method is unary.
fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => {
            "server_stream"
        }
        _ => "unary",
    }
}

/// The services rusd serves over gRPC (the peer service is not counted, as etcd's peer
/// traffic is not gRPC).
const SERVICES: [&str; 8] = [
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Cluster",
    "etcdserverpb.Maintenance",
    "etcdserverpb.Auth",
    "v3lockpb.Lock",
    "v3electionpb.Election",
];

/// grpc-go's name of a status code.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The status code in a header map (`grpc-status`), if there is one.
fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Counts one call as handled once, with the code it ended with (`Canceled` if it never said).
struct Handled {
    counter: IntCounterVec,
    labels: [String; 3],
    done: bool,
}

impl Handled {
    fn record(&mut self, code: tonic::Code) {
        if !self.done {
            self.done = true;
            let [kind, service, method] = &self.labels;
            self.counter
                .with_label_values(&[kind.as_str(), service, method, code_name(code)])
                .inc();
        }
    }
}

impl Drop for Handled {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

/// The counters the layer updates.
#[derive(Clone)]
pub struct GrpcCounters {
    /// `grpc_server_started_total{grpc_type, grpc_service, grpc_method}`.
    pub started: IntCounterVec,
    /// `grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}`.
    pub handled: IntCounterVec,
}

/// Middleware for the gRPC routes: see the module documentation.
pub async fn count(counters: Arc<GrpcCounters>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let Some((service, method)) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, _)| SERVICES.contains(service))
    else {
        return next.run(request).await;
    };
    let kind = grpc_type(service, method);
    let labels = [kind.to_owned(), service.to_owned(), method.to_owned()];
    counters
        .started
        .with_label_values(&[kind, service, method])
        .inc();
    let mut handled = Handled {
        counter: counters.handled.clone(),
        labels,
        done: false,
    };
    let response = next.run(request).await;
    if let Some(code) = status_in(response.headers()) {
        handled.record(code);
        return response;
    }
    response.map(|body| {
        axum::body::Body::new(body.map_frame(move |frame| {
            if let Some(code) = frame.trailers_ref().and_then(status_in) {
                handled.record(code);
            }
            frame
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_codes_as_grpc_go_names_them() {
        assert_eq!(grpc_type("etcdserverpb.Watch", "Watch"), "bidi_stream");
        assert_eq!(
            grpc_type("etcdserverpb.Lease", "LeaseKeepAlive"),
            "bidi_stream"
        );
        assert_eq!(
            grpc_type("etcdserverpb.Maintenance", "Snapshot"),
            "server_stream"
        );
        assert_eq!(grpc_type("etcdserverpb.KV", "Range"), "unary");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        let mut h = http::HeaderMap::new();
        assert_eq!(status_in(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("9"));
        assert_eq!(status_in(&h), Some(tonic::Code::FailedPrecondition));
    }

    #[test]
    fn a_call_is_handled_once_and_canceled_when_abandoned() {
        let counter = IntCounterVec::new(
            prometheus::Opts::new("h", "h"),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("valid");
        let labels = || ["unary".into(), "etcdserverpb.KV".into(), "Range".into()];
        let value = |code: &str| {
            counter
                .with_label_values(&["unary", "etcdserverpb.KV", "Range", code])
                .get()
        };
        let mut done = Handled {
            counter: counter.clone(),
            labels: labels(),
            done: false,
        };
        done.record(tonic::Code::Ok);
        done.record(tonic::Code::Internal);
        drop(done);
        drop(Handled {
            counter: counter.clone(),
            labels: labels(),
            done: false,
        });
        assert_eq!(
            (value("OK"), value("Internal"), value("Canceled")),
            (1, 0, 1)
        );
    }
}
