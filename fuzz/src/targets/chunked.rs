//! Target `chunked`: the chunked body decoder (`worker/src/http/chunked.rs`).
//!
//! Checks on every input: the decoder never panics, never writes past `body_bytes_max`, never
//! consumes more than it was given or past the end of the body; feeding the same bytes in
//! random splits (through the direct-read path the connection uses inside chunk data) gives
//! the same result as feeding them at once; and its verdict (served with body and wire length,
//! incomplete, or refused) matches the independent oracle's (`oracle::dechunk`).

use picloud_worker::fuzzing::Dechunker;

use super::{Check, Target, glue};
use crate::oracle::{self, Bounds, Chunks};
use crate::rng::{Rng, input_hash};

/// The decoder's own constants (chunked.rs): size line bytes and size digits.
pub const CHUNK_LINE_BYTES_MAX: usize = 4096;
pub const CHUNK_SIZE_DIGITS_MAX: usize = 15;

pub struct Chunked;

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"0\r\n\r\n",
    b"0",
    b"00000000000000001",
    b"fffffffffffffff",
    b"F",
    b";",
    b";a=b",
    b";a=\"x;y\"",
    b" ",
    b"\t",
    b"X-T: v\r\n",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"1\r\nx\r\n",
    b"-1",
    b"0x1",
    b"+1",
];

impl Target for Chunked {
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        chunked_body(rng, &mut out);
        if rng.one_in(4) {
            let n = rng.below(4);
            glue(rng, TOKENS, n, &mut out);
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> Check {
        let h = input_hash(input);
        let (body_max, trailer_max) =
            [(1 << 20, 65536), (64, 64), (8, 16), (0, 4)][(h % 4) as usize];
        let whole = decode_whole(input, body_max, trailer_max);
        if let Err(f) = check_sane(&whole, input, body_max) {
            return f;
        }
        let split = decode_split(input, body_max, trailer_max, h);
        if outcome_class(&split) != outcome_class(&whole) {
            return Check::Finding(format!(
                "split differs: whole {whole:?}, split {split:?} on {:?}",
                String::from_utf8_lossy(input)
            ));
        }
        let bounds = Bounds {
            headers_max: 0,
            header_bytes_max: trailer_max,
            uri_bytes_max: 0,
            body_bytes_max: body_max,
            chunk_line_bytes_max: CHUNK_LINE_BYTES_MAX,
            chunk_size_digits_max: CHUNK_SIZE_DIGITS_MAX,
        };
        let expected = oracle::dechunk(input, body_max, trailer_max, &bounds);
        if let Some(f) = compare(&whole, &expected, input) {
            return f;
        }
        Check::Ok(format!("{} {}", outcome_class(&whole), body_max))
    }

    fn tokens(&self) -> &'static [&'static [u8]] {
        TOKENS
    }
}

/// What the decoder did with the whole input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Done {
        used: usize,
        body: Vec<u8>,
    },
    /// Needs more bytes; consumed `used` so far.
    More {
        used: usize,
        body_len: usize,
    },
    Refused(u16),
}

fn outcome_class(d: &Decoded) -> String {
    match d {
        Decoded::Done { used, body } => format!("done {used} {}", body.len()),
        Decoded::More { .. } => "more".into(),
        Decoded::Refused(s) => format!("refused {s}"),
    }
}

pub fn decode_whole(input: &[u8], body_max: usize, trailer_max: usize) -> Decoded {
    let mut dec = Dechunker::new(body_max, trailer_max);
    let mut body = Vec::new();
    match dec.decode(input, &mut body) {
        Err(s) => Decoded::Refused(s),
        Ok(used) if dec.is_done() => Decoded::Done { used, body },
        Ok(used) => Decoded::More {
            used,
            body_len: body.len(),
        },
    }
}

