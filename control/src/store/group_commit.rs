//! Group commit: many threads' writes share one durable commit, with no thread, timer or
//! polling of its own (an idle store costs no CPU).
//!
//! Owns: the queue of writes waiting for a commit, choosing who commits (the leader), handing
//! each writer its own result, the batch bound and the counts a test reads ([`CommitStats`]).
//! Does not own: what a write does or what a commit is (the caller's `begin` and `run`, e.g.
//! one redb write transaction in `super::embedded_kv`), or any durability rule.
//!
//! How it works (leader/follower): a writer queues its operation under a lock. If no commit is
//! being prepared, it becomes the leader: it calls `begin` (for redb: `begin_write`, which waits
//! while another write transaction runs, so writers pile up behind it), then takes the oldest
//! `batch_max` operations off the queue, releases the lock and calls `run` on them, which must
//! return one result per operation, in order, after the commit returned. The leader stores the
//! results, steps down and wakes every waiter. A waiter whose result is there returns it; one
//! whose operation is still queued (arrived during a commit, or beyond the bound) becomes the
//! next leader if nobody else did first. So every result a writer returns was produced after
//! the commit of its batch had returned, operations are applied in arrival order (which is a
//! valid order: none of them had been acknowledged), and a lone writer pays no wait at all: it
//! leads a batch of one.
//!
//! If `run` panics, the leader's guard fails that batch's operations with `Internal` and steps
//! down, so no waiter hangs (the leader's own result, if its operation was in that batch, stays
//! unread in `done`: the panic unwinds through its call; a bug, bounded to one entry per panic).

use std::collections::{HashMap, VecDeque};

use parking_lot::{Condvar, Mutex};
use picloud_core::store::{StoreError, StoreResult};

/// Counters of a group committer since it was made: what tests and benchmarks read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches handed to `run` (each one transaction: committed, or aborted when nothing
    /// changed).
    pub batches: u64,
    /// Operations in those batches.
    pub ops: u64,
    /// Operations in the largest batch (never above the bound).
    pub batch_ops_largest: usize,
}

struct State<Op, Reply> {
    /// Operations waiting for a batch, oldest first, with their ticket.
    queue: VecDeque<(u64, Op)>,
    /// Results not yet collected by their writer, by ticket.
    done: HashMap<u64, StoreResult<Reply>>,
    next_ticket: u64,
    /// A leader is preparing or running a batch.
    leading: bool,
    stats: CommitStats,
}

/// A group committer of operations `Op` answering `Reply`. Shared by reference between the
/// writing threads.
pub(crate) struct GroupCommit<Op, Reply> {
    state: Mutex<State<Op, Reply>>,
    /// Signalled when a leader steps down (results stored, leadership free).
    stepped_down: Condvar,
    batch_ops_max: usize,
}

impl<Op, Reply> GroupCommit<Op, Reply> {
    /// A committer whose batches hold at most `batch_ops_max` operations (at least 1).
    pub(crate) fn new(batch_ops_max: usize) -> Self {
        GroupCommit {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                done: HashMap::new(),
                next_ticket: 0,
                leading: false,
                stats: CommitStats::default(),
            }),
            stepped_down: Condvar::new(),
            batch_ops_max: batch_ops_max.max(1),
        }
    }

    /// The bound on a batch.
    pub(crate) fn batch_ops_max(&self) -> usize {
        self.batch_ops_max
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> CommitStats {
        self.state.lock().stats
    }

    /// Operations queued and not yet taken into a batch.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Queues `op` and returns its result once the batch holding it has been run. If this
    /// writer leads that batch (or another), `begin` is called first (before the batch is taken,
    /// so writers arriving while it waits join the batch) and then `run(begun, ops)`, which
    /// must return one result per operation, in order.
    pub(crate) fn submit<B>(
        &self,
        op: Op,
        begin: impl FnOnce() -> B,
        run: impl FnOnce(B, Vec<Op>) -> Vec<StoreResult<Reply>>,
    ) -> StoreResult<Reply> {
        let mut state = self.state.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push_back((ticket, op));
        // `begin` and `run` are used at most once: by the first batch this writer leads.
        let mut lead = Some((begin, run));
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if !state.leading {
                let Some((begin, run)) = lead.take() else {
                    // This writer led a batch that did not hold its own operation (it cannot
                    // happen: the queue is first-in-first-out and a leader's operation is in it
                    // when it takes the oldest). Fail it rather than hang.
                    return Err(StoreError::Internal(
                        "group commit: operation left behind".into(),
                    ));
                };
                state.leading = true;
                drop(state);
                self.lead(begin, run);
                state = self.state.lock();
                continue;
            }
            self.stepped_down.wait(&mut state);
        }
    }

    /// Runs one batch as the leader: `begin`, take the oldest operations, `run`, store the
    /// results, step down and wake the waiters (the guard does the last two, also on a panic).
    fn lead<B>(
        &self,
        begin: impl FnOnce() -> B,
        run: impl FnOnce(B, Vec<Op>) -> Vec<StoreResult<Reply>>,
    ) {
        let begun = begin();
        let mut guard = Leader {
            owner: self,
            tickets: Vec::new(),
        };
        let ops = {
            let mut state = self.state.lock();
            let n = state.queue.len().min(self.batch_ops_max);
            let mut ops = Vec::with_capacity(n);
            for (ticket, op) in state.queue.drain(..n) {
                guard.tickets.push(ticket);
                ops.push(op);
            }
            state.stats.batches += 1;
            state.stats.ops += n as u64;
            state.stats.batch_ops_largest = state.stats.batch_ops_largest.max(n);
            ops
        };
        let results = run(begun, ops);
        let mut state = self.state.lock();
        let mut results = results.into_iter();
        for ticket in guard.tickets.drain(..) {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Internal(
                    "group commit: a batch returned too few results".into(),
                ))
            });
            state.done.insert(ticket, result);
        }
    }
}

