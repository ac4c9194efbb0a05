//! The script contract of API.md "Scripts": what a script sees as `request`, how its result
//! becomes a [`Response`], and how its failures become the public JSON errors.
//!
//! Owns: [`ScriptRequest`] (what the dispatcher hands the pool), the `request` constant (a Rhai
//! custom type `Request` whose fields are built lazily on first access, so `request.json` is
//! parsed only if the script touches it), JSON in (serde_json straight into `Dynamic`, with
//! size caps) and out (depth-bounded, non-finite floats → `null`), the response rules, and
//! [`ScriptFailure`]: our own `Send` error, made from Rhai's `EvalAltResult` on the engine thread.
//!
//! Does not own: running scripts or limits enforcement (`sandbox.rs`, `pool.rs`), the error JSON
//! shape (`crate::errors`), HTTP framing (`crate::http`).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use picloud_core::{ErrorCode, LimitKind, Limits};
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, ParseErrorType};
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::sandbox::Stop;
use crate::errors::error_response;
use crate::http::Response;

/// What the dispatcher hands the engine pool for one request: everything the script may see,
/// already owned (the connection's buffers are not borrowed across threads).
#[derive(Debug, Clone, Default)]
pub struct ScriptRequest {
    /// Unique request id; `request.id` and the `x-request-id` response header.
    pub id: String,
    /// Method, upper case (`GET`, ...). Lower-case input is upper-cased for the script.
    pub method: String,
    /// The path within the app (after the app prefix), without the query.
    pub path: String,
    /// Route parameters, already percent-decoded by the route match.
    pub params: Vec<(String, String)>,
    /// The raw query string after `?` (without it), not decoded: the script sees it decoded.
    pub query: String,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The whole body (after chunked decoding).
    pub body: Vec<u8>,
}

impl ScriptRequest {
    /// Builds the script's view of an HTTP request, taking its headers and body without copying.
    /// `path` is the path within the app and `params` the route parameters (from the route
    /// match); `id` the request id.
    pub fn from_http(
        req: crate::http::Request,
        id: String,
        path: &str,
        params: Vec<(String, String)>,
    ) -> ScriptRequest {
        ScriptRequest {
            id,
            method: req.method,
            path: path.to_string(),
            params,
            query: req.query,
            headers: req.headers,
            body: req.body,
        }
    }
}

/// Size caps applied to values the host builds for a script (JSON parsing), mirroring the
/// app's Rhai limits: host-built values do not pass through Rhai's own checks.
#[derive(Debug, Clone, Copy)]
pub struct SizeCaps {
    pub(crate) string_bytes_max: usize,
    pub(crate) array_len_max: usize,
    pub(crate) map_len_max: usize,
}

impl SizeCaps {
    /// The caps of an app's limits.
    pub fn of(limits: &Limits) -> SizeCaps {
        SizeCaps {
            string_bytes_max: limits.string_bytes_max,
            array_len_max: limits.array_len_max,
            map_len_max: limits.map_len_max,
        }
    }
}

/// The `request` constant: a cheap-to-clone handle (Rhai clones constants on access) to the
/// request and its lazily built fields. Every field is built at most once per invocation, on
/// the engine thread, while the heap counter is armed (so a huge JSON body counts against the
/// app's heap cap).
#[derive(Clone)]
pub struct RequestObj(Arc<RequestData>);

struct RequestData {
    req: ScriptRequest,
    caps: SizeCaps,
    method: OnceLock<Dynamic>,
    path: OnceLock<Dynamic>,
    id: OnceLock<Dynamic>,
    params: OnceLock<Dynamic>,
    /// `query` and `query_all`, built together from one pass over the raw query.
    query: OnceLock<(Dynamic, Dynamic)>,
    headers: OnceLock<Dynamic>,
    body: OnceLock<Dynamic>,
    body_bytes: OnceLock<Dynamic>,
    /// `Ok(value)` or the size-limit message; parse failures are `Ok(())` (not JSON → `()`).
    json: OnceLock<Result<Dynamic, String>>,
}

