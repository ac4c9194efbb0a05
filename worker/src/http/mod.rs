//! The public HTTP/1.1 front end: our own layer on `may` coroutines with `httparse` parsing.
//!
//! Owns: the [`Request`] and [`Response`] types the rest of the worker speaks, the
//! [`Handler`] trait the front end calls for each complete request, connection handling and
//! every framing rule (limits, timeouts, keep-alive, pipelining, chunked bodies, HEAD,
//! `Expect: 100-continue`), and the may runtime configuration that keeps an idle node asleep.
//!
//! Does not own: routing, scripts or error bodies beyond the framing errors it answers itself
//! (400/413/414/431). Handlers run on the connection's coroutine and must only park the
//! coroutine, never block the OS thread.

use std::net::SocketAddr;

/// One complete request: line, headers and the fully read (de-chunked) body.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method as sent (`GET`, `POST`, ...).
    pub method: String,
    /// The path part of the request target, without the query (not decoded).
    pub path: String,
    /// The raw query string after `?`, without the `?` (empty if none).
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Headers in arrival order; names lower-cased, values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// The body, after chunked decoding.
    pub body: Vec<u8>,
    /// The peer's address, if known.
    pub peer: Option<SocketAddr>,
}

impl Request {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response to write. The front end adds `content-length` (and `connection: close` when it
/// closes); handlers must not set those two.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Any number of headers, written in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes (not written for HEAD requests, 204 and 304).
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a status, one content type and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        // Room for the `x-request-id` every routed answer gets next, so that push does not
        // reallocate (one allocation less per request; issue 13's profile).
        let mut headers = Vec::with_capacity(2);
        headers.push(("content-type".to_string(), content_type.to_string()));
        Response {
            status,
            headers,
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// What the front end calls for every complete request, on the connection's coroutine.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state (for example a reusable reply channel), created when a connection
    /// is accepted and dropped when it closes.
    type Conn: Send + 'static;

    /// Creates the state of a new connection.
    fn new_conn(&self) -> Self::Conn;

    /// Answers one request. Runs on a coroutine: it may park the coroutine (may channels,
    /// `Blocker`), never block the OS thread or run Rhai.
    fn handle(&self, conn: &mut Self::Conn, req: Request) -> Response;

    /// The answer to a request the HTTP layer refuses before the handler sees it: framing
    /// errors (400, 413, 414, 431) and the 503 past `connections_max`. The default is the
    /// public error shape (`{"error": CODE}`); the admin API answers in its own. Called only on
    /// those failure paths, never per request.
    fn refused(&self, status: u16, code: picloud_core::ErrorCode) -> Response {
        crate::errors::error_response_with_status(status, code, "", Vec::new())
    }
}

mod chunked;
mod conn;
mod encode;
mod head;
pub mod runtime;
pub mod server;
mod timer;

pub use runtime::{RuntimeConfig, configure_runtime};

#[cfg(feature = "fuzzing")]
pub(crate) use chunked::{ChunkError, ChunkedDecoder};
#[cfg(feature = "fuzzing")]
pub(crate) use head::{BodyFraming, HeadLimits, HeadScanner};
pub use server::{DrainReport, ServerHandle, serve};

/// Test support shared by the parsers' property tests: a seeded xorshift generator and inputs
/// glued from framing-relevant pieces.
#[cfg(test)]
pub(crate) mod fuzz {
    /// A seeded xorshift64 generator: deterministic, so a failure reproduces.
    pub(crate) struct XorShift(pub(crate) u64);

    impl XorShift {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        /// An input of up to `pieces_max - 1` randomly chosen pieces.
        pub(crate) fn input(&mut self, pieces: &[&[u8]], pieces_max: u64) -> Vec<u8> {
            let mut out = Vec::new();
            for _ in 0..(self.next() % pieces_max) {
                out.extend_from_slice(pieces[(self.next() % pieces.len() as u64) as usize]);
            }
            out
        }
    }
}
