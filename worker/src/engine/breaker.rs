//! The per-app circuit breaker ("quarantine"): an app whose runs keep failing with `timeout` or
//! `limit_exceeded` stops being run for a cool-down.
//!
//! Owns: [`Breaker`], one per app on this node (in memory, never stored, never shared with other
//! nodes), its window of recent run outcomes, its states (closed; open until a time; half-open
//! with one run let through), the cool-down doubling, and the reason text. Does not own: when it
//! is asked (the pool asks at submit and tells it every run's outcome), what a refusal looks
//! like (the dispatcher answers 503 `app_quarantined`, the scheduler and `events::emit` skip),
//! or lifting it on a catalog change (the registry calls [`Breaker::lift`]).
//!
//! No timer: the window moves when a run ends and the cool-down is compared with the clock when
//! a job is submitted. A healthy app pays one relaxed load per submit (`tripped`) and one per
//! finished run (`dirty`: no failure in the window, so a success changes nothing); the mutex
//! is taken only while the window holds a failure or the breaker is open.
//!
//! States: closed → (the window reaches `quarantine_failures_min` failures) → open until
//! `since + cool-down` → the first job submitted after that is the probe (half-open; others are
//! still refused) → the probe succeeds (anything but `timeout`/`limit_exceeded`): closed, window
//! and doubling reset; it fails: open again with the cool-down doubled (capped at
//! `quarantine_cooldown_max_ms`). An admin's unquarantine or any change of the app closes it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use picloud_core::{ErrorCode, Limits};

/// What the breaker says about a job about to be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Run it (closed).
    Run,
    /// Run it as the half-open probe: its outcome closes or reopens the breaker.
    Probe,
    /// Refuse it: quarantined; retry after this many seconds.
    Refuse {
        /// Seconds until the cool-down ends (at least 1).
        retry_after_s: u64,
    },
}

/// How a run ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Anything but the two failures below (a `script_error` is the app's bug, not a runaway).
    Ok,
    /// The run hit its deadline.
    Timeout,
    /// The run hit an operations, heap, size or depth limit.
    Limit,
}

impl Outcome {
    /// The outcome of a run that ended with `error`.
    pub fn of(error: Option<ErrorCode>) -> Outcome {
        match error {
            Some(ErrorCode::Timeout) => Outcome::Timeout,
            Some(ErrorCode::LimitExceeded) => Outcome::Limit,
            _ => Outcome::Ok,
        }
    }
}

/// An open quarantine, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    /// When it opened (this time), Unix milliseconds.
    pub since_ms: u64,
    /// When the cool-down ends and one run is let through, Unix milliseconds.
    pub until_ms: u64,
    /// Why, in words.
    pub reason: String,
}

/// One app's breaker. See the module comment.
#[derive(Default)]
pub struct Breaker {
    /// Open or half-open. Read without the lock on every submit.
    tripped: AtomicBool,
    /// The window holds at least one failure. Read without the lock after every run.
    dirty: AtomicBool,
    /// Times it opened (reopenings after a failed probe included), for `/metrics`.
    openings: AtomicU64,
    /// Successes skipped by the fast path since the window was last cleared, up to the window
    /// (a plain load and store, not a read-modify-write: racing engines may lose a count; it
    /// only makes the reason's "of the last N runs" exact for a window that started clean).
    clean_runs: AtomicU32,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bit i set: the i-th latest run timed out / hit a limit.
    timeouts: u64,
    limits: u64,
    /// Runs in the window (at most `quarantine_window_runs`).
    runs: u32,
    open: Option<Open>,
    /// Openings since it was last closed by a good probe or lifted: the cool-down is the base
    /// doubled this many times minus one.
    streak: u32,
}

struct Open {
    since_ms: u64,
    until_ms: u64,
    reason: String,
    /// The probe is queued or running: everything else is refused until it ends.
    probing: bool,
}

fn window_mask(runs: usize) -> u64 {
    let runs = runs.clamp(1, 64);
    if runs == 64 {
        u64::MAX
    } else {
        (1u64 << runs) - 1
    }
}

fn cooldown_ms(limits: &Limits, streak: u32) -> u64 {
    let doubled = limits
        .quarantine_cooldown_ms
        .saturating_mul(1u64 << streak.saturating_sub(1).min(32));
    doubled.min(
        limits
            .quarantine_cooldown_max_ms
            .max(limits.quarantine_cooldown_ms),
    )
}

impl Breaker {
    /// Whether a job may be queued now; `now_ms` is read only when the breaker is not closed.
    pub fn admit(&self, now_ms: impl FnOnce() -> u64) -> Admit {
        if !self.tripped.load(Relaxed) {
            return Admit::Run;
        }
        let mut inner = self.inner.lock();
        let Some(open) = inner.open.as_mut() else {
            return Admit::Run;
        };
        let now = now_ms();
        if now < open.until_ms {
            return Admit::Refuse {
                retry_after_s: (open.until_ms - now).div_ceil(1000).max(1),
            };
        }
        if open.probing {
            return Admit::Refuse { retry_after_s: 1 };
        }
        open.probing = true;
        Admit::Probe
    }

