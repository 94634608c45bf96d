//! The backend's logical tables.

use redb::TableDefinition;

/// A logical table of the backend: an ordered map from byte keys to byte values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Key revisions: revision bytes to encoded key-value records (etcd's `key` bucket).
    Kv,
    /// Store bookkeeping: current and compact revisions, applied index.
    Meta,
    /// Leases: big-endian id to encoded lease.
    Lease,
    /// Auth state: users, roles, flags.
    Auth,
    /// Raised alarms.
    Alarm,
    /// Cluster members.
    Members,
}

impl Table {
    /// Every table, in a fixed order (used by snapshots and hashes).
    pub const ALL: [Table; 6] = [
        Table::Kv,
        Table::Meta,
        Table::Lease,
        Table::Auth,
        Table::Alarm,
        Table::Members,
    ];

    /// The table's name on disk and in snapshots.
    pub fn name(self) -> &'static str {
        match self {
            Table::Kv => "kv",
            Table::Meta => "meta",
            Table::Lease => "lease",
            Table::Auth => "auth",
            Table::Alarm => "alarm",
            Table::Members => "members",
        }
    }

    /// The table named `name`.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.name())
    }
}
