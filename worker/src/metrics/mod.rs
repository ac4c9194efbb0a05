//! The data plane's metrics, rendered as Prometheus text by the admin API.
//!
//! Owns: the node-wide counters (public responses by status class, jobs run, requests refused
//! `overloaded`, requests no app answers, KV operations and their durations), [`HttpStats`]
//! (one front end's open connections and timeouts by kind), [`NodeProbes`] (what the admin
//! reads at render time: the pool's busy engines and queue depth, the public front end's
//! stats, the per-app registry), the per-app statistics ([`apps`]) and their last 15 minutes
//! ([`recent`], read by `GET /v1/stats`). Does not own: the
//! control plane's series (catalog revision, AST compiles, log records, sync), which the
//! admin renders next to these, or any timer: every counter is bumped where its event
//! happens, with relaxed atomics (no lock, no allocation), and gauges are read when
//! `/metrics` is scraped, so an idle node does nothing for metrics at all.
//!
//! Node-wide counters are process-wide statics (one process is one node in production; tests
//! that run several nodes in one process see their sum). Per-app stats and HTTP stats belong
//! to their node.

pub mod apps;
pub mod histogram;
pub mod recent;

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use picloud_core::ErrorCode;

pub use apps::{AppRegistry, AppSnapshot, AppState, AppStats};
pub use histogram::{Histogram, HistogramSnapshot};
pub use recent::{RecentTraffic, Window};

use crate::engine::Submitter;

static RESPONSES_BY_CLASS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static OVERLOADED: AtomicU64 = AtomicU64::new(0);
static SCRIPT_RUNS: AtomicU64 = AtomicU64::new(0);
/// Requests no app route answered: [not_found, method_not_allowed].
static UNROUTED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Counts one public response by its status.
pub fn count_response(status: u16) {
    if let Some(c) = (status / 100)
        .checked_sub(1)
        .and_then(|i| RESPONSES_BY_CLASS.get(i as usize))
    {
        c.fetch_add(1, Relaxed);
    }
}

/// Counts one job handed to the engine pool.
pub fn count_script_run() {
    SCRIPT_RUNS.fetch_add(1, Relaxed);
}

/// Counts one request refused because the queue was full.
pub fn count_overloaded() {
    OVERLOADED.fetch_add(1, Relaxed);
}

/// Counts one request answered 404 or 405 by routing. Node-wide: the app may not exist, and
/// labelling by what the client asked for would let clients create series.
pub fn count_unrouted(code: ErrorCode) {
    let slot = match code {
        ErrorCode::MethodNotAllowed => 1,
        _ => 0,
    };
    UNROUTED[slot].fetch_add(1, Relaxed);
}

/// A KV operation of the scripts' SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// `kv::get`.
    Get,
    /// `kv::set`.
    Set,
    /// `kv::delete`.
    Delete,
    /// `kv::list`.
    List,
    /// `kv::incr`.
    Incr,
}

impl KvOp {
    const ALL: [KvOp; 5] = [KvOp::Get, KvOp::Set, KvOp::Delete, KvOp::List, KvOp::Incr];

    /// The `op` label.
    pub fn as_str(self) -> &'static str {
        match self {
            KvOp::Get => "get",
            KvOp::Set => "set",
            KvOp::Delete => "delete",
            KvOp::List => "list",
            KvOp::Incr => "incr",
        }
    }
}

static KV_OPS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static KV_ERRORS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static KV_DURATION: [Histogram; 5] = [const { Histogram::new() }; 5];

/// Counts one KV store call made for a script, its duration since `started` and whether the
/// store failed it.
pub fn count_kv(op: KvOp, started: std::time::Instant, failed: bool) {
    let i = op as usize;
    KV_OPS[i].fetch_add(1, Relaxed);
    if failed {
        KV_ERRORS[i].fetch_add(1, Relaxed);
    }
    KV_DURATION[i].observe_since(started);
}

/// Why a front end cut a connection: the deadline of the wait that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// The request head did not arrive in `header_read_timeout_ms`.
    HeaderRead,
    /// The body stalled for `body_read_timeout_ms`.
    BodyRead,
    /// No next request on a keep-alive connection in `idle_timeout_ms`.
    Idle,
    /// The client did not read its response for `idle_timeout_ms`.
    Write,
}

impl TimeoutKind {
    const ALL: [TimeoutKind; 4] = [
        TimeoutKind::HeaderRead,
        TimeoutKind::BodyRead,
        TimeoutKind::Idle,
        TimeoutKind::Write,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::HeaderRead => "header_read",
            TimeoutKind::BodyRead => "body_read",
            TimeoutKind::Idle => "idle",
            TimeoutKind::Write => "write",
        }
    }
}

/// One front end's connection counters: bumped when a connection opens or closes and when a
/// deadline cuts one (never per request).
#[derive(Default)]
pub struct HttpStats {
    open_connections: AtomicU64,
    timeouts: [AtomicU64; 4],
}

