//! Export and import of etcd's layout, against a snapshot made by a real etcd 3.4.23.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::ops::ControlFlow;

use super::*;
use crate::{
    DeleteRangeRequest, KeyValue, LeaseId, MvccStore, PutRequest, RangeRequest, StoreConfig, Table,
};

/// `etcdctl snapshot save` of an etcd 3.4.23 after: `put foo bar`, `put foo bar2`,
/// `put baz qux`, `lease grant 100`, `put --lease=<id> withlease x`, `del baz`, `put a b`,
/// `compact 3`. etcdctl's status of it: hash 2577688280, revision 7, totalKey 12,
/// totalSize 20480.
const ETCD_SNAPSHOT: &[u8] = include_bytes!("testdata/etcd-3.4.23.snapshot");

fn all(store: &MvccStore, revision: i64) -> Vec<KeyValue> {
    store
        .range(&RangeRequest {
            revision,
            ..RangeRequest::new(vec![0], vec![0])
        })
        .unwrap()
        .kvs
}

fn open(path: &Path) -> MvccStore {
    MvccStore::open(StoreConfig::new(path)).unwrap()
}

/// A store with history: versions, deletes, a multi-key txn-like change, leases, a
/// compaction, big values, and an applied index.
fn populated(dir: &Path) -> MvccStore {
    let s = open(&dir.join("src"));
    for i in 0..500 {
        s.put(&PutRequest::new(format!("key{i:04}"), vec![b'v'; i % 50]))
            .unwrap();
    }
    s.put(&PutRequest::new("big", vec![7u8; 100_000])).unwrap();
    s.lease_grant(LeaseId(0x1234), 60).unwrap();
    s.lease_grant(LeaseId(0x7fff_0000_0000_0001), 3600).unwrap();
    s.put(&PutRequest {
        lease: 0x1234,
        ..PutRequest::new("leased", "x")
    })
    .unwrap();
    for i in 0..100 {
        s.put(&PutRequest::new(format!("key{i:04}"), "second"))
            .unwrap();
    }
    s.delete_range(&DeleteRangeRequest::new("key01", "key02"))
        .unwrap();
    s.compact(300).unwrap().wait();
    let mut w = s.write();
    w.put(&PutRequest::new("last", "one")).unwrap();
    w.put(&PutRequest::new("last2", "two")).unwrap();
    w.set_applied_index(77);
    w.commit().unwrap();
    s
}

