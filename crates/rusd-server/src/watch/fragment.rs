//! Splitting a large watch response for watchers created with `fragment` (etcd's
//! `sendFragments`).

use prost::Message;
use rusd_proto::etcdserverpb as pb;
use rusd_proto::mvccpb;

/// The bytes one event adds to an encoded `WatchResponse` (field 11: one tag byte, the
/// length, the message).
fn event_field_len(ev: &mvccpb::Event) -> usize {
    let len = ev.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// `resp` as etcd sends it to a `fragment` watcher: unchanged if it encodes to fewer than
/// `limit` bytes or has fewer than two events; otherwise split into parts that each stay
/// below `limit` (a single event may exceed it alone), every part but the last marked
/// `fragment`.
pub(crate) fn fragments(mut resp: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < limit {
        return vec![resp];
    }
    let events = std::mem::take(&mut resp.events);
    resp.fragment = true;
    let base = resp.encoded_len();
    let mut out = Vec::new();
    let mut part = Vec::new();
    let mut size = base;
    for ev in events {
        let add = event_field_len(&ev);
        if !part.is_empty() && size + add >= limit {
            out.push(pb::WatchResponse {
                events: std::mem::take(&mut part),
                ..resp.clone()
            });
            size = base;
        }
        size += add;
        part.push(ev);
    }
    resp.events = part;
    resp.fragment = false;
    out.push(resp);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            kv: Some(mvccpb::KeyValue {
                key: b"key".to_vec(),
                value: vec![b'x'; value_len],
                mod_revision: 7,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn response(sizes: &[usize]) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 7,
                raft_term: 3,
            }),
            watch_id: 4,
            events: sizes.iter().map(|&n| event(n)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn event_size_matches_the_encoding() {
        let mut r = response(&[]);
        r.fragment = true;
        let base = r.encoded_len();
        for n in [0, 10, 200, 20_000] {
            let ev = event(n);
            let with = pb::WatchResponse {
                events: vec![ev.clone(), ev.clone()],
                ..r.clone()
            };
            assert_eq!(with.encoded_len(), base + 2 * event_field_len(&ev));
        }
    }

    #[test]
    fn small_or_single_event_responses_stay_whole() {
        let small = response(&[10, 10, 10]);
        assert_eq!(fragments(small.clone(), 10_000), vec![small]);
        let single = response(&[50_000]);
        assert_eq!(fragments(single.clone(), 1_000), vec![single]);
    }

    #[test]
    fn large_responses_split_below_the_limit() {
        let limit = 1_000;
        let sizes = [300, 300, 300, 300, 2_000, 10, 10, 900, 300];
        let whole = response(&sizes);
        let parts = fragments(whole.clone(), limit);
        assert!(parts.len() > 1);
        let (last, rest) = parts.split_last().expect("parts");
        assert!(rest.iter().all(|p| p.fragment));
        assert!(!last.fragment);
        for p in &parts {
            assert!(!p.events.is_empty());
            assert!(
                p.events.len() == 1 || p.encoded_len() < limit,
                "{}",
                p.encoded_len()
            );
            assert_eq!((p.header, p.watch_id), (whole.header, whole.watch_id));
        }
        let joined: Vec<_> = parts.iter().flat_map(|p| p.events.clone()).collect();
        assert_eq!(joined, whole.events);
        // Greedy, like etcd: each part takes as many events as fit.
        let counts: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        assert_eq!(counts, vec![3, 1, 1, 3, 1]);
    }
}
