//! Read-index rounds shared by every read that arrives while one is pending, as etcd's
//! linearizable read loop shares them.
//!
//! Performance: openraft's `get_read_log_id` confirms the leadership with a heartbeat round
//! per call, and a follower asks the leader once per read, so 64 concurrent linearizable reads
//! cost 64 quorum rounds where one would do. Here a read joins the next round that starts
//! after it arrived: the round in flight when it arrives may have confirmed the leadership
//! before the read existed, so it does not count.
//!
//! A round is a [`Shared`] future that any of its readers drives, so a reader that gives up
//! (timeout, cancelled call) never strands the others, and no task is spawned.

use std::future::Future;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use crate::error::ServerError;

type Round = Shared<BoxFuture<'static, Result<u64, Arc<ServerError>>>>;

/// One batching point (see the module documentation). Clones share it.
#[derive(Clone, Default)]
pub struct ReadBatch {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The round whose confirmation is in flight (possibly finished).
    running: Option<Round>,
    /// The round that starts when `running` ends; readers arriving now join it.
    next: Option<Round>,
}

impl ReadBatch {
    /// The index of a read-index round that started after this call, run by `round` unless
    /// a round that qualifies is already queued.
    ///
    /// # Errors
    /// The round's error (every reader of a failed round gets it).
    pub async fn join<F, Fut>(&self, round: F) -> Result<u64, ServerError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, ServerError>> + Send + 'static,
    {
        let shared = {
            let mut state = self.state.lock();
            if state.running.as_ref().is_some_and(|r| r.peek().is_some()) {
                state.running = None;
            }
            match (&state.running, &state.next) {
                // Not started yet, so it qualifies (whether or not a round is running).
                (_, Some(next)) => next.clone(),
                (None, None) => {
                    let round: Round = round().map(|r| r.map_err(Arc::new)).boxed().shared();
                    state.running = Some(round.clone());
                    round
                }
                (Some(running), None) => {
                    let (running, batch) = (running.clone(), self.state.clone());
                    let next: Round = async move {
                        let _ = running.await;
                        {
                            // From here on, arrivals must wait for the round after this one.
                            let mut state = batch.lock();
                            state.running = state.next.take();
                        }
                        round().await.map_err(Arc::new)
                    }
                    .boxed()
                    .shared();
                    state.next = Some(next.clone());
                    next
                }
            }
        };
        shared.await.map_err(duplicate)
    }
}

/// A reader's own copy of its round's error (the round keeps the original): the same variant
/// where callers match on it, else the same gRPC code and text.
fn duplicate(e: Arc<ServerError>) -> ServerError {
    let e = match Arc::try_unwrap(e) {
        Ok(e) => return e,
        Err(e) => e,
    };
    match *e {
        ServerError::NoLeader => ServerError::NoLeader,
        ServerError::NotLeader => ServerError::NotLeader,
        ServerError::LeaderChanged => ServerError::LeaderChanged,
        ServerError::Timeout => ServerError::Timeout,
        ServerError::Stopped => ServerError::Stopped,
        ServerError::TooManyRequests => ServerError::TooManyRequests,
        ref other => {
            let (code, message) = crate::grpc::status::code_and_message(other);
            ServerError::Remote {
                code: code as i32,
                message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A round that counts itself and takes `ms` to confirm; its index is its number.
    fn counting(
        rounds: &Arc<AtomicU64>,
        ms: u64,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<u64, ServerError>> + Send + 'static {
        let rounds = rounds.clone();
        move || {
            async move {
                let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(n)
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_readers_share_rounds_that_started_after_them() {
        let (batch, rounds) = (ReadBatch::default(), Arc::new(AtomicU64::new(0)));
        // The first reader starts round 1; the 50 that arrive while it runs share round 2.
        let first = tokio::spawn({
            let (batch, f) = (batch.clone(), counting(&rounds, 50));
            async move { batch.join(f).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let later: Vec<_> = (0..50)
            .map(|_| {
                let (batch, f) = (batch.clone(), counting(&rounds, 50));
                tokio::spawn(async move { batch.join(f).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for r in later {
            assert_eq!(
                r.await.unwrap().unwrap(),
                2,
                "a round that began after the read"
            );
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        // Idle again: the next reader starts a fresh round at once.
        assert_eq!(batch.join(counting(&rounds, 1)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_reader_that_gives_up_does_not_strand_the_others() {
        let (batch, rounds) = (ReadBatch::default(), Arc::new(AtomicU64::new(0)));
        let quitter =
            tokio::time::timeout(Duration::from_millis(5), batch.join(counting(&rounds, 40)));
        assert!(quitter.await.is_err());
        // Joins the next round, which first drives the abandoned one to its end.
        assert_eq!(batch.join(counting(&rounds, 1)).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn every_reader_of_a_failed_round_gets_its_error() {
        let batch = ReadBatch::default();
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Err(ServerError::NoLeader)
        };
        let readers: Vec<_> = (0..5)
            .map(|_| {
                let batch = batch.clone();
                tokio::spawn(async move { batch.join(slow).await })
            })
            .collect();
        for r in readers {
            assert!(matches!(r.await.unwrap(), Err(ServerError::NoLeader)));
        }
        let internal = batch
            .join(|| async { Err(ServerError::Internal("disk".into())) })
            .await;
        // The same code and text as the original (the round keeps its result, so it is copied).
        let original = crate::grpc::status::code_and_message(&ServerError::Internal("disk".into()));
        let got = crate::grpc::status::code_and_message(&internal.unwrap_err());
        assert_eq!(got, original);
    }
}
