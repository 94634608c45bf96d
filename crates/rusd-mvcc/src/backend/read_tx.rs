//! Reading the backend: overlays first, then the redb snapshot.

use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use super::overlay::Pending;
use super::{Table, View};
use crate::error::Result;

type DiskEntry = (
    redb::AccessGuard<'static, &'static [u8]>,
    redb::AccessGuard<'static, &'static [u8]>,
);

/// A read view of the backend, taken by [`Backend::read`](super::Backend::read).
///
/// It sees every write applied before it was taken. Writes applied later may or may not be
/// visible (the store only reads revisions it knows are published), and it never blocks a
/// writer or a commit.
pub struct ReadTx {
    view: Arc<View>,
}

impl ReadTx {
    pub(super) fn new(view: Arc<View>) -> Self {
        Self { view }
    }

    /// The overlays' word on `key`, newest first.
    fn pending(&self, table: Table, key: &[u8]) -> Option<Pending> {
        if let Some(p) = self.view.active.read().get(table, key) {
            return Some(p.clone());
        }
        for overlay in self.view.frozen.iter().rev() {
            if let Some(p) = overlay.read().get(table, key) {
                return Some(p.clone());
            }
        }
        None
    }

    /// Calls `f` with the value stored under `key`, if any, and returns what `f` returns.
    ///
    /// # Errors
    /// Fails on a backend read error.
    pub fn get_with<R>(
        &self,
        table: Table,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        match self.pending(table, key) {
            Some(Some(value)) => return Ok(Some(f(&value))),
            Some(None) => return Ok(None),
            None => {}
        }
        Ok(self
            .view
            .snapshot
            .table(table)
            .get(key)?
            .map(|g| f(g.value())))
    }

    /// The value stored under `key`.
    ///
    /// # Errors
    /// Fails on a backend read error.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_with(table, key, <[u8]>::to_vec)
    }

    /// Visits the entries of `table` within `bounds`, ascending (or descending with
    /// `reverse`), until `f` breaks.
    ///
    /// # Errors
    /// Fails on a backend read error.
    pub fn scan(
        &self,
        table: Table,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        reverse: bool,
        mut f: impl FnMut(&[u8], &[u8]) -> ControlFlow<()>,
    ) -> Result<()> {
        if matches!((bounds.0, bounds.1), (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) if a > b)
        {
            return Ok(());
        }
        // Copy the overlays' entries in range (bounded by the batch size) so that no overlay
        // lock is held while the caller works.
        let mut pending: std::collections::BTreeMap<Box<[u8]>, Pending> = Default::default();
        for overlay in self
            .view
            .frozen
            .iter()
            .chain(std::iter::once(&self.view.active))
        {
            for (k, v) in overlay.read().range(table, bounds) {
                pending.insert(k.into(), v.clone());
            }
        }
        let mut iter = self.view.snapshot.table(table).range::<&[u8]>(bounds)?;
        let mut overlay: Box<dyn Iterator<Item = (Box<[u8]>, Pending)>> = if reverse {
            Box::new(pending.into_iter().rev())
        } else {
            Box::new(pending.into_iter())
        };
        let mut next_disk = || -> Result<Option<DiskEntry>> {
            Ok(if reverse {
                iter.next_back()
            } else {
                iter.next()
            }
            .transpose()?)
        };
        let mut disk = next_disk()?;
        let mut mem = overlay.next();
        loop {
            let take_mem = match (&disk, &mem) {
                (None, None) => return Ok(()),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((dk, _)), Some((mk, _))) => {
                    let dk = dk.value();
                    if dk == &**mk {
                        disk = next_disk()?; // the overlay shadows the file
                        true
                    } else {
                        (&**mk < dk) != reverse
                    }
                }
            };
            let flow = if take_mem {
                let Some((k, v)) = mem.take() else {
                    return Ok(());
                };
                mem = overlay.next();
                match v {
                    Some(v) => f(&k, &v),
                    None => ControlFlow::Continue(()),
                }
            } else {
                let Some((k, v)) = disk.take() else {
                    return Ok(());
                };
                disk = next_disk()?;
                f(k.value(), v.value())
            };
            if flow.is_break() {
                return Ok(());
            }
        }
    }

    /// Up to `limit` entries (0: all) of `table` whose keys start with `prefix`, in key order.
    ///
    /// # Errors
    /// Fails on a backend read error.
    pub fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = crate::key_range::prefix_end(prefix);
        let upper = if prefix.is_empty() || end == [0] {
            Bound::Unbounded
        } else {
            Bound::Excluded(&end[..])
        };
        let mut out = Vec::new();
        self.scan(table, (Bound::Included(prefix), upper), false, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            if out.len() == limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(out)
    }

    /// The last entry of `table` (largest key), if any.
    ///
    /// # Errors
    /// Fails on a backend read error.
    pub fn last(&self, table: Table) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut out = None;
        self.scan(table, (Bound::Unbounded, Bound::Unbounded), true, |k, v| {
            out = Some((k.to_vec(), v.to_vec()));
            ControlFlow::Break(())
        })?;
        Ok(out)
    }
}