/// Feeds the input in pieces as the connection does: unconsumed bytes stay pending, and while
/// inside chunk data with nothing pending, data goes straight into the body.
fn decode_split(input: &[u8], body_max: usize, trailer_max: usize, seed: u64) -> Decoded {
    let mut rng = Rng::new(seed);
    let mut dec = Dechunker::new(body_max, trailer_max);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut used_total = 0;
    loop {
        match dec.decode(&pending, &mut body) {
            Err(s) => return Decoded::Refused(s),
            Ok(used) => {
                pending.drain(..used);
                used_total += used;
            }
        }
        if dec.is_done() {
            return Decoded::Done {
                used: used_total,
                body,
            };
        }
        if fed == input.len() {
            return Decoded::More {
                used: used_total,
                body_len: body.len(),
            };
        }
        let mut n = (1 + rng.below(7)).min(input.len() - fed);
        match dec.data_left() {
            Some(left) if pending.is_empty() => {
                n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[fed..fed + n]);
                dec.data_read(n);
                used_total += n;
            }
            _ => pending.extend_from_slice(&input[fed..fed + n]),
        }
        fed += n;
    }
}

fn check_sane(d: &Decoded, input: &[u8], body_max: usize) -> Result<(), Check> {
    let bad = |what: &str| Err(Check::Finding(format!("insane: {what} {d:?}")));
    match d {
        Decoded::Done { used, body } => {
            if *used > input.len() {
                return bad("consumed more than given");
            }
            if body.len() > body_max {
                return bad("body over the limit");
            }
        }
        Decoded::More { used, body_len } => {
            if *used > input.len() || *body_len > body_max {
                return bad("consumed or wrote too much");
            }
        }
        Decoded::Refused(s) if *s != 400 && *s != 413 => return bad("status"),
        Decoded::Refused(_) => {}
    }
    Ok(())
}

fn compare(ours: &Decoded, oracle: &Chunks, input: &[u8]) -> Option<Check> {
    let agree = match (ours, oracle) {
        (Decoded::Done { used, body }, Chunks::Done { wire_len, body_len }) => {
            used == wire_len && body.len() == *body_len
        }
        (Decoded::Done { .. }, _) | (_, Chunks::Done { .. }) => false,
        // Neither serves a body: the status may differ (a body over the limit found while
        // malformed later), which the summary does not count as a disagreement.
        _ => true,
    };
    (!agree).then(|| {
        Check::Finding(format!(
            "chunked oracle disagrees: ours {ours:?}, oracle {oracle:?} on {:?}",
            String::from_utf8_lossy(input)
        ))
    })
}

/// A chunked body from framing-relevant pieces: sizes (hex, leading zeros, wrong lengths),
/// extensions, data, line ends, trailers.
pub fn chunked_body(rng: &mut Rng, out: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        let len = rng.below(12);
        let declared = if rng.one_in(8) {
            len + rng.below(3)
        } else {
            len
        };
        let mut size = format!("{declared:x}");
        if rng.one_in(6) {
            size = format!("{}{size}", "0".repeat(rng.below(18)));
        }
        if rng.one_in(10) {
            size = size.to_uppercase();
        }
        out.extend_from_slice(size.as_bytes());
        if rng.one_in(5) {
            out.extend_from_slice(rng.pick_b(&[
                &b";a"[..],
                b";a=b",
                b" ;x",
                b"\t;x=\"q\"",
                b";",
                b" ",
                b";\x01",
            ]));
        }
        out.extend_from_slice(line_end(rng));
        for _ in 0..len {
            out.push(if rng.one_in(8) { rng.byte() } else { b'd' });
        }
        out.extend_from_slice(line_end(rng));
    }
    if !rng.one_in(10) {
        out.extend_from_slice(rng.pick_b(&[&b"0"[..], b"000", b"0;e=1"]));
        out.extend_from_slice(line_end(rng));
        for _ in 0..rng.below(3) {
            out.extend_from_slice(rng.pick_b(&[
                &b"X-T: v"[..],
                b"T:",
                b"nocolon",
                b"X: a\x00b",
                b"X:\tv",
            ]));
            out.extend_from_slice(line_end(rng));
        }
        if !rng.one_in(8) {
            out.extend_from_slice(line_end(rng));
        }
    }
}

fn line_end(rng: &mut Rng) -> &'static [u8] {
    if rng.one_in(12) {
        rng.pick_b(&[&b"\n"[..], b"\r", b"", b"\r\r\n"])
    } else {
        b"\r\n"
    }
}
