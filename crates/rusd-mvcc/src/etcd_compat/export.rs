//! The store as an etcd bbolt file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use super::{bolt_error, buckets, proto, rev_key, ExtraBuckets, TRAILER};
use crate::backend::{ReadTx, Table};
use crate::codec::{self, take_varint, Record};
use crate::error::{Error, Result};
use crate::revision::Revision;
use crate::store::{meta, MvccStore};

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Main revision of the newest record in the `key` bucket (what `etcdctl snapshot status`
    /// reports as the revision); 0 if there is none.
    pub revision: i64,
    /// The compaction revision written to `meta` (-1 if none).
    pub compact_revision: i64,
    /// The applied index written as `consistent_index`.
    pub consistent_index: u64,
    /// Records in the `key` bucket.
    pub kv_records: u64,
    /// Leases in the `lease` bucket.
    pub leases: u64,
    /// Size of the bolt file in bytes.
    pub size: u64,
}

impl MvccStore {
    /// Writes the store as an etcd 3.4 bbolt file to `out` (from its current position): the
    /// `key`, `lease` and `meta` buckets from one consistent state of the store (pending
    /// writes are committed first, then one committed state is read: writes made meanwhile are
    /// not in it), plus `extra` (the server's buckets; entries under the three names the store
    /// owns are ignored).
    ///
    /// Memory use does not depend on the data size; the file is written front to back except
    /// for its first two pages, written last.
    ///
    /// # Errors
    /// A backend or write error, or an undecodable record.
    pub fn export_etcd<W: Write + Seek>(
        &self,
        out: W,
        extra: &ExtraBuckets,
    ) -> Result<(W, ExportSummary)> {
        let tx = self.inner.backend.read_committed()?;
        let mut summary = ExportSummary {
            compact_revision: -1,
            ..ExportSummary::default()
        };
        let meta_bucket = meta_entries(&tx, &mut summary)?;
        let mut names: Vec<&[u8]> = extra.keys().map(Vec::as_slice).collect();
        names.extend([buckets::KEY, buckets::LEASE, buckets::META]);
        names.sort_unstable();
        names.dedup();
        let mut w = rusd_bolt::Writer::new(out).map_err(bolt_error)?;
        for name in names {
            w.begin_bucket(name).map_err(bolt_error)?;
            if name == buckets::KEY {
                export_kv(&tx, &mut w, &mut summary)?;
            } else if name == buckets::LEASE {
                export_leases(&tx, &mut w, &mut summary)?;
            } else if name == buckets::META {
                for (k, v) in &meta_bucket {
                    w.put(k, v).map_err(bolt_error)?;
                }
            } else if let Some(entries) = extra.get(name) {
                for (k, v) in entries {
                    w.put(k, v).map_err(bolt_error)?;
                }
            }
            w.end_bucket().map_err(bolt_error)?;
        }
        let (out, written) = w.finish().map_err(bolt_error)?;
        summary.size = written.size;
        Ok((out, summary))
    }

    /// Exports the store (see [`MvccStore::export_etcd`]) into a temporary file in `tmp_dir`,
    /// ready to be sent as an etcd snapshot: the bolt file followed by its SHA-256.
    ///
    /// The file is unlinked at once where the platform allows it (else when the snapshot is
    /// dropped), so nothing is left behind by a crash.
    ///
    /// # Errors
    /// As [`MvccStore::export_etcd`], or the temporary file cannot be created.
    pub fn etcd_snapshot(&self, tmp_dir: &Path, extra: &ExtraBuckets) -> Result<EtcdSnapshot> {
        let (file, path) = temp_file(tmp_dir)?;
        let mut snapshot = EtcdSnapshot {
            file: None,
            path,
            summary: ExportSummary::default(),
        };
        let out = std::io::BufWriter::with_capacity(1 << 20, file);
        let (out, summary) = self.export_etcd(out, extra)?;
        let mut file = out.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        file.seek(SeekFrom::Start(0))?;
        snapshot.file = Some(file);
        snapshot.summary = summary;
        Ok(snapshot)
    }
}

/// An exported etcd snapshot waiting to be sent (see [`MvccStore::etcd_snapshot`]).
pub struct EtcdSnapshot {
    file: Option<std::fs::File>,
    /// Set while the temporary file still has a name.
    path: Option<PathBuf>,
    /// What the export wrote.
    pub summary: ExportSummary,
}

impl EtcdSnapshot {
    /// Bytes [`EtcdSnapshot::write_to`] writes: the bolt file and the 32-byte SHA-256.
    pub fn len(&self) -> u64 {
        self.summary.size + TRAILER
    }

