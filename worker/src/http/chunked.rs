//! Decoding a `Transfer-Encoding: chunked` request body.
//!
//! Owns: the chunk grammar (size line, optional extensions which are ignored, data, CRLF,
//! trailers which are read and discarded) and its bounds: the decoded body against
//! `body_bytes_max`, a size line against [`CHUNK_LINE_BYTES_MAX`], trailers against the head's
//! byte limit. Does not own: reading from the socket or timeouts; the connection feeds bytes in
//! and reads more when the decoder needs them.
//!
//! The size line is parsed here rather than with `httparse::parse_chunk_size`, which accepts
//! an empty size and bare LF inside extensions; both are request smuggling ingredients.

/// Longest chunk size line (hex size plus extensions and CRLF) accepted.
pub(crate) const CHUNK_LINE_BYTES_MAX: usize = 4096;

/// Most hex digits in a chunk size (15 keeps the value far from overflow and 2^60 bytes is
/// past any body limit).
const CHUNK_SIZE_DIGITS_MAX: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// Malformed framing: 400.
    Malformed,
    /// The decoded body would pass `body_bytes_max`: 413.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk size line.
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until the empty line.
    Trailers,
    Done,
}

/// Incremental chunked decoder for one body.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    body_bytes_max: usize,
    trailer_bytes_max: usize,
    trailer_bytes: usize,
    /// Bytes of the pending (incomplete) line already searched for its end, so a trickled
    /// line costs linear time.
    line_scanned: usize,
}

impl ChunkedDecoder {
    pub(crate) fn new(body_bytes_max: usize, trailer_bytes_max: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size,
            body_bytes_max,
            trailer_bytes_max,
            trailer_bytes: 0,
            line_scanned: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes left in the current chunk's data, if the decoder is inside chunk data. The
    /// caller may then read up to that many bytes straight into the body (skipping its read
    /// buffer) and report them with [`data_read`](Self::data_read).
    pub(crate) fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Data(left) => Some(left),
            _ => None,
        }
    }

    /// Records `n` chunk data bytes the caller appended to the body itself (at most
    /// [`data_left`](Self::data_left)).
    pub(crate) fn data_read(&mut self, n: usize) {
        if let State::Data(left) = self.state {
            let left = left.saturating_sub(n as u64);
            self.state = if left == 0 {
                State::DataEnd
            } else {
                State::Data(left)
            };
        }
    }

    /// Decodes as much of `input` as possible, appending data to `body`. Returns the bytes of
    /// `input` consumed; the caller drops them and calls again with more bytes appended to
    /// what was not consumed, until [`is_done`](Self::is_done). Never consumes past the final
    /// CRLF, so pipelined bytes after the body stay in the caller's buffer.
    pub(crate) fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => return Ok(pos),
                State::Size => {
                    let Some(line_len) = self.line(rest, CHUNK_LINE_BYTES_MAX)? else {
                        return Ok(pos);
                    };
                    let size = parse_size_line(&rest[..line_len])?;
                    pos += line_len;
                    if size == 0 {
                        self.state = State::Trailers;
                    } else {
                        let room = self.body_bytes_max.saturating_sub(body.len()) as u64;
                        if size > room {
                            return Err(ChunkError::TooLarge);
                        }
                        self.state = State::Data(size);
                    }
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    // `left` fits in usize: it was checked against body_bytes_max.
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    body.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ChunkError::Malformed);
                    }
                    pos += 2;
                    self.state = State::Size;
                }
                State::Trailers => {
                    let room = self.trailer_bytes_max.saturating_sub(self.trailer_bytes);
                    let Some(line_len) = self.line(rest, room)? else {
                        return Ok(pos);
                    };
                    let line = &rest[..line_len - 2];
                    // Trailer fields are discarded, but must still be field-shaped: no
                    // control bytes (a bare CR or LF would frame differently elsewhere).
                    if line.iter().any(|&b| is_forbidden_control(b)) {
                        return Err(ChunkError::Malformed);
                    }
                    pos += line_len;
                    self.trailer_bytes += line_len;
                    if line.is_empty() {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// Finds a CRLF-terminated line at the start of `rest`; returns its length including the
    /// CRLF, `None` if incomplete. A bare LF, or a line longer than `line_bytes_max`, is
    /// malformed (`TooLarge` would invite a 413 for what is a framing error).
    fn line(&mut self, rest: &[u8], line_bytes_max: usize) -> Result<Option<usize>, ChunkError> {
        let from = self.line_scanned.min(rest.len());
        match rest[from..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                let lf = from + i;
                self.line_scanned = 0;
                if lf == 0 || rest[lf - 1] != b'\r' {
                    return Err(ChunkError::Malformed);
                }
                if lf + 1 > line_bytes_max {
                    return Err(ChunkError::Malformed);
                }
                Ok(Some(lf + 1))
            }
            None => {
                if rest.len() >= line_bytes_max.max(1) {
                    return Err(ChunkError::Malformed);
                }
                self.line_scanned = rest.len();
                Ok(None)
            }
        }
    }
}

