//! The HTTP side of the client port against a real rusd process: grpc-gateway JSON (shapes
//! checked against etcd 3.4.23's answers), errors, streams, `/health`, `/version`, `/metrics`.
//! The client is a few lines of HTTP/1.1 over `TcpStream`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Rusd;
use serde_json::{json, Value};

/// One HTTP answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Sends a request and reads the status line and headers.
fn send(
    endpoint: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (BufReader<TcpStream>, u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body).expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header line");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (reader, status, headers)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    })
}

/// Reads one chunk of a chunked body; `None` at the last chunk.
fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    reader.read_line(&mut line).expect("chunk size");
    let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).expect("chunk");
    chunk.truncate(size);
    Some(chunk)
}

fn request(endpoint: &str, method: &str, path: &str, body: &[u8]) -> Reply {
    let (mut reader, status, headers) = send(endpoint, method, path, body);
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(chunk) = read_chunk(&mut reader) {
            body.extend_from_slice(&chunk);
        }
    } else {
        reader.read_to_end(&mut body).expect("body");
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn post(r: &Rusd, path: &str, body: Value) -> Reply {
    request(&r.endpoint, "POST", path, body.to_string().as_bytes())
}

fn get(r: &Rusd, path: &str) -> Reply {
    request(&r.endpoint, "GET", path, b"")
}

/// A streamed answer read line by line.
struct Lines {
    reader: BufReader<TcpStream>,
    status: u16,
    buf: Vec<u8>,
}

impl Lines {
    fn open(r: &Rusd, path: &str, body: &str) -> Lines {
        let (reader, status, headers) = send(&r.endpoint, "POST", path, body.as_bytes());
        assert!(is_chunked(&headers), "{headers:?}");
        Lines {
            reader,
            status,
            buf: Vec::new(),
        }
    }

    fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return serde_json::from_slice(&line).expect("JSON line");
            }
            let chunk = read_chunk(&mut self.reader).expect("stream ended");
            self.buf.extend_from_slice(&chunk);
        }
    }
}

/// Checks a full response header (ids and term as decimal strings) and returns its revision.
fn header_revision(v: &Value) -> i64 {
    let h = &v["header"];
    for field in ["cluster_id", "member_id", "raft_term"] {
        let s = h[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {v}"));
        assert!(s.parse::<u64>().is_ok(), "{field} in {v}");
    }
    h["revision"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("revision in {v}"))
}

/// The body without its header.
fn without_header(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("header");
    }
    v
}

fn error_json(message: &str, code: i32) -> Value {
    json!({ "error": message, "message": message, "code": code })
}

// base64: "foo" Zm9v, "bar" YmFy, "baz" YmF6, "tx" dHg=, "1" MQ==, "2" Mg==, "none" bm9uZQ==.

