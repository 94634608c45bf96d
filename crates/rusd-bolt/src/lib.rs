//! Reading and writing bbolt database files, the on-disk format of etcd's backend.
//!
//! rusd stores its data in redb; this crate exists so that rusd can exchange snapshots and data
//! directories with etcd. It knows the file format only (no transactions, no free-page reuse):
//!
//! * [`Writer`] bulk-builds a new file from buckets and keys given in ascending order, holding
//!   at most one page per tree level in memory, so files of any size can be written.
//! * [`Reader`] reads any valid file (including ones written by bbolt itself) page by page,
//!   visiting buckets in key order, and can check a file's structure the way bbolt's
//!   `Tx.Check` does.
//!
//! # The format (bbolt version 2, little-endian integers)
//!
//! The file is an array of pages of `page_size` bytes (4096 here), numbered from 0. Every page
//! starts with a 16-byte header: `id u64, flags u16, count u16, overflow u32`; a page whose
//! content is longer than one page continues into the next `overflow` pages.
//!
//! | page flag | content after the header |
//! |---|---|
//! | `0x04` meta | `magic u32 (0xED0CDAED), version u32 (2), page_size u32, flags u32, root bucket {root page u64, sequence u64}, freelist page u64, high-water page count u64, txid u64, checksum u64` (FNV-1a 64 over the fields before the checksum) |
//! | `0x10` freelist | `count` free page ids (u64); if `count` is `0xFFFF`, the real count is the first u64 |
//! | `0x01` branch | `count` elements `{pos u32, ksize u32, child page u64}`, then the keys |
//! | `0x02` leaf | `count` elements `{flags u32, pos u32, ksize u32, vsize u32}`, then keys and values |
//!
//! `pos` is the distance from the element to its key; a leaf's value follows its key. Pages 0
//! and 1 are two copies of the meta page; a reader uses the valid one with the higher txid.
//! Keys of a B+tree are sorted bytewise; a branch element names the first key of its child.
//!
//! A bucket is a leaf element with flag `0x01` whose value is `{root page u64, sequence u64}`.
//! A small bucket without sub-buckets may be *inline*: its root is 0 and a whole leaf page
//! (header included) follows in the value. The meta page's root bucket holds the top-level
//! buckets.

mod reader;
mod writer;

pub use reader::{Bucket, EntryFn, Item, Reader, WalkFn};
pub use writer::{Summary, Writer};

/// The page size the writer uses by default (etcd's on Linux/amd64).
pub const DEFAULT_PAGE_SIZE: usize = 4096;
/// The magic number in a meta page.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The format version this crate reads and writes.
pub const VERSION: u32 = 2;
/// Longest key bbolt accepts.
pub const MAX_KEY_SIZE: usize = 32768;
/// Longest value bbolt accepts.
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

pub(crate) const PAGE_HEADER: usize = 16;
pub(crate) const ELEMENT: usize = 16;
pub(crate) const BUCKET_HEADER: usize = 16;
pub(crate) const META_SIZE: usize = 64;
/// Bytes of the meta struct covered by its checksum.
pub(crate) const META_CHECKSUMMED: usize = 56;

pub(crate) const FLAG_BRANCH: u16 = 0x01;
pub(crate) const FLAG_LEAF: u16 = 0x02;
pub(crate) const FLAG_META: u16 = 0x04;
pub(crate) const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a bucket.
pub(crate) const ELEMENT_BUCKET: u32 = 0x01;
/// Meta `freelist` value meaning "no freelist was written".
pub(crate) const NO_FREELIST: u64 = u64::MAX;

/// The decoded meta page of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Page size in bytes.
    pub page_size: u32,
    /// Meta flags (unused by bbolt, 0).
    pub flags: u32,
    /// Root page of the root bucket.
    pub root: u64,
    /// Sequence of the root bucket.
    pub root_sequence: u64,
    /// Page of the freelist (`u64::MAX` if none was written).
    pub freelist: u64,
    /// Number of pages in use: every page id is below it.
    pub high_water: u64,
    /// Transaction id that wrote this meta page.
    pub txid: u64,
}

impl Meta {
    /// Size of the database: pages in use times the page size (bbolt's `Tx.Size`).
    pub fn size(&self) -> u64 {
        self.high_water * u64::from(self.page_size)
    }

    /// The meta struct as stored after the page header, checksum included.
    pub(crate) fn encode(&self) -> [u8; META_SIZE] {
        let mut m = [0u8; META_SIZE];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        m[12..16].copy_from_slice(&self.flags.to_le_bytes());
        m[16..24].copy_from_slice(&self.root.to_le_bytes());
        m[24..32].copy_from_slice(&self.root_sequence.to_le_bytes());
        m[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        m[40..48].copy_from_slice(&self.high_water.to_le_bytes());
        m[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&m[..META_CHECKSUMMED]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
        m
    }

    /// Decodes and validates a meta struct (magic, version, checksum).
    pub(crate) fn decode(m: &[u8]) -> Result<Self, &'static str> {
        if m.len() < META_SIZE {
            return Err("short meta page");
        }
        if le32(m, 0) != MAGIC {
            return Err("invalid database (bad magic)");
        }
        if le32(m, 4) != VERSION {
            return Err("version mismatch");
        }
        let checksum = le64(m, 56);
        // bbolt accepts a zero checksum (files written before checksums existed).
        if checksum != 0 && checksum != fnv1a64(&m[..META_CHECKSUMMED]) {
            return Err("checksum error");
        }
        Ok(Self {
            page_size: le32(m, 8),
            flags: le32(m, 12),
            root: le64(m, 16),
            root_sequence: le64(m, 24),
            freelist: le64(m, 32),
            high_water: le64(m, 40),
            txid: le64(m, 48),
        })
    }
}

/// Whether `page` starts with a valid bbolt meta page (magic, version and checksum), as the
/// first (or, one page further, the second) page of a bbolt file does.
pub fn is_meta_page(page: &[u8]) -> bool {
    page.len() >= PAGE_HEADER + META_SIZE
        && le16(page, 8) & FLAG_META != 0
        && Meta::decode(&page[PAGE_HEADER..]).is_ok()
}

/// FNV-1a, 64 bits (the meta page checksum).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests;
