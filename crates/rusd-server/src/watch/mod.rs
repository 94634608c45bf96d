//! Watch: the hub that fans engine events out to watch streams, and the streams themselves.
//!
//! ```text
//!  engine writer thread                         one task per watch stream
//!  publish(rev) ─► observer ─► broadcast ──┬──► live batch (rev == watcher.next_rev) ─┐
//!  (never blocks)   (hub.rs)  (1024 revs)  │                                          ├─► bounded
//!                                          └─ Lagged? resubscribe; unsynced watchers  │   responses
//!                     store.events_since(next_rev, 1000 revs) ◄── catch up ──────────┘   (64)
//! ```
//!
//! | file | role |
//! |---|---|
//! | `hub.rs` | [`WatchHub`]: the one engine observer, the broadcast feed, `prev_kv` on demand |
//! | `stream.rs` | [`open_stream`]: one stream's task: requests, live batches, catch-up, progress |
//! | `watcher.rs` | a watcher (range, filters, `next_rev`) and a stream's ids |
//! | `fragment.rs` | splitting large responses for `fragment` watchers |
//!
//! # Using it from a transport
//!
//! [`open_stream`] takes the client's requests as any `Stream<Item = WatchRequest>` and returns
//! [`WatchResponses`], a `Stream<Item = Result<WatchResponse, ServerError>>`. The gRPC service
//! (`grpc/watch.rs`) adapts `tonic::Streaming`; the HTTP gateway can pass e.g.
//! `futures::stream::iter([create_request])` and serialize each response as one JSON line
//! (`{"result": ...}` in grpc-gateway's framing). Ending the request stream does not end the
//! responses; dropping [`WatchResponses`] cancels the stream's watchers. An `Err` item is the
//! last one (map it with [`crate::grpc::status`]).
//!
//! # Semantics (etcd's)
//!
//! * Create: empty key means `"\0"`; `key >= range_end` (bounded range) or a negative start are
//!   refused with `created + canceled`, `watch_id -1` and etcd's reason; ids are chosen by the
//!   client (`watch_id != 0`, duplicates refused) or counted up from 0 per stream. The
//!   `created` response carries the current revision and precedes the watcher's events.
//! * Start revision 0 means "after the current revision"; a future one waits; one below the
//!   compact revision yields `{canceled, compact_revision}` (header revision 0) after
//!   `created`. Such a watcher (also one that falls below a compaction while catching up)
//!   gets nothing more, but its id stays taken until the client cancels it (answered with
//!   `{canceled}`) or the stream ends.
//! * Delivery is ordered, without gaps or duplicates: each watcher tracks the next revision it
//!   owes (`next_rev`). Live batches are delivered one revision per response; catch-up from
//!   history sends up to 1000 revisions per response. All events of a revision are in one
//!   response unless the watcher asked for `fragment` and the response exceeds
//!   `--max-request-bytes` + 512 KiB. Filtered-out events are never sent, nor empty responses.
//! * A stream that cannot keep up (its client does not read) stops reading the feed; when the
//!   feed drops batches for it, its watchers read history instead. Writers and other streams
//!   never wait for it, and memory per stream is bounded.
//! * Progress: `progress_notify` watchers that are synced and received nothing since the last
//!   tick (`--experimental-watch-progress-notify-interval`, +≤10% jitter) get
//!   `{watch_id, header.revision}`; a `WatchProgressRequest` is answered with one `watch_id -1`
//!   response when every watcher of the stream is synced (also when it has none; else not at
//!   all). The revision is
//!   one up to which the stream has delivered everything, never below what a watcher has seen.

mod fragment;
mod hub;
mod stream;
mod watcher;

pub use hub::WatchHub;
pub use stream::{open_stream, WatchResponses};
