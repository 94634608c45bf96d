//! Reading a bbolt file page by page.
//!
//! Buckets are visited depth-first in key order; only the pages on the path from a bucket's
//! root to the current leaf are in memory. Every page id is checked against the high-water
//! mark and every element against its page's bounds, and keys must strictly increase within a
//! bucket, so a damaged file (even one whose pages form a cycle) gives an error, not a panic or
//! an endless walk.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::ControlFlow;

use crate::{
    le16, le32, le64, Meta, BUCKET_HEADER, DEFAULT_PAGE_SIZE, ELEMENT, ELEMENT_BUCKET, FLAG_BRANCH,
    FLAG_FREELIST, FLAG_LEAF, NO_FREELIST, PAGE_HEADER,
};

/// Deepest tree accepted (a real one is a handful of levels deep).
const MAX_DEPTH: usize = 64;

/// A bucket: where its tree starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Root page (0 for an inline bucket).
    pub root: u64,
    /// The bucket's sequence number.
    pub sequence: u64,
    /// The page of an inline bucket.
    inline: Option<Vec<u8>>,
}

impl Bucket {
    /// Decodes a bucket value (header, then the page of an inline bucket).
    fn decode(value: &[u8]) -> io::Result<Self> {
        if value.len() < BUCKET_HEADER {
            return Err(corrupt("bucket value shorter than its header"));
        }
        let root = le64(value, 0);
        let sequence = le64(value, 8);
        let inline = if root == 0 {
            let page = &value[BUCKET_HEADER..];
            if page.len() < PAGE_HEADER {
                return Err(corrupt("inline bucket without a page"));
            }
            Some(page.to_vec())
        } else {
            None
        };
        Ok(Self {
            root,
            sequence,
            inline,
        })
    }

    /// Whether the bucket is stored inline in its parent.
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }
}

/// An entry of a bucket.
#[derive(Debug)]
pub enum Item<'a> {
    /// A key-value entry.
    Value(&'a [u8]),
    /// A nested bucket.
    Bucket(Bucket),
}

/// A page read from the file (or an inline bucket's page).
struct Page {
    id: u64,
    data: Vec<u8>,
    flags: u16,
    count: usize,
    overflow: u32,
}

impl Page {
    fn parse(id: u64, data: Vec<u8>) -> io::Result<Self> {
        if data.len() < PAGE_HEADER {
            return Err(corrupt(format!("page {id}: short page")));
        }
        let flags = le16(&data, 8);
        let count = usize::from(le16(&data, 10));
        let overflow = le32(&data, 12);
        Ok(Self {
            id,
            data,
            flags,
            count,
            overflow,
        })
    }

    fn is_leaf(&self) -> bool {
        self.flags & FLAG_LEAF != 0
    }

    fn is_branch(&self) -> bool {
        self.flags & FLAG_BRANCH != 0
    }

    fn element(&self, i: usize) -> io::Result<&[u8]> {
        let at = PAGE_HEADER + ELEMENT * i;
        self.data
            .get(at..at + ELEMENT)
            .ok_or_else(|| corrupt(format!("page {}: element {i} out of bounds", self.id)))
    }

    fn slice(&self, i: usize, from: usize, len: usize) -> io::Result<&[u8]> {
        let start = PAGE_HEADER + ELEMENT * i + from;
        start
            .checked_add(len)
            .and_then(|end| self.data.get(start..end))
            .ok_or_else(|| corrupt(format!("page {}: element {i} data out of bounds", self.id)))
    }

    /// Leaf element `i`: flags, key, value.
    fn leaf(&self, i: usize) -> io::Result<(u32, &[u8], &[u8])> {
        let e = self.element(i)?;
        let (flags, pos, ksize, vsize) = (
            le32(e, 0),
            le32(e, 4) as usize,
            le32(e, 8) as usize,
            le32(e, 12) as usize,
        );
        let kv = self.slice(i, pos, ksize + vsize)?;
        let (key, value) = kv.split_at(ksize);
        Ok((flags, key, value))
    }

    /// Branch element `i`: key, child page.
    fn branch(&self, i: usize) -> io::Result<(&[u8], u64)> {
        let e = self.element(i)?;
        let (pos, ksize, child) = (le32(e, 0) as usize, le32(e, 4) as usize, le64(e, 8));
        Ok((self.slice(i, pos, ksize)?, child))
    }
}

/// Reads a bbolt file.
///
/// Works on anything readable and seekable; bytes after the last page (such as the SHA-256
/// that etcd appends to a snapshot) are ignored.
pub struct Reader<R: Read + Seek> {
    r: R,
    meta: Meta,
    page_size: usize,
}

/// Callback of [`Reader::for_each`]: the key and the entry; breaking stops the visit.
pub type EntryFn<'a> = dyn FnMut(&[u8], Item<'_>) -> io::Result<ControlFlow<()>> + 'a;

