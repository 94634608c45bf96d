//! Member and cluster ids, derived as etcd derives them so they are stable across restarts:
//! a member id is the first 8 bytes (big-endian) of SHA-1 over its sorted peer URLs joined
//! together, then the cluster token; the cluster id hashes the sorted member ids.

use sha1::{Digest, Sha1};

/// etcd's `computeMemberId` for a member of the initial cluster.
pub fn member_id(peer_urls: &[String], cluster_token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut hasher = Sha1::new();
    for u in urls {
        hasher.update(u.as_bytes());
    }
    hasher.update(cluster_token.as_bytes());
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
}
