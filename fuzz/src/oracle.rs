//! An independent, deliberately simple RFC 9112 message-framing oracle for requests. It shares
//! no code with the worker's parser (no httparse either): it splits lines by hand and applies
//! the RFC's rules in the order the RFC states them, so the `head` and `chunked` targets can
//! compare its verdict with the worker's on every input.
//!
//! Owns: the oracle's verdict (a served request with its head and body lengths and
//! keep-alive, not served yet, or refused with a status). Does not own: anything the worker
//! runs.
//!
//! Where RFC 9112/9110 leave a choice, the oracle takes the one PiCloud documents (fuzz/README.md
//! lists them): bare LF accepted as a line end in the head (RFC 9112 2.2 MAY), any number of
//! empty lines before the request line ignored (2.2 SHOULD ignore at least one), obs-fold and
//! whitespace before the first field refused (5.2 / 2.2 MAY reject), other CTLs in field values
//! refused (RFC 9110 5.5 SHOULD), empty elements in a Transfer-Encoding list refused (stricter
//! than RFC 9110 5.6.1), Content-Length lists of equal values accepted (9110 8.6 MAY),
//! Transfer-Encoding plus Content-Length refused (9112 6.3 MAY), Transfer-Encoding in HTTP/1.0
//! refused (6.1 "faulty framing"), transfer codings other than one `chunked` refused (6.3: 501),
//! raw UTF-8 in the request target accepted (RFC 9112 3 SHOULD refuse), authority-form
//! targets refused (not a proxy), and the size bounds (head bytes, header count,
//! target length, body bytes, chunk-size line, trailer bytes) as `Limits` sets them.

/// Bounds the oracle applies, mirroring `picloud_core::Limits` and the decoder's constants.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub headers_max: usize,
    pub header_bytes_max: usize,
    pub uri_bytes_max: usize,
    pub body_bytes_max: usize,
    /// Longest chunk-size line including its CRLF.
    pub chunk_line_bytes_max: usize,
    /// Most hex digits in a chunk size (leading zeros count).
    pub chunk_size_digits_max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// One request is served: its head takes `head_len` bytes (empty lines before it
    /// included), its body `wire_len` bytes on the wire and `body_len` bytes decoded.
    Served {
        head_len: usize,
        wire_len: usize,
        body_len: usize,
        keep_alive: bool,
    },
    /// The bytes end before a request is complete.
    Incomplete,
    /// Refused: the status and why.
    Refused(u16, &'static str),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_vchar(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// field-vchar or SP/HTAB (inside a value), obs-text included.
fn is_field_content(b: u8) -> bool {
    is_vchar(b) || b >= 0x80 || b == b' ' || b == b'\t'
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let mut s = s;
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 5.6.1: split a list on commas, drop empty elements (a recipient MUST ignore a
/// reasonable number of them).
fn list_elements(value: &[u8]) -> Vec<&[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
        .collect()
}

/// Finds the next line of the head starting at `at`. Returns (content end, next line start).
/// A CR not followed by LF is a bare CR: `Err`.
fn head_line(buf: &[u8], at: usize) -> Option<Result<(usize, usize), &'static str>> {
    let mut i = at;
    while i < buf.len() {
        match buf[i] {
            b'\n' => return Some(Ok((i, i + 1))),
            b'\r' => {
                return match buf.get(i + 1) {
                    Some(b'\n') => Some(Ok((i, i + 2))),
                    Some(_) => Some(Err("bare CR")),
                    None => None,
                };
            }
            _ => i += 1,
        }
    }
    None
}

/// RFC 3986 host [":" port] as Host allows it (RFC 9112 3.2); empty is allowed.
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let lit = &rest[..close];
        let ipv6 = lit
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let future = matches!(lit.first(), Some(b'v' | b'V'))
            && lit
                .iter()
                .all(|&b| is_unreserved(b) || b"!$&'()*+,;=:".contains(&b));
        if lit.is_empty() || !(ipv6 || future) {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&[][..], None),
            [b':', port @ ..] => (&[][..], Some(port)),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        }
    };
    let host_ok = host
        .iter()
        .all(|&b| is_unreserved(b) || b"!$&'()*+,;=%".contains(&b));
    host_ok && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// The oracle's verdict on `buf`, the bytes a connection received before it ended.
