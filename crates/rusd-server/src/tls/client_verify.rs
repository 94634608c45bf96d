//! Client certificate verification as etcd (Go's crypto/tls) does it: webpki's checks, plus the
//! one case Go accepts and webpki refuses, a self-signed CA certificate presented as the client
//! certificate while it is itself one of the trusted CAs (etcd's e2e suite uses such a
//! certificate, `CommonName-root.crt`, as server, client and CA at once).
//!
//! It also applies etcd's `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname` and
//! `--client-cert-allowed-hostname`: a verified certificate must carry the common name, or be
//! valid for the host name (its DNS or IP subject alternative names, as Go's `VerifyHostname`).
//! A refused certificate gets the `bad_certificate` alert Go sends, and the refusal is logged
//! with etcd's text, "client certificate authentication failed".

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// What a client certificate must name besides being verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Exactly this subject common name.
    CommonName(String),
    /// Valid for this host name or IP address.
    Hostname(String),
}

impl Allowed {
    /// Whether the DER certificate satisfies this.
    fn admits(&self, der: &[u8]) -> bool {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        match self {
            Allowed::CommonName(cn) => subject_common_name(&cert).as_deref() == Some(cn.as_str()),
            Allowed::Hostname(host) => {
                let Ok(Some(san)) = cert.subject_alternative_name() else {
                    return false;
                };
                let ip: Option<std::net::IpAddr> = host.parse().ok();
                san.value.general_names.iter().any(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        ip.is_none() && dns_matches(dns, host)
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        ip.is_some_and(|ip| match ip {
                            std::net::IpAddr::V4(v4) => *bytes == v4.octets().as_slice(),
                            std::net::IpAddr::V6(v6) => *bytes == v6.octets().as_slice(),
                        })
                    }
                    _ => false,
                })
            }
        }
    }
}

/// The subject common name of a DER certificate (a `--client-cert-auth` user's name).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    subject_common_name(&cert)
}

fn subject_common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// A DNS name from a certificate against a host name: case-insensitive, with a wildcard
/// allowed as the whole leftmost label (Go's `matchHostnames`).
fn dns_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (
        pattern.trim_end_matches('.').to_ascii_lowercase(),
        host.trim_end_matches('.').to_ascii_lowercase(),
    );
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// webpki's verifier, accepting also a trusted CA certificate used as the client's own, and
/// checking the allowed common name or host name.
#[derive(Debug)]
pub struct GoClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The trusted CA certificates, as given.
    anchors: Vec<CertificateDer<'static>>,
    allowed: Option<Allowed>,
}

impl GoClientVerifier {
    /// Wraps `inner`, which trusts `anchors`; verified certificates must also satisfy
    /// `allowed`.
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        anchors: Vec<CertificateDer<'static>>,
        allowed: Option<Allowed>,
    ) -> Self {
        Self {
            inner,
            anchors,
            allowed,
        }
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
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(e) if self.is_trusted_ca_itself(end_entity, &e) => ClientCertVerified::assertion(),
            other => other?,
        };
        match &self.allowed {
            Some(allowed) if !allowed.admits(end_entity) => {
                tracing::warn!(
                    required = ?allowed,
                    "rejected a connection: client certificate authentication failed"
                );
                Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            }
            _ => Ok(verified),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_match_as_go_matches_them() {
        assert!(dns_matches("localhost", "LOCALHOST"));
        assert!(dns_matches("*.example.com", "a.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(!dns_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_matches("example.com", "example2.com"));
    }

    #[test]
    fn allowed_names_are_checked_in_the_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["peer.example.com".into(), "127.0.0.1".into()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "example.com");
        let cert = params.self_signed(&key).expect("cert");
        let der = cert.der().as_ref();
        assert!(Allowed::CommonName("example.com".into()).admits(der));
        assert!(!Allowed::CommonName("example2.com".into()).admits(der));
        assert!(Allowed::Hostname("peer.example.com".into()).admits(der));
        assert!(Allowed::Hostname("127.0.0.1".into()).admits(der));
        assert!(!Allowed::Hostname("127.0.0.2".into()).admits(der));
        assert!(!Allowed::Hostname("example.com".into()).admits(der));
    }
}
