//! etcd's backend layout for what the server owns, and taking over an etcd data directory.
//!
//! The engine (`rusd_mvcc::etcd_compat`) exports and imports the `key`, `meta` and `lease`
//! buckets; this module adds the server's:
//!
//! | bucket | export | import |
//! |---|---|---|
//! | `alarm` | each raised alarm: `AlarmMember` protobuf → empty | into the `alarm` table |
//! | `auth` | `authEnabled` → 0/1, `authRevision` → BE64 | dropped |
//! | `authUsers`, `authRoles` | name → `authpb.User` / `authpb.Role` protobuf | dropped |
//! | `cluster` | `clusterVersion` → rusd's cluster version | dropped |
//! | `members` | this member: hex id → etcd's member JSON | dropped (a new cluster starts) |
//! | `members_removed` | empty | dropped |
//!
//! [`prepare_data_dir`] runs before the engine opens its file: if `member/snap/db` is an etcd
//! bbolt file (an etcd data directory, or one made by `etcdctl snapshot restore`), it is
//! converted in place. etcd's WAL and `.snap` files are ignored and rusd's own Raft log (if any)
//! is moved aside, so the member starts a new single-member Raft group at index 0 on the
//! imported data, as a member restored by `etcdctl snapshot restore` starts a new cluster.

use prost::Message;
use rusd_mvcc::etcd_compat::{self, buckets, ExtraBuckets, ImportOptions};
use rusd_mvcc::Table;
use rusd_proto::etcdserverpb::AlarmMember;

use crate::alarm::alarm_key;
use crate::config::ServerConfig;
use crate::context::Ctx;
use crate::server::StartError;

/// Suffix given to rusd's Raft log when an etcd database replaces the data.
pub const REPLACED_LOG_SUFFIX: &str = "before-etcd-import";

/// The server's buckets for an etcd snapshot of this member.
pub fn export_buckets(ctx: &Ctx) -> ExtraBuckets {
    let config = &ctx.config;
    let mut out = ExtraBuckets::new();
    out.insert(
        buckets::ALARM.to_vec(),
        ctx.alarms
            .list(0, 0)
            .iter()
            .map(|m| (m.encode_to_vec(), Vec::new()))
            .collect(),
    );
    let auth = ctx.auth.state();
    out.insert(
        buckets::AUTH.to_vec(),
        [
            (b"authEnabled".to_vec(), vec![u8::from(auth.enabled())]),
            (
                b"authRevision".to_vec(),
                auth.revision().to_be_bytes().to_vec(),
            ),
        ]
        .into(),
    );
    out.insert(
        buckets::AUTH_USERS.to_vec(),
        auth.users()
            .map(|u| (u.name.clone(), u.encode_to_vec()))
            .collect(),
    );
    out.insert(
        buckets::AUTH_ROLES.to_vec(),
        auth.roles()
            .map(|r| (r.name.clone(), r.encode_to_vec()))
            .collect(),
    );
    out.insert(
        buckets::CLUSTER.to_vec(),
        [(
            b"clusterVersion".to_vec(),
            crate::VERSION_CLUSTER.as_bytes().to_vec(),
        )]
        .into(),
    );
    // etcd's `membership.Member` JSON, fields in its order.
    #[derive(serde::Serialize)]
    struct Member<'a> {
        id: u64,
        #[serde(rename = "peerURLs")]
        peer_urls: Vec<String>,
        #[serde(skip_serializing_if = "str::is_empty")]
        name: &'a str,
        #[serde(rename = "clientURLs", skip_serializing_if = "<[String]>::is_empty")]
        client_urls: &'a [String],
    }
    let member = serde_json::to_vec(&Member {
        id: ctx.member_id,
        peer_urls: config.own_peer_urls(),
        name: &config.name,
        client_urls: &config.advertise_client_urls,
    })
    .unwrap_or_default();
    out.insert(
        buckets::MEMBERS.to_vec(),
        [(format!("{:x}", ctx.member_id).into_bytes(), member)].into(),
    );
    out.insert(buckets::MEMBERS_REMOVED.to_vec(), Default::default());
    out
}

/// Converts an entry of an etcd bucket the engine does not own: alarms are kept.
pub fn import_foreign(
    bucket: &[u8],
    key: &[u8],
    _value: &[u8],
) -> Option<(Table, Vec<u8>, Vec<u8>)> {
    if bucket != buckets::ALARM {
        return None;
    }
    let m = AlarmMember::decode(key).ok()?;
    Some((Table::Alarm, alarm_key(m.member_id, m.alarm), Vec::new()))
}

