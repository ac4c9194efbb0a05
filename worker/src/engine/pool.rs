//! The engine [`Pool`]: N pinned OS threads with large stacks, each owning frozen Rhai engines,
//! fed by per-app lanes (`fair.rs`) under one bound; and the running of one [`Job`] under
//! `catch_unwind`.
//!
//! Owns: thread lifecycle (spawn, core pinning, join on shutdown), the ready ring of lanes and
//! the never-blocking [`Submitter::submit`] (breaker, lane, node bound, in that order), each
//! thread's set of frozen engines ([`Engines`]), and the sequence of one invocation (AST
//! lookup, scope, budget, eval, post-checks, the breaker's outcome, response).
//! Does not own: the sandbox settings and budget (`sandbox.rs`), the request/response contract
//! (`contract.rs`), the reply primitive (`reply.rs`), a lane's bookkeeping (`fair.rs`), the
//! breaker's states (`breaker.rs`), or deciding what to run (the dispatcher).
//!
//! Lifecycle: `Pool` owns every `JoinHandle`; [`Submitter`]s (cheap clones handed to the
//! dispatcher) share the queue. Because a submitter may outlive the pool, dropping one cannot be
//! the shutdown message; instead [`Pool::shutdown`] (or dropping the pool) marks the queue
//! closed (every later submit fails at once → 503) and wakes every engine; an engine ends when
//! the queue is closed and no lane is ready, so the jobs already queued are run first (a lane
//! held back by its cap is re-listed by the engine that finishes its running job, which then
//! takes it). The pool joins every thread, then drops whatever a racing submit queued after
//! the engines ended: its `ReplyTx` answers 500 on drop, so no waiter hangs. Idle threads are
//! parked in the kernel (see `Queue` for why not in a channel's `recv`): zero CPU.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, JoinHandle, Thread};

use crossbeam_queue::ArrayQueue;
use may::sync::Blocker;
use parking_lot::Mutex;
use picloud_core::{CatalogApp, CatalogScript, Limits};
use rhai::{Dynamic, Engine, Scope};

use super::ast_cache::AstCache;
use super::breaker::{Admit, Outcome};
use super::contract::{self, RequestObj, ScriptFailure, ScriptRequest, SizeCaps};
use super::fair::{Full, Lane, Queued};
use super::modules::{self, AppModules, ModuleCache};
use super::reply::ReplyTx;
use super::sandbox::{self, EngineOptions, EngineProfile, build_engine};
use super::sdk::{self, EventSubmit, Services};
use crate::http::Response;
use crate::metrics::{AppState, AppStats};
use picloud_core::services::{InvocationRecord, InvocationSink, TriggerKind};

/// Stack of each engine thread. Measured with `call_depth_max` = 256 (the hard maximum) and
/// recursion whose every level also nests expressions to near `expr_depth_max` = 64: release
/// builds needed 2.5 MiB, debug builds (tests) 14 MiB; plain recursion 2 / 12 MiB. 64 MiB gives
/// release builds a 25x margin and debug builds 4x. It is virtual memory: only the pages a
/// script actually touched become resident (a shallow script touches a few KiB). The margin
/// also covers Rhai's cheap per-level recursions over deeply nested values (clone, drop, size
/// checks, the plain formatter behind string interpolation: an array nested 40k deep, about
/// the deepest a 30 s deadline can build, interpolated fine); the expensive ones are bounded
/// in `nesting.rs`.
pub const ENGINE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Most frozen engines an engine thread keeps for apps whose Rhai-checked limits differ from
/// the node's (see `sandbox.rs`). Least recently used first out; rebuilding one costs
/// microseconds, so this bounds memory, not correctness.
pub const ENGINE_PROFILES_MAX: usize = 8;

/// One script invocation to run. Built by the dispatcher on a coroutine; moved to an engine
/// thread through the queue; its `reply` is consumed exactly once there.
pub struct Job {
    /// The app, with its effective limits and `debug` flag.
    pub app: Arc<CatalogApp>,
    /// The endpoint script (its `hash` keys the AST cache).
    pub script: Arc<CatalogScript>,
    /// What the script sees as `request`.
    pub request: ScriptRequest,
    /// Where the response goes; `None` for runs nobody waits for (cron, events): their
    /// response is only recorded.
    pub reply: Option<ReplyTx>,
    /// What started the run.
    pub origin: Origin,
}

/// What started a run, and what it sees besides `request`.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A public HTTP request.
    Http,
    /// A cron schedule's due time; the script sees `schedule` = `#{name, due_ms}`.
    Cron {
        /// The schedule's name.
        schedule: String,
        /// The due time it runs for, Unix milliseconds.
        due_ms: u64,
    },
    /// An event; the script sees `event` = `#{name, payload}`.
    Event {
        /// The event's name.
        name: String,
        /// What `events::emit` passed.
        payload: serde_json::Value,
        /// How many events deep (1 for an event emitted by an HTTP or cron run).
        depth: usize,
    },
}

impl Origin {
    fn trigger(&self) -> TriggerKind {
        match self {
            Origin::Http => TriggerKind::Http,
            Origin::Cron { .. } => TriggerKind::Cron,
            Origin::Event { .. } => TriggerKind::Event,
        }
    }