/// Callback of [`Reader::walk`]: the path of bucket names, the key and the entry; breaking
/// stops the walk.
pub type WalkFn<'a> = dyn FnMut(&[Vec<u8>], &[u8], Item<'_>) -> io::Result<ControlFlow<()>> + 'a;

/// State of a walk over buckets.
struct Visit<'a> {
    f: &'a mut WalkFn<'a>,
    /// Called for every file page reached (used by the check).
    on_page: Option<&'a mut dyn FnMut(&Page)>,
    /// Whether to descend into sub-buckets.
    recurse: bool,
    /// Names of the buckets from the root to the current one.
    path: Vec<Vec<u8>>,
}

impl<R: Read + Seek> Reader<R> {
    /// Opens a file: reads both meta pages and uses the valid one with the higher txid.
    ///
    /// # Errors
    /// Neither meta page is valid (not a bbolt file, or both damaged), or a read error.
    pub fn open(mut r: R) -> io::Result<Self> {
        let mut first = vec![0u8; DEFAULT_PAGE_SIZE];
        r.seek(SeekFrom::Start(0))?;
        read_full(&mut r, &mut first).map_err(|_| corrupt("file too small for a bbolt file"))?;
        let meta0 = Meta::decode(&first[PAGE_HEADER..]);
        // The second meta page sits one page further; its size comes from the first one if
        // that is valid, else the default is assumed (as bbolt does).
        let page_size = match &meta0 {
            Ok(m) => m.page_size as usize,
            Err(_) => DEFAULT_PAGE_SIZE,
        };
        if !page_size.is_power_of_two() || !(512..=1 << 20).contains(&page_size) {
            return Err(corrupt(format!("page size {page_size}")));
        }
        let mut second = vec![0u8; PAGE_HEADER + crate::META_SIZE];
        r.seek(SeekFrom::Start(page_size as u64))?;
        let meta1 = match read_full(&mut r, &mut second) {
            Ok(()) => Meta::decode(&second[PAGE_HEADER..]),
            Err(_) => Err("short meta page"),
        };
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(m), Err(_)) | (Err(_), Ok(m)) => m,
            (Err(e), Err(_)) => return Err(corrupt(e)),
        };
        if meta.page_size as usize != page_size {
            return Err(corrupt("meta pages disagree on the page size"));
        }
        // bbolt grows the file before it writes pages, so a file holds at least all pages
        // below the high-water mark; a shorter one is truncated.
        let len = r.seek(SeekFrom::End(0))?;
        if meta
            .high_water
            .checked_mul(page_size as u64)
            .is_none_or(|needed| needed > len)
        {
            return Err(corrupt(format!(
                "file of {len} bytes is shorter than its {} pages of {page_size} bytes",
                meta.high_water
            )));
        }
        if meta.root < 2 || meta.root >= meta.high_water {
            return Err(corrupt(format!(
                "root page {} outside the file's {} pages",
                meta.root, meta.high_water
            )));
        }
        Ok(Self { r, meta, page_size })
    }

    /// The meta page in use.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The root bucket (its entries are the top-level buckets).
    pub fn root(&self) -> Bucket {
        Bucket {
            root: self.meta.root,
            sequence: self.meta.root_sequence,
            inline: None,
        }
    }

    /// The bucket named by `path` from the root (`[b"key"]` is the top-level bucket "key").
    ///
    /// # Errors
    /// A read error or a damaged file.
    pub fn bucket(&mut self, path: &[&[u8]]) -> io::Result<Option<Bucket>> {
        let mut bucket = self.root();
        for name in path {
            match self.get(&bucket, name)? {
                Some((flags, value)) if flags & ELEMENT_BUCKET != 0 => {
                    bucket = Bucket::decode(&value)?;
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(bucket))
    }

    /// The value of `key` in `bucket`, if it is a plain entry.
    ///
    /// # Errors
    /// A read error or a damaged file.
    pub fn value(&mut self, bucket: &Bucket, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        Ok(match self.get(bucket, key)? {
            Some((flags, value)) if flags & ELEMENT_BUCKET == 0 => Some(value),
            _ => None,
        })
    }

    /// Calls `f` for every entry of `bucket` in key order, until it breaks.
    ///
    /// # Errors
    /// A read error, a damaged file, or an error from `f`.
    pub fn for_each(
        &mut self,
        bucket: &Bucket,
        f: &mut EntryFn<'_>,
    ) -> io::Result<ControlFlow<()>> {
        let mut g = |_: &[Vec<u8>], key: &[u8], item: Item<'_>| f(key, item);
        let mut visit = Visit {
            f: &mut g,
            on_page: None,
            recurse: false,
            path: Vec::new(),
        };
        self.visit_bucket(bucket, &mut visit)
    }

    /// Calls `f` for every entry of every bucket, depth-first in key order (a sub-bucket's
    /// entries right after the sub-bucket itself), with the path of bucket names leading to it
    /// (`[]` for the top-level buckets themselves), until it breaks.
    ///
    /// # Errors
    /// A read error, a damaged file, or an error from `f`.
    pub fn walk(&mut self, f: &mut WalkFn<'_>) -> io::Result<ControlFlow<()>> {
        let root = self.root();
        let mut visit = Visit {
            f,
            on_page: None,
            recurse: true,
            path: Vec::new(),
        };
        self.visit_bucket(&root, &mut visit)
    }

    /// Checks the file as bbolt's `Tx.Check` does: every page below the high-water mark is
    /// either reachable exactly once from the root or free, reachable pages are branches or
    /// leaves, keys are in order. Returns the problems found (empty if none).
    ///
    /// # Errors
    /// A read error.
    pub fn check(&mut self) -> io::Result<Vec<String>> {
        let mut problems = Vec::new();
        let high_water = self.meta.high_water;
        let mut free = vec![false; high_water as usize];
        let mut reachable = vec![false; high_water as usize];
        reachable[0] = true;
        if high_water > 1 {
            reachable[1] = true;
        }
        if self.meta.freelist != NO_FREELIST {
            match self.freelist() {
                Ok((page_overflow, ids)) => {
                    for i in 0..=u64::from(page_overflow) {
                        if let Some(r) = reachable.get_mut((self.meta.freelist + i) as usize) {
                            *r = true;
                        }
                    }
                    for id in ids {
                        match free.get_mut(id as usize) {
                            Some(f) if *f => problems.push(format!("page {id}: already freed")),
                            Some(f) => *f = true,
                            None => problems.push(format!("page {id}: freed page out of bounds")),
                        }
                    }
                }
                Err(e) => problems.push(format!("freelist: {e}")),
            }
        }
        let mut page_problems = Vec::new();
        {
            let reachable = &mut reachable;
            let free = &free;
            let mut on_page = |p: &Page| {
                for i in 0..=u64::from(p.overflow) {
                    let id = p.id + i;
                    match reachable.get_mut(id as usize) {
                        Some(r) if *r => {
                            page_problems.push(format!("page {id}: multiple references"))
                        }
                        Some(r) => *r = true,
                        None => {
                            page_problems.push(format!("page {id}: out of bounds: {high_water}"))
                        }
                    }
                }
                if free.get(p.id as usize).copied().unwrap_or(false) {
                    page_problems.push(format!("page {}: reachable freed", p.id));
                } else if !p.is_leaf() && !p.is_branch() {
                    page_problems.push(format!("page {}: invalid type {:#x}", p.id, p.flags));
                }
            };
            let root = self.root();
            let mut ignore = |_: &[Vec<u8>], _: &[u8], _: Item<'_>| Ok(ControlFlow::Continue(()));
            let mut visit = Visit {
                f: &mut ignore,
                on_page: Some(&mut on_page),
                recurse: true,
                path: Vec::new(),
            };
            let result = self.visit_bucket(&root, &mut visit);
            if let Err(e) = result {
                if e.kind() != io::ErrorKind::InvalidData {
                    return Err(e);
                }
                problems.push(e.to_string());
            }
        }
        problems.extend(page_problems);
        if self.meta.freelist != NO_FREELIST {
            for id in 0..high_water as usize {
                if !reachable[id] && !free[id] {
                    problems.push(format!("page {id}: unreachable unfreed"));
                }
            }
        }
        Ok(problems)
    }

    /// The freelist page's overflow and the free page ids.
    fn freelist(&mut self) -> io::Result<(u32, Vec<u64>)> {
        let page = self.page(self.meta.freelist)?;
        if page.flags & FLAG_FREELIST == 0 {
            return Err(corrupt(format!(
                "page {}: not a freelist page",
                self.meta.freelist
            )));
        }
        let (skip, count) = if page.count == 0xFFFF {
            let n = page
                .data
                .get(PAGE_HEADER..PAGE_HEADER + 8)
                .map(|b| le64(b, 0))
                .ok_or_else(|| corrupt("short freelist"))?;
            (1, n as usize)
        } else {
            (0, page.count)
        };
        let start = PAGE_HEADER + 8 * skip;
        let end = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(start))
            .filter(|&e| e <= page.data.len())
            .ok_or_else(|| corrupt("freelist longer than its page"))?;
        let ids = page.data[start..end]
            .chunks_exact(8)
            .map(|c| le64(c, 0))
            .collect();
        Ok((page.overflow, ids))
    }

    /// Reads page `id` with its overflow pages.
    fn page(&mut self, id: u64) -> io::Result<Page> {
        if id < 2 || id >= self.meta.high_water {
            return Err(corrupt(format!(
                "page {id}: outside the file's {} pages",
                self.meta.high_water
            )));
        }
        let offset = id * self.page_size as u64;
        let mut data = vec![0u8; self.page_size];
        self.r.seek(SeekFrom::Start(offset))?;
        read_full(&mut self.r, &mut data)
            .map_err(|e| corrupt(format!("page {id}: truncated file ({e})")))?;
        let overflow = u64::from(le32(&data, 12));
        if overflow > 0 {
            if id + overflow >= self.meta.high_water {
                return Err(corrupt(format!("page {id}: overflow past the end")));
            }
            let total = (overflow as usize + 1) * self.page_size;
            data.resize(total, 0);
            read_full(&mut self.r, &mut data[self.page_size..])
                .map_err(|e| corrupt(format!("page {id}: truncated file ({e})")))?;
        }
        if le64(&data, 0) != id {
            return Err(corrupt(format!(
                "page {id}: header says page {}",
                le64(&data, 0)
            )));
        }
        Page::parse(id, data)
    }

    fn root_page(&mut self, bucket: &Bucket) -> io::Result<Page> {
        match &bucket.inline {
            Some(page) => Page::parse(0, page.clone()),
            None => self.page(bucket.root),
        }
    }

    /// Looks `key` up in `bucket`: its flags and value.
    fn get(&mut self, bucket: &Bucket, key: &[u8]) -> io::Result<Option<(u32, Vec<u8>)>> {
        let mut page = self.root_page(bucket)?;
        for _ in 0..MAX_DEPTH {
            if page.is_leaf() {
                for i in 0..page.count {
                    let (flags, k, v) = page.leaf(i)?;
                    if k == key {
                        return Ok(Some((flags, v.to_vec())));
                    }
                    if k > key {
                        break;
                    }
                }
                return Ok(None);
            }
            if !page.is_branch() {
                return Err(corrupt(format!(
                    "page {}: neither branch nor leaf",
                    page.id
                )));
            }
            // The last child whose first key is <= key (or the first child).
            let mut child = None;
            for i in 0..page.count {
                let (k, c) = page.branch(i)?;
                if i > 0 && k > key {
                    break;
                }
                child = Some(c);
            }
            let Some(child) = child else {
                return Ok(None);
            };
            page = self.page(child)?;
        }
        Err(corrupt("tree too deep"))
    }

    fn visit_bucket(&mut self, bucket: &Bucket, v: &mut Visit<'_>) -> io::Result<ControlFlow<()>> {
        if v.path.len() > MAX_DEPTH {
            return Err(corrupt("buckets nested too deep"));
        }
        let page = self.root_page(bucket)?;
        if bucket.inline.is_some() && !page.is_leaf() {
            return Err(corrupt("inline bucket whose page is not a leaf"));
        }
        let mut last = None;
        self.visit_page(page, 0, &mut last, v)
    }

    /// Visits the subtree under `page`; `last` is the bucket's last key so far.
    fn visit_page(
        &mut self,
        page: Page,
        depth: usize,
        last: &mut Option<Vec<u8>>,
        v: &mut Visit<'_>,
    ) -> io::Result<ControlFlow<()>> {
        if depth > MAX_DEPTH {
            return Err(corrupt("tree too deep"));
        }
        if page.id != 0 {
            if let Some(on_page) = v.on_page.as_mut() {
                on_page(&page);
            }
        }
        if page.is_leaf() {
            for i in 0..page.count {
                let (flags, key, value) = page.leaf(i)?;
                if key.is_empty() {
                    return Err(corrupt(format!("page {}: empty key", page.id)));
                }
                if last.as_deref().is_some_and(|last| key <= last) {
                    return Err(corrupt(format!("page {}: keys out of order", page.id)));
                }
                *last = Some(key.to_vec());
                let (item, child) = if flags & ELEMENT_BUCKET != 0 {
                    let bucket = Bucket::decode(value)?;
                    let child = v.recurse.then(|| bucket.clone());
                    (Item::Bucket(bucket), child)
                } else {
                    (Item::Value(value), None)
                };
                if (v.f)(&v.path, key, item)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
                if let Some(child) = child {
                    v.path.push(key.to_vec());
                    let flow = self.visit_bucket(&child, v);
                    v.path.pop();
                    if flow?.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
            }
            return Ok(ControlFlow::Continue(()));
        }
        if !page.is_branch() {
            return Err(corrupt(format!(
                "page {}: invalid type {:#x} in a tree",
                page.id, page.flags
            )));
        }
        for i in 0..page.count {
            let (_, child) = page.branch(i)?;
            let child = self.page(child)?;
            if self.visit_page(child, depth + 1, last, v)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The underlying reader back.
    pub fn into_inner(self) -> R {
        self.r
    }
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf)
}

fn corrupt(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}