impl HttpStats {
    pub(crate) fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Relaxed);
    }

    pub(crate) fn count_timeout(&self, kind: TimeoutKind) {
        self.timeouts[kind as usize].fetch_add(1, Relaxed);
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Relaxed)
    }

    /// Connections cut by a deadline of `kind` since start.
    pub fn timeouts(&self, kind: TimeoutKind) -> u64 {
        self.timeouts[kind as usize].load(Relaxed)
    }
}

/// What the admin reads at scrape time besides the statics: one node's engine pool, public
/// front end and per-app registry.
#[derive(Clone)]
pub struct NodeProbes {
    /// The engine pool (busy engines, queue depth).
    pub pool: Submitter,
    /// The public front end's connection stats.
    pub public_http: Arc<HttpStats>,
    /// The per-app stats of the live catalog's apps.
    pub apps: Arc<AppRegistry>,
}

impl NodeProbes {
    /// Appends the pool gauges, the public front end's series and every per-app family.
    pub fn render(&self, out: &mut String) {
        let _ = write!(
            out,
            "# HELP picloud_engines_busy Engine threads running a job (not parked).\n\
             # TYPE picloud_engines_busy gauge\n\
             picloud_engines_busy {}\n\
             # HELP picloud_engines Engine threads in the pool.\n\
             # TYPE picloud_engines gauge\n\
             picloud_engines {}\n\
             # HELP picloud_queue_depth Jobs waiting in the engine pool's queue.\n\
             # TYPE picloud_queue_depth gauge\n\
             picloud_queue_depth {}\n\
             # HELP picloud_open_connections Open connections on the public port.\n\
             # TYPE picloud_open_connections gauge\n\
             picloud_open_connections {}\n\
             # HELP picloud_connection_timeouts_total Public connections cut by a deadline, \
             by kind.\n\
             # TYPE picloud_connection_timeouts_total counter\n",
            self.pool.busy_engines(),
            self.pool.engines(),
            self.pool.queue_len(),
            self.public_http.open_connections(),
        );
        for kind in TimeoutKind::ALL {
            let _ = writeln!(
                out,
                "picloud_connection_timeouts_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.public_http.timeouts(kind)
            );
        }
        self.apps.render(out);
    }
}

/// The node-wide counters in Prometheus text format.
pub fn render() -> String {
    let mut out = String::from(
        "# HELP picloud_responses_total Public responses by status class.\n\
         # TYPE picloud_responses_total counter\n",
    );
    for (i, c) in RESPONSES_BY_CLASS.iter().enumerate() {
        let _ = writeln!(
            out,
            "picloud_responses_total{{class=\"{}xx\"}} {}",
            i + 1,
            c.load(Relaxed)
        );
    }
    let _ = write!(
        out,
        "# HELP picloud_script_runs_total Jobs handed to the engine pool.\n\
         # TYPE picloud_script_runs_total counter\n\
         picloud_script_runs_total {}\n\
         # HELP picloud_rejected_total Requests answered {} because the job queue was full.\n\
         # TYPE picloud_rejected_total counter\n\
         picloud_rejected_total {}\n\
         # HELP picloud_unrouted_total Public requests no app route answered (node-wide, no \
         app label).\n\
         # TYPE picloud_unrouted_total counter\n\
         picloud_unrouted_total{{code=\"{}\"}} {}\n\
         picloud_unrouted_total{{code=\"{}\"}} {}\n\
         # HELP picloud_kv_operations_total KV store calls made by scripts, by operation.\n\
         # TYPE picloud_kv_operations_total counter\n",
        SCRIPT_RUNS.load(Relaxed),
        ErrorCode::Overloaded.as_str(),
        OVERLOADED.load(Relaxed),
        ErrorCode::NotFound.as_str(),
        UNROUTED[0].load(Relaxed),
        ErrorCode::MethodNotAllowed.as_str(),
        UNROUTED[1].load(Relaxed),
    );
    for op in KvOp::ALL {
        let _ = writeln!(
            out,
            "picloud_kv_operations_total{{op=\"{}\"}} {}",
            op.as_str(),
            KV_OPS[op as usize].load(Relaxed)
        );
    }
    out.push_str(
        "# HELP picloud_kv_errors_total KV store calls by scripts that the store failed.\n\
         # TYPE picloud_kv_errors_total counter\n",
    );
    for op in KvOp::ALL {
        let _ = writeln!(
            out,
            "picloud_kv_errors_total{{op=\"{}\"}} {}",
            op.as_str(),
            KV_ERRORS[op as usize].load(Relaxed)
        );
    }
    out.push_str(
        "# HELP picloud_kv_operation_duration_seconds Duration of the KV store calls made by \
         scripts.\n\
         # TYPE picloud_kv_operation_duration_seconds histogram\n",
    );
    for op in KvOp::ALL {
        KV_DURATION[op as usize].render(
            &mut out,
            "picloud_kv_operation_duration_seconds",
            &format!("op=\"{}\"", op.as_str()),
        );
    }
    out
}