    fn depth(&self) -> usize {
        match self {
            Origin::Event { depth, .. } => *depth,
            _ => 0,
        }
    }
}

/// How to start a pool. [`Pool::start`] uses the defaults with a given number of workers.
#[derive(Clone)]
pub struct PoolConfig {
    /// Engine threads (at least one is started).
    pub workers: usize,
    /// Stack of each engine thread.
    pub stack_bytes: usize,
    /// Pin engine threads to cores (see [`Pool::start_with`] for the map).
    pub pin_cores: bool,
    /// Registers the panicking test hook `__picloud_test_panic()`. Tests only.
    #[doc(hidden)]
    pub test_hooks: bool,
    /// What the SDK calls into (KV store, ...). The pool sets its event submitter.
    pub services: Arc<Services>,
    /// Where finished invocations are recorded, if anywhere.
    pub sink: Option<Arc<dyn InvocationSink>>,
}

impl PoolConfig {
    /// Defaults: `workers` threads, [`ENGINE_STACK_BYTES`], pinned, no test hooks.
    pub fn new(workers: usize) -> PoolConfig {
        PoolConfig {
            workers,
            stack_bytes: ENGINE_STACK_BYTES,
            pin_cores: true,
            test_hooks: false,
            services: Arc::new(Services::default()),
            sink: None,
        }
    }
}

/// The queue, shared by the pool, every [`Submitter`] and the engine threads: per-app lanes
/// (`fair.rs`) and a lock-free ring of the lanes that have a job and a free engine slot.
///
/// Why the engine threads park themselves instead of blocking in a channel's `recv`, and why
/// replies go through a pump: every synchronous wake-up of the other side (a futex wake of an
/// engine thread per job, an eventfd write per reply) makes the kernel switch threads at once
/// when they share a core, so nothing batches (measured: ~0.6 switches per request each way).
/// Instead a submit from a coroutine rings the [`Doorbell`], which wakes parked engines once per
/// may round; an engine collects the replies of the jobs it ran back to back and hands them to
/// the [`Pump`] with one wake-up, and the pump unparks the waiting coroutines on the may side
/// (a local queue push each). Replies never wait behind a slow job: `on_progress` flushes them
/// once they are [`REPLY_DELAY_MAX`] old.
struct Queue {
    /// Lanes listed as ready, served round robin. Each lane is listed at most once and only
    /// while it holds a queued job, so it never holds more than `queue_len_max` entries.
    ready: ArrayQueue<Arc<Lane>>,
    /// Jobs queued in all lanes together (reserved by `Lane::push`), at most `queue_len_max`.
    queued: AtomicUsize,
    queue_len_max: usize,
    /// The lane of jobs whose app has no attached state (catalogs never made live: tests,
    /// benches); its cap is every engine, as before per-app lanes existed.
    default_lane: Arc<Lane>,
    /// The node's limits (for the app queue share).
    limits: Limits,
    /// Set once at shutdown; checked before every submit so a closing pool refuses new work,
    /// and by engine threads, which end when it is set and no lane is ready.
    closed: AtomicBool,
    /// Engine threads that found no ready lane and parked (or are about to).
    parked: Mutex<Vec<Thread>>,
    /// `parked.len()`, readable without the lock (an engine that re-lists a lane checks it).
    parked_len: AtomicUsize,
    /// Engine threads started (for the busy-engines gauge: those not in `parked`).
    workers: usize,
    /// Set by an engine after a run whose heap peak reached `trim_bytes_min`; taken by the
    /// last engine to park, which then returns freed memory to the OS (`alloc.rs`). No timer:
    /// the pool going idle is the moment, and an idle node stays asleep.
    trim_wanted: AtomicBool,
    /// `Limits::idle_trim_bytes_min` (above every heap cap: never trim).
    trim_bytes_min: u64,
    /// Started on the first submit from a coroutine (so a pool used only from plain threads
    /// never starts may's scheduler).
    doorbell: OnceLock<Arc<Doorbell>>,
    pump: OnceLock<Arc<Pump>>,
}

/// How long a finished job's reply may wait for the others of its batch.
pub(crate) const REPLY_DELAY_MAX: std::time::Duration = std::time::Duration::from_micros(50);

impl Queue {
    /// Wakes as many parked engine threads as there are queued jobs (all of them with `all`).
    fn wake_engines(&self, all: bool) {
        let mut queued = if all {
            usize::MAX
        } else {
            self.queued.load(Ordering::Acquire)
        };
        let mut parked = self.parked.lock();
        while queued > 0 {
            let Some(t) = parked.pop() else { break };
            self.parked_len.store(parked.len(), Ordering::Release);
            t.unpark();
            queued -= 1;
        }
    }

    /// Lists `lane` as ready. Cannot overflow (see `ready`); if it ever did, the lane is
    /// marked unlisted again, so its jobs wait for the app's next submit or finish to list it
    /// rather than never being run.
    fn list(&self, lane: Arc<Lane>) {
        if let Err(lane) = self.ready.push(lane) {
            log::error!("engine pool: ready ring full (a bug); a lane waits for its next job");
            lane.unlist();
        }
    }

