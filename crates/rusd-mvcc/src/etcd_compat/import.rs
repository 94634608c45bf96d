//! An etcd bbolt file (data directory or snapshot) into a new store file.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::{bolt_error, buckets, is_bolt_file, parse_rev_key, proto};
use crate::backend::{Backend, BackendConfig, Table, WriteBatch};
use crate::codec;
use crate::error::{Error, Result};
use crate::revision::Revision;
use crate::store::meta;

/// Operations per backend batch while importing.
const BATCH: usize = 10_000;
/// Bytes of rows waiting to be committed while importing.
const IMPORT_PENDING_BYTES: usize = 32 << 20;

/// Suffix of the etcd file while an in-place import of a data directory is under way.
pub const PENDING_SUFFIX: &str = "etcd-import";
/// Suffix the etcd file keeps after an in-place import.
pub const IMPORTED_SUFFIX: &str = "etcd-imported";

/// Converts an entry of a bucket the store does not own (`bucket`, key, value) into a row of
/// one of the server's tables, or `None` to drop it.
pub type ForeignBucketFn<'a> =
    dyn Fn(&[u8], &[u8], &[u8]) -> Option<(Table, Vec<u8>, Vec<u8>)> + 'a;

/// Settings of an import.
#[derive(Clone, Copy)]
pub struct ImportOptions<'a> {
    /// Page cache of the new store file while it is written.
    pub cache_size: usize,
    /// Converts entries of the other buckets (`alarm`, `auth*`, `members`, ...); without it
    /// they are dropped.
    pub foreign: Option<&'a ForeignBucketFn<'a>>,
}

impl Default for ImportOptions<'_> {
    fn default() -> Self {
        Self {
            cache_size: 64 << 20,
            foreign: None,
        }
    }
}

/// What an import found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Newest main revision in the `key` bucket (0 if empty).
    pub revision: i64,
    /// The compaction revision (-1 if none).
    pub compact_revision: i64,
    /// etcd's `consistent_index` (not imported: the store starts at applied index 0).
    pub etcd_consistent_index: u64,
    /// Records imported into the `kv` table.
    pub kv_records: u64,
    /// Leases imported.
    pub leases: u64,
    /// Entries of other buckets converted by [`ImportOptions::foreign`].
    pub foreign: u64,
    /// Entries dropped, by bucket.
    pub dropped: BTreeMap<String, u64>,
}