#[test]
fn kv_json_shapes() {
    let r = Rusd::start(&[]);
    let put = post(&r, "/v3/kv/put", json!({"key": "Zm9v", "value": "YmFy"}));
    assert_eq!(put.status, 200);
    assert_eq!(put.header("content-type"), Some("application/json"));
    let put = put.json();
    assert_eq!(header_revision(&put), 2);
    // Zero values are omitted: nothing but the header.
    assert_eq!(without_header(put), json!({}));

    let put = post(
        &r,
        "/v3/kv/put",
        json!({"key": "Zm9v", "value": "YmF6", "prev_kv": true}),
    )
    .json();
    assert_eq!(header_revision(&put), 3);
    assert_eq!(
        without_header(put),
        json!({"prev_kv": {"key": "Zm9v", "create_revision": "2", "mod_revision": "2",
                           "version": "1", "value": "YmFy"}})
    );

    // camelCase input and numbers for int64 are accepted too.
    let range = post(&r, "/v3/kv/range", json!({"key": "Zm9v", "limit": 5})).json();
    assert_eq!(header_revision(&range), 3);
    assert_eq!(
        without_header(range),
        json!({"kvs": [{"key": "Zm9v", "create_revision": "2", "mod_revision": "3",
                        "version": "2", "value": "YmF6"}], "count": "1"})
    );
    let count = post(
        &r,
        "/v3/kv/range",
        json!({"key": "AA==", "rangeEnd": "AA==", "count_only": true}),
    )
    .json();
    assert_eq!(without_header(count), json!({"count": "1"}));
    let missing = post(&r, "/v3/kv/range", json!({"key": "bm9uZQ=="})).json();
    assert_eq!(without_header(missing), json!({}));

    post(&r, "/v3/kv/put", json!({"key": "dHg=", "value": "MQ=="}));
    let txn = post(
        &r,
        "/v3/kv/txn",
        json!({
            "compare": [{"key": "dHg=", "result": "EQUAL", "target": "VALUE", "value": "MQ=="}],
            "success": [
                {"request_put": {"key": "dHg=", "value": "Mg==", "prev_kv": true}},
                {"request_range": {"key": "dHg="}},
                {"requestDeleteRange": {"key": "bm9uZQ=="}}
            ]
        }),
    )
    .json();
    assert_eq!(header_revision(&txn), 5);
    assert_eq!(
        without_header(txn),
        json!({"succeeded": true, "responses": [
            {"response_put": {"header": {"revision": "5"},
                "prev_kv": {"key": "dHg=", "create_revision": "4", "mod_revision": "4",
                            "version": "1", "value": "MQ=="}}},
            {"response_range": {"header": {"revision": "5"},
                "kvs": [{"key": "dHg=", "create_revision": "4", "mod_revision": "5",
                         "version": "2", "value": "Mg=="}], "count": "1"}},
            {"response_delete_range": {"header": {"revision": "5"}}}
        ]})
    );
    let failed = post(
        &r,
        "/v3/kv/txn",
        json!({"compare": [{"key": "dHg=", "result": "EQUAL", "target": "VERSION", "version": "9"}]}),
    )
    .json();
    assert_eq!(without_header(failed), json!({}));

    let del = post(
        &r,
        "/v3/kv/deleterange",
        json!({"key": "dHg=", "prev_kv": true}),
    )
    .json();
    assert_eq!(header_revision(&del), 6);
    assert_eq!(
        without_header(del),
        json!({"deleted": "1", "prev_kvs": [{"key": "dHg=", "create_revision": "4",
               "mod_revision": "5", "version": "2", "value": "Mg=="}]})
    );

    let compact = post(&r, "/v3/kv/compaction", json!({"revision": "3"}));
    assert_eq!(compact.status, 200);
    let compact = compact.json();
    assert_eq!(header_revision(&compact), 6);
    assert_eq!(without_header(compact), json!({}));
}

