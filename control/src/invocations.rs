//! The invocation log writer: carries [`InvocationRecord`]s from the engines to the
//! [`LogStore`] without ever slowing a request.
//!
//! Owns: the bounded queue between the engines and the store (its [`InvocationSink`] end never
//! blocks: a full queue drops the record and counts it), the `picloud-logs` thread that writes
//! what queued in batches, and the counters of what was dropped. Does not own: building records
//! (the engines), keeping or trimming them (the store's [`LogStore`]), or reading them (the
//! admin API).
//!
//! Threads and shutdown: one thread, owned by [`LogWriter`], which joins it in
//! [`LogWriter::stop`]. It blocks in `select` on the record queue and on a shutdown channel,
//! so an idle node spends no CPU here: no timer, no polling. On a record it takes whatever else
//! is queued (up to [`BATCH_LEN_MAX`]) and writes it with one `append_invocations`, so under load
//! the batches grow by themselves while the previous write is in progress. Shutdown is a
//! message: `stop` drops the only sender of the shutdown channel; the thread then writes what
//! is still queued and exits, and `stop` waits for that at most [`STOP_WAIT_MAX`] (a store that
//! hangs must not hang the node's exit; the thread is then left to finish on its own).
//! Records sent after the thread exited are dropped and counted (their queue has no receiver).
//!
//! Under load (a batch of at least [`BUSY_BATCH_LEN`] records) the thread gathers for up to
//! [`GATHER_MAX`] before writing, draining the queue every [`COALESCE`] and keeping of each
//! app's records only the newest `log_records_max` (the older ones would be trimmed by that very
//! write), so what it holds stays bounded by the apps' bounds, not by the request rate. Measured
//! on one shared core (hello, 2 vCPU VM): one write per request cost a third of the throughput;
//! per engine batch of 64 about 12 %; with 50 ms gathering about 5–8 %; writing every 200 ms
//! cut this thread's CPU per request by about 58 % more (bench/NOTES.md, issue 13). An idle
//! writer still blocks with no timer.
//!
//! A write of a thousand records takes a millisecond or two of CPU; on a core shared with the
//! front end and an engine, every request arriving meanwhile waited for it (hello's p99). The
//! embedded store therefore yields the CPU every
//! [`APPEND_YIELD_EVERY`](crate::store::embedded_logs::APPEND_YIELD_EVERY) records of a write,
//! so a waiting request thread runs after at most that many. (`SCHED_IDLE` for this thread was
//! tried first: with two compiler processes on the machine it got almost no CPU, and a test's
//! 2,000 records were not written within [`STOP_WAIT_MAX`].)
//!
//! A failed write is logged (warn, once per outage; info when writes work again) and its batch
//! dropped and counted: records are diagnostics, and retrying in a loop would hold up newer ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use picloud_core::Limits;
use picloud_core::services::{InvocationRecord, InvocationSink, LogStore};

/// Records written in one `append_invocations` (one store transaction) before the thread
/// looks at the queue again: batches are taken whole, so a write holds at most this many plus
/// one engine batch. Bounds the time one write holds the store's writer lock.
pub const BATCH_LEN_MAX: usize = 4096;

/// A batch this large means records are streaming in (it is one engine's batch): the writer
/// then gathers for up to [`GATHER_MAX`] before writing.
const BUSY_BATCH_LEN: usize = 64;

/// How often a busy writer drains the queue while it gathers (the queue must not fill up at
/// the highest request rates: 50 ms of 130k req/s is 6,500 records, under the default
/// `log_queue_len_max` of 8,192). Never armed while idle.
const COALESCE: Duration = Duration::from_millis(50);

/// How long a busy writer gathers before a write. Bounds how stale the log is under load; never
/// armed while idle.
const GATHER_MAX: Duration = Duration::from_millis(200);

/// How long [`LogWriter::stop`] waits for the thread to write what is queued.
pub const STOP_WAIT_MAX: Duration = Duration::from_secs(5);

/// Counters shared by the sink, the thread and the owner.
#[derive(Debug, Default)]
struct Counters {
    /// Records lost: queue full, writer gone, or their batch failed to write.
    dropped: AtomicU64,
    /// Records handed to the store in a batch it accepted.
    written: AtomicU64,
}

/// Node-wide totals for `/metrics` (a node has one writer; tests with several nodes in one
/// process see their sum).
static RECORDS_DROPPED: AtomicU64 = AtomicU64::new(0);
static RECORDS_WRITTEN: AtomicU64 = AtomicU64::new(0);

impl Counters {
    fn drop_records(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        RECORDS_DROPPED.fetch_add(n, Ordering::Relaxed);
    }

    fn wrote_records(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
        RECORDS_WRITTEN.fetch_add(n, Ordering::Relaxed);
    }
}

