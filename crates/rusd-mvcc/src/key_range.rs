//! etcd's key-range convention (`key`, `range_end`) turned into one type.
//!
//! | `range_end`            | meaning                         |
//! |------------------------|---------------------------------|
//! | empty                  | exactly `key`                   |
//! | `"\0"`                 | every key `>= key`              |
//! | anything else          | `key <= k < range_end`          |
//!
//! A `range_end <= key` is an empty range (etcd's Range returns nothing for it).

use std::ops::Bound;

/// A set of keys named by etcd's `(key, range_end)` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange<'a> {
    /// First key of the range.
    pub start: &'a [u8],
    /// Where the range stops.
    pub end: RangeEnd<'a>,
}

/// The upper side of a [`KeyRange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeEnd<'a> {
    /// Only `start` itself (empty `range_end`).
    Single,
    /// Every key `>= start` (`range_end == "\0"`).
    Unbounded,
    /// Keys `< end` (exclusive).
    Before(&'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Interprets etcd's `(key, range_end)` pair.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        let end = match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Before(end),
        };
        Self { start: key, end }
    }

    /// Like [`KeyRange::new`], but refuses an empty key and an inverted range, for the places
    /// where etcd rejects them rather than reading nothing (watch creation).
    ///
    /// # Errors
    /// [`Error::EmptyKey`](crate::Error::EmptyKey) or
    /// [`Error::InvertedRange`](crate::Error::InvertedRange).
    pub fn checked(key: &'a [u8], range_end: &'a [u8]) -> crate::Result<Self> {
        if key.is_empty() {
            return Err(crate::Error::EmptyKey);
        }
        let range = Self::new(key, range_end);
        if range.is_empty() {
            return Err(crate::Error::InvertedRange {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
            });
        }
        Ok(range)
    }

    /// Exactly one key.
    pub fn single(key: &'a [u8]) -> Self {
        Self {
            start: key,
            end: RangeEnd::Single,
        }
    }

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self.end {
            RangeEnd::Single => key == self.start,
            RangeEnd::Unbounded => key >= self.start,
            RangeEnd::Before(end) => key >= self.start && key < end,
        }
    }

    /// Whether the range can hold no key at all (`range_end <= key`).
    pub fn is_empty(&self) -> bool {
        matches!(self.end, RangeEnd::Before(end) if end <= self.start)
    }

    /// The range as standard bounds over byte strings (for B-tree style scans).
    pub fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match self.end {
            RangeEnd::Single => (Bound::Included(self.start), Bound::Included(self.start)),
            RangeEnd::Unbounded => (Bound::Included(self.start), Bound::Unbounded),
            RangeEnd::Before(end) => (Bound::Included(self.start), Bound::Excluded(end)),
        }
    }

    /// Whether two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange<'_>) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        // [a_start, a_end) and [b_start, b_end) overlap iff a_start < b_end && b_start < a_end,
        // with Single meaning [start, start] inclusive.
        fn below_end(key: &[u8], end: RangeEnd<'_>, start: &[u8]) -> bool {
            match end {
                RangeEnd::Single => key <= start,
                RangeEnd::Unbounded => true,
                RangeEnd::Before(e) => key < e,
            }
        }
        below_end(self.start, other.end, other.start)
            && below_end(other.start, self.end, self.start)
    }
}

/// The smallest key greater than every key with prefix `prefix`, as clientv3's `GetPrefixRangeEnd`.
///
/// Returns `"\0"` (every key from `prefix` on) when no such key exists: an empty prefix or
/// one made only of `0xff` bytes.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions() {
        assert_eq!(KeyRange::new(b"a", b"").end, RangeEnd::Single);
        assert_eq!(KeyRange::new(b"a", b"\0").end, RangeEnd::Unbounded);
        assert_eq!(KeyRange::new(b"a", b"c").end, RangeEnd::Before(b"c"));
        assert!(KeyRange::new(b"a", b"c").contains(b"b"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        assert!(KeyRange::new(b"\0", b"\0").contains(b"\0"));
        assert!(KeyRange::new(b"b", b"a").is_empty());
        assert!(KeyRange::new(b"b", b"b").is_empty());
        assert!(!KeyRange::new(b"b", b"\0").is_empty());
    }

    #[test]
    fn checked_refuses_empty_keys_and_inverted_ranges() {
        assert!(matches!(
            KeyRange::checked(b"", b""),
            Err(crate::Error::EmptyKey)
        ));
        assert!(matches!(
            KeyRange::checked(b"b", b"a"),
            Err(crate::Error::InvertedRange { .. })
        ));
        assert!(KeyRange::checked(b"a", b"b").is_ok());
        assert!(KeyRange::checked(b"a", b"\0").is_ok());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"aa"), b"ab");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn overlap() {
        let r = |a: &'static [u8], b: &'static [u8]| KeyRange::new(a, b);
        assert!(r(b"a", b"").overlaps(&r(b"a", b"")));
        assert!(!r(b"a", b"").overlaps(&r(b"b", b"")));
        assert!(r(b"a", b"c").overlaps(&r(b"b", b"")));
        assert!(!r(b"a", b"c").overlaps(&r(b"c", b"")));
        assert!(r(b"a", b"\0").overlaps(&r(b"z", b"")));
        assert!(r(b"b", b"").overlaps(&r(b"a", b"c")));
        assert!(!r(b"a", b"b").overlaps(&r(b"b", b"c")));
        assert!(!r(b"c", b"a").overlaps(&r(b"a", b"\0")));
    }
}
