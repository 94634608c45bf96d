//! Plain-text answers as Go's `net/http` writes them: unknown paths, wrong methods, CORS
//! preflight; and the gRPC answer for an unknown gRPC service.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};

use super::PREFIXES;

/// Go's `http.Error`: the text and a newline, `text/plain; charset=utf-8`, `nosniff`.
pub fn text(status: StatusCode, body: &str) -> Response {
    let mut response = (status, format!("{body}\n")).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Lets only `POST` through, answering anything else with grpc-gateway's 405 (no `Allow`).
pub async fn post_only(request: Request, next: Next) -> Response {
    if request.method() == Method::POST {
        next.run(request).await
    } else {
        text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    }
}

/// A 405 for a GET-only endpoint (`/health`, `/version`), with `Allow: GET`.
pub fn get_only() -> Response {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}

/// Whether `request` is a gRPC call (`content-type: application/grpc...`).
fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whatever no route serves: gRPC's Unimplemented for a gRPC request (an unknown service),
/// grpc-gateway's 404 under the API prefixes, Go's `http.NotFound` elsewhere.
pub async fn not_found(request: Request) -> Response {
    if is_grpc(&request) {
        return tonic::Status::unimplemented("")
            .into_http::<axum::body::Body>()
            .into_response();
    }
    let path = request.uri().path();
    let under_api = PREFIXES.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
    });
    if under_api {
        text(StatusCode::NOT_FOUND, "Not Found")
    } else {
        text(StatusCode::NOT_FOUND, "404 page not found")
    }
}

/// etcd's CORS handler with its default `--cors=*`: every HTTP answer allows any origin, and an
/// `OPTIONS` request is answered `200` with no body. gRPC calls pass untouched.
pub async fn cors(request: Request, next: Next) -> Response {
    if is_grpc(&request) {
        return next.run(request).await;
    }
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    response
}
