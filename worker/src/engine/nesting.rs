//! Bounded replacements for the Rhai functions that recurse over nested values: printing
//! (`print`, `debug`, `to_string`, `to_debug`, string interpolation), equality (`==`, `!=`,
//! and through them `in`, `contains`, `index_of`) and `to_json`, for arrays and object maps.
//!
//! Owns: [`VALUE_NESTING_MAX`] and the overrides, registered on every Engine by
//! `sandbox::build_engine` (functions registered on an Engine take precedence over the standard
//! package's). Does not own: anything else about values.
//!
//! Why: none of Rhai's limits bounds how deeply values nest (each level is one element), and its
//! formatter and equality recurse through the function dispatcher at about 1.5 KB of stack per
//! level. An array nested 45k deep (buildable within the 30 s maximum deadline) overflowed a
//! 64 MiB engine stack while being printed, which aborts the whole process. These versions
//! measure the nesting first, without recursion, and refuse values nested deeper than
//! [`VALUE_NESTING_MAX`] with a `depth` limit error; below it they format and compare exactly as
//! Rhai does (leaves are still formatted and compared by Rhai's own functions).
//!
//! Rhai's remaining recursions over nested values (cloning, dropping) use well under 200 bytes
//! of stack per level, so the engine stack covers them.

use std::fmt::Write as _;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, NativeCallContext};

use super::contract::{ScriptFailure, to_json_capped};
use picloud_core::LimitKind;

/// Deepest nesting of arrays and maps that may be printed, compared or turned into JSON.
pub const VALUE_NESTING_MAX: usize = 256;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Registers the overrides on an Engine whose strings are at most `string_bytes_max` bytes.
pub fn register(engine: &mut Engine, string_bytes_max: usize) {
    for name in ["print", "to_string", "debug", "to_debug"] {
        engine.register_fn(
            name,
            |ctx: NativeCallContext, a: &mut Array| -> Res<ImmutableString> {
                let v = Dynamic::from_array(std::mem::take(a));
                let r = format_checked(&ctx, &v);
                *a = v.into_array().unwrap_or_default();
                r
            },
        );
        engine.register_fn(
            name,
            |ctx: NativeCallContext, m: &mut Map| -> Res<ImmutableString> {
                let v = Dynamic::from_map(std::mem::take(m));
                let r = format_checked(&ctx, &v);
                *m = v.try_cast::<Map>().unwrap_or_default();
                r
            },
        );
    }
    // The first argument is a reference to the script's own variable: take it out to view it
    // as a Dynamic, and always put it back.
    fn array_eq(ctx: NativeCallContext, a: &mut Array, b: Array) -> Res<bool> {
        let left = Dynamic::from_array(std::mem::take(a));
        let r = equals_checked(&ctx, &left, &Dynamic::from_array(b));
        *a = left.into_array().unwrap_or_default();
        r
    }
    fn map_eq(ctx: NativeCallContext, a: &mut Map, b: Map) -> Res<bool> {
        let left = Dynamic::from_map(std::mem::take(a));
        let r = equals_checked(&ctx, &left, &Dynamic::from_map(b));
        *a = left.try_cast::<Map>().unwrap_or_default();
        r
    }
    engine.register_fn("==", array_eq);
    engine.register_fn("!=", |ctx: NativeCallContext, a: &mut Array, b: Array| {
        array_eq(ctx, a, b).map(|eq| !eq)
    });
    engine.register_fn("==", map_eq);
    engine.register_fn("!=", |ctx: NativeCallContext, a: &mut Map, b: Map| {
        map_eq(ctx, a, b).map(|eq| !eq)
    });
    // The JSON text is a string like any other: at most `string_bytes_max` bytes, refused as
    // a `size` limit as soon as the writer gets there.
    engine.register_fn("to_json", move |m: &mut Map| -> Res<String> {
        let v = Dynamic::from_map(std::mem::take(m));
        let r = to_json_capped(&v, string_bytes_max);
        *m = v.try_cast::<Map>().unwrap_or_default();
        match r {
            Ok(bytes) => Ok(String::from_utf8(bytes).unwrap_or_default()),
            Err(ScriptFailure::Limit(LimitKind::Depth)) => Err(too_deep()),
            Err(other) => Err(other.into_eval("to_json", rhai::Position::NONE)),
        }
    });
}

