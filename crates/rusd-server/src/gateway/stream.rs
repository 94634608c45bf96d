//! Gateway JSON for streaming calls (Watch, LeaseKeepAlive, Snapshot, Observe), as grpc-gateway
//! v1 does them.
//!
//! * Requests: the body is a sequence of JSON messages (whitespace between them optional), read
//!   as they arrive. A bad first message fails the call (code Unknown, HTTP 500, the unary error
//!   shape); a bad later one only ends the request side. A message above the gRPC receive limit
//!   fails the stream with ResourceExhausted, as the gRPC server would.
//! * Responses: headers go out with the first message; each message is `{"result": ...}` and a
//!   newline; an error ends the stream with `{"error": {...}}`
//!   ([`GatewayError::stream_chunk`]), with the error's HTTP status if it came first.

use std::pin::Pin;

use axum::body::{Body, BodyDataStream};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;
use tonic::Code;

use super::error::{set_json, GatewayError};
use super::json::{body_cap, check_size, decode_error_text, GRPC_METADATA_CONTENT_TYPE};
use crate::error::ServerError;

/// Splits bytes into top-level JSON values, the way Go's `json.Decoder` reads one value at a
/// time. It only finds where each value ends (tracking nesting and strings); parsing is left to
/// serde.
#[derive(Debug, Default)]
pub struct JsonSplitter {
    buf: Vec<u8>,
    /// Where the value being scanned starts, once its first byte was seen.
    start: Option<usize>,
    /// How far the buffer has been scanned.
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The value is a bare scalar (`null`, a number, `true`, `false`).
    scalar: bool,
}

impl JsonSplitter {
    /// Appends input.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete value, if the input so far holds one.
    pub fn next_value(&mut self) -> Option<Vec<u8>> {
        while let Some(&b) = self.buf.get(self.pos) {
            let Some(start) = self.start else {
                if !b.is_ascii_whitespace() {
                    self.start = Some(self.pos);
                    match b {
                        b'{' | b'[' => self.depth = 1,
                        b'"' => self.in_string = true,
                        _ => self.scalar = true,
                    }
                }
                self.pos += 1;
                continue;
            };
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.take(start, self.pos + 1));
                    }
                }
            } else if self.scalar {
                if b.is_ascii_whitespace() || b"{}[]\",".contains(&b) {
                    return Some(self.take(start, self.pos));
                }
            } else {
                match b {
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Some(self.take(start, self.pos + 1));
                        }
                    }
                    b'"' => self.in_string = true,
                    _ => {}
                }
            }
            self.pos += 1;
        }
        None
    }

    /// At the end of the input: a trailing bare scalar, if any.
    ///
    /// # Errors
    /// A value that was cut short (Go's `unexpected EOF`).
    pub fn finish(&mut self) -> Result<Option<Vec<u8>>, GatewayError> {
        match self.start {
            None => Ok(None),
            Some(start) if self.scalar => Ok(Some(self.take(start, self.buf.len()))),
            Some(_) => Err(GatewayError::new(Code::Unknown, "unexpected EOF")),
        }
    }

    fn take(&mut self, start: usize, end: usize) -> Vec<u8> {
        let value = self.buf.get(start..end).unwrap_or_default().to_vec();
        self.buf.drain(..end);
        *self = Self {
            buf: std::mem::take(&mut self.buf),
            ..Self::default()
        };
        value
    }
}

/// Reads a request body as a sequence of JSON messages.
pub struct MessageReader<T> {
    data: BodyDataStream,
    splitter: JsonSplitter,
    limit: usize,
    ended: bool,
    _message: std::marker::PhantomData<fn() -> T>,
}

