//! TLS (rustls on ring) for the client and peer listeners and for dialling peers, with etcd's
//! flags and rules:
//!
//! - `https://` listen URLs serve TLS; an address listed both as `http://` and `https://`
//!   serves both, told apart by the first byte of each connection ([`listener`]).
//! - A listener requires and verifies client certificates when a trusted CA is given or client
//!   cert auth is on (etcd 3.4 requires them as soon as `--trusted-ca-file` is set).
//! - Auto TLS makes a self-signed certificate under the data dir (`fixtures/client`,
//!   `fixtures/peer`), re-used on later starts, and then ignores the trusted CA and client cert
//!   auth, as etcd does. A peer dialled with auto TLS is not verified ([`dial`]).
//! - `--cipher-suites` limits the TLS 1.2 suites (Go's names); TLS 1.3 suites stay on, as in Go.
//!
//! Certificates, keys and CRLs are read once at start (etcd re-reads them per handshake).

pub mod client_verify;
pub mod dial;
pub mod listener;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("{flag} {path}: {reason}")]
    File {
        /// The flag that named the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Flags that do not go together.
    #[error("{0}")]
    Config(String),
    /// rustls refused the certificate, key or settings.
    #[error("{what}: {source}")]
    Rustls {
        /// What was being set up.
        what: String,
        /// Why.
        source: rustls::Error,
    },
    /// The auto-TLS certificate could not be made or written.
    #[error("auto TLS certificate in {dir}: {reason}")]
    SelfCert {
        /// Where it goes.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The TLS flags of one side: clients (`--cert-file`, ...) or peers (`--peer-cert-file`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate (PEM, may hold a chain).
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA that client certificates (and, for peers, the dialled peers) must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates (implied by `trusted_ca_file`, as in etcd).
    pub client_cert_auth: bool,
    /// Make a self-signed certificate at start when no cert files are given.
    pub auto_tls: bool,
    /// Revoked client certificates (PEM or DER CRL).
    pub crl_file: Option<PathBuf>,
    /// Host names and IPs of the listen URLs, named in an auto-TLS certificate.
    pub auto_tls_hosts: Vec<String>,
    /// Accept only client certificates with this common name (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// Accept only client certificates valid for this host name or IP
    /// (`--peer-cert-allowed-hostname`, `--client-cert-allowed-hostname`).
    pub allowed_hostname: Option<String>,
}

/// Which side a [`TlsSettings`] belongs to: names its flags and its auto-TLS directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Client listeners.
    Client,
    /// Peer listeners and peer dialling.
    Peer,
}

impl Side {
    fn flag(self, name: &str) -> String {
        match self {
            Side::Client => format!("--{name}"),
            Side::Peer => format!("--peer-{name}"),
        }
    }

    fn fixtures(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Peer => "peer",
        }
    }
}

impl TlsSettings {
    /// Whether cert files or auto TLS are given.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.auto_tls
    }
}

/// A loaded certificate and key, with what verifies the other end.
struct Material {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The trusted CA; `None` with auto TLS (then nothing is verified) or when not given.
    roots: Option<Arc<RootCertStore>>,
    /// The trusted CA certificates themselves (see [`client_verify`]).
    anchors: Vec<CertificateDer<'static>>,
    /// What a verified client certificate must also name.
    allowed: Option<client_verify::Allowed>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    require_client_cert: bool,
    self_signed: bool,
}

/// TLS ready for a member: acceptors for its listeners and the configuration to dial peers.
#[derive(Clone, Default)]
pub struct MemberTls {
    /// For `https://` client listeners.
    pub client: Option<TlsAcceptor>,
    /// For `https://` peer listeners.
    pub peer: Option<TlsAcceptor>,
    /// For dialling `https://` peers, or why that is impossible.
    pub peer_dial: Option<Result<Arc<rustls::ClientConfig>, String>>,
}