fn too_deep() -> Box<EvalAltResult> {
    EvalAltResult::ErrorStackOverflow(rhai::Position::NONE).into()
}

/// Whether `v` nests arrays/maps more than `max` levels deep. Recursive, but never deeper than
/// `max` frames whatever the value's real depth, so it is safe on any value.
pub fn nests_deeper_than(v: &Dynamic, max: usize) -> bool {
    let is_container = |x: &Dynamic| x.is_array() || x.is_map();
    if !is_container(v) {
        return false;
    }
    if max == 0 {
        return true;
    }
    if let Ok(a) = v.as_array_ref() {
        return a
            .iter()
            .filter(|x| is_container(x))
            .any(|x| nests_deeper_than(x, max - 1));
    }
    if let Ok(m) = v.as_map_ref() {
        return m
            .values()
            .filter(|x| is_container(x))
            .any(|x| nests_deeper_than(x, max - 1));
    }
    false
}

fn format_checked(ctx: &NativeCallContext, v: &Dynamic) -> Res<ImmutableString> {
    if nests_deeper_than(v, VALUE_NESTING_MAX) {
        return Err(too_deep());
    }
    let mut out = String::new();
    format_value(ctx, v, &mut out);
    Ok(out.into())
}

/// Rhai's format: `[a, b]` and `#{"k": v}`, elements in their `to_debug` form.
fn format_value(ctx: &NativeCallContext, v: &Dynamic, out: &mut String) {
    if let Ok(a) = v.as_array_ref() {
        out.push('[');
        for (i, x) in a.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            format_value(ctx, x, out);
        }
        out.push(']');
    } else if let Ok(m) = v.as_map_ref() {
        out.push_str("#{");
        for (i, (k, x)) in m.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{:?}: ", k.as_str());
            format_value(ctx, x, out);
        }
        out.push('}');
    } else {
        // A leaf: Rhai's (or a custom type's) own `to_debug`, as Rhai's formatter does.
        let mut leaf = v.clone();
        match ctx.call_native_fn_raw("to_debug", true, &mut [&mut leaf]) {
            Ok(s) if s.is_string() => out.push_str(&s.into_immutable_string().unwrap_or_default()),
            _ => {
                let _ = write!(out, "{v:?}");
            }
        }
    }
}

fn equals_checked(ctx: &NativeCallContext, a: &Dynamic, b: &Dynamic) -> Res<bool> {
    // The comparison descends only where both sides nest, so bounding one side bounds it.
    if nests_deeper_than(a, VALUE_NESTING_MAX) {
        return Err(too_deep());
    }
    equals(ctx, a, b)
}

/// Rhai's equality: same length and pairwise `==`; a missing `==` between values of different
/// types is `false`, between values of the same type an error.
fn equals(ctx: &NativeCallContext, a: &Dynamic, b: &Dynamic) -> Res<bool> {
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        if x.len() != y.len() {
            return Ok(false);
        }
        for (p, q) in x.iter().zip(y.iter()) {
            if !equals(ctx, p, q)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        if x.len() != y.len() {
            return Ok(false);
        }
        for (k, p) in x.iter() {
            match y.get(k) {
                Some(q) if equals(ctx, p, q)? => {}
                _ => return Ok(false),
            }
        }
        return Ok(true);
    }
    if (a.is_array() || a.is_map()) != (b.is_array() || b.is_map()) {
        return Ok(false);
    }
    let (mut p, mut q) = (a.clone(), b.clone());
    match ctx.call_native_fn_raw("==", true, &mut [&mut p, &mut q]) {
        Ok(r) => Ok(r.as_bool().unwrap_or(false)),
        Err(e) => match *e {
            EvalAltResult::ErrorFunctionNotFound(ref sig, ..)
                if sig.starts_with("==") && a.type_id() != b.type_id() =>
            {
                Ok(false)
            }
            _ => Err(e),
        },
    }
}
