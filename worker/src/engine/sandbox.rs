//! The sandbox: how a PiCloud `rhai::Engine` is built, and the per-invocation budget (deadline,
//! operations, heap) enforced from `on_progress`.
//!
//! Owns: [`EngineProfile`] and [`build_engine`] (the only place an `Engine` is configured), the
//! shared standard package, the thread-local [`Budget`] of the running invocation and the
//! [`Stop`] tokens `on_progress` returns. Does not own: the request/response contract
//! (`contract.rs`), the threads (`pool.rs`) or the allocator itself (`alloc.rs`).
//!
//! How per-app limits are enforced without mutating an Engine:
//! - Wall clock (`timeout_ms`), operations (`operations_max`) and heap (`heap_bytes_max`) vary
//!   per invocation: they live in a thread-local [`Budget`] set by [`begin_invocation`] right
//!   before `eval` and cleared by [`end_invocation`]; the Engine's one `on_progress` callback
//!   reads it. The Engine's own `max_operations` is only a backstop at the hard maximum.
//! - Call depth, expression depth and module count are checked by Rhai itself, and
//!   string/array/map sizes by the growth functions of `growth.rs`, from values fixed in the
//!   Engine. They are the [`EngineProfile`]: each engine thread
//!   keeps one frozen Engine per distinct profile it has met (the node's profile is built at
//!   start; an app overriding e.g. `call_depth_max` gets its own Engine built on first use, in
//!   microseconds from the shared package, then never changed). See `pool.rs` `Engines`.
//!
//! Sandbox rules (DESIGN.md): no module resolver at all (`Engine::new_raw` has none, so `import`
//! fails with "module not found"; in-memory modules come later), `print`/`debug` go to the
//! `log` crate at debug level (never stdout), `eval` is a disabled symbol (a compile error),
//! and `sleep` is replaced by a version that never sleeps past the deadline.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use picloud_core::{LimitKind, Limits};
use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT, NativeCallContext, Shared};

use super::alloc;
use super::{contract, growth, nesting};

/// How often (in operations) `on_progress` reads the clock while operations are cheap. One
/// native call counts as one operation, so a clock read every 1024 operations let a loop of
/// expensive calls overrun a 50 ms budget by 3.5 s; every 64 measured at no extra cost
/// (DESIGN.md). Power of two so the check is a mask.
pub const CLOCK_CHECK_EVERY_OPS: u64 = 64;

/// An operation slower than this on average (measured between two clock reads) is
/// "expensive" (a native call on a big value): the clock is then read after *every* operation
/// until they are cheap again. A clock read (~25 ns) is noise next to a 15 µs operation, and
/// the deadline overrun shrinks from 64 expensive calls to one. In other words: while 64
/// operations take under 1 ms, read the clock every 64.
pub const SLOW_OP_NS: u64 = 1_000_000 / CLOCK_CHECK_EVERY_OPS;

/// The limits that Rhai checks itself from values stored in the Engine. Two apps with equal
/// profiles share one Engine per thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EngineProfile {
    /// `Limits::call_depth_max`.
    pub call_depth_max: usize,
    /// `Limits::expr_depth_max` (compile time, global and in functions).
    pub expr_depth_max: usize,
    /// `Limits::string_bytes_max`.
    pub string_bytes_max: usize,
    /// `Limits::array_len_max`.
    pub array_len_max: usize,
    /// `Limits::map_len_max`.
    pub map_len_max: usize,
    /// `Limits::modules_max`.
    pub modules_max: usize,
}

impl EngineProfile {
    /// The profile of a set of limits.
    pub fn of(limits: &Limits) -> EngineProfile {
        EngineProfile {
            call_depth_max: limits.call_depth_max,
            expr_depth_max: limits.expr_depth_max,
            string_bytes_max: limits.string_bytes_max,
            array_len_max: limits.array_len_max,
            map_len_max: limits.map_len_max,
            modules_max: limits.modules_max,
        }
    }
}

/// Options of the engines that are not limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// Registers `__picloud_test_panic()`, a native function that panics, so tests can prove a
    /// panicking job answers 500 and the thread lives on. Never set in production.
    pub test_hooks: bool,
}

/// Rhai's standard package, built once per process (~0.3 ms, ~200 KB) and shared into every
/// Engine (~200 ns each).
fn std_package() -> Shared<rhai::Module> {
    static PACKAGE: OnceLock<Shared<rhai::Module>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| StandardPackage::new().as_shared_module())
        .clone()
}

