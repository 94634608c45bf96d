//! The Lock and Election services (etcd's `v3lock` / `v3election`) through a real rusd process:
//! gRPC with the etcd-client crate, and the HTTP gateway. Expected values (keys, headers, error
//! codes and texts) were checked against etcd 3.4.23.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Rusd;
use etcd_client::{
    Client, Error, GetOptions, LeaderKey, LockOptions, ProclaimOptions, ResignOptions,
};
use serde_json::{json, Value};

/// gRPC code Unknown: etcd's lock and election servers report every error with it.
const UNKNOWN: i32 = 2;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

fn status(e: Error) -> (i32, String) {
    match e {
        Error::GRpcStatus(s) => (s.code() as i32, s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("header").revision()
}

async fn grant(c: &mut Client, ttl: i64) -> i64 {
    c.lease_grant(ttl, None).await.expect("grant").id()
}

/// The keys under `prefix`, oldest first.
async fn keys_under(c: &mut Client, prefix: &str) -> Vec<String> {
    let resp = c
        .get(
            prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(
                        etcd_client::SortTarget::Create,
                        etcd_client::SortOrder::Ascend,
                    )
                    .with_keys_only(),
            ),
        )
        .await
        .expect("get");
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Polls `check` until it holds or [`WAIT`] passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lock_is_mutually_exclusive() {
    let r = Rusd::start(&[]);
    let mut c1 = r.client().await;
    let mut c2 = r.client().await;
    let a = grant(&mut c1, 30).await;
    let b = grant(&mut c1, 30).await;

    let held = c1
        .lock("mtx", Some(LockOptions::new().with_lease(a)))
        .await
        .expect("lock a");
    assert_eq!(held.key(), format!("mtx/{a:x}").as_bytes());
    let locked_at = rev(held.header());
    assert_eq!(locked_at, 2, "one put on an empty store");

    let waiter = tokio::spawn(async move {
        let resp = c2
            .lock("mtx", Some(LockOptions::new().with_lease(b)))
            .await
            .expect("lock b");
        (resp.key().to_vec(), rev(resp.header()))
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the second locker must wait");
    // The waiter's key is queued behind the holder's.
    assert_eq!(
        keys_under(&mut c1, "mtx/").await,
        vec![format!("mtx/{a:x}"), format!("mtx/{b:x}")]
    );

    // Locking again with the holder's lease returns at once, with the same key.
    let again = c1
        .lock("mtx", Some(LockOptions::new().with_lease(a)))
        .await
        .expect("relock");
    assert_eq!(again.key(), held.key());
    assert!(!waiter.is_finished());

    let unlocked = c1.unlock(held.key()).await.expect("unlock");
    let unlocked_at = rev(unlocked.header());
    let (key_b, header_b) = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("the waiter gets the lock after unlock")
        .expect("task");
    assert_eq!(key_b, format!("mtx/{b:x}").into_bytes());
    // The header of the last look at the queue, after the holder's deletion.
    assert!(header_b >= unlocked_at, "{header_b} < {unlocked_at}");

    // Unlocking a key that is gone is not an error.
    c1.unlock(held.key()).await.expect("unlock again");
    c1.unlock(key_b).await.expect("unlock b");
    assert!(keys_under(&mut c1, "mtx/").await.is_empty());
}

#[tokio::test]
async fn lease_expiry_releases_a_lock() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let short = grant(&mut c, 2).await;
    let long = grant(&mut c, 30).await;
    c.lock("exp", Some(LockOptions::new().with_lease(short)))
        .await
        .expect("lock short");

    let started = Instant::now();
    let mut c2 = r.client().await;
    let got = tokio::time::timeout(
        WAIT,
        c2.lock("exp", Some(LockOptions::new().with_lease(long))),
    )
    .await
    .expect("the lock is released when the holder's lease expires")
    .expect("lock long");
    assert_eq!(got.key(), format!("exp/{long:x}").as_bytes());
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "released too early: {:?}",
        started.elapsed()
    );
    assert_eq!(
        keys_under(&mut c, "exp/").await,
        vec![format!("exp/{long:x}")]
    );
}

#[tokio::test]
async fn lock_errors_sessions_and_cancellation() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;

    // Errors of the store come back with their text and code Unknown.
    let e = c
        .lock("l", Some(LockOptions::new().with_lease(12345)))
        .await
        .expect_err("unknown lease");
    assert_eq!(
        status(e),
        (UNKNOWN, "etcdserver: requested lease not found".into())
    );
    let e = c.unlock("").await.expect_err("empty key");
    assert_eq!(
        status(e),
        (UNKNOWN, "etcdserver: key is not provided".into())
    );

    // No lease: the server grants a 60 s session lease and names the key after it.
    let resp = c.lock("l", None).await.expect("lock without lease");
    let key = String::from_utf8(resp.key().to_vec()).expect("utf8");
    let kv = c.get(key.as_str(), None).await.expect("get").kvs()[0].clone();
    assert_eq!(key, format!("l/{:x}", kv.lease()));
    let ttl = c.lease_time_to_live(kv.lease(), None).await.expect("ttl");
    assert_eq!(ttl.granted_ttl(), 60);

    // A waiter that goes away takes its key with it.
    let waiter_lease = grant(&mut c, 30).await;
    let mut c2 = r.client().await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        c2.lock("l", Some(LockOptions::new().with_lease(waiter_lease))),
    )
    .await;
    assert!(gave_up.is_err(), "the lock is held");
    let waiter_key = format!("l/{waiter_lease:x}");
    eventually("the cancelled waiter's key to be deleted", || {
        let mut c = c.clone();
        let waiter_key = waiter_key.clone();
        async move { !keys_under(&mut c, "l/").await.contains(&waiter_key) }
    })
    .await;
    assert_eq!(keys_under(&mut c, "l/").await, vec![key]);
}

