//! `rusd snapshot status|restore`.
//!
//! Both take either format: an etcd snapshot (a bbolt file followed by its SHA-256, what
//! `rusd`'s and etcd's Maintenance.Snapshot send and `etcdctl snapshot save` writes; a bare bolt
//! file copied from a data directory works too) or the engine's own `RUSDSNAP` stream
//! (`rusd_mvcc::Backend::snapshot_to`).

use std::io::Read;

use anyhow::{bail, Context};
use rusd_mvcc::etcd_compat;
use rusd_mvcc::{Backend, MvccStore, StoreConfig};

use crate::cli::SnapshotCommand;

/// Runs a snapshot subcommand.
pub fn run(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Status { file } if etcd_compat::is_bolt_file(&file)? => {
            // As `etcdctl snapshot status` (same hash, revision, key count and size), after
            // checking the SHA-256 trailer that etcdctl checks only on restore.
            let (has_trailer, s) = etcd_compat::verify_snapshot_checksum(&file)
                .and_then(|t| etcd_compat::etcd_status(&file).map(|s| (t, s)))
                .context("snapshot check failed")?;
            println!(
                "hash {:08x}, revision {}, keys {}, size {} bytes (etcd format, {})",
                s.hash,
                s.revision,
                s.total_key,
                s.total_size,
                if has_trailer {
                    "sha256 ok"
                } else {
                    "no sha256 trailer"
                }
            );
            Ok(())
        }
        SnapshotCommand::Status { file } => {
            let dir = tempdir_near(&file)?;
            let db = dir.join("db");
            let input =
                std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?;
            let result = Backend::restore(std::io::BufReader::new(input), &db, 16 << 20)
                .and_then(|()| MvccStore::open(StoreConfig::new(&db)));
            let report = match result {
                Ok(store) => {
                    let line = format!(
                        "hash {:08x}, revision {}, keys {}, size {} bytes",
                        store.hash()?,
                        store.current_revision(),
                        store.key_count(),
                        std::fs::metadata(&file)?.len()
                    );
                    store.close()?;
                    Ok(line)
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", report.context("snapshot check failed")?);
            Ok(())
        }
        SnapshotCommand::Restore { file, data_dir } => {
            if data_dir.exists() {
                bail!("data dir {} exists already", data_dir.display());
            }
            let bolt = etcd_compat::is_bolt_file(&file)?;
            let mut input: Box<dyn Read> = Box::new(std::io::BufReader::new(
                std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?,
            ));
            let db = data_dir.join("member").join("snap").join("db");
            std::fs::create_dir_all(db.parent().unwrap_or(&data_dir))?;
            let restored = if bolt {
                restore_etcd(&file, &db)
            } else {
                Backend::restore(&mut input, &db, 64 << 20).map_err(Into::into)
            };
            if let Err(e) = restored {
                let _ = std::fs::remove_dir_all(&data_dir);
                return Err(e);
            }
            if let Err(e) = forget_raft_state(&db) {
                let _ = std::fs::remove_dir_all(&data_dir);
                return Err(e);
            }
            println!(
                "restored snapshot {} into {}",
                file.display(),
                data_dir.display()
            );
            Ok(())
        }
    }
}

/// Imports an etcd snapshot (checking its SHA-256 trailer if it has one; a bolt file copied
/// from a data directory has none) into a new store file at `db`.
fn restore_etcd(file: &std::path::Path, db: &std::path::Path) -> anyhow::Result<()> {
    etcd_compat::verify_snapshot_checksum(file)?;
    let report = etcd_compat::import_bolt(
        file,
        db,
        &rusd_server::etcd_compat::import_options(64 << 20),
    )?;
    println!(
        "imported etcd snapshot: revision {}, compacted at {}, {} key revisions, {} leases",
        report.revision, report.compact_revision, report.kv_records, report.leases
    );
    Ok(())
}

/// A restored member starts a new Raft group (as `etcdctl snapshot restore` does): the
/// snapshot's log position and membership belong to the old cluster, so they are dropped.
fn forget_raft_state(db: &std::path::Path) -> anyhow::Result<()> {
    let store = MvccStore::open(StoreConfig::new(db))?;
    let mut w = store.write();
    w.set_applied_index(0);
    for key in [
        rusd_server::apply::keys::APPLIED_LOG_ID,
        rusd_server::apply::keys::MEMBERSHIP,
    ] {
        w.delete_raw(rusd_mvcc::Table::Members, key)?;
    }
    w.commit()?;
    store.close()?;
    Ok(())
}

fn tempdir_near(file: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "rusd-snapshot-status-{}-{}",
        std::process::id(),
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