/// The writer's counters in Prometheus text format.
pub fn render_metrics() -> String {
    format!(
        "# HELP picloud_invocation_records_dropped_total Invocation records lost: queue full, \
         writer stopped, or the store refused their batch.\n\
         # TYPE picloud_invocation_records_dropped_total counter\n\
         picloud_invocation_records_dropped_total {}\n\
         # HELP picloud_invocation_records_written_total Invocation records handed to the store \
         (including those a write trims at once).\n\
         # TYPE picloud_invocation_records_written_total counter\n\
         picloud_invocation_records_written_total {}\n",
        RECORDS_DROPPED.load(Ordering::Relaxed),
        RECORDS_WRITTEN.load(Ordering::Relaxed)
    )
}

/// The engines' end: a queue of batches that never blocks, bounded in records
/// (`log_queue_len_max`) by a count of the records it holds.
struct QueueSink {
    records: Sender<Vec<InvocationRecord>>,
    /// Records queued and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
    queued_max: usize,
    counters: Arc<Counters>,
}

impl InvocationSink for QueueSink {
    fn record(&self, record: InvocationRecord) {
        self.record_batch(vec![record]);
    }

    fn record_batch(&self, records: Vec<InvocationRecord>) {
        let n = records.len();
        // Full: the writer is behind (slow disk, store down); Disconnected: it stopped.
        // Either way the request must not wait; the count shows up in metrics.
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > self.queued_max {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.counters.drop_records(n as u64);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.records.try_send(records)
        {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.counters.drop_records(n as u64);
        }
    }
}

/// Owner of the `picloud-logs` thread. Dropping it without [`LogWriter::stop`] also stops the
/// thread (it notices the closed shutdown channel after writing what is queued), but does not
/// wait for it.
pub struct LogWriter {
    /// Dropping this (the only sender) is the shutdown message.
    shutdown: Option<Sender<()>>,
    /// Closed by the thread when it exits (its sender is dropped), so `stop` can wait bounded.
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dropped", &self.dropped())
            .field("written", &self.written())
            .finish()
    }
}

impl LogWriter {
    /// Starts the writer thread on `store` with the queue and per-app bounds of `limits`
    /// (`log_queue_len_max`, `log_records_max`), and returns it with the sink to give the
    /// engines.
    pub fn start(
        store: Arc<dyn LogStore>,
        limits: &Limits,
    ) -> std::io::Result<(LogWriter, Arc<dyn InvocationSink>)> {
        // A zero-capacity crossbeam channel is a rendezvous channel, on which `try_send` only
        // succeeds while the thread waits; keep at least one slot.
        // Bounded in records by `queued`; the channel itself holds at most that many batches.
        let queued_max = limits.log_queue_len_max.max(1);
        let (records_tx, records_rx) = crossbeam_channel::bounded(queued_max);
        let queued = Arc::new(AtomicUsize::new(0));
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(0);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let counters = Arc::new(Counters::default());
        let per_app_max = limits.log_records_max;
        let queued_for_sink = Arc::clone(&queued);
        let thread = {
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("picloud-logs".into())
                .spawn(move || {
                    // Dropped when the loop returns, telling `stop` the thread is done.
                    let _done = done_tx;
                    let mut writer = Writer {
                        store,
                        per_app_max,
                        counters,
                        queued,
                        failing: false,
                        trimmed: 0,
                    };
                    writer.run(&records_rx, &shutdown_rx);
                })?
        };
        let sink = Arc::new(QueueSink {
            records: records_tx,
            queued: Arc::clone(&queued_for_sink),
            queued_max,
            counters: Arc::clone(&counters),
        });
        Ok((
            LogWriter {
                shutdown: Some(shutdown_tx),
                done: done_rx,
                thread: Some(thread),
                counters,
            },
            sink,
        ))
    }

    /// Records dropped so far: the queue was full, the writer had stopped, or the store refused
    /// their batch.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Stops the thread after it has written what is queued, waiting at most
    /// [`STOP_WAIT_MAX`]. Returns whether it has finished. The counters stay readable;
    /// calling it again waits again for a thread that did not finish in time.
    pub fn stop(&mut self) -> bool {
        self.shutdown = None;
        let Some(thread) = self.thread.take() else {
            return true;
        };
        match self.done.recv_timeout(STOP_WAIT_MAX) {
            // The thread never sends; its sender being dropped is the only way out.
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    log::error!("the invocation log writer panicked");
                }
                true
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                log::warn!(
                    "the invocation log writer did not finish within {STOP_WAIT_MAX:?}; \
                     queued records may be lost"
                );
                self.thread = Some(thread);
                false
            }
        }
    }
}

