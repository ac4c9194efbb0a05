//! The admin API's view of an app's key-value data, as plain functions over a [`KvStore`]:
//! `GET /v1/apps/APP/kv?prefix=P&limit=N`, and `GET`, `PUT` (`?ttl=SECONDS`) and `DELETE`
//! `/v1/apps/APP/kv/KEY`.
//!
//! Owns: parsing the request pieces (the raw, percent-encoded key segment and query string, the
//! body), the bounds of a listing ([`LIST_LIMIT_DEFAULT`], [`LIST_LIMIT_MAX`]) and the answers,
//! as `(status, JSON body)` or an [`AdminError`].
//! Does not own: routing, authentication or the HTTP response (`mod.rs` wires these
//! functions in), checking that the app exists (the caller does, with the catalog store, so a
//! missing app is 404 for reads too), the app's KV limits (the caller resolves them from the
//! app's configuration), or storage (`crate::store`). It never bumps the catalog revision:
//! KV is data, so a KV write needs no publish.

use picloud_core::catalog::percent_decode;
use picloud_core::services::{KvLimits, KvStore};
use serde_json::{Value, json};

use super::error::AdminError;

/// Keys a listing returns when the query names no `limit`.
pub const LIST_LIMIT_DEFAULT: usize = 1_000;
/// The largest `limit` a listing accepts.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// The largest `ttl`, in seconds (100 years): more is surely a mistake, and
/// `ttl * 1000` stays far inside `u64`.
pub const TTL_SECONDS_MAX: u64 = 100 * 365 * 24 * 3600;

/// A successful answer (status and JSON body; `Value::Null` for 204) or the admin error.
pub type KvReply = Result<(u16, Value), AdminError>;

fn invalid(message: String) -> AdminError {
    AdminError::invalid(message)
}

/// The last value of query parameter `name`, percent-decoded (`+` is not a space: keys are
/// taken literally).
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
        .next_back()
}

/// `GET /v1/apps/APP/kv?prefix=P&limit=N`: 200 `{"keys":[…]}`, the app's live keys starting
/// with `P` (all if absent), sorted by bytes, at most `N` (default [`LIST_LIMIT_DEFAULT`], at
/// most [`LIST_LIMIT_MAX`]).
pub fn list(kv: &dyn KvStore, app: &str, query: &str, now_ms: u64) -> KvReply {
    let prefix = query_param(query, "prefix").unwrap_or_default();
    let limit = match query_param(query, "limit") {
        None => LIST_LIMIT_DEFAULT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err(invalid(format!(
                    "limit must be an integer from 1 to {LIST_LIMIT_MAX}, not {raw:?}"
                )));
            }
        },
    };
    let keys = kv
        .kv_list(app, &prefix, limit, now_ms)
        .map_err(AdminError::from)?;
    Ok((200, json!({ "keys": keys })))
}

/// `GET /v1/apps/APP/kv/KEY`: 200 with the value as the body, or 404 if absent or expired.
/// `raw_key` is the URL segment as sent (percent-encoded).
pub fn get(kv: &dyn KvStore, app: &str, raw_key: &str, now_ms: u64) -> KvReply {
    let key = percent_decode(raw_key);
    match kv.kv_get(app, &key, now_ms).map_err(AdminError::from)? {
        Some(value) => Ok((200, value)),
        None => Err(key_not_found(app, &key)),
    }
}

/// `PUT /v1/apps/APP/kv/KEY?ttl=SECONDS` with a JSON value as the body: 204. Without `ttl` the
/// value never expires. A body that is not JSON, a bad `ttl` or a value over the app's bounds
/// is 422 `invalid_input`.
pub fn put(
    kv: &dyn KvStore,
    app: &str,
    raw_key: &str,
    query: &str,
    body: &[u8],
    limits: &KvLimits,
    now_ms: u64,
) -> KvReply {
    let key = percent_decode(raw_key);
    let ttl_ms = match query_param(query, "ttl") {
        None => None,
        Some(raw) => match raw.parse::<u64>() {
            Ok(secs) if (1..=TTL_SECONDS_MAX).contains(&secs) => Some(secs * 1000),
            _ => {
                return Err(invalid(format!(
                    "ttl must be a number of seconds from 1 to {TTL_SECONDS_MAX}, not {raw:?}"
                )));
            }
        },
    };
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("kv value must be JSON: {e}")))?;
    kv.kv_set(app, &key, &value, ttl_ms, now_ms, limits)
        .map_err(AdminError::from)?;
    Ok((204, Value::Null))
}

/// `DELETE /v1/apps/APP/kv/KEY`: 204, or 404 if the key was absent or expired.
pub fn delete(kv: &dyn KvStore, app: &str, raw_key: &str, now_ms: u64) -> KvReply {
    let key = percent_decode(raw_key);
    if kv.kv_delete(app, &key, now_ms).map_err(AdminError::from)? {
        Ok((204, Value::Null))
    } else {
        Err(key_not_found(app, &key))
    }
}

