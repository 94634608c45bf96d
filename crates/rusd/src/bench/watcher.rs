//! One Watch stream: its watchers are created one after another (each confirmed before the
//! next is sent, creation latency recorded), then every other response goes to a [`Handler`]
//! until it is satisfied or the run stops it.

use super::client::Ch;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use rusd_proto::etcdserverpb::watch_client::WatchClient;
use rusd_proto::etcdserverpb::watch_request::RequestUnion;
use rusd_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::report::Recorder;

/// How long a watcher's creation may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a stream does with responses that are not creation confirmations.
pub trait Handler: Send + 'static {
    /// Handles one response; returns true when the stream has seen all it waits for.
    fn on_response(&mut self, rec: &mut Recorder, resp: WatchResponse) -> bool;
}

/// Why a watcher was canceled, if it was.
pub fn canceled(resp: &WatchResponse) -> Option<String> {
    if !resp.canceled {
        return None;
    }
    Some(if resp.compact_revision > 0 {
        format!(
            "watch {} canceled: compacted at {}",
            resp.watch_id, resp.compact_revision
        )
    } else {
        format!("watch {} canceled: {}", resp.watch_id, resp.cancel_reason)
    })
}

fn create(req: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(req)),
    }
}

/// Opens a stream on `client`, creates `creates` in order (recording op `create_op`), reports
/// the outcome on `ready`, then feeds `handler` until it is done, `stop` fires, or the stream
/// fails (recorded as a `create_op` error before `ready`, as `error_op` after).
#[allow(clippy::too_many_arguments)]
pub async fn run<H: Handler>(
    mut client: WatchClient<Ch>,
    creates: Vec<WatchCreateRequest>,
    mut rec: Recorder,
    create_op: usize,
    error_op: usize,
    ready: oneshot::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
    mut handler: H,
) -> (Recorder, H) {
    let mut creates = creates.into_iter();
    let (tx, rx) = mpsc::channel(4);
    let Some(first) = creates.next() else {
        let _ = ready.send(Ok(()));
        return (rec, handler);
    };
    // Queued before the call: some servers send response headers only with a first message.
    let _ = tx.try_send(create(first));
    let mut start = Instant::now();
    let mut stream = match client.watch(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return failed(rec, handler, ready, create_op, s.code(), s.message()),
    };
    let mut done = false;
    // Creation: one watcher at a time.
    loop {
        let msg = match tokio::time::timeout(CREATE_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) => {
                let why = "watch stream ended during creation";
                return failed(rec, handler, ready, create_op, Code::Unavailable, why);
            }
            Ok(Err(s)) => return failed(rec, handler, ready, create_op, s.code(), s.message()),
            Err(_) => {
                let why = "watch creation timed out";
                return failed(rec, handler, ready, create_op, Code::DeadlineExceeded, why);
            }
        };
        if !msg.created {
            done = done || handler.on_response(&mut rec, msg);
            continue;
        }
        if let Some(why) = canceled(&msg) {
            return failed(
                rec,
                handler,
                ready,
                create_op,
                Code::FailedPrecondition,
                &why,
            );
        }
        rec.ok(create_op, start);
        match creates.next() {
            Some(next) => {
                start = Instant::now();
                if tx.send(create(next)).await.is_err() {
                    let why = "watch stream closed";
                    return failed(rec, handler, ready, create_op, Code::Unavailable, why);
                }
            }
            None => break,
        }
    }
    let _ = ready.send(Ok(()));
    while !done {
        tokio::select! {
            msg = stream.message() => match msg {
                Ok(Some(resp)) => done = handler.on_response(&mut rec, resp),
                Ok(None) => {
                    rec.error(error_op, Code::Unavailable, "watch stream ended");
                    break;
                }
                Err(s) => {
                    rec.error(error_op, s.code(), s.message());
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    (rec, handler)
}

/// Records a setup failure and reports it on `ready`.
fn failed<H>(
    mut rec: Recorder,
    handler: H,
    ready: oneshot::Sender<anyhow::Result<()>>,
    op: usize,
    code: Code,
    why: &str,
) -> (Recorder, H) {
    rec.error(op, code, why);
    let _ = ready.send(Err(anyhow!("creating watchers: {why}")));
    (rec, handler)
}
