//! Leases through a real rusd process and the etcd-client crate: every Lease RPC, its error
//! paths, keep-alive streams, expiry through the log, and leases across restarts. Expected
//! values were checked against etcd 3.4.23.

mod common;

use std::time::{Duration, Instant};

use common::Rusd;
use etcd_client::{
    Client, Error, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
};

// gRPC status codes (the tests do not depend on tonic directly).
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const OUT_OF_RANGE: i32 = 11;

fn status(e: Error) -> (i32, String) {
    match e {
        Error::GRpcStatus(s) => (s.code() as i32, s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.expect("header").revision()
}

async fn put_with_lease(c: &mut Client, key: &str, lease: i64) -> i64 {
    let put = c
        .put(key, "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("put with lease");
    rev(put.header())
}

async fn exists(c: &mut Client, key: &str) -> bool {
    !c.get(key, None).await.expect("get").kvs().is_empty()
}

async fn ttl_of(c: &mut Client, id: i64) -> etcd_client::LeaseTimeToLiveResponse {
    c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("time to live")
}

#[tokio::test]
async fn grant_picks_ids_raises_min_ttl_and_keeps_the_revision() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let put = c.put("a", "1", None).await.unwrap();
    assert_eq!(rev(put.header()), 2);

    let g = c.lease_grant(10, None).await.unwrap();
    assert!(g.id() > 0, "server-chosen ids are positive: {}", g.id());
    assert_eq!(g.ttl(), 10);
    let h = g.header().unwrap();
    assert_eq!(
        h.revision(),
        2,
        "a grant does not change the store revision"
    );
    assert_ne!(h.cluster_id(), 0);
    assert_ne!(h.member_id(), 0);
    assert!(h.raft_term() > 0);

    let other = c.lease_grant(10, None).await.unwrap();
    assert_ne!(other.id(), g.id(), "ids are unique");

    // Below the minimum (ceil(1.5 x 1 s election timeout) = 2 s) the TTL is raised.
    for ttl in [0, 1, -5] {
        let g = c.lease_grant(ttl, None).await.unwrap();
        assert_eq!(g.ttl(), 2, "TTL {ttl}");
        let t = ttl_of(&mut c, g.id()).await;
        assert_eq!(t.granted_ttl(), 2);
    }

    // A chosen id is used as is.
    let g = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(100)))
        .await
        .unwrap();
    assert_eq!((g.id(), g.ttl()), (100, 30));
    assert_eq!(rev(g.header()), 2);
}

#[tokio::test]
async fn grant_errors() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;

    let e = c.lease_grant(9_000_000_001, None).await.unwrap_err();
    assert_eq!(
        status(e),
        (OUT_OF_RANGE, "etcdserver: too large lease TTL".into())
    );
    let max = c
        .lease_grant(9_000_000_000, Some(LeaseGrantOptions::new().with_id(7)))
        .await
        .unwrap();
    assert_eq!(max.ttl(), 9_000_000_000, "the maximum itself is accepted");
    let t = ttl_of(&mut c, 7).await;
    assert_eq!(t.granted_ttl(), 9_000_000_000);
    assert!(t.ttl() >= 8_999_999_998, "{}", t.ttl());

    let e = c
        .lease_grant(5, Some(LeaseGrantOptions::new().with_id(7)))
        .await
        .unwrap_err();
    assert_eq!(
        status(e),
        (
            FAILED_PRECONDITION,
            "etcdserver: lease already exists".into()
        )
    );
    // The failed grant left the lease as it was.
    assert_eq!(ttl_of(&mut c, 7).await.granted_ttl(), 9_000_000_000);
}

#[tokio::test]
async fn grant_is_refused_under_nospace() {
    // A quota far below the database size: the first grant raises NOSPACE and fails.
    let r = Rusd::start(&["--quota-backend-bytes", "1"]);
    let mut c = r.client().await;
    for _ in 0..2 {
        let e = c.lease_grant(10, None).await.unwrap_err();
        assert_eq!(
            status(e),
            (
                RESOURCE_EXHAUSTED,
                "etcdserver: mvcc: database space exceeded".into()
            )
        );
    }
    assert!(c.leases().await.unwrap().leases().is_empty());
}

