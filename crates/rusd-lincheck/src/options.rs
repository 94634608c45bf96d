//! How to check a key-value history: the store's starting point and the search budget.

use std::time::Duration;

/// Options of [`check_kv`](crate::check_kv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// The store revision before the first operation (1 for a fresh etcd or rusd). Every key
    /// of the history must be absent at that revision.
    pub initial_revision: i64,
    /// Whether writes outside the history (to keys the history never touches) may have
    /// consumed revisions. When false, every revision up to the highest one observed must
    /// come from a write of the history.
    pub foreign_writes: bool,
    /// Most search steps (placements of operations with unknown outcome) before giving up
    /// with [`CheckError::Undecided`](crate::CheckError::Undecided).
    pub max_steps: u64,
    /// Most time before giving up, if any.
    pub timeout: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            initial_revision: 1,
            foreign_writes: false,
            max_steps: 2_000_000,
            timeout: None,
        }
    }
}
