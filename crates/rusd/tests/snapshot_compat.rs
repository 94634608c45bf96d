//! etcd snapshot and data-directory compatibility with the real `etcdctl` and `etcd` 3.4.23:
//!
//! * rusd → `etcdctl snapshot save|status|restore` → rusd serves the restored directory;
//! * real etcd → `etcdctl snapshot save|restore` → rusd (migrating from etcd);
//! * a stopped etcd's data directory → rusd takes it over in place;
//! * rusd → `etcdctl snapshot save|restore` → real etcd serves it (migrating back).
//!
//! Every test compares whole key-value states (key, value, create/mod revision, version,
//! lease) at the current revision and at an older retained one, the compaction point and the
//! leases. Tests skip themselves when `/usr/bin/etcdctl` (or `/usr/bin/etcd`) is missing.
#![allow(clippy::unwrap_used)]

mod common;
mod real_etcd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Rusd;
use etcd_client::{Client, CompactionOptions, DeleteOptions, GetOptions, PutOptions};
use real_etcd::Etcd;

/// One key at one revision: key, value, create_revision, mod_revision, version, lease.
type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

/// What a populated store must serve.
#[derive(Debug, PartialEq)]
struct State {
    revision: i64,
    compacted: i64,
    old_revision: i64,
    current: Vec<Row>,
    old: Vec<Row>,
    lease: i64,
    lease_keys: Vec<Vec<u8>>,
}

fn etcdctl(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(real_etcd::ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout + &String::from_utf8_lossy(&out.stderr)
}

fn have_etcdctl() -> bool {
    let there = Path::new(real_etcd::ETCDCTL).exists();
    if !there {
        eprintln!("skipped: no {}", real_etcd::ETCDCTL);
    }
    there
}

fn have_etcd() -> bool {
    let there = real_etcd::available();
    if !there {
        eprintln!("skipped: no {} or {}", real_etcd::ETCD, real_etcd::ETCDCTL);
    }
    there
}

async fn rows(c: &mut Client, revision: i64) -> (i64, Vec<Row>) {
    let resp = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(revision)),
        )
        .await
        .expect("get");
    let rows = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                kv.key().to_vec(),
                kv.value().to_vec(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
                kv.lease(),
            )
        })
        .collect();
    (resp.header().expect("header").revision(), rows)
}