#[tokio::test]
async fn revoke_deletes_every_key_in_one_revision() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let id = c.lease_grant(60, None).await.unwrap().id();
    let mut last = 0;
    for k in ["r/a", "r/b", "r/c", "r/d"] {
        last = put_with_lease(&mut c, k, id).await;
    }
    c.put("r/other", "stays", None).await.unwrap();
    let before = last + 1;

    let t = ttl_of(&mut c, id).await;
    let keys: Vec<&[u8]> = t.keys().iter().map(Vec::as_slice).collect();
    assert_eq!(keys, [&b"r/a"[..], b"r/b", b"r/c", b"r/d"]);

    let revoked = c.lease_revoke(id).await.unwrap();
    assert_eq!(
        rev(revoked.header()),
        before + 1,
        "one revision for all keys"
    );

    let now = c
        .get("r/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let left: Vec<&[u8]> = now.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(left, [&b"r/other"[..]]);
    assert_eq!(rev(now.header()), before + 1);
    let then = c
        .get(
            "r/",
            Some(GetOptions::new().with_prefix().with_revision(before)),
        )
        .await
        .unwrap();
    assert_eq!(
        then.kvs().len(),
        5,
        "all keys were there one revision earlier"
    );
    assert_eq!(ttl_of(&mut c, id).await.ttl(), -1);

    // Revoking a lease without keys does not change the revision.
    let empty = c.lease_grant(60, None).await.unwrap().id();
    let revoked = c.lease_revoke(empty).await.unwrap();
    assert_eq!(rev(revoked.header()), before + 1);
}

#[tokio::test]
async fn revoke_and_use_of_unknown_leases() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let e = c.lease_revoke(12345).await.unwrap_err();
    assert_eq!(
        status(e),
        (NOT_FOUND, "etcdserver: requested lease not found".into())
    );
    let id = c.lease_grant(60, None).await.unwrap().id();
    c.lease_revoke(id).await.unwrap();
    let e = c.lease_revoke(id).await.unwrap_err();
    assert_eq!(status(e).0, NOT_FOUND, "revoked twice");
    let e = c
        .put("k", "v", Some(PutOptions::new().with_lease(id)))
        .await
        .unwrap_err();
    assert_eq!(
        status(e),
        (NOT_FOUND, "etcdserver: requested lease not found".into())
    );
}

#[tokio::test]
async fn time_to_live_and_leases() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let long = c.lease_grant(100, None).await.unwrap().id();
    let short = c.lease_grant(10, None).await.unwrap().id();
    put_with_lease(&mut c, "t/2", short).await;
    let current = put_with_lease(&mut c, "t/1", short).await;

    let t = ttl_of(&mut c, short).await;
    assert_eq!(t.id(), short);
    assert_eq!(t.granted_ttl(), 10);
    // etcd truncates the remaining time: a fresh 10 s lease reports 9.
    assert!((8..=10).contains(&t.ttl()), "{}", t.ttl());
    let keys: Vec<&[u8]> = t.keys().iter().map(Vec::as_slice).collect();
    assert_eq!(keys, [&b"t/1"[..], b"t/2"]);
    assert_eq!(rev(t.header()), current);

    let without = c.lease_time_to_live(short, None).await.unwrap();
    assert!(without.keys().is_empty(), "keys only when asked");
    assert_eq!(without.granted_ttl(), 10);

    let unknown = c.lease_time_to_live(4242, None).await.unwrap();
    assert_eq!(unknown.id(), 4242);
    assert_eq!(unknown.ttl(), -1, "unknown lease: TTL -1, not an error");
    assert_eq!(unknown.granted_ttl(), 0);
    assert_eq!(rev(unknown.header()), current);

    let leases = c.leases().await.unwrap();
    let ids: Vec<i64> = leases.leases().iter().map(|l| l.id()).collect();
    assert_eq!(ids, [short, long], "soonest expiry first, as etcd");
    assert_eq!(rev(leases.header()), current);

    c.lease_revoke(long).await.unwrap();
    let ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(ids, [short]);
}

