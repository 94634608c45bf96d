//! What a request carries to say who sent it: a token (gRPC metadata `token`, or
//! `authorization` as the HTTP gateway sends it) and, on a TLS connection with a client
//! certificate, the certificate's common name.

use axum::extract::ConnectInfo;

use crate::tls::listener::Conn;

/// A request's credentials, resolved by [`crate::context::Ctx::auth_info`].
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The token from Authenticate.
    pub token: Option<String>,
    /// The client certificate's subject common name.
    pub cert_common_name: Option<String>,
}

impl Credentials {
    /// None: the server's own requests, or a request without any.
    pub fn none() -> Self {
        Self::default()
    }

    /// From a gRPC request's metadata and connection.
    pub fn from_grpc<T>(request: &tonic::Request<T>) -> Self {
        let md = request.metadata();
        let token = md
            .get("token")
            .or_else(|| md.get("authorization"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let cert_common_name = request
            .extensions()
            .get::<ConnectInfo<ClientCertName>>()
            .and_then(|c| c.0 .0.clone());
        Self {
            token,
            cert_common_name,
        }
    }

    /// From an HTTP gateway request's headers. etcd's gateway never takes the user from a
    /// client certificate.
    pub fn from_http(headers: &http::HeaderMap) -> Self {
        let token = headers
            .get("authorization")
            .or_else(|| headers.get("token"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self {
            token,
            cert_common_name: None,
        }
    }
}

/// The common name of the certificate a client connection presented, found once per
/// connection (axum connect info).
#[derive(Clone, Debug, Default)]
pub struct ClientCertName(pub Option<String>);

impl ClientCertName {
    /// The name of the certificate `conn`'s client presented, if any.
    #[must_use]
    pub fn of(conn: &Conn) -> Self {
        let name = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::tls::client_verify::common_name(leaf.as_ref()));
        Self(name)
    }
}
