//! Streaming a consistent copy of the backend out, and building a database from one.
//!
//! Stream layout (all integers little-endian):
//!
//! ```text
//! "RUSDSNAP" u32:format(=1)
//! per table:  0x01 u8:name_len name  (0x02 u32:key_len key u32:value_len value)*  0x03
//! 0x04
//! zero bytes up to a multiple of 512 bytes
//! sha256 of every byte before it (32 bytes)
//! ```
//!
//! The trailer is etcd's convention for snapshot streams, and the padding makes the stream
//! pass `etcdctl snapshot save`'s check that a file is "n x 512 bytes + a SHA-256" (bolt files
//! are page-aligned), so etcdctl saves the stream as it is. Streams without the padding (written
//! before it existed) still restore.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::MutexGuard;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use sha2::{Digest, Sha256};

use super::defrag::Pending;
use super::{load_live_bytes, open_database, Backend, ReadTx, Snapshot, Table, View};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"RUSDSNAP";
const FORMAT: u32 = 1;
const TABLE_START: u8 = 1;
const ENTRY: u8 = 2;
const TABLE_END: u8 = 3;
const STREAM_END: u8 = 4;
/// The data before the trailer is padded to a multiple of this (etcdctl's `hasChecksum`).
const ALIGN: u64 = 512;
/// Length of the SHA-256 trailer.
const TRAILER: usize = 32;
/// Entries written per redb transaction while restoring.
const RESTORE_BATCH: usize = 10_000;
/// Largest key or value a snapshot may carry; anything larger is corruption.
const MAX_ITEM: u32 = 1 << 30;

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)?;
        Ok(())
    }
}

impl Backend {
    /// Writes a consistent snapshot of every table to `out`, returning the bytes written.
    ///
    /// Commits pending writes first, then streams one redb read transaction: the snapshot is the
    /// state after some whole batch, never a torn one. Memory use does not depend on the data
    /// size.
    ///
    /// # Errors
    /// Fails on a backend or write error.
    pub fn snapshot_to<W: Write>(&self, out: &mut W) -> Result<u64> {
        self.flush()?;
        let db = self.inner.db.load_full();
        let txn = db.begin_read()?;
        let mut w = HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            written: 0,
        };
        w.put(MAGIC)?;
        w.put(&FORMAT.to_le_bytes())?;
        for table in Table::ALL {
            let name = table.name().as_bytes();
            w.put(&[TABLE_START, name.len() as u8])?;
            w.put(name)?;
            let t = txn.open_table(table.definition())?;
            for entry in t.iter()? {
                let (k, v) = entry?;
                let (k, v) = (k.value(), v.value());
                w.put(&[ENTRY])?;
                w.put(&(k.len() as u32).to_le_bytes())?;
                w.put(k)?;
                w.put(&(v.len() as u32).to_le_bytes())?;
                w.put(v)?;
            }
            w.put(&[TABLE_END])?;
        }
        w.put(&[STREAM_END])?;
        let pad = (ALIGN - w.written % ALIGN) % ALIGN;
        w.put(&vec![0u8; pad as usize])?;
        let digest = w.hasher.finalize();
        w.inner.write_all(&digest)?;
        w.inner.flush()?;
        Ok(w.written + TRAILER as u64)
    }

    /// A read view of the committed state only: commits pending writes, then reads one redb
    /// read transaction. Unlike [`Backend::read`], whose active overlay keeps receiving
    /// writes, later writes never show in it; commits hold whole batches, so it is the state
    /// after some whole batch (used by `etcd_compat`'s export).
    ///
    /// # Errors
    /// The commit or the read transaction failed.
    pub(crate) fn read_committed(&self) -> Result<super::ReadTx> {
        self.flush()?;
        let db = self.inner.db.load_full();
        Ok(super::ReadTx::new(std::sync::Arc::new(super::View {
            snapshot: std::sync::Arc::new(super::Snapshot::new(&db)?),
            frozen: Vec::new(),
            active: std::sync::Arc::default(),
        })))
    }

    /// Builds a new database file at `path` from a snapshot stream, verifying its checksum.
    ///
    /// Nothing is left at `path` unless the whole stream was read and its checksum matched.
    ///
    /// # Errors
    /// [`Error::CorruptSnapshot`] for a malformed stream or a checksum mismatch; `path` must not
    /// exist yet.
    pub fn restore<R: Read>(input: R, path: &Path, cache_size: usize) -> Result<()> {
        if path.exists() {
            return Err(Error::InvalidArgument(format!(
                "restore target {} exists already",
                path.display()
            )));
        }
        let tmp = path.with_extension("restoring");
        let _ = std::fs::remove_file(&tmp);
        let result = restore_into(input, &tmp, cache_size);
        match result {
            Ok((db, _)) => {
                drop(db);
                std::fs::rename(&tmp, path)?;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// The file an install builds next to the database: `<db>.installing` (open removes a stale
/// one).
pub(super) fn install_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".installing");
    PathBuf::from(name)
}

/// A snapshot written into a new database file next to the current one, verified and durable
/// but not in use: the first half of `MvccStore::install_snapshot`. Dropping it without
/// [`Backend::install`] deletes the file.
///
/// It holds the backend's file-replacement lock (`defrag`) until it is installed or dropped:
/// no defragment or other install runs in between.
pub(crate) struct PreparedInstall<'a> {
    db: Arc<Database>,
    tmp: PathBuf,
    live_bytes: u64,
    stream_bytes: u64,
    installed: bool,
    _exclusive: MutexGuard<'a, ()>,
}

