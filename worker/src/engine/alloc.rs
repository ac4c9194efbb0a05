//! [`CountingAlloc`]: the process's global allocator, counting the heap bytes each engine
//! thread allocates while an invocation is "armed".
//!
//! Owns: the per-thread counters (net bytes and peak net bytes since arming), the arm/disarm
//! switch, and the "progress gate": the operation count at which the sandbox's `on_progress`
//! next does its full check. Crossing the heap cap closes the gate (sets it to 0) so the very
//! next operation checks. Does not own: what happens then (the sandbox ends the script with
//! `limit: memory`; see `sandbox.rs`).
//!
//! Why a counting allocator: Rhai's own size limits have holes (a map of 900 KB strings passed
//! every string/array/map limit until the process hit a 4 GB cap, DESIGN.md), so the only
//! reliable per-invocation memory bound is to count what the invocation's thread allocates.
//!
//! Rules this file keeps, because it runs inside every allocation of the process:
//! - it never allocates (the thread-local is `const`-initialised and holds only `Copy` data, so
//!   touching it needs no lazy initialisation and registers no destructor);
//! - it never panics (`try_with`, saturating arithmetic);
//! - unarmed threads (the may workers, the control plane, tests' main threads) pay one
//!   thread-local load and a branch per allocation, nothing else.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// The allocator that does the work: the system allocator, or mimalloc with the `mimalloc`
/// feature (see bench/RESULTS.md for the comparison that keeps the default).
#[cfg(not(feature = "mimalloc"))]
use std::alloc::System as Inner;

#[cfg(feature = "mimalloc")]
use mimalloc::MiMalloc as Inner;

/// The global allocator of every binary linking `picloud-worker`: the system allocator plus
/// per-thread byte counting while armed. Declared `#[global_allocator]` in `engine/mod.rs`.
///
/// With the `mimalloc` feature, mimalloc (`no_thp`) does the work inside this wrapper instead of
/// the system allocator; the counting stays.
pub struct CountingAlloc;

/// Per-thread counter. `Copy` so that `Cell` gives whole-value loads and stores with no borrow
/// flag and no destructor.
#[derive(Clone, Copy)]
struct Counter {
    /// Counting only while an invocation runs on this thread.
    armed: bool,
    /// Bytes allocated minus bytes freed since arming. Negative when the invocation frees memory
    /// allocated before it was armed (for example the request body it consumed).
    net_bytes: isize,
    /// Highest `net_bytes` seen since arming: the cap is checked against this, so a transient
    /// spike between two checks is still caught.
    peak_bytes: isize,
    /// The invocation's heap cap; crossing it closes the progress gate.
    cap_bytes: isize,
}

const IDLE: Counter = Counter {
    armed: false,
    net_bytes: 0,
    peak_bytes: 0,
    cap_bytes: isize::MAX,
};

