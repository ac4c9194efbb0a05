//! The script SDK: the functions every script of an app can call, scoped to that app.
//!
//! Owns: the `kv::`, `log::`, `env::`, `time::`, `crypto::`, `base64::` and `events::`
//! namespaces plus `uuid()` and `sdk_version()` (API.md), registered once on every engine as
//! static modules; the per-invocation state they work on ([`Invocation`], a thread-local set by
//! the pool for the length of one run: the app, its log lines, the event depth); and
//! [`Services`], the node's handles the SDK calls into (the KV store, the event submitter).
//!
//! Every function is bounded: KV by [`KvLimits`] (checked by the store), log lines by
//! `log_lines_max` / `log_line_bytes_max` (extra lines are counted, not kept), events by
//! `event_depth_max` and the pool's bounded queue (a full queue is an error the emitting
//! script sees), values in and out by the app's size caps.
//!
//! Does not own: storage (the `KvStore` behind [`Services::kv`]), invocation records (the pool
//! builds them from [`Invocation::finish`]), or what a triggered script runs on (the pool).

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use picloud_core::services::{KvLimits, KvStore, LogLine};
use picloud_core::{CatalogApp, LimitKind, Limits};
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FuncRegistration, INT, ImmutableString, Module,
    NativeCallContext,
};
use sha2::{Digest, Sha256};

use super::contract::{self, ScriptFailure, SizeCaps};
use crate::metrics::{self, KvOp};

/// The SDK's version, as `sdk_version()` and `/v1/health` report it. Bumped when a function is
/// added or changes.
pub const SDK_VERSION: &str = "1.0";

/// The node's handles the SDK calls into. Shared by every engine thread.
#[derive(Default)]
pub struct Services {
    /// The KV store; `None` makes every `kv::` call fail with a clear error.
    pub kv: Option<Arc<dyn KvStore>>,
    /// Queues a triggered script; set once the pool exists.
    pub events: OnceLock<Arc<dyn EventSubmit>>,
}

/// Queues the scripts an event triggers. Implemented by the pool.
pub trait EventSubmit: Send + Sync {
    /// Queues one run of each script `app` has for event `name`, at `depth`, without
    /// blocking. Returns how many were queued, or why not (queue full, depth).
    fn emit(
        &self,
        app: &Arc<CatalogApp>,
        name: &str,
        payload: serde_json::Value,
        depth: usize,
    ) -> Result<usize, String>;
}

/// One run's SDK state.
pub struct Invocation {
    app: Arc<CatalogApp>,
    services: Arc<Services>,
    limits: Limits,
    lines: Vec<LogLine>,
    lines_dropped: usize,
    /// How many events deep this run is (0 for HTTP and cron).
    depth: usize,
}

thread_local! {
    static CURRENT: RefCell<Option<Invocation>> = const { RefCell::new(None) };
}

/// Starts a run's SDK state on this thread.
pub fn begin(app: Arc<CatalogApp>, services: Arc<Services>, depth: usize) {
    let limits = app.limits.clone();
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Invocation {
            app,
            services,
            limits,
            lines: Vec::new(),
            lines_dropped: 0,
            depth,
        })
    });
}

/// Ends the run's SDK state and returns its log lines (with a note of any dropped ones).
/// Idempotent (returns nothing the second time), so it is safe on every exit path.
pub fn finish() -> Vec<LogLine> {
    CURRENT.with(|c| match c.borrow_mut().take() {
        None => Vec::new(),
        Some(mut inv) => {
            if inv.lines_dropped > 0 {
                inv.lines.push(LogLine {
                    level: "warn".into(),
                    message: format!(
                        "{} more log lines not kept (log_lines_max = {})",
                        inv.lines_dropped, inv.limits.log_lines_max
                    ),
                });
            }
            inv.lines
        }
    })
}

type Res<T> = Result<T, Box<EvalAltResult>>;

fn error(ctx: &NativeCallContext, msg: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.into()),
        ctx.call_position(),
    ))
}

