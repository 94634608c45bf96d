//! The bound on the search: steps and wall-clock time.

use std::time::{Duration, Instant};

use crate::error::CheckError;
use crate::options::CheckOptions;

/// Counts search steps and stops the search when a limit is reached.
pub(crate) struct Budget {
    steps: u64,
    max_steps: u64,
    started: Instant,
    timeout: Option<Duration>,
}

impl Budget {
    pub(crate) fn new(options: &CheckOptions) -> Self {
        Self {
            steps: 0,
            max_steps: options.max_steps,
            started: Instant::now(),
            timeout: options.timeout,
        }
    }

    /// Takes one step; fails once a limit is exceeded.
    pub(crate) fn step(&mut self) -> Result<(), CheckError> {
        self.steps += 1;
        if self.steps > self.max_steps {
            return Err(self.exhausted(format!("step limit {} reached", self.max_steps)));
        }
        if let Some(timeout) = self.timeout {
            if self.steps.is_multiple_of(256) && self.started.elapsed() > timeout {
                return Err(self.exhausted(format!("timeout {timeout:?} reached")));
            }
        }
        Ok(())
    }

    pub(crate) fn exhausted(&self, reason: String) -> CheckError {
        CheckError::Undecided {
            steps: self.steps,
            elapsed: self.started.elapsed(),
            reason,
        }
    }
}