/// Builds one sandboxed Engine. Called at pool start (node profile), on an engine thread the
/// first time it meets a new profile, and for compilation. The result is never changed.
pub fn build_engine(profile: &EngineProfile, options: EngineOptions) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(std_package());
    // Same interner as `Engine::new()`: property names and small strings are reused.
    engine.set_max_strings_interned(256);

    // Limits Rhai enforces itself (see the module comment).
    engine.set_max_call_levels(profile.call_depth_max);
    engine.set_max_expr_depths(profile.expr_depth_max, profile.expr_depth_max);
    engine.set_max_modules(profile.modules_max);
    // Rhai's string/array/map size limits stay unset (0): with any of them set, Rhai walks the
    // whole value after every call that returns or mutates it, so building a collection is
    // quadratic. `growth.rs` enforces the sizes in O(1) instead, with the heap cap behind it.
    // Per-invocation operations are enforced in `on_progress`; this is only a backstop.
    engine.set_max_operations(picloud_core::limits::max::OPERATIONS);
    engine.on_progress(on_progress);

    // No stdout, ever: script output goes to the log at debug level.
    engine.on_print(|s| log::debug!(target: "picloud::script", "print: {s}"));
    engine.on_debug(|s, _source, pos| log::debug!(target: "picloud::script", "debug {pos}: {s}"));

    // `eval` would compile a string at run time, outside the AST cache and its checks.
    engine.disable_symbol("eval");

    // The standard `sleep` blocks the thread with no regard for the deadline; this one sleeps
    // at most until the deadline and then ends the script with a timeout.
    engine.register_fn("sleep", |ctx: NativeCallContext, seconds: INT| {
        sleep_within_deadline(&ctx, seconds as FLOAT)
    });
    engine.register_fn("sleep", |ctx: NativeCallContext, seconds: FLOAT| {
        sleep_within_deadline(&ctx, seconds)
    });

    contract::register_request_type(&mut engine);
    super::sdk::register(&mut engine, profile.string_bytes_max);
    nesting::register(&mut engine, profile.string_bytes_max);
    growth::register(&mut engine, profile);

    if options.test_hooks {
        engine.register_fn("__picloud_test_panic", || -> INT {
            panic!("__picloud_test_panic called (test hook)")
        });
    }
    engine
}

/// Why `on_progress` ended a script. Returned to Rhai as an integer token inside
/// `ErrorTerminated`, mapped back by [`Stop::from_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Wall-clock deadline passed → 504 `timeout`.
    Timeout,
    /// Operations budget used up → `limit_exceeded` / `operations`.
    Operations,
    /// Heap cap crossed → `limit_exceeded` / `memory`.
    Memory,
}

impl Stop {
    pub(crate) fn token(self) -> Dynamic {
        Dynamic::from_int(match self {
            Stop::Timeout => 1,
            Stop::Operations => 2,
            Stop::Memory => 3,
        })
    }

    /// The reason behind a termination token, if it is one of ours.
    pub fn from_token(token: &Dynamic) -> Option<Stop> {
        match token.as_int().ok()? {
            1 => Some(Stop::Timeout),
            2 => Some(Stop::Operations),
            3 => Some(Stop::Memory),
            _ => None,
        }
    }

    /// The limit kind reported for this stop (`None` for the timeout, which is its own code).
    pub fn limit_kind(self) -> Option<LimitKind> {
        match self {
            Stop::Timeout => None,
            Stop::Operations => Some(LimitKind::Operations),
            Stop::Memory => Some(LimitKind::Memory),
        }
    }
}

/// The running invocation's budget. `Copy`, in a `Cell`: read and written only by the full
/// check, never on the per-operation fast path (that is [`alloc::gate_ops`]).
#[derive(Debug, Clone, Copy)]
struct Budget {
    deadline: Instant,
    operations_max: u64,
    heap_bytes_max: isize,
    /// When the clock was last read, and the operation count then.
    clock_read_at: Instant,
    clock_read_ops: u64,
}

thread_local! {
    /// Set only between [`begin_invocation`] and [`end_invocation`] on an engine thread. `None`
    /// elsewhere (compilation, tests' threads): `on_progress` then never stops anything.
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// What an invocation used, returned by [`end_invocation`].
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Highest net heap bytes during the invocation.
    pub heap_peak_bytes: isize,
    /// Whether the heap cap was crossed (even if no `on_progress` call saw it).
    pub heap_exceeded: bool,
    /// Whether the deadline had passed when the invocation ended.
    pub deadline_passed: bool,
    /// Operations counted at the last budget check: exact for slow operations, otherwise at
    /// most [`CLOCK_CHECK_EVERY_OPS`] below the true count (counting every operation would cost
    /// a thread-local write per operation).
    pub operations: u64,
}

