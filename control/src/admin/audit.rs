//! The audit log: one entry per authenticated admin write (refused ones included), and
//! `GET /v1/audit?after=ID&limit=N` to read it.
//!
//! Owns: what an entry says about a call (`details`: the script and its new version, the number
//! of routes, the variable's or key's name, the token's name and role, a backup's size and
//! revision, ... never a secret value, a KV value, a token or a backup's bytes), the revision it
//! left, and the query's bounds ([`LIMIT_DEFAULT`], [`LIMIT_MAX`]). Does not own: storage and
//! the bound on entries kept (`AccessStore::append_audit` with `Limits::audit_entries_max`).
//!
//! An entry is written after the call's own transaction, not inside it: a crash between the
//! two loses the entry of a change that happened. A failure to write the entry is logged at
//! error and does not change the answer.

use picloud_core::access::{AuditEntry, TokenRecord};
use picloud_worker::http::{Request, Response};
use serde_json::{Value, json};

use super::routes::{Call, Matched};
use super::wire::{json_response, query_param, rfc3339};
use super::{Admin, AdminError, AdminResult};

/// Entries answered when the query has no `limit`.
pub const LIMIT_DEFAULT: usize = 100;
/// Most entries one call answers.
pub const LIMIT_MAX: usize = 1_000;

/// The JSON of an entry.
fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "id": e.id,
        "ts": rfc3339(e.ts_ms),
        "token": e.token,
        "node": e.node,
        "method": e.method,
        "path": e.path,
        "app": e.app,
        "details": e.details,
        "revision": e.revision,
        "status": e.status,
        "code": e.code,
    })
}

/// What a call changed, from its route, parameters and (for successes) its answer. Never a
/// value a script could hold as a secret, nor a token.
fn details(m: &Matched<'_>, req: &Request, answer: Option<&Value>) -> Value {
    let decoded = |name: &str| picloud_core::catalog::percent_decode(m.param(name));
    let pick = |keys: &[&str]| -> Value {
        let mut out = serde_json::Map::new();
        if let Some(Value::Object(a)) = answer {
            for k in keys {
                if let Some(v) = a.get(*k) {
                    out.insert((*k).to_string(), v.clone());
                }
            }
        }
        Value::Object(out)
    };
    let count = || match answer {
        Some(Value::Array(items)) => json!(items.len()),
        _ => Value::Null,
    };
    match m.spec.call {
        Call::PutApp => pick(&["hosts", "debug", "limits"]),
        Call::PutScript | Call::Rollback => {
            let mut d = pick(&["kind", "version", "hash"]);
            d["script"] = Value::from(decoded("name"));
            d
        }
        Call::DeleteScript => json!({ "script": decoded("name") }),
        Call::PutRoutes => json!({ "routes": count() }),
        Call::PutSchedules => json!({ "schedules": count() }),
        Call::PutTriggers => json!({ "triggers": count() }),
        Call::Deploy => pick(&[
            "app_created",
            "scripts",
            "routes_changed",
            "config_changed",
            "schedules_changed",
            "triggers_changed",
            "env_changed",
        ]),
        Call::PutEnv | Call::DeleteEnv => json!({ "variable": decoded("name") }),
        Call::KvPut | Call::KvDelete => json!({
            "key": decoded("key"),
            "ttl": query_param(&req.query, "ttl"),
        }),
        Call::CreateToken => {
            // From the request, as the answer carries the token itself.
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            json!({ "token": body.get("name"), "role": body.get("role"), "apps": body.get("apps") })
        }
        Call::DeleteToken => json!({ "token": decoded("name") }),
        _ => json!({}),
    }
}

/// What a backup's audit entry says: its size and the revision it holds, from the answer's
/// length and headers (the body itself is the database).
fn backup_details(resp: &Response) -> Value {
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    json!({
        "bytes": resp.body.len(),
        "revision": header("x-picloud-revision"),
        "schema_version": header("x-picloud-schema-version"),
    })
}

impl Admin {
    /// Records one authenticated write and its outcome.
    pub(super) fn audit(
        &self,
        token: &TokenRecord,
        m: &Matched<'_>,
        req: &Request,
        result: &AdminResult,
    ) {
        let backup = m.spec.call == Call::Backup;
        let (status, code, answer) = match result {
            // A backup's answer is the database: never parsed, never recorded.
            Ok(resp) if backup => (resp.status, None, Some(backup_details(resp))),
            Ok(resp) => (
                resp.status,
                None,
                serde_json::from_slice::<Value>(&resp.body).ok(),
            ),
            Err(e) => (e.status, Some(e.code.as_str().to_string()), None),
        };
        // A backup changes nothing; its snapshot's revision is in `details`.
        let catalog_write = !matches!(m.spec.call, Call::KvPut | Call::KvDelete | Call::Backup);
        let app = m.param("app");
        let entry = AuditEntry {
            id: 0,
            ts_ms: picloud_core::now_ms(),
            token: Some(token.name.clone()),
            node: self.node_name.clone(),
            method: req.method.clone(),
            path: req.path.clone(),
            app: (!app.is_empty()).then(|| picloud_core::catalog::percent_decode(app)),
            details: if backup {
                answer.unwrap_or_else(|| json!({}))
            } else {
                details(m, req, answer.as_ref())
            },
            revision: (result.is_ok() && catalog_write).then(|| self.publisher.revision()),
            status,
            code,
        };
        if let Err(e) = self
            .access
            .append_audit(&entry, self.limits.audit_entries_max)
        {
            log::error!(
                "audit entry of {} {} by {:?} not written: {e}",
                req.method,
                req.path,
                token.name
            );
        }
    }

    /// `GET /v1/audit?after=ID&limit=N`: oldest first; without `after` the newest `limit`.
    pub(super) fn audit_log(&self, query: &str) -> AdminResult {
        let limit = match query_param(query, "limit") {
            None => LIMIT_DEFAULT,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=LIMIT_MAX).contains(n))
                .ok_or_else(|| {
                    AdminError::invalid(format!("limit must be 1..={LIMIT_MAX}, not {v:?}"))
                })?,
        };
        let after = match query_param(query, "after") {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                AdminError::invalid(format!("after must be an entry id, not {v:?}"))
            })?),
        };
        let entries = self.access.audit(after, limit)?;
        Ok(json_response(
            200,
            &Value::Array(entries.iter().map(entry_json).collect()),
        ))
    }
}
