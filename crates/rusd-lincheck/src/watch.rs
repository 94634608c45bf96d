//! [`check_watch`]: watch streams are ordered, gap-free, agree with each other and with the
//! acknowledged writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::error::{CheckError, Violation, ViolationKind};
use crate::history::{Bytes, Operation};

/// Whether an event is a put or a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was put.
    Put,
    /// The key was deleted.
    Delete,
}

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: Vec<u8>,
    /// The value put (empty for a delete).
    pub value: Vec<u8>,
    /// The revision of the change.
    pub mod_revision: i64,
    /// The key's create_revision (0 for a delete).
    pub create_revision: i64,
    /// The key's version (0 for a delete).
    pub version: i64,
}

impl WatchEvent {
    /// A put event.
    pub fn put(
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        mod_revision: i64,
        create_revision: i64,
        version: i64,
    ) -> Self {
        Self {
            kind: EventKind::Put,
            key: key.into(),
            value: value.into(),
            mod_revision,
            create_revision,
            version,
        }
    }

    /// A delete event.
    pub fn delete(key: impl Into<Vec<u8>>, mod_revision: i64) -> Self {
        Self {
            kind: EventKind::Delete,
            key: key.into(),
            value: Vec::new(),
            mod_revision,
            create_revision: 0,
            version: 0,
        }
    }
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EventKind::Put => write!(
                f,
                "put {} = {} at revision {} (create_revision {}, version {})",
                Bytes(&self.key),
                Bytes(&self.value),
                self.mod_revision,
                self.create_revision,
                self.version
            ),
            EventKind::Delete => write!(
                f,
                "delete {} at revision {}",
                Bytes(&self.key),
                self.mod_revision
            ),
        }
    }
}

/// The events one watcher received from a watch on a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchStream {
    /// The watched prefix (empty: every key).
    pub prefix: Vec<u8>,
    /// The requested start revision; 0 means "from now", and then the stream is only known
    /// to cover revisions from its first event on.
    pub start_revision: i64,
    /// The events in the order received.
    pub events: Vec<WatchEvent>,
}

type Slot<'a> = (i64, &'a [u8]);