/// The thread's state.
struct Writer {
    store: Arc<dyn LogStore>,
    per_app_max: usize,
    counters: Arc<Counters>,
    /// Records queued by the sink and not yet taken (the sink's bound).
    queued: Arc<AtomicUsize>,
    /// The last write failed: the next failure is not logged again.
    failing: bool,
    /// Records `trim` left out since the last write (counted with it).
    trimmed: u64,
}

impl Writer {
    fn run(&mut self, records: &Receiver<Vec<InvocationRecord>>, shutdown: &Receiver<()>) {
        let mut batch = Vec::with_capacity(BATCH_LEN_MAX);
        loop {
            crossbeam_channel::select! {
                recv(records) -> first => match first {
                    Ok(first) => {
                        self.take(&mut batch, first);
                        self.fill(&mut batch, records);
                        if batch.len() >= BUSY_BATCH_LEN {
                            // Records are streaming in: gather for a moment, so one write
                            // covers many engine batches and records an app's bound would
                            // trim at once are never written. Only while busy: an idle writer
                            // blocks above with no timer. Shutdown ends the wait at once.
                            let until = std::time::Instant::now() + GATHER_MAX;
                            loop {
                                // `stop` drops the sender: the only way this ends early.
                                let stop = matches!(
                                    shutdown.recv_timeout(COALESCE),
                                    Err(crossbeam_channel::RecvTimeoutError::Disconnected)
                                );
                                self.fill(&mut batch, records);
                                self.trim(&mut batch);
                                if stop
                                    || batch.len() >= BATCH_LEN_MAX
                                    || std::time::Instant::now() >= until
                                {
                                    break;
                                }
                            }
                        }
                        self.write(&mut batch);
                    }
                    // Every sink is gone: nothing more can come.
                    Err(_) => return,
                },
                // Only ever disconnected (`stop` drops the sender): write what is queued, exit.
                recv(shutdown) -> _ => {
                    loop {
                        self.fill(&mut batch, records);
                        if batch.is_empty() {
                            return;
                        }
                        self.write(&mut batch);
                    }
                }
            }
        }
    }

    /// Writes and empties `batch`. Of each app's records only the newest `per_app_max` are
    /// written: older ones in the same batch would be trimmed by this very write.
    fn write(&mut self, batch: &mut Vec<InvocationRecord>) {
        self.trim(batch);
        let n = batch.len() as u64 + std::mem::take(&mut self.trimmed);
        match self.store.append_invocations(batch, self.per_app_max) {
            Ok(()) => {
                self.counters.wrote_records(n);
                if self.failing {
                    log::info!("invocation records are being written again");
                    self.failing = false;
                }
            }
            Err(e) => {
                self.counters.drop_records(n);
                if !self.failing {
                    log::warn!(
                        "cannot write invocation records ({e}); dropping them until the store \
                         works again"
                    );
                    self.failing = true;
                }
            }
        }
        batch.clear();
    }
}

impl Writer {
    /// Keeps of each app's records in `batch` only the newest `per_app_max` (in order): the
    /// older ones would be trimmed by the write that stores them. Counted with the next write.
    fn trim(&mut self, batch: &mut Vec<InvocationRecord>) {
        if batch.len() <= self.per_app_max {
            return;
        }
        let before = batch.len();
        // The usual case under load: one busy app. Its oldest records go, no hashing.
        if batch.iter().all(|r| r.app == batch[0].app) {
            batch.drain(..before - self.per_app_max);
            self.trimmed += (before - batch.len()) as u64;
            return;
        }
        let keep = {
            let mut seen: std::collections::HashMap<&str, usize> = Default::default();
            let mut keep = vec![false; batch.len()];
            for (i, r) in batch.iter().enumerate().rev() {
                let c = seen.entry(r.app.as_str()).or_default();
                if *c < self.per_app_max {
                    *c += 1;
                    keep[i] = true;
                }
            }
            keep
        };
        let mut k = keep.into_iter();
        batch.retain(|_| k.next().unwrap_or(false));
        self.trimmed += (before - batch.len()) as u64;
    }

    /// Moves one queued batch into `batch`.
    fn take(&self, batch: &mut Vec<InvocationRecord>, mut queued: Vec<InvocationRecord>) {
        self.queued.fetch_sub(queued.len(), Ordering::AcqRel);
        batch.append(&mut queued);
    }

    /// Moves queued batches into `batch` until it holds at least [`BATCH_LEN_MAX`] records or
    /// the queue is empty.
    fn fill(&self, batch: &mut Vec<InvocationRecord>, records: &Receiver<Vec<InvocationRecord>>) {
        while batch.len() < BATCH_LEN_MAX {
            match records.try_recv() {
                Ok(more) => self.take(batch, more),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}
