//! `unix://` listen URLs: a member serving clients and peers on Unix sockets.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One HTTP/1.1 POST over the Unix socket at `socket`; the whole response.
fn post(socket: &Path, path: &str, body: &str) -> String {
    let s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    exchange(s, path, body)
}

fn exchange(mut s: impl Read + Write, path: &str, body: &str) -> String {
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn clients_and_peers_on_unix_sockets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = dir.path().join("client.sock");
    let peer = dir.path().join("peer.sock");
    // A file left at the path (a socket of an earlier run) is replaced, as etcd does.
    std::fs::write(&client, b"stale").expect("write");
    let client_url = format!("unix://{}", client.display());
    let peer_url = format!("unix://{}", peer.display());
    let mut r = common::Rusd::start(&[
        "--listen-client-urls",
        &format!("http://127.0.0.1:0,{client_url}"),
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("default={peer_url}"),
    ]);

    let put = post(&client, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    let range = post(&client, "/v3/kv/range", r#"{"key":"Zm9v"}"#);
    assert!(range.starts_with("HTTP/1.1 200"), "{range}");
    assert!(range.contains(r#""value":"YmFy""#), "{range}");
    // The same store behind the TCP listener.
    let tcp = std::net::TcpStream::connect(&r.endpoint).expect("tcp");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let range = exchange(tcp, "/v3/kv/range", r#"{"key":"Zm9v"}"#);
    assert!(range.contains(r#""value":"YmFy""#), "{range}");
    let members = post(&client, "/v3/cluster/member/list", "{}");
    assert!(members.contains(&peer_url), "{members}");

    // etcdctl (grpc-go) over the socket: it sends the socket's path as :authority.
    let etcdctl = Path::new("/usr/bin/etcdctl");
    if etcdctl.exists() {
        for args in [&["put", "k", "v"][..], &["endpoint", "status"][..]] {
            let out = std::process::Command::new(etcdctl)
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={client_url}"))
                .args(args)
                .output()
                .expect("etcdctl");
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        }
        let out = std::process::Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={client_url}"))
            .args(["get", "k", "--print-value-only"])
            .output()
            .expect("etcdctl");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v", "{out:?}");
    } else {
        eprintln!("etcdctl part skipped: no /usr/bin/etcdctl");
    }

    // Stopping removes the socket files.
    assert!(r.terminate());
    assert!(!client.exists(), "client socket left behind");
    assert!(!peer.exists(), "peer socket left behind");
}

#[test]
fn unixs_and_empty_unix_urls_are_refused() {
    for (urls, expected) in [
        (
            "unixs://x.sock",
            "TLS on unix sockets (unixs://) is not supported yet",
        ),
        ("unix://", "no socket path"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rusd"))
            .args(["--listen-client-urls", urls])
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
}
