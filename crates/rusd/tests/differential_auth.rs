//! Differential test of auth: the same script of user, role, permission, token and
//! permission-checked requests against a real etcd 3.4.23 and rusd, over raw gRPC, comparing
//! each answer (gRPC code and message for errors, the message with its header dropped
//! otherwise; tokens compared by shape only, since they are random).

mod common;
mod real_etcd;

use std::fmt::Debug;

use common::Rusd;
use real_etcd::Etcd;
use rusd_proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use rusd_proto::etcdserverpb as pb;
use tonic::transport::Channel;

/// One server's clients.
struct Server {
    ch: Channel,
}

/// What an answer looks like once made comparable.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(String),
    Err(tonic::Code, String),
}

impl Server {
    async fn connect(endpoint: &str) -> Self {
        let ch = Channel::from_shared(format!("http://{endpoint}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        Self { ch }
    }

    fn auth(&self) -> pb::auth_client::AuthClient<Channel> {
        pb::auth_client::AuthClient::new(self.ch.clone())
    }

    fn kv(&self) -> pb::kv_client::KvClient<Channel> {
        pb::kv_client::KvClient::new(self.ch.clone())
    }
}

/// A request with the token (if any) in its metadata.
fn req<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("token", t.parse().expect("ascii token"));
    }
    r
}

/// `Debug` of a response without its header (revision, ids and term legitimately differ).
fn outcome<T: Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
    match r {
        Ok(resp) => {
            let text = format!("{:?}", resp.into_inner());
            Outcome::Ok(strip_header(&text))
        }
        Err(s) => Outcome::Err(s.code(), s.message().to_string()),
    }
}

fn strip_header(text: &str) -> String {
    const START: &str = "header: Some(ResponseHeader {";
    let Some(a) = text.find(START) else {
        return text.to_string();
    };
    let Some(len) = text[a..].find("})") else {
        return text.to_string();
    };
    let rest = &text[a + len + 2..];
    let rest = rest.strip_prefix(", ").unwrap_or(rest);
    format!("{}{rest}", &text[..a])
}

struct Pair {
    e: Server,
    r: Server,
    /// Tokens on each side, by user.
    tokens: Vec<(String, String, String)>,
    step: usize,
}

macro_rules! both {
    ($pair:expr, $what:expr, |$s:ident, $tok:ident| $call:expr) => {{
        let what = $what;
        let (etcd_token, rusd_token) = $pair.tokens_of(&what.1);
        let e = {
            let $s = &$pair.e;
            let $tok = etcd_token.as_deref();
            outcome($call.await)
        };
        let r = {
            let $s = &$pair.r;
            let $tok = rusd_token.as_deref();
            outcome($call.await)
        };
        $pair.step += 1;
        assert_eq!(
            e, r,
            "step {} {} (as {:?}): etcd vs rusd",
            $pair.step, what.0, what.1
        );
        if std::env::var_os("RUSD_DIFF_SHOW").is_some() {
            eprintln!("step {} {} (as {:?}): {e:?}", $pair.step, what.0, what.1);
        }
        e
    }};
}

impl Pair {
    fn tokens_of(&self, user: &Option<&str>) -> (Option<String>, Option<String>) {
        match user {
            None => (None, None),
            Some(u) => self
                .tokens
                .iter()
                .find(|(name, _, _)| name == u)
                .map(|(_, e, r)| (Some(e.clone()), Some(r.clone())))
                .unwrap_or((None, None)),
        }
    }

    /// Authenticates `user` on both; both must agree, and tokens are kept on success.
    async fn login(&mut self, user: &str, password: &str) {
        let msg = pb::AuthenticateRequest {
            name: user.into(),
            password: password.into(),
        };
        let e = self.e.auth().authenticate(msg.clone()).await;
        let r = self.r.auth().authenticate(msg).await;
        self.step += 1;
        match (e, r) {
            (Ok(e), Ok(r)) => {
                let (e, r) = (e.into_inner().token, r.into_inner().token);
                // etcd's simple token: 16 letters, a dot, the log index.
                let shape = |t: &str| t.split_once('.').map(|(a, _)| a.len());
                assert_eq!(shape(&e), shape(&r), "token shapes {e} / {r}");
                self.tokens.retain(|(n, _, _)| n != user);
                self.tokens.push((user.to_string(), e, r));
            }
            (Err(e), Err(r)) => assert_eq!(
                (e.code(), e.message()),
                (r.code(), r.message()),
                "step {} login {user}",
                self.step
            ),
            (e, r) => panic!("step {} login {user}: etcd {e:?} / rusd {r:?}", self.step),
        }
    }
}

