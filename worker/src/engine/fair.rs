//! Per-app fairness of the engine pool: each app's jobs wait in their own FIFO [`Lane`], and
//! the engine threads serve the lanes round robin, at most `concurrency_max` engines per app.
//!
//! Owns: the lane (its queued jobs, how many of its jobs run, whether it is listed as ready)
//! and the three transitions that keep "listed" true exactly when the lane has a queued job and
//! a free engine slot: [`Lane::push`] (submit), [`Lane::take`] (an engine starts a job),
//! [`Lane::finish`] (the job ended). Does not own: the ready ring of listed lanes, waking
//! engines, or the breaker (`pool.rs` and `breaker.rs`).
//!
//! Why round robin over lanes rather than one FIFO: with one FIFO, a request of a quiet app
//! waits behind the whole backlog of a busy app. Here an engine takes one job of the lane at
//! the ring's head and puts the lane back at the tail if it still has work and room, so a
//! quiet app's request waits for at most one job of each other ready app. Why a cap: an app
//! whose scripts run for a second would otherwise hold every engine. A lane at its cap is not
//! listed; the engine that finishes one of its jobs lists it again.
//!
//! Cost per job: one uncontended lock of the lane at submit and one at take and at finish,
//! plus a push and a pop on the lock-free ring (bench/NOTES.md has the measurement).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::pool::Job;

/// A job waiting in a lane, with whether it is its app's half-open breaker probe.
pub(crate) struct Queued {
    pub job: Job,
    pub probe: bool,
}

/// Why a lane refused a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The node's queue (`queue_len_max`, all apps together) is full.
    Node,
    /// The app's share of the queue is full (it is at its engine cap and has a backlog).
    App,
}

/// One app's queue of jobs. Attached to the app (so it outlives catalog swaps) or, for
/// catalogs never made live (tests, benches), the pool's shared default lane.
#[derive(Default)]
pub struct Lane {
    inner: Mutex<LaneInner>,
}

#[derive(Default)]
struct LaneInner {
    jobs: VecDeque<Queued>,
    /// Jobs of this lane running on an engine now.
    running: usize,
    /// In the pool's ready ring (or being put there by whoever set this).
    listed: bool,
    /// Engines this lane may use at once, from the latest submitted job's app.
    cap: usize,
}

impl Lane {
    /// Queues `q` if the app's jobs in flight stay within its cap plus its share of the queue
    /// (`share` jobs), and the node's queue (`queued` of
    /// `queue_len_max`, reserved here) have room. `Ok(true)`: the caller must put the lane on
    /// the ready ring.
    // The job comes back by value on a refusal, as from `Submitter::submit` (no allocation on
    // the overload path).
    #[allow(clippy::result_large_err)]
    pub(crate) fn push(
        &self,
        q: Queued,
        cap: usize,
        share: usize,
        queued: &AtomicUsize,
        queue_len_max: usize,
    ) -> Result<bool, (Queued, Full)> {
        let mut l = self.inner.lock();
        l.cap = cap.max(1);
        // Counted as jobs in flight (running and queued) against cap + share, not queued jobs
        // against the share: jobs that arrive together are queued before the engines that
        // will run them at once have woken, and must not be refused for that.
        if l.jobs.len() + l.running >= l.cap + share {
            return Err((q, Full::App));
        }
        if queued.fetch_add(1, Ordering::AcqRel) >= queue_len_max {
            queued.fetch_sub(1, Ordering::AcqRel);
            return Err((q, Full::Node));
        }
        l.jobs.push_back(q);
        let list = !l.listed && l.running < l.cap;
        if list {
            l.listed = true;
        }
        Ok(list)
    }

    /// An engine popped this lane from the ring: the next job to run, counted as running, and
    /// whether the lane must go back on the ring (more jobs and room). `None`: nothing to run
    /// (the cap was lowered meanwhile); the lane is unlisted until a job finishes.
    pub(crate) fn take(&self, queued: &AtomicUsize) -> (Option<Queued>, bool) {
        let mut l = self.inner.lock();
        if l.running >= l.cap {
            l.listed = false;
            return (None, false);
        }
        let Some(q) = l.jobs.pop_front() else {
            l.listed = false;
            return (None, false);
        };
        queued.fetch_sub(1, Ordering::AcqRel);
        l.running += 1;
        let relist = !l.jobs.is_empty() && l.running < l.cap;
        l.listed = relist;
        (Some(q), relist)
    }

    /// One of this lane's jobs ended. `true`: the caller must put the lane on the ready ring.
    pub(crate) fn finish(&self) -> bool {
        let mut l = self.inner.lock();
        l.running = l.running.saturating_sub(1);
        let list = !l.listed && !l.jobs.is_empty() && l.running < l.cap;
        if list {
            l.listed = true;
        }
        list
    }

    /// Marks the lane not listed (the ring refused it; see `Queue::list`).
    pub(crate) fn unlist(&self) {
        self.inner.lock().listed = false;
    }

    /// Takes every queued job out (the pool is gone: dropping them answers their waiters 500).
    pub(crate) fn drain(&self, queued: &AtomicUsize) -> Vec<Queued> {
        let mut l = self.inner.lock();
        l.listed = false;
        let jobs: Vec<Queued> = l.jobs.drain(..).collect();
        queued.fetch_sub(jobs.len(), Ordering::AcqRel);
        jobs
    }

    /// Jobs of this app running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        let l = self.inner.lock();
        (l.running, l.jobs.len())
    }
}
