//! The one [`Limits`] type: every bound of a node, with units in the names.
//!
//! Owns: the defaults (from DESIGN.md), the hard maxima an app may not exceed, and the
//! per-app [`LimitOverrides`] merged over the node's limits.
//! Does not own: enforcement. The HTTP layer enforces the `http` bounds, the engine pool the
//! script bounds; each enforcement point has a test that hits the bound.

use serde::{Deserialize, Serialize};

/// Every bound a node enforces. Built once from config ([`Limits::default`] plus knobs), then
/// passed down by value; an app's effective limits are `node.with_overrides(&app.limits)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    // --- HTTP (node-wide) ---
    /// Most request headers accepted; more → 431.
    pub headers_max: usize,
    /// Most bytes in the request line plus headers; more → 431.
    pub header_bytes_max: usize,
    /// Longest request target; longer → 414.
    pub uri_bytes_max: usize,
    /// Largest request body (after chunked decoding); larger → 413.
    pub body_bytes_max: usize,
    /// Time allowed to receive a request's line and headers once its first byte arrived.
    pub header_read_timeout_ms: u64,
    /// Time allowed between two reads of a request body.
    pub body_read_timeout_ms: u64,
    /// Time an idle keep-alive connection is kept open waiting for the next request.
    pub idle_timeout_ms: u64,
    /// Most open public connections; further connections are accepted and closed at once.
    pub connections_max: usize,
    /// How long a draining node waits for in-flight requests before exiting.
    pub drain_timeout_ms: u64,

    // --- engine pool (node-wide) ---
    /// Jobs waiting for an engine thread; a full queue answers 503 `overloaded` at once.
    pub queue_len_max: usize,
    /// Compiled ASTs kept in the shared LRU cache.
    pub ast_cache_entries_max: usize,
    /// Evaluated modules kept in the shared LRU cache, keyed by app, module and the versions
    /// of everything it imports (`PICLOUD_MODULE_CACHE_SIZE`, the name API.md gives it).
    pub module_cache_size: usize,
    /// Versions kept in each script's history; older ones are dropped on save.
    pub script_versions_max: usize,

    // --- control plane: PostgreSQL (node-wide) ---
    /// Longest wait for a PostgreSQL connection to open; past it the attempt fails
    /// (`store_unavailable` for an admin call, a retry for the sync daemon).
    pub db_connect_timeout_ms: u64,
    /// Idle time before TCP keepalive probes start on PostgreSQL connections, and the gap
    /// between probes; a dead peer is noticed after about 4 times this, with no polling.
    pub db_keepalive_ms: u64,
    /// Cap of the sync daemon's reconnect backoff (it starts at 50 ms and doubles).
    pub sync_retry_max_ms: u64,

    // --- SDK services (node-wide) ---
    /// Longest KV key, bytes.
    pub kv_key_bytes_max: usize,
    /// Largest KV value (as JSON text), bytes.
    pub kv_value_bytes_max: usize,
    /// Most live KV keys per app.
    pub kv_keys_max: usize,
    /// Most KV writes (`set`, `delete`, `incr`) the embedded store groups into one durable
    /// commit; writers arriving while a commit runs wait for the next one.
    pub kv_batch_writes_max: usize,
    /// Invocation records kept per app; older ones are dropped.
    pub log_records_max: usize,
    /// Log lines kept per invocation; later ones are counted, not kept.
    pub log_lines_max: usize,
    /// Longest log line kept, bytes (longer ones are cut).
    pub log_line_bytes_max: usize,
    /// Invocation records waiting for the log writer; a full queue drops records (counted),
    /// never slows a request.
    pub log_queue_len_max: usize,
    /// Apps on the node (cluster), checked when an app is created.
    pub apps_max: usize,
    /// Scripts (endpoints and modules) per app.
    pub app_scripts_max: usize,
    /// Rows of each of an app's tables: routes, schedules, triggers.
    pub app_table_rows_max: usize,
    /// Variables (env) per app.
    pub app_env_max: usize,
    /// Audit log entries kept (node-wide; shared by a cluster on PostgreSQL); older ones are
    /// dropped.
    pub audit_entries_max: usize,
    /// How deep events may trigger events (`events::emit` from a triggered script, ...).
    pub event_depth_max: usize,
    /// After a run whose heap peak reached this many bytes, the engine pool hands freed
    /// memory back to the OS when it next goes idle (glibc `malloc_trim`; see
    /// `worker/src/engine/alloc.rs`). Above `heap_bytes_max` (and every app's), it never does.
    pub idle_trim_bytes_min: usize,

    // --- fairness and quarantine (node-wide; `concurrency_max` may be overridden per app) ---
    /// Engines one app may use at once. Past it the app's jobs wait in its own queue; with
    /// `concurrency_max` plus its share of the queue (`queue_len_max` × `concurrency_max` ÷
    /// engines, at least 1) in flight, more → 503 `overloaded` for that app only. The node
    /// default is a fair share, half the engines (at least 1), set by the config when no knob
    /// is given; each node clamps it to its engines.
    pub concurrency_max: usize,
    /// Failed runs (`timeout` or `limit_exceeded`) among an app's last
    /// `quarantine_window_runs` runs that quarantine it.
    pub quarantine_failures_min: usize,
    /// How many of an app's latest runs the quarantine counts over (at most 64).
    pub quarantine_window_runs: usize,
    /// First cool-down of a quarantine; it doubles each time the run let through after it
    /// fails again.
    pub quarantine_cooldown_ms: u64,
    /// Longest cool-down the doubling reaches.
    pub quarantine_cooldown_max_ms: u64,

    // --- script (per app, may be overridden) ---
    /// Wall-clock deadline of one invocation; past it → 504 `timeout`.
    pub timeout_ms: u64,
    /// Rhai operations one invocation may run.
    pub operations_max: u64,
    /// Net heap bytes one invocation may allocate.
    pub heap_bytes_max: usize,
    /// Deepest function call nesting.
    pub call_depth_max: usize,
    /// Deepest expression nesting (at compile time).
    pub expr_depth_max: usize,
    /// Longest string a script may build.
    pub string_bytes_max: usize,
    /// Most elements in one array.
    pub array_len_max: usize,
    /// Most entries in one object map.
    pub map_len_max: usize,
    /// Most modules one invocation may load.
    pub modules_max: usize,
    /// Largest script source accepted by the admin API.
    pub source_bytes_max: usize,
    /// Largest deploy bundle (`POST /v1/apps/APP/deploy`, all scripts together) the admin API
    /// reads; larger → 413.
    pub deploy_bytes_max: usize,
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            headers_max: 64,
            header_bytes_max: 64 * KIB,
            uri_bytes_max: 8 * KIB,
            body_bytes_max: MIB,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            connections_max: 10_000,
            drain_timeout_ms: 10_000,
            queue_len_max: 256,
            ast_cache_entries_max: 1024,
            module_cache_size: 512,
            script_versions_max: 100,
            kv_key_bytes_max: 512,
            kv_value_bytes_max: 64 * KIB,
            kv_keys_max: 10_000,
            kv_batch_writes_max: 64,
            log_records_max: 1_000,
            log_lines_max: 100,
            log_line_bytes_max: 2 * KIB,
            log_queue_len_max: 8_192,
            event_depth_max: 4,
            idle_trim_bytes_min: 256 * KIB,
            concurrency_max: 1,
            quarantine_failures_min: 20,
            quarantine_window_runs: 30,
            quarantine_cooldown_ms: 30_000,
            quarantine_cooldown_max_ms: 600_000,
            audit_entries_max: 10_000,
            apps_max: 1_000,
            app_scripts_max: 1_000,
            app_table_rows_max: 1_000,
            app_env_max: 1_000,
            db_connect_timeout_ms: 5_000,
            db_keepalive_ms: 10_000,
            sync_retry_max_ms: 2_000,
            timeout_ms: 1_000,
            operations_max: 10_000_000,
            heap_bytes_max: 32 * MIB,
            call_depth_max: 64,
            expr_depth_max: 64,
            string_bytes_max: MIB,
            array_len_max: 100_000,
            map_len_max: 100_000,
            modules_max: 32,
            source_bytes_max: MIB,
            deploy_bytes_max: 8 * MIB,
        }
    }
}

