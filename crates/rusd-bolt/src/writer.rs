//! Bulk-building a bbolt file from sorted input.
//!
//! Pages are written in the order they fill up: a leaf page goes out as soon as the next entry
//! would not fit, and its first key and page id become an element of the level above, which
//! goes out the same way. So each open bucket holds one partial page per tree level; a bucket
//! nested in another keeps the parent's partial pages while it is built. When a bucket ends,
//! its partial pages are written bottom-up and the last one is its root; a small bucket
//! without sub-buckets is stored inline in its parent instead, as bbolt does.
//!
//! Layout: pages 0 and 1 are the meta pages (written last, by seeking back), page 2 an empty
//! freelist, data pages from 3 on. Nothing is ever freed, so every page below the high-water
//! mark is in use, which is what bbolt's consistency check wants.

use std::io::{self, Seek, SeekFrom, Write};

use crate::{
    Meta, BUCKET_HEADER, DEFAULT_PAGE_SIZE, ELEMENT, ELEMENT_BUCKET, FLAG_BRANCH, FLAG_FREELIST,
    FLAG_LEAF, FLAG_META, MAX_KEY_SIZE, MAX_VALUE_SIZE, PAGE_HEADER,
};

/// The first page id available for data (after two meta pages and the freelist).
const FIRST_DATA_PAGE: u64 = 3;
/// Page id of the (always empty) freelist.
const FREELIST_PAGE: u64 = 2;
/// Most elements in one page (`count` is a u16; bbolt refuses 0xFFFF).
const MAX_ELEMENTS: usize = 0xFFFE;

/// What [`Writer::finish`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Pages in the file (the high-water mark).
    pub pages: u64,
    /// Bytes in the file: `pages * page_size`.
    pub size: u64,
    /// Key-value entries written (bucket entries not counted).
    pub entries: u64,
    /// Buckets written (the root bucket not counted).
    pub buckets: u64,
}

/// An element of a page under construction.
enum Element {
    Leaf {
        key: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
    },
    Branch {
        key: Vec<u8>,
        child: u64,
    },
}

impl Element {
    fn key(&self) -> &[u8] {
        match self {
            Element::Leaf { key, .. } | Element::Branch { key, .. } => key,
        }
    }

    fn size(&self) -> usize {
        match self {
            Element::Leaf { key, value, .. } => ELEMENT + key.len() + value.len(),
            Element::Branch { key, .. } => ELEMENT + key.len(),
        }
    }
}

/// One level of a bucket's tree: the page being filled.
#[derive(Default)]
struct Level {
    elements: Vec<Element>,
    /// Header plus elements.
    size: usize,
    /// Pages of this level already written.
    written: u64,
}

/// A bucket being built.
struct Builder {
    /// Its key in the parent bucket (empty for the root bucket).
    name: Vec<u8>,
    /// `levels[0]` are leaves, higher ones branches.
    levels: Vec<Level>,
    /// The last key added (entries and sub-buckets share one key space).
    last_key: Option<Vec<u8>>,
    /// Whether the bucket holds a sub-bucket (such a bucket is never inlined).
    leaf_has_bucket: bool,
}

impl Builder {
    fn new(name: Vec<u8>) -> Self {
        Self {
            name,
            levels: vec![Level {
                size: PAGE_HEADER,
                ..Level::default()
            }],
            last_key: None,
            leaf_has_bucket: false,
        }
    }

    fn check_order(&mut self, key: &[u8]) -> io::Result<()> {
        if key.is_empty() {
            return Err(invalid("empty key"));
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(invalid(format!("key of {} bytes is too long", key.len())));
        }
        if let Some(last) = &self.last_key {
            if key <= last.as_slice() {
                return Err(invalid(format!(
                    "keys out of order: {:?} after {:?}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(last)
                )));
            }
        }
        self.last_key = Some(key.to_vec());
        Ok(())
    }
}

/// Where pages go: the output and the next free page id.
struct Pages<W> {
    out: W,
    page_size: usize,
    next: u64,
    /// Scratch buffer for encoding a page.
    buf: Vec<u8>,
}

impl<W: Write> Pages<W> {
    /// Writes `elements` as one page (with overflow pages if needed); returns its id.
    fn write(&mut self, elements: &[Element], leaf: bool) -> io::Result<u64> {
        let id = self.next;
        encode_page(&mut self.buf, id, elements, leaf);
        let pages = self.buf.len().div_ceil(self.page_size).max(1);
        let overflow = u32::try_from(pages - 1).map_err(|_| invalid("page too large"))?;
        self.buf[12..16].copy_from_slice(&overflow.to_le_bytes());
        self.buf.resize(pages * self.page_size, 0);
        self.out.write_all(&self.buf)?;
        self.next += pages as u64;
        Ok(id)
    }