#[tokio::test]
async fn keep_alive_stream_renews_and_reports_gone_leases() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let id = c.lease_grant(2, None).await.unwrap().id();
    let current = put_with_lease(&mut c, "ka", id).await;

    // The first response is read by the client library (it fails on TTL <= 0).
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    assert_eq!(keeper.id(), id);
    // Renew for twice the TTL: the key must stay.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        keeper.keep_alive().await.unwrap();
        let resp = stream.message().await.unwrap().expect("a response");
        assert_eq!((resp.id(), resp.ttl()), (id, 2));
        assert_eq!(rev(resp.header()), current);
        assert!(resp.header().unwrap().member_id() != 0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(exists(&mut c, "ka").await, "kept alive past its TTL");
    let t = ttl_of(&mut c, id).await;
    assert!((1..=2).contains(&t.ttl()), "{}", t.ttl());

    // Revoked: the same stream answers TTL 0 (not an error) and stays usable.
    c.lease_revoke(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    let resp = stream.message().await.unwrap().expect("a response");
    assert_eq!((resp.id(), resp.ttl()), (id, 0));
    assert_eq!(rev(resp.header()), current + 1);
    let other = c.lease_grant(60, None).await.unwrap().id();
    let (mut keeper2, mut stream2) = c.lease_keep_alive(other).await.unwrap();
    keeper2.keep_alive().await.unwrap();
    assert_eq!(stream2.message().await.unwrap().unwrap().ttl(), 60);

    // An unknown lease: the library turns the server's TTL 0 into its own error.
    match c.lease_keep_alive(987_654).await {
        Err(Error::LeaseKeepAliveError(text)) => assert_eq!(text, "lease not found"),
        other => panic!("expected TTL 0 for an unknown lease, got {other:?}"),
    }
}

#[tokio::test]
async fn keep_alive_after_expiry_answers_zero_once_the_keys_are_gone() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let id = c.lease_grant(2, None).await.unwrap().id();
    put_with_lease(&mut c, "late", id).await;
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    keeper.keep_alive().await.unwrap();
    let resp = stream.message().await.unwrap().expect("a response");
    assert_eq!(resp.ttl(), 0, "an expired lease is not renewed");
    assert!(
        !exists(&mut c, "late").await,
        "TTL 0 is seen only after the revoke"
    );
}