/// Hard maxima: neither node config nor an app override may go past these.
pub mod max {
    /// Longest wall-clock deadline (30 s, like PHP's default).
    pub const TIMEOUT_MS: u64 = 30_000;
    /// Largest request body a node may be configured for.
    pub const BODY_BYTES: usize = 64 * super::MIB;
    /// Largest per-invocation heap.
    pub const HEAP_BYTES: usize = 1024 * super::MIB;
    /// Most operations per invocation.
    pub const OPERATIONS: u64 = 1_000_000_000;
    /// Deepest call nesting; engine threads' stacks are sized for this.
    pub const CALL_DEPTH: usize = 256;
    /// Most engines an app may be allowed at once (the most engine threads a node may have);
    /// each node also clamps an app's `concurrency_max` to its own engine count.
    pub const CONCURRENCY: usize = 1024;
    /// Longest quarantine window: the run outcomes are kept as bits of one `u64`.
    pub const QUARANTINE_WINDOW_RUNS: usize = 64;
}

/// Per-app overrides of the script limits, as stored with the app (`"limits": {...}` in the
/// admin API). Unset fields inherit the node's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// See [`Limits::timeout_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// See [`Limits::operations_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations_max: Option<u64>,
    /// See [`Limits::heap_bytes_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_bytes_max: Option<usize>,
    /// See [`Limits::call_depth_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_depth_max: Option<usize>,
    /// See [`Limits::string_bytes_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_bytes_max: Option<usize>,
    /// See [`Limits::array_len_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_len_max: Option<usize>,
    /// See [`Limits::map_len_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_len_max: Option<usize>,
    /// See [`Limits::concurrency_max`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_max: Option<usize>,
}

