//! Size limits in O(1) per operation: the array, BLOB, string and map functions that grow a
//! value, re-registered with a length check on the value itself, so that Rhai's own data-size
//! checks can stay off.
//!
//! Owns: [`register`] (called by `sandbox::build_engine` with the engine's profile) and the
//! `ErrorDataTooLarge` errors it raises (public `limit_exceeded` / `size`). Does not own the heap
//! cap (`alloc.rs` and `sandbox.rs`), which bounds everything these checks do not see.
//!
//! Why: with `max_array_size`/`max_map_size`/`max_string_size` set, Rhai re-measures the whole
//! value (recursively) after every native call that returns or mutates it, so building an array
//! of n items by `push` costs O(n²): 10k items 105 ms, 40k 1.09 s, the default 100k past the
//! deadline (bench/NOTES.md). The engines therefore set none of those limits, and the bounds
//! are enforced here instead:
//! - a function that grows a value by an amount it is told (`pad`, `blob(n)`) checks the
//!   resulting length *before* allocating, so no single call can ask for more than the limit
//!   (without this, `a.pad(1e12, 0)` would be one allocation the heap cap sees too late);
//! - a function that adds items (`push`, `insert`, `append`, `+`, `mixin`) checks the
//!   resulting top-level length in O(1).
//!
//! What the length checks do not see is bounded by the heap cap, checked by the allocator on
//! every allocation and acted on at the next operation: the built-in operators Rhai runs without
//! a function lookup (`+` and `+=` on strings and characters, `+=` on arrays and BLOBs), map
//! growth by index or property assignment, nesting (`a = [a]`), and strings grown by conversion
//! functions (`replace`, `to_upper`). Each of those grows a value by at most a factor per
//! operation, so the overshoot past the cap is at most one such step. Lengths are top-level:
//! an array of 1,000 arrays of 1,000 items is within a 100k `array_len_max` and bounded only by
//! the heap cap, where Rhai's recursive count would have refused it.

use rhai::{
    Array, Blob, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map, NativeCallContext,
    Position,
};

use super::contract::{JsonError, SizeCaps, parse_json_capped};
use super::sandbox::EngineProfile;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The error Rhai itself raises for a size limit; `contract.rs` maps it to `limit: size`.
fn too_large(what: &str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorDataTooLarge(what.to_string(), Position::NONE).into()
}

/// Refuses a length over `max`.
#[inline]
fn check_len(len: usize, max: usize, what: &str) -> Res<()> {
    if len > max {
        return Err(too_large(what));
    }
    Ok(())
}

/// A script-given length as `usize`; negative lengths are 0 (Rhai's `pad` does nothing then).
fn requested_len(len: INT) -> usize {
    usize::try_from(len).unwrap_or(if len < 0 { 0 } else { usize::MAX })
}

/// Where `insert` puts an item: Rhai's rule (negative counts from the end, past either end
/// clamps to it).
fn insert_position(length: usize, index: INT) -> usize {
    if index < 0 {
        let back = usize::try_from(index.unsigned_abs()).unwrap_or(usize::MAX);
        length - back.min(length)
    } else {
        usize::try_from(index).map_or(length, |i| i.min(length))
    }
}

/// Registers the checked growth functions for one engine profile. Functions registered on an
/// Engine take precedence over the standard package's functions of the same signature.
pub fn register(engine: &mut Engine, profile: &EngineProfile) {
    register_arrays(engine, profile.array_len_max);
    register_blobs(engine, profile.array_len_max);
    register_strings(engine, profile.string_bytes_max);
    register_maps(engine, profile.map_len_max);
    register_producers(engine, profile);
}

/// Collects `items` into an array, refusing more than `max` before allocating it (counting an
/// iterator over a string allocates nothing).
fn collect_checked<'s, I>(items: I, max: usize) -> Res<Array>
where
    I: Iterator<Item = &'s str> + Clone,
{
    check_len(items.clone().count(), max, ARRAY)?;
    Ok(items.map(|s| Dynamic::from(s.to_string())).collect())
}

