//! The may runtime configuration of a node: worker count, epoll timeout, coroutine pool and
//! stack size.
//!
//! Owns: [`configure_runtime`], the one place that calls `may::config()`, and the values it
//! chooses. Does not own: engine threads or their pinning (the engine pool does that), nor
//! starting the scheduler (may starts it lazily on first use: the first coroutine spawned or
//! socket registered).
//!
//! Why these values (see DESIGN.md, "Measured facts"):
//! - may's default epoll timeout is 10 ms, which wakes every worker 100 times a second forever.
//!   An idle node must wake no thread, so we raise it to a day: may still wakes at once for I/O
//!   and for its own timers (a pending socket read timeout is a timer), and the value must stay
//!   below `i32::MAX` ms (~24.8 days) or may's `epoll_wait` conversion panics.
//! - may pre-creates its coroutine pool at start (default 1000 stacks, +8 MB). A small pool is
//!   enough: it only saves an mmap per connection while connections churn.
//! - The stack size is even: an odd size makes may's generator touch every page to track usage.
//!   Rhai never runs on a coroutine, so 32 KiB is ample for parsing, the handler's hand-off and
//!   logging; untouched stack pages cost no memory.
//! - may pins worker `i` to core `i` (cycling over the cores) while `set_worker_pin(true)`, its
//!   default. With one io thread the may worker sits on core 0, leaving the other cores to the
//!   pinned engine threads. may's timer thread is not pinned; it sleeps unless a timer is armed.

use std::sync::OnceLock;

/// Epoll timeout of may's workers: one day, "never" in practice (must stay below ~24.8 days).
pub const EPOLL_TIMEOUT_NS: u64 = 24 * 3600 * 1_000_000_000;

/// Coroutines kept ready in may's pool (pre-created at scheduler start). Each pooled coroutine
/// keeps the stack pages its last connection touched (~12 KiB measured), so after a burst of
/// traffic the pool's size is idle memory: 8 keeps ~100 KiB instead of ~400 KiB at 32, at the
/// price of an mmap per connection beyond 8 concurrent new ones.
pub const COROUTINE_POOL_CAPACITY: usize = 8;

/// Stack of every coroutine, in bytes (a power of two; may takes it in words).
pub const COROUTINE_STACK_BYTES: usize = 32 * 1024;

/// What [`configure_runtime`] applied (the first call's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// may worker threads (each runs an epoll loop and the coroutines scheduled on it).
    pub io_threads: usize,
    /// Epoll timeout of each worker, in nanoseconds.
    pub epoll_timeout_ns: u64,
    /// Coroutines kept in may's pool.
    pub pool_capacity: usize,
    /// Stack of each coroutine, in bytes.
    pub stack_bytes: usize,
    /// Whether may pins worker `i` to core `i`.
    pub worker_pin: bool,
}

static APPLIED: OnceLock<RuntimeConfig> = OnceLock::new();

/// Configures may for a node. Call it once before the first coroutine or may socket exists
/// (may reads these values when its scheduler starts and ignores later changes).
///
/// Safe to call more than once: only the first call applies; later calls return the applied
/// configuration (and log a warning if they asked for a different io thread count).
/// `io_threads` 0 means 1.
pub fn configure_runtime(io_threads: usize) -> RuntimeConfig {
    let io_threads = io_threads.max(1);
    let applied = *APPLIED.get_or_init(|| {
        let cfg = RuntimeConfig {
            io_threads,
            epoll_timeout_ns: EPOLL_TIMEOUT_NS,
            pool_capacity: COROUTINE_POOL_CAPACITY,
            stack_bytes: COROUTINE_STACK_BYTES,
            worker_pin: true,
        };
        let may_cfg = may::config();
        may_cfg
            .set_workers(cfg.io_threads)
            .set_pool_capacity(cfg.pool_capacity)
            // may counts the stack in words; 32 KiB / 8 is 4096, even as required.
            .set_stack_size(cfg.stack_bytes / std::mem::size_of::<usize>());
        may_cfg.set_timeout_ns(cfg.epoll_timeout_ns);
        may_cfg.set_worker_pin(cfg.worker_pin);
        log::info!(
            "may runtime: {} io thread(s), pinned from core 0, pool {}, stack {} KiB",
            cfg.io_threads,
            cfg.pool_capacity,
            cfg.stack_bytes / 1024
        );
        cfg
    });
    if applied.io_threads != io_threads {
        log::warn!(
            "may runtime already configured with {} io thread(s); ignoring {io_threads}",
            applied.io_threads
        );
    }
    applied
}

/// Configures may with defaults if nobody did, so a server never runs on may's own defaults
/// (10 ms epoll wake-ups, 1000-coroutine pool).
pub(crate) fn ensure_configured() -> RuntimeConfig {
    match APPLIED.get() {
        Some(cfg) => *cfg,
        None => configure_runtime(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_values_are_safe_for_may() {
        // Below i32::MAX milliseconds, or may's epoll timeout conversion panics.
        assert!(EPOLL_TIMEOUT_NS / 1_000_000 < i32::MAX as u64);
        // An even word count: an odd one makes may touch every stack page.
        assert_eq!(
            (COROUTINE_STACK_BYTES / std::mem::size_of::<usize>()) % 2,
            0
        );
        assert!(COROUTINE_STACK_BYTES.is_power_of_two());
    }
}
