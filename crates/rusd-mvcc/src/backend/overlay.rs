//! Writes that readers already see but the database file does not hold yet.
//!
//! Writes land in the *active* overlay. A commit freezes it (no one writes to it again), writes
//! it into redb, and drops it once the new redb snapshot is published. Readers look at the
//! active overlay, then the frozen ones newest first, then the redb snapshot.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::table::Table;

/// A pending value: `Some` to write, `None` to delete.
pub(crate) type Pending = Option<Arc<[u8]>>;

/// Pending writes of every table.
#[derive(Default)]
pub(crate) struct Overlay {
    tables: [BTreeMap<Box<[u8]>, Pending>; Table::ALL.len()],
    ops: usize,
    bytes: usize,
}

impl Overlay {
    /// Takes the key by value: a `Vec` of exact capacity becomes the map's boxed key without
    /// a copy (performance: one allocation less per write).
    pub(crate) fn put(&mut self, table: Table, key: Vec<u8>, value: Arc<[u8]>) {
        self.ops += 1;
        self.bytes += key.len() + value.len() + 64;
        self.tables[table.index()].insert(key.into_boxed_slice(), Some(value));
    }

    pub(crate) fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.ops += 1;
        self.bytes += key.len() + 64;
        self.tables[table.index()].insert(key.into_boxed_slice(), None);
    }

    /// `None`: the overlay says nothing of `key`; `Some(None)`: deleted here.
    pub(crate) fn get(&self, table: Table, key: &[u8]) -> Option<&Pending> {
        self.tables[table.index()].get(key)
    }

    pub(crate) fn range<'a>(
        &'a self,
        table: Table,
        bounds: (Bound<&'a [u8]>, Bound<&'a [u8]>),
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], &'a Pending)> + 'a {
        self.tables[table.index()]
            .range::<[u8], _>(bounds)
            .map(|(k, v)| (&**k, v))
    }

    pub(crate) fn entries(&self, table: Table) -> impl Iterator<Item = (&[u8], &Pending)> {
        self.tables[table.index()].iter().map(|(k, v)| (&**k, v))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops == 0
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
