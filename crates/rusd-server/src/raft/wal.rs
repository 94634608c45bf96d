//! The Raft log's entries in append-only segment files next to `raft.redb` (which keeps only the
//! vote, committed, purged and identity marks).
//!
//! A segment is `log-<index of its first record, 20 digits>.seg`, preallocated with zeros (so a
//! later write plus `fdatasync` changes no file size or block map), holding records back to back:
//!
//! ```text
//! len: u32 LE | crc32c: u32 LE | index: u64 LE | payload (len bytes)
//! ```
//!
//! `crc32c` covers the index and the payload. A group commit is one [`Batch`]: one positional
//! write at the end of the last segment, then one `fdatasync` ([`Pending::sync`]). A batch that
//! does not fit rolls to the next segment, which a background thread has zero-filled and synced
//! ahead of time as `*.seg.tmp` (etcd's file pipeline): rolling is a rename and a directory fsync.
//!
//! **Recovery** ([`SegmentLog::open`]) reads the segments in order and accepts records while the
//! length is non-zero, the checksum matches and the indexes are consecutive. Only the last
//! segment with records may end in something else (a torn write); it is cut there. A segment
//! that ends badly but is followed by records is corruption, as is a gap between segments: open
//! fails rather than drop records that were synced.
//!
//! **No stale record ever follows a new one**: the next append after an open, a truncation or a
//! purge of everything starts a fresh segment, so records are only ever written into zeros.
//!
//! Synchronous code; the caller (`log_writer.rs`) serialises writes, truncations and purges.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Size of a segment file. etcd's WAL uses 64 MiB; a quarter of that keeps the zero-filling
/// every member start does (the active segment and a spare) at 32 MiB instead of 128, which
/// matters for small clusters and test runs, while a roll (a rename and a directory fsync, off
/// the hot path's fdatasync) still comes only every ~3 s at 20k puts/s of 256-byte values.
pub const SEGMENT_BYTES: u64 = 16 << 20;

const HEADER: usize = 16;
const PREFIX: &str = "log-";
const SUFFIX: &str = ".seg";
const TMP_SUFFIX: &str = ".seg.tmp";

/// What can go wrong with the segment log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// To which file.
        path: PathBuf,
        /// Why it failed.
        source: io::Error,
    },
    /// A segment holds something recovery must not drop or cannot explain.
    #[error("corrupt raft log segment {}: {what}", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An append does not continue the log.
    #[error("append of index {got} where index {expected} comes next")]
    Gap {
        /// The next index of the log.
        expected: u64,
        /// The appended one.
        got: u64,
    },
    /// A payload could not be encoded.
    #[error("encoding a log record: {0}")]
    Encode(String),
    /// An earlier write or sync failed: nothing may claim durability after it.
    #[error("the raft log is unusable after an earlier write failure")]
    Poisoned,
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The file name of the segment whose first record is `first`.
pub fn segment_name(first: u64) -> String {
    format!("{PREFIX}{first:020}{SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, by first index.
///
/// # Errors
/// The directory cannot be listed.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_error("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("listing", dir))?;
        if let Some(first) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

/// Records to write together (one group commit). Indexes must be consecutive.
#[derive(Default)]
pub struct Batch {
    buf: Vec<u8>,
    first: Option<u64>,
    /// Where each record starts in `buf`.
    offsets: Vec<u64>,
}

impl Batch {
    /// No records.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The encoded size of the records.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the records, keeping the buffer.
    pub fn clear(&mut self) {
        if self.buf.capacity() > 16 << 20 {
            // Do not keep an unusually large batch's buffer for ever.
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.first = None;
        self.offsets.clear();
    }

    /// Adds the record of `index` whose payload `payload` appends to the buffer.
    ///
    /// # Errors
    /// `index` does not follow the previous record, the payload is empty, longer than 4 GiB or
    /// failed to encode.
    pub fn push_with<E: std::fmt::Display>(
        &mut self,
        index: u64,
        payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), WalError> {
        if let Some(first) = self.first {
            let expected = first + self.offsets.len() as u64;
            if index != expected {
                return Err(WalError::Gap {
                    expected,
                    got: index,
                });
            }
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER]);
        if let Err(e) = payload(&mut self.buf) {
            self.buf.truncate(start);
            return Err(WalError::Encode(e.to_string()));
        }
        let len = self.buf.len() - start - HEADER;
        let Some(len) = u32::try_from(len).ok().filter(|&l| l > 0) else {
            self.buf.truncate(start);
            return Err(WalError::Encode(format!("payload of {len} bytes")));
        };
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&index.to_le_bytes()),
            &self.buf[start + HEADER..],
        );
        self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.buf[start + 8..start + 16].copy_from_slice(&index.to_le_bytes());
        self.first.get_or_insert(index);
        self.offsets.push(start as u64);
        Ok(())
    }

    /// Adds the record of `index` with `payload`.
    ///
    /// # Errors
    /// See [`Batch::push_with`].
    pub fn push(&mut self, index: u64, payload: &[u8]) -> Result<(), WalError> {
        self.push_with(index, |buf| {
            buf.extend_from_slice(payload);
            Ok::<(), std::convert::Infallible>(())
        })
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where each record starts: the record of `first + i` at `offsets[i]`.
    offsets: Vec<u64>,
    /// Where the next record goes (the end of the last one).
    end: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }

    /// Offset of the record of `index`, or the end if `index` follows the last one.
    fn offset(&self, index: u64) -> u64 {
        let i = (index - self.first) as usize;
        self.offsets.get(i).copied().unwrap_or(self.end)
    }
}