    /// The next job for an engine thread, parking while no lane is ready; `None` once the
    /// pool is closed and nothing is ready.
    fn next_job(&self) -> Option<(Queued, Arc<Lane>)> {
        loop {
            if let Some(got) = self.try_take() {
                return Some(got);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            // Announce, then re-check: a lane listed before the announcement is seen by the
            // re-check; a waker that runs after it finds this thread in `parked`. An unpark
            // that lands before `park` makes `park` return at once.
            let me = thread::current();
            let last = {
                let mut parked = self.parked.lock();
                parked.push(me.clone());
                self.parked_len.store(parked.len(), Ordering::Release);
                parked.len() == self.workers
            };
            if !self.ready.is_empty() || self.closed.load(Ordering::Acquire) {
                self.unlist(&me);
                continue;
            }
            // The pool just went idle: a job arriving now unparks us (so `park` returns at
            // once) and waits only for the trim.
            if last && self.trim_wanted.swap(false, Ordering::Relaxed) {
                super::alloc::release_free_memory();
            }
            thread::park();
            self.unlist(&me);
        }
    }

    /// Takes one job from the lane at the head of the ring, putting the lane back at the tail
    /// when it has more work and room (round robin). Skips lanes that turned out to be at
    /// their cap.
    fn try_take(&self) -> Option<(Queued, Arc<Lane>)> {
        while let Some(lane) = self.ready.pop() {
            let (job, relist) = lane.take(&self.queued);
            if relist {
                self.list(lane.clone());
                // Another engine may sleep while this lane has more work it may run.
                if self.parked_len.load(Ordering::Acquire) > 0 {
                    self.wake_engines(false);
                }
            }
            if let Some(job) = job {
                return Some((job, lane));
            }
        }
        None
    }

    fn unlist(&self, me: &Thread) {
        let mut parked = self.parked.lock();
        parked.retain(|t| t.id() != me.id());
        self.parked_len.store(parked.len(), Ordering::Release);
    }

    /// After a job was queued: wake an engine thread now (plain thread) or at the end of the
    /// may worker's round (coroutine).
    fn ring(self: &Arc<Self>) {
        if !may::coroutine::is_coroutine() {
            self.wake_engines(false);
            return;
        }
        self.pump.get_or_init(Pump::start);
        let bell = self
            .doorbell
            .get_or_init(|| Doorbell::start(Arc::downgrade(self)));
        bell.ring();
    }
}

/// A coroutine that wakes parked engine threads on behalf of the coroutines that queued jobs.
/// Ringing it is a local run-queue push on the ringing may worker (no system call); it runs
/// after the coroutines that were already ready, then wakes engines once for all of them.
struct Doorbell {
    /// A ring is pending: later rings before the doorbell runs add nothing.
    pending: AtomicBool,
    /// The doorbell coroutine's parker, set by the coroutine itself before it first parks.
    blocker: OnceLock<Arc<Blocker>>,
}

impl Doorbell {
    fn start(queue: Weak<Queue>) -> Arc<Doorbell> {
        let bell = Arc::new(Doorbell {
            pending: AtomicBool::new(false),
            blocker: OnceLock::new(),
        });
        let me = bell.clone();
        // SAFETY: may's spawn is unsafe because a coroutine must not block its OS thread; this
        // one only parks on a may Blocker and takes a mutex held for a few instructions.
        let spawned = unsafe {
            may::coroutine::Builder::new()
                .name("engine-doorbell".to_string())
                .spawn(move || me.run(&queue))
        };
        if let Err(e) = spawned {
            log::warn!("cannot spawn the engine doorbell: {e}");
        }
        bell
    }

    fn run(&self, queue: &Weak<Queue>) {
        let me = Blocker::current();
        let _ = self.blocker.set(me.clone());
        loop {
            // Clear first: a ring after this point schedules another pass.
            self.pending.store(false, Ordering::SeqCst);
            match queue.upgrade() {
                Some(q) => q.wake_engines(false),
                None => return,
            }
            let _ = me.park(None);
        }
    }

    fn ring(&self) {
        if self.pending.swap(true, Ordering::SeqCst) {
            return;
        }
        // Not started yet: it wakes engines once when it starts, so the job is not lost.
        if let Some(b) = self.blocker.get() {
            b.unpark();
        }
    }
}

/// A coroutine that hands batches of replies from engine threads to their waiting coroutines:
/// one cross-thread wake-up per batch instead of one per reply.
pub(crate) struct Pump {
    inbox: Mutex<Vec<(ReplyTx, Response)>>,
    pending: AtomicBool,
    blocker: OnceLock<Arc<Blocker>>,
}

impl Pump {
    fn start() -> Arc<Pump> {
        let pump = Arc::new(Pump {
            inbox: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            blocker: OnceLock::new(),
        });
        let me = pump.clone();
        // SAFETY: as for the doorbell: it only parks on a may Blocker and takes short locks.
        let spawned = unsafe {
            may::coroutine::Builder::new()
                .name("reply-pump".to_string())
                .spawn(move || me.run())
        };
        if let Err(e) = spawned {
            log::warn!("cannot spawn the reply pump: {e}");
        }
        pump
    }