#[test]
fn export_import_round_trip_keeps_history_leases_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    let current = s.current_revision();
    let mut extra = ExtraBuckets::new();
    extra.insert(
        buckets::MEMBERS.to_vec(),
        BTreeMap::from([(b"abc".to_vec(), b"{}".to_vec())]),
    );
    extra.insert(buckets::ALARM.to_vec(), BTreeMap::new());
    // The store's own buckets cannot be overridden.
    extra.insert(
        buckets::KEY.to_vec(),
        BTreeMap::from([(b"x".to_vec(), b"y".to_vec())]),
    );
    let (out, summary) = s.export_etcd(Cursor::new(Vec::new()), &extra).unwrap();
    let bolt = out.into_inner();
    assert_eq!(summary.size, bolt.len() as u64);
    assert_eq!(summary.revision, current);
    assert_eq!(summary.compact_revision, 300);
    assert_eq!(summary.consistent_index, 77);
    assert_eq!(summary.leases, 2);

    // The file looks like etcd's: buckets in order, 17/18-byte revision keys, meta.
    let mut r = rusd_bolt::Reader::open(Cursor::new(&bolt)).unwrap();
    assert!(r.check().unwrap().is_empty());
    let mut tops = Vec::new();
    let root = r.root();
    let _ = r
        .for_each(&root, &mut |k, _| {
            tops.push(String::from_utf8_lossy(k).into_owned());
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    assert_eq!(tops, ["alarm", "key", "lease", "members", "meta"]);
    let meta_bucket = r.bucket(&[buckets::META]).unwrap().unwrap();
    assert_eq!(
        r.value(&meta_bucket, b"finishedCompactRev")
            .unwrap()
            .unwrap(),
        rev_key(300, 0, false)
    );
    assert_eq!(
        r.value(&meta_bucket, b"consistent_index").unwrap().unwrap(),
        77u64.to_be_bytes()
    );
    let key_bucket = r.bucket(&[buckets::KEY]).unwrap().unwrap();
    let mut records = 0;
    let mut tombstones = 0;
    let _ = r
        .for_each(&key_bucket, &mut |k, item| {
            let (_, _, tomb) = parse_rev_key(k).expect("revision key");
            let rusd_bolt::Item::Value(v) = item else {
                panic!("bucket in key")
            };
            let kv = proto::decode_key_value(v).unwrap();
            if tomb {
                tombstones += 1;
                assert_eq!(v, proto::encode_tombstone(&kv.key));
            }
            records += 1;
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    assert_eq!(records, summary.kv_records);
    assert_eq!(tombstones, 100);

    // Import into a new store: same data at every retained revision.
    let file = dir.path().join("etcd.db");
    std::fs::write(&file, &bolt).unwrap();
    let foreign = |bucket: &[u8], k: &[u8], v: &[u8]| {
        (bucket == buckets::MEMBERS).then(|| (Table::Members, k.to_vec(), v.to_vec()))
    };
    let report = import_bolt(
        &file,
        &dir.path().join("imported"),
        &ImportOptions {
            foreign: Some(&foreign),
            ..ImportOptions::default()
        },
    )
    .unwrap();
    assert_eq!(report.revision, current);
    assert_eq!(report.compact_revision, 300);
    assert_eq!(report.etcd_consistent_index, 77);
    assert_eq!(report.kv_records, summary.kv_records);
    assert_eq!(report.leases, 2);
    assert_eq!(report.foreign, 1);
    let t = open(&dir.path().join("imported"));
    assert_eq!(t.current_revision(), current);
    assert_eq!(t.compact_revision(), 300);
    assert_eq!(t.applied_index(), 0, "a new log starts at 0");
    for rev in [300, 450, 600, current - 1, current] {
        assert_eq!(all(&t, rev), all(&s, rev), "at revision {rev}");
    }
    assert_eq!(t.leases(), s.leases());
    assert_eq!(t.lease(LeaseId(0x1234)), s.lease(LeaseId(0x1234)));
    assert_eq!(t.lease(LeaseId(0x1234)).unwrap().keys, [b"leased".to_vec()]);
    assert_eq!(t.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    let members = t.backend().read().get(Table::Members, b"abc").unwrap();
    assert_eq!(members, Some(b"{}".to_vec()));
    // The imported store takes writes at the next revision.
    t.put(&PutRequest::new("after", "import")).unwrap();
    assert_eq!(t.current_revision(), current + 1);
}

#[test]
fn a_real_etcd_snapshot_imports() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snap.db");
    std::fs::write(&file, ETCD_SNAPSHOT).unwrap();
    assert!(is_bolt_file(&file).unwrap());
    assert!(verify_snapshot_checksum(&file).unwrap());
    assert_eq!(
        etcd_status(&file).unwrap(),
        EtcdStatus {
            hash: 2_577_688_280,
            revision: 7,
            total_key: 12,
            total_size: 20480
        }
    );
    let report = import_bolt(&file, &dir.path().join("db"), &ImportOptions::default()).unwrap();
    assert_eq!(report.revision, 7);
    assert_eq!(report.compact_revision, 3);
    assert_eq!(report.kv_records, 5);
    assert_eq!(report.leases, 1);
    assert_eq!(report.etcd_consistent_index, 11);
    let dropped: Vec<_> = report.dropped.keys().map(String::as_str).collect();
    assert_eq!(dropped, ["auth", "cluster", "members"]);
    let s = open(&dir.path().join("db"));
    assert_eq!(s.current_revision(), 7);
    assert_eq!(s.compact_revision(), 3);
    let kvs = all(&s, 0);
    let summary: Vec<_> = kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a".into(), "b".into(), 7, 7, 1),
            ("foo".into(), "bar2".into(), 2, 3, 2),
            ("withlease".into(), "x".into(), 5, 5, 1),
        ]
    );
    let lease = kvs[2].lease;
    assert!(lease > 0);
    let leases = s.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].id.0, leases[0].ttl), (lease, 100));
    let attached = s.lease(LeaseId(lease)).unwrap().keys;
    assert_eq!(attached, [b"withlease".to_vec()]);
    // baz was put at 4 and deleted at 6: visible at 5, gone at 6.
    let at5: Vec<_> = all(&s, 5).into_iter().map(|kv| kv.key).collect();
    assert!(at5.contains(&b"baz".to_vec()));
    assert!(!all(&s, 6).iter().any(|kv| kv.key == b"baz"));
    assert!(s
        .range(&RangeRequest {
            revision: 2,
            ..RangeRequest::new("foo", "")
        })
        .is_err());
}

