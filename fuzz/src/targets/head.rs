//! Target `head`: the request head parser and the framing decisions that follow it
//! (`worker/src/http/head.rs`, the body rules of `conn.rs`, `chunked.rs`).
//!
//! Checks on every input, under one of four limit profiles chosen by the input's hash:
//! - the parser never panics and answers only 400/414/431 (413 comes from the body rules);
//! - feeding the bytes in random splits reaches the same decision as one read (the
//!   incremental scan must not change a verdict);
//! - differential: the verdict of the whole exchange (served with head length, body length
//!   on the wire and decoded, and keep-alive; or not served) equals the independent RFC 9112
//!   oracle's (`oracle.rs`). Both refusing, or both waiting, counts as agreement whatever the
//!   status; the summary counts status differences separately.

use picloud_core::Limits;
use picloud_worker::fuzzing::{Dechunker, Framing, HeadReader, HeadVerdict};

use super::chunked::{CHUNK_LINE_BYTES_MAX, CHUNK_SIZE_DIGITS_MAX, chunked_body};
use super::{Check, Target};
use crate::oracle::{self, Bounds, Verdict};
use crate::rng::{Rng, input_hash};

#[derive(Default)]
pub struct Head {
    /// Both refused, with different statuses (informational, printed at exit is not needed:
    /// it is part of the signature so such inputs are kept in the pool).
    pub status_differences: u64,
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b" ",
    b"  ",
    b"\t",
    b":",
    b",",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"\x80",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"chunked",
    b"Host: ",
    b"Connection: ",
    b"close",
    b"keep-alive",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"0",
    b"5",
    b"18446744073709551616",
    b"Expect: 100-continue",
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"%",
    b"?",
    b"#",
    b"http://",
    b"*",
];

/// Limit profiles: the defaults and three small ones that inputs can cross.
fn limits_for(h: u64) -> Limits {
    let (headers_max, header_bytes_max, uri_bytes_max, body_bytes_max) = match h % 4 {
        0 => {
            let d = Limits::default();
            (
                d.headers_max,
                d.header_bytes_max,
                d.uri_bytes_max,
                d.body_bytes_max,
            )
        }
        1 => (8, 1024, 128, 1024),
        2 => (2, 64, 16, 8),
        _ => (4, 200, 40, 64),
    };
    Limits {
        headers_max,
        header_bytes_max,
        uri_bytes_max,
        body_bytes_max,
        ..Limits::default()
    }
}

impl Target for Head {
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        request(rng, &mut out);
        if rng.one_in(6) {
            request(rng, &mut out);
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> Check {
        let h = input_hash(input);
        let limits = limits_for(h);
        let whole = HeadReader::default().poll(input, &limits);
        if let HeadVerdict::Refused(s) = whole
            && ![400, 414, 431].contains(&s)
        {
            return Check::Finding(format!("head status: {s}"));
        }
        if let HeadVerdict::Complete { head_bytes, .. } = whole
            && head_bytes > input.len()
        {
            return Check::Finding("head longer than input".into());
        }
        // Trickled: the same decision, whatever the read sizes.
        let trickled = trickle(input, &limits, h);
        let class = |v: &HeadVerdict| match v {
            HeadVerdict::Complete { head_bytes, .. } => format!("complete {head_bytes}"),
            HeadVerdict::Partial => "partial".into(),
            HeadVerdict::Refused(_) => "refused".into(),
        };
        // One designed difference: the scanner parses again only once a blank line may have
        // arrived, so a head that is already malformed but not yet ended is refused when it
        // ends (or at the header limit or timeout) rather than at once. Refused-whole but
        // still-partial-trickled is that, not a disagreement.
        let deferred = matches!(
            (&whole, &trickled),
            (HeadVerdict::Refused(_), HeadVerdict::Partial)
        );
        if !deferred && class(&trickled) != class(&whole) {
            return Check::Finding(format!(
                "trickle differs: whole {whole:?}, trickled {trickled:?} on {:?}",
                String::from_utf8_lossy(input)
            ));
        }
        let ours = exchange(input, &whole, &limits);
        let bounds = Bounds {
            headers_max: limits.headers_max,
            header_bytes_max: limits.header_bytes_max,
            uri_bytes_max: limits.uri_bytes_max,
            body_bytes_max: limits.body_bytes_max,
            chunk_line_bytes_max: CHUNK_LINE_BYTES_MAX,
            chunk_size_digits_max: CHUNK_SIZE_DIGITS_MAX,
        };
        let expected = oracle::frame(input, &bounds);
        let agree = match (&ours, &expected) {
            (Verdict::Served { .. }, _) | (_, Verdict::Served { .. }) => ours == expected,
            _ => true,
        };
        if !agree {
            let direction = match (&ours, &expected) {
                (Verdict::Served { .. }, Verdict::Served { .. }) => "framing differs",
                (Verdict::Served { .. }, _) => "ours serves, oracle does not",
                _ => "oracle serves, ours does not",
            };
            return Check::Finding(format!(
                "{direction}: ours {ours:?}, oracle {expected:?} on {:?}",
                String::from_utf8_lossy(input)
            ));
        }
        let sig = match (&ours, &expected) {
            (Verdict::Refused(a, _), Verdict::Refused(b, why)) if a != b => {
                self.status_differences += 1;
                format!("status {a} vs {b} {why}")
            }
            (Verdict::Refused(a, _), Verdict::Refused(_, why)) => format!("refused {a} {why}"),
            (v, _) => format!("{:?}", std::mem::discriminant(v)),
        };
        Check::Ok(sig)
    }

    fn tokens(&self) -> &'static [&'static [u8]] {
        TOKENS
    }
}