    fn run(&self) {
        let me = Blocker::current();
        let _ = self.blocker.set(me.clone());
        loop {
            self.pending.store(false, Ordering::SeqCst);
            let batch = std::mem::take(&mut *self.inbox.lock());
            for (tx, resp) in batch {
                tx.send(resp);
            }
            let _ = me.park(None);
        }
    }

    /// Moves a batch of replies to the pump and wakes it (once per batch).
    fn deliver(&self, batch: &mut Vec<(ReplyTx, Response)>) {
        self.inbox.lock().append(batch);
        if !self.pending.swap(true, Ordering::SeqCst)
            && let Some(b) = self.blocker.get()
        {
            b.unpark();
        }
    }
}

thread_local! {
    /// Replies of this engine thread's jobs, not yet handed over, and when the oldest was made.
    static UNSENT: std::cell::RefCell<Vec<(ReplyTx, Response)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static UNSENT_SINCE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
    static THREAD_PUMP: std::cell::RefCell<Option<Arc<Pump>>> =
        const { std::cell::RefCell::new(None) };
}

/// Hands this thread's unsent replies over: to the pump if there is one (replies to
/// coroutines), else directly.
pub(crate) fn flush_replies() {
    if UNSENT_SINCE.get().is_none() {
        return;
    }
    UNSENT_SINCE.set(None);
    UNSENT.with(|u| {
        let Ok(mut unsent) = u.try_borrow_mut() else {
            return;
        };
        THREAD_PUMP.with(|p| match &*p.borrow() {
            Some(pump) => pump.deliver(&mut unsent),
            None => {
                for (tx, resp) in unsent.drain(..) {
                    tx.send(resp);
                }
            }
        });
    });
}

/// Flushes if the oldest unsent reply is older than [`REPLY_DELAY_MAX`] (called from
/// `on_progress` while a later job runs).
pub(crate) fn flush_replies_if_stale(now: std::time::Instant) {
    if let Some(since) = UNSENT_SINCE.get()
        && now.duration_since(since) >= REPLY_DELAY_MAX
    {
        flush_replies();
    }
}

fn hold_reply(reply: ReplyTx, resp: Response) {
    if UNSENT_SINCE.get().is_none() {
        UNSENT_SINCE.set(Some(std::time::Instant::now()));
    }
    let full = UNSENT.with(|u| {
        let mut u = u.borrow_mut();
        u.push((reply, resp));
        u.len() >= 64
    });
    if full {
        flush_replies();
    }
}

/// Queues the runs an event triggers (the SDK's `events::emit`), on the same pool and its
/// bounded queue: a full queue (the node's, or the app's share) is an error the emitting script
/// sees; a quarantined app's triggers are skipped (logged, not an error).
struct PoolEvents {
    submitter: Submitter,
}

impl EventSubmit for PoolEvents {
    fn emit(
        &self,
        app: &Arc<CatalogApp>,
        name: &str,
        payload: serde_json::Value,
        depth: usize,
    ) -> Result<usize, String> {
        let Some(scripts) = app.triggers.get(name) else {
            return Ok(0);
        };
        let mut queued = 0;
        for script in scripts {
            let id = crate::dispatch::next_request_id();
            let job = Job {
                app: app.clone(),
                script: script.clone(),
                request: ScriptRequest {
                    id,
                    method: "EVENT".into(),
                    path: "/".into(),
                    ..ScriptRequest::default()
                },
                reply: None,
                origin: Origin::Event {
                    name: name.to_string(),
                    payload: payload.clone(),
                    depth,
                },
            };
            match self.submitter.submit(job) {
                Ok(()) => queued += 1,
                Err(Refused {
                    why: Refusal::Quarantined { .. },
                    ..
                }) => {
                    log::info!(
                        "app {}: event {name:?}: trigger {} skipped: app quarantined",
                        app.name,
                        script.name
                    );
                }
                Err(r) => {
                    return Err(format!(
                        "{}: {queued} of {} triggered runs queued",
                        r.why.as_str(),
                        scripts.len()
                    ));
                }
            }
        }
        Ok(queued)
    }
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The pool is shutting down.
    Closed,
    /// The node's queue (`queue_len_max`) is full.
    NodeFull,
    /// The app is at its engine cap and its share of the queue is full.
    AppFull,
    /// The app is quarantined (`breaker.rs`).
    Quarantined {
        /// Seconds until its cool-down ends (at least 1).
        retry_after_s: u64,
    },
}

impl Refusal {
    /// In words, for messages and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Closed => "node shutting down",
            Refusal::NodeFull => "job queue full",
            Refusal::AppFull => "job queue full (the app's share)",
            Refusal::Quarantined { .. } => "app quarantined",
        }
    }
}

/// A job the pool did not take, given back with the reason.
pub struct Refused {
    /// The job, untouched (its `reply` still unsent).
    pub job: Job,
    /// Why.
    pub why: Refusal,
}

/// A cheap, cloneable handle that submits jobs to a [`Pool`] (for the dispatcher). It does not
/// keep the pool's threads alive: after [`Pool::shutdown`] every submit fails.
#[derive(Clone)]
pub struct Submitter(Arc<Queue>);