/// Installs this invocation's budget on the current thread and arms the allocator. The clock
/// starts here, on the engine thread: time spent queued is not charged to the script.
pub fn begin_invocation(limits: &Limits) {
    let now = Instant::now();
    let budget = Budget {
        deadline: now + Duration::from_millis(limits.timeout_ms),
        operations_max: limits.operations_max,
        heap_bytes_max: isize::try_from(limits.heap_bytes_max).unwrap_or(isize::MAX),
        clock_read_at: now,
        clock_read_ops: 0,
    };
    BUDGET.with(|b| b.set(Some(budget)));
    alloc::arm(budget.heap_bytes_max);
}

/// Clears the budget and disarms the allocator. Safe to call twice (the pool calls it again
/// after a caught panic, when the normal path may not have run).
pub fn end_invocation() -> Usage {
    let heap_peak_bytes = alloc::disarm();
    let budget = BUDGET.with(|b| b.replace(None));
    match budget {
        Some(b) => Usage {
            heap_peak_bytes,
            heap_exceeded: heap_peak_bytes > b.heap_bytes_max,
            deadline_passed: Instant::now() >= b.deadline,
            operations: b.clock_read_ops,
        },
        None => Usage {
            heap_peak_bytes,
            heap_exceeded: false,
            deadline_passed: false,
            operations: 0,
        },
    }
}

/// Rhai calls this after every operation with the invocation's operation count. The fast
/// path is one thread-local load and a compare: nothing to check before the gate. The gate is
/// the next clock read ([`CLOCK_CHECK_EVERY_OPS`] ahead while operations are cheap, the next
/// operation while they are slow), capped at `operations_max + 1` so the operations limit is
/// exact; the allocator closes it at once when the heap cap is crossed.
#[inline]
fn on_progress(operations: u64) -> Option<Dynamic> {
    if operations < alloc::gate_ops() {
        return None;
    }
    full_check(operations)
}

#[cold]
fn full_check(operations: u64) -> Option<Dynamic> {
    BUDGET.with(|cell| {
        let mut budget = cell.get()?;
        if operations > budget.operations_max {
            return Some(Stop::Operations.token());
        }
        if alloc::peak_bytes() > budget.heap_bytes_max {
            return Some(Stop::Memory.token());
        }
        let now = Instant::now();
        if now >= budget.deadline {
            return Some(Stop::Timeout.token());
        }
        // Replies of earlier jobs never wait long behind this one.
        super::pool::flush_replies_if_stale(now);
        // Adapt the clock-read rate to the cost of operations (see SLOW_OP_NS).
        let elapsed_ns = now.duration_since(budget.clock_read_at).as_nanos();
        let ops = operations.saturating_sub(budget.clock_read_ops).max(1);
        let slow = elapsed_ns > u128::from(ops) * u128::from(SLOW_OP_NS);
        let stride = if slow { 1 } else { CLOCK_CHECK_EVERY_OPS };
        budget.clock_read_at = now;
        budget.clock_read_ops = operations;
        cell.set(Some(budget));
        let next = operations
            .saturating_add(stride)
            .min(budget.operations_max.saturating_add(1));
        alloc::set_gate_ops(next);
        None
    })
}

/// The replacement for Rhai's `sleep`: sleeps for `seconds` but never past the deadline; if
/// the deadline cuts the sleep short, the script ends with a timeout. Outside an invocation
/// (no budget) it does not sleep at all.
fn sleep_within_deadline(
    ctx: &NativeCallContext,
    seconds: FLOAT,
) -> Result<(), Box<EvalAltResult>> {
    if seconds.is_nan() || seconds <= 0.0 {
        return Ok(());
    }
    let Some(budget) = BUDGET.with(Cell::get) else {
        return Ok(());
    };
    // Earlier jobs' replies must not sleep with us.
    super::pool::flush_replies();
    let now = Instant::now();
    let left = budget.deadline.saturating_duration_since(now);
    // `try_from_secs_f64` rejects NaN/inf/overflow: treat those as "longer than any deadline".
    let wanted = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
    if wanted < left {
        std::thread::sleep(wanted);
        return Ok(());
    }
    std::thread::sleep(left);
    Err(EvalAltResult::ErrorTerminated(Stop::Timeout.token(), ctx.call_position()).into())
}