/// The next message of an Observe stream.
async fn next(o: &mut etcd_client::ObserveStream) -> etcd_client::LeaderResponse {
    tokio::time::timeout(WAIT, o.message())
        .await
        .expect("an observed change")
        .expect("observe message")
        .expect("stream open")
}

#[tokio::test]
async fn election_campaign_leader_proclaim_observe_resign() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let a = grant(&mut c, 30).await;
    let b = grant(&mut c, 30).await;

    let e = c.leader("el").await.expect_err("no candidates");
    assert_eq!(status(e), (UNKNOWN, "election: no leader".into()));

    let mut observer = r.client().await;
    let mut observed = observer.observe("el").await.expect("observe");

    let won = c.campaign("el", "a1", a).await.expect("campaign a");
    let leader_a: LeaderKey = won.leader().expect("leader key").clone();
    assert_eq!(leader_a.name(), b"el");
    assert_eq!(leader_a.key(), format!("el/{a:x}").as_bytes());
    assert_eq!(leader_a.lease(), a);
    assert_eq!(leader_a.rev(), rev(won.header()));

    let seen = next(&mut observed).await;
    let kv = seen.kv().expect("kv");
    assert_eq!((kv.key(), kv.value()), (leader_a.key(), &b"a1"[..]));
    assert_eq!(rev(seen.header()), leader_a.rev());

    // A second candidate waits behind the leader.
    let mut cb = r.client().await;
    let campaign_b = tokio::spawn(async move { cb.campaign("el", "b1", b).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!campaign_b.is_finished(), "b must wait for a");

    // A candidate that goes away while waiting resigns.
    let d = grant(&mut c, 30).await;
    let mut cd = r.client().await;
    let gave_up =
        tokio::time::timeout(Duration::from_millis(300), cd.campaign("el", "d1", d)).await;
    assert!(gave_up.is_err(), "a leads");
    let d_key = format!("el/{d:x}");
    eventually("the cancelled candidate's key to be deleted", || {
        let mut c = c.clone();
        let d_key = d_key.clone();
        async move { !keys_under(&mut c, "el/").await.contains(&d_key) }
    })
    .await;
    assert_eq!(
        keys_under(&mut c, "el/").await,
        vec![format!("el/{a:x}"), format!("el/{b:x}")]
    );

    // Proclaim updates the value; Leader and Observe see it.
    let proclaimed = c
        .proclaim(
            "a2",
            Some(ProclaimOptions::new().with_leader(leader_a.clone())),
        )
        .await
        .expect("proclaim");
    let leader = c.leader("el").await.expect("leader");
    let kv = leader.kv().expect("kv");
    assert_eq!((kv.key(), kv.value()), (leader_a.key(), &b"a2"[..]));
    assert_eq!(kv.create_revision(), leader_a.rev());
    assert_eq!(kv.mod_revision(), rev(proclaimed.header()));
    let seen = next(&mut observed).await;
    assert_eq!(seen.kv().expect("kv").value(), b"a2");

    // Campaigning again with the same lease and a new value keeps the candidacy and updates it.
    let again = c.campaign("el", "a3", a).await.expect("campaign again");
    assert_eq!(again.leader().expect("leader").rev(), leader_a.rev());
    assert_eq!(next(&mut observed).await.kv().expect("kv").value(), b"a3");

    // Resign: b is elected, and observers see it.
    c.resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
        .await
        .expect("resign");
    let won_b = tokio::time::timeout(WAIT, campaign_b)
        .await
        .expect("b is elected after a resigns")
        .expect("task")
        .expect("campaign b");
    let leader_b = won_b.leader().expect("leader b").clone();
    assert_eq!(leader_b.key(), format!("el/{b:x}").as_bytes());
    let seen = next(&mut observed).await;
    let kv = seen.kv().expect("kv");
    assert_eq!((kv.key(), kv.value()), (leader_b.key(), &b"b1"[..]));

    // The old leader key no longer leads; resigning it again is a no-op.
    let e = c
        .proclaim(
            "stale",
            Some(ProclaimOptions::new().with_leader(leader_a.clone())),
        )
        .await
        .expect_err("stale leader");
    assert_eq!(status(e), (UNKNOWN, "election: not leader".into()));
    let before = rev(c.get("x", None).await.expect("get").header());
    let resigned = c
        .resign(Some(ResignOptions::new().with_leader(leader_a)))
        .await
        .expect("resign again");
    assert_eq!(rev(resigned.header()), before);

    // Missing leader keys.
    let e = c
        .proclaim("v", Some(ProclaimOptions::new()))
        .await
        .expect_err("no leader key");
    assert_eq!(
        status(e),
        (UNKNOWN, "\"leader\" field must be provided".into())
    );
    let e = c.resign(None).await.expect_err("no leader key");
    assert_eq!(
        status(e),
        (UNKNOWN, "\"leader\" field must be provided".into())
    );

    // An unknown lease.
    let e = c.campaign("el", "x", 777).await.expect_err("unknown lease");
    assert_eq!(
        status(e),
        (UNKNOWN, "etcdserver: requested lease not found".into())
    );

    // Lease expiry ends a leadership too: revoke b's lease, the election is empty.
    c.lease_revoke(b).await.expect("revoke");
    let e = c.leader("el").await.expect_err("no leader left");
    assert_eq!(status(e), (UNKNOWN, "election: no leader".into()));
}