#[test]
fn snapshots_carry_etcds_trailer() {
    let dir = tempfile::tempdir().unwrap();
    let s = populated(dir.path());
    let snap = s.etcd_snapshot(dir.path(), &ExtraBuckets::new()).unwrap();
    let expected_len = snap.len();
    let summary = snap.summary;
    let mut out = Vec::new();
    assert_eq!(snap.write_to(&mut out).unwrap(), expected_len);
    assert_eq!(out.len() as u64, expected_len);
    assert_eq!(out.len() % 512, 32);
    let file = dir.path().join("snapshot.db");
    std::fs::write(&file, &out).unwrap();
    assert!(verify_snapshot_checksum(&file).unwrap());
    let status = etcd_status(&file).unwrap();
    assert_eq!(status.revision, s.current_revision());
    assert_eq!(status.total_size, summary.size);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("etcd-snapshot")),
        "{names:?}"
    );

    // A damaged byte anywhere fails the trailer check.
    let mut bad = out.clone();
    bad[100] ^= 1;
    std::fs::write(&file, &bad).unwrap();
    assert!(matches!(
        verify_snapshot_checksum(&file),
        Err(Error::CorruptSnapshot(_))
    ));
    // Without a trailer there is nothing to check.
    std::fs::write(&file, &out[..out.len() - 32]).unwrap();
    assert!(!verify_snapshot_checksum(&file).unwrap());
}

#[test]
fn in_place_import_resumes_after_a_crash_at_any_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let pending = dir.path().join("db.etcd-import");
    let done = dir.path().join("db.etcd-imported");
    let opts = ImportOptions::default();

    // Nothing there, or already a store file: nothing to do.
    assert!(!import_pending(&db).unwrap());
    assert_eq!(import_data_dir_db(&db, &opts).unwrap(), None);
    open(&db).close().unwrap();
    assert!(!import_pending(&db).unwrap());
    assert_eq!(import_data_dir_db(&db, &opts).unwrap(), None);
    std::fs::remove_file(&db).unwrap();

    // An etcd file in place: not while another process (etcd) holds its lock.
    std::fs::write(&db, ETCD_SNAPSHOT).unwrap();
    assert!(import_pending(&db).unwrap());
    let held = std::fs::File::open(&db).unwrap();
    held.lock().unwrap();
    let err = import_data_dir_db(&db, &opts).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    assert!(is_bolt_file(&db).unwrap());
    drop(held);
    // Converted, the original kept.
    let report = import_data_dir_db(&db, &opts).unwrap().unwrap();
    assert_eq!(report.revision, 7);
    assert!(!is_bolt_file(&db).unwrap());
    assert!(!pending.exists());
    assert_eq!(std::fs::read(&done).unwrap(), ETCD_SNAPSHOT);
    assert_eq!(open(&db).current_revision(), 7);

    // Crash after the first rename (and maybe during the conversion): starts over.
    std::fs::remove_file(&db).unwrap();
    std::fs::rename(&done, &pending).unwrap();
    std::fs::write(dir.path().join("db.importing"), b"half a file").unwrap();
    assert!(import_pending(&db).unwrap());
    assert!(import_data_dir_db(&db, &opts).unwrap().is_some());
    assert!(!dir.path().join("db.importing").exists());
    assert_eq!(open(&db).current_revision(), 7);

    // Crash before the last rename: only that is left to do.
    std::fs::rename(&done, &pending).unwrap();
    assert!(import_pending(&db).unwrap());
    assert_eq!(import_data_dir_db(&db, &opts).unwrap(), None);
    assert!(done.exists() && !pending.exists());
    assert_eq!(open(&db).current_revision(), 7);
}