    /// The probe was refused by the queue after all: the next job may probe instead.
    pub fn probe_not_queued(&self) {
        if let Some(open) = self.inner.lock().open.as_mut() {
            open.probing = false;
        }
    }

    /// Takes one finished run's outcome. Returns a line for the run's log when this run opened
    /// (or reopened) or closed the breaker.
    pub fn record(&self, outcome: Outcome, probe: bool, limits: &Limits) -> Option<String> {
        if !probe {
            if self.tripped.load(Relaxed) {
                // A run queued before the breaker opened: the window starts over when it
                // closes, so this outcome is not kept.
                return None;
            }
            if outcome == Outcome::Ok && !self.dirty.load(Relaxed) {
                // A success into a window without failures changes no failure count; only
                // the number of runs it covers grows, until the window is full.
                let seen = self.clean_runs.load(Relaxed);
                if (seen as usize) < limits.quarantine_window_runs {
                    self.clean_runs.store(seen + 1, Relaxed);
                }
                return None;
            }
        }
        let mut inner = self.inner.lock();
        let now = picloud_core::now_ms();
        if probe {
            let Some(open) = inner.open.as_mut() else {
                return None; // lifted while the probe ran
            };
            if outcome == Outcome::Ok {
                *inner = Inner::default();
                self.clean_runs.store(0, Relaxed);
                self.tripped.store(false, Relaxed);
                self.dirty.store(false, Relaxed);
                return Some("quarantine ended: the run after the cool-down succeeded".into());
            }
            let what = if outcome == Outcome::Timeout {
                ErrorCode::Timeout
            } else {
                ErrorCode::LimitExceeded
            };
            let first = open
                .reason
                .split_once("; first: ")
                .map_or(open.reason.as_str(), |(_, f)| f)
                .to_string();
            inner.streak = inner.streak.saturating_add(1);
            let cooldown = cooldown_ms(limits, inner.streak);
            inner.open = Some(Open {
                since_ms: now,
                until_ms: now.saturating_add(cooldown),
                reason: format!(
                    "the run after the cool-down failed ({}); first: {first}",
                    what.as_str()
                ),
                probing: false,
            });
            self.openings.fetch_add(1, Relaxed);
            return Some(format!(
                "app quarantined again for {} ms: the run after the cool-down failed ({})",
                cooldown,
                what.as_str()
            ));
        }
        if inner.open.is_some() {
            return None;
        }
        if inner.timeouts | inner.limits == 0 {
            // The first failure after a clean stretch: the successes before it are in the
            // window as zero bits already; count them.
            inner.runs = self.clean_runs.swap(0, Relaxed);
        }
        let mask = window_mask(limits.quarantine_window_runs);
        inner.timeouts = ((inner.timeouts << 1) | u64::from(outcome == Outcome::Timeout)) & mask;
        inner.limits = ((inner.limits << 1) | u64::from(outcome == Outcome::Limit)) & mask;
        let window = u32::try_from(limits.quarantine_window_runs.clamp(1, 64)).unwrap_or(64);
        inner.runs = (inner.runs + 1).min(window);
        let dirty = (inner.timeouts | inner.limits) != 0;
        self.dirty.store(dirty, Relaxed);
        if !dirty {
            // The last failure left the window: the fast path counts on from its runs.
            self.clean_runs.store(inner.runs, Relaxed);
        }
        let (t, l) = (inner.timeouts.count_ones(), inner.limits.count_ones());
        if (t + l) as usize >= limits.quarantine_failures_min.max(1) {
            let reason = format!(
                "{} of the last {} runs failed (timeout {t}, limit_exceeded {l})",
                t + l,
                inner.runs
            );
            inner.streak = inner.streak.saturating_add(1);
            let cooldown = cooldown_ms(limits, inner.streak);
            inner.timeouts = 0;
            inner.limits = 0;
            inner.runs = 0;
            self.clean_runs.store(0, Relaxed);
            self.dirty.store(false, Relaxed);
            inner.open = Some(Open {
                since_ms: now,
                until_ms: now.saturating_add(cooldown),
                reason: reason.clone(),
                probing: false,
            });
            self.tripped.store(true, Relaxed);
            self.openings.fetch_add(1, Relaxed);
            return Some(format!("app quarantined for {cooldown} ms: {reason}"));
        }
        None
    }

