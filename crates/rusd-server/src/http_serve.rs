//! Serving a router on a listener: HTTP/1.1 and HTTP/2 (gRPC) with hyper, the HTTP/2 stream
//! limit of `--max-concurrent-streams`, each connection's client certificate name, and a
//! graceful stop.
//!
//! `axum::serve` does the same but cannot set HTTP/2 settings, so etcd's stream limit could not
//! be passed on to clients; this is its accept loop with the builder exposed.

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::auth::ClientCertName;
use crate::tls::listener::Listener;

/// Serves `router` on `listener` (HTTP/2 streams per connection held to
/// `max_concurrent_streams`) until `stop` turns true, then lets open connections finish
/// their requests (HTTP/2 clients get a GOAWAY) and returns when they have.
///
/// Every request carries [`ConnectInfo<ClientCertName>`] for `--client-cert-auth`.
pub async fn serve(
    mut listener: Listener,
    router: axum::Router,
    max_concurrent_streams: Option<u32>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(max_concurrent_streams);
    let graceful = GracefulShutdown::new();
    loop {
        let io = tokio::select! {
            conn = listener.accept() => conn,
            _ = stop.wait_for(|s| *s) => break,
        };
        let cert = ClientCertName::of(&io);
        let service =
            router
                .clone()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(cert.clone()));
                    request
                });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A connection error (a client that went away, a protocol error) ends only that
            // connection; hyper has already answered what it could.
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    // Closes the listening socket before waiting for the open connections.
    drop(listener);
    graceful.shutdown().await;
}
