//! Lease deadlines: who expires when, keep-alives, and the expiry task.
//!
//! The engine stores which leases exist and which keys they hold; this module only keeps time.
//! Only the leader expires leases, and it does so by proposing a revoke through the log, so
//! every member deletes the same keys in the same revision. After a restart or a leadership
//! change every lease gets its full TTL again (etcd's behaviour without checkpointing).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rusd_mvcc::LeaseId;

/// Largest TTL etcd accepts.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Deadline {
    ttl: i64,
    expires: Instant,
}

/// Lease deadlines. Updated by the apply loop (grant, revoke) and by keep-alives.
#[derive(Debug)]
pub struct Lessor {
    leases: Mutex<HashMap<LeaseId, Deadline>>,
    min_ttl: i64,
    /// Wakes the expiry task when a deadline may have moved earlier.
    pub(crate) changed: tokio::sync::Notify,
}

impl Lessor {
    /// A lessor whose shortest TTL is `min_ttl` seconds (etcd: ceil(1.5 x election timeout)).
    pub fn new(min_ttl: i64) -> Self {
        Self {
            leases: Mutex::new(HashMap::new()),
            min_ttl,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The TTL a grant of `ttl` gets: at least the minimum.
    pub fn effective_ttl(&self, ttl: i64) -> i64 {
        ttl.max(self.min_ttl)
    }

    /// A lease was granted (applied): it expires `ttl` seconds from now.
    pub fn granted(&self, id: LeaseId, ttl: i64) {
        self.leases.lock().insert(
            id,
            Deadline {
                ttl,
                expires: Instant::now() + Duration::from_secs(ttl.max(0) as u64),
            },
        );
        self.changed.notify_one();
    }

    /// A lease was revoked (applied).
    pub fn revoked(&self, id: LeaseId) {
        self.leases.lock().remove(&id);
    }

    /// Renews a lease to its full TTL; `None` if it does not exist (or already expired).
    pub fn keep_alive(&self, id: LeaseId) -> Option<i64> {
        let mut leases = self.leases.lock();
        let lease = leases.get_mut(&id)?;
        let now = Instant::now();
        if lease.expires <= now {
            return None;
        }
        lease.expires = now + Duration::from_secs(lease.ttl.max(0) as u64);
        Some(lease.ttl)
    }

    /// `(remaining seconds, granted TTL)` of a lease.
    pub fn remaining(&self, id: LeaseId) -> Option<(i64, i64)> {
        let leases = self.leases.lock();
        let lease = leases.get(&id)?;
        let left = lease.expires.saturating_duration_since(Instant::now());
        // etcd rounds the remaining time up to whole seconds.
        let secs = left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0);
        Some((secs, lease.ttl))
    }

    /// Gives every lease its full TTL from now (new leader, restart).
    pub fn refresh_all(&self) {
        let now = Instant::now();
        for lease in self.leases.lock().values_mut() {
            lease.expires = now + Duration::from_secs(lease.ttl.max(0) as u64);
        }
    }

    /// Leases whose deadline passed, and the time until the next deadline.
    pub fn expired(&self, limit: usize) -> (Vec<LeaseId>, Option<Duration>) {
        let now = Instant::now();
        let leases = self.leases.lock();
        let mut out = Vec::new();
        let mut next: Option<Duration> = None;
        for (id, lease) in leases.iter() {
            if lease.expires <= now {
                if out.len() < limit {
                    out.push(*id);
                }
            } else {
                let left = lease.expires - now;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
        }
        out.sort();
        (out, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_and_keepalive() {
        let l = Lessor::new(2);
        assert_eq!(l.effective_ttl(0), 2);
        assert_eq!(l.effective_ttl(-5), 2);
        assert_eq!(l.effective_ttl(10), 10);
        l.granted(LeaseId(1), 10);
        assert_eq!(l.remaining(LeaseId(1)), Some((10, 10)));
        assert_eq!(l.keep_alive(LeaseId(1)), Some(10));
        assert_eq!(l.keep_alive(LeaseId(2)), None);
        l.granted(LeaseId(3), 0);
        let (expired, next) = l.expired(10);
        assert_eq!(expired, vec![LeaseId(3)]);
        assert!(next.is_some());
        assert_eq!(
            l.keep_alive(LeaseId(3)),
            None,
            "an expired lease cannot be kept alive"
        );
        l.revoked(LeaseId(1));
        assert_eq!(l.remaining(LeaseId(1)), None);
    }
}
