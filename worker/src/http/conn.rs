//! One connection's life on its own coroutine: read a head, read its body, call the handler,
//! write the response, repeat while keep-alive allows.
//!
//! Owns: the per-connection read and write buffers (reused across requests, shrunk back when
//! idle), the deadline of every read (header total, body between reads, idle keep-alive,
//! lingering close) and of a write that blocks (a client not reading its responses),
//! `Expect: 100-continue`, body reading for both framings, framing error answers
//! (400/413/414/431) followed by a lingering close, and the keep-alive decision.
//! Does not own: head parsing rules (`head.rs`), chunk grammar (`chunked.rs`), response
//! encoding (`encode.rs`), the registry, the reaper that enforces deadlines, and drain
//! (`server.rs`).
//!
//! No may socket timeout is ever set: each one leaves may timer entries that can fire long
//! after the read completed (see `server.rs`). A deadline is entered in the registry just for
//! the blocking read or write (`read_by`); a cut by the reaper shows as `wait_done` false,
//! which is how a timeout is told apart from the client's end-of-file.
//!
//! Invariant: a request's body is always read completely before the next head is parsed, or
//! the connection closes. The handler sees the whole body; nothing it ignores is ever parsed
//! as a request.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use may::net::TcpStream;
use picloud_core::{ErrorCode, Limits};

use super::chunked::{CHUNK_LINE_BYTES_MAX, ChunkError, ChunkedDecoder};
use super::encode::{Framing, encode_head};
use super::head::{BodyFraming, Head, HeadError, HeadLimits, HeadScanner, has_token};
use super::server::Registration;
use super::{Handler, Response};
use crate::errors::error_response_with_status;
use crate::metrics::TimeoutKind;

/// Read buffer of a new connection; also what an idle connection shrinks back to.
const READ_BUF_BYTES_INITIAL: usize = 4096;
/// An idle connection whose read buffer grew past this gives it back.
const READ_BUF_BYTES_KEEP: usize = 16 * 1024;
/// Write buffer of a new connection.
const WRITE_BUF_BYTES_INITIAL: usize = 1024;
/// An idle connection whose write buffer grew past this gives it back.
const WRITE_BUF_BYTES_KEEP: usize = 64 * 1024;
/// Response bodies up to this size are copied behind the head and written with one `write`;
/// larger ones are written vectored (head and body) to avoid the copy.
const BODY_COPY_BYTES_MAX: usize = 16 * 1024;
/// A declared body is allocated at most this much ahead of the bytes that actually arrived,
/// so a client declaring a large body and sending nothing costs little memory.
const BODY_READ_STEP_BYTES: usize = 64 * 1024;
/// After an error answer, how long unread client bytes are read and discarded before the
/// socket closes (closing with unread data sends a reset, which can destroy our answer
/// before the client reads it).
const LINGER_TIMEOUT_MS: u64 = 1000;
/// Most bytes discarded while lingering.
const LINGER_BYTES_MAX: usize = 256 * 1024;

/// Longest timeout (one day); larger configured values are clamped, so a deadline is always
/// a representable `Instant`.
pub(crate) const TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The limits a connection enforces, copied once per server from `Limits`.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub head: HeadLimits,
    pub body_bytes_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// The read buffer never grows past this: a head over `header_bytes_max` is refused
    /// before, and so is a chunk size line or trailer section over its own bound.
    pub read_buf_bytes_max: usize,
}

impl ConnConfig {
    pub(crate) fn from_limits(limits: &Limits) -> ConnConfig {
        // A zero timeout would cut every request: 1 ms floor. A day at most.
        let ms = |v: u64| Duration::from_millis(v.clamp(1, TIMEOUT_MS_MAX));
        ConnConfig {
            head: HeadLimits {
                headers_max: limits.headers_max,
                header_bytes_max: limits.header_bytes_max,
                uri_bytes_max: limits.uri_bytes_max,
            },
            body_bytes_max: limits.body_bytes_max,
            header_read_timeout: ms(limits.header_read_timeout_ms),
            body_read_timeout: ms(limits.body_read_timeout_ms),
            idle_timeout: ms(limits.idle_timeout_ms),
            read_buf_bytes_max: limits.header_bytes_max.max(CHUNK_LINE_BYTES_MAX)
                + READ_BUF_BYTES_INITIAL,
        }
    }
}

