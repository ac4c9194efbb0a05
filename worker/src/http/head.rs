//! Parsing one request head (request line and headers) with `httparse`, and the framing rules
//! that follow from it.
//!
//! Owns: the head limits (header count, header bytes, URI bytes), strict `Content-Length`,
//! `Transfer-Encoding`, `Host`, `Connection` and `Expect` rules, request-target forms, and the
//! incremental scan that keeps a trickling client at linear cost. Does not own: any I/O, body
//! bytes, timeouts or the body size limit (the connection checks the declared length).

use std::mem::MaybeUninit;
use std::net::SocketAddr;

use httparse::{Header, Status};

use super::Request;

/// Header slots kept on the coroutine stack; more (a raised `headers_max`) are allocated per
/// request. 64 slots of 32 bytes is 2 KiB of a 32 KiB stack.
const HEADER_SLOTS_ON_STACK: usize = 64;

/// Method, two spaces, `HTTP/1.x` and the line end around the request target: a first line
/// without a line end after `uri_bytes_max` plus this many bytes is over the URI limit.
const REQUEST_LINE_SLACK_BYTES: usize = 64;

/// The bounds a head is checked against (copied from `picloud_core::Limits`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub headers_max: usize,
    pub header_bytes_max: usize,
    pub uri_bytes_max: usize,
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    Empty,
    /// `Content-Length` bytes (not yet checked against the body limit).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete, valid request head.
#[derive(Debug)]
pub(crate) struct Head {
    /// The request without its body.
    pub request: Request,
    /// Bytes of the buffer the head used (including leading empty lines).
    pub head_bytes: usize,
    pub framing: BodyFraming,
    /// Whether the client allows the connection to stay open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// A `HEAD` request: the response carries no body bytes.
    pub is_head: bool,
}

/// Why a head is refused; each maps to one status the front end answers before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// 400: malformed line or headers, bad framing headers, unsupported version.
    Bad(&'static str),
    /// 414: request target longer than `uri_bytes_max`.
    UriTooLong,
    /// 431: more than `headers_max` headers or more than `header_bytes_max` bytes.
    HeadersTooLarge,
}

impl HeadError {
    pub(crate) fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
        }
    }
}

/// Incremental head reader state for one request: how far the buffer was already scanned for
/// the blank line that ends the head.
#[derive(Debug, Default)]
pub(crate) struct HeadScanner {
    /// Bytes of the buffer already scanned (0: nothing seen yet).
    scanned: usize,
    /// The first line's end was seen (so the URI limit check is done by the parser).
    line_seen: bool,
}

impl HeadScanner {
    /// Looks at the unparsed bytes (which start with this request and only ever grow between
    /// calls). Returns the head once complete, `Ok(None)` if more bytes are needed.
    pub(crate) fn poll(
        &mut self,
        buf: &[u8],
        limits: &HeadLimits,
        peer: Option<SocketAddr>,
    ) -> Result<Option<Head>, HeadError> {
        // Fast path: the first look always parses, since a head usually arrives in one read.
        // Afterwards only parse again once the new bytes may hold the blank line ending the
        // head, so a client sending one byte at a time costs linear, not quadratic, time.
        let first_look = self.scanned == 0;
        let end_possible =
            first_look || has_blank_line(&buf[self.scanned.saturating_sub(3).min(buf.len())..]);
        let scan_from = self.scanned;
        self.scanned = buf.len();
        if end_possible && let Some(head) = parse(buf, limits, peer)? {
            return Ok(Some(head));
        }
        if !self.line_seen {
            let start = leading_empty_line_bytes(buf);
            let from = scan_from.max(start).min(buf.len());
            if buf[from..].contains(&b'\n') {
                self.line_seen = true;
            } else if buf.len() - start > limits.uri_bytes_max + REQUEST_LINE_SLACK_BYTES {
                return Err(HeadError::UriTooLong);
            }
        }
        if buf.len() > limits.header_bytes_max {
            return Err(HeadError::HeadersTooLarge);
        }
        Ok(None)
    }
}