impl Submitter {
    /// Queues a job without ever blocking, in its app's lane. Refused, the job comes back with
    /// the reason: the node's queue or the app's share is full, the pool is closing (the caller
    /// answers 503 `overloaded`), or the app is quarantined (503 `app_quarantined`).
    // The job comes back by value (no allocation on the overload path); it is a few hundred
    // bytes, moved once.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        let q = &self.0;
        // Relaxed: a submit racing with shutdown may still get in; the engines drain every
        // lane before they end, and the pool drops what is left after joining them.
        if q.closed.load(Ordering::Relaxed) {
            return Err(Refused {
                job,
                why: Refusal::Closed,
            });
        }
        // A reference count for the app while its job moves into the lane (the state is
        // borrowed from it).
        let app = job.app.clone();
        let state = AppState::of(&app);
        let probe = match state.map(|s| s.breaker.admit(picloud_core::now_ms)) {
            None | Some(Admit::Run) => false,
            Some(Admit::Probe) => true,
            Some(Admit::Refuse { retry_after_s }) => {
                return Err(Refused {
                    job,
                    why: Refusal::Quarantined { retry_after_s },
                });
            }
        };
        let (lane, cap) = match state {
            Some(s) => (&s.lane, app.limits.concurrency_max.clamp(1, q.workers)),
            None => (&q.default_lane, q.workers),
        };
        let share = q.limits.app_queue_share(cap, q.workers);
        match lane.push(
            Queued { job, probe },
            cap,
            share,
            &q.queued,
            q.queue_len_max,
        ) {
            Ok(list) => {
                if list {
                    q.list(lane.clone());
                }
                q.ring();
                Ok(())
            }
            Err((queued, full)) => {
                if queued.probe
                    && let Some(s) = state
                {
                    s.breaker.probe_not_queued();
                }
                Err(Refused {
                    job: queued.job,
                    why: match full {
                        Full::Node => Refusal::NodeFull,
                        Full::App => Refusal::AppFull,
                    },
                })
            }
        }
    }

    /// [`Submitter::submit`] without the reason: a refused job comes back as it was.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        self.submit(job).map_err(|r| r.job)
    }

    /// Jobs waiting in the queue, all apps together (not counting those running).
    pub fn queue_len(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }

    /// Engine threads of the pool.
    pub fn engines(&self) -> usize {
        self.0.workers
    }

    /// Engine threads not parked: running a job, or between jobs. Read from the parked list
    /// at scrape time, so the request path pays nothing for this gauge.
    pub fn busy_engines(&self) -> usize {
        self.0.workers.saturating_sub(self.0.parked.lock().len())
    }
}

/// The engine pool. See the module comment for its lifecycle.
pub struct Pool {
    queue: Submitter,
    threads: Vec<JoinHandle<()>>,
    ast_cache: Arc<AstCache>,
    module_cache: Arc<ModuleCache>,
}

impl Pool {
    /// Starts `workers` engine threads with the node's `limits` (queue length, AST cache size,
    /// default engine profile). Panics only if the OS refuses to create a thread at start-up.
    pub fn start(workers: usize, limits: &Limits) -> Pool {
        match Pool::start_with(PoolConfig::new(workers), limits) {
            Ok(pool) => pool,
            Err(e) => panic!("cannot start the engine pool: {e}"),
        }
    }

    /// Starts a pool. Core map: with `c` ≥ 2 cores, engine thread `i` is pinned to core
    /// `(i + 1) % c`, so core 0 is left to the may I/O worker until there are more engine
    /// threads than other cores (then threads share cores round-robin). With one core nothing
    /// is pinned. Pinning failures are logged and ignored: pinning is an optimisation.
    pub fn start_with(config: PoolConfig, limits: &Limits) -> io::Result<Pool> {
        let workers = config.workers.max(1);
        let options = EngineOptions {
            test_hooks: config.test_hooks,
        };
        let ast_cache = Arc::new(AstCache::with_options(limits, options));
        let module_cache = Arc::new(ModuleCache::new(limits));
        let resolver = AppModules::new(module_cache.clone(), ast_cache.clone());
        let cores = if config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let node_profile = EngineProfile::of(limits);
        // The idle trim is on unless its threshold is above every possible heap cap.
        if limits.idle_trim_bytes_min <= picloud_core::limits::max::HEAP_BYTES {
            super::alloc::map_large_allocations();
        }
        let mut pool = Pool {
            queue: Submitter(Arc::new(Queue {
                // Each lane is listed at most once and only with a queued job: at most
                // `queue_len_max` entries (+1 so a zero-length queue still builds).
                ready: ArrayQueue::new(limits.queue_len_max + 1),
                queued: AtomicUsize::new(0),
                queue_len_max: limits.queue_len_max,
                default_lane: Arc::new(Lane::default()),
                limits: limits.clone(),
                closed: AtomicBool::new(false),
                parked: Mutex::new(Vec::with_capacity(workers)),
                parked_len: AtomicUsize::new(0),
                workers,
                trim_wanted: AtomicBool::new(false),
                trim_bytes_min: u64::try_from(limits.idle_trim_bytes_min).unwrap_or(u64::MAX),
                doorbell: OnceLock::new(),
                pump: OnceLock::new(),
            })),
            threads: Vec::with_capacity(workers),
            ast_cache,
            module_cache,
        };
        for i in 0..workers {
            let core = (cores.len() >= 2).then(|| cores[(i + 1) % cores.len()]);
            let queue = pool.queue.0.clone();
            let runner_parts = (
                pool.ast_cache.clone(),
                resolver.clone(),
                config.services.clone(),
                config.sink.clone(),
            );
            let handle = thread::Builder::new()
                // Linux keeps 15 bytes of a thread name: short enough that /proc shows the index.
                .name(format!("picloud-eng-{i}"))
                .stack_size(config.stack_bytes)
                .spawn(move || {
                    if let Some(core) = core
                        && !core_affinity::set_for_current(core)
                    {
                        log::warn!("engine thread {i}: could not pin to core {}", core.id);
                    }
                    let (cache, resolver, services, sink) = runner_parts;
                    let runner = Runner {
                        engines: Engines::new(node_profile, options, resolver),
                        cache,
                        services,
                        sink,
                        records: Vec::new(),
                        last_heap_peak_bytes: 0,
                    };
                    engine_main(&queue, runner);
                });
            match handle {
                Ok(h) => pool.threads.push(h),
                // Dropping `pool` here closes the queue and joins the threads already started.
                Err(e) => return Err(e),
            }
        }
        // Events emitted by scripts queue their triggered runs on this pool.
        let _ = config.services.events.set(Arc::new(PoolEvents {
            submitter: pool.queue.clone(),
        }));
        log::info!(
            "engine pool started: {workers} threads, queue {}, stack {} MiB",
            limits.queue_len_max,
            config.stack_bytes / (1024 * 1024)
        );
        Ok(pool)
    }

