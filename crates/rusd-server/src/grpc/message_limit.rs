//! The gRPC receive limit, refused the way grpc-go (and so etcd) refuses it.
//!
//! etcd's gRPC server takes request messages of at most `--max-request-bytes` + 512 KiB and
//! answers a longer one with ResourceExhausted "grpc: received message larger than max (N vs.
//! M)". tonic's decoder would answer OutOfRange in its own words, so [`MessageLimitLayer`]
//! enforces the limit before tonic sees the bytes: it reads the length prefix of every message
//! (1 byte compressed flag, 4 bytes big-endian length) as the request body arrives, and fails the
//! body with that status as soon as a prefix declares more than the limit (nothing of such a
//! message is buffered). tonic finds the [`Status`] in the body error's source chain and makes it
//! the call's status: a unary call ends with it at once (trailers-only). On a streaming call the
//! handler only sees its request stream break (rusd's Watch keeps answering, its LeaseKeepAlive
//! ends with OK), so the response body is guarded too and ends with the same status as its
//! trailers, as grpc-go ends the stream.
//!
//! Only `application/grpc` requests are touched: the HTTP gateway on the same port is not.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use futures::task::AtomicWaker;
use http::{HeaderMap, Request, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tower::{Layer, Service};

type BoxError = Box<dyn StdError + Send + Sync>;

/// etcd's (grpc-go's) status for a message of `len` bytes over `limit`.
pub fn too_large(len: u32, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({len} vs. {limit})"
    ))
}

/// Refuses gRPC request messages longer than a limit like grpc-go (see the module).
#[derive(Clone, Copy, Debug)]
pub struct MessageLimitLayer {
    limit: usize,
}

impl MessageLimitLayer {
    /// Messages of more than `limit` bytes are refused; `limit` bytes are accepted.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> MessageLimit<S> {
        MessageLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`MessageLimitLayer`].
#[derive(Clone, Debug)]
pub struct MessageLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> Service<Request<Body>> for MessageLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !is_grpc(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let refusal = Arc::new(Refusal::default());
        let scanner = FrameScanner::new(self.limit);
        let request = request.map(|inner| {
            Body::new(LimitedBody {
                inner,
                scanner,
                refusal: refusal.clone(),
                refused: false,
            })
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            if response.headers().contains_key("grpc-status") {
                // Trailers-only: the call is over (a refused unary request ends here).
                return Ok(response);
            }
            Ok(response.map(|inner| {
                Body::new(GuardedBody {
                    inner,
                    refusal,
                    done: false,
                })
            }))
        })
    }
}

/// `application/grpc`, `application/grpc+proto`, ... (not gRPC-Web, not the gateway's JSON).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

/// Follows the length-prefixed messages of a gRPC body across arbitrary chunk boundaries.
#[derive(Clone, Copy, Debug)]
struct FrameScanner {
    limit: usize,
    /// The prefix being read.
    prefix: [u8; 5],
    /// How many bytes of `prefix` are read (0 between messages).
    have: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl FrameScanner {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            prefix: [0; 5],
            have: 0,
            remaining: 0,
        }
    }

    /// Reads the next bytes of the body.
    ///
    /// # Errors
    /// The declared length of the first message longer than the limit.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), u32> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                if u64::from(len) > self.limit as u64 {
                    return Err(len);
                }
                self.remaining = u64::from(len);
            }
        }
        Ok(())
    }
}

/// What the request side tells the response side of one call.
#[derive(Debug, Default)]
struct Refusal {
    status: OnceLock<Status>,
    /// The response body waiting for more (woken by a refusal).
    waker: AtomicWaker,
}

impl Refusal {
    fn refuse(&self, status: Status) {
        let _ = self.status.set(status);
        self.waker.wake();
    }

    fn get(&self) -> Option<&Status> {
        self.status.get()
    }
}

