//! Errors as etcd's grpc-gateway (v1.9) writes them.
//!
//! * A unary call that fails answers with the HTTP status the gateway derives from the gRPC code
//!   and the body `{"error": msg, "message": msg, "code": <gRPC code>}`.
//! * A stream that fails writes `{"error": {"grpc_code", "http_code", "message", "http_status"}}`
//!   (with that HTTP status when nothing was written before).
//!
//! The gRPC code and text come from [`crate::grpc::status::code_and_message`], the one mapping
//! of server errors.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use tonic::Code;

use crate::error::ServerError;
use crate::grpc::status::code_and_message;

/// A failed gateway call: a gRPC code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    /// The gRPC code.
    pub code: Code,
    /// The message, as the gRPC status carries it.
    pub message: String,
}

impl GatewayError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A request body that is not the expected JSON (grpc-gateway answers InvalidArgument with
    /// the decoder's text).
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// A request above the gRPC receive limit: the text gRPC's transport uses.
    pub fn too_large(size: usize, limit: usize) -> Self {
        Self::new(
            Code::ResourceExhausted,
            format!("grpc: received message larger than max ({size} vs. {limit})"),
        )
    }

    /// The HTTP status grpc-gateway answers this error with.
    pub fn http_status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// The JSON a stream ends with when it fails (no delimiter follows it).
    pub fn stream_chunk(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct StreamError<'a> {
            grpc_code: i32,
            http_code: u16,
            message: &'a str,
            http_status: &'a str,
        }
        #[derive(Serialize)]
        struct Chunk<'a> {
            error: StreamError<'a>,
        }
        let status = self.http_status();
        let chunk = Chunk {
            error: StreamError {
                grpc_code: self.code as i32,
                http_code: status.as_u16(),
                message: &self.message,
                http_status: status.canonical_reason().unwrap_or(""),
            },
        };
        serde_json::to_vec(&chunk).unwrap_or_default()
    }

    /// The response for a stream that fails before its first message.
    pub fn into_stream_response(self) -> Response {
        let mut response = (self.http_status(), self.stream_chunk()).into_response();
        set_json(&mut response);
        response
    }
}

impl From<ServerError> for GatewayError {
    fn from(e: ServerError) -> Self {
        let (code, message) = code_and_message(&e);
        Self { code, message }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
            code: i32,
        }
        let body = serde_json::to_vec(&Body {
            error: &self.message,
            message: &self.message,
            code: self.code as i32,
        })
        .unwrap_or_default();
        let mut response = (self.http_status(), body).into_response();
        set_json(&mut response);
        response
    }
}

/// Sets `Content-Type: application/json`.
pub(crate) fn set_json(response: &mut Response) {
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

/// grpc-gateway v1.9's `HTTPStatusFromCode` (the version etcd 3.4 ships: FailedPrecondition is
/// 412 there, and ResourceExhausted 429).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_grpc_gateway_v1() {
        // Verified against etcd 3.4.23: 3 -> 400, 5 -> 404, 8 -> 429, 9 -> 412, 11 -> 400.
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn stream_chunk_shape() {
        let e = GatewayError::new(Code::OutOfRange, "etcdserver: x");
        assert_eq!(
            String::from_utf8(e.stream_chunk()).unwrap_or_default(),
            r#"{"error":{"grpc_code":11,"http_code":400,"message":"etcdserver: x","http_status":"Bad Request"}}"#
        );
    }
}
