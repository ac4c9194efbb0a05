//! Error responses of the public side: `{"error": CODE, "request_id": ID, ...}`.
//!
//! Owns: the JSON shape of every public error (API.md "Failures") so that the dispatcher, the
//! engine pool and the HTTP layer answer alike. Does not own: deciding which code applies.

use picloud_core::ErrorCode;
use serde_json::{Map, Value};

use crate::http::Response;

/// Builds an error response with the code's status, the request id and extra fields.
pub fn error_response(code: ErrorCode, request_id: &str, extra: Vec<(&str, Value)>) -> Response {
    error_response_with_status(code.status(), code, request_id, extra)
}

/// Like [`error_response`] with an explicit status (414 and 431 share `too_large`).
pub fn error_response_with_status(
    status: u16,
    code: ErrorCode,
    request_id: &str,
    extra: Vec<(&str, Value)>,
) -> Response {
    let mut body = Map::with_capacity(2 + extra.len());
    body.insert("error".into(), Value::from(code.as_str()));
    if !request_id.is_empty() {
        body.insert("request_id".into(), Value::from(request_id));
    }
    for (k, v) in extra {
        body.insert(k.into(), v);
    }
    let mut resp = Response::new(status, "application/json", Value::Object(body).to_string());
    if !request_id.is_empty() {
        resp.headers
            .push(("x-request-id".into(), request_id.into()));
    }
    if code == ErrorCode::Overloaded {
        resp.headers.push(("retry-after".into(), "1".into()));
    }
    resp
}
