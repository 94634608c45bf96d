//! Authentication and authorization through a real rusd process: users, roles and
//! permissions with etcd's errors, tokens, the root role's privileges, watch refusals, lease
//! revoke checks, persistence across a restart, and JWT tokens.

mod common;

use common::Rusd;
use etcd_client::{
    Client, ConnectOptions, DeleteOptions, GetOptions, Permission, PutOptions, Txn, TxnOp,
};
use rusd_proto::etcdserverpb as pb;

fn text<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> String {
    r.expect_err("expected an error").to_string()
}

/// `msg` with `token` in its metadata, as clientv3 sends it.
fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("token", token.parse().expect("ascii token"));
    req
}

/// A put of `v` at `key`.
fn put_v(key: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

/// A one-key range.
fn get_key(key: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

/// A token for `name` from Authenticate on the member at `url` (raw gRPC).
async fn token_of(url: String, name: &str, password: &str) -> String {
    pb::auth_client::AuthClient::connect(url)
        .await
        .expect("connect")
        .authenticate(pb::AuthenticateRequest {
            name: name.into(),
            password: password.into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .token
}

async fn login(r: &Rusd, user: &str, password: &str) -> Result<Client, etcd_client::Error> {
    Client::connect(
        [r.endpoint.as_str()],
        Some(ConnectOptions::new().with_user(user, password)),
    )
    .await
}

/// root (with the root role), and user `u` with role `r`: read-write on `[a, c)`, read on `x`.
async fn set_up(r: &Rusd) {
    let mut c = r.client().await;
    c.user_add("root", "rootpw", None).await.expect("add root");
    c.user_grant_role("root", "root").await.expect("grant root");
    c.user_add("u", "upw", None).await.expect("add u");
    c.role_add("r").await.expect("add r");
    c.role_grant_permission("r", Permission::read_write("a").with_range_end("c"))
        .await
        .expect("perm");
    c.role_grant_permission("r", Permission::read("x"))
        .await
        .expect("perm");
    c.user_grant_role("u", "r").await.expect("grant r");
    c.auth_enable().await.expect("enable");
}

#[tokio::test]
async fn permissions_are_checked_on_every_kind_of_request() {
    let r = Rusd::start(&[]);
    set_up(&r).await;
    let mut anon = r.client().await;
    assert!(text(anon.put("a", "v", None).await).contains("etcdserver: user name is empty"));
    assert!(text(anon.get("a", None).await).contains("etcdserver: user name is empty"));
    let bad = login(&r, "u", "wrong")
        .await
        .err()
        .expect("wrong password")
        .to_string();
    assert!(
        bad.contains("etcdserver: authentication failed, invalid user ID or password"),
        "{bad}"
    );

    let mut root = login(&r, "root", "rootpw").await.expect("root");
    root.put("x", "from-root", None)
        .await
        .expect("root writes anywhere");
    let mut u = login(&r, "u", "upw").await.expect("u");
    u.put("b", "1", None).await.expect("write in [a, c)");
    let denied = "etcdserver: permission denied";
    assert!(text(u.put("x", "v", None).await).contains(denied));
    assert!(text(u.put("c", "v", None).await).contains(denied));
    assert_eq!(
        u.get("x", None).await.expect("read x").kvs()[0].value(),
        b"from-root"
    );
    u.get("a", Some(GetOptions::new().with_range("c")))
        .await
        .expect("read [a, c)");
    assert!(text(u.get("a", Some(GetOptions::new().with_range("d"))).await).contains(denied));
    u.get("a", Some(GetOptions::new().with_prefix()))
        .await
        .expect("prefix a is [a, b)");
    assert!(text(u.get("b", Some(GetOptions::new().with_from_key())).await).contains(denied));
    u.put("b", "2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put with prev_kv");
    assert!(text(
        u.delete("a", Some(DeleteOptions::new().with_range("z")))
            .await
    )
    .contains(denied));
    // Txn: compares need read, both branches are checked.
    let ok = Txn::new()
        .when([etcd_client::Compare::value(
            "x",
            etcd_client::CompareOp::Equal,
            "from-root",
        )])
        .and_then([TxnOp::put("b", "3", None)]);
    assert!(u.txn(ok).await.expect("txn").succeeded());
    let other_branch = Txn::new()
        .and_then([TxnOp::put("b", "4", None)])
        .or_else([TxnOp::put("z", "4", None)]);
    assert!(text(u.txn(other_branch).await).contains(denied));

    // Admin-only operations.
    assert!(text(u.user_list().await).contains(denied));
    assert!(text(u.defragment().await).contains(denied));
    assert!(text(u.user_add("v", "pw", None).await).contains(denied));
    assert_eq!(u.user_get("u").await.expect("own user").roles(), ["r"]);
    assert_eq!(
        u.role_get("r").await.expect("own role").permissions().len(),
        2
    );
    assert!(text(u.role_get("root").await).contains(denied));
    root.defragment().await.expect("root defragments");
    assert_eq!(
        root.user_list().await.expect("users").users(),
        ["root", "u"]
    );
    assert!(text(root.user_delete("root").await).contains("etcdserver: invalid auth management"));
    assert!(text(root.role_delete("root").await).contains("etcdserver: invalid auth management"));

    // Leases: revoking needs write on every attached key.
    let lease = root.lease_grant(60, None).await.expect("grant").id();
    root.put("z", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("attach");
    assert!(text(u.lease_revoke(lease).await).contains(denied));
    let own = u.lease_grant(60, None).await.expect("grant").id();
    u.put("a1", "v", Some(PutOptions::new().with_lease(own)))
        .await
        .expect("attach own");
    u.lease_revoke(own).await.expect("revoke own");
    assert!(u.get("a1", None).await.expect("get").kvs().is_empty());

    // A permission granted later applies at once to the user's existing token.
    assert!(text(u.put("c", "v", None).await).contains(denied));
    root.role_grant_permission("r", Permission::write("c"))
        .await
        .expect("grant c");
    u.put("c", "v", None).await.expect("now allowed");

    // Lock and Election run their KV steps as the caller.
    root.lock("zz-lock", None).await.expect("root locks");
    assert!(text(u.lock("zz-lock2", None).await).contains(denied));
    u.lock("b-lock", None).await.expect("u locks inside [a, c)");

    // Disabling turns every check off.
    root.auth_disable().await.expect("disable");
    anon.put("z", "free", None).await.expect("no auth");
}

#[tokio::test]
async fn watches_of_forbidden_ranges_are_refused_and_tokens_die_with_their_user() {
    let r = Rusd::start(&[]);
    set_up(&r).await;
    let token = token_of(r.url(), "u", "upw").await;
    assert!(token.contains('.'), "simple token {token}");

    let mut w = pb::watch_client::WatchClient::connect(r.url())
        .await
        .expect("connect");
    let create = |key: &str| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.into(),
                ..Default::default()
            },
        )),
    };
    let req = with_token(tokio_stream::iter([create("z"), create("b")]), &token);
    let mut responses = w.watch(req).await.expect("watch").into_inner();
    let refused = responses.message().await.expect("recv").expect("response");
    assert!(refused.created && refused.canceled, "{refused:?}");
    assert_eq!(refused.cancel_reason, "etcdserver: permission denied");
    let allowed = responses.message().await.expect("recv").expect("response");
    assert!(allowed.created && !allowed.canceled, "{allowed:?}");

    let mut kv = pb::kv_client::KvClient::connect(r.url())
        .await
        .expect("connect");
    let get = |token: &str| with_token(get_key("b"), token);
    kv.range(get(&token)).await.expect("valid token");
    let bogus = kv.range(get("nope")).await.expect_err("bogus token");
    assert_eq!(bogus.code(), tonic::Code::Unauthenticated);
    assert_eq!(bogus.message(), "etcdserver: invalid auth token");

    let mut root = login(&r, "root", "rootpw").await.expect("root");
    root.user_change_password("u", "new").await.expect("change");
    let dead = kv.range(get(&token)).await.expect_err("token died");
    assert_eq!(dead.message(), "etcdserver: invalid auth token");
    login(&r, "u", "new").await.expect("new password");
    assert!(login(&r, "u", "upw").await.is_err());
}

#[tokio::test]
async fn the_auth_store_survives_a_restart() {
    let mut r = Rusd::start(&[]);
    set_up(&r).await;
    r.kill9_and_restart();
    let mut anon = r.client().await;
    assert!(text(anon.put("a", "v", None).await).contains("etcdserver: user name is empty"));
    let mut u = login(&r, "u", "upw").await.expect("u after restart");
    u.put("a", "v", None).await.expect("still allowed");
    assert!(text(u.put("x", "v", None).await).contains("etcdserver: permission denied"));
}

#[tokio::test]
async fn jwt_tokens_carry_the_user_and_auth_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let (key_path, cert_path) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    let flag = format!(
        "--auth-token=jwt,pub-key={},priv-key={},sign-method=ES256,ttl=1m",
        cert_path.display(),
        key_path.display()
    );
    let r = Rusd::start(&[flag.as_str()]);
    set_up(&r).await;
    let token = token_of(r.url(), "u", "upw").await;
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    let mut kv = pb::kv_client::KvClient::connect(r.url())
        .await
        .expect("connect");
    let put = |key: &str, token: &str| with_token(put_v(key), token);
    kv.put(put("a", &token)).await.expect("allowed");
    let denied = kv.put(put("x", &token)).await.expect_err("denied");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // A change of the store makes the token's revision stale: the client must log in again.
    let mut root = login(&r, "root", "rootpw").await.expect("root");
    root.role_add("another").await.expect("role");
    let stale = kv.put(put("a", &token)).await.expect_err("stale");
    assert_eq!(stale.message(), "etcdserver: revision of auth store is old");
    let tampered = format!("{token}x");
    let bad = kv
        .put(put("a", &tampered))
        .await
        .expect_err("bad signature");
    assert_eq!(bad.message(), "etcdserver: invalid auth token");
}