/// Feeds prefixes of growing length to one scanner, as reads arrive, until it decides.
fn trickle(input: &[u8], limits: &Limits, seed: u64) -> HeadVerdict {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut reader = HeadReader::default();
    let mut end = 0;
    loop {
        end = (end + 1 + rng.below(9)).min(input.len());
        let v = reader.poll(&input[..end], limits);
        if v != HeadVerdict::Partial || end == input.len() {
            return v;
        }
    }
}

/// Our verdict on the whole exchange: the head's, then the body rules as `conn.rs` applies
/// them (declared length against the limit before reading, chunked through the decoder).
fn exchange(input: &[u8], head: &HeadVerdict, limits: &Limits) -> Verdict {
    let (head_len, framing, keep_alive) = match head {
        HeadVerdict::Complete {
            head_bytes,
            framing,
            keep_alive,
            ..
        } => (*head_bytes, *framing, *keep_alive),
        HeadVerdict::Partial => return Verdict::Incomplete,
        HeadVerdict::Refused(s) => return Verdict::Refused(*s, "ours"),
    };
    let rest = &input[head_len..];
    let served = |wire_len, body_len| Verdict::Served {
        head_len,
        wire_len,
        body_len,
        keep_alive,
    };
    match framing {
        Framing::Empty => served(0, 0),
        Framing::Length(n) => match usize::try_from(n) {
            Ok(n) if n <= limits.body_bytes_max => {
                if rest.len() < n {
                    Verdict::Incomplete
                } else {
                    served(n, n)
                }
            }
            _ => Verdict::Refused(413, "ours"),
        },
        Framing::Chunked => {
            let mut dec = Dechunker::new(limits.body_bytes_max, limits.header_bytes_max);
            let mut body = Vec::new();
            match dec.decode(rest, &mut body) {
                Err(s) => Verdict::Refused(s, "ours"),
                Ok(used) if dec.is_done() => served(used, body.len()),
                Ok(_) => Verdict::Incomplete,
            }
        }
    }
}