    /// Adds `element` to `levels[at]`, writing that level's page first if it is full.
    fn push(&mut self, levels: &mut Vec<Level>, at: usize, element: Element) -> io::Result<()> {
        let size = element.size();
        let level = &mut levels[at];
        // A branch page takes at least two elements even if they overflow it (as bbolt's
        // split does): with one, huge keys would make every level as wide as the one below.
        let least = if at == 0 { 1 } else { 2 };
        if level.elements.len() >= least
            && (level.size + size > self.page_size || level.elements.len() >= MAX_ELEMENTS)
        {
            self.flush(levels, at)?;
        }
        let level = &mut levels[at];
        level.size += size;
        level.elements.push(element);
        Ok(())
    }

    /// Writes the page of `levels[at]` and adds it to the level above.
    fn flush(&mut self, levels: &mut Vec<Level>, at: usize) -> io::Result<()> {
        let level = &mut levels[at];
        let elements = std::mem::take(&mut level.elements);
        level.size = PAGE_HEADER;
        level.written += 1;
        let id = self.write(&elements, at == 0)?;
        let first = elements
            .into_iter()
            .next()
            .map(|e| match e {
                Element::Leaf { key, .. } | Element::Branch { key, .. } => key,
            })
            .ok_or_else(|| invalid("flushing an empty page"))?;
        if levels.len() == at + 1 {
            levels.push(Level {
                size: PAGE_HEADER,
                ..Level::default()
            });
        }
        self.push(
            levels,
            at + 1,
            Element::Branch {
                key: first,
                child: id,
            },
        )
    }

    /// Writes what is left of a bucket's tree; returns its root page.
    fn finish_tree(&mut self, levels: &mut Vec<Level>) -> io::Result<u64> {
        let mut at = 0;
        loop {
            if at + 1 == levels.len() && levels[at].written == 0 {
                let elements = std::mem::take(&mut levels[at].elements);
                return self.write(&elements, at == 0);
            }
            if !levels[at].elements.is_empty() {
                self.flush(levels, at)?;
            }
            at += 1;
        }
    }
}

