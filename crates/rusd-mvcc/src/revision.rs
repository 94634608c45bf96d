//! Revisions: the `(main, sub)` pair that names every change in the store.
//!
//! `main` is the store revision of an atomic change (one per put, delete or txn that changed
//! something); `sub` numbers the individual key changes inside it, from 0. Revisions order by
//! `main`, then `sub`, which is also the byte order of their 16-byte on-disk encoding.

use std::fmt;

/// Length of [`Revision::to_bytes`].
pub const REVISION_BYTES: usize = 16;

/// One change to one key: store revision `main`, position `sub` inside it.
///
/// The derived `Ord` compares `main` first, then `sub`, as etcd's `revision` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision of the atomic change.
    pub main: i64,
    /// The index of this key's change inside that atomic change.
    pub sub: i64,
}

impl Revision {
    /// A revision from its two parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// Big-endian `main` then big-endian `sub`, so that byte order equals revision order.
    ///
    /// Both parts are never negative in a store, so their two's-complement bytes sort as
    /// unsigned numbers.
    pub fn to_bytes(self) -> [u8; REVISION_BYTES] {
        let mut out = [0u8; REVISION_BYTES];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// The inverse of [`Revision::to_bytes`]; `None` when `bytes` is not 16 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let main: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let sub: [u8; 8] = bytes.get(8..REVISION_BYTES)?.try_into().ok()?;
        if bytes.len() != REVISION_BYTES {
            return None;
        }
        Some(Self {
            main: i64::from_be_bytes(main),
            sub: i64::from_be_bytes(sub),
        })
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

/// The id of a lease; 0 means "no lease", as in etcd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl LeaseId {
    /// No lease attached.
    pub const NONE: LeaseId = LeaseId(0);

    /// Whether this is a real lease (not [`LeaseId::NONE`]).
    pub fn is_some(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let revs = [
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(1, 255),
            Revision::new(1, 256),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(i64::MAX, i64::MAX),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
        }
    }

    #[test]
    fn round_trip_and_bad_lengths() {
        let r = Revision::new(123_456_789, 42);
        assert_eq!(Revision::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(Revision::from_bytes(&[0u8; 15]), None);
        assert_eq!(Revision::from_bytes(&[0u8; 17]), None);
        assert_eq!(r.to_string(), "123456789.42");
    }
}