impl MemberTls {
    /// Loads (or, with auto TLS, makes) the certificates `config` asks for.
    ///
    /// # Errors
    /// A file is missing or unusable, or the flags do not go together.
    pub fn prepare(config: &ServerConfig) -> Result<Self, TlsError> {
        let provider = provider(&config.cipher_suites)?;
        let mut out = MemberTls::default();

        let client = load(&config.client_tls, Side::Client, &config.data_dir)?;
        if !config.listen_client_tls.is_empty() && client.is_none() {
            return Err(TlsError::Config(
                "--listen-client-urls has an https:// URL: give --cert-file and --key-file, or \
                 --auto-tls"
                    .into(),
            ));
        }
        let plain_only = |plain: &[std::net::SocketAddr], tls: &[std::net::SocketAddr]| {
            plain.iter().any(|a| !tls.contains(a))
        };
        if client.is_some() && plain_only(&config.listen_client, &config.listen_client_tls) {
            tracing::warn!("client TLS settings do not apply to the http:// client URLs");
        }
        if let Some(m) = &client {
            out.client = Some(TlsAcceptor::from(server_config(
                m,
                &provider,
                Side::Client,
            )?));
        }

        let peer = load(&config.peer_tls, Side::Peer, &config.data_dir)?;
        if !config.listen_peer_tls.is_empty() && peer.is_none() {
            return Err(TlsError::Config(
                "--listen-peer-urls has an https:// URL: give --peer-cert-file and \
                 --peer-key-file, or --peer-auto-tls"
                    .into(),
            ));
        }
        if peer.is_some() && plain_only(&config.listen_peer, &config.listen_peer_tls) {
            tracing::warn!("peer TLS settings do not apply to the http:// peer URLs");
        }
        if let Some(m) = &peer {
            out.peer = Some(TlsAcceptor::from(server_config(m, &provider, Side::Peer)?));
            out.peer_dial = Some(client_config(m, &provider));
        }
        // A lone member never dials, so this is only worth a warning when there are others.
        let own = config.own_peer_urls();
        let dials_https = config
            .initial_cluster
            .iter()
            .any(|(_, url)| url.starts_with("https://") && !own.contains(url));
        match &out.peer_dial {
            Some(Err(e)) if dials_https => tracing::warn!("peers cannot be dialled: {e}"),
            None if dials_https => tracing::warn!(
                "--initial-cluster has https:// peers but no peer TLS is configured \
                 (--peer-cert-file and --peer-key-file, or --peer-auto-tls)"
            ),
            _ => {}
        }
        Ok(out)
    }
}

