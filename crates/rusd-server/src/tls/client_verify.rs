//! Client certificate verification as etcd (Go's crypto/tls) does it: webpki's checks, plus the
//! one case Go accepts and webpki refuses, a self-signed CA certificate presented as the client
//! certificate while it is itself one of the trusted CAs (etcd's e2e suite uses such a
//! certificate, `CommonName-root.crt`, as server, client and CA at once).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// webpki's verifier, accepting also a trusted CA certificate used as the client's own.
#[derive(Debug)]
pub struct GoClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The trusted CA certificates, as given.
    anchors: Vec<CertificateDer<'static>>,
}

impl GoClientVerifier {
    /// Wraps `inner`, which trusts `anchors`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, anchors: Vec<CertificateDer<'static>>) -> Self {
        Self { inner, anchors }
    }

    /// A CA certificate webpki refused only for being a CA, presented exactly as trusted and
    /// within its validity period.
    fn is_trusted_ca_itself(&self, end_entity: &CertificateDer<'_>, e: &Error) -> bool {
        let Error::InvalidCertificate(CertificateError::Other(other)) = e else {
            return false;
        };
        let ca_as_leaf = matches!(
            other.0.downcast_ref::<webpki::Error>(),
            Some(webpki::Error::CaUsedAsEndEntity)
        );
        ca_as_leaf
            && self
                .anchors
                .iter()
                .any(|a| a.as_ref() == end_entity.as_ref())
            && x509_parser::parse_x509_certificate(end_entity)
                .is_ok_and(|(_, cert)| cert.validity().is_valid())
    }
}

impl ClientCertVerifier for GoClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(e) if self.is_trusted_ca_itself(end_entity, &e) => {
                Ok(ClientCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
