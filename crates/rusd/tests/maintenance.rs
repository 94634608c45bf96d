//! Maintenance, Cluster and Auth through a real rusd process: status, alarms and the space
//! quota, defragment, hashes, snapshots (etcd-client and the real `etcdctl`), members,
//! move-leader and the auth answers of an etcd with auth disabled (auth on: tests/auth.rs).

mod common;

use std::process::Command;

use common::Rusd;
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, GetOptions, Txn, TxnOp};
use rusd_proto::etcdserverpb as pb;
use sha2::{Digest, Sha256};

const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";

fn text<T: std::fmt::Debug>(r: Result<T, etcd_client::Error>) -> String {
    r.expect_err("expected an error").to_string()
}

async fn raw_maintenance(
    r: &Rusd,
) -> pb::maintenance_client::MaintenanceClient<tonic::transport::Channel> {
    pb::maintenance_client::MaintenanceClient::connect(r.url())
        .await
        .expect("connect")
}

async fn raw_auth(r: &Rusd) -> pb::auth_client::AuthClient<tonic::transport::Channel> {
    pb::auth_client::AuthClient::connect(r.url())
        .await
        .expect("connect")
}

async fn member_id(c: &mut Client) -> u64 {
    c.status()
        .await
        .expect("status")
        .header()
        .expect("header")
        .member_id()
}

async fn alarms(c: &mut Client) -> Vec<(u64, AlarmType)> {
    c.alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm list")
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect()
}

#[tokio::test]
async fn status_reports_version_sizes_and_raft_state() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    c.put("k", "v", None).await.unwrap();
    let s = c.status().await.unwrap();
    let h = s.header().unwrap();
    assert_eq!(h.revision(), 2);
    assert_ne!(h.cluster_id(), 0);
    assert_eq!(s.version(), "3.5.17");
    assert_eq!(s.leader(), h.member_id());
    assert!(s.raft_term() >= 1);
    assert_eq!(s.raft_term(), h.raft_term());
    assert!(s.raft_applied_index() >= 2, "{s:?}");
    assert!(s.raft_index() >= s.raft_applied_index(), "{s:?}");
    assert!(s.db_size() > 0);
    assert!(s.raft_used_db_size() > 0);
    assert!(s.raft_used_db_size() <= s.db_size(), "{s:?}");
    assert!(s.errors().is_empty(), "{:?}", s.errors());
    assert!(!s.is_learner());
    assert_eq!(s.db_size_quota(), 2 << 30);
    // The index moves with every applied entry.
    c.put("k", "v2", None).await.unwrap();
    let later = c.status().await.unwrap();
    assert!(later.raft_applied_index() > s.raft_applied_index());
}

#[tokio::test]
async fn alarms_activate_list_and_deactivate_through_the_log() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let me = member_id(&mut c).await;
    assert!(alarms(&mut c).await.is_empty());

    let mut on_me = AlarmOptions::new();
    on_me.with_member(me);
    let resp = c
        .alarm(AlarmAction::Activate, AlarmType::Nospace, Some(on_me))
        .await
        .unwrap();
    assert_eq!(resp.alarms().len(), 1);
    // etcd 3.5 answers Alarm with a header (3.4 did not).
    assert_eq!(resp.header().unwrap().member_id(), me);
    assert_eq!(alarms(&mut c).await, vec![(me, AlarmType::Nospace)]);
    let s = c.status().await.unwrap();
    assert_eq!(s.errors(), [format!("memberID:{me} alarm:NOSPACE ")]);
    assert!(text(c.put("k", "v", None).await).contains(NOSPACE));
    // GET ignores the member id, as etcd does.
    let mut other = AlarmOptions::new();
    other.with_member(12345);
    let listed = c
        .alarm(AlarmAction::Get, AlarmType::None, Some(other))
        .await
        .unwrap();
    assert_eq!(listed.alarms().len(), 1);

    // Member 0 and type NONE deactivate everything.
    let gone = c
        .alarm(AlarmAction::Deactivate, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(gone.alarms().len(), 1);
    assert!(alarms(&mut c).await.is_empty());
    c.put("k", "v", None).await.unwrap();

    // CORRUPT blocks reads too, and survives a restart (it is persisted).
    let mut on_me = AlarmOptions::new();
    on_me.with_member(me);
    c.alarm(AlarmAction::Activate, AlarmType::Corrupt, Some(on_me))
        .await
        .unwrap();
    assert!(text(c.get("k", None).await).contains("etcdserver: corrupt cluster"));
    let mut r = r;
    assert!(r.terminate());
    r.restart();
    let mut c = r.client().await;
    assert_eq!(alarms(&mut c).await, vec![(me, AlarmType::Corrupt)]);
    let mut on_me = AlarmOptions::new();
    on_me.with_member(me);
    c.alarm(AlarmAction::Deactivate, AlarmType::Corrupt, Some(on_me))
        .await
        .unwrap();
    assert_eq!(c.get("k", None).await.unwrap().kvs()[0].value(), b"v");
}