/// Why a read did not return bytes.
#[derive(Debug)]
enum ReadError {
    Eof,
    TimedOut,
    /// The buffer is at its bound (cannot happen while the scanners enforce their limits).
    Full,
    Io(io::Error),
}

/// What to do after one exchange.
enum After {
    KeepAlive,
    /// Close politely: half-close, then (if `linger`, or if the client sent more) discard
    /// what the client still sends for a bounded time.
    Close {
        linger: bool,
    },
    /// The peer is gone or timed out: just drop the socket.
    Gone,
}

enum HeadFailure {
    Refused(HeadError),
    Gone,
}

enum BodyFailure {
    TooLarge,
    Malformed,
    Gone,
}

/// An accepted connection on its way to its coroutine.
pub(crate) struct Accepted {
    // Field order matters, as in `Conn`: the registry entry drops before the socket closes,
    // even if the coroutine is never spawned.
    pub registration: Registration,
    pub stream: TcpStream,
    pub peer: SocketAddr,
}

struct Conn<'c> {
    // Field order matters: fields drop in declaration order, so the registry entry is removed
    // before the socket closes. The drainer may shut down any fd in the registry; it must never
    // see one that was closed and reused by another socket.
    registration: Registration,
    stream: TcpStream,
    peer: SocketAddr,
    cfg: &'c ConnConfig,
    /// Bytes received: `rbuf[lo..hi]` is not consumed yet; the whole length is initialized.
    rbuf: Vec<u8>,
    lo: usize,
    hi: usize,
    wbuf: Vec<u8>,
}

/// Serves one accepted connection until it closes. Runs on the connection's coroutine.
pub(crate) fn run<H: Handler>(accepted: Accepted, handler: &H, cfg: &ConnConfig) {
    let Accepted {
        registration,
        stream,
        peer,
    } = accepted;
    // Responses go out in one write each; Nagle would only delay the 100 Continue + response
    // pair and pipelined answers.
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("{peer}: set_nodelay: {e}");
    }
    let mut conn = Conn {
        registration,
        stream,
        peer,
        cfg,
        rbuf: vec![0; READ_BUF_BYTES_INITIAL],
        lo: 0,
        hi: 0,
        wbuf: Vec::with_capacity(WRITE_BUF_BYTES_INITIAL),
    };
    let mut state = handler.new_conn();
    loop {
        match conn.serve_one(handler, &mut state) {
            After::KeepAlive => {}
            After::Close { linger } => {
                conn.close(linger);
                return;
            }
            After::Gone => return,
        }
    }
}