impl RequestObj {
    /// Wraps a request for one invocation.
    pub fn new(req: ScriptRequest, caps: SizeCaps) -> RequestObj {
        RequestObj(Arc::new(RequestData {
            req,
            caps,
            method: OnceLock::new(),
            path: OnceLock::new(),
            id: OnceLock::new(),
            params: OnceLock::new(),
            query: OnceLock::new(),
            headers: OnceLock::new(),
            body: OnceLock::new(),
            body_bytes: OnceLock::new(),
            json: OnceLock::new(),
        }))
    }

    fn method(&mut self) -> Dynamic {
        let r = &self.0.req;
        self.0
            .method
            .get_or_init(|| r.method.to_ascii_uppercase().into())
            .clone()
    }

    fn path(&mut self) -> Dynamic {
        let r = &self.0.req;
        self.0.path.get_or_init(|| r.path.as_str().into()).clone()
    }

    fn id(&mut self) -> Dynamic {
        let r = &self.0.req;
        self.0.id.get_or_init(|| r.id.as_str().into()).clone()
    }

    fn params(&mut self) -> Dynamic {
        let r = &self.0.req;
        self.0
            .params
            .get_or_init(|| {
                let map: Map = r
                    .params
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                    .collect();
                map.into()
            })
            .clone()
    }

    fn query_pair(&self) -> &(Dynamic, Dynamic) {
        self.0.query.get_or_init(|| parse_query(&self.0.req.query))
    }

    fn query(&mut self) -> Dynamic {
        self.query_pair().0.clone()
    }

    fn query_all(&mut self) -> Dynamic {
        self.query_pair().1.clone()
    }

    fn headers(&mut self) -> Dynamic {
        let r = &self.0.req;
        self.0
            .headers
            .get_or_init(|| {
                let mut map = Map::new();
                for (name, value) in &r.headers {
                    // Names arrive lower-case from the HTTP layer; lower-case only if not.
                    let lowered;
                    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                        lowered = name.to_ascii_lowercase();
                        lowered.as_str()
                    } else {
                        name.as_str()
                    };
                    match map.get_mut(name) {
                        // Repeated headers are joined with ", " in arrival order (RFC 9110 5.3).
                        Some(existing) => {
                            let joined = format!("{existing}, {value}");
                            *existing = joined.into();
                        }
                        None => {
                            map.insert(name.into(), value.as_str().into());
                        }
                    }
                }
                map.into()
            })
            .clone()
    }

    fn body(&mut self) -> Dynamic {
        let r = &self.0.req;
        self.0
            .body
            .get_or_init(|| match std::str::from_utf8(&r.body) {
                Ok(s) => s.into(),
                // A non-UTF-8 body is only in `body_bytes`; `body` is "" so string code works.
                Err(_) => "".into(),
            })
            .clone()
    }

    fn body_bytes(&mut self) -> Dynamic {
        let r = &self.0.req;
        // Always the raw body (UTF-8 or not). Built once; every access copies it (Rhai blobs are
        // plain `Vec<u8>`), so scripts should read it into a variable once.
        self.0
            .body_bytes
            .get_or_init(|| Dynamic::from_blob(r.body.clone()))
            .clone()
    }

    fn json(&mut self) -> Result<Dynamic, Box<EvalAltResult>> {
        let data = &self.0;
        match data
            .json
            .get_or_init(|| parse_json_body(&data.req.body, data.caps))
        {
            Ok(v) => Ok(v.clone()),
            Err(msg) => {
                Err(EvalAltResult::ErrorDataTooLarge(msg.clone(), rhai::Position::NONE).into())
            }
        }
    }

    fn field(&mut self, name: &str) -> Result<Dynamic, Box<EvalAltResult>> {
        Ok(match name {
            "method" => self.method(),
            "path" => self.path(),
            "params" => self.params(),
            "query" => self.query(),
            "query_all" => self.query_all(),
            "headers" => self.headers(),
            "body" => self.body(),
            "body_bytes" => self.body_bytes(),
            "json" => return self.json(),
            "id" => self.id(),
            _ => Dynamic::UNIT,
        })
    }

    fn describe(&mut self) -> String {
        format!("Request({} {})", self.0.req.method, self.0.req.path)
    }
}

/// The fields of `request`, in API.md's order.
pub const REQUEST_FIELDS: [&str; 10] = [
    "method",
    "path",
    "params",
    "query",
    "query_all",
    "headers",
    "body",
    "body_bytes",
    "json",
    "id",
];