#[tokio::test]
async fn expiry_deletes_keys_through_the_log_in_one_revision() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    c.put("e/plain", "stays", None).await.unwrap();
    let granted = Instant::now();
    let id = c.lease_grant(2, None).await.unwrap().id();
    let mut last = 0;
    for k in ["e/a", "e/b", "e/c"] {
        last = put_with_lease(&mut c, k, id).await;
    }
    // Poll until the keys go.
    let gone_after = loop {
        if !exists(&mut c, "e/a").await {
            break granted.elapsed();
        }
        assert!(
            granted.elapsed() < Duration::from_secs(5),
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        gone_after >= Duration::from_millis(1900) && gone_after < Duration::from_millis(3500),
        "a 2 s lease expired after {gone_after:?}"
    );
    let now = c
        .get("e/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let left: Vec<&[u8]> = now.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(left, [&b"e/plain"[..]]);
    assert_eq!(
        rev(now.header()),
        last + 1,
        "one revision deleted all three"
    );
    let before = c
        .get(
            "e/",
            Some(GetOptions::new().with_prefix().with_revision(last)),
        )
        .await
        .unwrap();
    assert_eq!(before.kvs().len(), 4);
    assert_eq!(ttl_of(&mut c, id).await.ttl(), -1);
    assert!(c.leases().await.unwrap().leases().is_empty());
    // The deletion is an ordinary revision: later writes continue after it.
    let put = c.put("e/next", "v", None).await.unwrap();
    assert_eq!(rev(put.header()), last + 2);
}

#[tokio::test]
async fn client_revokes_racing_expiry_are_harmless() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = c.lease_grant(2, None).await.unwrap().id();
        put_with_lease(&mut c, &format!("race/{i}"), id).await;
        ids.push(id);
    }
    tokio::time::sleep(Duration::from_millis(1950)).await;
    let revokes = ids.iter().map(|&id| {
        let mut c = c.clone();
        async move { c.lease_revoke(id).await }
    });
    for result in futures_join_all(revokes).await {
        if let Err(e) = result {
            assert_eq!(status(e).0, NOT_FOUND, "lost the race to expiry");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = c
            .get(
                "race/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap()
            .count();
        if left == 0 && c.leases().await.unwrap().leases().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{left} keys left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs futures concurrently (the tests do not depend on the `futures` crate).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    fs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn min_ttl_follows_the_election_timeout() {
    // ceil(1.5 x 3 s) = 5 s.
    let r = Rusd::start(&["--election-timeout", "3000", "--heartbeat-interval", "300"]);
    let mut c = r.client().await;
    assert_eq!(c.lease_grant(1, None).await.unwrap().ttl(), 5);
    assert_eq!(c.lease_grant(6, None).await.unwrap().ttl(), 6);
}

#[tokio::test]
async fn leases_survive_restarts_with_a_full_ttl() {
    let mut r = Rusd::start(&[]);
    let mut c = r.client().await;
    let id = c
        .lease_grant(20, Some(LeaseGrantOptions::new().with_id(77)))
        .await
        .unwrap()
        .id();
    put_with_lease(&mut c, "s/a", id).await;
    put_with_lease(&mut c, "s/b", id).await;
    let short = c.lease_grant(2, None).await.unwrap().id();
    put_with_lease(&mut c, "s/short", short).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(!exists(&mut c, "s/short").await);
    assert!(ttl_of(&mut c, id).await.ttl() <= 17);
    drop(c);

    r.kill9_and_restart();
    let mut c = r.client().await;
    let t = ttl_of(&mut c, id).await;
    assert_eq!(t.granted_ttl(), 20);
    assert!(
        t.ttl() >= 18,
        "TTL reset to full after a restart: {}",
        t.ttl()
    );
    assert_eq!(t.keys().len(), 2, "keys reattached from the store");
    assert_eq!(ttl_of(&mut c, short).await.ttl(), -1, "expired stays gone");
    let ids: Vec<i64> = c
        .leases()
        .await
        .unwrap()
        .leases()
        .iter()
        .map(|l| l.id())
        .collect();
    assert_eq!(ids, [id]);
    let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 20);
    let e = c
        .lease_grant(5, Some(LeaseGrantOptions::new().with_id(77)))
        .await
        .unwrap_err();
    assert_eq!(status(e).0, FAILED_PRECONDITION);
    drop((keeper, stream, c));

    // A lease that is due while the member is down gets a full TTL on start and then expires.
    let mut c = r.client().await;
    let soon = c.lease_grant(2, None).await.unwrap().id();
    put_with_lease(&mut c, "s/soon", soon).await;
    drop(c);
    assert!(r.terminate(), "clean shutdown");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    r.restart();
    let mut c = r.client().await;
    assert!(
        exists(&mut c, "s/soon").await,
        "full TTL again after the restart"
    );
    assert_eq!(ttl_of(&mut c, soon).await.granted_ttl(), 2);
    assert!(ttl_of(&mut c, id).await.ttl() >= 18);
    let deadline = Instant::now() + Duration::from_secs(5);
    while exists(&mut c, "s/soon").await {
        assert!(
            Instant::now() < deadline,
            "did not expire after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exists(&mut c, "s/a").await && exists(&mut c, "s/b").await);
}
