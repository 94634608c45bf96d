//! Hashes for comparing members' data (etcd's `Hash` and `HashKV`).

use std::ops::{Bound, ControlFlow};

use super::{meta, MvccStore};
use crate::backend::Table;
use crate::codec::{self, Record};
use crate::error::{Error, Result};
use crate::etcd_compat::proto::{encode_key_value, encode_tombstone};
use crate::etcd_compat::rev_key;
use crate::key_range::KeyRange;
use crate::revision::Revision;

/// etcd's bucket of key revisions; its name starts the `HashKV` hash.
const ETCD_KEY_BUCKET: &[u8] = b"key";

/// The result of [`MvccStore::hash_kv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// CRC-32C of the history up to `hash_revision`.
    pub hash: u32,
    /// The compact revision the hash was taken at.
    pub compact_revision: i64,
    /// The revision hashed up to.
    pub hash_revision: i64,
}

impl MvccStore {
    /// etcd's `HashKV`: CRC-32C (Castagnoli) of the bucket name `key`, then of each record up to
    /// `revision` (0: current; below 0: nothing, as etcd) in revision order as etcd stores it (revision key, then
    /// `mvccpb.KeyValue` bytes), so the same history hashes as etcd hashes it.
    ///
    /// Records at or below the compact revision are filtered as etcd 3.4's `HashByRev` does:
    /// when any key is live at `revision`, only those that are still a key's live value at
    /// `revision` (etcd's `kvindex.Keep(rev)`) count; a tombstone at exactly the compact
    /// revision never counts (older etcd releases delete it, later ones skip it).
    ///
    /// # Errors
    /// [`Error::Compacted`], [`Error::FutureRevision`], or a backend error.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash> {
        // Hash a settled history: no compaction half done.
        self.inner.compaction.wait_idle();
        let view = self.inner.view(revision)?;
        let compact = self.compact_revision();
        // etcd treats only 0 as "current": a negative revision hashes nothing below it.
        let upto = if revision < 0 { revision } else { view.rev };
        let end = Revision::new(upto.max(-1) + 1, 0).to_bytes();
        let mut hasher = crc32c::crc32c(ETCD_KEY_BUCKET);
        let mut failure = None;
        let any_live = self
            .inner
            .index
            .read()
            .count(KeyRange::new(b"\0", b"\0"), upto)
            > 0;
        view.tx.scan(
            Table::Kv,
            (Bound::Unbounded, Bound::Excluded(&end[..])),
            false,
            |k, v| {
                let record = Revision::from_bytes(k)
                    .ok_or_else(|| Error::Corrupted(format!("kv table key {k:?}")))
                    .and_then(|rev| Ok((rev, codec::decode(v, rev.main, true)?)));
                let (rev, record) = match record {
                    Ok(r) => r,
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                };
                let (key, value) = match record {
                    Record::Put(kv) => {
                        let kept = rev.main > compact
                            || !any_live
                            || self
                                .inner
                                .index
                                .read()
                                .get(&kv.key, upto)
                                .map(|at| at.modified)
                                == Some(rev);
                        if !kept {
                            return ControlFlow::Continue(());
                        }
                        (rev_key(rev.main, rev.sub, false), encode_key_value(&kv))
                    }
                    Record::Tombstone(key) => {
                        // Below the compact revision no tombstone is a live value; above it
                        // every one counts.
                        if rev.main <= compact {
                            return ControlFlow::Continue(());
                        }
                        (rev_key(rev.main, rev.sub, true), encode_tombstone(&key))
                    }
                };
                hasher = crc32c::crc32c_append(hasher, &key);
                hasher = crc32c::crc32c_append(hasher, &value);
                ControlFlow::Continue(())
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(KvHash {
            hash: hasher,
            compact_revision: compact,
            hash_revision: upto,
        })
    }

    /// CRC-32C of every table (name, then keys and values) except the applied index and the
    /// size counter.
    ///
    /// # Errors
    /// A backend error.
    pub fn hash(&self) -> Result<u32> {
        let tx = self.inner.backend.read();
        let mut hasher = 0u32;
        for table in Table::ALL {
            hasher = crc32c::crc32c_append(hasher, table.name().as_bytes());
            tx.scan(
                table,
                (Bound::Unbounded, Bound::Unbounded),
                false,
                |k, v| {
                    // The applied index and the size counter are bookkeeping, not data.
                    let bookkeeping = table == Table::Meta
                        && (k == meta::CONSISTENT_INDEX || k == crate::backend::LIVE_BYTES_KEY);
                    if !bookkeeping {
                        hasher = crc32c::crc32c_append(hasher, k);
                        hasher = crc32c::crc32c_append(hasher, v);
                    }
                    ControlFlow::Continue(())
                },
            )?;
        }
        Ok(hasher)
    }
}
