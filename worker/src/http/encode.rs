//! Encoding a response head into bytes: status line, `date`, the handler's headers and the
//! framing headers the front end owns (`content-length`, `connection`).
//!
//! Owns: reason phrases, which statuses carry no body, dropping handler headers that would
//! break framing or split the response (CR/LF in a value), and the per-thread cache of the
//! formatted `date` second (computed lazily per response; no timer ticks it). Does not own:
//! writing to the socket or deciding whether the connection closes.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Response;

/// How one response is framed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// The request was HEAD: headers as for GET, no body bytes.
    pub head_request: bool,
    /// The connection closes after this response: send `connection: close`.
    pub close: bool,
    /// An HTTP/1.0 client asked for keep-alive: confirm it with `connection: keep-alive`.
    pub confirm_keep_alive: bool,
}

/// Whether a status may carry a body (and so a `content-length`).
pub(crate) fn status_has_body(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// Appends the response head to `out`. Returns whether the body bytes must follow.
pub(crate) fn encode_head(out: &mut Vec<u8>, resp: &Response, framing: Framing) -> bool {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    push_date(out);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        if !is_token(name.as_bytes()) || !is_field_value(value.as_bytes()) {
            log::debug!("dropping invalid response header {name:?}");
            continue;
        }
        // Framing is ours: a handler's copy would contradict what we send.
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("connection")
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let has_body = status_has_body(resp.status);
    if has_body {
        // HEAD gets the length a GET would have had.
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, resp.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if framing.close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if framing.confirm_keep_alive {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    has_body && !framing.head_request && !resp.body.is_empty()
}

/// The reason phrase of a status; empty (allowed by RFC 9112) for unusual ones.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Field values may hold visible bytes, spaces, tabs and obs-text; never CR, LF, NUL or other
/// controls (they would split the response).
fn is_field_value(s: &[u8]) -> bool {
    s.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` is 29 bytes.
const HTTP_DATE_BYTES: usize = 29;

thread_local! {
    // The formatted date of the last second a response was written in on this thread. Read and
    // written without yielding, so a coroutine moving between threads cannot observe it torn.
    static DATE_CACHE: Cell<(u64, [u8; HTTP_DATE_BYTES])> =
        const { Cell::new((u64::MAX, [0; HTTP_DATE_BYTES])) };
}

fn push_date(out: &mut Vec<u8>) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = DATE_CACHE.with(|cache| {
        let (cached_secs, text) = cache.get();
        if cached_secs == secs {
            return text;
        }
        let text = format_http_date(secs);
        cache.set((secs, text));
        text
    });
    out.extend_from_slice(&text);
}

/// IMF-fixdate of a Unix time (RFC 9110 5.6.7).
fn format_http_date(secs: u64) -> [u8; HTTP_DATE_BYTES] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; HTTP_DATE_BYTES];
    let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    out[5..7].copy_from_slice(&two(day));
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    out[12..14].copy_from_slice(&two(year / 100));
    out[14..16].copy_from_slice(&two(year % 100));
    out[16] = b' ';
    out[17..19].copy_from_slice(&two(secs_of_day / 3600));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(secs_of_day / 60 % 60));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(secs_of_day % 60));
    out[25..].copy_from_slice(b" GMT");
    out
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_http_date(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            &format_http_date(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            &format_http_date(4_102_444_799),
            b"Thu, 31 Dec 2099 23:59:59 GMT"
        );
    }

    #[test]
    fn head_drops_framing_and_invalid_headers() {
        let resp = Response::new(200, "text/plain", "hi")
            .with_header("content-length", "99")
            .with_header("x-evil", "a\r\nset-cookie: b")
            .with_header("bad name", "v")
            .with_header("x-ok", "1");
        let mut out = Vec::new();
        let body = encode_head(
            &mut out,
            &resp,
            Framing {
                head_request: false,
                close: true,
                confirm_keep_alive: false,
            },
        );
        assert!(body);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ndate: "));
        assert!(text.contains("\r\ncontent-type: text/plain\r\nx-ok: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"));
        assert!(!text.contains("99") && !text.contains("evil") && !text.contains("bad name"));
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
