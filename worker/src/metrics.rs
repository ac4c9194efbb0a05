//! Process-wide counters of the data plane, rendered as Prometheus text by the admin API.
//!
//! Owns: a fixed set of relaxed atomic counters, bumped once per public response (a handful of
//! uncontended atomic adds: no locks, no allocation, nothing when idle). Does not own: any
//! labels beyond status class and error code, or histograms.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use picloud_core::ErrorCode;

static RESPONSES_BY_CLASS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static OVERLOADED: AtomicU64 = AtomicU64::new(0);
static SCRIPT_RUNS: AtomicU64 = AtomicU64::new(0);

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

/// The counters in Prometheus text format.
pub fn render() -> String {
    let mut out = String::from(
        "# HELP picloud_responses_total Public responses by status class.\n\
         # TYPE picloud_responses_total counter\n",
    );
    for (i, c) in RESPONSES_BY_CLASS.iter().enumerate() {
        out.push_str(&format!(
            "picloud_responses_total{{class=\"{}xx\"}} {}\n",
            i + 1,
            c.load(Relaxed)
        ));
    }
    out.push_str(&format!(
        "# HELP picloud_script_runs_total Jobs handed to the engine pool.\n\
         # TYPE picloud_script_runs_total counter\n\
         picloud_script_runs_total {}\n\
         # HELP picloud_rejected_total Requests answered {} because the job queue was full.\n\
         # TYPE picloud_rejected_total counter\n\
         picloud_rejected_total {}\n",
        SCRIPT_RUNS.load(Relaxed),
        ErrorCode::Overloaded.as_str(),
        OVERLOADED.load(Relaxed),
    ));
    out
}
