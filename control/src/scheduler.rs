//! Cron schedules: the thread that runs each app's scheduled scripts at their due times.
//!
//! Owns: parsing cron expressions ([`parse_cron`]: five fields, or six with seconds first, UTC,
//! by the `croner` crate), the `picloud-scheduler` thread, and the catch-up rule. The thread
//! keeps each schedule's next due time, sleeps until the earliest one (blocked in `recv_timeout`
//! on a channel: no polling; with no schedules at all it blocks in `recv` with no timeout, so an
//! idle node without schedules has no wake-ups), and is woken early only when a new catalog is
//! published (schedules may have changed) or the node stops.
//!
//! At a due time it first claims the run in the store (`Store::claim_schedule_run`, a
//! conditional upsert: exactly one node of a cluster wins each due time), then queues the
//! script on the engine pool like any other job (same limits; the run lands in the invocation
//! log with trigger `cron`). Nobody waits for its response.
//!
//! Catch-up rule: due times are computed forward from when the node (or the schedule) started,
//! so a node that was down fires no burst of missed runs; a due time at which no node was up
//! (or the store was unreachable, so no run could be claimed) is skipped, and the schedule goes
//! on at its next due time.
//!
//! Does not own: storing schedules (the stores), running scripts (the pool), or the catalog.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use picloud_core::{ErrorCode, ScriptKind, Store};
use picloud_worker::dispatch::{Live, next_request_id};
use picloud_worker::engine::{Job, Origin, Refusal, Refused, ScriptRequest, Submitter};
use picloud_worker::metrics::AppStats;

/// Parses a cron expression: `minute hour day-of-month month day-of-week`, or with a leading
/// seconds field; names (`MON`, `JAN`) and `*/n` steps as in standard cron; no year field.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr.trim())
        .map_err(|e| format!("cron {expr:?}: {e}"))
}

/// The first due time of `cron` strictly after `after_ms` (Unix ms), if any.
pub fn next_due_ms(cron: &Cron, after_ms: u64) -> Option<u64> {
    // Cron works in whole seconds: search from the start of `after_ms`'s second (croner keeps
    // a start time's milliseconds otherwise). Exclusive, so the result is after `after_ms`.
    let second_ms = after_ms - after_ms % 1000;
    let after = DateTime::<Utc>::from_timestamp_millis(i64::try_from(second_ms).ok()?)?;
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

/// One schedule as the thread tracks it.
struct Tracked {
    cron_expr: String,
    cron: Cron,
    next_due_ms: u64,
}

/// The running scheduler. Stop it with [`Scheduler::stop`].
pub struct Scheduler {
    stopping: Arc<AtomicBool>,
    wake: Sender<()>,
    thread: JoinHandle<()>,
}

impl Scheduler {
    /// Starts the thread. `changed` receives a message whenever a new catalog goes live.
    pub fn start(
        live: Live,
        store: Arc<dyn Store>,
        submitter: Submitter,
        wake: Sender<()>,
        changed: Receiver<()>,
    ) -> std::io::Result<Scheduler> {
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name("picloud-sched".into())
                .spawn(move || run(&live, store.as_ref(), &submitter, &changed, &stopping))?
        };
        Ok(Scheduler {
            stopping,
            wake,
            thread,
        })
    }

    /// Stops and joins the thread (it is never busy for long: a store claim at most).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.wake.try_send(());
        if self.thread.join().is_err() {
            log::error!("scheduler thread panicked");
        }
    }
}

fn run(
    live: &Live,
    store: &dyn Store,
    submitter: &Submitter,
    changed: &Receiver<()>,
    stopping: &AtomicBool,
) {
    let mut tracked: HashMap<(String, String), Tracked> = HashMap::new();
    loop {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = picloud_core::now_ms();
        refresh(live, &mut tracked, now);
        // Fire what is due, then move each fired schedule to its next due time after now
        // (never to a missed one: no bursts).
        for ((app, name), t) in tracked.iter_mut() {
            if t.next_due_ms <= now {
                fire(live, store, submitter, app, name, t.next_due_ms);
                t.next_due_ms = next_due_ms(&t.cron, now.max(t.next_due_ms)).unwrap_or(u64::MAX);
            }
        }
        let earliest = tracked.values().map(|t| t.next_due_ms).min();
        let woken = match earliest {
            None | Some(u64::MAX) => changed.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(due) => {
                let wait = Duration::from_millis(due.saturating_sub(picloud_core::now_ms()));
                changed.recv_timeout(wait)
            }
        };
        if let Err(RecvTimeoutError::Disconnected) = woken {
            return;
        }
    }
}

