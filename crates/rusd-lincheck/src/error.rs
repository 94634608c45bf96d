//! What a check can report: a violation, an undecided search, or a malformed history.

use std::fmt;
use std::time::Duration;

use crate::history::{Bytes, Operation};
use crate::watch::WatchEvent;

/// The outcome of a check that did not pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    /// The history is not correct: it contradicts the model.
    #[error(transparent)]
    Violation(Box<Violation>),
    /// The search ran out of its budget before deciding: the history may or may not be
    /// linearizable.
    #[error(
        "undecided: gave up after {steps} search steps and {elapsed:?} ({reason}); the history \
         is neither proven linearizable nor proven wrong"
    )]
    Undecided {
        /// Search steps taken.
        steps: u64,
        /// Time spent.
        elapsed: Duration,
        /// Which limit was reached.
        reason: String,
    },
    /// The history itself is malformed (a bug in the test harness, not in the store).
    #[error("invalid history: operation #{index}: {reason}")]
    InvalidHistory {
        /// Index of the offending operation in the history (or stream, for watches).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl CheckError {
    /// The violation, if this is one.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Self::Violation(v) => Some(v),
            _ => None,
        }
    }
}

impl From<Violation> for CheckError {
    fn from(v: Violation) -> Self {
        Self::Violation(Box::new(v))
    }
}

/// The class of a [`Violation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// A response that no request can get (deleted > 1, a revision at or below the initial
    /// one, a mod_revision above the header revision, ...).
    InvalidResponse,
    /// Two acknowledged writes carry the same revision.
    DuplicateRevision,
    /// Revisions contradict real time: an operation invoked after another returned is ordered
    /// before it by the revisions.
    RevisionOrder,
    /// The store issued a revision that no write of the history can have produced.
    MissingRevision,
    /// No order of the operations explains the responses (stale read, CAS against a stale
    /// mod_revision, wrong delete count, ...).
    NotLinearizable,
    /// An acknowledged write is neither visible in the final read nor superseded.
    LostWrite,
    /// A value (or watch event) that no write of the history produced.
    PhantomWrite,
    /// A watch stream's events do not strictly increase (back in time, or a duplicate).
    WatchOrder,
    /// A watch stream misses an event inside the revisions it covered.
    WatchGap,
    /// Two watch streams report different events for one revision.
    WatchDisagreement,
    /// A watch event contradicts an acknowledged write.
    WatchMismatch,
    /// A watch event outside its stream's prefix or start revision, or with inconsistent
    /// create_revision/version.
    WatchInvalidEvent,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidResponse => "invalid response",
            Self::DuplicateRevision => "duplicate revision",
            Self::RevisionOrder => "revisions contradict real-time order",
            Self::MissingRevision => "unexplained revision",
            Self::NotLinearizable => "not linearizable",
            Self::LostWrite => "lost acknowledged write",
            Self::PhantomWrite => "phantom write",
            Self::WatchOrder => "watch stream out of order",
            Self::WatchGap => "watch stream has a gap",
            Self::WatchDisagreement => "watch streams disagree",
            Self::WatchMismatch => "watch event contradicts an acknowledged write",
            Self::WatchInvalidEvent => "invalid watch event",
        })
    }
}

/// A watch event named in a violation: stream `stream`, event number `index` in it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRef {
    /// Index of the stream in the checked slice.
    pub stream: usize,
    /// Index of the event in the stream.
    pub index: usize,
    /// The event.
    pub event: WatchEvent,
}

/// A proven error in a history, with what explains it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render())]
pub struct Violation {
    /// The class of error.
    pub kind: ViolationKind,
    /// The key concerned, if one.
    pub key: Option<Vec<u8>>,
    /// What is wrong, in words.
    pub message: String,
    /// The operations involved, with their index in the history.
    pub ops: Vec<(usize, Operation)>,
    /// The watch events involved.
    pub events: Vec<EventRef>,
}

impl Violation {
    pub(crate) fn new(kind: ViolationKind, key: Option<&[u8]>, message: String) -> Self {
        Self {
            kind,
            key: key.map(<[u8]>::to_vec),
            message,
            ops: Vec::new(),
            events: Vec::new(),
        }
    }

    pub(crate) fn with_op(mut self, history: &[Operation], index: usize) -> Self {
        if let Some(op) = history.get(index) {
            if !self.ops.iter().any(|(i, _)| *i == index) {
                self.ops.push((index, op.clone()));
            }
        }
        self
    }

    pub(crate) fn with_event(mut self, stream: usize, index: usize, event: &WatchEvent) -> Self {
        self.events.push(EventRef {
            stream,
            index,
            event: event.clone(),
        });
        self
    }

    fn render(&self) -> String {
        let mut out = format!("{}", self.kind);
        if let Some(key) = &self.key {
            out += &format!(" on key {}", Bytes(key));
        }
        out += &format!(": {}", self.message);
        for (index, op) in &self.ops {
            out += &format!("\n  #{index}: {op}");
        }
        for e in &self.events {
            out += &format!("\n  stream {} event {}: {}", e.stream, e.index, e.event);
        }
        out
    }
}