    /// Queues a job without ever blocking; see [`Submitter::try_submit`].
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        self.queue.try_submit(job)
    }

    /// A handle for submitting jobs from elsewhere (the dispatcher).
    pub fn submitter(&self) -> Submitter {
        self.queue.clone()
    }

    /// Jobs waiting in the queue (not counting those running).
    pub fn queue_len(&self) -> usize {
        self.queue.queue_len()
    }

    /// Number of engine threads.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    /// The shared AST cache (for warming after a catalog swap and save-time compiles).
    pub fn ast_cache(&self) -> Arc<AstCache> {
        self.ast_cache.clone()
    }

    /// The shared cache of evaluated modules.
    pub fn module_cache(&self) -> Arc<ModuleCache> {
        self.module_cache.clone()
    }

    /// Refuses new jobs, lets the threads finish the jobs already queued, and joins them. Takes
    /// as long as those jobs take (each bounded by its app's deadline).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let queue = &self.queue.0;
        // Engines take every ready job first and end only when nothing is ready, so the jobs
        // already queued are run (each bounded by its app's deadline).
        queue.closed.store(true, Ordering::Release);
        queue.wake_engines(true);
        for h in self.threads.drain(..) {
            // A thread only ends by panicking outside `catch_unwind` (a bug); its jobs' replies
            // were sent by `ReplyTx`'s drop fallback. Nothing more to do here.
            if h.join().is_err() {
                log::error!("an engine thread panicked outside a job");
            }
        }
        // A submit that raced with the close may have queued a job after the engines ended:
        // dropping it answers its waiter 500 (`ReplyTx`'s fallback) instead of leaving it hang.
        while let Some(lane) = queue.ready.pop() {
            drop(lane.drain(&queue.queued));
        }
    }
}

/// Runs invocations on the calling thread exactly as an engine thread does (same engines, AST
/// cache, budget and conversion), without the queue and reply hand-off. For measuring the
/// engine's own per-request cost (`examples/engine_overhead.rs`); the calling thread must have
/// an engine-sized stack ([`ENGINE_STACK_BYTES`]). Not for serving.
#[doc(hidden)]
pub struct InlineRunner {
    runner: Runner,
}

impl InlineRunner {
    /// A runner with the node's `limits`.
    pub fn new(limits: &Limits) -> InlineRunner {
        let cache = Arc::new(AstCache::new(limits));
        let resolver = AppModules::new(Arc::new(ModuleCache::new(limits)), cache.clone());
        InlineRunner {
            runner: Runner {
                engines: Engines::new(
                    EngineProfile::of(limits),
                    EngineOptions::default(),
                    resolver,
                ),
                cache,
                services: Arc::new(Services::default()),
                sink: None,
                records: Vec::new(),
                last_heap_peak_bytes: 0,
            },
        }
    }

    /// Runs one invocation and returns its response.
    pub fn run(
        &mut self,
        app: &Arc<CatalogApp>,
        script: &CatalogScript,
        request: ScriptRequest,
    ) -> Response {
        self.runner.run(app, script, request, &Origin::Http, false)
    }
}

/// An engine thread's frozen engines: the node's profile, built at thread start, plus up to
/// [`ENGINE_PROFILES_MAX`] others built on first use. None is ever modified after building.
struct Engines {
    options: EngineOptions,
    node_profile: EngineProfile,
    node: Engine,
    /// Most recently used first.
    others: Vec<(EngineProfile, Engine)>,
    /// Every engine resolves `import` through it.
    resolver: AppModules,
}