/// A write not yet durable: [`Pending::sync`] makes it so. Call it without holding the log's
/// lock, so that readers need not wait for the disk; if it fails, [`SegmentLog::poison`] the log.
#[must_use]
pub struct Pending {
    file: Option<(Arc<File>, PathBuf)>,
}

impl Pending {
    /// `fdatasync`s the segment written to.
    ///
    /// # Errors
    /// The sync failed: the write may or may not be on disk.
    pub fn sync(self) -> Result<(), WalError> {
        match self.file {
            Some((file, path)) => file.sync_data().map_err(io_error("syncing", &path)),
            None => Ok(()),
        }
    }
}

/// Consecutive records of one segment to read outside the log's lock
/// ([`SegmentLog::spans`]).
pub struct Span {
    file: Arc<File>,
    path: PathBuf,
    first: u64,
    count: usize,
    offset: u64,
    len: usize,
}

impl Span {
    /// The records' (index, payload), checksums verified.
    ///
    /// # Errors
    /// The read failed or the records are not what the index says.
    pub fn read(&self) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        let mut buf = vec![0; self.len];
        self.file
            .read_exact_at(&mut buf, self.offset)
            .map_err(io_error("reading", &self.path))?;
        let mut out = Vec::with_capacity(self.count);
        let mut at = 0;
        for index in self.first..self.first + self.count as u64 {
            match decode(&buf[at..], index) {
                Decoded::Record(payload) => {
                    at += HEADER + payload.len();
                    out.push((index, payload.to_vec()));
                }
                _ => {
                    return Err(WalError::Corrupt {
                        path: self.path.clone(),
                        what: format!("record {index} at offset {} is damaged", self.offset),
                    })
                }
            }
        }
        Ok(out)
    }
}

enum Decoded<'a> {
    Record(&'a [u8]),
    /// A zero header: nothing was written here.
    End,
    /// Anything else: a torn write (or damage).
    Torn,
}

/// The record of `index` at the start of `buf`.
fn decode(buf: &[u8], index: u64) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER) else {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Torn
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let field = |at: usize| {
        let mut b = [0; 4];
        b.copy_from_slice(&header[at..at + 4]);
        u32::from_le_bytes(b)
    };
    let (len, crc) = (field(0) as usize, field(4));
    let mut idx = [0; 8];
    idx.copy_from_slice(&header[8..16]);
    let Some(payload) = buf.get(HEADER..HEADER + len) else {
        return Decoded::Torn;
    };
    if len == 0
        || u64::from_le_bytes(idx) != index
        || crc32c::crc32c_append(crc32c::crc32c(&idx), payload) != crc
    {
        return Decoded::Torn;
    }
    Decoded::Record(payload)
}