/// Registers the `Request` type: a getter per field, `request["field"]`, `keys()` and a
/// readable `to_string`/`to_debug`. Called once per Engine by `sandbox::build_engine`.
pub fn register_request_type(engine: &mut Engine) {
    engine
        .register_type_with_name::<RequestObj>("Request")
        .register_get("method", RequestObj::method)
        .register_get("path", RequestObj::path)
        .register_get("params", RequestObj::params)
        .register_get("query", RequestObj::query)
        .register_get("query_all", RequestObj::query_all)
        .register_get("headers", RequestObj::headers)
        .register_get("body", RequestObj::body)
        .register_get("body_bytes", RequestObj::body_bytes)
        .register_get("json", RequestObj::json)
        .register_get("id", RequestObj::id)
        .register_indexer_get(|r: &mut RequestObj, name: ImmutableString| r.field(&name))
        .register_fn("keys", |_: &mut RequestObj| -> Array {
            REQUEST_FIELDS.iter().map(|f| Dynamic::from(*f)).collect()
        })
        .register_fn("to_string", RequestObj::describe)
        .register_fn("to_debug", RequestObj::describe);
}

/// Decodes `application/x-www-form-urlencoded` text: `+` → space, `%XX` → byte; invalid
/// escapes are kept as written and invalid UTF-8 is replaced (U+FFFD), never an error.
/// Borrows when there is nothing to decode (the common case).
pub fn form_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Builds `(query, query_all)` from a raw query string: `query` maps each name to its last
/// value, `query_all` to an array of every value in order. `a` alone means `a=""`.
fn parse_query(raw: &str) -> (Dynamic, Dynamic) {
    let mut last = Map::new();
    let mut all = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = form_decode(k);
        let v: Dynamic = form_decode(v).as_ref().into();
        // Strings are reference-counted: the clone shares the value's bytes.
        last.insert(k.as_ref().into(), v.clone());
        if let Some(mut values) = all
            .get_mut(k.as_ref())
            .and_then(|a| a.write_lock::<Array>())
        {
            values.push(v);
            continue;
        }
        all.insert(k.as_ref().into(), Dynamic::from_array(vec![v]));
    }
    (last.into(), all.into())
}

// ---------------------------------------------------------------------------------------------
// JSON in: serde_json straight into Dynamic, no intermediate `Value`, with the app's size caps.
// ---------------------------------------------------------------------------------------------

/// Parses a body as JSON. Not JSON (or empty) → `Ok(())`; JSON whose strings, arrays or maps
/// are over the app's caps → `Err(message)` (a `size` limit, like a script building them).
/// Nesting is bounded by serde_json's recursion limit (128).
pub fn parse_json_body(body: &[u8], caps: SizeCaps) -> Result<Dynamic, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Dynamic::UNIT);
    }
    match parse_json_capped(body, caps) {
        Ok(v) => Ok(v),
        Err(JsonError::TooLarge(msg)) => Err(msg),
        Err(JsonError::Invalid(_)) => Ok(Dynamic::UNIT),
    }
}

/// Why [`parse_json_capped`] produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// A string, array or map over the caps (a `size` limit).
    TooLarge(String),
    /// Not JSON.
    Invalid(String),
}

/// Parses JSON into a script value within `caps`, telling a syntax error from a cap.
pub fn parse_json_capped(text: &[u8], caps: SizeCaps) -> Result<Dynamic, JsonError> {
    let over = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = JsonSeed { caps, over: &over }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match (parsed, over.take()) {
        (_, Some(msg)) => Err(JsonError::TooLarge(msg)),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(JsonError::Invalid(e.to_string())),
    }
}

#[derive(Clone, Copy)]
struct JsonSeed<'c> {
    caps: SizeCaps,
    /// Set when a cap (not the syntax) stopped the parse, to tell the two apart afterwards.
    over: &'c Cell<Option<String>>,
}

