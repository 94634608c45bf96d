//! Raised alarms (NOSPACE, CORRUPT), mirrored in memory and persisted in the `alarm` table.

use std::collections::BTreeSet;

use parking_lot::RwLock;
use rusd_mvcc::{MvccStore, Table};
use rusd_proto::etcdserverpb::{AlarmMember, AlarmType};

/// The raised alarms: `(member id, alarm type)`.
#[derive(Debug, Default)]
pub struct Alarms {
    raised: RwLock<BTreeSet<(u64, i32)>>,
}

/// The `alarm` table key of an alarm.
pub fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut key = member.to_be_bytes().to_vec();
    key.extend_from_slice(&alarm.to_be_bytes());
    key
}

impl Alarms {
    /// Loads the alarms persisted in `store`.
    ///
    /// # Errors
    /// A backend error.
    pub fn load(store: &MvccStore) -> rusd_mvcc::Result<Self> {
        let rows = store.backend().read().scan_prefix(Table::Alarm, b"", 0)?;
        let raised = rows
            .into_iter()
            .filter_map(|(k, _)| {
                let member = u64::from_be_bytes(k.get(..8)?.try_into().ok()?);
                let alarm = i32::from_be_bytes(k.get(8..12)?.try_into().ok()?);
                Some((member, alarm))
            })
            .collect();
        Ok(Self {
            raised: RwLock::new(raised),
        })
    }

    /// Reloads the alarms from `store` (after a snapshot replaced its contents).
    ///
    /// # Errors
    /// A backend error.
    pub fn reload(&self, store: &MvccStore) -> rusd_mvcc::Result<()> {
        let fresh = Self::load(store)?;
        *self.raised.write() = fresh.raised.into_inner();
        Ok(())
    }

    /// Records an applied activation.
    pub fn activate(&self, member: u64, alarm: i32) {
        self.raised.write().insert((member, alarm));
    }

    /// Records an applied deactivation.
    pub fn deactivate(&self, member: u64, alarm: i32) {
        self.raised.write().remove(&(member, alarm));
    }

    /// Whether an alarm of this type is raised on any member.
    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.raised.read().iter().any(|(_, a)| *a == alarm as i32)
    }

    /// The raised alarms, optionally of one member or type only.
    pub fn list(&self, member: u64, alarm: i32) -> Vec<AlarmMember> {
        self.raised
            .read()
            .iter()
            .filter(|(m, a)| (member == 0 || *m == member) && (alarm == 0 || *a == alarm))
            .map(|(m, a)| AlarmMember {
                member_id: *m,
                alarm: *a,
            })
            .collect()
    }
}