/// One request from framing-relevant pieces.
fn request(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.one_in(10) {
        out.extend_from_slice(rng.pick_b(&[&b"\r\n"[..], b"\n", b"\r", b"\r\n\r\n", b" "]));
    }
    let method: &[u8] = if rng.one_in(10) {
        rng.pick_b(&[&b"get"[..], b"G T", b"", b"GE\x00T", b"PO(ST", b"X-CUSTOM~"])
    } else {
        rng.pick_b(&[
            &b"GET"[..],
            b"POST",
            b"HEAD",
            b"PUT",
            b"OPTIONS",
            b"DELETE",
            b"CONNECT",
        ])
    };
    out.extend_from_slice(method);
    out.extend_from_slice(space(rng));
    let target: &[u8] = rng.pick_b(&[
        &b"/"[..],
        b"/a/b?c=d",
        b"/h",
        b"*",
        b"http://h/p?q",
        b"HTTPS://h",
        b"http://",
        b"h:80",
        b"/%zz",
        b"/a#f",
        b"/\xc3\xa9",
        b"/\xff",
        b"/a\x00b",
        b"/a\x7f",
        b"a",
        b"/very/long/path/that/crosses/the/small/uri/limits/of/the/profiles/xxxxxxxx",
    ]);
    out.extend_from_slice(target);
    out.extend_from_slice(space(rng));
    out.extend_from_slice(if rng.one_in(8) {
        rng.pick_b(&[
            &b"HTTP/2.0"[..],
            b"http/1.1",
            b"HTTP/1.10",
            b"HTTP/1.",
            b"HTTP/1.1 ",
            b"HTTP/0.9",
            b"",
        ])
    } else {
        rng.pick_b(&[&b"HTTP/1.1"[..], b"HTTP/1.0"])
    });
    out.extend_from_slice(eol(rng));
    let mut chunked = false;
    let mut length = None;
    for _ in 0..rng.below(6) {
        let (name, value): (&[u8], Vec<u8>) = match rng.below(9) {
            0 | 1 => (
                b"Host",
                rng.pick_b(&[
                    &b"x"[..],
                    b"",
                    b"a b",
                    b"[::1]:80",
                    b"x:abc",
                    b"h.example:8080",
                    b"x\x01",
                    b"@",
                ])
                .to_vec(),
            ),
            2 | 3 => {
                let n = rng.below(20);
                length = Some(n);
                let v = match rng.below(10) {
                    0 => format!("{n}, {n}"),
                    1 => format!("{n},{}", n + 1),
                    2 => format!(" {n} "),
                    3 => format!("+{n}"),
                    4 => "-1".into(),
                    5 => "18446744073709551616".into(),
                    6 => format!("00{n}"),
                    7 => String::new(),
                    8 => format!("{n},"),
                    _ => n.to_string(),
                };
                (b"Content-Length", v.into_bytes())
            }
            4 | 5 => {
                chunked = true;
                (
                    b"Transfer-Encoding",
                    rng.pick_b(&[
                        &b"chunked"[..],
                        b" chunked ",
                        b"Chunked",
                        b"chunked, chunked",
                        b"gzip, chunked",
                        b"chunked,",
                        b", chunked",
                        b"identity",
                        b"chunked\x00",
                        b"",
                        b"chunked;q=1",
                    ])
                    .to_vec(),
                )
            }
            6 => (
                b"Connection",
                rng.pick_b(&[
                    &b"close"[..],
                    b"keep-alive",
                    b"Close, foo",
                    b"",
                    b"keep-alive, close",
                    b"closed",
                ])
                .to_vec(),
            ),
            7 => (
                rng.pick_b(&[
                    &b"Content-Length "[..],
                    b" Host",
                    b"Transfer_Encoding",
                    b"X",
                    b"",
                    b"X\x00Y",
                    b"Expect",
                    b"\tX",
                ]),
                rng.pick_b(&[
                    &b"v"[..],
                    b"100-continue",
                    b"a\x00b",
                    b"a\rb",
                    b"\x80\xff",
                    b" v\t",
                ])
                .to_vec(),
            ),
            _ => (b"X-Other", b"v".to_vec()),
        };
        out.extend_from_slice(name);
        out.extend_from_slice(rng.pick_b(&[&b": "[..], b":", b" : ", b":\t"]));
        out.extend_from_slice(&value);
        out.extend_from_slice(eol(rng));
    }
    out.extend_from_slice(eol(rng));
    if chunked && !rng.one_in(4) {
        chunked_body(rng, out);
    } else if let Some(n) = length {
        let n = if rng.one_in(5) { rng.below(n + 3) } else { n };
        out.extend(std::iter::repeat_n(b'b', n));
    }
}

fn space(rng: &mut Rng) -> &'static [u8] {
    if rng.one_in(15) {
        rng.pick_b(&[&b"  "[..], b"\t", b""])
    } else {
        b" "
    }
}

fn eol(rng: &mut Rng) -> &'static [u8] {
    if rng.one_in(15) {
        rng.pick_b(&[&b"\n"[..], b"\r", b"\r\r\n", b"\n\r"])
    } else {
        b"\r\n"
    }
}
