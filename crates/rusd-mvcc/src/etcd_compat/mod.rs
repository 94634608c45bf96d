//! etcd's backend layout: exporting the store as an etcd bbolt file and importing one.
//!
//! etcd keeps its state in a bbolt file with one bucket per concern. `etcdctl snapshot
//! status|restore` and etcd itself read that layout, so rusd writes it for snapshots and reads
//! it to take over an etcd data directory or an etcd snapshot. The mapping:
//!
//! | etcd bucket | etcd key → value | rusd |
//! |---|---|---|
//! | `key` | `BE64(main) '_' BE64(sub)` (+ `'t'` for a tombstone) → `mvccpb.KeyValue` (a tombstone: the key only) | `kv` table: 16-byte revision → record (`codec.rs`) |
//! | `meta` | `consistent_index` → BE64; `finishedCompactRev`, `scheduledCompactRev` → 17-byte revision | `meta` table, revisions as BE64 main |
//! | `lease` | BE64 id → `leasepb.Lease{ID, TTL}` | `lease` table: BE64 id → varint TTL |
//! | `alarm`, `auth*`, `cluster`, `members`, `members_removed` | owned by the server | given by the caller ([`ExtraBuckets`] on export, [`ImportOptions::foreign`] on import) |
//!
//! Export ([`MvccStore::export_etcd`](crate::MvccStore::export_etcd), [`MvccStore::etcd_snapshot`](crate::MvccStore::etcd_snapshot)) reads one consistent
//! backend view and streams it through [`rusd_bolt::Writer`]; memory use does not depend on the
//! data size. The snapshot form adds etcd's SHA-256 trailer.
//!
//! Import ([`import_bolt`], [`import_data_dir_db`]) walks the bolt file with
//! [`rusd_bolt::Reader`] and writes a new redb file in batches. The applied index is not
//! imported: an imported store starts a new Raft log at index 0, as a member restored by
//! `etcdctl snapshot restore` starts a new cluster.

mod export;
mod import;
pub(crate) mod proto;

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub use export::{EtcdSnapshot, ExportSummary};
pub use import::{
    import_bolt, import_data_dir_db, import_pending, ForeignBucketFn, ImportOptions, ImportReport,
    IMPORTED_SUFFIX, PENDING_SUFFIX,
};

/// etcd's bucket names (3.4).
pub mod buckets {
    /// Key revisions.
    pub const KEY: &[u8] = b"key";
    /// Applied index and compaction revisions.
    pub const META: &[u8] = b"meta";
    /// Leases.
    pub const LEASE: &[u8] = b"lease";
    /// Raised alarms.
    pub const ALARM: &[u8] = b"alarm";
    /// Auth flags and revision.
    pub const AUTH: &[u8] = b"auth";
    /// Auth users.
    pub const AUTH_USERS: &[u8] = b"authUsers";
    /// Auth roles.
    pub const AUTH_ROLES: &[u8] = b"authRoles";
    /// Cluster version.
    pub const CLUSTER: &[u8] = b"cluster";
    /// Members.
    pub const MEMBERS: &[u8] = b"members";
    /// Removed members.
    pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
}

/// Buckets the store does not own, by name, each a sorted map of entries.
pub type ExtraBuckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Length of an etcd revision key (`BE64 '_' BE64`); a tombstone adds one byte.
const REV_KEY: usize = 17;
/// Length of the SHA-256 trailer of a snapshot.
const TRAILER: u64 = 32;
/// etcdctl's rule: a file "has a checksum" if its size is a multiple of this plus 32.
const TRAILER_ALIGN: u64 = 512;