/// Checks watch streams against each other and against the acknowledged writes of `history`:
///
/// * every event lies in its stream's prefix and at or after its start revision;
/// * a stream's events strictly increase by (revision, key): nothing goes back in time or
///   repeats;
/// * every revision a stream covers (from its start revision, or its first event, to its last
///   event) is complete in it: any change of a key in its prefix known from an acknowledged
///   write or from another stream is in it;
/// * all streams report the same event for the same (revision, key), in the same order within
///   a revision;
/// * an acknowledged put (or successful CAS) at revision `r` shows as a put of its value at
///   `r`, an acknowledged delete as a delete, and no other key changes at `r`; an event for a
///   key of the history at a revision no acknowledged write took needs a write of that value
///   whose outcome is unknown;
/// * create_revision and version follow etcd's rules from one event of a key to the next.
pub fn check_watch(streams: &[WatchStream], history: &[Operation]) -> Result<(), CheckError> {
    for (s, stream) in streams.iter().enumerate() {
        check_stream_order(s, stream)?;
    }
    // Every known change: (revision, key) -> the first stream event that reported it.
    let mut canon: BTreeMap<Slot<'_>, (usize, usize)> = BTreeMap::new();
    let mut acked: BTreeMap<Slot<'_>, usize> = BTreeMap::new();
    let mut acked_rev: HashMap<i64, usize> = HashMap::new();
    for (index, op) in history.iter().enumerate() {
        if let Some((revision, _)) = op.acknowledged_write() {
            acked.insert((revision, op.input.key()), index);
            acked_rev.insert(revision, index);
        }
    }
    let history_keys: HashSet<&[u8]> = history.iter().map(|op| op.input.key()).collect();
    let event = |s: usize, i: usize| streams.get(s).and_then(|st| st.events.get(i));
    let mut order: HashMap<i64, Vec<&[u8]>> = HashMap::new();
    for (s, stream) in streams.iter().enumerate() {
        let mut mine: HashMap<i64, Vec<&[u8]>> = HashMap::new();
        for (i, e) in stream.events.iter().enumerate() {
            let r = e.mod_revision;
            mine.entry(r).or_default().push(&e.key);
            if let Some(&w) = acked_rev.get(&r) {
                let op = history.get(w);
                let expected = op.and_then(Operation::acknowledged_write).map(|(_, v)| v);
                let same_key = op.is_some_and(|op| op.input.key() == e.key.as_slice());
                let matches = match (e.kind, expected) {
                    (EventKind::Put, Some(Some(v))) => v == e.value.as_slice(),
                    (EventKind::Delete, Some(None)) => true,
                    _ => false,
                };
                if !same_key || !matches {
                    return Err(Violation::new(
                        ViolationKind::WatchMismatch,
                        Some(&e.key),
                        format!("the event at revision {r} does not show acknowledged write #{w}"),
                    )
                    .with_op(history, w)
                    .with_event(s, i, e)
                    .into());
                }
            } else if history_keys.contains(e.key.as_slice()) {
                let value = (e.kind == EventKind::Put).then_some(e.value.as_slice());
                let explained = history
                    .iter()
                    .any(|op| op.input.key() == e.key.as_slice() && op.may_have_written(value));
                if !explained {
                    return Err(Violation::new(
                        ViolationKind::PhantomWrite,
                        Some(&e.key),
                        format!(
                            "no acknowledged write has revision {r} and no write with unknown \
                             outcome can have produced this event"
                        ),
                    )
                    .with_event(s, i, e)
                    .into());
                }
            }
            match canon.get(&(r, e.key.as_slice())) {
                Some(&(s2, i2)) => {
                    if let Some(other) = event(s2, i2).filter(|other| *other != e) {
                        return Err(Violation::new(
                            ViolationKind::WatchDisagreement,
                            Some(&e.key),
                            format!("streams {s2} and {s} report different events at revision {r}"),
                        )
                        .with_event(s2, i2, other)
                        .with_event(s, i, e)
                        .into());
                    }
                }
                None => {
                    canon.insert((r, e.key.as_slice()), (s, i));
                }
            }
        }
        for (r, keys) in mine {
            match order.get(&r) {
                None => {
                    order.insert(r, keys);
                }
                Some(first) => {
                    let a: Vec<&&[u8]> = first.iter().filter(|k| keys.contains(k)).collect();
                    let b: Vec<&&[u8]> = keys.iter().filter(|k| first.contains(k)).collect();
                    if a != b {
                        return Err(Violation::new(
                            ViolationKind::WatchDisagreement,
                            None,
                            format!("stream {s} orders the events of revision {r} differently"),
                        )
                        .into());
                    }
                }
            }
        }
    }
    for (s, stream) in streams.iter().enumerate() {
        check_gaps(s, stream, &canon, &acked, streams, history)?;
    }
    for (s, stream) in streams.iter().enumerate() {
        check_versions(s, stream)?;
    }
    Ok(())
}

/// Prefix, start revision and strictly increasing (revision, key) order.
fn check_stream_order(s: usize, stream: &WatchStream) -> Result<(), CheckError> {
    let mut at_revision: Vec<&[u8]> = Vec::new();
    for (i, e) in stream.events.iter().enumerate() {
        let invalid = |message: String| -> CheckError {
            Violation::new(ViolationKind::WatchInvalidEvent, Some(&e.key), message)
                .with_event(s, i, e)
                .into()
        };
        if !e.key.starts_with(&stream.prefix) {
            return Err(invalid(format!(
                "outside the watched prefix {}",
                Bytes(&stream.prefix)
            )));
        }
        if e.mod_revision < stream.start_revision {
            return Err(invalid(format!(
                "before the start revision {}",
                stream.start_revision
            )));
        }
        let Some(prev) = i.checked_sub(1).and_then(|p| stream.events.get(p)) else {
            at_revision.push(&e.key);
            continue;
        };
        let back = |message: String| -> CheckError {
            Violation::new(ViolationKind::WatchOrder, Some(&e.key), message)
                .with_event(s, i - 1, prev)
                .with_event(s, i, e)
                .into()
        };
        if e.mod_revision < prev.mod_revision {
            return Err(back(format!(
                "stream {s} went back in time from revision {} to {}",
                prev.mod_revision, e.mod_revision
            )));
        }
        if e.mod_revision > prev.mod_revision {
            at_revision.clear();
        } else if at_revision.contains(&e.key.as_slice()) {
            return Err(back(format!(
                "stream {s} repeats key {} at revision {}",
                Bytes(&e.key),
                e.mod_revision
            )));
        }
        at_revision.push(&e.key);
    }
    Ok(())
}