// --- the HTTP gateway ---

/// POSTs `body` and returns (HTTP status, body); the body is de-chunked if needed.
fn post(r: &Rusd, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(&r.endpoint).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.endpoint,
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            out.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut out).expect("body");
    }
    (code, String::from_utf8(out).expect("utf8"))
}

fn post_json(r: &Rusd, path: &str, body: Value) -> (u16, Value) {
    let (code, text) = post(r, path, &body.to_string());
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (code, value)
}

#[test]
fn gateway_lock_and_election() {
    let r = Rusd::start(&[]);
    for prefix in ["/v3", "/v3beta"] {
        // etcd's TestV3CurlCampaignNoTLS: campaign without a lease, proclaim with the answer.
        let (code, campaign) = post_json(
            &r,
            &format!("{prefix}/election/campaign"),
            json!({"name": "L2VsZWN0aW9uLXByZWZpeA==", "value": "djE="}),
        );
        assert_eq!(code, 200, "{campaign}");
        let leader = &campaign["leader"];
        assert_eq!(leader["name"], "L2VsZWN0aW9uLXByZWZpeA==");
        let lease: i64 = leader["lease"]
            .as_str()
            .expect("lease")
            .parse()
            .expect("id");
        assert!(lease > 0);
        let rev: i64 = leader["rev"].as_str().expect("rev").parse().expect("rev");
        assert_eq!(
            campaign["header"]["revision"].as_str(),
            Some(rev.to_string().as_str())
        );
        let (code, proclaim) = post(
            &r,
            &format!("{prefix}/election/proclaim"),
            &json!({"leader": leader, "value": "djI="}).to_string(),
        );
        assert_eq!(code, 200);
        assert!(proclaim.contains(r#""revision":"#), "{proclaim}");

        let (_, current) = post_json(
            &r,
            &format!("{prefix}/election/leader"),
            json!({"name": "L2VsZWN0aW9uLXByZWZpeA=="}),
        );
        assert_eq!(current["kv"]["value"], "djI=");
        assert_eq!(current["kv"]["key"], leader["key"]);

        // Observe streams `{"result": ...}` lines; the current leader comes first.
        let (code, observed) = {
            let endpoint = r.endpoint.clone();
            let body = json!({"name": "L2VsZWN0aW9uLXByZWZpeA=="}).to_string();
            let mut stream = TcpStream::connect(&endpoint).expect("connect");
            stream.set_read_timeout(Some(WAIT)).expect("timeout");
            let head = format!(
                "POST {prefix}/election/observe HTTP/1.1\r\nHost: {endpoint}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(head.as_bytes()).expect("write");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("}}}") {
                let n = stream.read(&mut buf).expect("read");
                assert!(n > 0, "observe ended");
                seen.extend_from_slice(&buf[..n]);
            }
            let text = String::from_utf8_lossy(&seen).into_owned();
            let code: u16 = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status");
            let start = text.find(r#"{"result""#).expect("a result line");
            let end = start + text[start..].find('\n').expect("newline");
            let value: Value = serde_json::from_str(&text[start..end]).expect("json line");
            (code, value)
        };
        assert_eq!(code, 200);
        assert_eq!(observed["result"]["kv"]["value"], "djI=");

        // etcd's TestV3CurlProclaimMissiongLeaderKeyNoTLS / ...ResignMissiongLeaderKeyNoTLS.
        let missing = r#"{"error":"\"leader\" field must be provided","message":"\"leader\" field must be provided","code":2}"#;
        let (code, body) = post(
            &r,
            &format!("{prefix}/election/proclaim"),
            &json!({"value": "djI="}).to_string(),
        );
        assert_eq!((code, body.as_str()), (500, missing));
        let (code, body) = post(&r, &format!("{prefix}/election/resign"), "{}");
        assert_eq!((code, body.as_str()), (500, missing));

        let (code, resigned) = post_json(
            &r,
            &format!("{prefix}/election/resign"),
            json!({ "leader": leader }),
        );
        assert_eq!(code, 200, "{resigned}");
        let (code, none) = post_json(
            &r,
            &format!("{prefix}/election/leader"),
            json!({"name": "L2VsZWN0aW9uLXByZWZpeA=="}),
        );
        assert_eq!(
            (code, none),
            (
                500,
                json!({"error": "election: no leader", "message": "election: no leader", "code": 2})
            )
        );

        // Lock and unlock.
        let (code, locked) = post_json(
            &r,
            &format!("{prefix}/lock/lock"),
            json!({"name": "bXk=", "lease": lease.to_string()}),
        );
        assert_eq!(code, 200, "{locked}");
        let key = locked["key"].as_str().expect("key").to_string();
        let (code, unlocked) =
            post_json(&r, &format!("{prefix}/lock/unlock"), json!({ "key": key }));
        assert_eq!(code, 200, "{unlocked}");
        assert!(unlocked["header"]["revision"].is_string());
        let (code, err) = post_json(
            &r,
            &format!("{prefix}/lock/lock"),
            json!({"name": "bXk=", "lease": "12345"}),
        );
        assert_eq!(
            (code, err),
            (
                500,
                json!({
                    "error": "etcdserver: requested lease not found",
                    "message": "etcdserver: requested lease not found",
                    "code": 2
                })
            )
        );
    }
}