#[test]
fn errors_as_grpc_gateway() {
    let r = Rusd::start(&[]);
    let empty = post(&r, "/v3/kv/put", json!({"key": "", "value": "YmFy"}));
    assert_eq!(empty.status, 400);
    assert_eq!(empty.header("content-type"), Some("application/json"));
    assert_eq!(
        empty.json(),
        error_json("etcdserver: key is not provided", 3)
    );
    // An empty body is the empty request.
    let empty = request(&r.endpoint, "POST", "/v3/kv/range", b"");
    assert_eq!(
        (empty.status, empty.json()),
        (400, error_json("etcdserver: key is not provided", 3))
    );

    for _ in 0..3 {
        post(&r, "/v3/kv/put", json!({"key": "YQ==", "value": "Yg=="}));
    }
    post(&r, "/v3/kv/compaction", json!({"revision": "3"}));
    let compacted = post(&r, "/v3/kv/range", json!({"key": "YQ==", "revision": "2"}));
    assert_eq!(compacted.status, 400);
    assert_eq!(
        compacted.json(),
        error_json("etcdserver: mvcc: required revision has been compacted", 11)
    );
    let future = post(&r, "/v3/kv/range", json!({"key": "YQ==", "revision": "99"}));
    assert_eq!(
        (future.status, future.json()),
        (
            400,
            error_json(
                "etcdserver: mvcc: required revision is a future revision",
                11
            )
        )
    );

    let bad = request(&r.endpoint, "POST", "/v3/kv/put", br#"{"key":"#);
    assert_eq!(
        (bad.status, bad.json()),
        (400, error_json("unexpected EOF", 3))
    );
    let bad = request(&r.endpoint, "POST", "/v3/kv/put", br#"{"key":"!!"}"#);
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], json!(3));

    let not_found = post(&r, "/v3/kv/nope", json!({}));
    assert_eq!(
        (not_found.status, not_found.text()),
        (404, "Not Found\n".into())
    );
    let not_found = get(&r, "/nope");
    assert_eq!(
        (not_found.status, not_found.text()),
        (404, "404 page not found\n".into())
    );
    let wrong_method = get(&r, "/v3/kv/range");
    assert_eq!(
        (wrong_method.status, wrong_method.text()),
        (405, "Method Not Allowed\n".into())
    );

    let revoke = post(&r, "/v3/lease/revoke", json!({"ID": "99"}));
    assert_eq!(
        (revoke.status, revoke.json()),
        (404, error_json("etcdserver: requested lease not found", 5))
    );
    let too_long = post(&r, "/v3/lease/grant", json!({"TTL": "9000000001"}));
    assert_eq!(
        (too_long.status, too_long.json()),
        (400, error_json("etcdserver: too large lease TTL", 11))
    );

    // Above max-request-bytes: etcd's own check. Above it plus 512 KiB: gRPC's receive limit
    // (the same texts and sizes etcd 3.4.23 answers with).
    let put_of = |len: usize| {
        // `len` bytes of "x", in base64.
        let tail = ["", "eA==", "eHg="][len % 3];
        let value = "eHh4".repeat(len / 3) + tail;
        format!(r#"{{"key":"YQ==","value":"{value}"}}"#)
    };
    let large = request(
        &r.endpoint,
        "POST",
        "/v3/kv/put",
        put_of(1_600_000).as_bytes(),
    );
    assert_eq!(
        (large.status, large.json()),
        (400, error_json("etcdserver: request is too large", 3))
    );
    let larger = request(
        &r.endpoint,
        "POST",
        "/v3/kv/put",
        put_of(2_200_000).as_bytes(),
    );
    assert_eq!(
        (larger.status, larger.json()),
        (
            429,
            error_json(
                "grpc: received message larger than max (2200008 vs. 2097152)",
                8
            )
        )
    );
}

#[test]
fn lease_grant_timetolive_keepalive_revoke() {
    let r = Rusd::start(&[]);
    let grant = post(&r, "/v3/lease/grant", json!({"TTL": "60", "ID": "1234"})).json();
    header_revision(&grant);
    assert_eq!(without_header(grant), json!({"ID": "1234", "TTL": "60"}));
    post(
        &r,
        "/v3/kv/put",
        json!({"key": "Zm9v", "value": "YmFy", "lease": "1234"}),
    );

    let ttl = post(
        &r,
        "/v3/lease/timetolive",
        json!({"ID": "1234", "keys": true}),
    )
    .json();
    let ttl = without_header(ttl);
    assert_eq!(ttl["ID"], json!("1234"));
    assert_eq!(ttl["grantedTTL"], json!("60"));
    assert_eq!(ttl["keys"], json!(["Zm9v"]));
    let left: i64 = ttl["TTL"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("TTL");
    assert!((55..=60).contains(&left), "{ttl}");

    // The additional binding under /v3/kv/lease.
    let leases = post(&r, "/v3/kv/lease/leases", json!({})).json();
    assert_eq!(without_header(leases), json!({"leases": [{"ID": "1234"}]}));

    // Keep-alive: a stream of requests, a line per answer; it ends with the body.
    let keepalive = request(
        &r.endpoint,
        "POST",
        "/v3/lease/keepalive",
        br#"{"ID":"1234"} {"ID":"77"}"#,
    );
    assert_eq!(keepalive.status, 200);
    let lines: Vec<Value> = keepalive
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", keepalive.text());
    assert_eq!(
        without_header(lines[0]["result"].clone()),
        json!({"ID": "1234", "TTL": "60"})
    );
    assert_eq!(
        without_header(lines[1]["result"].clone()),
        json!({"ID": "77"})
    );

    let revoke = post(&r, "/v3/lease/revoke", json!({"ID": "1234"}));
    assert_eq!(revoke.status, 200);
    let revoke = revoke.json();
    assert_eq!(header_revision(&revoke), 3);
    assert_eq!(without_header(revoke), json!({}));
    let gone = post(&r, "/v3/kv/range", json!({"key": "Zm9v"})).json();
    assert_eq!(without_header(gone), json!({}));
    let ttl = post(&r, "/v3/kv/lease/timetolive", json!({"ID": "1234"})).json();
    assert_eq!(without_header(ttl), json!({"ID": "1234", "TTL": "-1"}));
}

#[test]
fn watch_streams_events() {
    let r = Rusd::start(&[]);
    post(&r, "/v3/kv/put", json!({"key": "Zm9v", "value": "YmFy"}));
    let mut watch = Lines::open(
        &r,
        "/v3/watch",
        r#"{"create_request":{"key":"Zm9v"}} {"create_request":{"key":"Zm9v","start_revision":"2","watch_id":"7","prev_kv":true}}"#,
    );
    assert_eq!(watch.status, 200);
    let created = watch.next();
    assert_eq!(header_revision(&created["result"]), 2);
    assert_eq!(
        without_header(created["result"].clone()),
        json!({"created": true})
    );
    let created = watch.next();
    assert_eq!(
        without_header(created["result"].clone()),
        json!({"watch_id": "7", "created": true})
    );
    // Watch 7 replays revision 2.
    let replay = watch.next();
    assert_eq!(
        without_header(replay["result"].clone()),
        json!({"watch_id": "7", "events": [{"kv": {"key": "Zm9v", "create_revision": "2",
               "mod_revision": "2", "version": "1", "value": "YmFy"}}]})
    );

    post(&r, "/v3/kv/put", json!({"key": "Zm9v", "value": "YmF6"}));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = watch.next();
        assert_eq!(header_revision(&event["result"]), 3);
        seen.push(without_header(event["result"].clone()));
    }
    seen.sort_by_key(|v| v.to_string());
    let kv = json!({"key": "Zm9v", "create_revision": "2", "mod_revision": "3",
                    "version": "2", "value": "YmF6"});
    let prev = json!({"key": "Zm9v", "create_revision": "2", "mod_revision": "2",
                      "version": "1", "value": "YmFy"});
    let mut expected = vec![
        json!({"events": [{"kv": kv}]}),
        json!({"watch_id": "7", "events": [{"kv": kv, "prev_kv": prev}]}),
    ];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(seen, expected);

    // A bad first message fails the call as grpc-gateway does (code Unknown, HTTP 500).
    let bad = request(&r.endpoint, "POST", "/v3/watch", b"{bad");
    assert_eq!(bad.status, 500);
    assert_eq!(bad.json()["code"], json!(2));
}

#[test]
fn health_version_metrics() {
    let r = Rusd::start(&[]);
    let health = get(&r, "/health");
    assert_eq!(
        (health.status, health.text()),
        (200, r#"{"health":"true"}"#.into())
    );
    let health = get(&r, "/health?serializable=true&exclude=NOSPACE");
    assert_eq!(
        (health.status, health.text()),
        (200, r#"{"health":"true"}"#.into())
    );
    assert_eq!(request(&r.endpoint, "POST", "/health", b"").status, 405);

    // A raised alarm makes the member unhealthy unless excluded.
    let member = header_revision_member(&post(&r, "/v3/kv/range", json!({"key": "YQ=="})).json());
    let alarm = |action: &str| {
        post(
            &r,
            "/v3/maintenance/alarm",
            json!({"action": action, "memberID": member, "alarm": "NOSPACE"}),
        )
    };
    assert_eq!(alarm("ACTIVATE").status, 200);
    let health = get(&r, "/health");
    assert_eq!(
        (health.status, health.text()),
        (503, "{\"health\":\"false\"}\n".into())
    );
    let health = get(&r, "/health?exclude=NOSPACE");
    assert_eq!(health.status, 200);
    assert_eq!(alarm("DEACTIVATE").status, 200);
    assert_eq!(get(&r, "/health").status, 200);

    let version = get(&r, "/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.header("content-type"), Some("application/json"));
    assert_eq!(
        version.text(),
        format!(
            r#"{{"etcdserver":"{}","etcdcluster":"{}"}}"#,
            rusd_server::VERSION_SERVER,
            rusd_server::VERSION_CLUSTER
        )
    );

    post(&r, "/v3/kv/put", json!({"key": "Zm9v", "value": "YmFy"}));
    let metrics = get(&r, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let text = metrics.text();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    assert_eq!(value("etcd_server_has_leader"), 1.0);
    assert_eq!(value("etcd_server_is_leader"), 1.0);
    assert_eq!(value("etcd_debugging_mvcc_current_revision"), 2.0);
    assert_eq!(value("etcd_debugging_mvcc_keys_total"), 1.0);
    assert!(value("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(value("etcd_server_proposals_applied_total") >= 1.0);
    assert!(
        value("etcd_server_proposals_committed_total")
            >= value("etcd_server_proposals_applied_total")
    );
    // The put was answered: nothing pending, nothing failed.
    assert_eq!(value("etcd_server_proposals_pending"), 0.0);
    assert_eq!(value("etcd_server_proposals_failed_total"), 0.0);
}

/// The member id of a response's header.
fn header_revision_member(v: &Value) -> String {
    header_revision(v);
    v["header"]["member_id"]
        .as_str()
        .expect("member_id")
        .to_string()
}

#[test]
fn v3beta_alias_and_cors() {
    let r = Rusd::start(&[]);
    let put = post(
        &r,
        "/v3beta/kv/put",
        json!({"key": "Zm9v", "value": "YmFy"}),
    );
    assert_eq!(put.status, 200);
    let range = post(&r, "/v3beta/kv/range", json!({"key": "Zm9v"})).json();
    assert_eq!(without_header(range)["count"], json!("1"));
    let leases = post(&r, "/v3beta/lease/leases", json!({})).json();
    assert_eq!(without_header(leases), json!({}));
    let members = post(&r, "/v3beta/cluster/member/list", json!({})).json();
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1));
    let status = post(&r, "/v3beta/maintenance/status", json!({})).json();
    assert_eq!(status["version"], json!(rusd_server::VERSION_SERVER));
    assert_eq!(
        post(&r, "/v3alpha/kv/range", json!({"key": "Zm9v"})).status,
        404
    );

    let preflight = request(&r.endpoint, "OPTIONS", "/v3/kv/range", b"");
    assert_eq!(preflight.status, 200);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        put.header("access-control-allow-methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE")
    );
}

/// `--listen-metrics-urls`: a listener with `/metrics` and `/health` only (kubeadm's probes).
#[test]
fn metrics_listener_serves_metrics_and_health_only() {
    let port = common::cluster::free_port();
    let flag = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
    let r = Rusd::start(&[flag.as_str()]);
    let endpoint = format!("127.0.0.1:{port}");
    let health = request(&endpoint, "GET", "/health", b"");
    assert_eq!(health.status, 200);
    assert!(
        String::from_utf8_lossy(&health.body).contains(r#""health":"true""#),
        "{:?}",
        String::from_utf8_lossy(&health.body)
    );
    let metrics = request(&endpoint, "GET", "/metrics", b"");
    assert_eq!(metrics.status, 200);
    assert!(String::from_utf8_lossy(&metrics.body).contains("etcd_server_has_leader 1"));
    assert_eq!(
        request(&endpoint, "POST", "/v3/kv/range", br#"{"key":"YQ=="}"#).status,
        404
    );
    // The client port still serves everything.
    assert_eq!(get(&r, "/health").status, 200);
}

/// `--max-concurrent-streams 2`: as etcd's gateway (one gRPC connection to its own server),
/// gateway calls beyond the limit wait until one in flight ends; a watch holds its slot for as
/// long as its stream is open.
#[test]
fn max_concurrent_streams_bounds_gateway_calls() {
    let r = Rusd::start(&["--max-concurrent-streams", "2"]);
    let watch = r#"{"create_request":{"key":"Zm9v"}}"#;
    let mut first = Lines::open(&r, "/v3/watch", watch);
    assert_eq!(first.next()["result"]["created"], json!(true));
    let mut second = Lines::open(&r, "/v3/watch", watch);
    assert_eq!(second.next()["result"]["created"], json!(true));

    // A range waits: no status line within 1.5 s.
    let mut stuck = TcpStream::connect(&r.endpoint).expect("connect");
    stuck
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    let body = r#"{"key":"Zm9v"}"#;
    let head = format!(
        "POST /v3/kv/range HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{body}",
        r.endpoint,
        body.len()
    );
    stuck.write_all(head.as_bytes()).expect("write");
    let mut byte = [0u8; 1];
    let waited = stuck
        .read(&mut byte)
        .expect_err("the range waits for a slot");
    assert!(
        matches!(
            waited.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{waited:?}"
    );
    drop(stuck);

    // Closing a watch frees its slot.
    drop(first);
    let range = post(&r, "/v3/kv/range", json!({"key": "Zm9v"}));
    assert_eq!(range.status, 200, "{}", range.text());
    assert!(header_revision(&range.json()) >= 1);
    drop(second);
}

/// The metrics etcd's e2e `TestV3Metrics*` reads (with rusd's version), after its sequence:
/// a put, then three rounds of put, delete and a watch from revision 1 that the client
/// abandons once it has its event.
#[tokio::test]
async fn metrics_count_like_etcd() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    c.put("k", "v", None).await.expect("put");
    for i in 1..=3 {
        c.put(i.to_string(), "v", None).await.expect("put");
        c.delete(i.to_string(), None).await.expect("delete");
        let options = etcd_client::WatchOptions::new().with_start_revision(1);
        let mut stream = c.watch("k", Some(options)).await.expect("watch");
        loop {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("in time")
                .expect("no error")
                .expect("open");
            if !resp.events().is_empty() {
                break;
            }
        }
        drop(stream);
    }
    c.get("k", None).await.expect("get");
    let expected = [
        "etcd_mvcc_put_total 4".to_owned(),
        "etcd_mvcc_delete_total 3".to_owned(),
        "etcd_debugging_mvcc_keys_total 1".to_owned(),
        format!(
            r#"etcd_server_version{{server_version="{}"}} 1"#,
            rusd_server::VERSION_SERVER
        ),
        format!(
            r#"etcd_cluster_version{{cluster_version="{}"}} 1"#,
            rusd_server::VERSION_CLUSTER
        ),
        r#"grpc_server_handled_total{grpc_code="Canceled",grpc_method="Watch",grpc_service="etcdserverpb.Watch",grpc_type="bidi_stream"} 3"#.to_owned(),
        r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 4"#.to_owned(),
        r#"grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1"#.to_owned(),
        "etcd_server_leader_changes_seen_total 1".to_owned(),
        "etcd_server_quota_backend_bytes 2147483648".to_owned(),
    ];
    // The server learns of the abandoned streams asynchronously: poll for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(&r, "/metrics").text();
        let missing: Vec<&String> = expected
            .iter()
            .filter(|line| !text.lines().any(|l| l == line.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing {missing:?} in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The log synced each write before it was acknowledged, and the engine committed them
    // (in the background, every 100 ms) by now or soon.
    let count = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in:\n{text}"))
    };
    let text = get(&r, "/metrics").text();
    assert!(count(&text, "etcd_disk_wal_fsync_duration_seconds_count") >= 7);
    // Put requests of about 10 bytes each, and their answers, crossed the gRPC layer.
    assert!(count(&text, "etcd_network_client_grpc_received_bytes_total") >= 4 * 10);
    assert!(count(&text, "etcd_network_client_grpc_sent_bytes_total") >= 4 * 10);
    let rss: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("process_resident_memory_bytes ")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("process_resident_memory_bytes in:\n{text}"));
    assert!(rss > 1e6, "{rss}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(
        &get(&r, "/metrics").text(),
        "etcd_disk_backend_commit_duration_seconds_count",
    ) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no backend commit observed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A refused call counts with its code (the empty key: InvalidArgument).
    assert!(c.get("", None).await.is_err());
    let text = get(&r, "/metrics").text();
    assert!(
        text.contains(r#"grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 1"#),
        "{text}"
    );
}