impl JsonSeed<'_> {
    fn too_large<E: serde::de::Error>(&self, what: &str, max: usize) -> E {
        let msg = format!("request.json: {what} larger than the limit of {max}");
        self.over.set(Some(msg.clone()));
        E::custom(msg)
    }

    fn string<E: serde::de::Error>(&self, s: &str) -> Result<Dynamic, E> {
        if s.len() > self.caps.string_bytes_max {
            return Err(self.too_large("string", self.caps.string_bytes_max));
        }
        Ok(s.into())
    }
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Dynamic;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Dynamic, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Dynamic;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Dynamic, E> {
        Ok(Dynamic::UNIT)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Dynamic, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Dynamic, E> {
        // Integers past i64 become floats, like JavaScript would read them.
        Ok(match i64::try_from(v) {
            Ok(i) => Dynamic::from_int(i),
            Err(_) => Dynamic::from_float(v as f64),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Dynamic, E> {
        Ok(Dynamic::from_float(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dynamic, E> {
        self.string(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dynamic, A::Error> {
        let mut arr = Array::new();
        while let Some(v) = seq.next_element_seed(self)? {
            if arr.len() >= self.caps.array_len_max {
                return Err(self.too_large("array", self.caps.array_len_max));
            }
            arr.push(v);
        }
        Ok(Dynamic::from_array(arr))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Dynamic, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.len() > self.caps.string_bytes_max {
                return Err(self.too_large("string", self.caps.string_bytes_max));
            }
            let value = access.next_value_seed(self)?;
            map.insert(key.as_ref().into(), value);
            if map.len() > self.caps.map_len_max {
                return Err(self.too_large("object", self.caps.map_len_max));
            }
        }
        Ok(Dynamic::from_map(map))
    }
}

// ---------------------------------------------------------------------------------------------
// JSON out.
// ---------------------------------------------------------------------------------------------

/// Deepest nesting written as JSON. Our serializer recurses, and a script can build arrays
/// nested far deeper than any stack; past this the response is a `depth` limit.
pub const JSON_DEPTH_MAX: usize = 128;

/// Serializes a script value as JSON: `()` → null, ints, floats (non-finite → null), bools,
/// strings and chars, arrays, maps, blobs (array of byte values). Anything else (functions,
/// custom types, timestamps) is a script error.
///
/// Output longer than `bytes_max` is refused as a `size` limit as soon as it is reached: the
/// JSON of a value can be several times its size in memory (`"\u0000"` is six bytes for one),
/// and a response body is written where the heap cap does not count.
pub fn to_json_capped(value: &Dynamic, bytes_max: usize) -> Result<Vec<u8>, ScriptFailure> {
    let failure = Cell::new(None);
    let out = JsonOut {
        v: value,
        depth: 0,
        failure: &failure,
    };
    // Room for a small answer up front: growing from empty reallocates four times before
    // 64 bytes (profile of the json bench, issue 13).
    let mut writer = CappedWriter {
        bytes: Vec::with_capacity(JSON_OUT_BYTES_INITIAL.min(bytes_max)),
        bytes_max,
    };
    match serde_json::to_writer(&mut writer, &out) {
        Ok(()) => Ok(writer.bytes),
        Err(e) if e.is_io() => Err(ScriptFailure::Limit(LimitKind::Size)),
        Err(e) => Err(failure
            .take()
            .unwrap_or_else(|| ScriptFailure::script(e.to_string(), None))),
    }
}

/// First capacity of a JSON response body.
const JSON_OUT_BYTES_INITIAL: usize = 128;

/// A `Vec` that refuses to grow past `bytes_max` (an I/O error serde_json passes through).
struct CappedWriter {
    bytes: Vec<u8>,
    bytes_max: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.bytes_max {
            return Err(std::io::Error::other("over the size limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct JsonOut<'a> {
    v: &'a Dynamic,
    depth: usize,
    failure: &'a Cell<Option<ScriptFailure>>,
}

impl JsonOut<'_> {
    fn child<'b>(&'b self, v: &'b Dynamic) -> JsonOut<'b> {
        JsonOut {
            v,
            depth: self.depth + 1,
            failure: self.failure,
        }
    }
}

impl Serialize for JsonOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.v;
        if self.depth > JSON_DEPTH_MAX {
            self.failure
                .set(Some(ScriptFailure::Limit(LimitKind::Depth)));
            return Err(S::Error::custom("value nested too deeply for JSON"));
        }
        if v.is_unit() {
            return s.serialize_unit();
        }
        if let Ok(i) = v.as_int() {
            return s.serialize_i64(i);
        }
        if let Ok(f) = v.as_float() {
            return if f.is_finite() {
                s.serialize_f64(f)
            } else {
                s.serialize_unit()
            };
        }
        if let Ok(b) = v.as_bool() {
            return s.serialize_bool(b);
        }
        if let Ok(c) = v.as_char() {
            return s.serialize_char(c);
        }
        if let Ok(st) = v.as_immutable_string_ref() {
            return s.serialize_str(st.as_str());
        }
        if let Ok(arr) = v.as_array_ref() {
            let mut seq = s.serialize_seq(Some(arr.len()))?;
            for item in arr.iter() {
                seq.serialize_element(&self.child(item))?;
            }
            return seq.end();
        }
        if let Ok(map) = v.as_map_ref() {
            let mut m = s.serialize_map(Some(map.len()))?;
            for (k, item) in map.iter() {
                m.serialize_entry(k.as_str(), &self.child(item))?;
            }
            return m.end();
        }
        if let Ok(blob) = v.as_blob_ref() {
            return s.collect_seq(blob.iter());
        }
        let msg = format!(
            "a value of type {} cannot be converted to JSON",
            v.type_name()
        );
        self.failure
            .set(Some(ScriptFailure::script(msg.clone(), None)));
        Err(S::Error::custom(msg))
    }
}

// ---------------------------------------------------------------------------------------------
// Script result → Response.
// ---------------------------------------------------------------------------------------------

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const OCTETS: &str = "application/octet-stream";

/// Response headers a script may not set: framing belongs to the HTTP layer (a wrong
/// `content-length` would desynchronise the connection) and the request id is ours.
const RESERVED_HEADERS: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "x-request-id",
];

/// Turns a script's result into a response, following API.md:
/// `()` → 204; string → 200 text; a map with an integer `status` → that status with `headers`
/// and `body`; any other map, array, number or bool → 200 JSON. Also (our extension) a blob →
/// 200 `application/octet-stream` and a char → 200 text. Every response gets `x-request-id`.
/// A body over `body_bytes_max` (the app's heap cap: the conversion runs after the heap counter
/// is disarmed, and JSON can be several times larger than the value) is a `size` limit.
pub fn to_response(
    value: Dynamic,
    request_id: &str,
    body_bytes_max: usize,
) -> Result<Response, ScriptFailure> {
    let value = value.flatten();
    let mut resp = if value.is_unit() {
        Response {
            status: 204,
            headers: Vec::with_capacity(1),
            body: Vec::new(),
        }
    } else if value.is_map() && has_int_status(&value) {
        shaped_response(value, body_bytes_max)?
    } else {
        let (content_type, body) = body_of(value, body_bytes_max)?;
        Response::new(200, content_type, body)
    };
    resp.headers
        .push(("x-request-id".into(), request_id.into()));
    Ok(resp)
}

fn has_int_status(value: &Dynamic) -> bool {
    value
        .as_map_ref()
        .is_ok_and(|m| m.get("status").is_some_and(Dynamic::is_int))
}

/// A value as a body: its default content type and bytes. `()` is an empty body with no type.
fn body_of(value: Dynamic, bytes_max: usize) -> Result<(&'static str, Vec<u8>), ScriptFailure> {
    let value = value.flatten();
    let within = |len: usize| {
        if len > bytes_max {
            return Err(ScriptFailure::Limit(LimitKind::Size));
        }
        Ok(())
    };
    if value.is_string() {
        let s = value.into_immutable_string().unwrap_or_default();
        within(s.len())?;
        return Ok((TEXT, s.as_bytes().to_vec()));
    }
    if value.is_char() {
        return Ok((TEXT, value.to_string().into_bytes()));
    }
    if value.is_blob() {
        let b = value.into_blob().unwrap_or_default();
        within(b.len())?;
        return Ok((OCTETS, b));
    }
    if value.is_map() || value.is_array() || value.is_int() || value.is_float() || value.is_bool() {
        return Ok((JSON, to_json_capped(&value, bytes_max)?));
    }
    Err(ScriptFailure::script(
        format!("a value of type {} cannot be a response", value.type_name()),
        None,
    ))
}

/// The `#{status, headers, body}` form.
fn shaped_response(value: Dynamic, body_bytes_max: usize) -> Result<Response, ScriptFailure> {
    let mut map = value.cast::<Map>();
    let status = map.get("status").and_then(|s| s.as_int().ok()).unwrap_or(0);
    // 1xx are not final responses (a client would wait for another): refused like nonsense.
    let status = match u16::try_from(status) {
        Ok(s) if (200..=599).contains(&s) => s,
        _ => {
            return Err(ScriptFailure::script(
                format!("response status {status} is not between 200 and 599"),
                None,
            ));
        }
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    match map.remove("headers").map(Dynamic::flatten) {
        None => {}
        Some(h) if h.is_unit() => {}
        Some(h) => {
            let Ok(h) = h.as_map_ref().map(|m| m.clone()) else {
                return Err(ScriptFailure::script(
                    "response headers must be a map".into(),
                    None,
                ));
            };
            for (name, value) in h {
                let name = name.as_str();
                if !is_token(name) {
                    return Err(ScriptFailure::script(
                        format!("response header name {name:?} is not a valid HTTP token"),
                        None,
                    ));
                }
                let value = header_value(name, value)?;
                if RESERVED_HEADERS
                    .iter()
                    .any(|r| name.eq_ignore_ascii_case(r))
                {
                    continue;
                }
                headers.push((name.to_string(), value));
            }
        }
    }
    let (default_type, body) = match map.remove("body") {
        None => ("", Vec::new()),
        Some(b) if b.is_unit() => ("", Vec::new()),
        Some(b) => body_of(b, body_bytes_max)?,
    };
    let has_type = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    let mut all = Vec::with_capacity(headers.len() + 2);
    if !has_type && !default_type.is_empty() {
        all.push(("content-type".to_string(), default_type.to_string()));
    }
    all.extend(headers);
    Ok(Response {
        status,
        headers: all,
        body,
    })
}

/// A header value as text. Strings as they are; numbers, bools and chars printed. CR, LF and
/// NUL are refused: they would let a script split the response.
fn header_value(name: &str, value: Dynamic) -> Result<String, ScriptFailure> {
    let value = value.flatten();
    let text = if value.is_string()
        || value.is_char()
        || value.is_int()
        || value.is_float()
        || value.is_bool()
    {
        value.to_string()
    } else {
        return Err(ScriptFailure::script(
            format!(
                "response header {name:?} must be a string, not {}",
                value.type_name()
            ),
            None,
        ));
    };
    if text.contains(['\r', '\n', '\0']) {
        return Err(ScriptFailure::script(
            format!("response header {name:?} contains CR, LF or NUL"),
            None,
        ));
    }
    Ok(text)
}

/// RFC 9110 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

// ---------------------------------------------------------------------------------------------
// Failures.
// ---------------------------------------------------------------------------------------------

/// Why an invocation produced no script response: our own `Send` error, built on the engine
/// thread from Rhai's error (which holds `Dynamic`s and must not travel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptFailure {
    /// The script raised, failed at run time or does not compile → 500 `script_error`.
    Script {
        /// What went wrong (sent only when the app has `debug`).
        message: String,
        /// Line of the failure, when known (sent only with `debug`).
        line: Option<usize>,
    },
    /// A limit was broken → 500 `limit_exceeded` with `limit`.
    Limit(LimitKind),
    /// The wall-clock deadline passed → 504 `timeout`.
    Timeout,
    /// PiCloud failed (a panic in a job) → 500 `internal`.
    Internal,
}

impl ScriptFailure {
    /// A script error.
    pub fn script(message: String, line: Option<usize>) -> ScriptFailure {
        ScriptFailure::Script { message, line }
    }

    /// What went wrong, in words (for SDK errors and logs, never sent without `debug`).
    pub fn message(&self) -> String {
        match self {
            ScriptFailure::Script { message, .. } => message.clone(),
            ScriptFailure::Limit(kind) => format!("{} limit exceeded", kind.as_str()),
            ScriptFailure::Timeout => "timeout".to_string(),
            ScriptFailure::Internal => "internal error".to_string(),
        }
    }

    /// The public error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ScriptFailure::Script { .. } => ErrorCode::ScriptError,
            ScriptFailure::Limit(_) => ErrorCode::LimitExceeded,
            ScriptFailure::Timeout => ErrorCode::Timeout,
            ScriptFailure::Internal => ErrorCode::Internal,
        }
    }

    /// Maps a Rhai error. Errors inside function calls are wrapped by Rhai; the innermost one
    /// says what happened (a stack overflow deep in recursion is still a `depth` limit).
    pub fn from_eval(err: &EvalAltResult) -> ScriptFailure {
        let inner = err.unwrap_inner();
        match inner {
            EvalAltResult::ErrorTerminated(token, _) => match Stop::from_token(token) {
                Some(Stop::Timeout) => ScriptFailure::Timeout,
                Some(stop) => {
                    ScriptFailure::Limit(stop.limit_kind().unwrap_or(LimitKind::Operations))
                }
                None => ScriptFailure::script(err.to_string(), line_of(inner)),
            },
            EvalAltResult::ErrorTooManyOperations(_) => ScriptFailure::Limit(LimitKind::Operations),
            EvalAltResult::ErrorDataTooLarge(..) | EvalAltResult::ErrorTooManyVariables(_) => {
                ScriptFailure::Limit(LimitKind::Size)
            }
            EvalAltResult::ErrorStackOverflow(_) | EvalAltResult::ErrorTooManyModules(_) => {
                ScriptFailure::Limit(LimitKind::Depth)
            }
            EvalAltResult::ErrorParsing(ParseErrorType::ExprTooDeep, _) => {
                ScriptFailure::Limit(LimitKind::Depth)
            }
            _ => ScriptFailure::script(err.to_string(), line_of(inner)),
        }
    }

    /// The Rhai error a native function raises for this failure, chosen so that
    /// [`ScriptFailure::from_eval`] maps it back to the same failure: a limit hit inside a
    /// native function (a JSON conversion in the SDK, say) is then answered as that limit, not
    /// as a `script_error`.
    pub fn into_eval(self, context: &str, pos: rhai::Position) -> Box<EvalAltResult> {
        match self {
            ScriptFailure::Limit(LimitKind::Size) => {
                EvalAltResult::ErrorDataTooLarge(context.to_string(), pos).into()
            }
            ScriptFailure::Limit(LimitKind::Depth) => EvalAltResult::ErrorStackOverflow(pos).into(),
            ScriptFailure::Limit(LimitKind::Operations) => {
                EvalAltResult::ErrorTooManyOperations(pos).into()
            }
            ScriptFailure::Limit(LimitKind::Memory) => {
                EvalAltResult::ErrorTerminated(Stop::Memory.token(), pos).into()
            }
            ScriptFailure::Timeout => {
                EvalAltResult::ErrorTerminated(Stop::Timeout.token(), pos).into()
            }
            ScriptFailure::Script { message, .. } => {
                EvalAltResult::ErrorRuntime(format!("{context}: {message}").into(), pos).into()
            }
            ScriptFailure::Internal => {
                EvalAltResult::ErrorRuntime(format!("{context}: internal error").into(), pos).into()
            }
        }
    }

    /// The public JSON error. `message` and `line` only when the app has `debug`.
    pub fn into_response(self, request_id: &str, debug: bool) -> Response {
        let code = self.code();
        let extra = match self {
            ScriptFailure::Script { message, line } if debug => {
                let mut extra = vec![("message", Value::from(message))];
                if let Some(line) = line {
                    extra.push(("line", Value::from(line)));
                }
                extra
            }
            ScriptFailure::Limit(kind) => vec![("limit", Value::from(kind.as_str()))],
            _ => Vec::new(),
        };
        error_response(code, request_id, extra)
    }
}

fn line_of(err: &EvalAltResult) -> Option<usize> {
    err.position().line()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c"), "a b c");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert_eq!(form_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn json_caps() {
        let caps = SizeCaps {
            string_bytes_max: 4,
            array_len_max: 2,
            map_len_max: 1,
        };
        assert!(parse_json_body(b"[1,2]", caps).is_ok());
        assert!(parse_json_body(b"[1,2,3]", caps).is_err());
        assert!(parse_json_body(br#""abcde""#, caps).is_err());
        assert!(parse_json_body(br#"{"a":1,"b":2}"#, caps).is_err());
        assert!(parse_json_body(b"{nope", caps).is_ok_and(|v| v.is_unit()));
        assert!(parse_json_body(b"", caps).is_ok_and(|v| v.is_unit()));
        assert!(parse_json_body(b"1 2", caps).is_ok_and(|v| v.is_unit()));
    }
}