/// Reads one side's files, or makes its auto-TLS certificate; `None` when TLS is off.
fn load(s: &TlsSettings, side: Side, data_dir: &Path) -> Result<Option<Material>, TlsError> {
    let (certs, key, self_signed) = match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key)) => {
            if s.auto_tls {
                tracing::warn!(
                    "{} is ignored: certificate files are given",
                    side.flag("auto-tls")
                );
            }
            (
                read_certs(cert, &side.flag("cert-file"))?,
                read_key(key, &side.flag("key-file"))?,
                false,
            )
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(TlsError::Config(format!(
                "{} and {} must be given together",
                side.flag("cert-file"),
                side.flag("key-file")
            )))
        }
        (None, None) if s.auto_tls => {
            let dir = data_dir.join("fixtures").join(side.fixtures());
            let (certs, key) = self_signed(&dir, &s.auto_tls_hosts)?;
            (certs, key, true)
        }
        (None, None) => {
            for (flag, given) in [
                ("trusted-ca-file", s.trusted_ca_file.is_some()),
                ("client-cert-auth", s.client_cert_auth),
                ("crl-file", s.crl_file.is_some()),
            ] {
                if given {
                    let flag = match (side, flag) {
                        (Side::Client, "crl-file") => "--client-crl-file".to_string(),
                        _ => side.flag(flag),
                    };
                    tracing::warn!("{flag} has no effect without TLS certificates");
                }
            }
            return Ok(None);
        }
    };
    if self_signed && (s.trusted_ca_file.is_some() || s.client_cert_auth) {
        // etcd replaces all TLS settings by the self-signed certificate's.
        tracing::warn!(
            "auto TLS: the trusted CA and client cert auth are ignored (as in etcd); give \
             certificate files to verify the other end"
        );
    }
    let mut anchors = Vec::new();
    let roots = match &s.trusted_ca_file {
        Some(path) if !self_signed => {
            let flag = side.flag("trusted-ca-file");
            let mut store = RootCertStore::empty();
            for cert in read_certs(path, &flag)? {
                anchors.push(cert.clone());
                store.add(cert).map_err(|e| TlsError::File {
                    flag: flag.clone(),
                    path: path.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            Some(Arc::new(store))
        }
        _ => None,
    };
    let require_client_cert = !self_signed && (roots.is_some() || s.client_cert_auth);
    if require_client_cert && roots.is_none() {
        return Err(TlsError::Config(format!(
            "{} needs {}: rusd verifies client certificates only against it",
            side.flag("client-cert-auth"),
            side.flag("trusted-ca-file")
        )));
    }
    let crl_flag = match side {
        Side::Client => "--client-crl-file".to_string(),
        Side::Peer => "--peer-crl-file".to_string(),
    };
    let crls = match &s.crl_file {
        Some(path) if require_client_cert => vec![read_crl(path, &crl_flag)?],
        Some(_) => {
            tracing::warn!("{crl_flag} has no effect: client certificates are not required");
            Vec::new()
        }
        None => Vec::new(),
    };
    let allowed = match (&s.allowed_cn, &s.allowed_hostname) {
        (Some(cn), Some(host)) => {
            return Err(TlsError::Config(format!(
                "{} and {} are mutually exclusive (cn={cn:?}, hostname={host:?})",
                side.flag("cert-allowed-cn"),
                side.flag("cert-allowed-hostname")
            )))
        }
        (Some(cn), None) => Some(client_verify::Allowed::CommonName(cn.clone())),
        (None, Some(host)) => Some(client_verify::Allowed::Hostname(host.clone())),
        (None, None) => None,
    };
    Ok(Some(Material {
        certs,
        key,
        roots,
        anchors,
        allowed,
        crls,
        require_client_cert,
        self_signed,
    }))
}

fn file_error(flag: &str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads the file first so that a missing file says so (the PEM parser's I/O error is terse).
fn read_file(path: &Path, flag: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(flag, path, e))
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(path: &Path, flag: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, flag)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| file_error(flag, path, format!("no usable PEM private key: {e}")))
}

fn read_crl(path: &Path, flag: &str) -> Result<CertificateRevocationListDer<'static>, TlsError> {
    let bytes = read_file(path, flag)?;
    match CertificateRevocationListDer::from_pem_slice(&bytes) {
        Ok(crl) => Ok(crl),
        // Go's CRL parser takes DER as well; a DER CRL starts with a SEQUENCE tag.
        Err(_) if bytes.first() == Some(&0x30) => Ok(CertificateRevocationListDer::from(bytes)),
        Err(e) => Err(file_error(flag, path, format!("not a CRL: {e}"))),
    }
}

/// The self-signed certificate in `dir` (`cert.pem`, `key.pem`), made when missing or unusable.
fn self_signed(
    dir: &Path,
    hosts: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let pair = read_certs(&cert_path, "auto TLS certificate").and_then(|certs| {
            let key = read_key(&key_path, "auto TLS key")?;
            // ring cannot sign with every key etcd makes (P-521); check before using it.
            rustls::crypto::ring::sign::any_supported_type(&key)
                .map_err(|e| file_error("auto TLS key", &key_path, format!("unusable key: {e}")))?;
            Ok((certs, key))
        });
        match pair {
            Ok(pair) => return Ok(pair),
            Err(e) => tracing::warn!(error = %e, "making a new auto TLS certificate"),
        }
    }
    let fail = |reason: String| TlsError::SelfCert {
        dir: dir.to_path_buf(),
        reason,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| fail(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "rusd");
    for host in hosts {
        let san = match host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
        {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => match rcgen::string::Ia5String::try_from(host.as_str()) {
                Ok(name) if !host.is_empty() => rcgen::SanType::DnsName(name),
                _ => continue,
            },
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // Valid for a year, as etcd's; an hour back for clocks that lag.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - std::time::Duration::from_secs(3600);
    params.not_after = now + std::time::Duration::from_secs(365 * 24 * 3600);
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;

    std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&cert_path, cert.pem()).map_err(|e| fail(format!("cert.pem: {e}")))?;
    write_private(&key_path, key.serialize_pem().as_bytes())
        .map_err(|e| fail(format!("key.pem: {e}")))?;
    tracing::info!(path = %cert_path.display(), "created an auto TLS certificate");
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| fail(e.to_string()))?;
    Ok((vec![cert.der().clone()], key))
}

/// Writes a file only its owner can read (a private key).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn rustls_error(what: impl Into<String>) -> impl FnOnce(rustls::Error) -> TlsError {
    let what = what.into();
    move |source| TlsError::Rustls { what, source }
}