/// The fresh database is ~72 KiB; a 1 MiB quota fills after roughly fifty 10 KiB puts.
#[tokio::test]
async fn nospace_caps_writes_until_compact_defrag_and_disarm() {
    let r = Rusd::start(&["--quota-backend-bytes", "1048576"]);
    let mut c = r.client().await;
    let value = "x".repeat(10 * 1024);
    let mut written = 0;
    let err = loop {
        match c
            .put(format!("key{written:04}"), value.as_str(), None)
            .await
        {
            Ok(_) => written += 1,
            Err(e) => break e.to_string(),
        }
        assert!(written < 1000, "the quota never tripped");
    };
    assert!(err.contains(NOSPACE), "{err}");
    assert!(written > 0);
    let me = member_id(&mut c).await;
    assert_eq!(alarms(&mut c).await, vec![(me, AlarmType::Nospace)]);
    let status = c.status().await.unwrap();
    assert_eq!(status.errors(), [format!("memberID:{me} alarm:NOSPACE ")]);

    // Capped: puts, put-txns and lease grants fail; reads, deletes, read-only txns and
    // compaction work.
    assert!(text(c.put("small", "v", None).await).contains(NOSPACE));
    let txn = Txn::new().and_then([TxnOp::put("small", "v", None)]);
    assert!(text(c.txn(txn).await).contains(NOSPACE));
    assert!(text(c.lease_grant(60, None).await).contains(NOSPACE));
    let got = c
        .get(
            "key",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(got.count(), written);
    let txn = Txn::new().and_then([TxnOp::get("key0000", None)]);
    assert!(c.txn(txn).await.unwrap().succeeded());
    let deleted = c
        .delete("key", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(deleted.deleted(), written);
    let rev = deleted.header().unwrap().revision();
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    c.defragment().await.unwrap();
    // The alarm stays until disarmed, as in etcd.
    assert!(text(c.put("small", "v", None).await).contains(NOSPACE));
    c.alarm(AlarmAction::Deactivate, AlarmType::Nospace, None)
        .await
        .unwrap();
    assert!(alarms(&mut c).await.is_empty());
    c.put("small", "v", None).await.unwrap();
    c.lease_grant(60, None).await.unwrap();
    assert!(c.status().await.unwrap().errors().is_empty());
}

#[tokio::test]
async fn defragment_runs_while_writes_continue_and_keeps_the_hashes() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let value = "v".repeat(512);
    for i in 0..500 {
        c.put(format!("old{i:04}"), value.as_str(), None)
            .await
            .unwrap();
    }
    c.delete("old", Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let rev = c.status().await.unwrap().header().unwrap().revision();
    c.compact(
        rev,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();

    let mut writer = r.client().await;
    let writes = tokio::spawn(async move {
        for i in 0..600 {
            writer
                .put(format!("new{i:04}"), format!("{i}"), None)
                .await
                .unwrap_or_else(|e| panic!("put {i} during defragment: {e}"));
        }
    });
    let before = c.status().await.unwrap().db_size();
    for _ in 0..3 {
        let resp = c.defragment().await.unwrap();
        // etcd answers Defragment with an empty message.
        assert!(resp.header().is_none());
    }
    writes.await.unwrap();
    let got = c
        .get("new", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(got.kvs().len(), 600);
    assert_eq!(got.kvs()[599].value(), b"599");
    let after = c.status().await.unwrap().db_size();
    assert!(
        after < before,
        "defragment did not shrink {before} -> {after}"
    );

    // Quiet now: hashes are the same across another defragment.
    let kv = c.hash_kv(0).await.unwrap();
    let all = c.hash().await.unwrap();
    c.defragment().await.unwrap();
    assert_eq!(c.hash_kv(0).await.unwrap().hash(), kv.hash());
    assert_eq!(c.hash().await.unwrap().hash(), all.hash());
}

#[tokio::test]
async fn hash_kv_by_revision_with_compacted_and_future_errors() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    for i in 0..10 {
        c.put("k", format!("{i}"), None).await.unwrap();
    }
    // Revisions 2..=11.
    let h = c.hash_kv(0).await.unwrap();
    assert_eq!(h.header().unwrap().revision(), 11);
    assert_eq!(h.hash_revision(), 11);
    assert_eq!(h.compact_version(), -1);
    let at5 = c.hash_kv(5).await.unwrap();
    assert_eq!(at5.hash_revision(), 5);
    assert_eq!(at5.header().unwrap().revision(), 11);
    assert_ne!(at5.hash(), h.hash());
    // History up to 5 does not change with later writes.
    c.put("k", "later", None).await.unwrap();
    assert_eq!(c.hash_kv(5).await.unwrap().hash(), at5.hash());

    let err = text(c.hash_kv(100).await);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );
    c.compact(
        8,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
    let err = text(c.hash_kv(5).await);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    let after = c.hash_kv(0).await.unwrap();
    assert_eq!(after.compact_version(), 8);
    let hash = c.hash().await.unwrap();
    assert_eq!(hash.header().unwrap().revision(), 12);
}

/// Collects a whole snapshot stream: the messages and the bytes.
async fn fetch_snapshot(c: &mut Client) -> (Vec<(u64, usize, bool)>, Vec<u8>) {
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut msgs = Vec::new();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.expect("snapshot message") {
        msgs.push((m.remaining_bytes(), m.blob().len(), m.header().is_some()));
        bytes.extend_from_slice(m.blob());
    }
    (msgs, bytes)
}

fn rusd_snapshot(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rusd"))
        .arg("snapshot")
        .args(args)
        .output()
        .expect("run rusd snapshot")
}

#[tokio::test]
async fn snapshot_streams_chunks_with_a_sha256_trailer_and_restores() {
    let mut r = Rusd::start(&[]);
    let mut c = r.client().await;
    let value = "s".repeat(1000);
    for i in 0..200 {
        c.put(format!("snap{i:03}"), value.as_str(), None)
            .await
            .unwrap();
    }
    c.delete(
        "snap1",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let before = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let revision = before.header().unwrap().revision();

    let (msgs, bytes) = fetch_snapshot(&mut c).await;
    assert!(msgs.len() >= 3, "{msgs:?}");
    // A header on the first message only; 32 KiB chunks; the last data message and the
    // checksum message say 0 bytes remain, every earlier one more than 0.
    assert!(msgs[0].2);
    assert!(msgs[1..].iter().all(|m| !m.2));
    let (sha, data) = msgs.split_last().unwrap();
    assert_eq!((sha.0, sha.1), (0, 32));
    let (last, middle) = data.split_last().unwrap();
    assert_eq!(last.0, 0);
    assert!(
        middle.iter().all(|m| m.0 > 0 && m.1 == 32 * 1024),
        "{msgs:?}"
    );
    // etcd's trailer convention, and etcdctl's size check (n x 512 + 32).
    let (body, trailer) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(body).as_slice(), trailer);
    assert_eq!(bytes.len() % 512, 32);

    let file = r.data_dir().with_file_name("snapshot.db");
    std::fs::write(&file, &bytes).unwrap();
    let status = rusd_snapshot(&["status".as_ref(), file.as_os_str()]);
    assert!(status.status.success(), "{status:?}");
    let line = String::from_utf8_lossy(&status.stdout);
    assert!(line.contains(&format!("revision {revision}")), "{line}");

    // Restore into this member's data dir and serve it again.
    drop(c);
    assert!(r.terminate());
    std::fs::remove_dir_all(r.data_dir()).unwrap();
    let restore = rusd_snapshot(&[
        "restore".as_ref(),
        file.as_os_str(),
        "--data-dir".as_ref(),
        r.data_dir().as_os_str(),
    ]);
    assert!(restore.status.success(), "{restore:?}");
    r.restart();
    let mut c = r.client().await;
    let after = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    assert_eq!(after.header().unwrap().revision(), revision);
    let flat = |kvs: &[etcd_client::KeyValue]| {
        kvs.iter()
            .map(|kv| {
                (
                    kv.key().to_vec(),
                    kv.value().to_vec(),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(flat(after.kvs()), flat(before.kvs()));
    assert_eq!(after.kvs().len(), 100);

    // A damaged file is refused.
    let mut bad = bytes.clone();
    bad[100] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    let status = rusd_snapshot(&["status".as_ref(), file.as_os_str()]);
    assert!(!status.status.success());
}

/// The real etcd client binary saves rusd's snapshot stream (it checks the trailer's place).
#[tokio::test]
async fn etcdctl_snapshot_save_accepts_the_stream() {
    let etcdctl = std::path::Path::new("/usr/bin/etcdctl");
    if !etcdctl.exists() {
        eprintln!("skipped: no /usr/bin/etcdctl");
        return;
    }
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    for i in 0..100 {
        c.put(format!("k{i}"), "x".repeat(700), None).await.unwrap();
    }
    let file = r.data_dir().with_file_name("etcdctl.db");
    let out = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", r.endpoint))
        .arg("snapshot")
        .arg("save")
        .arg(&file)
        .output()
        .expect("run etcdctl");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = rusd_snapshot(&["status".as_ref(), file.as_os_str()]);
    assert!(status.status.success(), "{status:?}");
    assert!(String::from_utf8_lossy(&status.stdout).contains("revision 101"));
}

#[tokio::test]
async fn member_list_and_membership_changes() {
    // Without the strict check, which would refuse the second add below before its URLs are
    // looked at (that check has its own tests in tests/cluster.rs).
    let r = Rusd::start(&["--name", "solo", "--strict-reconfig-check=false"]);
    let mut c = r.client().await;
    let me = member_id(&mut c).await;
    let list = c.member_list().await.unwrap();
    let h = list.header().unwrap();
    // etcd leaves the revision out of membership headers.
    assert_eq!(h.revision(), 0);
    assert_eq!(h.member_id(), me);
    assert!(h.raft_term() >= 1);
    let members = list.members();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id(), me);
    assert_eq!(members[0].name(), "solo");
    assert!(!members[0].peer_urls().is_empty());
    assert!(!members[0].client_urls().is_empty());
    assert!(!members[0].is_learner());

    let unknown = me ^ 1;
    for err in [
        text(c.member_remove(unknown).await),
        text(
            c.member_update(unknown, vec!["http://127.0.0.1:1".to_string()])
                .await,
        ),
        text(c.member_promote(unknown).await),
    ] {
        assert!(err.contains("etcdserver: member not found"), "{err}");
    }
    let err = text(c.member_promote(me).await);
    assert!(
        err.contains("etcdserver: can only promote a learner member"),
        "{err}"
    );
    let err = text(c.member_update(me, vec!["not a url".to_string()]).await);
    assert!(
        err.contains("etcdserver: given member URLs are invalid"),
        "{err}"
    );

    // Changes work on one member too. An added member that never starts is listed (as a
    // voter, unstarted) but does not count towards the quorum: writes go on.
    let added = c
        .member_add(["http://127.0.0.1:1"], None)
        .await
        .expect("member add");
    let new = added.member().expect("member").clone();
    assert!(!new.is_learner());
    assert!(new.name().is_empty(), "unstarted");
    assert_eq!(c.member_list().await.expect("list").members().len(), 2);
    let err = text(c.member_add(["http://127.0.0.1:1"], None).await);
    assert!(
        err.contains("etcdserver: Peer URLs already exists"),
        "{err}"
    );
    c.put("still", "writable", None).await.expect("put");
    let updated = c
        .member_update(new.id(), vec!["http://127.0.0.1:2".to_string()])
        .await
        .expect("member update");
    let listed = updated
        .members()
        .iter()
        .find(|m| m.id() == new.id())
        .expect("listed");
    assert_eq!(listed.peer_urls(), ["http://127.0.0.1:2".to_string()]);
    let removed = c.member_remove(new.id()).await.expect("member remove");
    assert_eq!(removed.members().len(), 1);
    assert_eq!(removed.members()[0].id(), me);
    c.put("still", "writable", None).await.expect("put");
}

#[tokio::test]
async fn move_leader_and_downgrade() {
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let me = member_id(&mut c).await;
    // To itself: nothing to do, as in etcd.
    c.move_leader(me).await.unwrap();
    let err = text(c.move_leader(me ^ 1).await);
    assert!(err.contains("etcdserver: bad leader transferee"), "{err}");

    let mut m = raw_maintenance(&r).await;
    let status = m
        .downgrade(pb::DowngradeRequest {
            action: 0,
            version: "3.4.0".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    // Defragment and MoveLeader answer empty messages, Status a full header.
    let d = m.defragment(pb::DefragmentRequest {}).await.unwrap();
    assert_eq!(d.into_inner(), pb::DefragmentResponse::default());
    let s = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.storage_version, "3.5.0");
    assert!(s.header.unwrap().revision >= 1);
}

#[tokio::test]
async fn auth_answers_as_an_etcd_with_auth_disabled() {
    let r = Rusd::start(&[]);
    let mut a = raw_auth(&r).await;
    let s = a
        .auth_status(pb::AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!s.enabled);
    assert_eq!(s.auth_revision, 1);
    assert!(s.header.is_some());
    let err = a
        .authenticate(pb::AuthenticateRequest {
            name: "root".into(),
            password: "pw".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(err.message(), "etcdserver: authentication is not enabled");

    let mut c = r.client().await;
    c.auth_disable().await.unwrap();
    assert!(c.user_list().await.unwrap().users().is_empty());
    assert!(c.role_list().await.unwrap().roles().is_empty());
    let err = text(c.auth_enable().await);
    assert!(
        err.contains("etcdserver: root user does not exist"),
        "{err}"
    );
    for err in [
        text(c.user_get("bob").await),
        text(c.user_delete("bob").await),
        text(c.user_grant_role("bob", "r").await),
    ] {
        assert!(err.contains("etcdserver: user name not found"), "{err}");
    }
    for err in [text(c.role_get("r").await), text(c.role_delete("r").await)] {
        assert!(err.contains("etcdserver: role name not found"), "{err}");
    }
    // With auth disabled, anybody manages users and roles (tests/auth.rs covers auth on).
    a.user_add(pb::AuthUserAddRequest {
        name: "bob".into(),
        password: "pw".into(),
        ..Default::default()
    })
    .await
    .expect("user add");
    a.role_add(pb::AuthRoleAddRequest { name: "r".into() })
        .await
        .expect("role add");
    assert_eq!(c.user_list().await.unwrap().users(), ["bob"]);
    assert_eq!(c.role_list().await.unwrap().roles(), ["r"]);
    let s = a
        .auth_status(pb::AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.auth_revision, 3, "each change bumps the auth revision");
}

/// `etcdctl` (3.4) end to end: status, alarms, member list, defrag.
#[tokio::test]
async fn etcdctl_maintenance_commands() {
    let etcdctl = std::path::Path::new("/usr/bin/etcdctl");
    if !etcdctl.exists() {
        eprintln!("skipped: no /usr/bin/etcdctl");
        return;
    }
    let r = Rusd::start(&[]);
    let run = |args: &[&str]| {
        let out = Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", r.endpoint))
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let status: serde_json::Value =
        serde_json::from_str(&run(&["endpoint", "status", "-w", "json"])).unwrap();
    assert_eq!(status[0]["Status"]["version"], "3.5.17");
    let members: serde_json::Value =
        serde_json::from_str(&run(&["member", "list", "-w", "json"])).unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
    assert!(run(&["alarm", "list"]).trim().is_empty());
    assert!(run(&["defrag"]).contains("Finished defragmenting"));
    run(&["endpoint", "hashkv"]);
}