/// Builds a new store file at `dst` from the etcd bbolt file at `src` (a data directory's
/// `member/snap/db` or a snapshot; a snapshot's SHA-256 trailer is ignored here, see
/// [`super::verify_snapshot_checksum`]).
///
/// Keeps every revision, the compaction revision and the leases; the applied index starts at
/// 0. The file is built under a temporary name and renamed to `dst` only when complete.
///
/// # Errors
/// `dst` exists, [`Error::CorruptSnapshot`] for a damaged or unexpected file, or an I/O error.
pub fn import_bolt(src: &Path, dst: &Path, opts: &ImportOptions<'_>) -> Result<ImportReport> {
    if dst.exists() {
        return Err(Error::InvalidArgument(format!(
            "import target {} exists already",
            dst.display()
        )));
    }
    let tmp = sibling(dst, "importing");
    let _ = std::fs::remove_file(&tmp);
    match import_into(src, &tmp, opts) {
        Ok(report) => {
            std::fs::rename(&tmp, dst)?;
            sync_dir(dst);
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Whether the store file at `db` needs [`import_data_dir_db`]: it is an etcd bbolt file, or
/// an import of one was interrupted.
///
/// # Errors
/// A read error.
pub fn import_pending(db: &Path) -> Result<bool> {
    Ok(is_bolt_file(db)? || sibling(db, PENDING_SUFFIX).exists())
}

/// Converts the store file at `db` in place if it is an etcd bbolt file (an etcd data
/// directory, or one made by `etcdctl snapshot restore`); returns `None` if there was nothing
/// to do.
///
/// Crash-safe: the etcd file is first renamed to `<db>.etcd-import`, converted into a
/// temporary file that is renamed to `db` when complete, and finally renamed to
/// `<db>.etcd-imported` (kept as a backup). Run again after a crash, this resumes: with
/// `<db>.etcd-import` present and `db` missing the conversion starts over; with both present
/// only the last rename was missing.
///
/// # Errors
/// As [`import_bolt`]; [`Error::InvalidArgument`] if another process (a running etcd) holds
/// the file's lock.
pub fn import_data_dir_db(db: &Path, opts: &ImportOptions<'_>) -> Result<Option<ImportReport>> {
    let pending = sibling(db, PENDING_SUFFIX);
    let done = sibling(db, IMPORTED_SUFFIX);
    // Held until the conversion is done: bbolt locks its file the same way, so a running etcd
    // is noticed here and cannot open the file meanwhile.
    let _lock;
    if is_bolt_file(db)? {
        _lock = lock(db)?;
        std::fs::rename(db, &pending)?;
        sync_dir(db);
    } else if pending.exists() {
        if db.exists() {
            std::fs::rename(&pending, &done)?;
            sync_dir(db);
            return Ok(None);
        }
    } else {
        return Ok(None);
    }
    let report = import_bolt(&pending, db, opts)?;
    std::fs::rename(&pending, &done)?;
    sync_dir(db);
    Ok(Some(report))
}

/// Takes an exclusive lock on the file at `path`, as bbolt does on the files it opens.
fn lock(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::File::open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::InvalidArgument(format!(
            "{} is locked by another process (is etcd still running on it?)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// `<path>.<suffix>`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// Makes renames in `path`'s directory durable (best effort: not every platform can).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Buffers rows and hands them to the backend in batches.
struct Sink {
    backend: Backend,
    batch: WriteBatch,
}

impl Sink {
    fn put(
        &mut self,
        table: Table,
        key: Vec<u8>,
        value: impl Into<std::sync::Arc<[u8]>>,
    ) -> Result<()> {
        self.batch.put(table, key, value);
        if self.batch.len() >= BATCH {
            self.backend.apply(std::mem::take(&mut self.batch))?;
        }
        Ok(())
    }
}

fn corrupt(msg: String) -> Error {
    Error::CorruptSnapshot(msg)
}

/// Visits a bucket, converting the callback's engine errors to and from `io::Error`.
fn each(
    r: &mut rusd_bolt::Reader<std::fs::File>,
    bucket: &rusd_bolt::Bucket,
    mut f: impl FnMut(&[u8], rusd_bolt::Item<'_>) -> Result<()>,
) -> Result<()> {
    let mut failure = None;
    let result = r.for_each(bucket, &mut |k, item| match f(k, item) {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) => {
            failure = Some(e);
            Ok(ControlFlow::Break(()))
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    result.map(|_| ()).map_err(bolt_error)
}

fn import_into(src: &Path, tmp: &Path, opts: &ImportOptions<'_>) -> Result<ImportReport> {
    let file = std::fs::File::open(src)?;
    let mut r = rusd_bolt::Reader::open(file).map_err(bolt_error)?;
    let mut report = ImportReport {
        compact_revision: -1,
        ..ImportReport::default()
    };
    let root = r.root();
    let mut tops = Vec::new();
    each(&mut r, &root, |name, item| {
        match item {
            rusd_bolt::Item::Bucket(b) => tops.push((name.to_vec(), b)),
            rusd_bolt::Item::Value(_) => {
                *report
                    .dropped
                    .entry(String::from_utf8_lossy(name).into_owned())
                    .or_default() += 1
            }
        }
        Ok(())
    })?;
    if !tops.iter().any(|(name, _)| name == buckets::KEY) {
        return Err(corrupt("not an etcd database: no `key` bucket".into()));
    }
    let mut config = BackendConfig::new(tmp);
    config.cache_size = opts.cache_size;
    // Rows wait in memory for the committer at most this much (memory stays bounded however
    // big the file is).
    config.max_pending_bytes = IMPORT_PENDING_BYTES;
    let mut sink = Sink {
        backend: Backend::open(config)?,
        batch: WriteBatch::new(),
    };
    for (name, bucket) in &tops {
        let bucket_name = String::from_utf8_lossy(name).into_owned();
        let drop_one = |report: &mut ImportReport| {
            *report.dropped.entry(bucket_name.clone()).or_default() += 1;
        };
        if name == buckets::KEY {
            each(&mut r, bucket, |k, item| {
                let rusd_bolt::Item::Value(v) = item else {
                    return Err(corrupt("a bucket inside the `key` bucket".into()));
                };
                let (main, sub, tombstone) = parse_rev_key(k)
                    .ok_or_else(|| corrupt(format!("`key` bucket key {}", k.escape_ascii())))?;
                let kv = proto::decode_key_value(v)
                    .ok_or_else(|| corrupt(format!("record at revision {main}.{sub}")))?;
                if kv.key.is_empty() {
                    return Err(corrupt(format!(
                        "record at revision {main}.{sub} has no key"
                    )));
                }
                let record: std::sync::Arc<[u8]> = if tombstone {
                    codec::encode_tombstone(&kv.key).into()
                } else {
                    codec::encode_put_shared(
                        kv.create_revision,
                        kv.version,
                        kv.lease,
                        &kv.key,
                        &kv.value,
                    )
                };
                sink.put(
                    Table::Kv,
                    Revision::new(main, sub).to_bytes().to_vec(),
                    record,
                )?;
                report.revision = report.revision.max(main);
                report.kv_records += 1;
                Ok(())
            })?;
        } else if name == buckets::LEASE {
            each(&mut r, bucket, |k, item| {
                let rusd_bolt::Item::Value(v) = item else {
                    drop_one(&mut report);
                    return Ok(());
                };
                let (id, ttl) = proto::decode_lease(v)
                    .ok_or_else(|| corrupt(format!("lease {}", k.escape_ascii())))?;
                if id == 0 || k != id.to_be_bytes() {
                    return Err(corrupt(format!("lease {} with id {id}", k.escape_ascii())));
                }
                let mut ttl_bytes = Vec::with_capacity(10);
                codec::put_varint(&mut ttl_bytes, ttl as u64);
                sink.put(Table::Lease, k.to_vec(), ttl_bytes)?;
                report.leases += 1;
                Ok(())
            })?;
        } else if name == buckets::META {
            each(&mut r, bucket, |k, item| {
                let value = match item {
                    rusd_bolt::Item::Value(v) => v,
                    rusd_bolt::Item::Bucket(_) => {
                        drop_one(&mut report);
                        return Ok(());
                    }
                };
                if k == meta::CONSISTENT_INDEX {
                    let v = <[u8; 8]>::try_from(value)
                        .map_err(|_| corrupt("consistent_index is not 8 bytes".into()))?;
                    report.etcd_consistent_index = u64::from_be_bytes(v);
                } else if k == meta::FINISHED_COMPACT || k == meta::SCHEDULED_COMPACT {
                    let (rev, _, _) = parse_rev_key(value).ok_or_else(|| {
                        corrupt(format!("{} is not a revision", k.escape_ascii()))
                    })?;
                    sink.put(Table::Meta, k.to_vec(), rev.to_be_bytes().to_vec())?;
                    report.compact_revision = report.compact_revision.max(rev);
                } else {
                    // 3.5+ keeps `term` and `confState` here: Raft state of the old cluster.
                    drop_one(&mut report);
                }
                Ok(())
            })?;
        } else {
            each(&mut r, bucket, |k, item| {
                let converted = match (item, opts.foreign) {
                    (rusd_bolt::Item::Value(v), Some(foreign)) => foreign(name, k, v),
                    _ => None,
                };
                match converted {
                    Some((table, key, value)) => {
                        sink.put(table, key, value)?;
                        report.foreign += 1;
                    }
                    None => drop_one(&mut report),
                }
                Ok(())
            })?;
        }
    }
    let Sink { backend, batch } = sink;
    backend.apply(batch)?;
    backend.flush()?;
    backend.close()?;
    Ok(report)
}
