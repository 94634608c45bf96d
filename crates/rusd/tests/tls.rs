//! TLS with etcd's flags: client TLS from cert files (etcdctl, curl; gRPC and the HTTP API on
//! one port), client cert auth and a CRL, `--auto-tls`, `http://` and `https://` on one port,
//! `--cipher-suites`, startup errors, and 3-member clusters over TLS peer links (cert files
//! with peer client-cert auth, and `--peer-auto-tls`). The certificates are made here with
//! rcgen.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::Rusd;
use etcd_client::GetOptions;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};

const ETCDCTL: &str = "/usr/bin/etcdctl";
const CURL: &str = "/usr/bin/curl";

/// A CA and certificates it signed, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "rusd test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("write ca");
        Pki { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_file(&self) -> String {
        self.path("ca.crt").display().to_string()
    }

    /// Writes `<name>.crt` and `<name>.key`: a certificate for 127.0.0.1 and localhost, usable
    /// by servers and clients (as etcd's fixtures), with serial number `serial`.
    fn issue(&self, name: &str, serial: u64) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        let (crt, key_file) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&crt, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (crt.display().to_string(), key_file.display().to_string())
    }

    /// Writes `revoked.crl`, revoking `serial`.
    fn revoke(&self, serial: u64) -> String {
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .expect("crl");
        let path = self.path("revoked.crl");
        std::fs::write(&path, crl.pem().expect("crl pem")).expect("write crl");
        path.display().to_string()
    }
}

