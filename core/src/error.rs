//! Error codes with stable strings, classified by who is at fault.
//!
//! Owns: [`ErrorCode`] (the `error` strings of API.md), its HTTP status, and [`Fault`].
//! Does not own: rendering errors to JSON (the worker and the admin API do that) or the error
//! enums of individual subsystems (they map onto an [`ErrorCode`]).

/// Who caused a failure. Decides the log level (only `Platform` is an error in our logs) and
/// whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The HTTP client or admin sent something wrong: retrying the same request will not help.
    Client,
    /// The app's script failed or broke a limit: the app owner must fix it.
    Script,
    /// PiCloud itself could not serve (overload, store down, a bug): retrying later may help.
    Platform,
}

/// Which script limit was broken, as reported in the `limit` field of `limit_exceeded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The operations budget ran out.
    Operations,
    /// The per-invocation heap cap was hit.
    Memory,
    /// A string, array, map or other size limit was hit.
    Size,
    /// Call depth, expression depth or module count.
    Depth,
}

impl LimitKind {
    /// The stable string used in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Operations => "operations",
            LimitKind::Memory => "memory",
            LimitKind::Size => "size",
            LimitKind::Depth => "depth",
        }
    }
}

/// Every error code PiCloud answers with. The strings are part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No app, route, script or resource by that name.
    NotFound,
    /// The route exists for other methods.
    MethodNotAllowed,
    /// The script raised an error or failed at run time.
    ScriptError,
    /// The script broke an operations, heap, size or depth limit.
    LimitExceeded,
    /// The script ran past its wall-clock deadline.
    Timeout,
    /// The job queue is full or the node is draining.
    Overloaded,
    /// The app is quarantined: too many of its recent runs failed with `timeout` or
    /// `limit_exceeded`, so its requests are refused without running until a cool-down ends.
    AppQuarantined,
    /// Body, headers or URI over their limit.
    TooLarge,
    /// Malformed request.
    BadRequest,
    /// Missing or wrong admin token.
    Unauthorized,
    /// A valid admin token whose role or apps do not cover the call.
    Forbidden,
    /// A script did not compile.
    CompileError,
    /// The change conflicts with what is stored (ambiguous routes, script still in use).
    Conflict,
    /// The request was well formed but its content is invalid (bad name, bad limit value).
    InvalidInput,
    /// The store cannot be reached; the node keeps serving its last catalog.
    StoreUnavailable,
    /// A bug or unexpected failure inside PiCloud.
    Internal,
}

impl ErrorCode {
    /// The stable string used in responses and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ScriptError => "script_error",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::AppQuarantined => "app_quarantined",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::CompileError => "compile_error",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status for this code. `TooLarge` has three statuses (413/414/431); this gives
    /// 413 and the HTTP layer picks the others itself.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ScriptError | ErrorCode::LimitExceeded | ErrorCode::Internal => 500,
            ErrorCode::Timeout => 504,
            ErrorCode::Overloaded | ErrorCode::AppQuarantined | ErrorCode::StoreUnavailable => 503,
            ErrorCode::TooLarge => 413,
            ErrorCode::BadRequest | ErrorCode::InvalidInput => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::CompileError => 422,
            ErrorCode::Conflict => 409,
        }
    }

    /// Who is at fault when this code is returned.
    pub fn fault(self) -> Fault {
        match self {
            ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::TooLarge
            | ErrorCode::BadRequest
            | ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::CompileError
            | ErrorCode::Conflict
            | ErrorCode::InvalidInput => Fault::Client,
            // A quarantine is a refusal the app's own failing runs caused.
            ErrorCode::ScriptError
            | ErrorCode::LimitExceeded
            | ErrorCode::Timeout
            | ErrorCode::AppQuarantined => Fault::Script,
            ErrorCode::Overloaded | ErrorCode::StoreUnavailable | ErrorCode::Internal => {
                Fault::Platform
            }
        }
    }
}