/// `1*HEXDIG [ BWS ";" ext ] CRLF`; extensions are ignored but may not hold control bytes.
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let line = &line[..line.len() - 2];
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > CHUNK_SIZE_DIGITS_MAX {
        return Err(ChunkError::Malformed);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = (size << 4) | u64::from(d);
    }
    let rest = &line[digits..];
    let after_ws = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(rest.len());
    let ext = &rest[after_ws..];
    if !ext.is_empty() && ext[0] != b';' {
        return Err(ChunkError::Malformed);
    }
    if after_ws > 0 && ext.is_empty() {
        // Trailing whitespace without an extension is not in the grammar.
        return Err(ChunkError::Malformed);
    }
    if ext.iter().any(|&b| is_forbidden_control(b)) {
        return Err(ChunkError::Malformed);
    }
    Ok(size)
}

/// Control bytes other than HTAB, which no field or extension may carry.
fn is_forbidden_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut dec = ChunkedDecoder::new(max, 1024);
        let mut body = Vec::new();
        let used = dec.decode(input, &mut body)?;
        assert!(dec.is_done(), "not done");
        Ok((body, used))
    }

    #[test]
    fn decodes_with_extensions_and_trailers_and_stops_at_the_end() {
        let input = b"4;name=v\r\nWiki\r\n5 ; x\r\npedia\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        let (body, used) = decode_all(input, 100).expect("decodes");
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&input[used..], b"GET /next");
    }

    #[test]
    fn byte_by_byte_matches_whole() {
        let input = b"A\r\n0123456789\r\n1\r\nx\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new(100, 1024);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for &b in input.iter() {
            pending.push(b);
            let used = dec.decode(&pending, &mut body).expect("decodes");
            pending.drain(..used);
        }
        assert!(dec.is_done());
        assert!(pending.is_empty());
        assert_eq!(body, b"0123456789x");
    }

    #[test]
    fn malformed_and_too_large() {
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"4\nWiki\r\n0\r\n\r\n",
            b"4\r\nWikiXX0\r\n\r\n",
            b"4;a\nb\r\nWiki\r\n0\r\n\r\n",
            b"4 \r\nWiki\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"-1\r\n",
            b"0\r\nBad\x01Trailer\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(bad, 1 << 20).err(),
                Some(ChunkError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_all(b"5\r\nhello\r\n0\r\n\r\n", 4).err(),
            Some(ChunkError::TooLarge)
        );
        assert_eq!(
            decode_all(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 5).err(),
            Some(ChunkError::TooLarge)
        );
    }

    #[test]
    fn data_read_directly_by_the_caller_is_accounted() {
        let mut dec = ChunkedDecoder::new(100, 1024);
        let mut body = Vec::new();
        assert_eq!(dec.decode(b"6\r\nab", &mut body), Ok(5));
        assert_eq!(dec.data_left(), Some(4));
        body.extend_from_slice(b"cdef");
        dec.data_read(4);
        assert_eq!(dec.data_left(), None);
        assert_eq!(dec.decode(b"\r\n0\r\n\r\n", &mut body), Ok(7));
        assert!(dec.is_done());
        assert_eq!(body, b"abcdef");
    }

    /// Random chunked bodies, fed in random splits: never a panic, never past the limit.
    #[test]
    fn random_chunked_input_never_panics() {
        const PIECES: &[&[u8]] = &[
            b"0",
            b"1",
            b"a",
            b"F",
            b"ffffffff",
            b";",
            b"x=y",
            b" ",
            b"\t",
            b"\r\n",
            b"\n",
            b"\r",
            b"abc",
            b"T: v",
            b"\x00",
            b"\xff",
        ];
        let mut rng = crate::http::fuzz::XorShift(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let input = rng.input(PIECES, 16);
            let mut dec = ChunkedDecoder::new(64, 64);
            let mut body = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            for piece in input.chunks(1 + (rng.next() % 5) as usize) {
                pending.extend_from_slice(piece);
                match dec.decode(&pending, &mut body) {
                    Ok(used) => {
                        assert!(used <= pending.len());
                        pending.drain(..used);
                    }
                    Err(_) => break,
                }
                assert!(body.len() <= 64);
            }
        }
    }

    #[test]
    fn trailers_are_bounded() {
        let mut dec = ChunkedDecoder::new(100, 16);
        let mut body = Vec::new();
        let r = dec.decode(b"0\r\nX-Long-Trailer: 0123456789\r\n\r\n", &mut body);
        assert_eq!(r.err(), Some(ChunkError::Malformed));
    }
}