/// Import settings with the server's conversions and a page cache of at most `cache_size`.
pub fn import_options(cache_size: usize) -> ImportOptions<'static> {
    ImportOptions {
        cache_size: cache_size.clamp(1 << 20, 256 << 20),
        foreign: Some(&import_foreign),
    }
}

/// Converts an etcd database found at the engine's path (see the module docs); does nothing
/// for a rusd data directory.
///
/// # Errors
/// The conversion failed (the etcd file is left as it was, or under `db.etcd-import`, and the
/// next start tries again).
pub fn prepare_data_dir(config: &ServerConfig) -> Result<(), StartError> {
    let db = config.db_path();
    if !etcd_compat::import_pending(&db)? {
        return Ok(());
    }
    tracing::info!(path = %db.display(), "found an etcd database; converting it");
    let log = config.log_path();
    // The log's segments (see `raft::wal`) and its meta file go aside, segments first: a crash
    // in between leaves meta without entries, which the next start moves aside too.
    let mut aside_paths = match log.parent() {
        Some(dir) => crate::raft::wal::segment_files(dir)
            .map_err(|e| StartError::Config(e.to_string()))?
            .into_iter()
            .map(|(_, path)| path)
            .collect(),
        None => Vec::new(),
    };
    aside_paths.push(log.clone());
    for path in aside_paths.iter().filter(|p| p.exists()) {
        let mut aside = path.clone().into_os_string();
        aside.push(".");
        aside.push(REPLACED_LOG_SUFFIX);
        std::fs::rename(path, &aside).map_err(|e| {
            StartError::Config(format!("cannot move {} aside: {e}", path.display()))
        })?;
        tracing::warn!(
            from = %path.display(),
            to = %std::path::Path::new(&aside).display(),
            "moved rusd's raft log aside: the imported data starts a new raft group"
        );
    }
    let options = import_options(config.backend_cache_bytes);
    let started = std::time::Instant::now();
    match tokio::task::block_in_place(|| etcd_compat::import_data_dir_db(&db, &options))? {
        Some(report) => tracing::info!(
            revision = report.revision,
            compact_revision = report.compact_revision,
            kv_records = report.kv_records,
            leases = report.leases,
            alarms = report.foreign,
            etcd_consistent_index = report.etcd_consistent_index,
            dropped = ?report.dropped,
            took = ?started.elapsed(),
            "imported the etcd database; etcd's WAL and raft snapshots are ignored"
        ),
        None => tracing::info!("finished an interrupted etcd import"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusd_proto::etcdserverpb::AlarmType;

    #[test]
    fn alarms_come_back_from_etcds_bucket() {
        let m = AlarmMember {
            member_id: 0x8e9e_05c5_2164_694d,
            alarm: AlarmType::Nospace as i32,
        };
        let key = m.encode_to_vec();
        assert_eq!(
            import_foreign(buckets::ALARM, &key, b""),
            Some((Table::Alarm, alarm_key(m.member_id, m.alarm), Vec::new()))
        );
        assert_eq!(import_foreign(buckets::MEMBERS, &key, b""), None);
        assert_eq!(import_foreign(buckets::ALARM, b"\xff", b""), None);
    }

    #[test]
    fn an_import_moves_the_raft_logs_segments_and_meta_aside() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        let log = config.log_path();
        let wal = log.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(&log, b"meta").unwrap();
        let segments = [1, 7].map(|i| wal.join(crate::raft::wal::segment_name(i)));
        for s in &segments {
            std::fs::write(s, b"entries").unwrap();
        }
        // An import under way (here of a damaged file, so that it stops after the move).
        let db = config.db_path();
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let mut pending = db.clone().into_os_string();
        pending.push(".etcd-import");
        std::fs::write(&pending, b"not a bolt file").unwrap();
        assert!(prepare_data_dir(&config).is_err());
        for path in segments.iter().chain([&log]) {
            let mut aside = path.clone().into_os_string();
            aside.push(format!(".{REPLACED_LOG_SUFFIX}"));
            assert!(!path.exists(), "{} is still in place", path.display());
            assert!(std::path::Path::new(&aside).exists());
        }
        assert!(crate::raft::wal::segment_files(&wal).unwrap().is_empty());
    }
}