impl<T> MessageReader<T>
where
    T: DeserializeOwned + Default + prost::Message,
{
    /// A reader of `body` whose messages may encode to at most `limit` bytes of protobuf.
    pub fn new(body: Body, limit: usize) -> Self {
        Self {
            data: body.into_data_stream(),
            splitter: JsonSplitter::default(),
            limit,
            ended: false,
            _message: std::marker::PhantomData,
        }
    }

    /// The next message, or `None` at the end of the body.
    ///
    /// # Errors
    /// Unknown with the decoder's text for bad JSON; ResourceExhausted for a message above the
    /// limit.
    pub async fn next(&mut self) -> Result<Option<T>, GatewayError> {
        loop {
            if let Some(value) = self.splitter.next_value() {
                return self.decode(&value).map(Some);
            }
            if self.ended {
                return match self.splitter.finish()? {
                    Some(value) => self.decode(&value).map(Some),
                    None => Ok(None),
                };
            }
            match self.data.next().await {
                Some(Ok(chunk)) => {
                    let buffered = self.splitter.buffered() + chunk.len();
                    if buffered > body_cap(self.limit) {
                        return Err(GatewayError::too_large(buffered, self.limit));
                    }
                    self.splitter.push(&chunk);
                }
                Some(Err(e)) => return Err(GatewayError::new(Code::Unknown, e.to_string())),
                None => self.ended = true,
            }
        }
    }

    fn decode(&self, value: &[u8]) -> Result<T, GatewayError> {
        let msg = serde_json::from_slice::<Option<T>>(value)
            .map_err(|e| GatewayError::new(Code::Unknown, decode_error_text(&e)))?
            .unwrap_or_default();
        check_size(&msg, self.limit)?;
        Ok(msg)
    }
}

impl<T> MessageReader<T>
where
    T: DeserializeOwned + Default + prost::Message + Send + 'static,
{
    /// Opens the request side of a stream the way grpc-gateway does: the first message is read
    /// before the call starts, the rest as they arrive.
    ///
    /// Returns the request stream and a receiver that yields the error that must end the
    /// response stream (an oversized message), if one occurs. A bad later message only ends
    /// the request stream.
    ///
    /// # Errors
    /// The first message's error, as the response to send.
    pub async fn open(
        mut self,
    ) -> Result<
        (
            impl Stream<Item = T> + Send + 'static,
            oneshot::Receiver<GatewayError>,
        ),
        Response,
    > {
        let (fatal_tx, fatal_rx) = oneshot::channel();
        let first = match self.next().await {
            Ok(first) => first,
            Err(e) if e.code == Code::ResourceExhausted => return Err(e.into_stream_response()),
            Err(e) => return Err(e.into_response()),
        };
        let ended = first.is_none();
        let rest = futures::stream::unfold(
            (self, Some(fatal_tx), ended),
            |(mut reader, mut fatal, ended)| async move {
                if ended {
                    return None;
                }
                match reader.next().await {
                    Ok(Some(msg)) => Some((msg, (reader, fatal, false))),
                    Ok(None) => None,
                    Err(e) => {
                        if e.code == Code::ResourceExhausted {
                            if let Some(tx) = fatal.take() {
                                let _ = tx.send(e);
                            }
                        }
                        None
                    }
                }
            },
        );
        Ok((futures::stream::iter(first).chain(rest), fatal_rx))
    }
}

/// One streamed message: `{"result": msg}` and a newline.
fn result_chunk<R: Serialize>(msg: &R) -> Vec<u8> {
    #[derive(Serialize)]
    struct Chunk<'a, R> {
        result: &'a R,
    }
    match serde_json::to_vec(&Chunk { result: msg }) {
        Ok(mut chunk) => {
            chunk.push(b'\n');
            chunk
        }
        Err(e) => GatewayError::new(Code::Internal, e.to_string()).stream_chunk(),
    }
}

type Items<R> = Pin<Box<dyn Stream<Item = Result<R, GatewayError>> + Send>>;

fn gateway_result<R>(r: Result<R, ServerError>) -> Result<R, GatewayError> {
    r.map_err(GatewayError::from)
}