/// Encodes a page into `buf` (header with overflow 0, elements, keys and values).
fn encode_page(buf: &mut Vec<u8>, id: u64, elements: &[Element], leaf: bool) {
    buf.clear();
    buf.extend_from_slice(&id.to_le_bytes());
    let flags = if leaf { FLAG_LEAF } else { FLAG_BRANCH };
    buf.extend_from_slice(&flags.to_le_bytes());
    buf.extend_from_slice(&(elements.len() as u16).to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    let mut data = PAGE_HEADER + ELEMENT * elements.len();
    for (i, e) in elements.iter().enumerate() {
        let pos = (data - (PAGE_HEADER + ELEMENT * i)) as u32;
        match e {
            Element::Leaf { key, value, flags } => {
                buf.extend_from_slice(&flags.to_le_bytes());
                buf.extend_from_slice(&pos.to_le_bytes());
                buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
                data += key.len() + value.len();
            }
            Element::Branch { key, child } => {
                buf.extend_from_slice(&pos.to_le_bytes());
                buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                buf.extend_from_slice(&child.to_le_bytes());
                data += key.len();
            }
        }
    }
    for e in elements {
        buf.extend_from_slice(e.key());
        if let Element::Leaf { value, .. } = e {
            buf.extend_from_slice(value);
        }
    }
}

/// Builds a bbolt file from buckets and entries given in ascending key order.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let mut w = rusd_bolt::Writer::new(std::io::Cursor::new(Vec::new()))?;
/// w.begin_bucket(b"key")?;
/// w.put(b"a", b"1")?;
/// w.put(b"b", b"2")?;
/// w.end_bucket()?;
/// let (file, summary) = w.finish()?;
/// assert_eq!(file.get_ref().len() as u64, summary.size);
/// # Ok(()) }
/// ```
///
/// Keys (and sub-bucket names) must strictly increase within each bucket; the root holds only
/// buckets. Any error leaves the output incomplete.
pub struct Writer<W: Write + Seek> {
    pages: Pages<W>,
    /// `stack[0]` is the root bucket; the last one receives entries.
    stack: Vec<Builder>,
    start: u64,
    entries: u64,
    buckets: u64,
}

impl<W: Write + Seek> Writer<W> {
    /// A writer with the default page size, starting at `out`'s current position.
    ///
    /// # Errors
    /// A write error.
    pub fn new(out: W) -> io::Result<Self> {
        Self::with_page_size(out, DEFAULT_PAGE_SIZE)
    }

    /// A writer with the given page size (a power of two from 1024 to 65536).
    ///
    /// # Errors
    /// An unusable page size, or a write error.
    pub fn with_page_size(mut out: W, page_size: usize) -> io::Result<Self> {
        if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
            return Err(invalid(format!("page size {page_size}")));
        }
        let start = out.stream_position()?;
        // Room for the meta pages, then the empty freelist.
        let mut head = vec![0u8; 3 * page_size];
        let free = &mut head[2 * page_size..];
        free[0..8].copy_from_slice(&FREELIST_PAGE.to_le_bytes());
        free[8..10].copy_from_slice(&FLAG_FREELIST.to_le_bytes());
        out.write_all(&head)?;
        Ok(Self {
            pages: Pages {
                out,
                page_size,
                next: FIRST_DATA_PAGE,
                buf: Vec::with_capacity(page_size),
            },
            stack: vec![Builder::new(Vec::new())],
            start,
            entries: 0,
            buckets: 0,
        })
    }

    /// How deep the writer is: 0 at the root, 1 inside a top-level bucket, ...
    pub fn depth(&self) -> usize {
        self.stack.len() - 1
    }

    /// Opens a bucket named `name` inside the current one (at the root: a top-level bucket).
    ///
    /// # Errors
    /// `name` is not after the previous key of the current bucket, or a write error.
    pub fn begin_bucket(&mut self, name: &[u8]) -> io::Result<()> {
        self.current()?.check_order(name)?;
        self.stack.push(Builder::new(name.to_vec()));
        Ok(())
    }

    /// Closes the current bucket.
    ///
    /// # Errors
    /// No bucket is open, or a write error.
    pub fn end_bucket(&mut self) -> io::Result<()> {
        if self.stack.len() < 2 {
            return Err(invalid("no bucket to end"));
        }
        let Some(mut child) = self.stack.pop() else {
            return Err(invalid("no bucket to end"));
        };
        let page_size = self.pages.page_size;
        let leaf = &child.levels[0];
        let inline = child.levels.len() == 1
            && leaf.written == 0
            && !child.leaf_has_bucket
            && leaf.size <= page_size / 4;
        let value = if inline {
            let mut page = Vec::new();
            encode_page(&mut page, 0, &leaf.elements, true);
            let mut value = vec![0u8; BUCKET_HEADER];
            value.extend_from_slice(&page);
            value
        } else {
            let root = self.pages.finish_tree(&mut child.levels)?;
            let mut value = root.to_le_bytes().to_vec();
            value.extend_from_slice(&0u64.to_le_bytes());
            value
        };
        self.buckets += 1;
        let element = Element::Leaf {
            key: child.name,
            value,
            flags: ELEMENT_BUCKET,
        };
        let parent = self.stack.len() - 1;
        self.add(parent, element)
    }

    /// Adds an entry to the current bucket.
    ///
    /// # Errors
    /// At the root (it holds only buckets), a key not after the previous one, an oversized key
    /// or value, or a write error.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if self.stack.len() < 2 {
            return Err(invalid("the root holds only buckets"));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(invalid(format!(
                "value of {} bytes is too long",
                value.len()
            )));
        }
        self.current()?.check_order(key)?;
        self.entries += 1;
        let at = self.stack.len() - 1;
        self.add(
            at,
            Element::Leaf {
                key: key.to_vec(),
                value: value.to_vec(),
                flags: 0,
            },
        )
    }

    /// Writes the rest of the tree and the meta pages; returns the output (positioned at the
    /// end of the file) and what was written.
    ///
    /// # Errors
    /// A bucket is still open, or a write error.
    pub fn finish(mut self) -> io::Result<(W, Summary)> {
        if self.stack.len() != 1 {
            return Err(invalid("a bucket is still open"));
        }
        let Some(mut root) = self.stack.pop() else {
            return Err(invalid("no root bucket"));
        };
        let root_page = self.pages.finish_tree(&mut root.levels)?;
        let page_size = self.pages.page_size;
        let high_water = self.pages.next;
        let out = &mut self.pages.out;
        for txid in 0..2u64 {
            let meta = Meta {
                page_size: page_size as u32,
                flags: 0,
                root: root_page,
                root_sequence: 0,
                freelist: FREELIST_PAGE,
                high_water,
                txid,
            };
            let mut page = vec![0u8; page_size];
            page[0..8].copy_from_slice(&txid.to_le_bytes());
            page[8..10].copy_from_slice(&FLAG_META.to_le_bytes());
            page[PAGE_HEADER..PAGE_HEADER + crate::META_SIZE].copy_from_slice(&meta.encode());
            out.seek(SeekFrom::Start(self.start + txid * page_size as u64))?;
            out.write_all(&page)?;
        }
        let size = high_water * page_size as u64;
        out.seek(SeekFrom::Start(self.start + size))?;
        out.flush()?;
        Ok((
            self.pages.out,
            Summary {
                pages: high_water,
                size,
                entries: self.entries,
                buckets: self.buckets,
            },
        ))
    }

    fn current(&mut self) -> io::Result<&mut Builder> {
        self.stack
            .last_mut()
            .ok_or_else(|| invalid("writer already finished"))
    }

    fn add(&mut self, at: usize, element: Element) -> io::Result<()> {
        let builder = &mut self.stack[at];
        if matches!(element, Element::Leaf { flags, .. } if flags & ELEMENT_BUCKET != 0) {
            // Only matters while the bucket is a single leaf (inlining); later it stays set.
            builder.leaf_has_bucket = true;
        }
        self.pages.push(&mut builder.levels, 0, element)
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
