//! Narrow entry points for the fuzz harness (`fuzz/`), compiled only with the `fuzzing`
//! feature.
//!
//! Owns: thin, owned-type wrappers around the request head parser, the chunked decoder and the
//! JSON-body conversion, so the harness can drive them without the rest of the worker's
//! internals becoming public. Does not own: any parsing logic (every function here only
//! forwards) or the harness itself.

use picloud_core::Limits;

use crate::engine::{SizeCaps, parse_json_body, to_json_capped};
use crate::http::{BodyFraming, ChunkError, ChunkedDecoder, HeadLimits, HeadScanner};

/// The body framing a head declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes, not yet checked against the body limit.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the head parser made of the bytes it was given so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadVerdict {
    /// A complete, valid head of `head_bytes` bytes.
    Complete {
        /// Bytes of the buffer the head used.
        head_bytes: usize,
        /// The declared body framing.
        framing: Framing,
        /// Whether the connection may stay open afterwards.
        keep_alive: bool,
        /// The request method.
        method: String,
        /// The path part of the target.
        path: String,
    },
    /// More bytes are needed.
    Partial,
    /// Refused with this status (400, 414, 431).
    Refused(u16),
}

/// The head limits (`headers_max`, `header_bytes_max`, `uri_bytes_max`) of a `Limits`.
fn head_limits(limits: &Limits) -> HeadLimits {
    HeadLimits {
        headers_max: limits.headers_max,
        header_bytes_max: limits.header_bytes_max,
        uri_bytes_max: limits.uri_bytes_max,
    }
}

/// The incremental head reader of one request, as the connection drives it.
#[derive(Debug, Default)]
pub struct HeadReader(HeadScanner);

impl HeadReader {
    /// Looks at the unparsed bytes, which must only grow between calls.
    pub fn poll(&mut self, buf: &[u8], limits: &Limits) -> HeadVerdict {
        match self.0.poll(buf, &head_limits(limits), None) {
            Ok(Some(head)) => HeadVerdict::Complete {
                head_bytes: head.head_bytes,
                framing: match head.framing {
                    BodyFraming::Empty => Framing::Empty,
                    BodyFraming::Length(n) => Framing::Length(n),
                    BodyFraming::Chunked => Framing::Chunked,
                },
                keep_alive: head.keep_alive,
                method: head.request.method,
                path: head.request.path,
            },
            Ok(None) => HeadVerdict::Partial,
            Err(e) => HeadVerdict::Refused(e.status()),
        }
    }
}

/// The chunked body decoder, as the connection drives it.
#[derive(Debug)]
pub struct Dechunker(ChunkedDecoder);

impl Dechunker {
    /// A decoder bounded by `body_bytes_max` (decoded bytes) and `trailer_bytes_max`.
    pub fn new(body_bytes_max: usize, trailer_bytes_max: usize) -> Dechunker {
        Dechunker(ChunkedDecoder::new(body_bytes_max, trailer_bytes_max))
    }

    /// Decodes what it can of `input` into `body`; the bytes consumed, or the status the
    /// connection would answer (400 malformed, 413 too large).
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, u16> {
        self.0.decode(input, body).map_err(|e| match e {
            ChunkError::Malformed => 400,
            ChunkError::TooLarge => 413,
        })
    }

    /// Whether the final chunk and trailers were read.
    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }

    /// Bytes left in the current chunk, when inside chunk data.
    pub fn data_left(&self) -> Option<u64> {
        self.0.data_left()
    }

    /// Records `n` data bytes the caller appended to the body itself.
    pub fn data_read(&mut self, n: usize) {
        self.0.data_read(n);
    }
}

/// A request body as a script's `request.json` sees it, written back out as JSON bytes (`Ok(None)`:
/// not JSON, the script sees `()`), or the size-limit message. Uses the app's string, array and
/// map caps from `limits`.
pub fn json_body(body: &[u8], limits: &Limits) -> Result<Option<Vec<u8>>, String> {
    let value = parse_json_body(body, SizeCaps::of(limits))?;
    if value.is_unit() {
        return Ok(None);
    }
    // Uncapped output: the round trip checks the conversion, not the response bound.
    to_json_capped(&value, usize::MAX)
        .map(Some)
        .map_err(|e| format!("to_json failed on a parsed body: {e:?}"))
}