/// A request body that fails with [`too_large`] at the first oversized message prefix.
struct LimitedBody {
    inner: Body,
    scanner: FrameScanner,
    refusal: Arc<Refusal>,
    refused: bool,
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.refused {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            if let Err(len) = this.scanner.feed(data) {
                this.refused = true;
                let status = too_large(len, this.scanner.limit);
                this.refusal.refuse(status.clone());
                return Poll::Ready(Some(Err(Box::new(status))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.refused || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends with the refusal's status once the request was refused.
struct GuardedBody {
    inner: Body,
    refusal: Arc<Refusal>,
    done: bool,
}

fn trailers(status: &Status) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    // Fails only for invalid metadata, which the refusal has none of.
    let _ = status.add_header(&mut map);
    Frame::trailers(map)
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.refusal.waker.register(cx.waker());
        if let Some(status) = this.refusal.get() {
            this.done = true;
            return Poll::Ready(Some(Ok(trailers(status))));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) if frame.is_trailers() => {
                this.done = true;
                // The handler ended the stream after the refusal (with OK): the refusal wins.
                Poll::Ready(Some(Ok(match this.refusal.get() {
                    Some(status) => trailers(status),
                    None => frame,
                })))
            }
            None => {
                this.done = true;
                Poll::Ready(this.refusal.get().map(|status| Ok(trailers(status))))
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && self.refusal.get().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::Stream;
    use prost::Message;
    use rusd_proto::etcdserverpb as pb;
    use std::time::Duration;
    use tonic::Code;
    use tower::ServiceExt;

    /// One gRPC message: prefix and `len` bytes (content irrelevant to the scanner).
    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        m.resize(5 + len, b'x');
        m
    }

    #[test]
    fn scanner_allows_exactly_the_limit_and_refuses_one_more() {
        let mut s = FrameScanner::new(10);
        assert_eq!(s.feed(&message(10)), Ok(()));
        assert_eq!(s.feed(&message(0)), Ok(()));
        assert_eq!(s.feed(&message(11)), Err(11));
        // The prefix alone is enough to refuse.
        let mut s = FrameScanner::new(10);
        assert_eq!(s.feed(&message(11)[..5]), Err(11));
        let mut s = FrameScanner::new(10);
        assert_eq!(s.feed(&[0, 0xff, 0xff, 0xff, 0xff]), Err(u32::MAX));
    }

    #[test]
    fn scanner_follows_messages_across_chunks() {
        // Several messages, the last one too large, cut at every possible pair of points.
        let mut body = Vec::new();
        for len in [3, 0, 10, 7] {
            body.extend(message(len));
        }
        body.extend(message(11));
        for i in 0..body.len() {
            for j in i..body.len() {
                let mut s = FrameScanner::new(10);
                let mut refused = None;
                for chunk in [&body[..i], &body[i..j], &body[j..]] {
                    if let Err(len) = s.feed(chunk) {
                        refused = Some(len);
                        break;
                    }
                }
                assert_eq!(refused, Some(11), "cut at {i}, {j}");
            }
        }
        // Byte by byte, with the large message's length bytes looking like prefixes.
        let mut s = FrameScanner::new(300);
        let mut body = message(300);
        body.extend(message(2));
        for b in &body {
            assert_eq!(s.feed(&[*b]), Ok(()));
        }
        for b in &message(301)[..4] {
            assert_eq!(s.feed(&[*b]), Ok(()));
        }
        assert_eq!(s.feed(&message(301)[4..5]), Err(301));
    }

    #[test]
    fn grpc_content_types() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(v),
            );
            is_grpc(&h)
        };
        assert!(ct("application/grpc"));
        assert!(ct("application/grpc+proto"));
        assert!(!ct("application/grpc-web"));
        assert!(!ct("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    // --- Through tonic: the status reaches the client as grpc-go's would. ---

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;
    type KeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    /// Answers grants; ends keep-alive streams with OK when the request stream breaks (like
    /// rusd's LeaseKeepAlive).
    struct MockLease;

    #[tonic::async_trait]
    impl pb::lease_server::Lease for MockLease {
        async fn lease_grant(
            &self,
            request: tonic::Request<pb::LeaseGrantRequest>,
        ) -> Result<tonic::Response<pb::LeaseGrantResponse>, Status> {
            Ok(tonic::Response::new(pb::LeaseGrantResponse {
                id: request.into_inner().id,
                ..Default::default()
            }))
        }

        async fn lease_revoke(
            &self,
            _: tonic::Request<pb::LeaseRevokeRequest>,
        ) -> Result<tonic::Response<pb::LeaseRevokeResponse>, Status> {
            Err(Status::unimplemented("mock"))
        }

        type LeaseKeepAliveStream = KeepAliveStream;

        async fn lease_keep_alive(
            &self,
            request: tonic::Request<tonic::Streaming<pb::LeaseKeepAliveRequest>>,
        ) -> Result<tonic::Response<KeepAliveStream>, Status> {
            let responses = futures::stream::unfold(request.into_inner(), |mut inbound| async {
                match inbound.message().await {
                    Ok(Some(r)) => {
                        let response = pb::LeaseKeepAliveResponse {
                            id: r.id,
                            ..Default::default()
                        };
                        Some((Ok(response), inbound))
                    }
                    Ok(None) | Err(_) => None,
                }
            });
            Ok(tonic::Response::new(Box::pin(responses)))
        }

        async fn lease_time_to_live(
            &self,
            _: tonic::Request<pb::LeaseTimeToLiveRequest>,
        ) -> Result<tonic::Response<pb::LeaseTimeToLiveResponse>, Status> {
            Err(Status::unimplemented("mock"))
        }

        async fn lease_leases(
            &self,
            _: tonic::Request<pb::LeaseLeasesRequest>,
        ) -> Result<tonic::Response<pb::LeaseLeasesResponse>, Status> {
            Err(Status::unimplemented("mock"))
        }
    }

    /// Reads requests in the background and never answers nor ends (like a rusd watch stream
    /// whose request side broke: the responses go on).
    struct MockWatch;

    #[tonic::async_trait]
    impl pb::watch_server::Watch for MockWatch {
        type WatchStream = WatchStream;

        async fn watch(
            &self,
            request: tonic::Request<tonic::Streaming<pb::WatchRequest>>,
        ) -> Result<tonic::Response<WatchStream>, Status> {
            let mut inbound = request.into_inner();
            tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
            Ok(tonic::Response::new(Box::pin(futures::stream::pending())))
        }
    }

    fn router(limit: usize) -> axum::Router {
        tonic::service::Routes::new(
            pb::lease_server::LeaseServer::new(MockLease).max_decoding_message_size(usize::MAX),
        )
        .add_service(pb::watch_server::WatchServer::new(MockWatch))
        .prepare()
        .into_axum_router()
        .layer(MessageLimitLayer::new(limit))
    }

    /// A gRPC request whose body is `chunks`, then (if `open`) never ends.
    fn grpc_request(path: &str, chunks: Vec<Vec<u8>>, open: bool) -> Request<Body> {
        let data = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<Bytes, BoxError>(Bytes::from(c))),
        );
        let body = if open {
            Body::from_stream(futures::StreamExt::chain(data, futures::stream::pending()))
        } else {
            Body::from_stream(data)
        };
        Request::post(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(body)
            .unwrap()
    }

    fn framed(m: &impl Message) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&u32::try_from(m.encoded_len()).unwrap().to_be_bytes());
        out.extend(m.encode_to_vec());
        out
    }

    /// The call's status: from the response headers (trailers-only) or trailers, with the
    /// number of data frames before it.
    async fn call(router: axum::Router, request: Request<Body>) -> (usize, Code, String) {
        let response = router.oneshot(request).await.unwrap();
        let status = |h: &HeaderMap| {
            h.get("grpc-status").map(|_| {
                let s = Status::from_header_map(h).unwrap();
                (s.code(), s.message().to_string())
            })
        };
        if let Some((code, message)) = status(response.headers()) {
            return (0, code, message);
        }
        let mut body = response.into_body();
        let mut data = 0;
        loop {
            let frame = tokio::time::timeout(
                Duration::from_secs(10),
                futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
            )
            .await
            .expect("the response ends")
            .expect("trailers before the end")
            .expect("no body error");
            if frame.is_data() {
                data += 1;
                continue;
            }
            let (code, message) = status(frame.trailers_ref().unwrap()).expect("grpc-status");
            return (data, code, message);
        }
    }

    const GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";

    #[tokio::test]
    async fn unary_at_the_limit_passes_one_more_is_refused() {
        let req = pb::LeaseGrantRequest { ttl: 5, id: 7 };
        let len = req.encoded_len();
        let (data, code, _) =
            call(router(len), grpc_request(GRANT, vec![framed(&req)], false)).await;
        assert_eq!((data, code), (1, Code::Ok));
        // Split inside the prefix.
        let bytes = framed(&req);
        let chunks = vec![bytes[..2].to_vec(), bytes[2..].to_vec()];
        let got = call(router(len - 1), grpc_request(GRANT, chunks, false)).await;
        let text = format!(
            "grpc: received message larger than max ({len} vs. {})",
            len - 1
        );
        assert_eq!(got, (0, Code::ResourceExhausted, text));
    }

    #[tokio::test]
    async fn unary_refused_before_the_message_arrives() {
        // Only the prefix of a 3 MB message is sent, and the body stays open.
        let got = call(
            router(2_097_152),
            grpc_request(GRANT, vec![message(3_000_000)[..5].to_vec()], true),
        )
        .await;
        let text = "grpc: received message larger than max (3000000 vs. 2097152)";
        assert_eq!(got, (0, Code::ResourceExhausted, text.to_string()));
    }

    #[tokio::test]
    async fn keep_alive_stream_ends_with_the_refusal_not_ok() {
        let first = framed(&pb::LeaseKeepAliveRequest { id: 1 });
        let big = message(101)[..5].to_vec();
        let got = call(
            router(100),
            grpc_request("/etcdserverpb.Lease/LeaseKeepAlive", vec![first, big], true),
        )
        .await;
        let text = "grpc: received message larger than max (101 vs. 100)";
        assert_eq!(got.1, Code::ResourceExhausted);
        assert_eq!(got.2, text);
    }

    #[tokio::test]
    async fn watch_stream_ends_with_the_refusal() {
        let got = call(
            router(100),
            grpc_request(
                "/etcdserverpb.Watch/Watch",
                vec![message(101)[..3].to_vec(), message(101)[3..].to_vec()],
                true,
            ),
        )
        .await;
        let text = "grpc: received message larger than max (101 vs. 100)";
        assert_eq!(got, (0, Code::ResourceExhausted, text.to_string()));
    }

    #[tokio::test]
    async fn other_requests_are_untouched() {
        let service = tower::service_fn(|request: Request<Body>| async move {
            let mut body = request.into_body();
            let mut n = 0;
            while let Some(frame) =
                futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                n += frame.unwrap().into_data().unwrap().len();
            }
            Ok::<_, std::convert::Infallible>(Response::new(Body::from(n.to_string())))
        });
        let service = MessageLimitLayer::new(1).layer(service);
        let request = Request::post("/v3/kv/put")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(message(1000)))
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let mut body = response.into_body();
        let frame = futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from("1005"));
    }
}
