//! Auto-compaction, as etcd's `--auto-compaction-mode` and `--auto-compaction-retention`.
//!
//! * `Periodic(retention)`: keep `retention` of history. Every `retention / 10` (at most
//!   6 minutes) the current revision is sampled; every `retention` (at most an hour) the store
//!   is compacted at the oldest sample, taken about `retention` ago.
//! * `Revision(n)`: keep the last `n` revisions; every 5 minutes (the `interval`), compact at
//!   `current - n`.
//!
//! The policy is a plain state machine driven by [`Compactor::tick`] with the time passed in,
//! so tests run it without waiting; [`Compactor::spawn`] drives it from a thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::store::MvccStore;

/// The auto-compaction policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactionMode {
    /// Keep this much history (time).
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

const HOUR: Duration = Duration::from_secs(3600);
/// How often revision mode compacts (etcd's `revInterval`).
pub const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);

/// Decides when to compact, and at which revision.
pub struct Compactor {
    store: MvccStore,
    mode: CompactionMode,
    /// Revision samples, oldest first; the first is about `retention` old.
    samples: VecDeque<i64>,
    last_sample: Option<Instant>,
    last_success: Instant,
    /// How long until the next compaction may run; shortens after the first success.
    wait: Duration,
    last_compacted: i64,
}

impl Compactor {
    /// A compactor for `store`, its clock starting at `now`.
    pub fn new(store: MvccStore, mode: CompactionMode, now: Instant) -> Self {
        let wait = match mode {
            CompactionMode::Periodic(retention) => retention,
            CompactionMode::Revision(_) => REVISION_MODE_INTERVAL,
        };
        Self {
            store,
            mode,
            samples: VecDeque::new(),
            last_sample: None,
            last_success: now,
            wait,
            last_compacted: 0,
        }
    }

    /// How often [`Compactor::tick`] should be called.
    pub fn tick_interval(&self) -> Duration {
        match self.mode {
            CompactionMode::Periodic(retention) => {
                (retention.min(HOUR) / 10).max(Duration::from_millis(10))
            }
            CompactionMode::Revision(_) => REVISION_MODE_INTERVAL,
        }
    }

    /// Advances the policy to `now`; compacts if it is time. Returns the revision compacted at.
    pub fn tick(&mut self, now: Instant) -> Option<i64> {
        match self.mode {
            CompactionMode::Periodic(retention) => self.tick_periodic(retention, now),
            CompactionMode::Revision(keep) => self.tick_revision(keep, now),
        }
    }

    fn tick_periodic(&mut self, retention: Duration, now: Instant) -> Option<i64> {
        if retention.is_zero() {
            return None;
        }
        let every = self.tick_interval();
        if self
            .last_sample
            .is_none_or(|t| now.duration_since(t) >= every)
        {
            self.samples.push_back(self.store.current_revision());
            // One sample per tick interval over the retention, plus the current one.
            let keep = (retention.as_nanos() / every.as_nanos().max(1)) as usize + 1;
            while self.samples.len() > keep {
                self.samples.pop_front();
            }
            self.last_sample = Some(now);
        }
        if now.duration_since(self.last_success) < self.wait {
            return None;
        }
        let rev = *self.samples.front()?;
        let done = self.compact(rev, now);
        if done.is_some() || rev <= self.store.compact_revision() {
            self.wait = retention.min(HOUR);
        }
        done
    }

    fn tick_revision(&mut self, keep: i64, now: Instant) -> Option<i64> {
        if keep <= 0 || now.duration_since(self.last_success) < self.wait {
            return None;
        }
        let rev = self.store.current_revision() - keep;
        if rev <= 0 || rev == self.last_compacted {
            return None;
        }
        self.compact(rev, now)
    }

