//! The HTTP API on the client port, next to gRPC: etcd's grpc-gateway paths (`/v3/...`, and
//! `/v3beta/...` as etcd 3.4 also serves), `/health`, `/version` and `/metrics`.
//!
//! Every gateway call decodes gateway JSON into the protobuf request (bytes in base64, 64-bit
//! integers as strings or numbers, field names as in the `.proto` or in camelCase, unknown
//! fields ignored), calls the same `do_<rpc>` method the gRPC service uses, and answers with the
//! response as gateway JSON (zero values omitted). Errors keep etcd's gRPC code and text and get
//! grpc-gateway's HTTP status ([`error`]).
//!
//! | file | role |
//! |---|---|
//! | [`error`] | error bodies and HTTP statuses |
//! | [`json`] | unary request and response bodies, the size limit |
//! | [`stream`] | streamed requests and responses |
//! | [`plain`] | 404, 405, CORS |
//! | `kv`, `watch`, `lease`, `cluster`, `maintenance`, `auth` | the services' paths, as the
//! `google.api.http` options in `rpc.proto` list them |
//! | `lock`, `election` | the Lock and Election services' paths |
//! | `health`, `version`, `metrics` | `/health`, `/version`, `/metrics` |

use std::future::Future;
use std::sync::Arc;

use axum::extract::Request;
use axum::handler::Handler;
use axum::routing::{any, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::Ctx;
use crate::error::ServerError;

/// Serves a service's unary `do_<rpc>` method at a path: `unary!(api, service, "/kv/range" =>
/// do_range)`.
macro_rules! unary {
    ($api:expr, $service:expr, $path:literal => $method:ident) => {{
        let service = $service.clone();
        $api.unary($path, move |request, _cred| {
            let service = service.clone();
            async move { service.$method(request).await }
        })
    }};
    // Methods that take the caller's credentials.
    ($api:expr, $service:expr, $path:literal => $method:ident with credentials) => {{
        let service = $service.clone();
        $api.unary($path, move |request, cred: crate::auth::Credentials| {
            let service = service.clone();
            async move { service.$method(request, &cred).await }
        })
    }};
}

mod auth;
mod cluster;
mod election;
pub mod error;
mod health;
pub mod json;
mod kv;
mod lease;
mod lock;
mod maintenance;
mod metrics;
pub mod plain;
pub mod stream;
mod version;
mod watch;

pub use error::GatewayError;

/// The path prefixes the API is served under (etcd 3.4 serves both; 3.5 dropped `/v3beta`).
pub const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// Routes of the HTTP API.
pub fn routes(ctx: Arc<Ctx>) -> Router {
    let api = Api::new(&ctx);
    let api = kv::routes(api, &ctx);
    let api = watch::routes(api, &ctx);
    let api = lease::routes(api, &ctx);
    let api = cluster::routes(api, &ctx);
    let api = maintenance::routes(api, &ctx);
    let api = auth::routes(api, &ctx);
    let api = lock::routes(api, &ctx);
    let api = election::routes(api, &ctx);
    let streams = ctx.config.stream_limit();
    let health_ctx = ctx.clone();
    let metrics_ctx = ctx;
    limit_calls(api.router, streams)
        .route(
            "/health",
            any(move |request: Request| health::handle(health_ctx.clone(), request)),
        )
        .route("/version", any(version::handle))
        .route(
            "/metrics",
            any(move || metrics::handle(metrics_ctx.clone())),
        )
        // Not a fallback: the gRPC router it is merged with has its own.
        .route("/", any(plain::not_found))
        .route("/{*path}", any(plain::not_found))
        .layer(axum::middleware::from_fn(plain::cors))
}

/// Holds the API's calls to `limit` in flight (`--max-concurrent-streams`).
///
/// etcd's gateway reaches its server through one gRPC connection to the listener, so the
/// server's stream limit bounds the gateway calls in flight, and grpc-go's client makes a call
/// over the limit wait for a stream to end. Here a call waits for a slot the same way, and
/// keeps it until its response body ends (a watch holds its slot for the life of its stream).
fn limit_calls(router: Router, limit: Option<u32>) -> Router {
    let Some(limit) = limit else {
        return router;
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(limit as usize));
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let slots = slots.clone();
            async move {
                // The semaphore is never closed, so this cannot fail; if it did, the call
                // would go ahead unlimited rather than fail.
                let slot = slots.acquire_owned().await.ok();
                let response = next.run(request).await;
                response.map(|body| {
                    use http_body_util::BodyExt;
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _held_until_the_body_ends = &slot;
                        frame
                    }))
                })
            }
        },
    ))
}

/// Routes of a `--listen-metrics-urls` listener: `/metrics` and `/health` only.
pub fn metrics_routes(ctx: Arc<Ctx>) -> Router {
    let health_ctx = ctx.clone();
    Router::new()
        .route(
            "/health",
            any(move |request: Request| health::handle(health_ctx.clone(), request)),
        )
        .route("/metrics", any(move || metrics::handle(ctx.clone())))
        .route("/", any(plain::not_found))
        .route("/{*path}", any(plain::not_found))
}

/// Builds the API's routes: each path under every prefix in [`PREFIXES`].
pub(crate) struct Api {
    router: Router,
    /// The gRPC receive limit requests are held to.
    limit: usize,
}

impl Api {
    fn new(ctx: &Ctx) -> Self {
        Self {
            router: Router::new(),
            limit: json::grpc_limit(ctx.config.max_request_bytes),
        }
    }

    /// The gRPC receive limit requests are held to.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Serves `handler` for `POST` at `path` (after the prefix); other HTTP methods get
    /// grpc-gateway's 405.
    pub(crate) fn route<H, T>(mut self, path: &str, handler: H) -> Self
    where
        H: Handler<T, ()>,
        T: 'static,
    {
        let method: MethodRouter = any(handler).layer(axum::middleware::from_fn(plain::post_only));
        for prefix in PREFIXES {
            self.router = self
                .router
                .route(&format!("{prefix}{path}"), method.clone());
        }
        self
    }

    /// Serves a unary RPC at `path`: `POST` a JSON request, get the JSON response.
    pub(crate) fn unary<Req, Resp, F, Fut>(self, path: &str, call: F) -> Self
    where
        Req: DeserializeOwned + Default + prost::Message + Send + 'static,
        Resp: Serialize + Send + 'static,
        F: Fn(Req, crate::auth::Credentials) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, ServerError>> + Send + 'static,
    {
        let limit = self.limit;
        let handler = move |request: Request| {
            let call = call.clone();
            async move {
                use axum::response::IntoResponse;
                let cred = crate::auth::Credentials::from_http(request.headers());
                let req = match json::request::<Req>(request.into_body(), limit).await {
                    Ok(req) => req,
                    Err(e) => return e.into_response(),
                };
                match call(req, cred).await {
                    Ok(resp) => json::response(&resp),
                    Err(e) => GatewayError::from(e).into_response(),
                }
            }
        };
        self.route(path, handler)
    }
}