impl PreparedInstall<'_> {
    /// A read view of the new database.
    ///
    /// # Errors
    /// A redb read error.
    pub(crate) fn read(&self) -> Result<ReadTx> {
        Ok(ReadTx::new(Arc::new(View {
            snapshot: Arc::new(Snapshot::new(&self.db)?),
            frozen: Vec::new(),
            active: Arc::default(),
        })))
    }

    /// Bytes of the snapshot stream, trailer included.
    pub(crate) fn stream_bytes(&self) -> u64 {
        self.stream_bytes
    }
}

impl Drop for PreparedInstall<'_> {
    fn drop(&mut self) {
        if !self.installed {
            // Still our file: the rename did not happen. Linux lets us unlink it while open.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Backend {
    /// Reads a snapshot stream into `<db>.installing`, verifying its checksum, and makes the
    /// file durable. The running backend is untouched: reads and writes go on meanwhile.
    ///
    /// # Errors
    /// [`Error::CorruptSnapshot`] for a malformed, truncated or mismatching stream;
    /// [`Error::Poisoned`] or [`Error::Closed`]; an I/O or redb error. No file is left behind.
    pub(crate) fn prepare_install<R: Read>(&self, input: R) -> Result<PreparedInstall<'_>> {
        let exclusive = self.inner.defrag.lock();
        self.inner.check_writable()?;
        let tmp = install_path(&self.inner.config.path);
        let _ = std::fs::remove_file(&tmp);
        let built = restore_into(input, &tmp, self.inner.config.cache_size)
            .and_then(|(db, stream_bytes)| Ok((load_live_bytes(&db)?, db, stream_bytes)));
        match built {
            Ok((live_bytes, db, stream_bytes)) => Ok(PreparedInstall {
                db: Arc::new(db),
                tmp,
                live_bytes,
                stream_bytes,
                installed: false,
                _exclusive: exclusive,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Swaps a prepared database in: renames it over the database file (atomic, directory
    /// synced), discards every write not committed yet, and points commits and new readers at
    /// it. Readers holding a view of the old file finish on it. The caller (the store) must make
    /// sure nothing writes meanwhile.
    ///
    /// # Errors
    /// An error leaves the old database in use and untouched. If syncing the directory fails
    /// after the rename, the new database is in use but the rename may not be durable: the
    /// backend is poisoned (later writes fail) and this returns `Ok`; see
    /// [`Backend::check_writable`].
    pub(crate) fn install(&self, mut prepared: PreparedInstall<'_>) -> Result<()> {
        self.inner.check_writable()?;
        // No commit runs while the files change: it would write old data into the new file or
        // publish a snapshot of the old one.
        let _commit = self.inner.commit.lock();
        self.inner
            .swap_database(&prepared.tmp, prepared.db.clone(), Pending::Discard)?;
        prepared.installed = true;
        self.inner
            .live_bytes
            .store(prepared.live_bytes, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner
            .read_exact(buf)
            .map_err(|e| Error::CorruptSnapshot(format!("truncated stream: {e}")))?;
        self.hasher.update(&*buf);
        self.read += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn item(&mut self) -> Result<Vec<u8>> {
        let len = self.u32()?;
        if len > MAX_ITEM {
            return Err(Error::CorruptSnapshot(format!("item of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.exact(&mut buf)?;
        Ok(buf)
    }
}

/// Builds a database at `path` from a snapshot stream and returns it, open, with the number of
/// stream bytes read. Durable when it returns; an error may leave a partial file at `path`.
fn restore_into<R: Read>(input: R, path: &Path, cache_size: usize) -> Result<(Database, u64)> {
    let mut r = HashingReader {
        inner: input,
        hasher: Sha256::new(),
        read: 0,
    };
    let mut magic = [0u8; 8];
    r.exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(Error::CorruptSnapshot("not a rusd snapshot".into()));
    }
    let format = r.u32()?;
    if format != FORMAT {
        return Err(Error::CorruptSnapshot(format!("unknown format {format}")));
    }
    let db = open_database(path, cache_size)?;
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(RESTORE_BATCH);
    loop {
        match r.byte()? {
            TABLE_START => {
                let len = r.byte()?;
                let mut name = vec![0u8; usize::from(len)];
                r.exact(&mut name)?;
                let name = String::from_utf8_lossy(&name).into_owned();
                let table = Table::from_name(&name)
                    .ok_or_else(|| Error::CorruptSnapshot(format!("unknown table {name}")))?;
                loop {
                    match r.byte()? {
                        ENTRY => {
                            let k = r.item()?;
                            let v = r.item()?;
                            batch.push((k, v));
                            if batch.len() >= RESTORE_BATCH {
                                write_batch(&db, table, &mut batch, Durability::None)?;
                            }
                        }
                        TABLE_END => {
                            write_batch(&db, table, &mut batch, Durability::None)?;
                            break;
                        }
                        other => {
                            return Err(Error::CorruptSnapshot(format!("unexpected tag {other}")))
                        }
                    }
                }
            }
            STREAM_END => break,
            other => return Err(Error::CorruptSnapshot(format!("unexpected tag {other}"))),
        }
    }
    // Zero padding to the alignment (absent in older streams), then the checksum.
    let mut rest = Vec::with_capacity(ALIGN as usize + TRAILER);
    (&mut r.inner)
        .take(2 * ALIGN + TRAILER as u64)
        .read_to_end(&mut rest)?;
    if rest.len() < TRAILER {
        return Err(Error::CorruptSnapshot("missing checksum".into()));
    }
    let (pad, trailer) = rest.split_at(rest.len() - TRAILER);
    let aligned = (r.read + pad.len() as u64).is_multiple_of(ALIGN);
    if !pad.is_empty() && (!aligned || pad.len() as u64 >= ALIGN || pad.iter().any(|&b| b != 0)) {
        return Err(Error::CorruptSnapshot(
            "bad padding before the checksum".into(),
        ));
    }
    r.hasher.update(pad);
    let expected = r.hasher.finalize();
    if trailer[..] != expected[..] {
        return Err(Error::CorruptSnapshot("sha256 checksum mismatch".into()));
    }
    // The final commit makes everything durable.
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.commit()?;
    Ok((db, r.read + rest.len() as u64))
}

fn write_batch(
    db: &Database,
    table: Table,
    batch: &mut Vec<(Vec<u8>, Vec<u8>)>,
    durability: Durability,
) -> Result<()> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    {
        let mut t = txn.open_table(table.definition())?;
        for (k, v) in batch.drain(..) {
            t.insert(&*k, &*v)?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendConfig;

    fn backend(dir: &Path) -> Backend {
        Backend::open(BackendConfig::new(dir.join("db"))).expect("open")
    }

    /// etcdctl's `snapshot save` accepts a stream only if its length is n x 512 + 32.
    #[test]
    fn streams_are_aligned_for_etcdctl_and_unpadded_ones_still_restore() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = backend(dir.path());
        let mut stream = Vec::new();
        let written = b.snapshot_to(&mut stream).expect("snapshot");
        assert_eq!(written as usize, stream.len());
        assert_eq!(stream.len() as u64 % ALIGN, TRAILER as u64);
        Backend::restore(&stream[..], &dir.path().join("a"), 1 << 20).expect("restore");

        // The same data without the padding, as written before it existed.
        let body = &stream[..stream.len() - TRAILER];
        let end = body.iter().rposition(|&b| b != 0).expect("end tag") + 1;
        assert_eq!(stream[end - 1], STREAM_END);
        assert!(end < body.len(), "this stream needs padding");
        let mut old = stream[..end].to_vec();
        old.extend_from_slice(&Sha256::digest(&old));
        Backend::restore(&old[..], &dir.path().join("b"), 1 << 20).expect("restore old");

        // Non-zero padding is corruption.
        let mut bad = stream.clone();
        bad[end] = 1;
        let body = bad.len() - TRAILER;
        let sha = Sha256::digest(&bad[..body]);
        bad[body..].copy_from_slice(&sha);
        let err = Backend::restore(&bad[..], &dir.path().join("c"), 1 << 20).unwrap_err();
        assert!(matches!(err, Error::CorruptSnapshot(_)), "{err}");
    }
}
