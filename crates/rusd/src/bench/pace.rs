//! A smooth rate limit shared by all clients, without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Hands out send times `1/rate` apart. A request takes the next free slot but never one in
/// the past: a token bucket of depth one, so a stall is not followed by a burst.
pub struct Pacer {
    start: Instant,
    interval_ns: u64,
    /// The next free slot, in nanoseconds since `start`.
    next: AtomicU64,
}

impl Pacer {
    /// A pacer for `rate` requests per second; `None` for 0 (unlimited).
    pub fn new(rate: u64) -> Option<Pacer> {
        (rate > 0).then(|| Pacer {
            start: Instant::now(),
            interval_ns: (1_000_000_000 / rate).max(1),
            next: AtomicU64::new(0),
        })
    }

    /// Claims a slot; returns when it is due (`None`: at once).
    pub fn claim(&self) -> Option<Instant> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut current = self.next.load(Ordering::Relaxed);
        loop {
            let slot = current.max(now);
            match self.next.compare_exchange_weak(
                current,
                slot + self.interval_ns,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return (slot > now).then(|| self.start + Duration::from_nanos(slot));
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Waits for the next slot.
    pub async fn wait(&self) {
        if let Some(at) = self.claim() {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_and_never_in_the_past() {
        let p = Pacer::new(1000).expect("pacer");
        // The first slot is now; the next ones are 1 ms apart.
        assert!(p.claim().is_none());
        let a = p.claim().expect("later slot");
        let b = p.claim().expect("later slot");
        let gap = b.duration_since(a);
        assert!(
            gap >= Duration::from_micros(999) && gap <= Duration::from_micros(1001),
            "{gap:?}"
        );
        // After a stall, the next slot is now again (no backlog).
        std::thread::sleep(Duration::from_millis(20));
        assert!(p.claim().is_none());
        assert!(p.claim().is_some());
        assert!(Pacer::new(0).is_none());
    }
}