/// The listener side: our certificate, and the client certificate check.
fn server_config(
    m: &Material,
    provider: &Arc<CryptoProvider>,
    side: Side,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let verifier = match (&m.roots, m.require_client_cert) {
        (Some(roots), true) => {
            let webpki =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .with_crls(m.crls.iter().cloned())
                    // etcd checks the presented chain's serials against the one CRL it is given.
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status()
                    .build()
                    .map_err(|e| {
                        TlsError::Config(format!("{} / CRL: {e}", side.flag("trusted-ca-file")))
                    })?;
            Arc::new(client_verify::GoClientVerifier::new(
                webpki,
                m.anchors.clone(),
                m.allowed.clone(),
            ))
        }
        _ => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(rustls_error("TLS versions"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.certs.clone(), m.key.clone_key())
        .map_err(rustls_error(format!(
            "{} / {}",
            side.flag("cert-file"),
            side.flag("key-file")
        )))?;
    // gRPC needs h2; the HTTP API (curl, browsers) may come as HTTP/1.1 on the same port.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The dialling side for peers: present our certificate, verify the peer against the peer CA,
/// or not at all with auto TLS (as etcd).
fn client_config(
    m: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if m.self_signed {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(dial::AcceptAnyServerCert::new(provider)))
    } else {
        match &m.roots {
            Some(roots) => builder.with_root_certificates(roots.clone()),
            None => {
                return Err(
                    "dialling an https:// peer needs --peer-trusted-ca-file (or --peer-auto-tls)"
                        .into(),
                )
            }
        }
    };
    let mut config = builder
        .with_client_auth_cert(m.certs.clone(), m.key.clone_key())
        .map_err(|e| format!("--peer-cert-file / --peer-key-file: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Go's cipher suite names (crypto/tls) with their IANA numbers.
const GO_CIPHER_SUITES: &[(&str, u16)] = &[
    ("TLS_RSA_WITH_RC4_128_SHA", 0x0005),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", 0x002f),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003c),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009d),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xc007),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xc011),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xc012),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xc023),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xc027),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9),
    // Go's short names for the two above.
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", 0xcca8),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", 0xcca9),
    // TLS 1.3: Go accepts the names but never lets them be configured.
    ("TLS_AES_128_GCM_SHA256", 0x1301),
    ("TLS_AES_256_GCM_SHA384", 0x1302),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303),
];

/// ring's provider with the TLS 1.2 suites cut down to `names` (in their order), all TLS 1.3
/// suites kept. Names Go knows but rustls does not implement (CBC, RC4, 3DES, RSA key
/// exchange) are left out with a warning; unknown names are an error, as in etcd.
///
/// # Errors
/// A name is not one of Go's cipher suites.
pub fn provider(names: &[String]) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(Arc::new(provider));
    }
    let all = std::mem::take(&mut provider.cipher_suites);
    let (tls13, tls12): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|s| matches!(s, rustls::SupportedCipherSuite::Tls13(_)));
    let mut chosen = Vec::new();
    let mut not_honoured = Vec::new();
    for name in names {
        let id = GO_CIPHER_SUITES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            .ok_or_else(|| {
                TlsError::Config(format!(
                    "--cipher-suites: unexpected TLS cipher suite {name:?}"
                ))
            })?;
        if tls13.iter().any(|s| u16::from(s.suite()) == id) {
            continue;
        }
        match tls12.iter().find(|s| u16::from(s.suite()) == id) {
            Some(s) if !chosen.contains(s) => chosen.push(*s),
            Some(_) => {}
            None => not_honoured.push(name.as_str()),
        }
    }
    if !not_honoured.is_empty() {
        tracing::warn!(
            suites = ?not_honoured,
            "--cipher-suites: not implemented by rustls (only ECDHE with AES-GCM or \
             ChaCha20-Poly1305 is); left out"
        );
    }
    if chosen.is_empty() {
        tracing::warn!("--cipher-suites leaves no TLS 1.2 suite: only TLS 1.3 is offered");
    }
    chosen.extend(tls13);
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_keep_tls13_and_the_named_tls12_ones() {
        let p = provider(&[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".to_string(),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".to_string(),
        ])
        .expect("provider");
        let ids: Vec<u16> = p
            .cipher_suites
            .iter()
            .map(|s| u16::from(s.suite()))
            .collect();
        assert_eq!(&ids[..2], &[0xcca8, 0xc02f]);
        assert!(ids[2..].iter().all(|id| (0x1301..=0x1303).contains(id)));
        assert!(provider(&["TLS_NOT_A_SUITE".to_string()]).is_err());
        assert_eq!(
            provider(&[]).expect("default").cipher_suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }

    #[test]
    fn auto_tls_certificate_is_made_once_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (certs, _) = self_signed(dir.path(), &hosts).expect("make");
        let (again, _) = self_signed(dir.path(), &hosts).expect("reuse");
        assert_eq!(certs, again);
        let m = Material {
            certs,
            key: read_key(&dir.path().join("key.pem"), "key").expect("key"),
            roots: None,
            anchors: Vec::new(),
            allowed: None,
            crls: Vec::new(),
            require_client_cert: false,
            self_signed: true,
        };
        let p = provider(&[]).expect("provider");
        assert!(server_config(&m, &p, Side::Client).is_ok());
        assert!(client_config(&m, &p).is_ok());
    }

    #[test]
    fn missing_and_half_given_files_fail_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = TlsSettings {
            cert_file: Some(dir.path().join("nope.crt")),
            key_file: Some(dir.path().join("nope.key")),
            ..Default::default()
        };
        let err = load(&s, Side::Client, dir.path()).err().expect("error");
        assert!(err.to_string().starts_with("--cert-file "), "{err}");
        let s = TlsSettings {
            cert_file: Some(dir.path().join("nope.crt")),
            ..Default::default()
        };
        let err = load(&s, Side::Peer, dir.path()).err().expect("error");
        assert!(err.to_string().contains("--peer-key-file"), "{err}");
        assert!(load(&TlsSettings::default(), Side::Client, dir.path())
            .expect("off")
            .is_none());
    }
}
