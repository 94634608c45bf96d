//! Round trips through the writer and the reader, the structure checks, damaged files, and
//! (when installed) etcd's own bbolt code via `etcdctl snapshot status`.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::ops::ControlFlow;

use super::*;

/// A tree of buckets as the tests build and expect it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tree {
    values: BTreeMap<Vec<u8>, Vec<u8>>,
    buckets: BTreeMap<Vec<u8>, Tree>,
}

/// xorshift64*, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Writes `tree`'s entries and buckets merged in key order.
fn write_tree<W: std::io::Write + std::io::Seek>(w: &mut Writer<W>, tree: &Tree) {
    let mut values = tree.values.iter().peekable();
    let mut buckets = tree.buckets.iter().peekable();
    loop {
        let take_value = match (values.peek(), buckets.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((vk, _)), Some((bk, _))) => vk < bk,
        };
        if take_value {
            let (k, v) = values.next().unwrap();
            w.put(k, v).unwrap();
        } else {
            let (name, child) = buckets.next().unwrap();
            w.begin_bucket(name).unwrap();
            write_tree(w, child);
            w.end_bucket().unwrap();
        }
    }
}

fn build(tree: &Tree, page_size: usize) -> (Vec<u8>, Summary) {
    assert!(tree.values.is_empty(), "the root holds only buckets");
    let mut w = Writer::with_page_size(Cursor::new(Vec::new()), page_size).unwrap();
    write_tree(&mut w, tree);
    let (out, summary) = w.finish().unwrap();
    (out.into_inner(), summary)
}