    /// Always false: a bolt file has at least four pages.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the bolt file and then the SHA-256 of it (etcd's snapshot stream); returns the
    /// bytes written.
    ///
    /// # Errors
    /// A read or write error.
    pub fn write_to<W: Write>(mut self, out: &mut W) -> Result<u64> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::Backend("snapshot file already consumed".into()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut left = self.summary.size;
        while left > 0 {
            let n = buf.len().min(left as usize);
            file.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        out.write_all(&hasher.finalize())?;
        out.flush()?;
        Ok(self.len())
    }
}

impl Drop for EtcdSnapshot {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Creates a new temporary file in `dir` and unlinks it if the platform allows that for an
/// open file; returns the file and its path if it still has one.
fn temp_file(dir: &Path) -> Result<(std::fs::File, Option<PathBuf>)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    loop {
        let path = dir.join(format!(
            ".etcd-snapshot-{}-{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                let path = if cfg!(unix) && std::fs::remove_file(&path).is_ok() {
                    None
                } else {
                    Some(path)
                };
                return Ok((file, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The `meta` bucket: applied index and compaction revisions in etcd's encodings.
fn meta_entries(tx: &ReadTx, summary: &mut ExportSummary) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let be = |v: Vec<u8>| -> Option<[u8; 8]> { v.try_into().ok() };
    let mut out = Vec::new();
    if let Some(index) = tx.get(Table::Meta, meta::CONSISTENT_INDEX)?.and_then(be) {
        summary.consistent_index = u64::from_be_bytes(index);
        out.push((meta::CONSISTENT_INDEX.to_vec(), index.to_vec()));
    }
    let scheduled = tx.get(Table::Meta, meta::SCHEDULED_COMPACT)?.and_then(be);
    let finished = tx.get(Table::Meta, meta::FINISHED_COMPACT)?.and_then(be);
    if let Some(rev) = finished {
        let rev = i64::from_be_bytes(rev);
        out.push((meta::FINISHED_COMPACT.to_vec(), rev_key(rev, 0, false)));
        summary.compact_revision = rev;
    }
    if let Some(rev) = scheduled {
        let rev = i64::from_be_bytes(rev);
        out.push((meta::SCHEDULED_COMPACT.to_vec(), rev_key(rev, 0, false)));
        summary.compact_revision = summary.compact_revision.max(rev);
    }
    out.sort();
    Ok(out)
}

/// Runs a table scan whose callback can fail.
fn scan_all(
    tx: &ReadTx,
    table: Table,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut failure = None;
    tx.scan(
        table,
        (Bound::Unbounded, Bound::Unbounded),
        false,
        |k, v| match f(k, v) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

/// One record of the kv table as etcd stores it in its `key` bucket: (revision key, value).
fn etcd_kv_record(rev: Revision, stored: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok(match codec::decode(stored, rev.main, true)? {
        Record::Put(kv) => (
            rev_key(rev.main, rev.sub, false),
            proto::encode_key_value(&kv),
        ),
        Record::Tombstone(key) => (
            rev_key(rev.main, rev.sub, true),
            proto::encode_tombstone(&key),
        ),
    })
}

fn export_kv<W: Write + Seek>(
    tx: &ReadTx,
    w: &mut rusd_bolt::Writer<W>,
    summary: &mut ExportSummary,
) -> Result<()> {
    scan_all(tx, Table::Kv, |k, v| {
        let rev = Revision::from_bytes(k)
            .ok_or_else(|| Error::Corrupted(format!("kv table key {k:?}")))?;
        let (key, value) = etcd_kv_record(rev, v)?;
        w.put(&key, &value).map_err(bolt_error)?;
        summary.revision = rev.main;
        summary.kv_records += 1;
        Ok(())
    })
}

fn export_leases<W: Write + Seek>(
    tx: &ReadTx,
    w: &mut rusd_bolt::Writer<W>,
    summary: &mut ExportSummary,
) -> Result<()> {
    scan_all(tx, Table::Lease, |k, v| {
        let id = <[u8; 8]>::try_from(k)
            .map(i64::from_be_bytes)
            .map_err(|_| Error::Corrupted(format!("lease table key {k:?}")))?;
        let mut v = v;
        let ttl = take_varint(&mut v)
            .ok_or_else(|| Error::Corrupted(format!("lease {id} record")))?
            as i64;
        w.put(k, &proto::encode_lease(id, ttl))
            .map_err(bolt_error)?;
        summary.leases += 1;
        Ok(())
    })
}