/// `responses` with server errors in gateway form, ending after the first error, or with
/// `fatal`'s error if one is sent first.
fn with_fatal<R, S>(responses: S, fatal: Option<oneshot::Receiver<GatewayError>>) -> Items<R>
where
    R: Send + 'static,
    S: Stream<Item = Result<R, ServerError>> + Send + 'static,
{
    enum Next<R> {
        Item(Option<Result<R, GatewayError>>),
        /// The request side ended without a fatal error.
        NoFatal,
    }
    let responses = Box::pin(responses);
    Box::pin(futures::stream::unfold(
        (responses, fatal, false),
        |(mut responses, mut fatal, failed)| async move {
            if failed {
                return None;
            }
            loop {
                let next = match fatal.as_mut() {
                    None => Next::Item(responses.next().await.map(gateway_result)),
                    Some(rx) => tokio::select! {
                        sent = rx => match sent {
                            Ok(e) => Next::Item(Some(Err(e))),
                            Err(_) => Next::NoFatal,
                        },
                        item = responses.next() => Next::Item(item.map(gateway_result)),
                    },
                };
                match next {
                    Next::NoFatal => fatal = None,
                    Next::Item(item) => {
                        let item = item?;
                        let failed = item.is_err();
                        return Some((item, (responses, fatal, failed)));
                    }
                }
            }
        },
    ))
}

/// Streams `responses` as grpc-gateway does. Waits for the first message before answering, so
/// an error that comes first sets the HTTP status.
pub async fn respond<R, S>(responses: S, fatal: Option<oneshot::Receiver<GatewayError>>) -> Response
where
    R: Serialize + Send + 'static,
    S: Stream<Item = Result<R, ServerError>> + Send + 'static,
{
    let mut items = with_fatal(responses, fatal);
    let first = match items.next().await {
        None => None,
        Some(Err(e)) => return e.into_stream_response(),
        Some(Ok(first)) => Some(result_chunk(&first)),
    };
    let rest = items.map(|item| match item {
        Ok(msg) => result_chunk(&msg),
        Err(e) => e.stream_chunk(),
    });
    let chunks = futures::stream::iter(first)
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    let mut response = Body::from_stream(chunks).into_response();
    set_json(&mut response);
    response.headers_mut().insert(
        GRPC_METADATA_CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[&[u8]]) -> Result<Vec<String>, GatewayError> {
        let mut s = JsonSplitter::default();
        let mut out = Vec::new();
        for part in input {
            s.push(part);
            while let Some(v) = s.next_value() {
                out.push(String::from_utf8_lossy(&v).into_owned());
            }
        }
        if let Some(v) = s.finish()? {
            out.push(String::from_utf8_lossy(&v).into_owned());
        }
        Ok(out)
    }

    #[test]
    fn splits_values_across_chunks() -> Result<(), GatewayError> {
        let got = split_all(&[br#" {"a":{"b":"}\"{"}}{"c""#, br#":[1,{}]}"#, b"\n null 12"])?;
        assert_eq!(
            got,
            vec![
                r#"{"a":{"b":"}\"{"}}"#.to_string(),
                r#"{"c":[1,{}]}"#.to_string(),
                "null".to_string(),
                "12".to_string()
            ]
        );
        Ok(())
    }

    #[test]
    fn cut_short_is_unexpected_eof() {
        let e = split_all(&[br#"{"a":"#]).err().map(|e| e.message);
        assert_eq!(e.as_deref(), Some("unexpected EOF"));
    }

    #[tokio::test]
    async fn reads_messages_then_stops_at_bad_json() -> Result<(), GatewayError> {
        use rusd_proto::etcdserverpb as pb;
        let body = Body::from(r#"{"ID":"1"} {"ID":2} {bad"#);
        let reader = MessageReader::<pb::LeaseKeepAliveRequest>::new(body, 1024);
        let Ok((requests, _fatal)) = reader.open().await else {
            panic!("first message is fine");
        };
        let ids: Vec<i64> = requests.map(|r| r.id).collect().await;
        assert_eq!(ids, vec![1, 2]);
        Ok(())
    }
}