/// etcd's revision key: `BE64(main) '_' BE64(sub)`, plus `'t'` for a tombstone.
pub(crate) fn rev_key(main: i64, sub: i64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(REV_KEY + 1);
    k.extend_from_slice(&main.to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// Parses etcd's revision key into `(main, sub, tombstone)`.
pub(crate) fn parse_rev_key(k: &[u8]) -> Option<(i64, i64, bool)> {
    let tombstone = match k.len() {
        REV_KEY => false,
        18 if k[17] == b't' => true,
        _ => return None,
    };
    if k[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(k[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(k[9..17].try_into().ok()?);
    (main >= 0 && sub >= 0).then_some((main, sub, tombstone))
}

/// Maps a bolt reader/writer error: malformed data is a corrupt snapshot.
pub(crate) fn bolt_error(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Error::CorruptSnapshot(e.to_string())
        }
        std::io::ErrorKind::InvalidInput => Error::InvalidArgument(e.to_string()),
        _ => Error::Io(e),
    }
}

/// Whether the file at `path` is a bbolt file (an etcd database or snapshot): one of its two
/// meta pages is valid (magic, version and checksum). A missing or short file is not.
///
/// # Errors
/// A read error other than "not found".
pub fn is_bolt_file(path: &Path) -> Result<bool> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let mut head = [0u8; 128];
    if read_up_to(&mut f, &mut head)? < head.len() {
        return Ok(false);
    }
    if rusd_bolt::is_meta_page(&head) {
        return Ok(true);
    }
    if head.starts_with(b"redb") || head.starts_with(b"RUSDSNAP") {
        return Ok(false);
    }
    // The first meta page may be the damaged one; the second sits one default page further.
    f.seek(std::io::SeekFrom::Start(
        rusd_bolt::DEFAULT_PAGE_SIZE as u64,
    ))?;
    Ok(read_up_to(&mut f, &mut head)? == head.len() && rusd_bolt::is_meta_page(&head))
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Checks a snapshot file's SHA-256 trailer as `etcdctl snapshot restore` does: a file whose
/// size is `n * 512 + 32` ends with the SHA-256 of everything before it. Returns whether the
/// file has a trailer (a bolt file copied from a data directory has none).
///
/// # Errors
/// [`Error::CorruptSnapshot`] if the trailer does not match; a read error.
pub fn verify_snapshot_checksum(path: &Path) -> Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len % TRAILER_ALIGN != TRAILER {
        return Ok(false);
    }
    let mut hasher = Sha256::new();
    let mut left = len - TRAILER;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = buf.len().min(left as usize);
        f.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; TRAILER as usize];
    f.read_exact(&mut trailer)?;
    if hasher.finalize()[..] != trailer[..] {
        return Err(Error::CorruptSnapshot(
            "expected sha256 does not match".into(),
        ));
    }
    Ok(true)
}

/// What `etcdctl snapshot status` reports about a bolt file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdStatus {
    /// CRC-32C over every top-level bucket's name and its entries' keys and values.
    pub hash: u32,
    /// Main revision of the last entry of the `key` bucket.
    pub revision: i64,
    /// Entries of all top-level buckets.
    pub total_key: u64,
    /// Pages in use times the page size.
    pub total_size: u64,
}

/// Computes what `etcdctl snapshot status` reports, after the same integrity check.
///
/// # Errors
/// [`Error::CorruptSnapshot`] if the file is not a bolt file or fails the check.
pub fn etcd_status(path: &Path) -> Result<EtcdStatus> {
    let file = std::fs::File::open(path)?;
    let mut r = rusd_bolt::Reader::open(file).map_err(bolt_error)?;
    let problems = r.check().map_err(bolt_error)?;
    if !problems.is_empty() {
        return Err(Error::CorruptSnapshot(format!(
            "snapshot file integrity check failed. {} errors found: {}",
            problems.len(),
            problems.join("; ")
        )));
    }
    let mut status = EtcdStatus {
        hash: 0,
        revision: 0,
        total_key: 0,
        total_size: r.meta().size(),
    };
    let mut tops = Vec::new();
    let root = r.root();
    let _ = r
        .for_each(&root, &mut |name, item| {
            match item {
                rusd_bolt::Item::Bucket(b) => tops.push((name.to_vec(), b)),
                rusd_bolt::Item::Value(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("cannot get hash of bucket {}", name.escape_ascii()),
                    ))
                }
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .map_err(bolt_error)?;
    for (name, bucket) in tops {
        status.hash = crc32c::crc32c_append(status.hash, &name);
        let is_key = name == buckets::KEY;
        let _ = r
            .for_each(&bucket, &mut |k, item| {
                status.hash = crc32c::crc32c_append(status.hash, k);
                if let rusd_bolt::Item::Value(v) = item {
                    status.hash = crc32c::crc32c_append(status.hash, v);
                }
                if is_key {
                    if let Some(main) = k.get(..8) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(main);
                        status.revision = i64::from_be_bytes(b);
                    }
                }
                status.total_key += 1;
                Ok(std::ops::ControlFlow::Continue(()))
            })
            .map_err(bolt_error)?;
    }
    Ok(status)
}

#[cfg(test)]
mod tests;
