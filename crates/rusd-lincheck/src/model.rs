//! The sequential model of one key: etcd's value, mod_revision, create_revision and version.

use crate::history::Bytes;
use crate::timeline::{Action, Effect, Interner, ANON};

/// A key that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyState {
    pub(crate) value: usize,
    pub(crate) mod_rev: i64,
    pub(crate) create_rev: i64,
    pub(crate) version: i64,
    /// History index of the write that produced this state (for reports).
    pub(crate) writer: usize,
}

/// A key in the model: `None` when it does not exist.
pub(crate) type Cell = Option<KeyState>;

impl Effect {
    /// Whether the write changes the key when applied to `cell` (a delete of an absent key
    /// or a CAS whose compare fails does nothing).
    pub(crate) fn applies(&self, cell: &Cell) -> bool {
        match self {
            Effect::Put { .. } => true,
            Effect::Delete => cell.is_some(),
            Effect::Cas { expect, .. } => mod_rev(cell) == *expect,
        }
    }

    /// Applies the write at `slot`; the caller checked [`Effect::applies`].
    pub(crate) fn apply(&self, cell: &mut Cell, slot: i64, writer: usize) {
        *cell = match self {
            Effect::Delete => None,
            Effect::Put { value } | Effect::Cas { value, .. } => Some(match cell {
                Some(s) => KeyState {
                    value: *value,
                    mod_rev: slot,
                    create_rev: s.create_rev,
                    version: s.version + 1,
                    writer,
                },
                None => KeyState {
                    value: *value,
                    mod_rev: slot,
                    create_rev: slot,
                    version: 1,
                    writer,
                },
            }),
        };
    }
}

/// The mod_revision etcd compares against: 0 for an absent key.
pub(crate) fn mod_rev(cell: &Cell) -> i64 {
    cell.map_or(0, |s| s.mod_rev)
}

/// Performs an acknowledged operation at `pos`; `false` if its response contradicts the model.
pub(crate) fn step(cell: &mut Cell, action: &Action, pos: i64, writer: usize) -> bool {
    match action {
        Action::Write(effect) => {
            if !effect.applies(cell) {
                return false;
            }
            effect.apply(cell, pos / 2, writer);
            true
        }
        Action::Get(None) | Action::DeleteNone => cell.is_none(),
        Action::Get(Some(o)) => cell.is_some_and(|s| {
            s.value == o.value
                && s.mod_rev == o.mod_rev
                && o.create_rev.is_none_or(|c| c == s.create_rev)
                && o.version.is_none_or(|v| v == s.version)
        }),
        Action::CasFailed { expect } => mod_rev(cell) != *expect,
    }
}

/// A cell without the writer (which only serves reports): what the search memoizes.
pub(crate) fn essence(cell: &Cell) -> Option<(usize, i64, i64, i64)> {
    cell.map(|s| (s.value, s.mod_rev, s.create_rev, s.version))
}

/// The model's key in words, for reports.
pub(crate) fn describe(cell: &Cell, values: &Interner) -> String {
    match cell {
        None => "the key does not exist".into(),
        Some(s) => format!(
            "the key holds {} (mod_revision {}, create_revision {}, version {}, written by #{})",
            if s.value == ANON {
                "a value no read returned".to_string()
            } else {
                Bytes(values.get(s.value)).to_string()
            },
            s.mod_rev,
            s.create_rev,
            s.version,
            s.writer
        ),
    }
}