thread_local! {
    static COUNTER: Cell<Counter> = const { Cell::new(IDLE) };
    /// `on_progress` returns at once while the operation count is below this (one thread-local
    /// load per operation: the measured cost of a fuller check was ~2.5% of fib(20)). `MAX`
    /// when no invocation runs.
    static GATE_OPS: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Adds `delta_bytes` to this thread's counter if it is armed.
#[inline(always)]
fn record(delta_bytes: isize) {
    // `try_with` cannot fail for a const, destructor-free thread-local, but it costs nothing to
    // be sure that an allocation during thread teardown never panics inside the allocator.
    let _ = COUNTER.try_with(|cell| {
        let mut c = cell.get();
        if c.armed {
            c.net_bytes = c.net_bytes.saturating_add(delta_bytes);
            if c.net_bytes > c.peak_bytes {
                c.peak_bytes = c.net_bytes;
                if c.peak_bytes > c.cap_bytes {
                    // Make the next operation do its full check. Rarely reached (once per
                    // offending invocation, in practice), so the second thread-local is cheap.
                    let _ = GATE_OPS.try_with(|g| g.set(0));
                }
            }
            cell.set(c);
        }
    });
}

/// Sizes fit in `isize` by `Layout`'s own invariant; saturate anyway rather than wrap.
#[inline(always)]
fn signed(bytes: usize) -> isize {
    isize::try_from(bytes).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to the inner allocator with the caller's arguments unchanged
// and only adds bookkeeping that neither allocates nor unwinds, so its guarantees carry over.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        let p = unsafe { Inner.alloc(layout) };
        if !p.is_null() {
            record(signed(layout.size()));
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        let p = unsafe { Inner.alloc_zeroed(layout) };
        if !p.is_null() {
            record(signed(layout.size()));
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { Inner.dealloc(ptr, layout) };
        record(-signed(layout.size()));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        let p = unsafe { Inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record(signed(new_size) - signed(layout.size()));
        }
        p
    }
}

/// Starts counting on this thread from zero, with `cap_bytes` closing the progress gate, and
/// opens the gate for a full check on the first operation. Called right before `eval`.
pub fn arm(cap_bytes: isize) {
    COUNTER.with(|c| {
        c.set(Counter {
            armed: true,
            net_bytes: 0,
            peak_bytes: 0,
            cap_bytes,
        })
    });
    GATE_OPS.with(|g| g.set(0));
}

/// Stops counting on this thread and returns the peak net bytes since [`arm`]. Idempotent, so
/// the engine calls it on every exit path including after a caught panic.
pub fn disarm() -> isize {
    GATE_OPS.with(|g| g.set(u64::MAX));
    COUNTER.with(|c| {
        let peak_bytes = c.get().peak_bytes;
        c.set(IDLE);
        peak_bytes
    })
}

/// The operation count below which `on_progress` need not check anything.
#[inline(always)]
pub fn gate_ops() -> u64 {
    GATE_OPS.with(Cell::get)
}

/// Sets the next full-check point (the sandbox, after each full check).
pub fn set_gate_ops(operations: u64) {
    GATE_OPS.with(|g| g.set(operations));
}

/// Peak net bytes allocated on this thread since [`arm`] (0 when unarmed).
#[inline]
pub fn peak_bytes() -> isize {
    COUNTER.with(|c| c.get().peak_bytes)
}

/// Net bytes allocated on this thread since [`arm`] (0 when unarmed).
#[cfg(test)]
pub fn net_bytes() -> isize {
    COUNTER.with(|c| c.get().net_bytes)
}

/// Allocations at least this large get their own mapping (returned to the OS on free).
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc"))),
    allow(dead_code)
)]
const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;

/// Makes every allocation of [`MMAP_THRESHOLD_BYTES`] or more its own mapping, returned to the
/// OS the moment it is freed. glibc starts at 128 KiB but raises the threshold to the size of
/// each mapped block freed (up to 32 MiB), so after one big script every big string, array or
/// response body comes from the arenas and stays there; and a big response body is freed by the
/// may worker after the engines parked (and trimmed). Fixing the threshold turns that off. The
/// price: a fresh mapping (and its page faults) for each big value, only in scripts that build
/// them. Called once by the pool when the idle trim is on; process-wide; glibc only (see
/// [`release_free_memory`]).
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: mallopt only sets a tunable under the allocator's lock; any thread, any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

/// Hands memory the process has freed back to the OS, so RSS after a burst of big scripts
/// returns to where it was (glibc keeps freed memory in each thread's arena: RSS 19 → 26 MiB
/// after 44 hostile scripts, bench/NOTES.md). glibc's `malloc_trim(0)` releases the free top of
/// every arena and the free pages inside them (`MADV_DONTNEED`); it walks each arena's free
/// chunks, so it costs microseconds to a few milliseconds and is called only when the engine
/// pool goes idle after a big run (`pool.rs`), never per request.
///
/// Elsewhere it does nothing: musl's allocator (the static container build) returns large
/// frees to the OS itself and has no `malloc_trim`; mimalloc (feature `mimalloc`) purges freed
/// pages on its own after a delay.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: malloc_trim takes the allocator's own locks; it has no preconditions and may be
    // called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_while_armed() {
        let before = vec![0u8; 1000];
        arm(20_000);
        let v = vec![0u8; 10_000];
        assert!(net_bytes() >= 10_000);
        assert_eq!(gate_ops(), 0);
        set_gate_ops(100);
        let big = vec![0u8; 30_000];
        assert_eq!(gate_ops(), 0, "crossing the cap closes the gate");
        drop(big);
        drop(v);
        drop(before); // freed memory from before arming makes the net negative
        assert!(net_bytes() < 0);
        let peak = disarm();
        assert!(peak >= 40_000);
        assert_eq!(gate_ops(), u64::MAX);
        let _w = vec![0u8; 50_000];
        assert_eq!(peak_bytes(), 0);
    }
}