/// Where `splice(start, len, …)` cuts: Rhai's rule (a negative start counts from the end and
/// clamps at 0; a start past the end appends; a negative length removes nothing).
fn splice_cut(length: usize, start: INT, len: INT) -> (usize, usize) {
    let start = if start < 0 {
        let back = usize::try_from(start.unsigned_abs()).unwrap_or(usize::MAX);
        length.saturating_sub(back)
    } else {
        usize::try_from(start).map_or(length, |s| s.min(length))
    };
    let len = if len <= 0 {
        0
    } else {
        usize::try_from(len)
            .map_or(usize::MAX, |l| l)
            .min(length - start)
    };
    (start, len)
}

/// The functions that build a new array, BLOB, map or string from another value (no growth
/// by a given amount, so `register_arrays` and friends do not cover them), each refusing a
/// result over the limit as `size`: `to_chars`, `split`/`split_rev` on strings, `to_blob`,
/// `splice` on arrays and BLOBs, and `parse_json` (the app's caps on every string, array and
/// map in it, like `request.json`). They compute what Rhai's own versions compute.
fn register_producers(engine: &mut Engine, profile: &EngineProfile) {
    let array_max = profile.array_len_max;
    engine.register_fn("to_chars", move |s: &str| -> Res<Array> {
        check_len(s.chars().count(), array_max, ARRAY)?;
        Ok(s.chars().map(Dynamic::from).collect())
    });
    engine.register_fn("to_blob", move |s: &str| -> Res<Blob> {
        check_len(s.len(), array_max, BLOB)?;
        Ok(s.as_bytes().to_vec())
    });

    // `split` and `split_rev`: a string with no delimiter in it is one item (Rhai's rule).
    fn whole(s: &ImmutableString) -> Array {
        vec![s.clone().into()]
    }
    fn segments(n: INT) -> usize {
        usize::try_from(n).unwrap_or(usize::MAX)
    }
    engine.register_fn("split", move |s: &mut ImmutableString| -> Res<Array> {
        if s.is_empty() {
            return Ok(whole(s));
        }
        collect_checked(s.split_whitespace(), array_max)
    });
    for rev in [false, true] {
        let name = if rev { "split_rev" } else { "split" };
        engine.register_fn(
            name,
            move |s: &mut ImmutableString, d: &str| -> Res<Array> {
                if s.is_empty() || (!d.is_empty() && !s.contains(d)) {
                    return Ok(whole(s));
                }
                if rev {
                    collect_checked(s.rsplit(d), array_max)
                } else {
                    collect_checked(s.split(d), array_max)
                }
            },
        );
        engine.register_fn(
            name,
            move |s: &mut ImmutableString, d: &str, n: INT| -> Res<Array> {
                if n <= 1 || s.is_empty() || (!d.is_empty() && !s.contains(d)) {
                    return Ok(whole(s));
                }
                if rev {
                    collect_checked(s.rsplitn(segments(n), d), array_max)
                } else {
                    collect_checked(s.splitn(segments(n), d), array_max)
                }
            },
        );
        engine.register_fn(
            name,
            move |s: &mut ImmutableString, d: char| -> Res<Array> {
                if s.is_empty() || !s.contains(d) {
                    return Ok(whole(s));
                }
                if rev {
                    collect_checked(s.rsplit(d), array_max)
                } else {
                    collect_checked(s.split(d), array_max)
                }
            },
        );
        engine.register_fn(
            name,
            move |s: &mut ImmutableString, d: char, n: INT| -> Res<Array> {
                if n <= 1 || s.is_empty() || !s.contains(d) {
                    return Ok(whole(s));
                }
                if rev {
                    collect_checked(s.rsplitn(segments(n), d), array_max)
                } else {
                    collect_checked(s.splitn(segments(n), d), array_max)
                }
            },
        );
    }

    engine.register_fn(
        "splice",
        move |a: &mut Array, start: INT, len: INT, replace: Array| -> Res<()> {
            let (start, len) = splice_cut(a.len(), start, len);
            check_len(a.len() - len + replace.len(), array_max, ARRAY)?;
            if a.is_empty() {
                *a = replace;
            } else {
                a.splice(start..start + len, replace);
            }
            Ok(())
        },
    );
    engine.register_fn(
        "splice",
        move |b: &mut Blob, start: INT, len: INT, replace: Blob| -> Res<()> {
            let (start, len) = splice_cut(b.len(), start, len);
            check_len(b.len() - len + replace.len(), array_max, BLOB)?;
            if b.is_empty() {
                *b = replace;
            } else {
                b.splice(start..start + len, replace);
            }
            Ok(())
        },
    );

    let caps = SizeCaps {
        string_bytes_max: profile.string_bytes_max,
        array_len_max: profile.array_len_max,
        map_len_max: profile.map_len_max,
    };
    engine.register_fn(
        "parse_json",
        move |ctx: NativeCallContext, text: &str| -> Res<Dynamic> {
            match parse_json_capped(text.as_bytes(), caps) {
                Ok(v) => Ok(v),
                Err(JsonError::TooLarge(m)) => Err(EvalAltResult::ErrorDataTooLarge(
                    m.replace("request.json", "parse_json"),
                    ctx.call_position(),
                )
                .into()),
                Err(JsonError::Invalid(m)) => Err(EvalAltResult::ErrorRuntime(
                    format!("parse_json: {m}").into(),
                    ctx.call_position(),
                )
                .into()),
            }
        },
    );
}

