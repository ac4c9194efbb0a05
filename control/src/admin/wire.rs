//! The admin API's wire shapes: JSON answers for apps, scripts and versions, times as RFC 3339,
//! and query-string reading.
//!
//! Owns: how stored values look on the wire, in one place for every handler (and what the
//! OpenAPI document describes). Does not own: the values themselves (core's model) or errors
//! (`error.rs`).

use std::time::{Duration, UNIX_EPOCH};

use picloud_core::{AppInfo, ScriptInfo, ScriptVersionInfo};
use picloud_worker::http::Response;
use serde_json::{Value, json};

pub(super) fn json_response(status: u16, v: &Value) -> Response {
    Response::new(status, "application/json", v.to_string())
}

pub(super) fn no_content() -> Response {
    Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// RFC 3339 UTC time of a Unix-millisecond timestamp.
pub(super) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub(super) fn app_json(a: &AppInfo) -> Value {
    json!({
        "name": a.name,
        "hosts": a.config.hosts,
        "debug": a.config.debug,
        "limits": a.config.limits,
        "created_at": rfc3339(a.created_at_ms),
        "updated_at": rfc3339(a.updated_at_ms),
    })
}

pub(super) fn script_json(s: &ScriptInfo) -> Value {
    json!({
        "name": s.name,
        "kind": s.kind.as_str(),
        "version": s.version,
        "hash": s.hash,
        "imports": s.imports,
        "updated_at": rfc3339(s.updated_at_ms),
    })
}

pub(super) fn version_json(v: &ScriptVersionInfo) -> Value {
    json!({ "version": v.version, "hash": v.hash, "created_at": rfc3339(v.created_at_ms) })
}
/// The last value of a query parameter, percent-decoded.
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| picloud_core::catalog::percent_decode(v))
        .next_back()
}
