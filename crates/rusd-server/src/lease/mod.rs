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

/// What renewing a lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed to its full TTL (the value, in seconds).
    Renewed(i64),
    /// Its deadline passed; it is (or will be) revoked through the log.
    Expired,
    /// No such lease.
    NotFound,
}

/// Lease deadlines. Updated by the apply loop (grant, revoke) and by keep-alives.
#[derive(Debug)]
pub struct Lessor {
    leases: Mutex<HashMap<LeaseId, Deadline>>,
    min_ttl: i64,
    /// Wakes the expiry task when a deadline may have moved earlier.
    pub(crate) changed: tokio::sync::Notify,
    /// Bumped on every revoke, so keep-alives of an expired lease can wait for its revocation.
    revocations: tokio::sync::watch::Sender<u64>,
}

impl Lessor {
    /// A lessor whose shortest TTL is `min_ttl` seconds (etcd: ceil(1.5 x election timeout)).
    pub fn new(min_ttl: i64) -> Self {
        Self {
            leases: Mutex::new(HashMap::new()),
            min_ttl,
            changed: tokio::sync::Notify::new(),
            revocations: tokio::sync::watch::Sender::new(0),
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

    /// The state machine was replaced by a snapshot: exactly `leases` (id, TTL) exist now, each
    /// with a full TTL.
    pub fn replace_all(&self, leases: impl IntoIterator<Item = (LeaseId, i64)>) {
        let now = Instant::now();
        let mut map = self.leases.lock();
        map.clear();
        for (id, ttl) in leases {
            map.insert(
                id,
                Deadline {
                    ttl,
                    expires: now + Duration::from_secs(ttl.max(0) as u64),
                },
            );
        }
        drop(map);
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
        self.changed.notify_one();
    }

    /// A lease was revoked (applied).
    pub fn revoked(&self, id: LeaseId) {
        self.leases.lock().remove(&id);
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Renews a lease to its full TTL unless it does not exist or its deadline passed (an
    /// expired lease stays expired until its revoke is applied).
    pub fn renew(&self, id: LeaseId) -> Renewal {
        let mut leases = self.leases.lock();
        let Some(lease) = leases.get_mut(&id) else {
            return Renewal::NotFound;
        };
        let now = Instant::now();
        if lease.expires <= now {
            return Renewal::Expired;
        }
        lease.expires = now + Duration::from_secs(lease.ttl.max(0) as u64);
        Renewal::Renewed(lease.ttl)
    }

    /// Renews a lease to its full TTL; `None` if it does not exist (or already expired).
    pub fn keep_alive(&self, id: LeaseId) -> Option<i64> {
        match self.renew(id) {
            Renewal::Renewed(ttl) => Some(ttl),
            Renewal::Expired | Renewal::NotFound => None,
        }
    }

    /// Renews like [`Lessor::renew`], but when the lease already expired waits (up to `wait`)
    /// until its revoke is applied, as etcd does, so that a client told "TTL 0" no longer sees
    /// its keys. `Some(Some(ttl))`: renewed; `Some(None)`: no such lease (any more); `None`: the
    /// expired lease was still not revoked after `wait`.
    pub async fn renew_or_wait_revoked(&self, id: LeaseId, wait: Duration) -> Option<Option<i64>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut revocations = self.revocations.subscribe();
        loop {
            revocations.borrow_and_update();
            match self.renew(id) {
                Renewal::Renewed(ttl) => return Some(Some(ttl)),
                Renewal::NotFound => return Some(None),
                Renewal::Expired => {}
            }
            // A refresh (new leader) can make the lease live again without a revoke: poll too.
            let tick = tokio::time::Instant::now() + Duration::from_millis(100);
            if tokio::time::timeout_at(tick.min(deadline), revocations.changed())
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return None;
            }
        }
    }

    /// `(remaining seconds, granted TTL)` of a lease.
    pub fn remaining(&self, id: LeaseId) -> Option<(i64, i64)> {
        let leases = self.leases.lock();
        let lease = leases.get(&id)?;
        let left = lease.expires.saturating_duration_since(Instant::now());
        // etcd truncates (`int64(l.Remaining().Seconds())`): a fresh 10 s lease shows 9.
        Some((left.as_secs() as i64, lease.ttl))
    }

    /// When a lease expires (for ordering lease lists as etcd does, soonest first).
    pub fn deadline(&self, id: LeaseId) -> Option<Instant> {
        self.leases.lock().get(&id).map(|l| l.expires)
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
        assert_eq!(l.remaining(LeaseId(1)), Some((9, 10)), "truncated, as etcd");
        assert_eq!(l.keep_alive(LeaseId(1)), Some(10));
        assert_eq!(l.keep_alive(LeaseId(2)), None);
        assert_eq!(l.renew(LeaseId(2)), Renewal::NotFound);
        l.granted(LeaseId(3), 0);
        let (expired, next) = l.expired(10);
        assert_eq!(expired, vec![LeaseId(3)]);
        assert!(next.is_some());
        assert_eq!(
            l.keep_alive(LeaseId(3)),
            None,
            "an expired lease cannot be kept alive"
        );
        assert_eq!(l.renew(LeaseId(3)), Renewal::Expired);
        l.revoked(LeaseId(1));
        assert_eq!(l.remaining(LeaseId(1)), None);
    }

    #[tokio::test]
    async fn keep_alive_of_an_expired_lease_waits_for_its_revoke() {
        let l = std::sync::Arc::new(Lessor::new(2));
        l.granted(LeaseId(1), 0);
        l.granted(LeaseId(2), 5);
        assert_eq!(
            l.renew_or_wait_revoked(LeaseId(2), Duration::from_secs(1))
                .await,
            Some(Some(5))
        );
        assert_eq!(
            l.renew_or_wait_revoked(LeaseId(1), Duration::from_millis(150))
                .await,
            None,
            "not revoked yet"
        );
        let revoker = l.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            revoker.revoked(LeaseId(1));
        });
        assert_eq!(
            l.renew_or_wait_revoked(LeaseId(1), Duration::from_secs(5))
                .await,
            Some(None)
        );
        task.await.unwrap();
    }
}
