//! Per-app request statistics: what answers "which app is hurting"; and [`AppState`], everything
//! the data plane keeps per app across catalog swaps (these stats, the app's engine-pool
//! [`Lane`] and its quarantine [`Breaker`]), attached to the catalog's app.
//!
//! Owns: [`AppStats`] (one per app in the live catalog: responses by status class, a
//! duration histogram, errors by public error code, limit hits by kind, all relaxed atomics)
//! and [`AppRegistry`] (app name → its `AppStats`, so counters survive catalog swaps and an
//! app deleted from the catalog loses its series), plus their Prometheus text. Each
//! `AppStats` also holds the app's last 15 minutes ([`RecentTraffic`], `recent.rs`),
//! allocated on the app's first request and dropped with the stats. Does not own: when things
//! are counted (the dispatcher and the engine pool call in), node-wide counters
//! (`metrics/mod.rs`), or the ring's layout and reading (`recent.rs`).
//!
//! Why an `Arc<AppStats>` attached to the catalog's app instead of a map looked up per request:
//! the dispatcher already holds the resolved `CatalogApp`, so reaching its stats is a pointer
//! read and a type check (`AppSlot::get`), with no lock, hash or allocation on the request
//! path. The registry's mutex is taken only when a catalog goes live (admin writes, sync) and
//! when `/metrics` is rendered. Label cardinality is bounded by the catalog: the registry
//! holds exactly the live catalog's apps. A request that started on an older catalog still
//! counts into the `AppStats` it resolved; if its app was deleted meanwhile, that count is
//! simply dropped with the stats.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use once_cell::race::OnceBox;
use parking_lot::Mutex;
use picloud_core::{Catalog, CatalogApp, ErrorCode, LimitKind};

use super::histogram::{Histogram, HistogramSnapshot};
use super::recent::{self, RecentTraffic, Window};
use crate::engine::{Breaker, Lane};

/// What the data plane keeps per app, by name, across catalog swaps: reached from the resolved
/// `CatalogApp` through its `AppSlot` (a pointer read, no lock). The lane and the breaker are
/// per node and in memory only (nodes share nothing but the database).
#[derive(Default)]
pub struct AppState {
    /// Counters and the recent-traffic ring.
    pub stats: AppStats,
    /// The app's jobs waiting for an engine (`engine/fair.rs`).
    pub lane: Arc<Lane>,
    /// The app's quarantine (`engine/breaker.rs`).
    pub breaker: Breaker,
}

impl AppState {
    /// The state attached to `app` by the live catalog, if any (catalogs never made live have
    /// none: their jobs share the pool's default lane and have no breaker).
    pub fn of(app: &CatalogApp) -> Option<&AppState> {
        app.attached.get::<AppState>()
    }
}

/// The error codes a routed request or a run can end with, in the order they are rendered.
/// Codes answered before routing (framing, 404/405) are not per app.
pub const APP_ERROR_CODES: [ErrorCode; 6] = [
    ErrorCode::ScriptError,
    ErrorCode::LimitExceeded,
    ErrorCode::Timeout,
    ErrorCode::Overloaded,
    ErrorCode::AppQuarantined,
    ErrorCode::Internal,
];

/// Every limit kind, in the order they are rendered.
pub const LIMIT_KINDS: [LimitKind; 4] = [
    LimitKind::Operations,
    LimitKind::Memory,
    LimitKind::Size,
    LimitKind::Depth,
];

fn error_slot(code: ErrorCode) -> Option<usize> {
    APP_ERROR_CODES.iter().position(|&c| c == code)
}

fn limit_slot(kind: LimitKind) -> usize {
    match kind {
        LimitKind::Operations => 0,
        LimitKind::Memory => 1,
        LimitKind::Size => 2,
        LimitKind::Depth => 3,
    }
}

/// One app's counters. Requests and the duration histogram count public HTTP requests (from
/// the dispatcher's view: queue wait included); errors and limit hits count every run of the
/// app's scripts (HTTP, cron, events) plus the requests refused `overloaded`.
#[derive(Default)]
pub struct AppStats {
    responses_by_class: [AtomicU64; 5],
    duration: Histogram,
    errors: [AtomicU64; APP_ERROR_CODES.len()],
    limits: [AtomicU64; LIMIT_KINDS.len()],
    /// The last 15 minutes of public requests, built on the first one. `OnceBox` is a
    /// compare-and-swap of a pointer: two threads racing on an app's first request both
    /// allocate and the loser frees its copy, so no thread ever waits (a coroutine must not
    /// block its OS thread).
    recent: OnceBox<RecentTraffic>,
}

