//! The data-plane services scripts reach through the SDK, as traits the stores implement and
//! the worker calls: the per-app key-value store ([`KvStore`]), invocation records
//! ([`InvocationRecord`], written through an [`InvocationSink`] and kept by a [`LogStore`]),
//! and the shapes of cron schedules ([`Schedule`]) and event triggers ([`Trigger`]).
//!
//! Owns: the operations, their bounds ([`KvLimits`]) and the rules every implementation keeps:
//! - KV: everything is scoped to one app; values are JSON; a key past its expiry is never
//!   returned (by any operation) and expiry needs no background thread (expired entries are
//!   ignored on read and removed when their key is written or the app needs the room); `incr`
//!   is atomic across threads and nodes; bounds are checked on every write (`Invalid`, with a
//!   message the script sees);
//! - logs: records are kept per app, oldest dropped beyond a bound, read back in the order
//!   they were appended, each with a store-assigned sequence number.
//!
//! Does not own: I/O (implementations live in `picloud-control`), the script-facing functions
//! (the worker's SDK), or how records travel from engines to the store (a bounded queue and a
//! writer thread in the control plane).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::StoreResult;

/// Bounds of one app's key-value data, from [`crate::Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key, in bytes.
    pub key_bytes_max: usize,
    /// Largest value, as JSON text, in bytes.
    pub value_bytes_max: usize,
    /// Most live keys one app may hold.
    pub keys_max: usize,
}

impl KvLimits {
    /// The KV bounds of `limits`.
    pub fn of(limits: &crate::Limits) -> KvLimits {
        KvLimits {
            key_bytes_max: limits.kv_key_bytes_max,
            value_bytes_max: limits.kv_value_bytes_max,
            keys_max: limits.kv_keys_max,
        }
    }
}

/// A per-app key-value store. Every call names the app; `now_ms` is the caller's clock (Unix
/// milliseconds), against which expiry times are compared, so tests can move time.
pub trait KvStore: Send + Sync {
    /// The value of `key`, or `None` if absent or expired.
    fn kv_get(&self, app: &str, key: &str, now_ms: u64) -> StoreResult<Option<Value>>;

    /// Sets `key` to `value`, expiring `ttl_ms` after `now_ms` if given (else never).
    /// `Invalid` if the key is empty or too long, the value too large, or the key is new and
    /// the app already holds `keys_max` live keys.
    fn kv_set(
        &self,
        app: &str,
        key: &str,
        value: &Value,
        ttl_ms: Option<u64>,
        now_ms: u64,
        limits: &KvLimits,
    ) -> StoreResult<()>;

    /// Deletes `key`; `false` if it was absent or expired.
    fn kv_delete(&self, app: &str, key: &str, now_ms: u64) -> StoreResult<bool>;

    /// Live keys starting with `prefix`, sorted by bytes, at most `limit`.
    fn kv_list(
        &self,
        app: &str,
        prefix: &str,
        limit: usize,
        now_ms: u64,
    ) -> StoreResult<Vec<String>>;

    /// Adds `by` to the integer at `key` (absent or expired counts as 0) and returns the new
    /// value, atomically. A set TTL is kept. `Invalid` if the value is not an integer, the sum
    /// overflows, or the key is new and the app is full.
    fn kv_incr(
        &self,
        app: &str,
        key: &str,
        by: i64,
        now_ms: u64,
        limits: &KvLimits,
    ) -> StoreResult<i64>;
}

/// What started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    /// A public HTTP request.
    Http,
    /// A cron schedule.
    Cron,
    /// An event emitted by another script.
    Event,
}

impl TriggerKind {
    /// `http`, `cron` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Http => "http",
            TriggerKind::Cron => "cron",
            TriggerKind::Event => "event",
        }
    }
}

/// One line a script logged with `log::info/warn/error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The message (truncated to the line bound).
    pub message: String,
}

/// What one invocation left behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// The request id (also `x-request-id` for HTTP invocations).
    pub request_id: String,
    /// Start time, Unix milliseconds.
    pub ts_ms: u64,
    /// The app.
    pub app: String,
    /// The script that ran.
    pub script: String,
    /// What started it.
    pub trigger: TriggerKind,
    /// The HTTP status it answered (for cron and event runs: what it would have answered).
    pub status: u16,
    /// Wall time of the run, microseconds.
    pub duration_us: u64,
    /// Rhai operations used.
    pub operations: u64,
    /// Peak net heap bytes allocated.
    pub heap_peak_bytes: u64,
    /// The public error code, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its log lines, in order.
    #[serde(default)]
    pub lines: Vec<LogLine>,
}

/// Where the engine pool hands finished invocations. Must never block or fail the caller: an
/// implementation that cannot take a record drops it (and counts that).
pub trait InvocationSink: Send + Sync {
    /// Takes one record.
    fn record(&self, record: InvocationRecord);

    /// Takes several records at once. Engines hand records over in batches, so a writer
    /// thread is woken once per batch, not once per request.
    fn record_batch(&self, records: Vec<InvocationRecord>) {
        for r in records {
            self.record(r);
        }
    }
}

/// Keeps invocation records per app.
pub trait LogStore: Send + Sync {
    /// Appends records (any apps, in order) in one write, then drops each touched app's oldest
    /// records beyond `per_app_max`. Records of apps that do not exist are dropped.
    fn append_invocations(
        &self,
        records: &[InvocationRecord],
        per_app_max: usize,
    ) -> StoreResult<()>;

    /// Up to `limit` of `app`'s records with a sequence number greater than `after` (all if
    /// `None`), oldest first; with no `after`, the newest `limit`. `NotFound` if the app is
    /// missing.
    fn invocations(
        &self,
        app: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<(u64, InvocationRecord)>>;
}

/// A cron schedule of an app: run `script` at every time `cron` matches (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Its name within the app.
    pub name: String,
    /// Five fields (minute hour day month weekday) or six with seconds first.
    pub cron: String,
    /// The endpoint script to run.
    pub script: String,
}

/// An event trigger of an app: when a script of the app emits `event`, run `script`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The event name.
    pub event: String,
    /// The endpoint script to run with the event.
    pub script: String,
}