/// Writes history: versions, deletes, a value bigger than a page, a lease with a key, a
/// compaction, and enough keys for multi-level trees.
async fn populate(c: &mut Client) -> (i64, i64, i64) {
    for i in 0..600 {
        c.put(format!("key{i:04}"), format!("first-{i}"), None)
            .await
            .unwrap();
    }
    let big = c.put("big", "b".repeat(100_000), None).await.unwrap();
    let compact_at = big.header().unwrap().revision();
    for i in 0..150 {
        c.put(format!("key{i:04}"), "second", None).await.unwrap();
    }
    let lease = c.lease_grant(3000, None).await.unwrap().id();
    c.put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    c.delete("key0200", Some(DeleteOptions::new().with_range("key0250")))
        .await
        .unwrap();
    let old = c.put("marker", "old", None).await.unwrap();
    let old_revision = old.header().unwrap().revision();
    c.compact(compact_at, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    for i in 0..20 {
        c.put(format!("late{i:02}"), "y", None).await.unwrap();
    }
    c.put("marker", "new", None).await.unwrap();
    (compact_at, old_revision, lease)
}

async fn state(c: &mut Client, compacted: i64, old_revision: i64, lease: i64) -> State {
    let (revision, current) = rows(c, 0).await;
    let (_, old) = rows(c, old_revision).await;
    let ttl = c.lease_time_to_live(lease, None).await.expect("lease ttl");
    let mut lease_keys = ttl.keys().to_vec();
    lease_keys.sort();
    assert_eq!(ttl.granted_ttl(), 3000);
    // Reading below the compaction point fails.
    let below = c
        .get(
            "key0000",
            Some(GetOptions::new().with_revision(compacted - 1)),
        )
        .await;
    assert!(below.is_err(), "read below the compaction point: {below:?}");
    rows(c, compacted).await;
    State {
        revision,
        compacted,
        old_revision,
        current,
        old,
        lease,
        lease_keys,
    }
}

fn etcdctl_status(file: &Path) -> serde_json::Value {
    let out = ok(etcdctl(&[
        "--write-out".as_ref(),
        "json".as_ref(),
        "snapshot".as_ref(),
        "status".as_ref(),
        file.as_os_str(),
    ]));
    let json = out.lines().find(|l| l.contains("totalKey")).expect("json");
    serde_json::from_str(json).expect("status json")
}

fn snapshot_save(endpoint: &str, file: &Path) {
    ok(etcdctl(&[
        format!("--endpoints={endpoint}").as_ref(),
        "snapshot".as_ref(),
        "save".as_ref(),
        file.as_os_str(),
    ]));
}

/// `etcdctl snapshot restore` with an explicit single-member cluster.
fn snapshot_restore(file: &Path, data_dir: &Path, peer_url: &str) {
    let out = ok(etcdctl(&[
        "snapshot".as_ref(),
        "restore".as_ref(),
        file.as_os_str(),
        "--name".as_ref(),
        "default".as_ref(),
        "--initial-cluster".as_ref(),
        format!("default={peer_url}").as_ref(),
        "--initial-advertise-peer-urls".as_ref(),
        peer_url.as_ref(),
        "--data-dir".as_ref(),
        data_dir.as_os_str(),
    ]));
    assert!(out.contains("added member"), "{out}");
}

/// `rusd snapshot status` prints the same numbers as `etcdctl snapshot status`.
fn rusd_status_matches_etcdctl(file: &Path) -> serde_json::Value {
    let status = etcdctl_status(file);
    let out = Command::new(env!("CARGO_BIN_EXE_rusd"))
        .arg("snapshot")
        .arg("status")
        .arg(file)
        .output()
        .expect("rusd snapshot status");
    let line = ok(out);
    let expected = format!(
        "hash {:08x}, revision {}, keys {}, size {} bytes (etcd format, sha256 ok)",
        status["hash"].as_u64().unwrap(),
        status["revision"],
        status["totalKey"],
        status["totalSize"]
    );
    assert!(line.contains(&expected), "{line} vs {expected}");
    status
}

async fn connect(endpoint: &str) -> Client {
    Client::connect([endpoint], None).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_save_status_restore_then_rusd_serves_it() {
    if !have_etcdctl() {
        return;
    }
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let (compacted, old_revision, lease) = populate(&mut c).await;
    let before = state(&mut c, compacted, old_revision, lease).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("rusd.snapshot");
    snapshot_save(&r.endpoint, &file);

    let status = rusd_status_matches_etcdctl(&file);
    assert_eq!(status["revision"], before.revision);
    // Every key revision kept after compaction, plus meta, lease, member and auth entries.
    let records = status["totalKey"].as_u64().unwrap();
    assert!(records > 600 + 150, "{status}");

    let restored = work.path().join("restored");
    snapshot_restore(&file, &restored, "http://127.0.0.1:2380");
    drop(c);
    let r2 = Rusd::start_in(&restored, &[]);
    let mut c2 = r2.client().await;
    let after = state(&mut c2, compacted, old_revision, lease).await;
    assert_eq!(after, before);
    assert!(restored.join("member/snap/db.etcd-imported").exists());
    // The restored member writes at the next revision, through its new log.
    let put = c2.put("after", "restore", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), before.revision + 1);
    let status = c2.status().await.unwrap();
    assert!(
        status.raft_index() < 100,
        "a new log: {}",
        status.raft_index()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_etcd_snapshot_migrates_to_rusd() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start(&[]);
    let mut c = connect(&etcd.endpoint).await;
    let (compacted, old_revision, lease) = populate(&mut c).await;
    let before = state(&mut c, compacted, old_revision, lease).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("etcd.snapshot");
    snapshot_save(&etcd.endpoint, &file);
    drop(c);
    drop(etcd);
    let status = rusd_status_matches_etcdctl(&file);
    assert_eq!(status["revision"], before.revision);

    let restored = work.path().join("restored");
    snapshot_restore(&file, &restored, "http://127.0.0.1:2380");
    let r = Rusd::start_in(&restored, &[]);
    let mut c = r.client().await;
    let after = state(&mut c, compacted, old_revision, lease).await;
    assert_eq!(after, before);

    // `rusd snapshot restore` takes etcd's snapshot as well.
    let via_rusd = work.path().join("via-rusd");
    let out = Command::new(env!("CARGO_BIN_EXE_rusd"))
        .arg("snapshot")
        .arg("restore")
        .arg(&file)
        .arg("--data-dir")
        .arg(&via_rusd)
        .output()
        .expect("rusd snapshot restore");
    ok(out);
    let r = Rusd::start_in(&via_rusd, &[]);
    let mut c = r.client().await;
    assert_eq!(state(&mut c, compacted, old_revision, lease).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_etcds_data_dir_is_taken_over() {
    if !have_etcd() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data: PathBuf = work.path().join("etcd-data");
    let etcd = Etcd::start_in(&data, real_etcd::free_port());
    let mut c = connect(&etcd.endpoint).await;
    let (compacted, old_revision, lease) = populate(&mut c).await;
    let before = state(&mut c, compacted, old_revision, lease).await;
    drop(c);
    etcd.stop();

    let mut r = Rusd::start_in(&data, &[]);
    let mut c = r.client().await;
    assert_eq!(state(&mut c, compacted, old_revision, lease).await, before);
    assert!(r
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("imported the etcd database")));
    c.put("after", "takeover", None).await.unwrap();
    drop(c);

    // A restart serves the converted store; nothing is imported again.
    assert!(r.terminate());
    r.restart();
    let mut c = r.client().await;
    let (revision, _) = rows(&mut c, 0).await;
    assert_eq!(revision, before.revision + 1);
    assert!(!r
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("etcd database")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rusd_snapshot_restores_into_real_etcd() {
    if !have_etcd() {
        return;
    }
    let r = Rusd::start(&[]);
    let mut c = r.client().await;
    let (compacted, old_revision, lease) = populate(&mut c).await;
    let before = state(&mut c, compacted, old_revision, lease).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("rusd.snapshot");
    snapshot_save(&r.endpoint, &file);

    let restored = work.path().join("for-etcd");
    let peer = real_etcd::free_port();
    snapshot_restore(&file, &restored, &format!("http://127.0.0.1:{peer}"));
    let etcd = Etcd::start_in(&restored, peer);
    let mut e = connect(&etcd.endpoint).await;
    let after = state(&mut e, compacted, old_revision, lease).await;
    assert_eq!(after, before);
    let put = e.put("after", "restore", None).await.unwrap();
    assert_eq!(put.header().unwrap().revision(), before.revision + 1);
}
