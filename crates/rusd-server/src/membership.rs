//! Members: what the cluster knows about each one, and ids derived as etcd derives them so they
//! are stable across restarts: a member id is the first 8 bytes (big-endian) of SHA-1 over its
//! sorted peer URLs joined together, then the cluster token (plus the time, for members added
//! at run time); the cluster id hashes the sorted member ids of the initial cluster.
//!
//! The member list lives in openraft's membership: voters and learners by id, each with a
//! [`MemberNode`]. So it is replicated, persisted and snapshotted with the Raft state, and the
//! network finds a member's peer URLs there.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// A member as the cluster records it (openraft's `Node` type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// `--name`; empty until the member has started and published it (etcd: "unstarted").
    pub name: String,
    /// Where its peers reach it.
    pub peer_urls: Vec<String>,
    /// Where clients reach it; empty until it has started.
    pub client_urls: Vec<String>,
    /// Added as a voter (MemberAdd without `--learner`) but still a Raft learner: the leader
    /// promotes it once it has caught up with the log, so an unstarted member never counts
    /// towards the quorum.
    pub promote: bool,
}

impl MemberNode {
    /// A member of the initial cluster, before it publishes its client URLs.
    pub fn initial(name: &str, peer_urls: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            peer_urls,
            client_urls: Vec::new(),
            promote: false,
        }
    }
}

/// etcd's id for a member added at run time: like [`member_id`], plus the time, so a member
/// removed and added again with the same URLs gets a new id.
pub fn new_member_id(peer_urls: &[String], cluster_token: &str, unix_seconds: i64) -> u64 {
    hash_member(peer_urls, cluster_token, Some(unix_seconds))
}

/// etcd's `computeMemberId` for a member of the initial cluster.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    hash_member(peer_urls, cluster_token, None)
}

/// SHA-1 over the sorted peer URLs, the cluster token and (for members added at run time) the
/// Unix time in decimal: etcd's `newMember`.
fn hash_member(peer_urls: &[String], cluster_token: &str, unix_seconds: Option<i64>) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for u in urls {
        hasher.update(u.as_bytes());
    }
    hasher.update(cluster_token.as_bytes());
    if let Some(t) = unix_seconds {
        hasher.update(t.to_string().as_bytes());
    }
    first_u64(&hasher.finalize())
}

/// etcd's `genID` for the cluster: SHA-1 over the sorted member ids (big-endian bytes).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_order_independent() {
        let a = member_id(&["http://a:2380".into(), "http://b:2380".into()], "tok");
        let b = member_id(&["http://b:2380".into(), "http://a:2380".into()], "tok");
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:2380".into()], "tok"));
        assert_ne!(
            a,
            member_id(&["http://a:2380".into(), "http://b:2380".into()], "other")
        );
        assert_eq!(cluster_id(&[1, 2]), cluster_id(&[2, 1]));
    }

    /// Values from etcd 3.4.23's own `membership.NewMember` (Debian's sources, run with Go).
    #[test]
    fn ids_equal_etcds() {
        let urls = ["http://b:2380".to_string(), "http://a:2380".to_string()];
        assert_eq!(member_id(&urls, "tok"), 0x33a9_d2ec_ec00_e76f);
        assert_eq!(
            new_member_id(&urls, "tok", 1_700_000_000),
            0x0a53_5ede_505c_d10c
        );
    }
}