fn key_not_found(app: &str, key: &str) -> AdminError {
    AdminError::not_found(format!("no kv key {key:?} in app {app:?}"))
}

#[cfg(test)]
mod tests {
    use picloud_core::ErrorCode;
    use picloud_core::model::AppConfig;
    use picloud_core::store::Store;

    use super::*;
    use crate::store::EmbeddedStore;

    const NOW: u64 = 1_700_000_000_000;

    fn with_app(test: impl FnOnce(&EmbeddedStore)) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open");
        store.put_app("a", &AppConfig::default()).expect("app");
        test(&store);
    }

    fn limits() -> KvLimits {
        KvLimits::of(&picloud_core::Limits::default())
    }

    fn code(r: KvReply) -> ErrorCode {
        match r {
            Err(e) => e.code,
            Ok(ok) => panic!("expected an error, got {ok:?}"),
        }
    }

    #[test]
    fn put_get_list_delete() {
        with_app(|s| {
            let put = |key: &str, body: &str| put(s, "a", key, "", body.as_bytes(), &limits(), NOW);
            assert_eq!(put("k1", r#"{"n":[1,2]}"#), Ok((204, Value::Null)));
            assert_eq!(put("k2", "\"text\""), Ok((204, Value::Null)));
            assert_eq!(put("other", "null"), Ok((204, Value::Null)));
            assert_eq!(get(s, "a", "k1", NOW), Ok((200, json!({"n": [1, 2]}))));
            assert_eq!(get(s, "a", "other", NOW), Ok((200, Value::Null)));
            assert_eq!(
                list(s, "a", "", NOW),
                Ok((200, json!({"keys": ["k1", "k2", "other"]})))
            );
            assert_eq!(
                list(s, "a", "prefix=k&limit=1", NOW),
                Ok((200, json!({"keys": ["k1"]})))
            );
            assert_eq!(delete(s, "a", "k1", NOW), Ok((204, Value::Null)));
            assert_eq!(code(delete(s, "a", "k1", NOW)), ErrorCode::NotFound);
            assert_eq!(code(get(s, "a", "k1", NOW)), ErrorCode::NotFound);
        });
    }

    #[test]
    fn keys_and_prefixes_are_percent_decoded() {
        with_app(|s| {
            let r = put(s, "a", "user%2F1%20x", "", b"1", &limits(), NOW);
            assert_eq!(r, Ok((204, Value::Null)));
            assert_eq!(get(s, "a", "user%2f1%20x", NOW), Ok((200, json!(1))));
            assert_eq!(
                list(s, "a", "prefix=user%2F", NOW),
                Ok((200, json!({"keys": ["user/1 x"]})))
            );
            // `%` itself, encoded, is a literal prefix.
            put(s, "a", "50%25", "", b"2", &limits(), NOW).expect("put");
            assert_eq!(
                list(s, "a", "prefix=50%25", NOW),
                Ok((200, json!({"keys": ["50%"]})))
            );
            assert_eq!(delete(s, "a", "user%2F1%20x", NOW), Ok((204, Value::Null)));
        });
    }

    #[test]
    fn ttl_is_in_seconds() {
        with_app(|s| {
            put(s, "a", "t", "ttl=2", b"true", &limits(), NOW).expect("put");
            assert_eq!(get(s, "a", "t", NOW + 1_999), Ok((200, json!(true))));
            assert_eq!(code(get(s, "a", "t", NOW + 2_000)), ErrorCode::NotFound);
            assert_eq!(code(delete(s, "a", "t", NOW + 2_000)), ErrorCode::NotFound);
            for bad in ["ttl=0", "ttl=-1", "ttl=x", "ttl=", "ttl=99999999999999"] {
                assert_eq!(
                    code(put(s, "a", "t", bad, b"1", &limits(), NOW)),
                    ErrorCode::InvalidInput,
                    "{bad}"
                );
            }
        });
    }

    #[test]
    fn bad_requests_are_invalid_input() {
        with_app(|s| {
            let small = KvLimits {
                value_bytes_max: 4,
                ..limits()
            };
            assert_eq!(
                code(put(s, "a", "k", "", b"{not json", &limits(), NOW)),
                ErrorCode::InvalidInput
            );
            assert_eq!(
                code(put(s, "a", "k", "", b"\"12345\"", &small, NOW)),
                ErrorCode::InvalidInput
            );
            assert_eq!(
                code(put(s, "a", "", "", b"1", &limits(), NOW)),
                ErrorCode::InvalidInput
            );
            for bad in ["limit=0", "limit=10001", "limit=x", "limit=-5"] {
                assert_eq!(
                    code(list(s, "a", bad, NOW)),
                    ErrorCode::InvalidInput,
                    "{bad}"
                );
            }
            assert!(list(s, "a", "limit=10000", NOW).is_ok());
            // A write to an app that does not exist is 404, not a silent orphan.
            assert_eq!(
                code(put(s, "gone", "k", "", b"1", &limits(), NOW)),
                ErrorCode::NotFound
            );
        });
    }
}