/// Every known change in the revisions the stream covers, within its prefix, is in it.
fn check_gaps(
    s: usize,
    stream: &WatchStream,
    canon: &BTreeMap<Slot<'_>, (usize, usize)>,
    acked: &BTreeMap<Slot<'_>, usize>,
    streams: &[WatchStream],
    history: &[Operation],
) -> Result<(), CheckError> {
    let (Some(first), Some(last)) = (stream.events.first(), stream.events.last()) else {
        return Ok(());
    };
    let lo = if stream.start_revision > 0 {
        stream.start_revision
    } else {
        first.mod_revision
    };
    let hi = last.mod_revision;
    let seen: HashSet<Slot<'_>> = stream
        .events
        .iter()
        .map(|e| (e.mod_revision, e.key.as_slice()))
        .collect();
    let range = (lo, &[][..])..(hi.saturating_add(1), &[][..]);
    let missing = canon
        .range(range.clone())
        .map(|(slot, &(s2, i2))| (*slot, Err((s2, i2))))
        .chain(acked.range(range).map(|(slot, &w)| (*slot, Ok(w))))
        .find(|((r, key), _)| key.starts_with(&stream.prefix) && !seen.contains(&(*r, *key)));
    let Some(((r, key), source)) = missing else {
        return Ok(());
    };
    let mut v = Violation::new(
        ViolationKind::WatchGap,
        Some(key),
        format!(
            "stream {s} covers revisions {lo}..={hi} of prefix {} but misses revision {r}",
            Bytes(&stream.prefix)
        ),
    );
    match source {
        Ok(w) => v = v.with_op(history, w),
        Err((s2, i2)) => {
            if let Some(e) = streams.get(s2).and_then(|st| st.events.get(i2)) {
                v = v.with_event(s2, i2, e);
            }
        }
    }
    let before = stream.events.iter().rposition(|e| e.mod_revision < r);
    for i in before
        .into_iter()
        .chain(before.map_or(Some(0), |b| Some(b + 1)))
    {
        if let Some(e) = stream.events.get(i) {
            v = v.with_event(s, i, e);
        }
    }
    Err(v.into())
}

/// create_revision and version from one event of a key to the next.
fn check_versions(s: usize, stream: &WatchStream) -> Result<(), CheckError> {
    let mut last: HashMap<&[u8], &WatchEvent> = HashMap::new();
    for (i, e) in stream.events.iter().enumerate() {
        if e.kind == EventKind::Put {
            let prev = last.get(e.key.as_slice());
            let ok = match prev.map(|p| p.kind) {
                _ if (e.version == 1) != (e.create_revision == e.mod_revision) => false,
                Some(EventKind::Put) => prev.is_some_and(|p| {
                    e.create_revision == p.create_revision && e.version == p.version + 1
                }),
                Some(EventKind::Delete) => e.version == 1,
                None => e.version >= 1 && e.create_revision <= e.mod_revision,
            };
            if !ok {
                let mut v = Violation::new(
                    ViolationKind::WatchInvalidEvent,
                    Some(&e.key),
                    "create_revision/version do not follow from the key's previous event".into(),
                );
                if let Some(p) = prev {
                    if let Some(pi) = stream.events[..i].iter().rposition(|x| std::ptr::eq(x, *p)) {
                        v = v.with_event(s, pi, p);
                    }
                }
                return Err(v.with_event(s, i, e).into());
            }
        }
        last.insert(&e.key, e);
    }
    Ok(())
}