/// Steps down when dropped: fails the operations of a batch whose results were not stored
/// (`run` panicked), clears `leading` and wakes every waiter.
struct Leader<'a, Op, Reply> {
    owner: &'a GroupCommit<Op, Reply>,
    /// Tickets of the batch whose results are not stored yet.
    tickets: Vec<u64>,
}

impl<Op, Reply> Drop for Leader<'_, Op, Reply> {
    fn drop(&mut self) {
        let mut state = self.owner.state.lock();
        for ticket in self.tickets.drain(..) {
            state.done.insert(
                ticket,
                Err(StoreError::Internal(
                    "group commit: the batch failed".into(),
                )),
            );
        }
        state.leading = false;
        drop(state);
        self.owner.stepped_down.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::Barrier;

    /// A lone writer leads a batch of one and gets its own result.
    #[test]
    fn a_lone_writer_commits_alone() {
        let gc: GroupCommit<u32, u32> = GroupCommit::new(8);
        let r = gc.submit(
            7,
            || (),
            |(), ops| ops.into_iter().map(|o| Ok(o * 2)).collect(),
        );
        assert_eq!(r, Ok(14));
        assert_eq!(
            gc.stats(),
            CommitStats {
                batches: 1,
                ops: 1,
                batch_ops_largest: 1
            }
        );
    }

    /// Writers queued behind a slow `begin` share batches of at most the bound, each gets the
    /// result of its own operation, and one failing operation fails alone.
    #[test]
    fn queued_writers_share_bounded_batches_with_their_own_results() {
        const WRITERS: u32 = 7;
        let gc: Arc<GroupCommit<u32, u32>> = Arc::new(GroupCommit::new(3));
        // The first leader's `begin` blocks until every writer has queued.
        let gate = Arc::new(Barrier::new(2));
        let first = {
            let (gc, gate) = (gc.clone(), gate.clone());
            std::thread::spawn(move || {
                gc.submit(
                    0,
                    || {
                        gate.wait();
                        gate.wait();
                    },
                    run_doubling,
                )
            })
        };
        gate.wait(); // the first writer leads and waits in `begin`
        let others: Vec<_> = (1..WRITERS)
            .map(|i| {
                let gc = gc.clone();
                std::thread::spawn(move || gc.submit(i, || (), run_doubling))
            })
            .collect();
        while gc.queued() < WRITERS as usize {
            std::thread::yield_now();
        }
        gate.wait(); // let the first batch go
        assert_eq!(first.join().expect("join"), Ok(0));
        for (i, h) in (1..WRITERS).zip(others) {
            let r = h.join().expect("join");
            if i == 5 {
                assert_eq!(r, Err(StoreError::Invalid("five".into())));
            } else {
                assert_eq!(r, Ok(i * 2));
            }
        }
        let s = gc.stats();
        assert_eq!(s.ops, u64::from(WRITERS));
        assert_eq!(s.batch_ops_largest, 3, "the bound is hit, never passed");
        assert_eq!(s.batches, 3, "7 queued operations in batches of at most 3");
    }

    fn run_doubling<B>(_: B, ops: Vec<u32>) -> Vec<StoreResult<u32>> {
        ops.into_iter()
            .map(|o| {
                if o == 5 {
                    Err(StoreError::Invalid("five".into()))
                } else {
                    Ok(o * 2)
                }
            })
            .collect()
    }

    /// A panicking batch fails its own operations and frees the leadership.
    #[test]
    fn a_panicking_batch_fails_only_itself() {
        let gc: GroupCommit<u32, u32> = GroupCommit::new(4);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            gc.submit(1, || (), |(), _| panic!("boom"))
        }));
        assert!(r.is_err());
        let r = gc.submit(2, || (), |(), ops| ops.into_iter().map(Ok).collect());
        assert_eq!(r, Ok(2));
    }
}