fn leading_empty_line_bytes(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// Whether `window` holds a line end followed by an empty line (`\n\n` or `\n\r\n`).
fn has_blank_line(window: &[u8]) -> bool {
    window.windows(2).any(|w| w == b"\n\n") || window.windows(3).any(|w| w == b"\n\r\n")
}

/// Parses a head that may be complete. `Ok(None)`: incomplete.
fn parse(
    buf: &[u8],
    limits: &HeadLimits,
    peer: Option<SocketAddr>,
) -> Result<Option<Head>, HeadError> {
    // A header line takes at least 3 bytes (`a:\n`), so more slots than that could never be
    // filled within header_bytes_max: this bounds the allocation a huge headers_max would cause.
    let slots_len = limits.headers_max.min(limits.header_bytes_max / 3 + 1);
    let mut on_stack = [const { MaybeUninit::<Header<'_>>::uninit() }; HEADER_SLOTS_ON_STACK];
    let mut on_heap: Vec<MaybeUninit<Header<'_>>>;
    let slots: &mut [MaybeUninit<Header<'_>>] = if slots_len <= HEADER_SLOTS_ON_STACK {
        &mut on_stack[..slots_len]
    } else {
        on_heap = Vec::with_capacity(slots_len);
        on_heap.resize_with(slots_len, MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, slots) {
        Ok(Status::Complete(head_bytes)) => build(&req, head_bytes, limits, peer).map(Some),
        Ok(Status::Partial) => match req.path {
            Some(path) if path.len() > limits.uri_bytes_max => Err(HeadError::UriTooLong),
            _ => Ok(None),
        },
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::HeadersTooLarge),
        Err(httparse::Error::Version) => Err(HeadError::Bad("unsupported HTTP version")),
        Err(_) => Err(HeadError::Bad("malformed request line or header")),
    }
}

fn build(
    req: &httparse::Request<'_, '_>,
    head_bytes: usize,
    limits: &HeadLimits,
    peer: Option<SocketAddr>,
) -> Result<Head, HeadError> {
    // httparse fills all three on Complete; treat a gap as malformed rather than trusting it.
    let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Bad("incomplete request line"));
    };
    if target.len() > limits.uri_bytes_max {
        return Err(HeadError::UriTooLong);
    }
    if head_bytes > limits.header_bytes_max {
        return Err(HeadError::HeadersTooLarge);
    }
    let (path, query) = split_target(method, target)?;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding_seen = false;
    let mut hosts = 0usize;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HeadError::Bad("conflicting Content-Length values"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Exactly one `chunked`: any other coding (or chunked twice) leaves the body
            // length unknowable, which is the classic smuggling vector. Deliberately stricter
            // than RFC 9110 5.6.1, which says to accept empty list elements (`, chunked`):
            // a value two recipients might read differently is refused (fuzz/README.md).
            if transfer_encoding_seen || !trim_ows(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Bad("unsupported Transfer-Encoding"));
            }
            transfer_encoding_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            // RFC 9112 3.2: a Host value that is not `uri-host [":" port]` is a 400, like a
            // missing or repeated one (found by the fuzz harness's framing oracle).
            if !is_valid_host(trim_ows(h.value)) {
                return Err(HeadError::Bad("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim_ows) {
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = trim_ows(h.value).eq_ignore_ascii_case(b"100-continue");
        }
        headers.push((
            name.to_ascii_lowercase(),
            String::from_utf8_lossy(h.value).into_owned(),
        ));
    }

    if version_minor == 1 && hosts == 0 {
        return Err(HeadError::Bad("missing Host header"));
    }
    if hosts > 1 {
        return Err(HeadError::Bad("several Host headers"));
    }
    if chunked && content_length.is_some() {
        return Err(HeadError::Bad("both Content-Length and Transfer-Encoding"));
    }
    if chunked && version_minor == 0 {
        // RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing.
        return Err(HeadError::Bad("Transfer-Encoding in HTTP/1.0"));
    }
    let framing = match (chunked, content_length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::Empty,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if version_minor == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    Ok(Head {
        is_head: method == "HEAD",
        request: Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            version_minor,
            headers,
            body: Vec::new(),
            peer,
        },
        head_bytes,
        framing,
        keep_alive,
        expect_continue: expect_continue && version_minor == 1,
    })
}

/// Splits a request target into path and query. Accepts origin form (`/p?q`), absolute form
/// (`http://host/p?q`, which HTTP/1.1 servers must accept) and `*` for OPTIONS.
fn split_target<'a>(method: &str, target: &'a str) -> Result<(&'a str, &'a str), HeadError> {
    let origin = if target.starts_with('/') {
        target
    } else if target == "*" && method == "OPTIONS" {
        return Ok(("*", ""));
    } else if let Some(rest) = strip_scheme(target) {
        // After the authority comes the path; `http://host?q` has an empty path, meaning `/`.
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            Some(i) => return Ok(("/", &rest[i + 1..])),
            None => return Ok(("/", "")),
        }
    } else {
        return Err(HeadError::Bad("unsupported request target"));
    };
    Ok(match origin.split_once('?') {
        Some((p, q)) => (p, q),
        None => (origin, ""),
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if target.len() > scheme.len()
            && target.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            return Some(&target[scheme.len()..]);
        }
    }
    None
}

