//! Target `json`: a request body becoming the script's `request.json`
//! (`worker/src/engine/contract.rs`, `parse_json_body`, and back out with `to_json`).
//!
//! Checks on every input, with string/array/map caps chosen by the input's hash: no panic;
//! when serde_json's own `Value` parser (the reference) reads the body and every string,
//! key, array and object is within the caps, the script value written back as JSON equals it
//! (numbers compared as i64, or as f64 where either side is a float); when the reference reads
//! it but a cap is crossed, ours answers the size error; when the reference refuses it, ours
//! gives `()` or a size error (a cap crossed before the syntax error), never a value.

use picloud_core::Limits;
use picloud_worker::fuzzing::json_body;
use serde_json::Value;

use super::{Check, Target, glue};
use crate::rng::{Rng, input_hash};

pub struct Json;

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\uD83D\\uDE00",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-0",
    b"1e400",
    b"-1e-400",
    b"1.5",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"k\"",
    b" ",
    b"\n",
    b"\xff",
    b"\xc3\xa9",
    b"[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]",
];

fn caps_for(h: u64) -> Limits {
    let (s, a, m) = match h % 4 {
        0 => (1 << 20, 100_000, 100_000),
        1 => (8, 4, 4),
        2 => (1, 1, 1),
        _ => (0, 0, 0),
    };
    Limits {
        string_bytes_max: s,
        array_len_max: a,
        map_len_max: m,
        ..Limits::default()
    }
}

impl Target for Json {
    fn generate(&mut self, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        value(rng, &mut out, 0);
        if rng.one_in(10) {
            let n = 1 + rng.below(3);
            glue(rng, TOKENS, n, &mut out);
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> Check {
        let limits = caps_for(input_hash(input));
        let ours = json_body(input, &limits);
        // serde_json's Value parser is the reference; a body of only whitespace is `()`.
        let reference: Option<Value> = if input.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            serde_json::from_slice(input).ok()
        };
        let finding = |what: &str| {
            Check::Finding(format!(
                "{what}: ours {:?}, reference {reference:?} on {:?}",
                ours.as_ref()
                    .map(|o| o.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())),
                String::from_utf8_lossy(input)
            ))
        };
        match (&reference, &ours) {
            (None, Ok(Some(_))) => finding("value from a body the reference refuses"),
            (None, _) => Check::Ok("not json".into()),
            (Some(v), result) => {
                // Caps apply to every value built, including one a later duplicate key
                // replaces, which the reference `Value` no longer shows: scan them all.
                let within = within_caps(v, &limits) && all_within_caps(input, &limits);
                match result {
                    Err(_) if !within => Check::Ok(format!("over caps {}", kind(v))),
                    Err(e) => finding(&format!("size error within the caps ({e})")),
                    Ok(_) if !within => finding("value over the caps accepted"),
                    Ok(None) if v.is_null() => Check::Ok("null".into()),
                    Ok(None) => finding("valid json became ()"),
                    Ok(Some(bytes)) => match serde_json::from_slice::<Value>(bytes) {
                        Ok(back) if same(v, &back) => Check::Ok(format!("ok {}", kind(v))),
                        Ok(_) => finding("round trip differs"),
                        Err(_) => finding("to_json wrote invalid json"),
                    },
                }
            }
        }
    }

    fn tokens(&self) -> &'static [&'static [u8]] {
        TOKENS
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every string, key and array the parse builds is within the caps (duplicates included).
fn all_within_caps(input: &[u8], l: &Limits) -> bool {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    #[derive(Clone, Copy)]
    struct Scan<'l>(&'l Limits);
    impl<'de> DeserializeSeed<'de> for Scan<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("json")
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(true)
        }
        fn visit_str<E>(self, s: &str) -> Result<bool, E> {
            Ok(s.len() <= self.0.string_bytes_max)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let (mut ok, mut n) = (true, 0);
            while let Some(v) = seq.next_element_seed(self)? {
                ok &= v;
                n += 1;
            }
            Ok(ok && n <= self.0.array_len_max)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut ok = true;
            let mut keys = std::collections::BTreeSet::new();
            while let Some(k) = map.next_key::<String>()? {
                ok &= k.len() <= self.0.string_bytes_max;
                ok &= map.next_value_seed(self)?;
                keys.insert(k);
                ok &= keys.len() <= self.0.map_len_max;
            }
            Ok(ok)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(input);
    Scan(l).deserialize(&mut de).unwrap_or(true)
}

fn within_caps(v: &Value, l: &Limits) -> bool {
    match v {
        Value::String(s) => s.len() <= l.string_bytes_max,
        Value::Array(a) => a.len() <= l.array_len_max && a.iter().all(|x| within_caps(x, l)),
        Value::Object(m) => {
            m.len() <= l.map_len_max
                && m.iter()
                    .all(|(k, x)| k.len() <= l.string_bytes_max && within_caps(x, l))
        }
        _ => true,
    }
}

/// Equality with numbers compared as the script sees them: integers that fit i64 stay
/// integers, anything else is an f64.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            // serde_json (without `float_roundtrip`) may read a float a unit in the last
            // place off, so a written-and-read-back float is compared within a few ULPs.
            _ => match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p == q || (p - q).abs() <= p.abs().max(q.abs()) * 1e-15,
                _ => false,
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q)))
        }
        _ => a == b,
    }
}

/// A JSON-ish value: mostly valid, with odd numbers, escapes, duplicates and deep nesting.
fn value(rng: &mut Rng, out: &mut Vec<u8>, depth: usize) {
    let choice = if depth > 6 && !rng.one_in(40) {
        rng.below(5)
    } else {
        rng.below(8)
    };
    match choice {
        0 => out.extend_from_slice(rng.pick_b(&[&b"null"[..], b"true", b"false"])),
        1 => out.extend_from_slice(rng.number().to_string().as_bytes()),
        2 => out.extend_from_slice(rng.pick_b(&[
            &b"-0"[..],
            b"1.5e3",
            b"-1e-7",
            b"1e400",
            b"0.1",
            b"-9223372036854775808",
            b"1E2",
            b"01",
            b"1.",
        ])),
        3 | 4 => string(rng, out),
        5 | 6 => {
            out.push(b'[');
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(b',');
                }
                value(rng, out, depth + 1);
            }
            out.push(b']');
        }
        _ => {
            out.push(b'{');
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(b',');
                }
                string(rng, out);
                out.push(b':');
                value(rng, out, depth + 1);
            }
            out.push(b'}');
        }
    }
    if rng.one_in(30) {
        out.extend_from_slice(rng.pick_b(&[&b" "[..], b"\n", b",", b"]", b"}"]));
    }
}

fn string(rng: &mut Rng, out: &mut Vec<u8>) {
    out.push(b'"');
    for _ in 0..rng.below(12) {
        if rng.one_in(6) {
            out.extend_from_slice(rng.pick_b(&[
                &b"\\n"[..],
                b"\\\"",
                b"\\u00e9",
                b"\\ud83d\\ude00",
                b"\\ud800",
                b"\xc3\xa9",
                b"k",
            ]));
        } else {
            out.push(b'a' + rng.below(3) as u8);
        }
    }
    out.push(b'"');
}