const ARRAY: &str = "Size of array";

fn register_arrays(engine: &mut Engine, max: usize) {
    engine.register_fn("push", move |a: &mut Array, item: Dynamic| -> Res<()> {
        check_len(a.len() + 1, max, ARRAY)?;
        a.push(item);
        Ok(())
    });
    engine.register_fn(
        "insert",
        move |a: &mut Array, index: INT, item: Dynamic| -> Res<()> {
            check_len(a.len() + 1, max, ARRAY)?;
            let at = insert_position(a.len(), index);
            a.insert(at, item);
            Ok(())
        },
    );
    engine.register_fn("append", move |a: &mut Array, b: Array| -> Res<()> {
        check_len(a.len() + b.len(), max, ARRAY)?;
        if a.is_empty() {
            *a = b;
        } else {
            a.extend(b);
        }
        Ok(())
    });
    engine.register_fn("+", move |a: Array, b: Array| -> Res<Array> {
        check_len(a.len() + b.len(), max, ARRAY)?;
        if a.is_empty() {
            return Ok(b);
        }
        let mut a = a;
        a.extend(b);
        Ok(a)
    });
    engine.register_fn(
        "pad",
        move |a: &mut Array, len: INT, item: Dynamic| -> Res<()> {
            let len = requested_len(len);
            if len <= a.len() {
                return Ok(());
            }
            check_len(len, max, ARRAY)?;
            a.resize(len, item);
            Ok(())
        },
    );
}

const BLOB: &str = "Size of BLOB";

/// Only the low 8 bits of an integer go into a BLOB (Rhai's rule).
fn byte(value: INT) -> u8 {
    (value & 0xff) as u8
}

