//! The admin API's `GET /v1/apps/APP/logs?limit=N&after=ID`: an app's invocation records as
//! JSON, oldest first (newest last).
//!
//! Owns: the query (`limit`, default [`LIMIT_DEFAULT`], at most [`LIMIT_MAX`]; `after`, a record
//! id) and the JSON shape of a record. Does not own: routing, authentication or the error's
//! rendering (`mod.rs`, `error.rs`), nor keeping records (the [`LogStore`]).
//!
//! Without `after` the answer is the newest `limit` records; with it, the `limit` records that
//! follow `after`. A client follows the log by passing the last `id` it saw as `after`.

use std::time::{Duration, UNIX_EPOCH};

use picloud_core::services::{InvocationRecord, LogStore};
use serde_json::{Value, json};

use super::error::AdminError;

/// Records answered when the query has no `limit`.
pub const LIMIT_DEFAULT: usize = 100;
/// Most records one call answers.
pub const LIMIT_MAX: usize = 1_000;

/// Answers `GET /v1/apps/APP/logs` with `query` (the raw query string, without `?`): a JSON
/// array of records, or the error (`invalid_input` for a bad query, `not_found` for a missing
/// app, the store's code otherwise).
pub fn logs(store: &dyn LogStore, app: &str, query: &str) -> Result<Value, AdminError> {
    let (limit, after) = parse_query(query)?;
    let records = store.invocations(app, after, limit)?;
    Ok(Value::Array(
        records.iter().map(|(id, r)| record_json(*id, r)).collect(),
    ))
}

/// `(limit, after)` from the query; other parameters are ignored, as elsewhere in the API.
fn parse_query(query: &str) -> Result<(usize, Option<u64>), AdminError> {
    let invalid = AdminError::invalid;
    let mut limit = LIMIT_DEFAULT;
    let mut after = None;
    for (key, value) in query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
    {
        let value = picloud_core::catalog::percent_decode(value);
        match key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "limit must be a number from 1 to {LIMIT_MAX}, not {value:?}"
                        ))
                    })?;
            }
            "after" => {
                after = Some(value.parse().map_err(|_| {
                    invalid(format!(
                        "after must be a record id (a number), not {value:?}"
                    ))
                })?);
            }
            _ => {}
        }
    }
    Ok((limit, after))
}

/// One record as the API shows it.
pub fn record_json(id: u64, r: &InvocationRecord) -> Value {
    let mut v = json!({
        "id": id,
        "request_id": r.request_id,
        "ts": humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.ts_ms))
            .to_string(),
        "script": r.script,
        "trigger": r.trigger.as_str(),
        "status": r.status,
        "duration_us": r.duration_us,
        "operations": r.operations,
        "heap_peak_bytes": r.heap_peak_bytes,
        "lines": r.lines.iter().map(|l| json!({"level": l.level, "message": l.message})).collect::<Vec<_>>(),
    });
    if let (Some(error), Some(obj)) = (&r.error, v.as_object_mut()) {
        obj.insert("error".into(), Value::from(error.as_str()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use picloud_core::ErrorCode;
    use picloud_core::services::{LogLine, TriggerKind};
    use picloud_core::store::{StoreError, StoreResult};

    /// Answers every read with records `after+1 ..` (or the newest `limit` of 1..=5), and
    /// `NotFound` for app `missing`, recording the arguments it got.
    struct Fake(parking_lot::Mutex<Vec<(Option<u64>, usize)>>);

    fn rec(n: u64) -> InvocationRecord {
        InvocationRecord {
            request_id: format!("req-{n}"),
            ts_ms: 1_764_223_262_345,
            app: "a".into(),
            script: "list".into(),
            trigger: TriggerKind::Http,
            status: 200,
            duration_us: 1_200,
            operations: 1_234,
            heap_peak_bytes: 5_222,
            error: None,
            lines: Vec::new(),
        }
    }

    impl LogStore for Fake {
        fn append_invocations(&self, _: &[InvocationRecord], _: usize) -> StoreResult<()> {
            Ok(())
        }

        fn invocations(
            &self,
            app: &str,
            after: Option<u64>,
            limit: usize,
        ) -> StoreResult<Vec<(u64, InvocationRecord)>> {
            self.0.lock().push((after, limit));
            if app == "missing" {
                return Err(StoreError::NotFound(format!("app {app:?} does not exist")));
            }
            let ids: Vec<u64> = match after {
                Some(a) => (a + 1..=5).take(limit).collect(),
                None => (1..=5u64).skip(5usize.saturating_sub(limit)).collect(),
            };
            Ok(ids.into_iter().map(|n| (n, rec(n))).collect())
        }
    }

    fn fake() -> Fake {
        Fake(parking_lot::Mutex::new(Vec::new()))
    }

    #[test]
    fn query_defaults_and_bounds() {
        let store = fake();
        for (query, expected) in [
            ("", (None, LIMIT_DEFAULT)),
            ("limit=2", (None, 2)),
            ("after=3", (Some(3), LIMIT_DEFAULT)),
            ("limit=1000&after=0&other=x", (Some(0), 1000)),
            ("limit=%31", (None, 1)),
        ] {
            logs(&store, "a", query).unwrap_or_else(|e| panic!("{query}: {e:?}"));
            assert_eq!(store.0.lock().pop(), Some(expected), "{query}");
        }
        for query in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "limit=",
            "after=-1",
            "after=x",
        ] {
            let e = logs(&store, "a", query).expect_err(query);
            assert_eq!(e.code, ErrorCode::InvalidInput, "{query}");
            assert!(
                e.message.contains("limit") || e.message.contains("after"),
                "{}",
                e.message
            );
        }
        assert!(
            store.0.lock().is_empty(),
            "a bad query does not reach the store"
        );
    }

    #[test]
    fn missing_app_is_not_found() {
        let e = logs(&fake(), "missing", "").expect_err("missing app");
        assert_eq!(e.code, ErrorCode::NotFound);
    }

    #[test]
    fn records_are_shown_newest_last() {
        let got = logs(&fake(), "a", "limit=2").expect("ok");
        let ids: Vec<u64> = got
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(ids, [4, 5]);
    }

    #[test]
    fn record_shape() {
        let mut r = rec(7);
        assert_eq!(
            record_json(7, &r),
            json!({
                "id": 7,
                "request_id": "req-7",
                "ts": "2025-11-27T06:01:02.345Z",
                "script": "list",
                "trigger": "http",
                "status": 200,
                "duration_us": 1200,
                "operations": 1234,
                "heap_peak_bytes": 5222,
                "lines": [],
            })
        );
        r.error = Some("script_error".into());
        r.trigger = TriggerKind::Cron;
        r.lines = vec![LogLine {
            level: "warn".into(),
            message: "careful".into(),
        }];
        let v = record_json(7, &r);
        assert_eq!(v["error"], "script_error");
        assert_eq!(v["trigger"], "cron");
        assert_eq!(v["lines"], json!([{"level": "warn", "message": "careful"}]));
    }
}