/// What a segment holds, read by recovery.
struct Scanned {
    offsets: Vec<u64>,
    end: u64,
    /// Whether the valid records end at a zero header or the end of the file (not at a torn or
    /// damaged record).
    clean: bool,
}

/// Reads the records of `first`, `first + 1`, ... from the start of `file`.
fn scan(file: &File, path: &Path, first: u64) -> Result<Scanned, WalError> {
    let size = file.metadata().map_err(io_error("reading", path))?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut offsets = Vec::new();
    let mut end = 0u64;
    let mut record = Vec::new();
    loop {
        let index = first + offsets.len() as u64;
        let mut header = [0u8; HEADER];
        let got = read_full(&mut reader, &mut header).map_err(io_error("reading", path))?;
        if got < HEADER {
            let clean = header[..got].iter().all(|&b| b == 0);
            return Ok(Scanned {
                offsets,
                end,
                clean,
            });
        }
        let mut len = [0; 4];
        len.copy_from_slice(&header[..4]);
        let len = u32::from_le_bytes(len) as u64;
        if len == 0 || end + HEADER as u64 + len > size {
            let clean = header.iter().all(|&b| b == 0);
            return Ok(Scanned {
                offsets,
                end,
                clean,
            });
        }
        record.clear();
        record.extend_from_slice(&header);
        record.resize(HEADER + len as usize, 0);
        let got =
            read_full(&mut reader, &mut record[HEADER..]).map_err(io_error("reading", path))?;
        if got < len as usize {
            return Ok(Scanned {
                offsets,
                end,
                clean: false,
            });
        }
        match decode(&record, index) {
            Decoded::Record(_) => {
                offsets.push(end);
                end += HEADER as u64 + len;
            }
            Decoded::End | Decoded::Torn => {
                return Ok(Scanned {
                    offsets,
                    end,
                    clean: false,
                })
            }
        }
    }
}

/// Reads until `buf` is full or the end of the file; returns how much was read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The log of records in segment files.
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// By first index; consecutive (each starts where the previous one ends).
    segments: Vec<Segment>,
    /// The last segment takes no more records: the next write starts a new one.
    sealed: bool,
    poisoned: bool,
    writes: u64,
    preparer: Preparer,
}