impl Engines {
    fn new(node_profile: EngineProfile, options: EngineOptions, resolver: AppModules) -> Engines {
        Engines {
            options,
            node_profile,
            node: Self::build(&node_profile, options, &resolver),
            others: Vec::new(),
            resolver,
        }
    }

    fn build(profile: &EngineProfile, options: EngineOptions, resolver: &AppModules) -> Engine {
        let mut engine = build_engine(profile, options);
        engine.set_module_resolver(resolver.clone());
        engine
    }

    fn for_limits(&mut self, limits: &Limits) -> &Engine {
        let profile = EngineProfile::of(limits);
        if profile == self.node_profile {
            return &self.node;
        }
        match self.others.iter().position(|(p, _)| *p == profile) {
            Some(0) => {}
            Some(i) => {
                let hit = self.others.remove(i);
                self.others.insert(0, hit);
            }
            None => {
                let engine = Self::build(&profile, self.options, &self.resolver);
                self.others.insert(0, (profile, engine));
                self.others.truncate(ENGINE_PROFILES_MAX);
            }
        }
        &self.others[0].1
    }
}

/// The body of an engine thread: take a job, run it, reply; until the pool is closed and no
/// lane is ready.
fn engine_main(queue: &Queue, mut runner: Runner) {
    loop {
        // Jobs queued back to back run back to back; their replies go out together when no
        // lane is ready (or earlier, see `flush_replies_if_stale`).
        let next = match queue.try_take() {
            Some(got) => Some(got),
            None => {
                flush_replies();
                runner.flush_records();
                queue.next_job()
            }
        };
        let Some((Queued { job, probe }, lane)) = next else {
            flush_replies();
            runner.flush_records();
            return;
        };
        if let Some(pump) = queue.pump.get() {
            THREAD_PUMP.with(|p| {
                if p.borrow().is_none() {
                    *p.borrow_mut() = Some(pump.clone());
                }
            });
        }
        let Job {
            app,
            script,
            request,
            reply,
            origin,
        } = job;
        let resp = runner.run(&app, &script, request, &origin, probe);
        if runner.last_heap_peak_bytes >= queue.trim_bytes_min {
            queue.trim_wanted.store(true, Ordering::Relaxed);
        }
        if let Some(reply) = reply {
            hold_reply(reply, resp);
        }
        // The app's slot is free: its lane goes back on the ring if it has a backlog.
        if lane.finish() {
            queue.list(lane);
        }
    }
}

/// What an engine thread runs jobs with: its engines, the shared caches, the SDK's services,
/// and where records go.
struct Runner {
    engines: Engines,
    cache: Arc<AstCache>,
    services: Arc<Services>,
    sink: Option<Arc<dyn InvocationSink>>,
    /// Records of finished runs not yet handed to the sink.
    records: Vec<InvocationRecord>,
    /// Heap peak of the last run (for the idle trim, see `Queue::trim_wanted`).
    last_heap_peak_bytes: u64,
}

/// Records an engine holds before handing them to the sink in one batch. Under load the log
/// writer is then woken once per this many requests (a per-request wake-up of another thread
/// on a shared core costs a context switch, as measured for replies); when the queue runs dry
/// the engine flushes what it holds before it parks, so a record never waits for more work.
const RECORD_BATCH_LEN: usize = 64;

impl Runner {
    fn hold_record(&mut self, record: InvocationRecord) {
        self.records.push(record);
        if self.records.len() >= RECORD_BATCH_LEN {
            self.flush_records();
        }
    }

    /// Hands the held records to the sink (the engine is about to wait, or exit).
    fn flush_records(&mut self) {
        if let Some(sink) = &self.sink
            && !self.records.is_empty()
        {
            let batch = std::mem::replace(&mut self.records, Vec::with_capacity(RECORD_BATCH_LEN));
            sink.record_batch(batch);
        }
    }
}

/// What `invoke` measured, for the record and the debug headers.
#[derive(Default)]
struct Measured {
    operations: u64,
    heap_peak_bytes: u64,
}