/// Brings the tracked set in line with the live catalog: new or changed schedules get their
/// first due time after `now`; removed ones are dropped; unchanged ones keep theirs.
fn refresh(live: &Live, tracked: &mut HashMap<(String, String), Tracked>, now: u64) {
    let catalog = live.current();
    let mut seen = std::collections::HashSet::new();
    for app in catalog.apps() {
        for s in &app.schedules {
            let key = (app.name.clone(), s.name.clone());
            seen.insert(key.clone());
            if tracked.get(&key).is_some_and(|t| t.cron_expr == s.cron) {
                continue;
            }
            match parse_cron(&s.cron) {
                Ok(cron) => {
                    let next = next_due_ms(&cron, now).unwrap_or(u64::MAX);
                    tracked.insert(
                        key,
                        Tracked {
                            cron_expr: s.cron.clone(),
                            cron,
                            next_due_ms: next,
                        },
                    );
                }
                Err(e) => log::warn!("app {}: schedule {}: {e}", app.name, s.name),
            }
        }
    }
    tracked.retain(|k, _| seen.contains(k));
}

/// Claims and queues one due run.
fn fire(live: &Live, store: &dyn Store, submitter: &Submitter, app: &str, name: &str, due: u64) {
    match store.claim_schedule_run(app, name, due) {
        Ok(true) => {}
        Ok(false) => return, // another node has it
        Err(e) => {
            log::warn!("app {app}: schedule {name}: not run at {due}: cannot claim it: {e}");
            return;
        }
    }
    let catalog = live.current();
    let Some(app_entry) = catalog.app(app) else {
        return;
    };
    let Some(schedule) = app_entry.schedules.iter().find(|s| s.name == name) else {
        return;
    };
    let Some(script) = app_entry
        .scripts
        .get(&schedule.script)
        .filter(|s| s.kind == ScriptKind::Endpoint)
    else {
        log::warn!(
            "app {app}: schedule {name}: no endpoint {:?}",
            schedule.script
        );
        return;
    };
    let job = Job {
        app: app_entry.clone(),
        script: script.clone(),
        request: ScriptRequest {
            id: next_request_id(),
            method: "CRON".into(),
            path: "/".into(),
            ..ScriptRequest::default()
        },
        reply: None,
        origin: Origin::Cron {
            schedule: name.to_string(),
            due_ms: due,
        },
    };
    // Not run now means not run for this due time (the claim is taken): say so in the log,
    // and count a refused run in the app's errors like a refused request.
    match submitter.submit(job) {
        Ok(()) => {}
        Err(Refused {
            why: Refusal::Quarantined { retry_after_s },
            ..
        }) => {
            log::info!(
                "app {app}: schedule {name}: run at {due} skipped: app quarantined \
                 (cool-down ends in {retry_after_s} s)"
            );
            if let Some(stats) = AppStats::of(app_entry) {
                stats.count_error(ErrorCode::AppQuarantined);
            }
        }
        Err(r) => {
            log::warn!(
                "app {app}: schedule {name}: run at {due} dropped: {}",
                r.why.as_str()
            );
            if let Some(stats) = AppStats::of(app_entry) {
                stats.count_error(ErrorCode::Overloaded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_expressions() {
        let every_minute = parse_cron("* * * * *").expect("5 fields");
        // 2026-01-01T00:00:30Z → next is 00:01:00.
        let t = 1_767_225_630_000;
        assert_eq!(next_due_ms(&every_minute, t), Some(1_767_225_660_000));
        let every_second = parse_cron("* * * * * *").expect("6 fields");
        assert_eq!(next_due_ms(&every_second, t), Some(t + 1_000));
        assert_eq!(next_due_ms(&every_second, t + 481), Some(t + 1_000));
        let weekdays = parse_cron("0 9 * * MON-FRI").expect("names");
        let next = next_due_ms(&weekdays, t).expect("next");
        assert!(next > t);
        for bad in ["", "* * *", "61 * * * *", "* * * * * * *", "nope"] {
            assert!(parse_cron(bad).is_err(), "{bad:?}");
        }
    }
}
