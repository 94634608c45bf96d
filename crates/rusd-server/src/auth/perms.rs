//! A user's key permissions merged over all of its roles (etcd's `unifiedRangePermissions`),
//! and the two questions asked of them: may this key, or this whole range, be read or written.
//!
//! A permission with an empty `range_end` covers one key; `range_end` `"\0"` means "every key
//! from `key` on"; otherwise it covers `[key, range_end)`. A request for a range is allowed only
//! when the union of the user's intervals covers all of it, with no gap.

use rusd_proto::authpb::{permission::Type as PermType, Permission};

/// An interval's end: a key (exclusive), or unbounded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Unbounded,
}

/// `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    start: Vec<u8>,
    end: End,
}

impl Interval {
    /// The interval a permission or request covers; `None` when it is empty.
    fn of(key: &[u8], range_end: &[u8]) -> Option<Self> {
        let end = match range_end {
            [] => {
                // One key: [key, key + "\0").
                let mut next = key.to_vec();
                next.push(0);
                End::Key(next)
            }
            [0] => End::Unbounded,
            end if end <= key => return None,
            end => End::Key(end.to_vec()),
        };
        Some(Self {
            start: key.to_vec(),
            end,
        })
    }
}

/// Sorted intervals, for one kind of access.
#[derive(Clone, Debug, Default)]
struct Intervals(Vec<Interval>);

impl Intervals {
    fn insert(&mut self, ivl: Interval) {
        let at = self.0.partition_point(|i| i.start <= ivl.start);
        self.0.insert(at, ivl);
    }

    /// Whether some interval holds `key`.
    fn holds(&self, key: &[u8]) -> bool {
        self.0.iter().any(|i| {
            i.start.as_slice() <= key
                && match &i.end {
                    End::Key(e) => key < e.as_slice(),
                    End::Unbounded => true,
                }
        })
    }

    /// Whether the union of the intervals covers all of `want`.
    fn covers(&self, want: &Interval) -> bool {
        // Sweep from want.start: every interval starting at or before the covered prefix
        // extends it; a gap before want.end means no.
        let mut reached: Option<End> = None;
        for i in &self.0 {
            let reach = match &reached {
                None if i.start.as_slice() <= want.start.as_slice() => {
                    let starts_inside = match &i.end {
                        End::Key(e) => e.as_slice() > want.start.as_slice(),
                        End::Unbounded => true,
                    };
                    if !starts_inside {
                        continue;
                    }
                    i.end.clone()
                }
                None => return false,
                Some(r) => {
                    let gap = match r {
                        End::Key(e) => i.start.as_slice() > e.as_slice(),
                        End::Unbounded => false,
                    };
                    if gap {
                        break;
                    }
                    r.clone().max(i.end.clone())
                }
            };
            if reach >= want.end {
                return true;
            }
            reached = Some(reach);
        }
        reached.is_some_and(|r| r >= want.end)
    }
}

/// One user's merged read and write permissions.
#[derive(Clone, Debug, Default)]
pub struct UnifiedPerms {
    read: Intervals,
    write: Intervals,
}

/// The access an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Range, watch, txn compares, `prev_kv`.
    Read,
    /// Put, delete.
    Write,
}

impl UnifiedPerms {
    /// Merges the permissions of a user's roles.
    pub fn merge<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> Self {
        let mut out = Self::default();
        for p in perms {
            let Some(ivl) = Interval::of(&p.key, &p.range_end) else {
                continue;
            };
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Read) => out.read.insert(ivl),
                Ok(PermType::Write) => out.write.insert(ivl),
                Ok(PermType::Readwrite) => {
                    out.read.insert(ivl.clone());
                    out.write.insert(ivl);
                }
                Err(_) => {}
            }
        }
        out
    }

    /// Whether `access` to `key` (`range_end` empty) or to `[key, range_end)` is allowed.
    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        let set = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        if range_end.is_empty() {
            return set.holds(key);
        }
        match Interval::of(key, range_end) {
            Some(want) => set.covers(&want),
            // An empty range reads nothing; etcd asks about its first key.
            None => set.holds(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(key: &str, end: &[u8], t: PermType) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.to_vec(),
        }
    }

    #[test]
    fn one_key_ranges_and_from_key_permissions() {
        let perms = [
            perm("foo", b"", PermType::Read),
            perm("a", b"c", PermType::Readwrite),
            perm("z", b"\0", PermType::Write),
        ];
        let u = UnifiedPerms::merge(&perms);
        assert!(u.allows(Access::Read, b"foo", b""));
        assert!(!u.allows(Access::Write, b"foo", b""));
        assert!(!u.allows(Access::Read, b"foo1", b""));
        assert!(
            !u.allows(Access::Read, b"foo", b"foo1"),
            "two keys, one allowed"
        );
        assert!(
            u.allows(Access::Read, b"foo", b"foo\0"),
            "exactly the one key"
        );
        assert!(u.allows(Access::Write, b"a", b"c"));
        assert!(u.allows(Access::Write, b"b", b"bz"));
        assert!(!u.allows(Access::Write, b"b", b"d"));
        assert!(u.allows(Access::Write, b"zzz", b"\0"));
        assert!(!u.allows(Access::Read, b"zzz", b""));
        assert!(!u.allows(Access::Write, b"y", b"\0"));
    }

    #[test]
    fn adjacent_and_overlapping_intervals_cover_together_but_not_across_a_gap() {
        let perms = [
            perm("a", b"c", PermType::Read),
            perm("c", b"e", PermType::Read),
            perm("d", b"g", PermType::Read),
            perm("h", b"j", PermType::Read),
        ];
        let u = UnifiedPerms::merge(&perms);
        assert!(u.allows(Access::Read, b"a", b"g"));
        assert!(u.allows(Access::Read, b"b", b"f"));
        assert!(!u.allows(Access::Read, b"a", b"i"), "gap [g, h)");
        assert!(u.allows(Access::Read, b"h", b"i"));
        assert!(
            !u.allows(Access::Read, b"0", b"b"),
            "starts before every interval"
        );
    }
}