impl SegmentLog {
    /// Opens the segments in `dir` (creating it), recovering the valid prefix of the log, and
    /// deletes the segments holding only entries at or below `purged`.
    ///
    /// # Errors
    /// A file operation failed, or the segments are damaged where a crash cannot have left them
    /// so (see the module docs).
    pub fn open(dir: &Path, segment_bytes: u64, purged: Option<u64>) -> Result<Self, WalError> {
        fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        // Segments being prepared when the process ended.
        for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(TMP_SUFFIX))
            {
                fs::remove_file(entry.path()).map_err(io_error("removing", &entry.path()))?;
            }
        }
        let mut files = segment_files(dir)?;
        let mut removed = false;
        // Whole segments behind the purge mark (a purge that crashed before deleting them).
        if let Some(p) = purged {
            while files.len() >= 2 && files[1].0 <= p.saturating_add(1) {
                let (_, path) = files.remove(0);
                fs::remove_file(&path).map_err(io_error("removing", &path))?;
                removed = true;
            }
        }
        let mut segments = Vec::new();
        let mut ends_clean = Vec::new();
        for (first, path) in files {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_error("opening", &path))?;
            let scanned = scan(&file, &path, first)?;
            ends_clean.push(scanned.clean);
            segments.push(Segment {
                first,
                path,
                file: Arc::new(file),
                offsets: scanned.offsets,
                end: scanned.end,
            });
        }
        // Segments after the last one with records are empty or torn at their first record (a
        // crash right after a roll): nothing in them was synced.
        let keep = segments
            .iter()
            .rposition(|s| !s.offsets.is_empty())
            .map_or(0, |i| i + 1);
        for seg in segments.drain(keep..).rev() {
            fs::remove_file(&seg.path).map_err(io_error("removing", &seg.path))?;
            removed = true;
        }
        for (i, seg) in segments.iter().enumerate() {
            if i + 1 < segments.len() && !ends_clean[i] {
                return Err(WalError::Corrupt {
                    path: seg.path.clone(),
                    what: format!(
                        "a damaged record at offset {} is followed by later segments",
                        seg.end
                    ),
                });
            }
            if let Some(next) = segments.get(i + 1) {
                let expected = seg.first + seg.offsets.len() as u64;
                if next.first != expected {
                    return Err(WalError::Corrupt {
                        path: next.path.clone(),
                        what: format!("starts at index {} where {expected} comes next", next.first),
                    });
                }
            }
        }
        // Cut the last segment after its last valid record: what follows (zeros, or a torn
        // write) is never read again, since the next write starts a new segment.
        if let Some(seg) = segments.last() {
            let size = seg
                .file
                .metadata()
                .map_err(io_error("reading", &seg.path))?
                .len();
            if size > seg.end {
                seg.file
                    .set_len(seg.end)
                    .and_then(|()| seg.file.sync_all())
                    .map_err(io_error("truncating", &seg.path))?;
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        let mut log = Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            sealed: true,
            poisoned: false,
            writes: 0,
            preparer: Preparer::start(dir, segment_bytes)?,
        };
        if let Some(p) = purged {
            if let Some(first) = log.first_index() {
                if first > p.saturating_add(1) {
                    return Err(WalError::Corrupt {
                        path: log.segments[0].path.clone(),
                        what: format!(
                            "the log starts at index {first}, but is purged only up to {p}"
                        ),
                    });
                }
            }
            log.purge(p)?;
        }
        Ok(log)
    }

    /// The first index held (entries at or below the purge mark may still be held).
    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .first()
            .filter(|s| !s.offsets.is_empty())
            .map(|s| s.first)
    }

    /// The last index held.
    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last)
    }

    /// How many batches were written since open.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Marks the log unusable (a sync failed).
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    fn check(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Writes `batch` after the last record with one write call (into a new segment if it does
    /// not fit in the last one); the records are readable at once and durable once the returned
    /// [`Pending`] is synced.
    ///
    /// # Errors
    /// The batch does not continue the log, or the write failed (the log is then poisoned).
    pub fn write(&mut self, batch: &Batch) -> Result<Pending, WalError> {
        self.check()?;
        let Some(first) = batch.first else {
            return Ok(Pending { file: None });
        };
        if let Some(last) = self.last_index() {
            if first != last + 1 {
                return Err(WalError::Gap {
                    expected: last + 1,
                    got: first,
                });
            }
        }
        let len = batch.buf.len() as u64;
        let roll = match self.segments.last() {
            None => true,
            Some(seg) => {
                self.sealed || (!seg.offsets.is_empty() && seg.end + len > self.segment_bytes)
            }
        };
        if roll {
            self.roll(first)?;
        }
        let Some(seg) = self.segments.last_mut() else {
            return Err(WalError::Poisoned);
        };
        if let Err(source) = seg.file.write_all_at(&batch.buf, seg.end) {
            self.poisoned = true;
            return Err(WalError::Io {
                op: "writing",
                path: seg.path.clone(),
                source,
            });
        }
        let base = seg.end;
        seg.offsets.extend(batch.offsets.iter().map(|o| base + o));
        seg.end += len;
        self.writes += 1;
        Ok(Pending {
            file: Some((seg.file.clone(), seg.path.clone())),
        })
    }

    /// Starts the segment of `first` from the prepared file.
    fn roll(&mut self, first: u64) -> Result<(), WalError> {
        let prepared = self.preparer.take()?;
        let path = self.dir.join(segment_name(first));
        if let Err(source) = fs::rename(&prepared.path, &path) {
            let _ = fs::remove_file(&prepared.path);
            return Err(WalError::Io {
                op: "renaming a prepared segment to",
                path,
                source,
            });
        }
        self.segments.push(Segment {
            first,
            path,
            file: Arc::new(prepared.file),
            offsets: Vec::new(),
            end: 0,
        });
        self.sealed = false;
        if let Err(e) = sync_dir(&self.dir) {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// Where the records of `from..=to` (those held) are, to read with [`Span::read`] after
    /// releasing the log's lock.
    pub fn spans(&self, from: u64, to: u64) -> Vec<Span> {
        let mut out = Vec::new();
        let start = self.segments.partition_point(|s| s.first <= from).max(1) - 1;
        for seg in self.segments.iter().skip(start) {
            let Some(last) = seg.last() else { continue };
            let (a, b) = (from.max(seg.first), to.min(last));
            if seg.first > to {
                break;
            }
            if a > b {
                continue;
            }
            let offset = seg.offset(a);
            out.push(Span {
                file: seg.file.clone(),
                path: seg.path.clone(),
                first: a,
                count: (b - a + 1) as usize,
                offset,
                len: (seg.offset(b + 1) - offset) as usize,
            });
        }
        out
    }

    /// The records of `from..=to` that are held.
    ///
    /// # Errors
    /// See [`Span::read`].
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, WalError> {
        let mut out = Vec::new();
        for span in self.spans(from, to) {
            out.extend(span.read()?);
        }
        Ok(out)
    }

    /// Removes the records at and after `index`, durably. The caller makes sure no write is in
    /// flight.
    ///
    /// # Errors
    /// A file operation failed (the log is then poisoned).
    pub fn truncate(&mut self, index: u64) -> Result<(), WalError> {
        self.check()?;
        let result = self.truncate_inner(index);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn truncate_inner(&mut self, index: u64) -> Result<(), WalError> {
        // Later segments first, from the last: a crash in between leaves a prefix of the log.
        let mut removed = false;
        while let Some(seg) = self.segments.pop_if(|s| s.first >= index) {
            fs::remove_file(&seg.path).map_err(io_error("removing", &seg.path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(seg) = self.segments.last_mut() {
            if seg.last().is_some_and(|last| last >= index) {
                let offset = seg.offset(index);
                seg.file
                    .set_len(offset)
                    .and_then(|()| seg.file.sync_all())
                    .map_err(io_error("truncating", &seg.path))?;
                seg.offsets.truncate((index - seg.first) as usize);
                seg.end = offset;
                removed = true;
            }
        }
        if removed {
            self.sealed = true;
        }
        Ok(())
    }

    /// Deletes the segments holding only records at or below `upto` (the caller has saved the
    /// purge mark durably). If that is every record, the next write starts a new segment at any
    /// index.
    ///
    /// # Errors
    /// A file operation failed (the log is then poisoned).
    pub fn purge(&mut self, upto: u64) -> Result<(), WalError> {
        self.check()?;
        let all = self.last_index().is_none_or(|last| last <= upto);
        let mut removed = 0;
        while removed < self.segments.len() {
            let seg_last = match self.segments.get(removed + 1) {
                Some(next) => next.first - 1,
                None if all => upto,
                None => break,
            };
            if seg_last > upto {
                break;
            }
            let path = &self.segments[removed].path;
            if let Err(e) = fs::remove_file(path) {
                let e = io_error("removing", path)(e);
                self.segments.drain(..removed);
                self.poisoned = true;
                return Err(e);
            }
            removed += 1;
        }
        self.segments.drain(..removed);
        if all {
            // Whatever is appended next starts a new segment.
            self.sealed = true;
        }
        if removed > 0 {
            if let Err(e) = sync_dir(&self.dir) {
                self.poisoned = true;
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A zero-filled, synced segment file waiting under a temporary name.
struct Prepared {
    file: File,
    path: PathBuf,
}

/// The thread that prepares the next segment while the current one fills (etcd's
/// `filePipeline`): zero-filling 64 MiB and syncing it takes tens of milliseconds, which no
/// commit should wait for. One file is kept ready; taking it starts the next.
struct Preparer {
    dir: PathBuf,
    bytes: u64,
    ready: Option<mpsc::Receiver<io::Result<Prepared>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Preparer {
    fn start(dir: &Path, bytes: u64) -> Result<Self, WalError> {
        let mut p = Self {
            dir: dir.to_path_buf(),
            bytes,
            ready: None,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<(), WalError> {
        let (tx, rx) = mpsc::sync_channel(0);
        let (dir, bytes, stop) = (self.dir.clone(), self.bytes, self.stop.clone());
        let thread = std::thread::Builder::new()
            .name("raft-log-prepare".into())
            .spawn(move || loop {
                match prepare(&dir, bytes, &stop) {
                    Ok(Some(p)) => {
                        if let Err(mpsc::SendError(Ok(p))) = tx.send(Ok(p)) {
                            let _ = fs::remove_file(&p.path);
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })
            .map_err(io_error("starting the segment preparer for", &self.dir))?;
        self.ready = Some(rx);
        self.thread = Some(thread);
        Ok(())
    }

    /// The next prepared file (waiting for it if need be).
    fn take(&mut self) -> Result<Prepared, WalError> {
        let got = self.ready.as_ref().map(mpsc::Receiver::recv);
        let error = match got {
            Some(Ok(Ok(prepared))) => return Ok(prepared),
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the segment preparer stopped"),
        };
        // Try again at the next roll.
        self.stop_thread();
        self.stop.store(false, Ordering::Relaxed);
        self.spawn()?;
        Err(WalError::Io {
            op: "preparing a segment in",
            path: self.dir.clone(),
            source: error,
        })
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A thread waiting to hand over its file sees the receiver gone and deletes the file.
        self.ready = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// Bytes the preparer writes and syncs at a time.
const PREPARE_CHUNK: usize = 1 << 20;
/// Pause after each chunk: 16 chunks add 32 ms to preparing a segment that lasts seconds.
const PREPARE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

fn prepare(dir: &Path, bytes: u64, stop: &AtomicBool) -> io::Result<Option<Prepared>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        "{PREFIX}next-{}-{}{TMP_SUFFIX}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    // Performance: written and synced 1 MiB at a time, with a pause between. One 16 MiB
    // flush kept the disk busy for ~30 ms, and every log commit's fdatasync behind it waited
    // that long (the 64-client put p99.9); small flushes interleave with the commits instead.
    let fill = || -> io::Result<bool> {
        let zeros = vec![0u8; PREPARE_CHUNK];
        let mut at = 0;
        while at < bytes {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let n = (bytes - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            file.sync_data()?;
            at += n as u64;
            std::thread::sleep(PREPARE_PAUSE);
        }
        file.sync_all()?;
        Ok(true)
    };
    match fill() {
        Ok(true) => Ok(Some(Prepared { file, path })),
        Ok(false) => {
            let _ = fs::remove_file(&path);
            Ok(None)
        }
        Err(e) => {
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u64 = 4096;

    fn payload(index: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (index as usize + i) as u8 | 1).collect()
    }

    fn append(log: &mut SegmentLog, indexes: std::ops::RangeInclusive<u64>, len: usize) {
        let mut batch = Batch::default();
        for i in indexes {
            batch.push(i, &payload(i, len)).unwrap();
        }
        log.write(&batch).unwrap().sync().unwrap();
    }

    fn indexes(log: &SegmentLog, from: u64, to: u64) -> Vec<u64> {
        let records = log.read(from, to).unwrap();
        for (i, p) in &records {
            assert_eq!(p.len() % 10, 0);
            assert_eq!(*p, payload(*i, p.len()), "payload of {i}");
        }
        records.into_iter().map(|(i, _)| i).collect()
    }

    fn seg_files(dir: &Path) -> Vec<u64> {
        segment_files(dir)
            .unwrap()
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    #[test]
    fn appends_are_read_back_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), SMALL, None).unwrap();
        assert_eq!(log.last_index(), None);
        append(&mut log, 1..=3, 10);
        append(&mut log, 4..=4, 20);
        assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3, 4]);
        assert_eq!(indexes(&log, 2, 3), vec![2, 3]);
        assert!(matches!(
            log.write(&{
                let mut b = Batch::default();
                b.push(6, b"x").unwrap();
                b
            }),
            Err(WalError::Gap {
                expected: 5,
                got: 6
            })
        ));
        drop(log);
        let mut log = SegmentLog::open(dir.path(), SMALL, None).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (Some(1), Some(4)));
        assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3, 4]);
        // After a reopen the next write starts a new segment.
        append(&mut log, 5..=6, 10);
        assert_eq!(seg_files(dir.path()), vec![1, 5]);
        drop(log);
        let log = SegmentLog::open(dir.path(), SMALL, None).unwrap();
        assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3, 4, 5, 6]);
        // The sealed segments were cut to their records.
        let size = fs::metadata(dir.path().join(segment_name(1)))
            .unwrap()
            .len();
        assert_eq!(size, 3 * (16 + 10) + (16 + 20));
    }

    #[test]
    fn records_roll_over_several_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        // 46-byte records: five per 256-byte segment.
        for i in 1..=23 {
            append(&mut log, i..=i, 30);
        }
        // A batch larger than a segment goes into a fresh one, whole.
        append(&mut log, 24..=33, 30);
        append(&mut log, 34..=34, 30);
        assert_eq!(seg_files(dir.path()), vec![1, 6, 11, 16, 21, 24, 34]);
        assert_eq!(log.writes(), 25);
        let all: Vec<u64> = (1..=34).collect();
        assert_eq!(indexes(&log, 0, u64::MAX), all);
        assert_eq!(indexes(&log, 5, 12), (5..=12).collect::<Vec<_>>());
        drop(log);
        let log = SegmentLog::open(dir.path(), 256, None).unwrap();
        assert_eq!(indexes(&log, 0, u64::MAX), all);
        assert_eq!(indexes(&log, 22, 25), vec![22, 23, 24, 25]);
    }

    #[test]
    fn truncation_never_lets_old_records_reappear() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        for i in 1..=12 {
            append(&mut log, i..=i, 30);
        }
        assert_eq!(seg_files(dir.path()), vec![1, 6, 11]);
        // Within a segment: the later one goes, the holding one is cut.
        log.truncate(8).unwrap();
        assert_eq!(seg_files(dir.path()), vec![1, 6]);
        assert_eq!(log.last_index(), Some(7));
        // A shorter record where a longer one was; a new segment starts at 8.
        append(&mut log, 8..=8, 10);
        assert_eq!(seg_files(dir.path()), vec![1, 6, 8]);
        drop(log);
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        assert_eq!(indexes(&log, 0, u64::MAX), (1..=8).collect::<Vec<_>>());
        assert_eq!(log.read(8, 8).unwrap()[0].1.len(), 10);
        // At a segment's first record: the segment goes.
        log.truncate(6).unwrap();
        assert_eq!(seg_files(dir.path()), vec![1]);
        append(&mut log, 6..=7, 20);
        log.truncate(7).unwrap();
        append(&mut log, 7..=7, 10);
        drop(log);
        let log = SegmentLog::open(dir.path(), 256, None).unwrap();
        assert_eq!(indexes(&log, 0, u64::MAX), (1..=7).collect::<Vec<_>>());
        assert_eq!(log.read(6, 7).unwrap()[0].1.len(), 20);
        assert_eq!(log.read(6, 7).unwrap()[1].1.len(), 10);
    }

    #[test]
    fn purge_deletes_whole_segments_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        for i in 1..=12 {
            append(&mut log, i..=i, 30);
        }
        log.purge(7).unwrap();
        assert_eq!(seg_files(dir.path()), vec![6, 11]);
        assert_eq!(log.first_index(), Some(6));
        log.purge(12).unwrap_or_else(|e| panic!("{e}"));
        // Everything purged, the active segment too: the log continues anywhere.
        assert_eq!(seg_files(dir.path()), Vec::<u64>::new());
        assert_eq!(log.last_index(), None);
        append(&mut log, 20..=21, 30);
        drop(log);
        let log = SegmentLog::open(dir.path(), 256, Some(19)).unwrap();
        assert_eq!(indexes(&log, 0, u64::MAX), vec![20, 21]);
        drop(log);
        // A purge that crashed after saving its mark: open finishes it.
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        for i in 1..=12 {
            append(&mut log, i..=i, 30);
        }
        drop(log);
        let log = SegmentLog::open(dir.path(), 256, Some(7)).unwrap();
        assert_eq!(seg_files(dir.path()), vec![6, 11]);
        assert_eq!(log.first_index(), Some(6));
        drop(log);
        let log = SegmentLog::open(dir.path(), 256, Some(30)).unwrap();
        assert_eq!(seg_files(dir.path()), Vec::<u64>::new());
        assert_eq!(log.last_index(), None);
        drop(log);
        // Entries missing after the purge mark are an error, not a silent hole.
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        append(&mut log, 5..=6, 30);
        drop(log);
        assert!(matches!(
            SegmentLog::open(dir.path(), 256, Some(2)),
            Err(WalError::Corrupt { .. })
        ));
    }

    fn torn(damage: impl FnOnce(&Path, u64)) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), SMALL, None).unwrap();
        append(&mut log, 1..=2, 10);
        append(&mut log, 3..=5, 20);
        drop(log);
        let path = dir.path().join(segment_name(1));
        // Offset of record 5 (the last): 2 * 26 + 2 * 36.
        damage(&path, 2 * 26 + 2 * 36);
        let mut log = SegmentLog::open(dir.path(), SMALL, None).unwrap();
        let got = indexes(&log, 0, u64::MAX);
        // The log continues after the valid prefix, and stays so.
        let next = got.last().map_or(1, |l| l + 1);
        append(&mut log, next..=next, 30);
        drop(log);
        let log = SegmentLog::open(dir.path(), SMALL, None).unwrap();
        assert_eq!(indexes(&log, 0, u64::MAX), (1..=next).collect::<Vec<_>>());
        got
    }

    #[test]
    fn a_torn_tail_is_cut_to_the_valid_prefix() {
        let file = |p: &Path| OpenOptions::new().read(true).write(true).open(p).unwrap();
        // Cut in the middle of the last record.
        assert_eq!(
            torn(|p, at| file(p).set_len(at + 20).unwrap()),
            [1, 2, 3, 4]
        );
        // Cut in its header.
        assert_eq!(torn(|p, at| file(p).set_len(at + 5).unwrap()), [1, 2, 3, 4]);
        // A flipped byte in its payload, or its index.
        for flip in [16 + 7, 9] {
            let got = torn(|p, at| {
                let f = file(p);
                let mut b = [0];
                f.read_exact_at(&mut b, at + flip).unwrap();
                f.write_all_at(&[b[0] ^ 0x40], at + flip).unwrap();
            });
            assert_eq!(got, [1, 2, 3, 4]);
        }
        // Garbage where the next record would be (a torn write that reached only later blocks).
        let got = torn(|p, at| file(p).write_all_at(&[7; 40], at + 36).unwrap());
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn damage_before_later_segments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        for i in 1..=7 {
            append(&mut log, i..=i, 30);
        }
        drop(log);
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(segment_name(1)))
            .unwrap();
        f.write_all_at(&[0xff], 46 + 20).unwrap();
        assert!(matches!(
            SegmentLog::open(dir.path(), 256, None),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[test]
    fn empty_segments_left_by_a_roll_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        append(&mut log, 1..=2, 30);
        drop(log);
        // A crash right after renaming a prepared segment into place, and one mid-preparation.
        fs::write(dir.path().join(segment_name(3)), [0; 256]).unwrap();
        fs::write(dir.path().join("log-next-1-1.seg.tmp"), [0; 100]).unwrap();
        let mut log = SegmentLog::open(dir.path(), 256, None).unwrap();
        assert_eq!(seg_files(dir.path()), vec![1]);
        append(&mut log, 3..=3, 30);
        assert_eq!(indexes(&log, 0, u64::MAX), vec![1, 2, 3]);
        assert!(!dir.path().join("log-next-1-1.seg.tmp").exists());
    }
}