/// Runs etcdctl (v3) against `endpoint` with `args`, bounded in time.
fn etcdctl(endpoint: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("30")
        .arg(ETCDCTL)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--dial-timeout=3s", "--command-timeout=5s"])
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs curl with `args` (bounded in time).
fn curl(args: &[&str]) -> Output {
    Command::new(CURL)
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl")
}

#[test]
fn client_tls_with_cert_files_and_client_cert_auth() {
    let pki = Pki::new();
    let (server_crt, server_key) = pki.issue("server", 1);
    let (client_crt, client_key) = pki.issue("client", 2);
    let ca = pki.ca_file();
    let rusd = Rusd::start_with_schemes(
        &["https"],
        &[
            "--cert-file",
            &server_crt,
            "--key-file",
            &server_key,
            "--trusted-ca-file",
            &ca,
            "--client-cert-auth",
        ],
    );
    let url = rusd.url();
    assert!(url.starts_with("https://"));
    let tls = [
        format!("--cacert={ca}"),
        format!("--cert={client_crt}"),
        format!("--key={client_key}"),
    ];
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();

    // gRPC over TLS (HTTP/2 through ALPN h2).
    let out = etcdctl(&url, &[&tls[..], &["put", "foo", "bar"]].concat());
    assert!(out.status.success(), "put: {}", explain(&out));
    let out = etcdctl(&url, &[&tls[..], &["get", "foo"]].concat());
    assert_eq!(stdout(&out), "foo\nbar\n", "get: {}", explain(&out));

    // Without a client certificate the handshake is refused.
    let out = etcdctl(&url, &[&format!("--cacert={ca}"), "get", "foo"]);
    assert!(!out.status.success(), "no client cert: {}", explain(&out));
    // Plaintext gRPC to the TLS port fails (and does not hurt the server).
    let out = etcdctl(&format!("http://{}", rusd.endpoint), &["get", "foo"]);
    assert!(!out.status.success(), "plaintext: {}", explain(&out));

    // The HTTP API on the same port: HTTP/2 and HTTP/1.1, /health and the JSON gateway.
    let client = [
        "--cacert",
        ca.as_str(),
        "--cert",
        client_crt.as_str(),
        "--key",
        client_key.as_str(),
    ];
    let out = curl(&[&client[..], &[&format!("{url}/health")]].concat());
    assert_eq!(stdout(&out), r#"{"health":"true"}"#, "{}", explain(&out));
    let out = curl(&[&client[..], &["--http1.1", &format!("{url}/version")]].concat());
    assert!(stdout(&out).contains("etcdserver"), "{}", explain(&out));
    let out = curl(
        &[
            &client[..],
            &[
                "-X",
                "POST",
                "-d",
                r#"{"key":"Zm9v"}"#,
                &format!("{url}/v3/kv/range"),
            ],
        ]
        .concat(),
    );
    assert!(
        stdout(&out).contains(r#""value":"YmFy""#),
        "{}",
        explain(&out)
    );
    let out = curl(&["--cacert", &ca, &format!("{url}/health")]);
    assert!(
        !out.status.success(),
        "curl without a client cert: {}",
        explain(&out)
    );
    let out = curl(&[&format!("http://{}/health", rusd.endpoint)]);
    assert!(!out.status.success(), "plaintext curl: {}", explain(&out));

    // Still serving after the refused connections.
    let out = etcdctl(&url, &[&tls[..], &["get", "foo"]].concat());
    assert_eq!(stdout(&out), "foo\nbar\n", "{}", explain(&out));
}

#[test]
fn trusted_ca_alone_requires_client_certs_as_etcd() {
    let pki = Pki::new();
    let (server_crt, server_key) = pki.issue("server", 1);
    let ca = pki.ca_file();
    let rusd = Rusd::start_with_schemes(
        &["https"],
        &[
            "--cert-file",
            &server_crt,
            "--key-file",
            &server_key,
            "--trusted-ca-file",
            &ca,
        ],
    );
    let out = curl(&["--cacert", &ca, &format!("{}/health", rusd.url())]);
    assert!(!out.status.success(), "{}", explain(&out));
    // Without a trusted CA, no client certificate is asked for.
    let rusd = Rusd::start_with_schemes(
        &["https"],
        &["--cert-file", &server_crt, "--key-file", &server_key],
    );
    let out = etcdctl(&rusd.url(), &[&format!("--cacert={ca}"), "put", "k", "v"]);
    assert!(out.status.success(), "{}", explain(&out));
}

#[test]
fn client_crl_refuses_revoked_certificates() {
    let pki = Pki::new();
    let (server_crt, server_key) = pki.issue("server", 1);
    let (good_crt, good_key) = pki.issue("good", 2);
    let (revoked_crt, revoked_key) = pki.issue("revoked", 3);
    let crl = pki.revoke(3);
    let ca = pki.ca_file();
    let rusd = Rusd::start_with_schemes(
        &["https"],
        &[
            "--cert-file",
            &server_crt,
            "--key-file",
            &server_key,
            "--trusted-ca-file",
            &ca,
            "--client-cert-auth",
            "--client-crl-file",
            &crl,
        ],
    );
    let with = |crt: &str, key: &str| {
        etcdctl(
            &rusd.url(),
            &[
                &format!("--cacert={ca}"),
                &format!("--cert={crt}"),
                &format!("--key={key}"),
                "put",
                "k",
                "v",
            ],
        )
    };
    let out = with(&revoked_crt, &revoked_key);
    assert!(
        !out.status.success(),
        "revoked cert accepted: {}",
        explain(&out)
    );
    let out = with(&good_crt, &good_key);
    assert!(out.status.success(), "{}", explain(&out));
}

#[test]
fn auto_tls_makes_a_certificate_in_the_data_dir() {
    let rusd = Rusd::start_with_schemes(&["https"], &["--auto-tls"]);
    let insecure = ["--insecure-transport=false", "--insecure-skip-tls-verify"];
    let out = etcdctl(&rusd.url(), &[&insecure[..], &["put", "a", "1"]].concat());
    assert!(out.status.success(), "{}", explain(&out));
    let out = etcdctl(&rusd.url(), &[&insecure[..], &["get", "a"]].concat());
    assert_eq!(stdout(&out), "a\n1\n", "{}", explain(&out));
    let fixtures = rusd.data_dir().join("fixtures").join("client");
    assert!(fixtures.join("cert.pem").exists() && fixtures.join("key.pem").exists());
    // The certificate names the listen host and is not from a trusted CA.
    let out = curl(&["-k", &format!("{}/health", rusd.url())]);
    assert_eq!(stdout(&out), r#"{"health":"true"}"#, "{}", explain(&out));
    let out = curl(&[&format!("{}/health", rusd.url())]);
    assert!(
        !out.status.success(),
        "self-signed cert verified: {}",
        explain(&out)
    );
}

#[test]
fn http_and_https_on_one_port() {
    let pki = Pki::new();
    let (server_crt, server_key) = pki.issue("server", 1);
    let ca = pki.ca_file();
    let rusd = Rusd::start_with_schemes(
        &["http", "https"],
        &["--cert-file", &server_crt, "--key-file", &server_key],
    );
    let plain = format!("http://{}", rusd.endpoint);
    let secure = format!("https://{}", rusd.endpoint);
    let out = etcdctl(&plain, &["put", "k", "plain"]);
    assert!(out.status.success(), "{}", explain(&out));
    let out = etcdctl(&secure, &[&format!("--cacert={ca}"), "get", "k"]);
    assert_eq!(stdout(&out), "k\nplain\n", "{}", explain(&out));
    let out = curl(&[&format!("{plain}/health")]);
    assert_eq!(stdout(&out), r#"{"health":"true"}"#, "{}", explain(&out));
    let out = curl(&["--cacert", &ca, &format!("{secure}/health")]);
    assert_eq!(stdout(&out), r#"{"health":"true"}"#, "{}", explain(&out));
}

#[test]
fn cipher_suites_limit_tls12() {
    let pki = Pki::new();
    // rcgen's keys are ECDSA, so the ECDHE_ECDSA suites are the ones that can be chosen.
    let (server_crt, server_key) = pki.issue("server", 1);
    let ca = pki.ca_file();
    let rusd = Rusd::start_with_schemes(
        &["https"],
        &[
            "--cert-file",
            &server_crt,
            "--key-file",
            &server_key,
            "--cipher-suites",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_RSA_WITH_AES_128_CBC_SHA",
        ],
    );
    let url = format!("{}/health", rusd.url());
    let tls12 = |cipher: &str| {
        curl(&[
            "--cacert",
            &ca,
            "--tlsv1.2",
            "--tls-max",
            "1.2",
            "--ciphers",
            cipher,
            &url,
        ])
    };
    let out = tls12("ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_eq!(stdout(&out), r#"{"health":"true"}"#, "{}", explain(&out));
    let out = tls12("ECDHE-ECDSA-AES256-GCM-SHA384");
    assert!(
        !out.status.success(),
        "unlisted suite accepted: {}",
        explain(&out)
    );
    // TLS 1.3 is not limited (as in Go).
    let out = curl(&["--cacert", &ca, "--tlsv1.3", &url]);
    assert_eq!(stdout(&out), r#"{"health":"true"}"#, "{}", explain(&out));
    assert!(rusd
        .log
        .lock()
        .expect("log")
        .iter()
        .any(|l| l.contains("TLS_RSA_WITH_AES_128_CBC_SHA")));
}

/// Runs rusd with `args` and expects it to exit at once with an error mentioning `expect`.
fn fails_to_start(args: &[&str], expect: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("timeout")
        .arg("30")
        .arg(env!("CARGO_BIN_EXE_rusd"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-peer-urls", "http://127.0.0.1:0"])
        .args(args)
        .output()
        .expect("run rusd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{args:?}: wanted {expect:?} in {stderr}"
    );
}

#[test]
fn bad_tls_settings_fail_at_start() {
    let pki = Pki::new();
    let (crt, key) = pki.issue("server", 1);
    let missing = pki.path("missing.crt").display().to_string();
    let https = ["--listen-client-urls", "https://127.0.0.1:0"];
    fails_to_start(&https, "--cert-file and --key-file, or --auto-tls");
    fails_to_start(
        &[&https[..], &["--cert-file", &missing, "--key-file", &key]].concat(),
        "--cert-file",
    );
    fails_to_start(&[&https[..], &["--cert-file", &crt]].concat(), "--key-file");
    // A key that is not the certificate's.
    let (_, other_key) = pki.issue("other", 2);
    fails_to_start(
        &[&https[..], &["--cert-file", &crt, "--key-file", &other_key]].concat(),
        "--cert-file / --key-file",
    );
    fails_to_start(
        &[&https[..], &["--cert-file", &crt, "--key-file", &crt]].concat(),
        "--key-file",
    );
    fails_to_start(
        &[
            &https[..],
            &[
                "--cert-file",
                &crt,
                "--key-file",
                &key,
                "--client-cert-auth",
            ],
        ]
        .concat(),
        "--trusted-ca-file",
    );
    fails_to_start(
        &[
            &https[..],
            &[
                "--cert-file",
                &crt,
                "--key-file",
                &key,
                "--cipher-suites",
                "NOPE",
            ],
        ]
        .concat(),
        "unexpected TLS cipher suite",
    );
    fails_to_start(
        &["--listen-peer-urls", "https://127.0.0.1:0"],
        "--peer-cert-file and --peer-key-file, or --peer-auto-tls",
    );
}

/// Puts through member `via` (a follower forwards to the leader over the peer transport),
/// retrying while the cluster has no leader.
async fn put_via(cluster: &Cluster, via: usize, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = cluster.members[via].client().await;
    loop {
        match c.put(key, value, None).await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "put via {via} kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Writes through both followers and reads every write back, linearizably, on every member.
async fn writes_through_followers(cluster: &Cluster) {
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for &f in &followers {
        put_via(cluster, f, &format!("via{f}"), "x").await;
    }
    for i in 0..3 {
        let mut c = cluster.members[i].client().await;
        let r = c
            .get("via", Some(GetOptions::new().with_prefix()))
            .await
            .expect("linearizable get");
        assert_eq!(r.kvs().len(), 2, "member {i}");
    }
}

fn peer_log_has_no_tls_rejections(cluster: &Cluster) {
    for m in &cluster.members {
        let log = m.log.lock().expect("log");
        assert!(
            !log.iter().any(|l| l.contains("rejected a TLS connection")),
            "{}: {log:#?}",
            m.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_with_peer_cert_files() {
    let pki = Pki::new();
    let (crt, key) = pki.issue("peer", 1);
    let ca = pki.ca_file();
    let cluster = Cluster::start_with_peer_scheme(
        3,
        "https",
        &[
            "--peer-cert-file",
            &crt,
            "--peer-key-file",
            &key,
            "--peer-trusted-ca-file",
            &ca,
            "--peer-client-cert-auth",
        ],
    );
    writes_through_followers(&cluster).await;
    peer_log_has_no_tls_rejections(&cluster);

    // The peer port speaks TLS and wants a client certificate signed by the peer CA.
    let peer = format!("https://127.0.0.1:{}/", cluster.members[0].peer_port);
    let out = curl(&["--cacert", &ca, &peer]);
    assert!(!out.status.success(), "no client cert: {}", explain(&out));
    let other = Pki::new();
    let (other_crt, other_key) = other.issue("intruder", 1);
    let out = curl(&[
        "--cacert", &ca, "--cert", &other_crt, "--key", &other_key, &peer,
    ]);
    assert!(
        !out.status.success(),
        "foreign client cert: {}",
        explain(&out)
    );
    let out = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &crt,
        "--key",
        &key,
        "-o",
        "/dev/null",
        &peer,
    ]);
    assert!(out.status.success(), "peer cert refused: {}", explain(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_with_peer_auto_tls() {
    let cluster = Cluster::start_with_peer_scheme(3, "https", &["--peer-auto-tls"]);
    writes_through_followers(&cluster).await;
    peer_log_has_no_tls_rejections(&cluster);
    for m in &cluster.members {
        assert!(m.data_dir.join("fixtures/peer/cert.pem").exists());
    }
}
