//! The admin API's error: [`AdminError`] (a stable code, a status, a message and extra fields)
//! and how it is rendered (`{"error":{"code","message",...}}`, `WWW-Authenticate` on 401,
//! `Retry-After` on the platform's transient failures).
//!
//! Owns: the error shape of every admin answer. Does not own: which code a failure gets (the
//! handlers, and `StoreError::code` for the store's).

use picloud_core::{ErrorCode, StoreError};
use picloud_worker::http::Response;
use serde_json::{Value, json};

use super::wire::json_response;

/// An admin API failure: a code, a status (usually the code's) and a message, plus extra
/// fields (`line`, `column` for compile errors).
#[derive(Debug, PartialEq)]
pub struct AdminError {
    pub(super) code: ErrorCode,
    pub(super) status: u16,
    pub(super) message: String,
    pub(super) extra: Vec<(&'static str, Value)>,
}

impl AdminError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            status: code.status(),
            message: message.into(),
            extra: Vec::new(),
        }
    }

    /// An error with a status other than its code's (the HTTP layer's 414 and 431 are
    /// `too_large` too).
    pub fn with_status(code: ErrorCode, status: u16, message: impl Into<String>) -> AdminError {
        AdminError {
            status,
            ..AdminError::new(code, message)
        }
    }

    /// The admin shape of a request the HTTP layer refused before the admin API saw it.
    pub fn refused(status: u16, code: ErrorCode) -> AdminError {
        let message = match status {
            400 => "malformed request",
            413 => "body too large",
            414 => "URI too long",
            431 => "headers too large",
            503 => "too many connections",
            _ => "request refused",
        };
        AdminError::with_status(code, status, message)
    }

    pub fn not_found(what: impl Into<String>) -> AdminError {
        AdminError::new(ErrorCode::NotFound, what)
    }

    pub fn invalid(message: impl Into<String>) -> AdminError {
        AdminError::new(ErrorCode::InvalidInput, message)
    }

    pub fn into_response(self) -> Response {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), Value::from(self.code.as_str()));
        err.insert("message".into(), Value::from(self.message));
        for (k, v) in self.extra {
            err.insert(k.into(), v);
        }
        let mut resp = json_response(self.status, &json!({ "error": Value::Object(err) }));
        if self.code == ErrorCode::Unauthorized {
            resp.headers
                .push(("www-authenticate".into(), "Bearer".into()));
        }
        // Retry-After follows from who is at fault: the platform's transient failures.
        if self.code.fault() == picloud_core::Fault::Platform && self.code != ErrorCode::Internal {
            resp.headers.push(("retry-after".into(), "1".into()));
        }
        resp
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        if matches!(e, StoreError::Internal(_) | StoreError::Unavailable(_)) {
            log::error!("admin: {e}");
        }
        AdminError::new(e.code(), e.to_string())
    }
}

pub type AdminResult = Result<Response, AdminError>;
