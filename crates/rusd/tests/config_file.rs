//! `--config-file`: a server configured by etcd's YAML file alone.

mod common;

use common::Rusd;

#[tokio::test]
async fn the_file_configures_the_member_and_other_flags_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("from-file");
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &file,
        format!(
            "name: 'from-file'\n\
             data-dir: {}\n\
             listen-client-urls: http://127.0.0.1:0\n\
             advertise-client-urls: http://127.0.0.1:0\n\
             listen-peer-urls: http://127.0.0.1:0\n\
             initial-advertise-peer-urls: http://127.0.0.1:2380\n\
             initial-cluster: from-file=http://127.0.0.1:2380\n\
             max-txn-ops: 2\n\
             max-snapshots: 5\n\
             client-transport-security:\n  client-cert-auth: false\n",
            data_dir.display()
        ),
    )
    .expect("write");
    let file = file.to_string_lossy().into_owned();
    // The harness's own --data-dir and this --name lose to the file, as in etcd.
    let r = Rusd::start(&["--name", "from-flag", "--config-file", &file]);
    assert!(data_dir.is_dir(), "the file's data-dir was not used");
    assert!(!r.data_dir.exists(), "the --data-dir flag was used");
    let mut c = r.client().await;
    let members = c.member_list().await.expect("member list");
    let names: Vec<&str> = members.members().iter().map(|m| m.name()).collect();
    assert_eq!(names, ["from-file"]);
    // max-txn-ops: 2 from the file.
    let ops: Vec<etcd_client::TxnOp> = (0..3)
        .map(|i| etcd_client::TxnOp::put(format!("k{i}"), "v", None))
        .collect();
    let err = c
        .txn(etcd_client::Txn::new().and_then(ops))
        .await
        .expect_err("too many operations");
    assert!(
        err.to_string()
            .contains("too many operations in txn request"),
        "{err}"
    );
    let log = r.log.lock().expect("log").join("\n");
    assert!(log.contains("loaded server configuration"), "{log}");
    assert!(log.contains("max-snapshots"), "{log}");
}

#[test]
fn a_bad_file_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yml");
    std::fs::write(&file, "snapshot-count: lots\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rusd"))
        .arg("--config-file")
        .arg(&file)
        .output()
        .expect("run rusd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--config-file") && stderr.contains("snapshot-count"),
        "{stderr}"
    );
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_rusd"))
        .arg("--config-file")
        .arg(dir.path().join("missing.yml"))
        .output()
        .expect("run rusd");
    assert!(!missing.status.success());
}