/// One app's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSnapshot {
    /// Responses by status class: index 0 is 1xx, 4 is 5xx.
    pub responses_by_class: [u64; 5],
    /// Request durations.
    pub duration: HistogramSnapshot,
    /// Errors, in [`APP_ERROR_CODES`] order.
    pub errors: [u64; APP_ERROR_CODES.len()],
    /// Limit hits, in [`LIMIT_KINDS`] order.
    pub limits: [u64; LIMIT_KINDS.len()],
}

impl AppStats {
    /// The stats attached to `app` by the live catalog, if any (catalogs never made live, e.g.
    /// in benches, have none: nothing is counted).
    pub fn of(app: &CatalogApp) -> Option<&AppStats> {
        AppState::of(app).map(|s| &s.stats)
    }

    /// Counts one public response and its duration since `started`, in the totals and in the
    /// last 15 minutes (an error there is a status ≥ 500; the duration is the same one the
    /// histogram gets, read with one clock read that also gives the second).
    pub fn record_request(&self, status: u16, started: std::time::Instant) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses_by_class.get(usize::from(i)))
        {
            c.fetch_add(1, Relaxed);
        }
        let ended = std::time::Instant::now();
        let us =
            u64::try_from(ended.saturating_duration_since(started).as_micros()).unwrap_or(u64::MAX);
        self.duration.observe_us(us);
        self.recent
            .get_or_init(|| Box::new(RecentTraffic::new()))
            .record(recent::unix_s_at(ended), status >= 500, us);
    }

    /// Adds this app's window ending at epoch second `now_s` into `into`; `false` (nothing
    /// added) if the app has had no request since it got these stats.
    pub fn add_recent(&self, now_s: u64, into: &mut Window) -> bool {
        match self.recent.get() {
            Some(r) => {
                r.add_to(now_s, into);
                true
            }
            None => false,
        }
    }

    /// Whether the app's ring has been allocated (it has had a public request).
    pub fn has_recent(&self) -> bool {
        self.recent.get().is_some()
    }

    /// Counts one error answer (codes outside [`APP_ERROR_CODES`] are not per app).
    pub fn count_error(&self, code: ErrorCode) {
        if let Some(i) = error_slot(code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one limit hit (its `limit_exceeded` error is counted by [`count_error`]).
    ///
    /// [`count_error`]: AppStats::count_error
    pub fn count_limit(&self, kind: LimitKind) {
        self.limits[limit_slot(kind)].fetch_add(1, Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> AppSnapshot {
        AppSnapshot {
            responses_by_class: std::array::from_fn(|i| self.responses_by_class[i].load(Relaxed)),
            duration: self.duration.snapshot(),
            errors: std::array::from_fn(|i| self.errors[i].load(Relaxed)),
            limits: std::array::from_fn(|i| self.limits[i].load(Relaxed)),
        }
    }
}

impl AppSnapshot {
    /// Errors with `code` (0 for codes that are not per app).
    pub fn errors_of(&self, code: ErrorCode) -> u64 {
        error_slot(code).map_or(0, |i| self.errors[i])
    }

    /// Hits of limit `kind`.
    pub fn limit_hits(&self, kind: LimitKind) -> u64 {
        self.limits[limit_slot(kind)]
    }
}

/// App name → state, for exactly the apps of the live catalog.
#[derive(Default)]
pub struct AppRegistry {
    /// Ordered, so `/metrics` lists apps the same way every time.
    apps: Mutex<BTreeMap<String, Arc<AppState>>>,
}

impl AppRegistry {
    /// Attaches stats to every app of `catalog` (an app keeps the stats it had under an
    /// earlier catalog) and forgets apps `catalog` does not have. Call before the catalog goes
    /// live, so no request sees it without stats. Runs at each catalog swap, not per request.
    pub fn attach(&self, catalog: &Catalog) {
        let mut apps = self.apps.lock();
        let mut kept = BTreeMap::new();
        for app in catalog.apps() {
            let stats = apps.remove(&app.name).unwrap_or_default();
            // Already set when an app object is reused by a later catalog: same stats then.
            let _ = app.attached.set(stats.clone());
            kept.insert(app.name.clone(), stats);
        }
        *apps = kept;
    }

    /// A snapshot of one app's counters, if it is in the live catalog.
    pub fn snapshot(&self, app: &str) -> Option<AppSnapshot> {
        self.apps.lock().get(app).map(|s| s.stats.snapshot())
    }

    /// One app's state on this node, if it is in the live catalog.
    pub fn state(&self, app: &str) -> Option<Arc<AppState>> {
        self.apps.lock().get(app).cloned()
    }

    /// Lifts the quarantine of each named app (they changed, or an admin asked). Returns the
    /// apps whose breaker was open.
    pub fn lift_quarantines<'a>(&self, apps: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let states = self.apps.lock();
        apps.into_iter()
            .filter(|a| states.get(*a).is_some_and(|s| s.breaker.lift()))
            .map(str::to_string)
            .collect()
    }

    /// The live catalog's apps and their stats, by name. The lock is held only to clone the
    /// list: reading the rings happens after it is released.
    pub fn apps(&self) -> Vec<(String, Arc<AppState>)> {
        self.apps
            .lock()
            .iter()
            .map(|(name, s)| (name.clone(), s.clone()))
            .collect()
    }

    /// Appends every per-app metric family (each family's series grouped under its HELP and
    /// TYPE, as the text format requires).
    pub fn render(&self, out: &mut String) {
        let apps: Vec<(String, AppSnapshot, bool, u64)> = self
            .apps
            .lock()
            .iter()
            .map(|(name, s)| {
                (
                    escape_label(name),
                    s.stats.snapshot(),
                    s.breaker.is_open(),
                    s.breaker.openings(),
                )
            })
            .collect();
        out.push_str(
            "# HELP picloud_app_responses_total Public responses of an app's routes by status class.\n\
             # TYPE picloud_app_responses_total counter\n",
        );
        for (app, s, ..) in &apps {
            for (i, n) in s.responses_by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "picloud_app_responses_total{{app=\"{app}\",class=\"{}xx\"}} {n}",
                    i + 1
                );
            }
        }
        out.push_str(
            "# HELP picloud_app_request_duration_seconds Public request duration per app, from \
             routing to the reply (queue wait included).\n\
             # TYPE picloud_app_request_duration_seconds histogram\n",
        );
        for (app, s, ..) in &apps {
            s.duration.render(
                out,
                "picloud_app_request_duration_seconds",
                &format!("app=\"{app}\""),
            );
        }
        out.push_str(
            "# HELP picloud_app_errors_total Error answers of an app's runs by public error code.\n\
             # TYPE picloud_app_errors_total counter\n",
        );
        for (app, s, ..) in &apps {
            for (code, n) in APP_ERROR_CODES.iter().zip(s.errors) {
                let _ = writeln!(
                    out,
                    "picloud_app_errors_total{{app=\"{app}\",code=\"{}\"}} {n}",
                    code.as_str()
                );
            }
        }
        out.push_str(
            "# HELP picloud_app_limit_hits_total Runs of an app stopped by a limit, by kind.\n\
             # TYPE picloud_app_limit_hits_total counter\n",
        );
        for (app, s, ..) in &apps {
            for (kind, n) in LIMIT_KINDS.iter().zip(s.limits) {
                let _ = writeln!(
                    out,
                    "picloud_app_limit_hits_total{{app=\"{app}\",limit=\"{}\"}} {n}",
                    kind.as_str()
                );
            }
        }
        out.push_str(
            "# HELP picloud_app_quarantined 1 while the app is quarantined on this node (its \
             recent runs kept failing with timeout or limit_exceeded), else 0.\n\
             # TYPE picloud_app_quarantined gauge\n",
        );
        for (app, _, open, _) in &apps {
            let _ = writeln!(
                out,
                "picloud_app_quarantined{{app=\"{app}\"}} {}",
                u8::from(*open)
            );
        }
        out.push_str(
            "# HELP picloud_app_quarantine_openings_total Times the app's quarantine opened on \
             this node (reopenings after a failed run at the end of a cool-down included).\n\
             # TYPE picloud_app_quarantine_openings_total counter\n",
        );
        for (app, _, _, n) in &apps {
            let _ = writeln!(
                out,
                "picloud_app_quarantine_openings_total{{app=\"{app}\"}} {n}"
            );
        }
    }
}

/// A label value with `\`, `"` and newlines escaped (app names cannot contain them today;
/// this keeps the output valid if that rule ever loosens).
pub(crate) fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_allocated_on_the_first_request_and_counts_5xx_as_errors() {
        let stats = AppStats::default();
        assert!(!stats.has_recent(), "an app without traffic has no ring");
        let mut w = Window::new();
        assert!(!stats.add_recent(recent::now_s(), &mut w));
        let started = std::time::Instant::now();
        for status in [200, 404, 500, 503] {
            stats.record_request(status, started);
        }
        assert!(stats.has_recent());
        assert!(stats.add_recent(recent::now_s(), &mut w));
        assert_eq!((w.total_requests(), w.total_errors()), (4, 2));
        // The ring and the Prometheus histogram saw the same requests.
        assert_eq!(stats.snapshot().duration.count, 4);
        assert_eq!(w.merged_latency().iter().sum::<u64>(), 4);
    }
}
