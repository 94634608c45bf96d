//! The closed loop: clients take request numbers from a shared [`Plan`] until it runs out
//! (total reached, time up, or Ctrl-C) and record into their own [`Recorder`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::pace::Pacer;
use super::progress::Progress;
use super::report::Recorder;

/// Set by Ctrl-C: every plan stops handing out requests, so the run reports what it did.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes the first Ctrl-C end the measured phase; the second exits at once.
pub fn stop_on_ctrl_c() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            INTERRUPTED.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Which requests a run may still send: at most `total`, until `deadline`, paced.
pub struct Plan {
    total: u64,
    start: Instant,
    deadline: Option<Instant>,
    pacer: Option<Pacer>,
    issued: AtomicU64,
}

impl Plan {
    /// A plan starting now.
    pub fn new(total: u64, duration: Option<Duration>, rate: u64) -> Arc<Plan> {
        let start = Instant::now();
        Arc::new(Plan {
            total,
            start,
            deadline: duration.map(|d| start + d),
            pacer: Pacer::new(rate),
            issued: AtomicU64::new(0),
        })
    }

    /// The next request's number once its send time has come; `None` when the run is over.
    pub async fn next(&self) -> Option<u64> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if n >= self.total || self.over() {
            return None;
        }
        if let Some(p) = &self.pacer {
            p.wait().await;
            if self.over() {
                return None;
            }
        }
        Some(n)
    }

    fn over(&self) -> bool {
        interrupted() || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Requests handed out so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed).min(self.total)
    }

    /// A progress bar for this plan: by requests, or by time when only the duration bounds it.
    pub fn progress(self: &Arc<Plan>, enabled: bool, what: &'static str) -> Option<Progress> {
        if self.total == u64::MAX {
            let ms = self.deadline?.duration_since(self.start).as_millis() as u64;
            let start = self.start;
            Progress::start(enabled, ms, "ms", move || {
                start.elapsed().as_millis() as u64
            })
        } else {
            let plan = self.clone();
            Progress::start(enabled, self.total, what, move || plan.issued())
        }
    }
}

/// One client's request: request number `n`, recorded into `rec`.
pub trait Worker: Send + 'static {
    /// Sends request `n` and records its outcome.
    fn step(&mut self, n: u64, rec: &mut Recorder) -> impl Future<Output = ()> + Send;
}

/// Runs `workers` concurrently until `plan` runs out; their merged records and the time taken.
pub async fn run<W: Worker>(
    plan: &Arc<Plan>,
    workers: Vec<W>,
    ops: &'static [&'static str],
    progress: bool,
) -> anyhow::Result<(Recorder, Duration)> {
    let bar = plan.progress(progress, "requests");
    let start = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let plan = plan.clone();
            tokio::spawn(async move {
                let mut rec = Recorder::new(ops);
                while let Some(n) = plan.next().await {
                    w.step(n, &mut rec).await;
                }
                rec
            })
        })
        .collect();
    let mut all = Recorder::new(ops);
    for t in tasks {
        all.merge(&t.await.context("bench client task")?);
    }
    let elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok((all, elapsed))
}

/// Polls `done` every few milliseconds until it returns true or `idle` passes without
/// `progress()` changing.
pub async fn wait_until(
    mut done: impl FnMut() -> bool,
    progress: impl Fn() -> u64,
    idle: Duration,
) -> bool {
    let mut last = progress();
    let mut since = Instant::now();
    loop {
        if done() {
            return true;
        }
        if interrupted() {
            return false;
        }
        let now = progress();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= idle {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