/// `uri-host [":" port]` (RFC 3986): a bracketed IP literal or a reg-name of unreserved,
/// sub-delims and `%`, then an optional port of digits. Empty is allowed (RFC 9112 3.2: an
/// authority-less target sends an empty Host).
fn is_valid_host(value: &[u8]) -> bool {
    fn reg_name_byte(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b)
    }
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end) => {
                let inside = &literal[..end];
                // IPv6address (hex digits, `:`, `.` for an embedded IPv4) or IPvFuture
                // (`v` HEXDIG "." then unreserved, sub-delims and `:`), loosely.
                let ok = match inside.first() {
                    Some(b'v' | b'V') => inside.iter().all(|&b| reg_name_byte(b) || b == b':'),
                    Some(_) => inside
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
                    None => false,
                };
                let after = &literal[end + 1..];
                match after.split_first() {
                    None => (ok, &b""[..]),
                    Some((b':', port)) => (ok, port),
                    Some(_) => (false, &b""[..]),
                }
            }
            None => (false, &b""[..]),
        },
        None => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (
                value[..colon].iter().all(|&b| reg_name_byte(b)),
                &value[colon + 1..],
            ),
            None => (value.iter().all(|&b| reg_name_byte(b)), &b""[..]),
        },
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

/// Strict `Content-Length`: a comma-separated list of decimal digit strings, all equal (RFC
/// 9110 8.6 allows the list form for identical values). No sign, no spaces inside a number,
/// no empty element, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let mut result: Option<u64> = None;
    for part in value.split(|&b| b == b',').map(trim_ows) {
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Bad("invalid Content-Length"));
        }
        let mut n: u64 = 0;
        for &d in part {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(HeadError::Bad("Content-Length overflows"))?;
        }
        if result.is_some_and(|prev| prev != n) {
            return Err(HeadError::Bad("conflicting Content-Length values"));
        }
        result = Some(n);
    }
    result.ok_or(HeadError::Bad("invalid Content-Length"))
}

