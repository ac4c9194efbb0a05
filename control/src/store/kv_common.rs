//! What both KV stores ([`super::embedded_kv`], [`super::postgres_kv`]) check and compute the
//! same way, so that they agree to the byte: the bounds of a key and a value (with the messages a
//! script sees), a value's stored form, expiry times and the upper bound of a key prefix; and
//! the error messages every store shares (missing app or script, unreadable stored data).
//!
//! Does not own: storage, counting keys (each store does that in its own transaction) or the
//! trait's rules (`picloud_core::services`).

use picloud_core::services::KvLimits;
use picloud_core::store::{StoreError, StoreResult};
use serde_json::Value;

/// Checks a key: not empty, at most `key_bytes_max` bytes, no NUL (PostgreSQL text cannot hold
/// one, so the embedded store refuses it too).
pub(crate) fn check_key(key: &str, limits: &KvLimits) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::Invalid("kv key must not be empty".into()));
    }
    if key.len() > limits.key_bytes_max {
        return Err(StoreError::Invalid(format!(
            "kv key is {} bytes; the limit is {} bytes",
            key.len(),
            limits.key_bytes_max
        )));
    }
    if key.contains('\0') {
        return Err(StoreError::Invalid("kv key must not contain NUL".into()));
    }
    Ok(())
}

/// The stored form of a value (compact JSON text), checked against `value_bytes_max` and for
/// NUL characters in strings or object keys (PostgreSQL's jsonb cannot hold them).
pub(crate) fn encode_value(value: &Value, limits: &KvLimits) -> StoreResult<String> {
    let text = serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("encoding a kv value: {e}")))?;
    if text.len() > limits.value_bytes_max {
        return Err(StoreError::Invalid(format!(
            "kv value is {} bytes as JSON; the limit is {} bytes",
            text.len(),
            limits.value_bytes_max
        )));
    }
    if has_nul(value) {
        return Err(StoreError::Invalid(
            "kv value must not contain NUL characters".into(),
        ));
    }
    Ok(text)
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The expiry time of a value set at `now_ms` with `ttl_ms`, or `None` for never. Saturates
/// rather than wrapping, and stays within `i64` (PostgreSQL's `bigint`).
pub(crate) fn expiry(now_ms: u64, ttl_ms: Option<u64>) -> Option<u64> {
    ttl_ms.map(|ttl| now_ms.saturating_add(ttl).min(i64::MAX as u64))
}

/// Whether a value with expiry `expires_at_ms` is still live at `now_ms`.
pub(crate) fn is_live(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    expires_at_ms.is_none_or(|at| at > now_ms)
}

/// The message of an `incr` on a value that is not an integer.
pub(crate) fn not_an_integer(key: &str) -> StoreError {
    StoreError::Invalid(format!("kv::incr: the value of {key:?} is not an integer"))
}

/// The message of an `incr` whose result leaves the 64-bit integer range.
pub(crate) fn incr_overflow(key: &str) -> StoreError {
    StoreError::Invalid(format!(
        "kv::incr: the value of {key:?} would leave the 64-bit integer range"
    ))
}

/// The message of a write of a new key when the app is full.
pub(crate) fn app_full(app: &str, keys_max: usize) -> StoreError {
    StoreError::Invalid(format!(
        "app {app:?} already holds {keys_max} kv keys (the limit); delete some first"
    ))
}

/// An operation on an app that does not exist (every store's message).
pub(crate) fn app_not_found(app: &str) -> StoreError {
    StoreError::NotFound(format!("app {app:?} does not exist"))
}

/// A read of a script that does not exist.
pub(crate) fn script_not_found(app: &str, name: &str) -> StoreError {
    StoreError::NotFound(format!("script {name:?} does not exist in app {app:?}"))
}

/// Stored data that does not decode: corruption or a bug, never the caller's fault.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} is unreadable: {e}"))
}

/// The smallest string greater than every string starting with `prefix`, in byte order (which
/// for UTF-8 is code point order), or `None` when there is none (the prefix is empty or all
/// `char::MAX`). Keys starting with `prefix` are exactly those in `[prefix, upper)`.
pub(crate) fn prefix_upper(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next code point, skipping the surrogate gap, which no `char` can hold.
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_upper_bounds_the_prefix_range() {
        assert_eq!(prefix_upper(""), None);
        assert_eq!(prefix_upper("a").as_deref(), Some("b"));
        assert_eq!(prefix_upper("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_upper("ab\u{10FFFF}").as_deref(), Some("ac"));
        assert_eq!(prefix_upper("\u{10FFFF}"), None);
    }

    #[test]
    fn expiry_saturates_within_bigint() {
        assert_eq!(expiry(5, None), None);
        assert_eq!(expiry(5, Some(10)), Some(15));
        assert_eq!(expiry(u64::MAX, Some(10)), Some(i64::MAX as u64));
        assert!(is_live(None, u64::MAX));
        assert!(is_live(Some(10), 9));
        assert!(!is_live(Some(10), 10));
    }
}
