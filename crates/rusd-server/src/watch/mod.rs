//! Watch: the hub that fans engine events out to watch streams. (Being written: see
//! `grpc/watch.rs`.)

use rusd_mvcc::MvccStore;

/// Fans out the engine's events to every watch stream.
pub struct WatchHub {
    #[allow(dead_code)]
    store: MvccStore,
}

impl WatchHub {
    /// A hub over `store`'s events.
    pub fn new(store: MvccStore) -> Self {
        Self { store }
    }
}