    fn compact(&mut self, rev: i64, now: Instant) -> Option<i64> {
        match self.store.compact(rev) {
            Ok(_) => {
                tracing::info!(revision = rev, "auto-compaction scheduled");
                self.last_success = now;
                self.last_compacted = rev;
                Some(rev)
            }
            Err(Error::Compacted { .. }) => {
                // Someone compacted further already: that counts as done.
                self.last_success = now;
                None
            }
            Err(e) => {
                tracing::warn!(revision = rev, error = %e, "auto-compaction failed; will retry");
                None
            }
        }
    }

    /// Runs the policy on a thread until the returned guard is dropped.
    pub fn spawn(mut self) -> std::io::Result<CompactorGuard> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("rusd-auto-compact".into())
            .spawn(move || {
                let step = self.tick_interval().min(Duration::from_millis(100));
                let mut next = Instant::now();
                while !flag.load(Ordering::Acquire) {
                    let now = Instant::now();
                    if now >= next {
                        self.tick(now);
                        next = now + self.tick_interval();
                    }
                    std::thread::sleep(step);
                }
            })?;
        Ok(CompactorGuard {
            stop,
            handle: Some(handle),
        })
    }
}

/// Stops a spawned [`Compactor`] when dropped.
pub struct CompactorGuard {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for CompactorGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::PutRequest;
    use crate::store::StoreConfig;

    fn store() -> (MvccStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = MvccStore::open(StoreConfig::new(dir.path().join("db"))).unwrap();
        (store, dir)
    }

    fn put(store: &MvccStore, n: usize) {
        for _ in 0..n {
            store.put(&PutRequest::new("k", "v")).unwrap();
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions_every_interval() {
        let (store, _dir) = store();
        let t0 = Instant::now();
        let mut c = Compactor::new(store.clone(), CompactionMode::Revision(10), t0);
        put(&store, 30); // current 31
        assert_eq!(
            c.tick(t0 + Duration::from_secs(60)),
            None,
            "not before the interval"
        );
        assert_eq!(c.tick(t0 + REVISION_MODE_INTERVAL), Some(21));
        assert_eq!(store.compact_revision(), 21);
        put(&store, 5);
        assert_eq!(
            c.tick(t0 + REVISION_MODE_INTERVAL + Duration::from_secs(1)),
            None
        );
        assert_eq!(c.tick(t0 + REVISION_MODE_INTERVAL * 2), Some(26));
        assert_eq!(
            c.tick(t0 + REVISION_MODE_INTERVAL * 3),
            None,
            "nothing new to compact"
        );
    }

    #[test]
    fn periodic_mode_compacts_at_the_revision_of_one_retention_ago() {
        let (store, _dir) = store();
        let t0 = Instant::now();
        let retention = Duration::from_secs(100);
        let mut c = Compactor::new(store.clone(), CompactionMode::Periodic(retention), t0);
        assert_eq!(c.tick_interval(), Duration::from_secs(10));
        // One tick per 10 s; 3 writes between ticks. Revision at tick i is 1 + 3i.
        let mut compacted = Vec::new();
        for i in 0..=25u32 {
            let now = t0 + Duration::from_secs(10) * i;
            if let Some(rev) = c.tick(now) {
                compacted.push((i, rev));
            }
            put(&store, 3);
        }
        // First at t=100 s (tick 10) at the sample from t=0; then every 100 s at the sample
        // taken 100 s earlier.
        assert_eq!(compacted, [(10, 1), (20, 31)]);
        assert_eq!(store.compact_revision(), 31);
    }

    #[test]
    fn zero_retention_disables() {
        let (store, _dir) = store();
        let t0 = Instant::now();
        put(&store, 10);
        let mut p = Compactor::new(store.clone(), CompactionMode::Periodic(Duration::ZERO), t0);
        let mut r = Compactor::new(store.clone(), CompactionMode::Revision(0), t0);
        for i in 1..10u32 {
            assert_eq!(p.tick(t0 + HOUR * i), None);
            assert_eq!(r.tick(t0 + HOUR * i), None);
        }
    }
}
