//! Unique ids, laid out as etcd's `idutil`: 16 bits of member id, 40 bits of milliseconds at
//! start, 8 bits of counter (which carries into the time bits). Lease ids are these with the
//! top bit cleared, so they are positive int64s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Generates unique ids for one member.
#[derive(Debug)]
pub struct IdGenerator {
    prefix: u64,
    suffix: AtomicU64,
}

impl IdGenerator {
    /// A generator for `member_id`, seeded with the current time.
    pub fn new(member_id: u64) -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            prefix: (member_id & 0xffff) << 48,
            suffix: AtomicU64::new((millis & 0xff_ffff_ffff) << 8),
        }
    }

    /// The next id.
    pub fn next(&self) -> u64 {
        let suffix = self.suffix.fetch_add(1, Ordering::Relaxed) + 1;
        self.prefix | (suffix & 0xffff_ffff_ffff)
    }

    /// The next id usable as a lease id (positive as an int64).
    pub fn next_lease_id(&self) -> i64 {
        loop {
            let id = (self.next() & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_positive() {
        let g = IdGenerator::new(0xffff_ffff_ffff_ffff);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = g.next_lease_id();
            assert!(id > 0);
            assert!(seen.insert(id));
        }
    }
}