impl LimitOverrides {
    /// Checks every set value is positive and within the hard maxima. Returns the offending
    /// field's name and why.
    pub fn validate(&self) -> Result<(), String> {
        fn check(name: &str, v: Option<u64>, max: u64) -> Result<(), String> {
            match v {
                Some(0) => Err(format!("{name} must be positive")),
                Some(v) if v > max => Err(format!("{name} must be at most {max}")),
                _ => Ok(()),
            }
        }
        let u = |v: Option<usize>| v.map(|v| v as u64);
        check("timeout_ms", self.timeout_ms, max::TIMEOUT_MS)?;
        check("operations_max", self.operations_max, max::OPERATIONS)?;
        check(
            "heap_bytes_max",
            u(self.heap_bytes_max),
            max::HEAP_BYTES as u64,
        )?;
        check(
            "call_depth_max",
            u(self.call_depth_max),
            max::CALL_DEPTH as u64,
        )?;
        check(
            "string_bytes_max",
            u(self.string_bytes_max),
            max::HEAP_BYTES as u64,
        )?;
        check("array_len_max", u(self.array_len_max), 100_000_000)?;
        check("map_len_max", u(self.map_len_max), 100_000_000)?;
        check(
            "concurrency_max",
            u(self.concurrency_max),
            max::CONCURRENCY as u64,
        )?;
        Ok(())
    }
}

impl Limits {
    /// The effective limits of an app: the node's limits with the app's overrides applied.
    pub fn with_overrides(&self, o: &LimitOverrides) -> Limits {
        let mut l = self.clone();
        l.timeout_ms = o.timeout_ms.unwrap_or(l.timeout_ms).min(max::TIMEOUT_MS);
        l.operations_max = o.operations_max.unwrap_or(l.operations_max);
        l.heap_bytes_max = o.heap_bytes_max.unwrap_or(l.heap_bytes_max);
        l.call_depth_max = o.call_depth_max.unwrap_or(l.call_depth_max);
        l.string_bytes_max = o.string_bytes_max.unwrap_or(l.string_bytes_max);
        l.array_len_max = o.array_len_max.unwrap_or(l.array_len_max);
        l.map_len_max = o.map_len_max.unwrap_or(l.map_len_max);
        l.concurrency_max = o
            .concurrency_max
            .unwrap_or(l.concurrency_max)
            .clamp(1, max::CONCURRENCY);
        l
    }

    /// The node default of [`Limits::concurrency_max`] for a pool of `engines`: half of them,
    /// at least 1, so one busy app leaves the other half to everyone else.
    pub fn fair_concurrency(engines: usize) -> usize {
        (engines / 2).max(1)
    }

    /// The share of the job queue one app may fill while it waits for engines: the queue in
    /// proportion to the engines it may use (`concurrency` out of `engines`), at least 1.
    pub fn app_queue_share(&self, concurrency: usize, engines: usize) -> usize {
        let engines = engines.max(1);
        (self.queue_len_max.saturating_mul(concurrency.min(engines)) / engines).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_are_bounded() {
        let node = Limits::default();
        let o = LimitOverrides {
            timeout_ms: Some(5_000),
            ..Default::default()
        };
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(node.with_overrides(&o).timeout_ms, 5_000);
        assert_eq!(node.with_overrides(&o).operations_max, node.operations_max);

        let too_long = LimitOverrides {
            timeout_ms: Some(max::TIMEOUT_MS + 1),
            ..Default::default()
        };
        assert!(too_long.validate().is_err());
        let zero = LimitOverrides {
            heap_bytes_max: Some(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn fair_share_is_half_the_engines_and_the_queue_in_proportion() {
        assert_eq!(Limits::fair_concurrency(1), 1);
        assert_eq!(Limits::fair_concurrency(2), 1);
        assert_eq!(Limits::fair_concurrency(8), 4);
        let l = Limits::default();
        assert_eq!(l.app_queue_share(1, 2), l.queue_len_max / 2);
        assert_eq!(l.app_queue_share(2, 2), l.queue_len_max);
        // An app allowed more engines than the node has gets the whole queue, no more.
        assert_eq!(l.app_queue_share(16, 2), l.queue_len_max);
        let tiny = Limits {
            queue_len_max: 1,
            ..Limits::default()
        };
        assert_eq!(tiny.app_queue_share(1, 4), 1);
        let o = LimitOverrides {
            concurrency_max: Some(3),
            ..Default::default()
        };
        assert_eq!(l.with_overrides(&o).concurrency_max, 3);
        let zero = LimitOverrides {
            concurrency_max: Some(0),
            ..Default::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn unknown_override_fields_are_rejected() {
        let r: Result<LimitOverrides, _> = serde_json::from_str(r#"{"timeout":5}"#);
        assert!(r.is_err());
    }
}