fn perm(t: PermType, key: &str, end: &[u8]) -> Permission {
    Permission {
        perm_type: t as i32,
        key: key.as_bytes().to_vec(),
        range_end: end.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_script_matches_etcd() {
    if !real_etcd::available() {
        eprintln!("skipped: no etcd");
        return;
    }
    let etcd_proc = tokio::task::spawn_blocking(|| Etcd::start(&[]));
    let rusd_proc = tokio::task::spawn_blocking(|| Rusd::start(&[]));
    let (etcd_proc, rusd_proc) = (
        etcd_proc.await.expect("etcd"),
        rusd_proc.await.expect("rusd"),
    );
    let mut p = Pair {
        e: Server::connect(&etcd_proc.endpoint).await,
        r: Server::connect(&rusd_proc.endpoint).await,
        tokens: Vec::new(),
        step: 0,
    };
    let admin: Option<&str> = None;

    // Management with auth off, errors included.
    both!(p, ("enable without root", admin), |s, t| s
        .auth()
        .auth_enable(req(pb::AuthEnableRequest {}, t)));
    for name in ["root", "u", "nopass", ""] {
        let options = (name == "nopass").then_some(UserAddOptions { no_password: true });
        both!(p, ("user add", admin), |s, t| s.auth().user_add(req(
            pb::AuthUserAddRequest {
                name: name.into(),
                password: format!("{name}pw"),
                options,
                ..Default::default()
            },
            t
        )));
    }
    both!(p, ("user add again", admin), |s, t| s.auth().user_add(req(
        pb::AuthUserAddRequest {
            name: "u".into(),
            password: "x".into(),
            ..Default::default()
        },
        t
    )));
    both!(p, ("enable without root role", admin), |s, t| s
        .auth()
        .auth_enable(req(pb::AuthEnableRequest {}, t)));
    for name in ["r", "w", "", "r"] {
        both!(p, ("role add", admin), |s, t| s.auth().role_add(req(
            pb::AuthRoleAddRequest { name: name.into() },
            t
        )));
    }
    for (role, perm) in [
        ("r", perm(PermType::Read, "a", b"c")),
        ("r", perm(PermType::Readwrite, "k", b"")),
        ("r", perm(PermType::Read, "a", b"c")),
        ("w", perm(PermType::Write, "a", b"")),
        ("w", perm(PermType::Readwrite, "z", b"\0")),
        ("missing", perm(PermType::Read, "a", b"")),
    ] {
        both!(p, ("grant permission", admin), |s, t| s
            .auth()
            .role_grant_permission(req(
                pb::AuthRoleGrantPermissionRequest {
                    name: role.into(),
                    perm: Some(perm.clone()),
                },
                t
            )));
    }
    for (user, role) in [
        ("root", "root"),
        ("u", "r"),
        ("u", "w"),
        ("u", "r"),
        ("u", "missing"),
        ("nobody", "r"),
    ] {
        both!(p, ("grant role", admin), |s, t| s.auth().user_grant_role(
            req(
                pb::AuthUserGrantRoleRequest {
                    user: user.into(),
                    role: role.into(),
                },
                t
            )
        ));
    }
    both!(p, ("revoke permission", admin), |s, t| s
        .auth()
        .role_revoke_permission(req(
            pb::AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: b"nope".to_vec(),
                range_end: Vec::new(),
            },
            t
        )));
    for name in ["r", "w", "root", "missing"] {
        both!(p, ("role get", admin), |s, t| s.auth().role_get(req(
            pb::AuthRoleGetRequest { role: name.into() },
            t
        )));
    }
    for name in ["u", "root", "missing"] {
        both!(p, ("user get", admin), |s, t| s.auth().user_get(req(
            pb::AuthUserGetRequest { name: name.into() },
            t
        )));
    }
    both!(p, ("user list", admin), |s, t| s
        .auth()
        .user_list(req(pb::AuthUserListRequest {}, t)));
    both!(p, ("role list", admin), |s, t| s
        .auth()
        .role_list(req(pb::AuthRoleListRequest {}, t)));
    p.login("root", "rootpw").await;

    // Enable, then everything as users.
    both!(p, ("enable", admin), |s, t| s
        .auth()
        .auth_enable(req(pb::AuthEnableRequest {}, t)));
    both!(p, ("enable again", admin), |s, t| s
        .auth()
        .auth_enable(req(pb::AuthEnableRequest {}, t)));
    p.login("u", "wrong").await;
    p.login("missing", "x").await;
    p.login("nopass", "").await;
    p.login("root", "rootpw").await;
    p.login("u", "upw").await;
    let (root, u) = (Some("root"), Some("u"));
    for (who, key, end) in [
        (admin, "a", ""),
        (u, "a", ""),
        (u, "b", "c"),
        (u, "a", "d"),
        (u, "k", ""),
        (u, "z", "\0"),
        (u, "zz", ""),
        (root, "q", ""),
    ] {
        both!(p, ("range", who), |s, t| s.kv().range(req(
            pb::RangeRequest {
                key: key.into(),
                range_end: end.into(),
                serializable: true,
                ..Default::default()
            },
            t
        )));
        both!(p, ("put", who), |s, t| s.kv().put(req(
            pb::PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                prev_kv: true,
                ..Default::default()
            },
            t
        )));
        both!(p, ("delete", who), |s, t| s.kv().delete_range(req(
            pb::DeleteRangeRequest {
                key: key.into(),
                range_end: end.into(),
                ..Default::default()
            },
            t
        )));
    }
    both!(p, ("txn", u), |s, t| s.kv().txn(req(
        pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"k".to_vec(),
                target: pb::compare::CompareTarget::Version as i32,
                target_union: Some(pb::compare::TargetUnion::Version(0)),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: b"k".to_vec(),
                    value: b"t".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                    key: b"q".to_vec(),
                    ..Default::default()
                })),
            }],
        },
        t
    )));
    for who in [u, root] {
        both!(p, ("user list", who), |s, t| s
            .auth()
            .user_list(req(pb::AuthUserListRequest {}, t)));
        both!(p, ("user get self", who), |s, t| s
            .auth()
            .user_get(req(pb::AuthUserGetRequest { name: "u".into() }, t)));
        both!(p, ("role get r", who), |s, t| s
            .auth()
            .role_get(req(pb::AuthRoleGetRequest { role: "r".into() }, t)));
        both!(p, ("role get root", who), |s, t| s.auth().role_get(req(
            pb::AuthRoleGetRequest {
                role: "root".into()
            },
            t
        )));
    }
    for who in [u, root] {
        for name in ["", "v"] {
            both!(p, ("user add", who), |s, t| s.auth().user_add(req(
                pb::AuthUserAddRequest {
                    name: name.into(),
                    password: "pw".into(),
                    ..Default::default()
                },
                t
            )));
        }
        for name in ["nopass", "missing"] {
            both!(p, ("change password", who), |s, t| s
                .auth()
                .user_change_password(req(
                    pb::AuthUserChangePasswordRequest {
                        name: name.into(),
                        password: "pw2".into(),
                        ..Default::default()
                    },
                    t
                )));
        }
    }
    for who in [u, root] {
        both!(p, ("delete root", who), |s, t| s.auth().user_delete(req(
            pb::AuthUserDeleteRequest {
                name: "root".into()
            },
            t
        )));
        both!(p, ("revoke root from root", who), |s, t| s
            .auth()
            .user_revoke_role(req(
                pb::AuthUserRevokeRoleRequest {
                    name: "root".into(),
                    role: "root".into(),
                },
                t
            )));
        both!(p, ("delete role root", who), |s, t| s.auth().role_delete(
            req(
                pb::AuthRoleDeleteRequest {
                    role: "root".into()
                },
                t
            )
        ));
    }
    both!(p, ("revoke missing role", root), |s, t| s
        .auth()
        .user_revoke_role(req(
            pb::AuthUserRevokeRoleRequest {
                name: "u".into(),
                role: "root".into(),
            },
            t
        )));
    // A deleted role leaves its users; the user's token stays valid, its rights shrink.
    both!(p, ("delete role w", root), |s, t| s.auth().role_delete(
        req(pb::AuthRoleDeleteRequest { role: "w".into() }, t)
    ));
    both!(p, ("user get after", root), |s, t| s
        .auth()
        .user_get(req(pb::AuthUserGetRequest { name: "u".into() }, t)));
    both!(p, ("put z after", u), |s, t| s.kv().put(req(
        pb::PutRequest {
            key: b"z".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        },
        t
    )));
    // A changed password kills the user's tokens.
    both!(p, ("change password", root), |s, t| s
        .auth()
        .user_change_password(req(
            pb::AuthUserChangePasswordRequest {
                name: "u".into(),
                password: "new".into(),
                ..Default::default()
            },
            t
        )));
    both!(p, ("range with a dead token", u), |s, t| s.kv().range(req(
        pb::RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        },
        t
    )));
    p.login("u", "new").await;
    both!(p, ("range with the new token", u), |s, t| s.kv().range(
        req(
            pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            },
            t
        )
    ));
    both!(p, ("disable as u", u), |s, t| s
        .auth()
        .auth_disable(req(pb::AuthDisableRequest {}, t)));
    both!(p, ("disable", root), |s, t| s
        .auth()
        .auth_disable(req(pb::AuthDisableRequest {}, t)));
    both!(p, ("put after disable", admin), |s, t| s.kv().put(req(
        pb::PutRequest {
            key: b"zz".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        },
        t
    )));
    p.login("u", "new").await;
}