impl Conn<'_> {
    fn serve_one<H: Handler>(&mut self, handler: &H, state: &mut H::Conn) -> After {
        let head = match self.read_head() {
            Ok(head) => head,
            Err(HeadFailure::Gone) => return After::Gone,
            Err(HeadFailure::Refused(e)) => {
                log::debug!("{}: refused request head: {e:?}", self.peer);
                let code = match e {
                    HeadError::Bad(_) => ErrorCode::BadRequest,
                    HeadError::UriTooLong | HeadError::HeadersTooLarge => ErrorCode::TooLarge,
                };
                return self.refuse(handler.refused(e.status(), code));
            }
        };
        let Head {
            mut request,
            framing,
            keep_alive,
            expect_continue,
            is_head,
            ..
        } = head;
        match self.read_body(framing, expect_continue, &mut request.body) {
            Ok(()) => {}
            Err(BodyFailure::TooLarge) => {
                return self.refuse(handler.refused(413, ErrorCode::TooLarge));
            }
            Err(BodyFailure::Malformed) => {
                return self.refuse(handler.refused(400, ErrorCode::BadRequest));
            }
            Err(BodyFailure::Gone) => return After::Gone,
        }

        let version_minor = request.version_minor;
        // A panicking handler costs its connection, never the coroutine's worker thread or
        // the server: answer 500 and close (the handler's per-connection state may be broken).
        let resp = match catch_unwind(AssertUnwindSafe(|| handler.handle(state, request))) {
            Ok(resp) if (200..=999).contains(&resp.status) => resp,
            Ok(resp) => {
                log::warn!(
                    "handler answered invalid status {}; sending 500",
                    resp.status
                );
                error_response_with_status(500, ErrorCode::Internal, "", Vec::new())
            }
            Err(_) => {
                log::error!("{}: handler panicked; closing the connection", self.peer);
                let resp = error_response_with_status(500, ErrorCode::Internal, "", Vec::new());
                return self.answer_and_close(&resp, is_head);
            }
        };
        let handler_close = resp
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && has_token(v, "close"));
        let close = !keep_alive || handler_close || self.registration.draining();
        let framing = Framing {
            head_request: is_head,
            close,
            confirm_keep_alive: !close && version_minor == 0,
        };
        if let Err(e) = self.write_response(&resp, framing) {
            log::debug!("{}: writing response: {e}", self.peer);
            return After::Gone;
        }
        if close {
            After::Close { linger: false }
        } else {
            After::KeepAlive
        }
    }

    /// Reads until one complete head is buffered and parsed (or refused).
    fn read_head(&mut self) -> Result<Head, HeadFailure> {
        let mut scanner = HeadScanner::default();
        let mut deadline: Option<Instant> = None;
        loop {
            if self.lo == self.hi {
                self.wait_for_request()?;
            }
            let pending = &self.rbuf[self.lo..self.hi];
            match scanner.poll(pending, &self.cfg.head, Some(self.peer)) {
                Ok(Some(head)) => {
                    self.lo += head.head_bytes;
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err(HeadFailure::Refused(e)),
            }
            // The header timeout is a total for the head, counted from when its first bytes
            // were found incomplete, so a client trickling bytes cannot stretch it.
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.cfg.header_read_timeout);
            if Instant::now() >= deadline {
                return Err(self.gone(
                    "reading head",
                    ReadError::TimedOut,
                    TimeoutKind::HeaderRead,
                ));
            }
            if let Err(e) = self.fill(deadline) {
                return Err(self.gone("reading head", e, TimeoutKind::HeaderRead));
            }
        }
    }

    /// Waits for the first bytes of the next request, with the idle timeout. The connection is
    /// idle (the drainer may close it) only while this wait is pending.
    fn wait_for_request(&mut self) -> Result<(), HeadFailure> {
        self.lo = 0;
        self.hi = 0;
        self.shrink_buffers();
        if !self.registration.set_idle() {
            log::debug!("{}: closing idle connection for drain", self.peer);
            return Err(HeadFailure::Gone);
        }
        let read = self.fill(Instant::now() + self.cfg.idle_timeout);
        self.registration.set_busy();
        match read {
            Ok(_) => Ok(()),
            Err(e) => Err(self.gone("waiting for a request", e, TimeoutKind::Idle)),
        }
    }

    /// A read ended the connection; a timeout is counted as `kind`.
    fn gone(&self, doing: &str, e: ReadError, kind: TimeoutKind) -> HeadFailure {
        self.note_timeout(&e, kind);
        log_read_end(self.peer, doing, &e);
        HeadFailure::Gone
    }

    fn note_timeout(&self, e: &ReadError, kind: TimeoutKind) {
        if matches!(e, ReadError::TimedOut) {
            self.registration.count_timeout(kind);
        }
    }

    fn read_body(
        &mut self,
        framing: BodyFraming,
        expect_continue: bool,
        body: &mut Vec<u8>,
    ) -> Result<(), BodyFailure> {
        match framing {
            BodyFraming::Empty => Ok(()),
            BodyFraming::Length(declared) => {
                // Refused before reading a byte (and before 100 Continue invites the client).
                let len = usize::try_from(declared)
                    .ok()
                    .filter(|&n| n <= self.cfg.body_bytes_max)
                    .ok_or(BodyFailure::TooLarge)?;
                let buffered = self.hi - self.lo;
                if expect_continue && buffered < len {
                    self.send_continue()?;
                }
                let take = buffered.min(len);
                body.reserve_exact(len.min(BODY_READ_STEP_BYTES));
                body.extend_from_slice(&self.rbuf[self.lo..self.lo + take]);
                self.lo += take;
                while body.len() < len {
                    // Grow with what arrives (doubling), not with what was declared.
                    let old = body.len();
                    let step = (len - old).min(old.max(BODY_READ_STEP_BYTES));
                    body.resize(old + step, 0);
                    let deadline = Instant::now() + self.cfg.body_read_timeout;
                    match self.read_into(&mut body[old..], deadline) {
                        Ok(n) => body.truncate(old + n),
                        Err(e) => {
                            self.note_timeout(&e, TimeoutKind::BodyRead);
                            log_read_end(self.peer, "reading body", &e);
                            return Err(BodyFailure::Gone);
                        }
                    }
                }
                Ok(())
            }
            BodyFraming::Chunked => {
                if expect_continue && self.lo == self.hi {
                    self.send_continue()?;
                }
                // Trailers are bounded like a head: they are header fields.
                let mut decoder =
                    ChunkedDecoder::new(self.cfg.body_bytes_max, self.cfg.head.header_bytes_max);
                loop {
                    let used = decoder
                        .decode(&self.rbuf[self.lo..self.hi], body)
                        .map_err(|e| match e {
                            ChunkError::Malformed => BodyFailure::Malformed,
                            ChunkError::TooLarge => BodyFailure::TooLarge,
                        })?;
                    self.lo += used;
                    if decoder.is_done() {
                        return Ok(());
                    }
                    // Inside chunk data with nothing buffered: read straight into the body,
                    // in large steps, instead of 4 KiB at a time through the read buffer.
                    let direct = if self.lo == self.hi {
                        decoder.data_left()
                    } else {
                        None
                    };
                    let read = match direct {
                        Some(left) => {
                            let old = body.len();
                            let left = usize::try_from(left).unwrap_or(usize::MAX);
                            let step = left.min(old.max(BODY_READ_STEP_BYTES));
                            body.resize(old + step, 0);
                            let deadline = Instant::now() + self.cfg.body_read_timeout;
                            let read = self.read_into(&mut body[old..], deadline);
                            let n = *read.as_ref().unwrap_or(&0);
                            body.truncate(old + n);
                            decoder.data_read(n);
                            read
                        }
                        None => self.fill(Instant::now() + self.cfg.body_read_timeout),
                    };
                    if let Err(e) = read {
                        self.note_timeout(&e, TimeoutKind::BodyRead);
                        log_read_end(self.peer, "reading chunked body", &e);
                        return Err(BodyFailure::Gone);
                    }
                }
            }
        }
    }

    fn send_continue(&mut self) -> Result<(), BodyFailure> {
        self.write_all(CONTINUE_100).map_err(|e| {
            log::debug!("{}: writing 100 Continue: {e}", self.peer);
            BodyFailure::Gone
        })
    }

    /// Reads more bytes into `rbuf[hi..]` by `deadline`, making room first (compacting, then
    /// growing up to `read_buf_bytes_max`).
    fn fill(&mut self, deadline: Instant) -> Result<usize, ReadError> {
        if self.lo == self.hi {
            self.lo = 0;
            self.hi = 0;
        }
        let len = self.rbuf.len();
        // Compact when the free tail is small, so reads are not starved by a sliver.
        if self.lo > 0 && len - self.hi < len / 4 {
            self.rbuf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.hi == len {
            let grown = (len * 2).min(self.cfg.read_buf_bytes_max);
            if grown <= len {
                return Err(ReadError::Full);
            }
            self.rbuf.resize(grown, 0);
        }
        let hi = self.hi;
        let n = self.read_into_rbuf(hi, deadline)?;
        self.hi += n;
        Ok(n)
    }

    fn read_into_rbuf(&mut self, from: usize, deadline: Instant) -> Result<usize, ReadError> {
        read_by(
            &mut self.registration,
            &mut self.stream,
            &mut self.rbuf[from..],
            deadline,
        )
    }

    fn read_into(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, ReadError> {
        read_by(&mut self.registration, &mut self.stream, buf, deadline)
    }

    /// Writes all of `buf`. Each write is first tried on the (non-blocking) std socket, which
    /// nearly always takes it whole at no bookkeeping cost; only a write that would block gets
    /// a deadline (the idle timeout: a client that stops reading its responses is cut instead
    /// of parking this coroutine forever on a full send buffer).
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let direct = self.stream.inner().write(buf);
            let n = match direct {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.registration
                        .wait_until(Instant::now() + self.cfg.idle_timeout);
                    let written = self.stream.write(buf);
                    self.wait_done_for_write()?;
                    written
                }
                other => other,
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`write_all`](Conn::write_all) for a head and a large body, without copying them.
    fn write_all_vectored(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        while !slices.is_empty() {
            let direct = self.stream.inner().write_vectored(slices);
            let n = match direct {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.registration
                        .wait_until(Instant::now() + self.cfg.idle_timeout);
                    let written = self.stream.write_vectored(slices);
                    self.wait_done_for_write()?;
                    written
                }
                other => other,
            };
            match n {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn wait_done_for_write(&mut self) -> io::Result<()> {
        if self.registration.wait_done() {
            Ok(())
        } else {
            self.registration.count_timeout(TimeoutKind::Write);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading",
            ))
        }
    }

    /// Answers a framing error (the handler's rendering of it) with `connection: close`, then
    /// closes with lingering.
    fn refuse(&mut self, resp: Response) -> After {
        self.answer_and_close(&resp, false)
    }

    fn answer_and_close(&mut self, resp: &Response, is_head: bool) -> After {
        let framing = Framing {
            head_request: is_head,
            close: true,
            confirm_keep_alive: false,
        };
        match self.write_response(resp, framing) {
            Ok(()) => After::Close { linger: true },
            Err(e) => {
                log::debug!("{}: writing error response: {e}", self.peer);
                After::Gone
            }
        }
    }

    /// Writes one response: the head built in the reused buffer, small bodies copied behind
    /// it (one write), large ones sent vectored.
    fn write_response(&mut self, resp: &Response, framing: Framing) -> io::Result<()> {
        self.wbuf.clear();
        let with_body = encode_head(&mut self.wbuf, resp, framing);
        if with_body && resp.body.len() > BODY_COPY_BYTES_MAX {
            // Taken out (no allocation) so `write_all*` can borrow the connection; put back
            // after for reuse.
            let wbuf = std::mem::take(&mut self.wbuf);
            let mut slices = [IoSlice::new(&wbuf), IoSlice::new(&resp.body)];
            let written = self.write_all_vectored(&mut slices);
            self.wbuf = wbuf;
            return written;
        }
        if with_body {
            self.wbuf.extend_from_slice(&resp.body);
        }
        let wbuf = std::mem::take(&mut self.wbuf);
        let written = self.write_all(&wbuf);
        self.wbuf = wbuf;
        written
    }

    /// Gives back buffers a large request or response grew, so idle connections stay small.
    fn shrink_buffers(&mut self) {
        if self.rbuf.len() > READ_BUF_BYTES_KEEP {
            self.rbuf = vec![0; READ_BUF_BYTES_INITIAL];
        }
        if self.wbuf.capacity() > WRITE_BUF_BYTES_KEEP {
            self.wbuf = Vec::with_capacity(WRITE_BUF_BYTES_INITIAL);
        }
    }

    /// Half-closes (our FIN follows the response), then, if the client may still be sending,
    /// discards its bytes for a bounded time so the close does not turn into a reset that
    /// could destroy the response in flight.
    fn close(mut self, linger: bool) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let unread = self.hi > self.lo;
        if !(linger || unread || self.peer_sent_more()) {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(LINGER_TIMEOUT_MS);
        let mut discarded = 0usize;
        while discarded < LINGER_BYTES_MAX {
            if Instant::now() >= deadline {
                break;
            }
            self.lo = 0;
            self.hi = 0;
            match self.read_into_rbuf(0, deadline) {
                Ok(n) => discarded += n,
                Err(_) => break,
            }
        }
    }

    /// Whether bytes are waiting in the socket (non-blocking peek on the std socket).
    fn peer_sent_more(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.inner().peek(&mut probe), Ok(n) if n > 0)
    }
}

/// One read that must complete by `deadline`. The deadline is listed with the registry only
/// for the read's duration; if the reaper cut the socket meanwhile, the read (which then saw
/// end-of-file or an error) is reported as a timeout.
fn read_by(
    registration: &mut Registration,
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ReadError> {
    registration.wait_until(deadline);
    let read = read_some(stream, buf);
    if registration.wait_done() {
        read
    } else {
        Err(ReadError::TimedOut)
    }
}

fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, ReadError> {
    loop {
        return match stream.read(buf) {
            Ok(0) => Err(ReadError::Eof),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                Err(ReadError::TimedOut)
            }
            Err(e) => Err(ReadError::Io(e)),
        };
    }
}

/// Client disconnects and timeouts are normal: debug, never error.
fn log_read_end(peer: SocketAddr, doing: &str, e: &ReadError) {
    match e {
        ReadError::Eof => log::debug!("{peer}: closed by client while {doing}"),
        ReadError::TimedOut => log::debug!("{peer}: timed out while {doing}"),
        ReadError::Full => log::debug!("{peer}: read buffer full while {doing}"),
        ReadError::Io(e) => log::debug!("{peer}: {e} while {doing}"),
    }
}