/// Reads the whole file back into a tree.
fn read_tree(file: &[u8]) -> Tree {
    let mut r = Reader::open(Cursor::new(file)).unwrap();
    let mut tree = Tree::default();
    let _ = r
        .walk(&mut |path, key, item| {
            let mut node = &mut tree;
            for p in path {
                node = node.buckets.get_mut(p).expect("parent visited first");
            }
            match item {
                Item::Value(v) => {
                    node.values.insert(key.to_vec(), v.to_vec());
                }
                Item::Bucket(_) => {
                    node.buckets.insert(key.to_vec(), Tree::default());
                }
            }
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
    tree
}

fn check_clean(file: &[u8]) {
    let mut r = Reader::open(Cursor::new(file)).unwrap();
    let problems = r.check().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// A mixed tree: a big bucket, big values, empty and tiny buckets, nesting three deep.
fn sample(rng: &mut Rng, keys: usize) -> Tree {
    let mut root = Tree::default();
    let mut big = Tree::default();
    for i in 0..keys {
        let mut key = format!("{:012}", i * 7).into_bytes();
        let n = rng.below(20) as usize;
        key.extend(rng.bytes(n));
        let len = match rng.below(100) {
            0 => 4096 + rng.below(20_000) as usize,
            1..=5 => 1000 + rng.below(3000) as usize,
            _ => rng.below(200) as usize,
        };
        big.values.insert(key, rng.bytes(len));
    }
    // Sub-buckets between the values, one of them big and nested.
    let mut nested = Tree::default();
    for i in 0..2000 {
        nested
            .values
            .insert(format!("n{i:05}").into_bytes(), rng.bytes(50));
    }
    let mut deepest = Tree::default();
    deepest.values.insert(b"x".to_vec(), b"y".to_vec());
    nested.buckets.insert(b"deeper".to_vec(), Tree::default());
    nested.buckets.insert(b"deepest".to_vec(), deepest);
    big.buckets.insert(b"000000000003-sub".to_vec(), nested);
    big.buckets.insert(b"zzz-empty".to_vec(), Tree::default());
    root.buckets.insert(b"data".to_vec(), big);
    root.buckets.insert(b"alarm".to_vec(), Tree::default());
    let mut meta = Tree::default();
    meta.values
        .insert(b"consistent_index".to_vec(), 42u64.to_be_bytes().to_vec());
    root.buckets.insert(b"meta".to_vec(), meta);
    let mut huge = Tree::default();
    huge.values.insert(b"one".to_vec(), rng.bytes(1 << 20));
    huge.values
        .insert(vec![b'k'; MAX_KEY_SIZE], b"long key".to_vec());
    root.buckets.insert(b"huge".to_vec(), huge);
    root
}

#[test]
fn round_trip_many_keys_nested_buckets_big_values() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let tree = sample(&mut rng, 30_000);
    let (file, summary) = build(&tree, DEFAULT_PAGE_SIZE);
    assert_eq!(file.len() as u64, summary.size);
    assert_eq!(summary.size % DEFAULT_PAGE_SIZE as u64, 0);
    assert_eq!(summary.entries, 30_000 + 2000 + 1 + 1 + 2);
    assert_eq!(summary.buckets, 4 + 4);
    assert_eq!(read_tree(&file), tree);
    check_clean(&file);

    let r = Reader::open(Cursor::new(&file)).unwrap();
    assert_eq!(r.meta().high_water, summary.pages);
    assert_eq!(r.meta().size(), summary.size);
    assert_eq!(r.meta().txid, 1);
}

#[test]
fn other_page_sizes() {
    let mut rng = Rng(7);
    let tree = sample(&mut rng, 3000);
    for page_size in [1024, 16384, 65536] {
        let (file, _) = build(&tree, page_size);
        assert_eq!(read_tree(&file), tree, "page size {page_size}");
        check_clean(&file);
    }
}

#[test]
fn small_buckets_are_inline_big_ones_are_not() {
    let mut root = Tree::default();
    let mut small = Tree::default();
    small.values.insert(b"a".to_vec(), b"1".to_vec());
    let mut large = Tree::default();
    for i in 0..100 {
        large
            .values
            .insert(format!("k{i:03}").into_bytes(), vec![0; 20]);
    }
    let mut parent = Tree::default();
    parent.buckets.insert(b"child".to_vec(), Tree::default());
    root.buckets.insert(b"empty".to_vec(), Tree::default());
    root.buckets.insert(b"large".to_vec(), large);
    root.buckets.insert(b"parent".to_vec(), parent);
    root.buckets.insert(b"small".to_vec(), small);
    let (file, _) = build(&root, DEFAULT_PAGE_SIZE);
    let mut r = Reader::open(Cursor::new(&file)).unwrap();
    let inline = |r: &mut Reader<_>, name: &[u8]| r.bucket(&[name]).unwrap().unwrap().is_inline();
    assert!(inline(&mut r, b"empty"));
    assert!(inline(&mut r, b"small"));
    assert!(!inline(&mut r, b"large"));
    assert!(
        !inline(&mut r, b"parent"),
        "a bucket with sub-buckets is never inline"
    );
    assert!(r
        .bucket(&[b"parent", b"child"])
        .unwrap()
        .unwrap()
        .is_inline());
    assert_eq!(r.bucket(&[b"missing"]).unwrap(), None);
    // A plain entry is not a bucket.
    let small = r.bucket(&[b"small"]).unwrap().unwrap();
    assert_eq!(r.value(&small, b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(r.bucket(&[b"small", b"a"]).unwrap(), None);
    assert_eq!(read_tree(&file), root);
    check_clean(&file);
}

#[test]
fn an_empty_file_has_one_empty_root_page() {
    let (file, summary) = build(&Tree::default(), DEFAULT_PAGE_SIZE);
    assert_eq!(summary.pages, 4);
    assert_eq!(read_tree(&file), Tree::default());
    check_clean(&file);
}

#[test]
fn point_lookups_descend_branches() {
    let mut rng = Rng(99);
    let tree = sample(&mut rng, 20_000);
    let (file, _) = build(&tree, DEFAULT_PAGE_SIZE);
    let mut r = Reader::open(Cursor::new(&file)).unwrap();
    let key = r.bucket(&[b"data"]).unwrap().unwrap();
    assert!(!key.is_inline());
    for (k, v) in tree.buckets[&b"data"[..]].values.iter().step_by(97) {
        assert_eq!(r.value(&key, k).unwrap().as_ref(), Some(v));
        let mut before = k.clone();
        before.push(0);
        assert_eq!(r.value(&key, &before).unwrap(), None);
    }
    assert_eq!(r.value(&key, b"").unwrap(), None);
    assert_eq!(r.value(&key, b"\xff\xff").unwrap(), None);
    let sub = r
        .bucket(&[b"data", b"000000000003-sub", b"deepest"])
        .unwrap();
    assert_eq!(r.value(&sub.unwrap(), b"x").unwrap(), Some(b"y".to_vec()));
}

#[test]
fn for_each_stops_when_asked() {
    let mut rng = Rng(5);
    let tree = sample(&mut rng, 5000);
    let (file, _) = build(&tree, DEFAULT_PAGE_SIZE);
    let mut r = Reader::open(Cursor::new(&file)).unwrap();
    let key = r.bucket(&[b"data"]).unwrap().unwrap();
    let mut seen = 0;
    let flow = r
        .for_each(&key, &mut |_, _| {
            seen += 1;
            Ok(if seen == 1234 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })
        .unwrap();
    assert!(flow.is_break());
    assert_eq!(seen, 1234);
}

#[test]
fn writer_refuses_bad_input() {
    let new = || Writer::new(Cursor::new(Vec::new())).unwrap();
    let mut w = new();
    assert!(w.put(b"k", b"v").is_err(), "entries at the root");
    assert!(w.end_bucket().is_err(), "no bucket open");
    w.begin_bucket(b"b").unwrap();
    assert_eq!(w.depth(), 1);
    w.put(b"b", b"1").unwrap();
    assert!(w.put(b"b", b"2").is_err(), "duplicate key");
    assert!(w.put(b"a", b"2").is_err(), "descending key");
    assert!(w.put(b"", b"2").is_err(), "empty key");
    assert!(w.put(&vec![b'z'; MAX_KEY_SIZE + 1], b"").is_err());
    assert!(w.begin_bucket(b"a").is_err(), "bucket name out of order");
    assert!(new().begin_bucket(b"").is_err());
    let mut w = new();
    w.begin_bucket(b"b").unwrap();
    assert!(w.finish().is_err(), "bucket still open");
    let mut w = new();
    w.begin_bucket(b"b").unwrap();
    w.end_bucket().unwrap();
    assert!(
        w.begin_bucket(b"a").is_err(),
        "top-level buckets out of order"
    );
    assert!(Writer::with_page_size(Cursor::new(Vec::new()), 3000).is_err());
}

#[test]
fn writing_starts_at_the_current_position() {
    let mut out = Cursor::new(vec![7u8; 10]);
    out.set_position(10);
    let mut w = Writer::new(out).unwrap();
    w.begin_bucket(b"b").unwrap();
    w.put(b"k", b"v").unwrap();
    w.end_bucket().unwrap();
    let (out, summary) = w.finish().unwrap();
    assert_eq!(out.position(), 10 + summary.size);
    let file = out.into_inner();
    assert_eq!(&file[..10], &[7u8; 10]);
    let mut expected = Tree::default();
    let mut b = Tree::default();
    b.values.insert(b"k".to_vec(), b"v".to_vec());
    expected.buckets.insert(b"b".to_vec(), b);
    assert_eq!(read_tree(&file[10..]), expected);
}

#[test]
fn meta_pages_fall_back_and_reject() {
    let mut rng = Rng(11);
    let tree = sample(&mut rng, 2000);
    let (file, _) = build(&tree, DEFAULT_PAGE_SIZE);
    assert!(is_meta_page(&file));
    assert!(is_meta_page(&file[DEFAULT_PAGE_SIZE..]));
    assert!(!is_meta_page(&file[2 * DEFAULT_PAGE_SIZE..]));
    assert!(!is_meta_page(&[0u8; 100]));

    // A damaged first meta page: the second one is used.
    let mut one_bad = file.clone();
    one_bad[PAGE_HEADER + 20] ^= 0xff;
    assert!(!is_meta_page(&one_bad));
    let r = Reader::open(Cursor::new(&one_bad)).unwrap();
    assert_eq!(r.meta().txid, 1);
    assert_eq!(read_tree(&one_bad), tree);
    // Damaged second: the first one is used.
    let mut other_bad = file.clone();
    other_bad[DEFAULT_PAGE_SIZE + PAGE_HEADER + 20] ^= 0xff;
    assert_eq!(
        Reader::open(Cursor::new(&other_bad)).unwrap().meta().txid,
        0
    );
    // Both damaged, or not a bolt file at all.
    let mut both = one_bad.clone();
    both[DEFAULT_PAGE_SIZE + PAGE_HEADER + 20] ^= 0xff;
    assert!(Reader::open(Cursor::new(&both)).is_err());
    assert!(Reader::open(Cursor::new(vec![0u8; 3 * 4096])).is_err());
    assert!(Reader::open(Cursor::new(b"short".to_vec())).is_err());
    // A checksum of 0 is accepted (bbolt's rule).
    let mut zero = file.clone();
    zero[PAGE_HEADER + 56..PAGE_HEADER + 64].fill(0);
    Reader::open(Cursor::new(&zero)).unwrap();
}

#[test]
fn trailing_bytes_are_ignored_and_truncation_is_an_error() {
    let mut rng = Rng(12);
    let tree = sample(&mut rng, 2000);
    let (mut file, _) = build(&tree, DEFAULT_PAGE_SIZE);
    let len = file.len();
    file.extend_from_slice(&[0xab; 32]);
    assert_eq!(read_tree(&file), tree);
    check_clean(&file);
    let cut = &file[..len - DEFAULT_PAGE_SIZE];
    let err = Reader::open(Cursor::new(cut)).err().expect("truncated");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

/// Damage anywhere gives errors or check problems, never a panic or a hang.
#[test]
fn damaged_files_never_panic() {
    let mut rng = Rng(13);
    let tree = sample(&mut rng, 3000);
    let (file, _) = build(&tree, DEFAULT_PAGE_SIZE);
    let mut damaged = 0;
    for round in 0..400 {
        let mut bad = file.clone();
        // Hit page headers and element tables more often than payload bytes.
        let page = 2 + rng.below(bad.len() as u64 / 4096 - 2) as usize;
        let offset = match round % 3 {
            0 => rng.below(16) as usize,
            1 => 16 + rng.below(256) as usize,
            _ => rng.below(4096) as usize,
        };
        let at = page * 4096 + offset;
        bad[at] ^= 1 << rng.below(8);
        let Ok(mut r) = Reader::open(Cursor::new(&bad)) else {
            damaged += 1;
            continue;
        };
        let walked = r.walk(&mut |_, _, _| Ok(ControlFlow::Continue(())));
        let problems = r.check().unwrap();
        if walked.is_err() || !problems.is_empty() {
            damaged += 1;
        }
    }
    assert!(damaged > 50, "only {damaged} damaged files noticed");
}

#[test]
fn check_reports_unreachable_pages() {
    let mut root = Tree::default();
    let mut b = Tree::default();
    for i in 0..1000 {
        b.values.insert(format!("{i:05}").into_bytes(), vec![1; 30]);
    }
    root.buckets.insert(b"b".to_vec(), b);
    let (mut file, _) = build(&root, DEFAULT_PAGE_SIZE);
    // Point both meta pages' root at an empty leaf appended at the end: every old data page is
    // now unreachable and not free.
    let pages = file.len() / 4096;
    let mut leaf = vec![0u8; 4096];
    leaf[0..8].copy_from_slice(&(pages as u64).to_le_bytes());
    leaf[8..10].copy_from_slice(&FLAG_LEAF.to_le_bytes());
    file.extend_from_slice(&leaf);
    for m in 0..2 {
        let at = m * 4096 + PAGE_HEADER;
        let mut meta = Meta::decode(&file[at..at + META_SIZE]).unwrap();
        meta.root = pages as u64;
        meta.high_water = pages as u64 + 1;
        file[at..at + META_SIZE].copy_from_slice(&meta.encode());
    }
    let mut r = Reader::open(Cursor::new(&file)).unwrap();
    let problems = r.check().unwrap();
    assert_eq!(problems.len(), pages - 3, "{problems:?}");
    assert!(problems[0].contains("unreachable unfreed"), "{problems:?}");
}

/// etcd's own bbolt code (through `etcdctl snapshot status`, which runs bbolt's consistency
/// check and walks every bucket) accepts what the writer produces.
#[test]
fn etcdctl_reads_written_files() {
    let etcdctl = std::path::Path::new("/usr/bin/etcdctl");
    if !etcdctl.exists() {
        eprintln!("skipped: no /usr/bin/etcdctl");
        return;
    }
    let mut rng = Rng(21);
    let tree = sample(&mut rng, 20_000);
    let (file, summary) = build(&tree, DEFAULT_PAGE_SIZE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    std::fs::write(&path, &file).unwrap();
    let out = std::process::Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // totalKey counts the entries of each top-level bucket (sub-buckets count as entries).
    let total: usize = tree
        .buckets
        .values()
        .map(|b| b.values.len() + b.buckets.len())
        .sum();
    assert!(
        stdout.contains(&format!("\"totalKey\":{total}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\"totalSize\":{}", summary.size)),
        "{stdout}"
    );
}