fn register_blobs(engine: &mut Engine, max: usize) {
    for name in ["push", "append"] {
        engine.register_fn(name, move |b: &mut Blob, value: INT| -> Res<()> {
            check_len(b.len() + 1, max, BLOB)?;
            b.push(byte(value));
            Ok(())
        });
    }
    engine.register_fn("append", move |b: &mut Blob, other: Blob| -> Res<()> {
        check_len(b.len() + other.len(), max, BLOB)?;
        if b.is_empty() {
            *b = other;
        } else {
            b.extend(other);
        }
        Ok(())
    });
    engine.register_fn("append", move |b: &mut Blob, s: &str| -> Res<()> {
        check_len(b.len() + s.len(), max, BLOB)?;
        b.extend(s.as_bytes());
        Ok(())
    });
    engine.register_fn("append", move |b: &mut Blob, c: char| -> Res<()> {
        let mut buf = [0_u8; 4];
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        check_len(b.len() + bytes.len(), max, BLOB)?;
        b.extend(bytes);
        Ok(())
    });
    engine.register_fn(
        "insert",
        move |b: &mut Blob, index: INT, value: INT| -> Res<()> {
            check_len(b.len() + 1, max, BLOB)?;
            let at = insert_position(b.len(), index);
            b.insert(at, byte(value));
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        move |b: &mut Blob, len: INT, value: INT| -> Res<()> {
            let len = requested_len(len);
            if len <= b.len() {
                return Ok(());
            }
            check_len(len, max, BLOB)?;
            b.resize(len, byte(value));
            Ok(())
        },
    );
    engine.register_fn("blob", move |len: INT| -> Res<Blob> {
        let len = requested_len(len);
        check_len(len, max, BLOB)?;
        Ok(vec![0; len])
    });
    engine.register_fn("blob", move |len: INT, value: INT| -> Res<Blob> {
        let len = requested_len(len);
        check_len(len, max, BLOB)?;
        Ok(vec![byte(value); len])
    });
}

const STRING: &str = "Length of string";

fn register_strings(engine: &mut Engine, max_bytes: usize) {
    // `pad` counts characters; the limit counts bytes. A padded string has at most
    // `len` characters of at most 4 bytes each, so it is checked before growing only when it
    // could not fit, and its true byte length after.
    fn pad_with(s: &mut ImmutableString, len: INT, padding: &str, max_bytes: usize) -> Res<()> {
        if padding.is_empty() {
            return Ok(());
        }
        let len = requested_len(len);
        // At least one byte per character: a request over the limit can never fit.
        check_len(len, max_bytes, STRING)?;
        let mut chars = s.chars().count();
        if len <= chars {
            return Ok(());
        }
        let padding_chars = padding.chars().count();
        let out = s.make_mut();
        while chars < len {
            if chars + padding_chars <= len {
                out.push_str(padding);
                chars += padding_chars;
            } else {
                out.extend(padding.chars().take(len - chars));
                chars = len;
            }
            // The bytes grow with every step: stop as soon as they cross the limit.
            check_len(out.len(), max_bytes, STRING)?;
        }
        Ok(())
    }
    engine.register_fn(
        "pad",
        move |s: &mut ImmutableString, len: INT, c: char| -> Res<()> {
            let mut buf = [0_u8; 4];
            pad_with(s, len, c.encode_utf8(&mut buf), max_bytes)
        },
    );
    engine.register_fn(
        "pad",
        move |s: &mut ImmutableString, len: INT, padding: &str| -> Res<()> {
            pad_with(s, len, padding, max_bytes)
        },
    );
}

const MAP: &str = "Size of object map";

fn register_maps(engine: &mut Engine, max: usize) {
    // The sum of both lengths bounds the merged map: a cheap check that refuses a merge only
    // when both maps together are over the limit even before duplicate keys are counted, then
    // the exact length after.
    fn merge_into(m: &mut Map, other: Map, max: usize) -> Res<()> {
        if m.len() + other.len() > max {
            let new_keys = other.keys().filter(|k| !m.contains_key(*k)).count();
            check_len(m.len() + new_keys, max, MAP)?;
        }
        m.extend(other);
        Ok(())
    }
    for name in ["mixin", "+="] {
        engine.register_fn(name, move |m: &mut Map, other: Map| {
            merge_into(m, other, max)
        });
    }
    engine.register_fn("+", move |m: Map, other: Map| -> Res<Map> {
        let mut m = m;
        merge_into(&mut m, other, max)?;
        Ok(m)
    });
    engine.register_fn("fill_with", move |m: &mut Map, other: Map| -> Res<()> {
        if m.len() + other.len() > max {
            let new_keys = other.keys().filter(|k| !m.contains_key(*k)).count();
            check_len(m.len() + new_keys, max, MAP)?;
        }
        for (k, v) in other {
            m.entry(k).or_insert(v);
        }
        Ok(())
    });
}
