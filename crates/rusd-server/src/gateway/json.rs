//! Gateway JSON for unary calls: reading a request body into a protobuf message the way
//! grpc-gateway does, and writing a response.
//!
//! grpc-gateway decodes the first JSON value of the body (an empty body or `null` is the empty
//! message, anything after the first value is ignored, unknown fields are ignored), then the
//! message travels over gRPC, whose receive limit is `--max-request-bytes` + 512 KiB of
//! *protobuf*: a larger message fails with ResourceExhausted.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{set_json, GatewayError};

/// The gRPC receive limit for a member with `max_request_bytes` (etcd adds 512 KiB).
pub fn grpc_limit(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(512 * 1024)
}

/// The most JSON bytes read for one request: base64 and field names make JSON larger than the
/// protobuf it decodes to, so this is a generous multiple of the protobuf limit. It only bounds
/// memory; the etcd limit is checked on the decoded message.
pub fn body_cap(limit: usize) -> usize {
    limit.saturating_mul(4).saturating_add(64 * 1024)
}

/// Reads a whole request body, refusing more than [`body_cap`] bytes.
///
/// # Errors
/// ResourceExhausted for a body above the cap, InvalidArgument if reading fails.
pub async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, GatewayError> {
    let cap = body_cap(limit);
    let mut data = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| GatewayError::bad_json(e.to_string()))?;
        if out.len() + chunk.len() > cap {
            return Err(GatewayError::too_large(out.len() + chunk.len(), limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Decodes the first JSON value of `bytes` as `T`; empty or `null` is `T::default()`.
///
/// # Errors
/// InvalidArgument with the decoder's text (`unexpected EOF` for a truncated value, as Go says).
pub fn decode<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, GatewayError> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Option<T>>();
    match values.next() {
        None => Ok(T::default()),
        Some(Ok(value)) => Ok(value.unwrap_or_default()),
        Some(Err(e)) => Err(GatewayError::bad_json(decode_error_text(&e))),
    }
}

/// The text of a JSON decoding error.
pub fn decode_error_text(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected EOF".to_string()
    } else {
        e.to_string()
    }
}

/// Refuses a message whose protobuf encoding exceeds the gRPC receive `limit`.
///
/// # Errors
/// ResourceExhausted with gRPC's text.
pub fn check_size<T: prost::Message>(msg: &T, limit: usize) -> Result<(), GatewayError> {
    let size = msg.encoded_len();
    if size > limit {
        return Err(GatewayError::too_large(size, limit));
    }
    Ok(())
}

/// Reads, decodes and size-checks a unary request.
///
/// # Errors
/// As [`read_body`], [`decode`] and [`check_size`].
pub async fn request<T>(body: Body, limit: usize) -> Result<T, GatewayError>
where
    T: DeserializeOwned + Default + prost::Message,
{
    let bytes = read_body(body, limit).await?;
    let msg: T = decode(&bytes)?;
    check_size(&msg, limit)?;
    Ok(msg)
}

/// The header grpc-gateway copies from the gRPC response's metadata.
pub const GRPC_METADATA_CONTENT_TYPE: &str = "grpc-metadata-content-type";

/// A successful unary response: `200` and the message as gateway JSON.
pub fn response<T: Serialize>(msg: &T) -> Response {
    match serde_json::to_vec(msg) {
        Ok(body) => {
            let mut response = body.into_response();
            set_json(&mut response);
            response.headers_mut().insert(
                GRPC_METADATA_CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            response
        }
        Err(e) => GatewayError::new(tonic::Code::Internal, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use rusd_proto::etcdserverpb as pb;

    use super::*;

    #[test]
    fn decodes_like_grpc_gateway() -> Result<(), GatewayError> {
        let empty: pb::RangeRequest = decode(b"")?;
        assert_eq!(empty, pb::RangeRequest::default());
        let null: pb::RangeRequest = decode(b" null ")?;
        assert_eq!(null, pb::RangeRequest::default());
        let r: pb::RangeRequest = decode(br#"{"key":"Zm9v","limit":"2"} trailing"#)?;
        assert_eq!((r.key.as_slice(), r.limit), (&b"foo"[..], 2));
        let r: pb::RangeRequest = decode(br#"{"key":"Zm9v","bogus":{"x":[1]},"limit":3}"#)?;
        assert_eq!(r.limit, 3);
        let r: pb::RangeRequest = decode(br#"{"key":"Zm9v","limit":3,"rangeEnd":"Zm9w"}"#)?;
        assert_eq!((r.limit, r.range_end.as_slice()), (3, &b"fop"[..]));
        let truncated = decode::<pb::RangeRequest>(br#"{"key":"#);
        assert_eq!(
            truncated.map_err(|e| (e.code, e.message)),
            Err((tonic::Code::InvalidArgument, "unexpected EOF".to_string()))
        );
        Ok(())
    }

    #[test]
    fn size_limit_uses_protobuf_size() {
        let p = pb::PutRequest {
            key: b"a".to_vec(),
            value: vec![b'x'; 100],
            ..Default::default()
        };
        assert!(check_size(&p, 200).is_ok());
        let e = check_size(&p, 50).err().map(|e| e.message);
        assert_eq!(
            e.as_deref(),
            Some("grpc: received message larger than max (105 vs. 50)")
        );
    }
}
