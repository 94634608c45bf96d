//! The values the store hands out: [`KeyValue`] and watch [`Event`]s.

/// A key's state at one revision, field for field etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Revision of the change that created this generation of the key.
    pub create_revision: i64,
    /// Revision of the change that last wrote the key.
    pub mod_revision: i64,
    /// Writes since creation: 1 on create, reset by a delete.
    pub version: i64,
    /// The value (empty with `keys_only`).
    pub value: Vec<u8>,
    /// The lease attached to the key, 0 for none.
    pub lease: i64,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or written.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as a watcher sees it.
///
/// A delete carries only `kv.key` and `kv.mod_revision` (the deletion revision), as etcd's do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change.
    pub kv: KeyValue,
    /// The key before the change, when it existed and was asked for.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// Whether this put created the key (its first version).
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}