/// Runs `f` on the current invocation; outside one (compile checks), an error.
fn with_current<T>(ctx: &NativeCallContext, f: impl FnOnce(&mut Invocation) -> Res<T>) -> Res<T> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(inv) => f(inv),
        None => Err(error(ctx, "the SDK is only available while a script runs")),
    })
}

/// The current app, KV handle and limits, copied out so no borrow is held across a store call.
fn kv_handle(ctx: &NativeCallContext) -> Res<(Arc<dyn KvStore>, String, Limits)> {
    with_current(ctx, |inv| match &inv.services.kv {
        Some(kv) => Ok((kv.clone(), inv.app.name.clone(), inv.limits.clone())),
        None => Err(error(ctx, "kv: no key-value store on this node")),
    })
}

/// A script value as JSON (same rules as a JSON response body), at most `bytes_max` bytes of
/// it. A limit hit on the way (a value nested too deep, JSON over `bytes_max`) is raised as that
/// limit (`limit_exceeded`), not as a script error; `what` names the call for the message.
fn to_value(
    ctx: &NativeCallContext,
    what: &str,
    v: &Dynamic,
    bytes_max: usize,
) -> Res<serde_json::Value> {
    let bytes = contract::to_json_capped(v, bytes_max).map_err(|f| match f {
        ScriptFailure::Limit(LimitKind::Size) => EvalAltResult::ErrorDataTooLarge(
            format!("{what}: value over {bytes_max} bytes as JSON"),
            ctx.call_position(),
        )
        .into(),
        other => other.into_eval(what, ctx.call_position()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| error(ctx, format!("{what}: {e}")))
}

/// A stored JSON value back as a script value, within the app's size caps: a value over them
/// is a `size` limit, like an oversized `request.json`.
fn from_value(ctx: &NativeCallContext, v: &serde_json::Value, limits: &Limits) -> Res<Dynamic> {
    let bytes = serde_json::to_vec(v).map_err(|e| error(ctx, format!("kv: {e}")))?;
    contract::parse_json_body(&bytes, SizeCaps::of(limits)).map_err(|m| {
        EvalAltResult::ErrorDataTooLarge(format!("kv::get: {m}"), ctx.call_position()).into()
    })
}

/// Runs one store call for `op`, counting it and its duration in the node's metrics (here,
/// where the SDK meets the `KvStore`, so every store implementation is measured the same way).
fn measured<T, E>(op: KvOp, call: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let started = std::time::Instant::now();
    let result = call();
    metrics::count_kv(op, started, result.is_err());
    result
}

fn kv_get(ctx: NativeCallContext, key: &str) -> Res<Dynamic> {
    let (kv, app, limits) = kv_handle(&ctx)?;
    match measured(KvOp::Get, || kv.kv_get(&app, key, picloud_core::now_ms())) {
        Ok(Some(v)) => from_value(&ctx, &v, &limits),
        Ok(None) => Ok(Dynamic::UNIT),
        Err(e) => Err(error(&ctx, format!("kv::get: {e}"))),
    }
}

fn kv_set(ctx: &NativeCallContext, key: &str, value: &Dynamic, ttl_secs: Option<INT>) -> Res<()> {
    let ttl_ms = match ttl_secs {
        None => None,
        Some(s) if s > 0 => Some(u64::try_from(s).unwrap_or(u64::MAX).saturating_mul(1000)),
        Some(_) => return Err(error(ctx, "kv::set: ttl_secs must be positive")),
    };
    let (kv, app, limits) = kv_handle(ctx)?;
    // The store refuses a value over `kv_value_bytes_max` too (as invalid input); checking
    // here makes it the `size` limit it is, and stops the conversion as soon as it is over.
    let value = to_value(ctx, "kv::set", value, limits.kv_value_bytes_max)?;
    measured(KvOp::Set, || {
        kv.kv_set(
            &app,
            key,
            &value,
            ttl_ms,
            picloud_core::now_ms(),
            &KvLimits::of(&limits),
        )
    })
    .map_err(|e| error(ctx, format!("kv::set: {e}")))
}

fn kv_delete(ctx: NativeCallContext, key: &str) -> Res<bool> {
    let (kv, app, _) = kv_handle(&ctx)?;
    measured(KvOp::Delete, || {
        kv.kv_delete(&app, key, picloud_core::now_ms())
    })
    .map_err(|e| error(&ctx, format!("kv::delete: {e}")))
}

fn kv_list(ctx: NativeCallContext, prefix: &str) -> Res<Array> {
    let (kv, app, limits) = kv_handle(&ctx)?;
    // Never more keys than an array may hold.
    let keys = measured(KvOp::List, || {
        kv.kv_list(&app, prefix, limits.array_len_max, picloud_core::now_ms())
    })
    .map_err(|e| error(&ctx, format!("kv::list: {e}")))?;
    Ok(keys.into_iter().map(Dynamic::from).collect())
}

fn kv_incr(ctx: NativeCallContext, key: &str, by: INT) -> Res<INT> {
    let (kv, app, limits) = kv_handle(&ctx)?;
    measured(KvOp::Incr, || {
        kv.kv_incr(
            &app,
            key,
            by,
            picloud_core::now_ms(),
            &KvLimits::of(&limits),
        )
    })
    .map_err(|e| error(&ctx, format!("kv::incr: {e}")))
}

fn log_line(ctx: &NativeCallContext, level: &str, msg: &Dynamic) -> Res<()> {
    let text = if msg.is_string() {
        msg.clone().into_string().unwrap_or_default()
    } else {
        msg.to_string()
    };
    with_current(ctx, |inv| {
        if inv.lines.len() >= inv.limits.log_lines_max {
            inv.lines_dropped += 1;
            return Ok(());
        }
        let mut message = text;
        let max = inv.limits.log_line_bytes_max;
        if message.len() > max {
            let mut cut = max;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        inv.lines.push(LogLine {
            level: level.to_string(),
            message,
        });
        Ok(())
    })
}

fn env_get(ctx: NativeCallContext, name: &str) -> Res<Dynamic> {
    with_current(&ctx, |inv| {
        Ok(inv
            .app
            .env
            .get(name)
            .map_or(Dynamic::UNIT, |v| Dynamic::from(v.to_string())))
    })
}

fn events_emit(ctx: NativeCallContext, name: &str, payload: Dynamic) -> Res<INT> {
    let (app, services, depth, max, payload_bytes_max) = with_current(&ctx, |inv| {
        Ok((
            inv.app.clone(),
            inv.services.clone(),
            inv.depth,
            inv.limits.event_depth_max,
            inv.limits.body_bytes_max,
        ))
    })?;
    // A payload is what a triggered run gets instead of a request body: as large at most.
    let payload = to_value(&ctx, "events::emit", &payload, payload_bytes_max)?;
    if depth >= max {
        return Err(error(
            &ctx,
            format!("events::emit: events nested deeper than event_depth_max ({max})"),
        ));
    }
    let Some(submit) = services.events.get() else {
        return Err(error(&ctx, "events::emit: events are not available here"));
    };
    submit
        .emit(&app, name, payload, depth + 1)
        .map(|n| INT::try_from(n).unwrap_or(INT::MAX))
        .map_err(|why| error(&ctx, format!("events::emit: {why}")))
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Whether `a` and `b` are the same bytes, in time that depends only on their lengths: a
/// script comparing a signature it computed with one a client sent must not leak, through
/// how fast a mismatch is answered, how many leading characters were right. Lengths are public
/// anyway (a hex digest's length is fixed), so different lengths answer `false` at once.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A registration carrying parameter names and types (the last entry is the return type) and
/// a doc comment: Rhai's metadata, printed by `picloud defs`. Rhai cannot see names or types
/// through `set_into_module`, so without this the definitions would read `fn get(_: ?)`.
/// Only the `defs` build keeps metadata (see `defs.rs`); nodes register the bare name.
#[cfg(feature = "defs")]
fn sdk_fn(name: &str, params: &[&str], doc: &str) -> FuncRegistration {
    FuncRegistration::new(name)
        .with_params_info(params)
        .with_comments([format!("/// {doc}")])
}

#[cfg(not(feature = "defs"))]
fn sdk_fn(name: &str, _params: &[&str], _doc: &str) -> FuncRegistration {
    FuncRegistration::new(name)
}

/// Base64 of `bytes`, refused as a `size` limit before encoding when the text would be longer
/// than `string_bytes_max` (4 characters per 3 bytes: a string at the limit encodes to more).
fn base64_encode(ctx: &NativeCallContext, bytes: &[u8], string_bytes_max: usize) -> Res<String> {
    let encoded_len = bytes.len().div_ceil(3).saturating_mul(4);
    if encoded_len > string_bytes_max {
        return Err(EvalAltResult::ErrorDataTooLarge(
            format!("base64::encode: {encoded_len} bytes of base64, over the string limit"),
            ctx.call_position(),
        )
        .into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Registers the SDK on `engine`, whose strings are at most `string_bytes_max` bytes.
pub fn register(engine: &mut Engine, string_bytes_max: usize) {
    let mut kv = Module::new();
    sdk_fn(
        "get",
        &["key: &str", "Dynamic"],
        "The value stored under `key`, or `()`.",
    )
    .set_into_module(&mut kv, kv_get);
    sdk_fn(
        "set",
        &["key: &str", "value: Dynamic", "()"],
        "Stores `value` (JSON-shaped) under `key`.",
    )
    .set_into_module(
        &mut kv,
        |ctx: NativeCallContext, key: &str, value: Dynamic| kv_set(&ctx, key, &value, None),
    );
    sdk_fn(
        "set",
        &["key: &str", "value: Dynamic", "ttl_secs: i64", "()"],
        "Stores `value` under `key` for `ttl_secs` seconds.",
    )
    .set_into_module(
        &mut kv,
        |ctx: NativeCallContext, key: &str, value: Dynamic, ttl: INT| {
            kv_set(&ctx, key, &value, Some(ttl))
        },
    );
    sdk_fn(
        "delete",
        &["key: &str", "bool"],
        "Deletes `key`; whether it existed.",
    )
    .set_into_module(&mut kv, kv_delete);
    sdk_fn(
        "list",
        &["prefix: &str", "Array"],
        "The keys starting with `prefix`, sorted.",
    )
    .set_into_module(&mut kv, kv_list);
    sdk_fn(
        "incr",
        &["key: &str", "by: i64", "i64"],
        "Adds `by` to the integer under `key` (atomic); the new value.",
    )
    .set_into_module(&mut kv, kv_incr);
    engine.register_static_module("kv", kv.into());

    let mut log = Module::new();
    for level in ["info", "warn", "error"] {
        sdk_fn(
            level,
            &["message: Dynamic", "()"],
            "Adds a line to the invocation's log.",
        )
        .set_into_module(&mut log, move |ctx: NativeCallContext, msg: Dynamic| {
            log_line(&ctx, level, &msg)
        });
    }
    engine.register_static_module("log", log.into());

    let mut env = Module::new();
    sdk_fn(
        "get",
        &["name: &str", "Dynamic"],
        "The app's variable `name` (a string), or `()`.",
    )
    .set_into_module(&mut env, env_get);
    engine.register_static_module("env", env.into());

    let mut time = Module::new();
    sdk_fn("now_ms", &["i64"], "Milliseconds since the Unix epoch.")
        .set_into_module(&mut time, || -> INT {
            INT::try_from(picloud_core::now_ms()).unwrap_or(INT::MAX)
        });
    engine.register_static_module("time", time.into());

    let mut crypto = Module::new();
    sdk_fn(
        "sha256_hex",
        &["data: &str", "&str"],
        "SHA-256 of the string's bytes, lower-case hex.",
    )
    .set_into_module(&mut crypto, |s: &str| hex_sha256(s.as_bytes()));
    sdk_fn(
        "hmac_sha256_hex",
        &["key: &str", "data: &str", "&str"],
        "HMAC-SHA256 of `data` with `key`, lower-case hex.",
    )
    .set_into_module(
        &mut crypto,
        |ctx: NativeCallContext, key: &str, s: &str| -> Res<String> {
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .map_err(|e| error(&ctx, format!("crypto::hmac_sha256_hex: {e}")))?;
            mac.update(s.as_bytes());
            Ok(hex::encode(mac.finalize().into_bytes()))
        },
    );
    sdk_fn(
        "constant_time_eq",
        &["a: &str", "b: &str", "bool"],
        "Whether `a` and `b` are the same bytes, in time independent of where they differ.",
    )
    .set_into_module(&mut crypto, |a: &str, b: &str| constant_time_eq(a, b));
    engine.register_static_module("crypto", crypto.into());

    let mut b64 = Module::new();
    sdk_fn(
        "encode",
        &["data: &str", "&str"],
        "Standard base64 of the string's bytes.",
    )
    .set_into_module(&mut b64, move |ctx: NativeCallContext, s: &str| {
        base64_encode(&ctx, s.as_bytes(), string_bytes_max)
    });
    sdk_fn(
        "encode",
        &["data: Blob", "&str"],
        "Standard base64 of the bytes.",
    )
    .set_into_module(&mut b64, move |ctx: NativeCallContext, b: rhai::Blob| {
        base64_encode(&ctx, &b, string_bytes_max)
    });
    sdk_fn(
        "decode",
        &["text: &str", "Dynamic"],
        "Decodes standard base64: a string when the bytes are UTF-8, else a blob.",
    )
    .set_into_module(
        &mut b64,
        |ctx: NativeCallContext, s: &str| -> Res<Dynamic> {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| error(&ctx, format!("base64::decode: {e}")))?;
            // Text comes back as a string; anything else as a blob.
            Ok(match String::from_utf8(bytes) {
                Ok(text) => Dynamic::from(text),
                Err(e) => Dynamic::from_blob(e.into_bytes()),
            })
        },
    );
    engine.register_static_module("base64", b64.into());

    let mut events = Module::new();
    sdk_fn(
        "emit",
        &["name: &str", "payload: Dynamic", "i64"],
        "Queues the app's triggered scripts for event `name`; how many were queued.",
    )
    .set_into_module(&mut events, events_emit);
    sdk_fn("emit", &["name: &str", "i64"], "`emit(name, ())`.")
        .set_into_module(&mut events, |ctx: NativeCallContext, name: &str| {
            events_emit(ctx, name, Dynamic::UNIT)
        });
    engine.register_static_module("events", events.into());

    engine.register_fn("uuid", || uuid::Uuid::new_v4().to_string());
    engine.register_fn("sdk_version", || ImmutableString::from(SDK_VERSION));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq("", ""));
        assert!(constant_time_eq("sha256=ab12", "sha256=ab12"));
        assert!(!constant_time_eq("sha256=ab12", "sha256=ab13"));
        assert!(!constant_time_eq("sha256=ab12", "sha256=ab1"));
        assert!(!constant_time_eq("a", ""));
        assert!(constant_time_eq("héllo", "héllo"));
    }

    #[test]
    fn constant_time_eq_is_in_the_crypto_namespace() {
        let mut engine = Engine::new();
        register(&mut engine, 1 << 20);
        let eval = |script: &str| engine.eval::<bool>(script).expect(script);
        assert!(eval(r#"crypto::constant_time_eq("abc", "abc")"#));
        assert!(!eval(r#"crypto::constant_time_eq("abc", "abd")"#));
        // With the HMAC helper, as a webhook script uses it.
        assert!(eval(
            r#"let sig = "sha256=" + crypto::hmac_sha256_hex("key", "body");
               crypto::constant_time_eq(sig, "sha256=" + crypto::hmac_sha256_hex("key", "body"))"#
        ));
    }
}