/// Trims optional whitespace (spaces and tabs) on both sides.
fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let Some(start) = start else { return &[] };
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Whether a header value holds `token` in its comma-separated list (case-insensitive).
pub(crate) fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        headers_max: 8,
        header_bytes_max: 512,
        uri_bytes_max: 64,
    };

    fn poll_all(bytes: &[u8]) -> Result<Option<Head>, HeadError> {
        HeadScanner::default().poll(bytes, &LIMITS, None)
    }

    #[test]
    fn host_values_follow_uri_host_and_port() {
        for good in [
            &b""[..],
            b"x",
            b"h.example:8080",
            b"[::1]",
            b"[::ffff:1.2.3.4]:1",
            b"[v1.a:b]",
            b"a%20b",
        ] {
            assert!(is_valid_host(good), "{good:?}");
        }
        for bad in [
            &b"a b"[..],
            b"x:abc",
            b"[::!]",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"h/p",
            b"@",
            b"x:80:90",
        ] {
            assert!(!is_valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"42"), Ok(42));
        assert_eq!(parse_content_length(b" 7 , 7"), Ok(7));
        for bad in [
            &b""[..],
            b"abc",
            b"-1",
            b"+5",
            b"5 5",
            b"5,",
            b"5, 6",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert!(parse_content_length(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trickled_head_completes_once_and_matches_whole_parse() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n";
        let mut scanner = HeadScanner::default();
        let mut done = None;
        for end in 1..=raw.len() {
            match scanner.poll(&raw[..end], &LIMITS, None) {
                Ok(Some(head)) => {
                    assert_eq!(end, raw.len());
                    done = Some(head);
                }
                Ok(None) => {}
                Err(e) => panic!("unexpected {e:?} at {end}"),
            }
        }
        let head = done.expect("complete head");
        assert_eq!(head.head_bytes, raw.len());
        assert_eq!(head.request.path, "/a");
        assert_eq!(head.request.query, "b=1");
        assert_eq!(head.request.headers.len(), 2);
        assert!(head.keep_alive);
    }

    #[test]
    fn long_first_line_is_414_before_it_ends() {
        let mut raw = b"GET /".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 200));
        let mut scanner = HeadScanner::default();
        assert!(matches!(scanner.poll(&raw[..10], &LIMITS, None), Ok(None)));
        assert_eq!(
            scanner.poll(&raw, &LIMITS, None).err(),
            Some(HeadError::UriTooLong)
        );
    }

    #[test]
    fn target_forms() {
        assert_eq!(split_target("GET", "/p?q=1"), Ok(("/p", "q=1")));
        assert_eq!(split_target("GET", "http://h/p?q"), Ok(("/p", "q")));
        assert_eq!(split_target("GET", "HTTPS://h"), Ok(("/", "")));
        assert_eq!(split_target("GET", "http://h?x"), Ok(("/", "x")));
        assert_eq!(split_target("OPTIONS", "*"), Ok(("*", "")));
        assert!(split_target("GET", "*").is_err());
        assert!(split_target("CONNECT", "h:443").is_err());
    }

    #[test]
    fn framing_rules() {
        let te_cl = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(poll_all(te_cl), Err(HeadError::Bad(_))));
        let no_host = b"GET / HTTP/1.1\r\n\r\n";
        assert!(matches!(poll_all(no_host), Err(HeadError::Bad(_))));
        let http10 = b"GET / HTTP/1.0\r\n\r\n";
        let head = poll_all(http10).ok().flatten().expect("head");
        assert!(!head.keep_alive);
        let http10_ka = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert!(poll_all(http10_ka).ok().flatten().expect("head").keep_alive);
        let close = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\n\r\n";
        assert!(!poll_all(close).ok().flatten().expect("head").keep_alive);
    }

    /// Random heads built from framing-relevant pieces: the scanner must never panic, and
    /// whatever it accepts must fit the limits.
    #[test]
    fn random_heads_never_panic() {
        const PIECES: &[&[u8]] = &[
            b"GET ",
            b"POST ",
            b"HEAD ",
            b"/",
            b"a",
            b"?",
            b"http://h",
            b"*",
            b" HTTP/1.1",
            b" HTTP/1.0",
            b" HTTP/2.0",
            b"\r\n",
            b"\n",
            b"\r",
            b"Host: x",
            b"Content-Length: ",
            b"5",
            b"-",
            b",",
            b"Transfer-Encoding: chunked",
            b"Connection: close",
            b"Expect: 100-continue",
            b":",
            b" ",
            b"\t",
            b"\x00",
            b"\x7f",
            b"\xff",
            b"\xc3\xa9",
        ];
        let mut rng = crate::http::fuzz::XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let buf = rng.input(PIECES, 24);
            let mut scanner = HeadScanner::default();
            let cut = (rng.next() as usize) % (buf.len() + 1);
            let _ = scanner.poll(&buf[..cut], &LIMITS, None);
            if let Ok(Some(head)) = scanner.poll(&buf, &LIMITS, None) {
                assert!(head.head_bytes <= buf.len());
                assert!(head.request.headers.len() <= LIMITS.headers_max);
                assert!(head.request.path.len() <= LIMITS.uri_bytes_max);
            }
        }
    }

    #[test]
    fn tokens_and_trim() {
        assert!(has_token("Upgrade, Close", "close"));
        assert!(!has_token("closed", "close"));
        assert_eq!(trim_ows(b" \tab \t"), b"ab");
        assert_eq!(trim_ows(b"   "), b"");
    }
}