pub fn frame(buf: &[u8], b: &Bounds) -> Verdict {
    use Verdict::Refused;
    // Empty lines before the request line are ignored.
    let mut at = 0;
    loop {
        match &buf[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [b'\n', ..] => at += 1,
            _ => break,
        }
    }
    // Collect the head's lines up to the empty line.
    let mut lines: Vec<&[u8]> = Vec::new();
    let head_len = loop {
        let Some(line) = head_line(buf, at) else {
            // No complete head: over the bounds is refused, otherwise wait.
            if lines.is_empty() && buf.len() - at > b.uri_bytes_max + 64 {
                return Refused(414, "request line too long");
            }
            if buf.len() > b.header_bytes_max {
                return Refused(431, "head too large");
            }
            return Verdict::Incomplete;
        };
        let (end, next) = match line {
            Ok(l) => l,
            Err(why) => return Refused(400, why),
        };
        if end == at && !lines.is_empty() {
            break next;
        }
        lines.push(&buf[at..end]);
        at = next;
    };

    // Request line: method SP request-target SP HTTP-version, single spaces.
    let request_line = lines[0];
    let parts: Vec<&[u8]> = request_line.split(|&c| c == b' ').collect();
    if parts.len() != 3 {
        return Refused(400, "request line is not three words");
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Refused(400, "method is not a token");
    }
    // Policy: raw non-ASCII bytes in the target (RFC 9112 3: SHOULD answer 400) are accepted
    // when they are UTF-8, as many clients send paths unencoded; they cannot change framing.
    if target.is_empty() || !target.iter().all(|&c| is_vchar(c) || c >= 0x80) {
        return Refused(400, "request target has invalid bytes");
    }
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Refused(400, "HTTP version"),
    };
    if target.len() > b.uri_bytes_max {
        return Refused(414, "request target too long");
    }
    if head_len > b.header_bytes_max {
        return Refused(431, "head too large");
    }
    let origin_form = target[0] == b'/';
    let asterisk = target == b"*" && method == b"OPTIONS";
    let absolute = {
        let lower = target.to_ascii_lowercase();
        (lower.starts_with(b"http://") && lower.len() > 7)
            || (lower.starts_with(b"https://") && lower.len() > 8)
    };
    if !(origin_form || asterisk || absolute) {
        return Refused(400, "unsupported request-target form");
    }
    if std::str::from_utf8(target).is_err() {
        return Refused(400, "target not UTF-8");
    }

    // Fields.
    let fields = &lines[1..];
    if fields.len() > b.headers_max {
        return Refused(431, "too many fields");
    }
    let mut hosts = Vec::new();
    let mut lengths: Vec<&[u8]> = Vec::new();
    let mut codings: Vec<&[u8]> = Vec::new();
    let mut te_seen = false;
    let mut connection: Vec<&[u8]> = Vec::new();
    for line in fields {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Refused(400, "obs-fold or whitespace before a field");
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Refused(400, "field line without a colon");
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Refused(400, "field name is not a token");
        }
        let value = trim_ows(&line[colon + 1..]);
        if !value.iter().all(|&c| is_field_content(c)) {
            return Refused(400, "control byte in a field value");
        }
        let name = name.to_ascii_lowercase();
        match name.as_slice() {
            b"host" => hosts.push(value),
            b"content-length" => lengths.push(value),
            b"transfer-encoding" => {
                te_seen = true;
                // Policy: an empty list element (`, chunked`) is refused, though RFC 9110
                // 5.6.1 says to skip it; PiCloud refuses any Transfer-Encoding value that is
                // not exactly one `chunked` (fuzz/README.md).
                if value.split(|&c| c == b',').any(|e| trim_ows(e).is_empty()) {
                    return Refused(400, "empty Transfer-Encoding element");
                }
                codings.extend(list_elements(value));
            }
            b"connection" => connection.extend(list_elements(value)),
            _ => {}
        }
    }
    if hosts.len() > 1 {
        return Refused(400, "several Host fields");
    }
    if minor == 1 && hosts.is_empty() {
        return Refused(400, "HTTP/1.1 without Host");
    }
    if let Some(h) = hosts.first()
        && !valid_host(h)
    {
        return Refused(400, "invalid Host value");
    }
    let keep_alive = {
        let has = |t: &[u8]| connection.iter().any(|c| c.eq_ignore_ascii_case(t));
        if has(b"close") {
            false
        } else {
            minor == 1 || has(b"keep-alive")
        }
    };

    let body = &buf[head_len..];
    if te_seen {
        if minor == 0 {
            return Refused(400, "Transfer-Encoding in HTTP/1.0");
        }
        if !lengths.is_empty() {
            return Refused(400, "Transfer-Encoding and Content-Length");
        }
        if codings.is_empty() {
            return Refused(400, "empty Transfer-Encoding");
        }
        if !codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        {
            return Refused(400, "final coding is not chunked");
        }
        if codings.len() > 1 {
            // chunked twice is invalid; any other coding is not implemented (501).
            let twice = codings[..codings.len() - 1]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(b"chunked"));
            return Refused(if twice { 400 } else { 501 }, "transfer coding");
        }
        return match dechunk(body, b.body_bytes_max, b.header_bytes_max, b) {
            Chunks::Done { wire_len, body_len } => Verdict::Served {
                head_len,
                wire_len,
                body_len,
                keep_alive,
            },
            Chunks::Incomplete => Verdict::Incomplete,
            Chunks::Refused(s, why) => Refused(s, why),
        };
    }
    let mut length: Option<u128> = None;
    for field in &lengths {
        // Each field is 1*DIGIT, or a list of identical such values.
        for element in field.split(|&c| c == b',').map(trim_ows) {
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                return Refused(400, "invalid Content-Length");
            }
            let digits = element.iter().skip_while(|&&c| c == b'0').count();
            if digits > 20 {
                return Refused(400, "Content-Length out of range");
            }
            let n: u128 = std::str::from_utf8(element)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u128::MAX);
            if n > u128::from(u64::MAX) {
                return Refused(400, "Content-Length out of range");
            }
            if length.is_some_and(|l| l != n) {
                return Refused(400, "different Content-Length values");
            }
            length = Some(n);
        }
    }
    let n = length.unwrap_or(0);
    if n > b.body_bytes_max as u128 {
        return Refused(413, "body too large");
    }
    let n = n as usize;
    if body.len() < n {
        return Verdict::Incomplete;
    }
    Verdict::Served {
        head_len,
        wire_len: n,
        body_len: n,
        keep_alive,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunks {
    Done { wire_len: usize, body_len: usize },
    Incomplete,
    Refused(u16, &'static str),
}

/// A CRLF-ended line at `at` (chunk lines take no bare LF). Returns (content end, next).
fn crlf_line(buf: &[u8], at: usize) -> Option<Result<(usize, usize), &'static str>> {
    let lf = at + buf[at..].iter().position(|&c| c == b'\n')?;
    if lf == at || buf[lf - 1] != b'\r' {
        return Some(Err("chunk line without CRLF"));
    }
    Some(Ok((lf - 1, lf + 1)))
}

/// Chunk extensions after the size: `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, value a
/// token or a quoted string. Checked only for the bytes: no CTL but HTAB, since a recipient
/// ignores the extensions it does not know (RFC 9112 7.1.1) and the line end is what frames.
fn valid_extensions(ext: &[u8]) -> bool {
    let ext = match ext.iter().position(|&c| c != b' ' && c != b'\t') {
        Some(i) => &ext[i..],
        None => return ext.is_empty(),
    };
    ext.first() == Some(&b';') && ext.iter().all(|&c| c == b'\t' || (c >= 0x20 && c != 0x7f))
}

/// RFC 9112 7.1: chunks, last chunk, trailer section, final CRLF.
pub fn dechunk(buf: &[u8], body_max: usize, trailer_max: usize, b: &Bounds) -> Chunks {
    use Chunks::Refused;
    let mut at = 0;
    let mut body_len = 0usize;
    loop {
        let Some(line) = crlf_line(buf, at) else {
            if buf.len() - at >= b.chunk_line_bytes_max {
                return Refused(400, "chunk-size line too long");
            }
            return Chunks::Incomplete;
        };
        let (end, next) = match line {
            Ok(l) => l,
            Err(why) => return Refused(400, why),
        };
        if next - at > b.chunk_line_bytes_max {
            return Refused(400, "chunk-size line too long");
        }
        let size_line = &buf[at..end];
        let digits = size_line
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if digits == 0 {
            return Refused(400, "chunk size is not hex");
        }
        if digits > b.chunk_size_digits_max {
            return Refused(400, "chunk size has too many digits");
        }
        if !valid_extensions(&size_line[digits..]) {
            return Refused(400, "chunk extension");
        }
        let size =
            u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).unwrap_or("x"), 16)
                .unwrap_or(u64::MAX);
        at = next;
        if size == 0 {
            break;
        }
        if size > (body_max - body_len) as u64 {
            return Refused(413, "chunked body too large");
        }
        let size = size as usize;
        if buf.len() - at < size {
            return Chunks::Incomplete;
        }
        at += size;
        body_len += size;
        match &buf[at..] {
            [b'\r', b'\n', ..] => at += 2,
            [] | [b'\r'] => return Chunks::Incomplete,
            _ => return Refused(400, "chunk data not followed by CRLF"),
        }
    }
    // Trailer section: field lines (discarded here) bounded like a head, then CRLF.
    let trailers_start = at;
    loop {
        let Some(line) = crlf_line(buf, at) else {
            if buf.len() - trailers_start >= trailer_max {
                return Refused(400, "trailers too large");
            }
            return Chunks::Incomplete;
        };
        let (end, next) = match line {
            Ok(l) => l,
            Err(why) => return Refused(400, why),
        };
        if next - trailers_start > trailer_max {
            return Refused(400, "trailers too large");
        }
        let field = &buf[at..end];
        at = next;
        if field.is_empty() {
            return Chunks::Done {
                wire_len: at,
                body_len,
            };
        }
        if !field
            .iter()
            .all(|&c| c == b'\t' || (c >= 0x20 && c != 0x7f))
        {
            return Refused(400, "control byte in a trailer");
        }
    }
}
