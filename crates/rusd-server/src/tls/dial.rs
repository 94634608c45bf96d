//! Dialling peers over TLS: a connector for tonic's `Endpoint::connect_with_connector_lazy`
//! (tonic's own TLS cannot skip verification, which `--peer-auto-tls` needs).
//!
//! The channel is given an `http://` URI with the peer's host and port, and the connector
//! wraps the TCP connection in TLS itself; that keeps tonic's own https handling (and its
//! features) out of the way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;

/// Accepts any server certificate (auto TLS: the peer's certificate is self-signed), while
/// still checking that the server holds its key.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// The verifier with `provider`'s signature algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The `http://host:port` URI a channel to the `https://` peer URL `url` is built with.
///
/// # Errors
/// `url` is not an https URL with a host.
pub fn channel_uri(url: &str) -> Result<String, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("not an https:// URL".into());
    }
    let host = uri.host().ok_or("no host")?;
    let port = uri.port_u16().unwrap_or(443);
    Ok(format!("http://{host}:{port}"))
}

/// Dials a peer's Unix socket (`unix://` peer URLs): the channel's URI is a placeholder,
/// every connection goes to `path`.
#[derive(Clone)]
pub struct UnixDialer {
    path: Arc<std::path::Path>,
}

impl UnixDialer {
    /// A dialler for the socket at `path`.
    pub fn new(path: &std::path::Path) -> Self {
        Self { path: path.into() }
    }
}

impl tower::Service<Uri> for UnixDialer {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(&*path).await?)) })
    }
}

/// Connects TCP (TCP_NODELAY) and then TLS to the host and port of the URI it is called with.
#[derive(Clone)]
pub struct TlsDialer {
    config: Arc<rustls::ClientConfig>,
}

impl TlsDialer {
    /// A dialler with `config` (peer certificate, verification, ALPN h2).
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self { config }
    }
}

impl tower::Service<Uri> for TlsDialer {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        Box::pin(async move {
            let invalid =
                |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
            let host = uri
                .host()
                .ok_or_else(|| invalid("peer URL without a host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid("peer URL without a port"))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(&format!("peer host {host:?}: {e}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_uris() {
        assert_eq!(
            channel_uri("https://localhost:2380").as_deref(),
            Ok("http://localhost:2380")
        );
        assert_eq!(
            channel_uri("https://[::1]:2380/").as_deref(),
            Ok("http://[::1]:2380")
        );
        assert_eq!(
            channel_uri("https://10.0.0.1").as_deref(),
            Ok("http://10.0.0.1:443")
        );
        assert!(channel_uri("http://localhost:2380").is_err());
    }
}