impl Runner {
    /// Runs one invocation and always produces a response. A panic anywhere in it (a bug in a
    /// native function, in our conversion code, in Rhai) is caught: the request gets 500
    /// `internal`, and the thread goes on with the next job. Every run leaves a record.
    fn run(
        &mut self,
        app: &Arc<CatalogApp>,
        script: &CatalogScript,
        request: ScriptRequest,
        origin: &Origin,
        probe: bool,
    ) -> Response {
        let request_id = request.id.clone();
        let started = std::time::Instant::now();
        let mut measured = Measured::default();
        sdk::begin(app.clone(), self.services.clone(), origin.depth());
        // AssertUnwindSafe: after a panic we reset the only state shared across jobs that a
        // panic could leave half-done (the thread-local budget, allocator arming and SDK state,
        // below). The engines are not modified by running a script (the string interner is
        // behind its own lock), and the caches' mutexes are never held across code that can
        // panic.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            invoke(
                &mut self.engines,
                &self.cache,
                app,
                script,
                &request_id,
                request,
                origin,
                &mut measured,
            )
        }));
        // Always, because a panic skips the calls inside `invoke`. Idempotent.
        sandbox::end_invocation();
        let mut lines = sdk::finish();
        let (mut resp, error) = match outcome {
            Ok(Ok(resp)) => (resp, None),
            Ok(Err(failure)) => {
                let code = failure.code();
                if let (ScriptFailure::Limit(kind), Some(stats)) = (&failure, AppStats::of(app)) {
                    stats.count_limit(*kind);
                }
                (failure.into_response(&request_id, app.debug), Some(code))
            }
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!(
                    "request {request_id}: app {} script {} v{}: job panicked: {what}",
                    app.name,
                    script.name,
                    script.version
                );
                (
                    ScriptFailure::Internal.into_response(&request_id, app.debug),
                    Some(picloud_core::ErrorCode::Internal),
                )
            }
        };
        self.last_heap_peak_bytes = measured.heap_peak_bytes;
        if let Some(state) = AppState::of(app) {
            if let Some(code) = error {
                state.stats.count_error(code);
            }
            // The breaker sees every run's outcome (one relaxed load for a healthy app).
            if let Some(line) = state.breaker.record(Outcome::of(error), probe, &app.limits) {
                log::warn!("app {}: {line}", app.name);
                lines.push(picloud_core::services::LogLine {
                    level: "warn".into(),
                    message: line,
                });
            }
        }
        if app.debug {
            resp.headers.push((
                "x-picloud-operations".into(),
                measured.operations.to_string(),
            ));
            resp.headers.push((
                "x-picloud-heap-peak-bytes".into(),
                measured.heap_peak_bytes.to_string(),
            ));
        }
        if self.sink.is_some() {
            let duration = started.elapsed();
            // Start time, from the wall clock now minus the run: one clock read per run.
            let ts_ms = std::time::SystemTime::now()
                .checked_sub(duration)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.hold_record(InvocationRecord {
                request_id,
                ts_ms,
                app: app.name.clone(),
                script: script.name.clone(),
                trigger: origin.trigger(),
                status: resp.status,
                duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
                operations: measured.operations,
                heap_peak_bytes: measured.heap_peak_bytes,
                error: error.map(|c| c.as_str().to_string()),
                lines,
            });
        }
        resp
    }
}

// Eight arguments: each is a different borrow of the runner or of the job being run.
#[allow(clippy::too_many_arguments)]
fn invoke(
    engines: &mut Engines,
    cache: &AstCache,
    app: &Arc<CatalogApp>,
    script: &CatalogScript,
    request_id: &str,
    request: ScriptRequest,
    origin: &Origin,
    measured: &mut Measured,
) -> Result<Response, ScriptFailure> {
    // Compiles on a miss, here on the engine thread (big stack, off the coroutines).
    let ast = cache
        .get_or_compile(&script.hash, &script.source)
        .map_err(|e| {
            ScriptFailure::script(
                format!("script does not compile: {}", e.message),
                (e.line > 0).then_some(e.line),
            )
        })?;
    let engine = engines.for_limits(&app.limits);
    let mut scope = Scope::new();
    let caps = SizeCaps::of(&app.limits);
    scope.push_constant("request", RequestObj::new(request, caps));
    match origin {
        Origin::Http => {}
        Origin::Cron { schedule, due_ms } => {
            let mut m = rhai::Map::new();
            m.insert("name".into(), Dynamic::from(schedule.clone()));
            m.insert(
                "due_ms".into(),
                Dynamic::from_int(i64::try_from(*due_ms).unwrap_or(i64::MAX)),
            );
            scope.push_constant("schedule", m);
        }
        Origin::Event { name, payload, .. } => {
            let payload = serde_json::to_vec(payload)
                .ok()
                .and_then(|b| contract::parse_json_body(&b, caps).ok())
                .unwrap_or(Dynamic::UNIT);
            let mut m = rhai::Map::new();
            m.insert("name".into(), Dynamic::from(name.clone()));
            m.insert("payload".into(), payload);
            scope.push_constant("event", m);
        }
    }

    // `import` resolves this app's modules from the catalog this request started on.
    let _modules = modules::enter(app.clone());
    // Budget and heap counting cover exactly the evaluation (including lazy request fields
    // built during it), not the queue wait or the response conversion.
    sandbox::begin_invocation(&app.limits);
    let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &ast);
    let usage = sandbox::end_invocation();
    measured.operations = usage.operations;
    measured.heap_peak_bytes = u64::try_from(usage.heap_peak_bytes.max(0)).unwrap_or(0);

    let value = result.map_err(|e| ScriptFailure::from_eval(&e))?;
    // Post-checks: the last few operations before the script ended were not seen by an
    // `on_progress` call (the clock is read every 64 operations; one native call can allocate a
    // lot), so the budget is checked once more on success.
    if usage.heap_exceeded {
        return Err(ScriptFailure::Limit(picloud_core::LimitKind::Memory));
    }
    if usage.deadline_passed {
        return Err(ScriptFailure::Timeout);
    }
    contract::to_response(value, request_id, app.limits.heap_bytes_max)
}