    /// Closes the breaker and forgets its window and doubling (an admin's unquarantine, or a
    /// change of the app). Returns whether it was open.
    pub fn lift(&self) -> bool {
        if !self.tripped.load(Relaxed) && !self.dirty.load(Relaxed) {
            return false;
        }
        let mut inner = self.inner.lock();
        let was_open = inner.open.is_some();
        *inner = Inner::default();
        self.clean_runs.store(0, Relaxed);
        self.tripped.store(false, Relaxed);
        self.dirty.store(false, Relaxed);
        was_open
    }

    /// The open quarantine, if any (half-open included: `until_ms` is then in the past).
    pub fn quarantine(&self) -> Option<Quarantine> {
        if !self.tripped.load(Relaxed) {
            return None;
        }
        self.inner.lock().open.as_ref().map(|o| Quarantine {
            since_ms: o.since_ms,
            until_ms: o.until_ms,
            reason: o.reason.clone(),
        })
    }

    /// Open or half-open now.
    pub fn is_open(&self) -> bool {
        self.tripped.load(Relaxed)
    }

    /// Times it opened since the app appeared on this node.
    pub fn openings(&self) -> u64 {
        self.openings.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs() -> Limits {
        Limits {
            quarantine_failures_min: 2,
            quarantine_window_runs: 3,
            quarantine_cooldown_ms: 1_000,
            quarantine_cooldown_max_ms: 3_000,
            ..Limits::default()
        }
    }

    #[test]
    fn opens_at_the_threshold_within_the_window_only() {
        let b = Breaker::default();
        let l = knobs();
        // A failure pushed out of a 3-run window by successes does not count.
        assert_eq!(b.record(Outcome::Ok, false, &l), None);
        assert_eq!(b.record(Outcome::Timeout, false, &l), None);
        assert_eq!(b.record(Outcome::Ok, false, &l), None);
        assert_eq!(b.record(Outcome::Ok, false, &l), None);
        assert_eq!(b.record(Outcome::Limit, false, &l), None);
        assert!(!b.is_open());
        let line = b.record(Outcome::Timeout, false, &l).expect("opens");
        assert!(line.contains("2 of the last 3 runs failed (timeout 1, limit_exceeded 1)"));
        assert!(b.is_open());
        assert_eq!(b.openings(), 1);
        let q = b.quarantine().expect("open");
        assert_eq!(q.until_ms - q.since_ms, 1_000);
        assert!(matches!(
            b.admit(|| q.since_ms + 10),
            Admit::Refuse { retry_after_s: 1 }
        ));
    }

    #[test]
    fn half_open_lets_one_probe_through_and_doubles_on_failure() {
        let b = Breaker::default();
        let l = knobs();
        b.record(Outcome::Timeout, false, &l);
        b.record(Outcome::Timeout, false, &l);
        let q = b.quarantine().expect("open");
        let after = q.until_ms;
        assert_eq!(b.admit(|| after), Admit::Probe);
        assert!(
            matches!(b.admit(|| after), Admit::Refuse { .. }),
            "one probe at a time"
        );
        b.record(Outcome::Limit, true, &l);
        let q2 = b.quarantine().expect("reopened");
        assert_eq!(q2.until_ms - q2.since_ms, 2_000, "doubled");
        assert!(q2.reason.contains("limit_exceeded"));
        assert_eq!(b.openings(), 2);
        // Doubling is capped.
        for _ in 0..3 {
            let t = b.quarantine().expect("open").until_ms;
            assert_eq!(b.admit(|| t), Admit::Probe);
            b.record(Outcome::Timeout, true, &l);
        }
        let q3 = b.quarantine().expect("open");
        assert_eq!(q3.until_ms - q3.since_ms, 3_000, "capped");
        // A good probe closes it and resets the doubling.
        assert_eq!(b.admit(|| q3.until_ms), Admit::Probe);
        assert!(b.record(Outcome::Ok, true, &l).is_some());
        assert!(!b.is_open());
        assert_eq!(b.admit(|| 0), Admit::Run);
        b.record(Outcome::Timeout, false, &l);
        b.record(Outcome::Timeout, false, &l);
        let q4 = b.quarantine().expect("open");
        assert_eq!(q4.until_ms - q4.since_ms, 1_000);
    }

    #[test]
    fn a_refused_probe_frees_the_slot_and_lift_closes() {
        let b = Breaker::default();
        let l = knobs();
        b.record(Outcome::Timeout, false, &l);
        b.record(Outcome::Timeout, false, &l);
        let t = b.quarantine().expect("open").until_ms;
        assert_eq!(b.admit(|| t), Admit::Probe);
        b.probe_not_queued();
        assert_eq!(b.admit(|| t), Admit::Probe);
        assert!(b.lift());
        assert!(b.quarantine().is_none());
        assert!(!b.lift());
        // The probe's late outcome after a lift changes nothing.
        assert_eq!(b.record(Outcome::Timeout, true, &l), None);
        assert!(!b.is_open());
    }
}