#[test]
fn damaged_or_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ImportOptions::default();
    let file = dir.path().join("in");
    // Not bolt at all.
    std::fs::write(&file, b"RUSDSNAP and more bytes than thirty-two").unwrap();
    assert!(!is_bolt_file(&file).unwrap());
    assert!(import_bolt(&file, &dir.path().join("a"), &opts).is_err());
    assert!(!dir.path().join("a").exists());
    // A bolt file without etcd's `key` bucket.
    let mut w = rusd_bolt::Writer::new(Cursor::new(Vec::new())).unwrap();
    w.begin_bucket(b"other").unwrap();
    w.end_bucket().unwrap();
    std::fs::write(&file, w.finish().unwrap().0.into_inner()).unwrap();
    let err = import_bolt(&file, &dir.path().join("b"), &opts).unwrap_err();
    assert!(matches!(err, Error::CorruptSnapshot(_)), "{err}");
    // A malformed revision key.
    let mut w = rusd_bolt::Writer::new(Cursor::new(Vec::new())).unwrap();
    w.begin_bucket(b"key").unwrap();
    w.put(b"short", b"").unwrap();
    w.end_bucket().unwrap();
    std::fs::write(&file, w.finish().unwrap().0.into_inner()).unwrap();
    let err = import_bolt(&file, &dir.path().join("c"), &opts).unwrap_err();
    assert!(matches!(err, Error::CorruptSnapshot(_)), "{err}");
    assert!(!dir.path().join("c").exists());
    assert!(!dir.path().join("c.importing").exists());
    // An existing target is never overwritten.
    std::fs::write(&file, ETCD_SNAPSHOT).unwrap();
    std::fs::write(dir.path().join("d"), b"keep").unwrap();
    assert!(import_bolt(&file, &dir.path().join("d"), &opts).is_err());
    assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), b"keep");
    // A damaged page.
    let mut bad = ETCD_SNAPSHOT.to_vec();
    bad[3 * 4096 + 10] = 0xff;
    std::fs::write(&file, &bad).unwrap();
    assert!(import_bolt(&file, &dir.path().join("e"), &opts).is_err());
    assert!(etcd_status(&file).is_err());
}

#[test]
fn revision_keys() {
    let k = rev_key(5, 2, false);
    assert_eq!(k.len(), 17);
    assert_eq!(parse_rev_key(&k), Some((5, 2, false)));
    let t = rev_key(5, 2, true);
    assert_eq!(parse_rev_key(&t), Some((5, 2, true)));
    assert!(k < t && t < rev_key(5, 3, false));
    assert_eq!(parse_rev_key(&k[..16]), None);
    let mut bad = k.clone();
    bad[8] = b'x';
    assert_eq!(parse_rev_key(&bad), None);
    let mut bad = t.clone();
    bad[17] = b'x';
    assert_eq!(parse_rev_key(&bad), None);
}

/// An export taken while writes go on is one state: its newest revision and its applied index
/// come from the same write.
#[test]
fn exports_during_writes_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db"));
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 1..=3000u64 {
                let mut w = s.write();
                w.put(&PutRequest::new(format!("k{}", i % 97), format!("{i}")))
                    .unwrap();
                w.set_applied_index(i);
                w.commit().unwrap();
            }
        })
    };
    let mut exports = 0;
    while !writer.is_finished() || exports == 0 {
        let (out, summary) = s
            .export_etcd(Cursor::new(Vec::new()), &ExtraBuckets::new())
            .unwrap();
        // Write i has revision i + 1.
        assert_eq!(summary.consistent_index as i64 + 1, summary.revision.max(1));
        let mut r = rusd_bolt::Reader::open(Cursor::new(out.into_inner())).unwrap();
        let key = r.bucket(&[buckets::KEY]).unwrap().unwrap();
        let mut count = 0;
        let _ = r
            .for_each(&key, &mut |_, _| {
                count += 1;
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
        assert_eq!(count, summary.kv_records);
        assert_eq!(count as i64, summary.revision.max(1) - 1);
        exports += 1;
    }
    writer.join().unwrap();
}