/// In a three-member cluster: auth changes made through a follower reach every member, a simple
/// token issued by one member works on another, and a write sent to a follower is checked
/// when the leader's entry is applied.
#[tokio::test]
async fn tokens_and_permissions_hold_on_every_member_of_a_cluster() {
    let cluster = common::cluster::Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut admin = cluster.members[follower].client().await;
    admin.user_add("root", "rootpw", None).await.expect("root");
    admin.user_grant_role("root", "root").await.expect("grant");
    admin.user_add("u", "upw", None).await.expect("u");
    admin.role_add("r").await.expect("role");
    admin
        .role_grant_permission("r", Permission::read_write("a").with_range_end("c"))
        .await
        .expect("perm");
    admin.user_grant_role("u", "r").await.expect("grant r");
    admin.auth_enable().await.expect("enable");

    let url = |i: usize| format!("http://{}", cluster.members[i].endpoint());
    let token = token_of(url(follower), "u", "upw").await;
    for i in [other, leader, follower] {
        let mut kv = pb::kv_client::KvClient::connect(url(i))
            .await
            .expect("connect");
        kv.put(with_token(put_v("b"), &token))
            .await
            .expect("allowed on every member");
        let denied = kv
            .put(with_token(put_v("x"), &token))
            .await
            .expect_err("denied");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "member {i}");
        let resp = kv
            .range(with_token(get_key("b"), &token))
            .await
            .expect("linearizable read")
            .into_inner();
        assert_eq!(resp.kvs.len(), 1, "member {i}");
    }
}
